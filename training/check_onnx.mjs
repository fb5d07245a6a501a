// Sanity check of the exported mask classifier with onnxruntime-node (the product's runtime).
// Usage (repo root): node training/check_onnx.mjs [models/mask-classifier.onnx]
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";

const path = process.argv[2] ?? "models/mask-classifier.onnx";
const bytes = readFileSync(path);
console.log(
  `model ${path}: ${bytes.length} bytes, sha256 ${createHash("sha256").update(bytes).digest("hex")}`,
);
const session = await ort.InferenceSession.create(path, { intraOpNumThreads: 1, interOpNumThreads: 1 });
console.log(`inputs ${session.inputNames.join(",")} outputs ${session.outputNames.join(",")}`);

const N = 32;
const run = async (n) => {
  const x = new ort.Tensor("float32", new Float32Array(n * 3 * 64 * 64), [n, 3, 64, 64]);
  return (await session.run({ input: x })).probs;
};
for (const n of [1, 5, N]) {
  const p = await run(n);
  let maxErr = 0;
  for (let i = 0; i < n; i++)
    maxErr = Math.max(maxErr, Math.abs(p.data[i * 3] + p.data[i * 3 + 1] + p.data[i * 3 + 2] - 1));
  console.log(
    `batch ${n}: probs dims [${p.dims.join(",")}] row0 [${Array.from(p.data.slice(0, 3))
      .map((v) => v.toFixed(4))
      .join(", ")}] max |sum-1| ${maxErr.toExponential(1)}`,
  );
}
for (let i = 0; i < 5; i++) await run(N); // warm-up
const iters = 50;
const t0 = process.hrtime.bigint();
for (let i = 0; i < iters; i++) await run(N);
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
console.log(
  `batch ${N}, 1 intra-op thread: ${(ms / iters).toFixed(2)} ms/batch, ${(ms / iters / N).toFixed(3)} ms/face`,
);
