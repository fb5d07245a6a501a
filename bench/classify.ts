/**
 * `npm run bench -- --classify`: the mask classifier's cost per face, split into the crop (the
 * contract crop written into the input tensor) and the network run, at batch sizes 1, 8 and 32,
 * on real photos: Kaggle test-split images, with their ground-truth boxes (no landmarks: plain
 * square crops) and with the faces the detector finds there (eye landmarks: rotated crops).
 *
 * A batch of B faces is one photo's faces repeated to B (the classifier runs per image). Each
 * number is the median over photos × repeats of (call time / B); the crop also as CPU time,
 * steadier than wall time on a shared machine.
 */
import { readFile } from "node:fs/promises";
import { loadGroundTruth } from "../eval/groundtruth.ts";
import type { Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import { CROP_FLOATS, writeFaceCrop } from "../src/vision/mask-classifier.ts";
import type { Face, RgbImage } from "../src/vision/types.ts";

export interface ClassifyRow {
  faces: "gt" | "detected";
  batch: number;
  calls: number;
  /** Median ms per face. */
  crop: number;
  /** The crop's CPU time (this thread): steadier than wall time on a busy machine. */
  cropCpu: number;
  network: number;
  /** crop + network (sum of the two medians). */
  total: number;
  /** `MaskClassifier.classify` end to end (allocation, crop, network, decision). */
  classify: number;
}

export interface ClassifyBench {
  photos: number;
  gtFaces: number;
  detectedFaces: number;
  rotated: number;
  rows: ClassifyRow[];
}

export const BATCH_SIZES = [1, 8, 32] as const;

export async function benchClassify(
  engine: Engine,
  options: { photos: number; repeats: number; detector?: string | null; dataset?: string },
): Promise<ClassifyBench> {
  const gt = (await loadGroundTruth(options.dataset ?? "kaggle", { split: "test" })).slice(0, options.photos);
  const photos: { image: RgbImage; gt: Face[]; detected: Face[] }[] = [];
  const detector = options.detector ? await engine.detector(options.detector) : null;
  for (const item of gt) {
    const { image } = await decodeImage(await readFile(item.image));
    const faces = item.objects.map((o) => ({ box: o.box, score: 1 }));
    const detected = detector ? (await detector.detect(image)).faces : [];
    photos.push({ image, gt: faces, detected });
  }
  const classifier = await engine.maskClassifier();
  const input = new Float32Array(Math.max(...BATCH_SIZES) * CROP_FLOATS);
  const rows: ClassifyRow[] = [];
  let rotated = 0;
  for (const p of photos)
    for (const f of p.detected) {
      const l = f.landmarks?.left_eye;
      const r = f.landmarks?.right_eye;
      if (l && r && Math.abs(Math.atan2(r[1] - l[1], r[0] - l[0])) >= 0.05) rotated++;
    }
  for (const kind of ["gt", "detected"] as const) {
    if (kind === "detected" && !detector) continue;
    for (const batch of BATCH_SIZES) {
      const crop: number[] = [];
      const cropCpu: number[] = [];
      const network: number[] = [];
      const classify: number[] = [];
      const sets = photos
        .filter((p) => p[kind].length > 0)
        .map((p) => ({
          image: p.image,
          faces: Array.from({ length: batch }, (_, i) => p[kind][i % p[kind].length]),
        }));
      // Three separate phases, so ONNX Runtime's threads are idle while the crop is timed (its
      // spinning threads would count in the process's CPU time).
      for (let rep = -1; rep < options.repeats; rep++) {
        for (const { image, faces } of sets) {
          const c0 = process.cpuUsage();
          const t0 = performance.now();
          for (let i = 0; i < batch; i++) writeFaceCrop(image, faces[i], input, i * CROP_FLOATS);
          const t1 = performance.now();
          const c1 = process.cpuUsage(c0);
          if (rep < 0) continue; // warm-up
          crop.push((t1 - t0) / batch);
          cropCpu.push((c1.user + c1.system) / 1000 / batch);
        }
      }
      for (let rep = -1; rep < options.repeats; rep++) {
        for (const { image, faces } of sets) {
          for (let i = 0; i < batch; i++) writeFaceCrop(image, faces[i], input, i * CROP_FLOATS);
          const t0 = performance.now();
          await classifier.probabilities(input, batch);
          if (rep >= 0) network.push((performance.now() - t0) / batch);
        }
      }
      for (let rep = -1; rep < options.repeats; rep++) {
        for (const { image, faces } of sets) {
          const t0 = performance.now();
          await classifier.classify(image, faces);
          if (rep >= 0) classify.push((performance.now() - t0) / batch);
        }
      }
      rows.push({
        faces: kind,
        batch,
        calls: crop.length,
        crop: median(crop),
        cropCpu: median(cropCpu),
        network: median(network),
        total: Math.round((median(crop) + median(network)) * 1000) / 1000,
        classify: median(classify),
      });
    }
  }
  return {
    photos: photos.length,
    gtFaces: photos.reduce((n, p) => n + p.gt.length, 0),
    detectedFaces: photos.reduce((n, p) => n + p.detected.length, 0),
    rotated,
    rows,
  };
}

function median(v: number[]): number {
  if (v.length === 0) return Number.NaN;
  const s = [...v].sort((a, b) => a - b);
  return Math.round(s[Math.floor(s.length / 2)] * 1000) / 1000;
}

export function formatClassify(b: ClassifyBench): string {
  const lines = [
    `classifier: ${b.photos} Kaggle test photos, ${b.gtFaces} GT faces, ${b.detectedFaces} detected (${b.rotated} rotated by eye landmarks); median ms per face`,
    "faces     batch  calls   crop  (cpu)  network  crop+net  classify()",
  ];
  for (const r of b.rows)
    lines.push(
      `${r.faces.padEnd(9)} ${String(r.batch).padStart(5)} ${String(r.calls).padStart(6)} ${r.crop.toFixed(3).padStart(6)} ${r.cropCpu.toFixed(3).padStart(6)} ${r.network.toFixed(3).padStart(8)} ${r.total.toFixed(3).padStart(9)} ${r.classify.toFixed(3).padStart(11)}`,
    );
  return lines.join("\n");
}
