import { BuiltinOp, floatData, intData, Padding, type TfliteModel } from "../../src/models/tflite.ts";

/**
 * A deliberately naive TFLite interpreter in TFLite's own NHWC layout, written from the op
 * definitions, used to check the converter: no layout tricks, no fusion, plain loops.
 */
interface T {
  shape: number[];
  data: Float32Array;
}

export function runReference(model: TfliteModel, input: T): Map<number, T> {
  const values = new Map<number, T>();
  values.set(model.inputs[0], input);
  const get = (i: number): T => {
    const v = values.get(i);
    if (v) return v;
    const t = model.tensors[i];
    return { shape: t.shape, data: floatData(t) };
  };
  for (const op of model.operators) {
    const a = get(op.inputs[0]);
    let y: T;
    switch (op.opcode) {
      case BuiltinOp.CONV_2D:
        y = conv(a, get(op.inputs[1]), get(op.inputs[2]), op.options as Record<string, number>);
        break;
      case BuiltinOp.MAX_POOL_2D:
        y = maxPool(a, op.options as Record<string, number>);
        break;
      case BuiltinOp.FULLY_CONNECTED:
        y = fullyConnected(a, get(op.inputs[1]), get(op.inputs[2]));
        break;
      case BuiltinOp.RELU:
        y = map(a, (v) => Math.max(0, v));
        break;
      case BuiltinOp.NEG:
        y = map(a, (v) => -v);
        break;
      case BuiltinOp.EXP:
        y = map(a, Math.exp);
        break;
      case BuiltinOp.ADD:
        y = broadcast(a, get(op.inputs[1]), (p, q) => p + q);
        break;
      case BuiltinOp.SUB:
        y = broadcast(a, get(op.inputs[1]), (p, q) => p - q);
        break;
      case BuiltinOp.MUL:
        y = broadcast(a, get(op.inputs[1]), (p, q) => p * q);
        break;
      case BuiltinOp.DIV:
        y = broadcast(a, get(op.inputs[1]), (p, q) => p / q);
        break;
      case BuiltinOp.REDUCE_MAX:
        y = reduceLast(a, intData(model.tensors[op.inputs[1]]), Math.max, Number.NEGATIVE_INFINITY);
        break;
      case BuiltinOp.SUM:
        y = reduceLast(a, intData(model.tensors[op.inputs[1]]), (p, q) => p + q, 0);
        break;
      default:
        throw new Error(`reference: op ${op.opcode} not implemented`);
    }
    values.set(op.outputs[0], y);
  }
  return values;
}

function map(a: T, f: (v: number) => number): T {
  return { shape: a.shape, data: a.data.map(f) };
}

/** Broadcasting of a full tensor with a same-shaped one, a trailing-axis vector, a scalar or a [...,1] tensor. */
function broadcast(a: T, b: T, f: (p: number, q: number) => number): T {
  const [big, small, swap] = a.data.length >= b.data.length ? [a, b, false] : [b, a, true];
  const out = new Float32Array(big.data.length);
  const last = big.shape[big.shape.length - 1];
  const smallLast = small.shape.length ? small.shape[small.shape.length - 1] : 1;
  for (let i = 0; i < out.length; i++) {
    let j: number;
    if (small.data.length === big.data.length) j = i;
    else if (small.data.length === 1) j = 0;
    else if (smallLast === 1) j = Math.floor(i / last);
    else j = i % last;
    out[i] = swap ? f(small.data[j], big.data[i]) : f(big.data[i], small.data[j]);
  }
  return { shape: big.shape, data: out };
}

function reduceLast(a: T, axes: Int32Array, f: (p: number, q: number) => number, init: number): T {
  const rank = a.shape.length;
  if (axes.length !== 1 || (axes[0] + rank) % rank !== rank - 1) throw new Error("reference: last-axis only");
  const last = a.shape[rank - 1];
  const out = new Float32Array(a.data.length / last);
  for (let i = 0; i < out.length; i++) {
    let acc = init;
    for (let c = 0; c < last; c++) acc = f(acc, a.data[i * last + c]);
    out[i] = acc;
  }
  return { shape: [...a.shape.slice(0, -1), 1], data: out };
}

function samePad(size: number, k: number, stride: number, dilation = 1): [number, number] {
  const out = Math.ceil(size / stride);
  const total = Math.max(0, (out - 1) * stride + (k - 1) * dilation + 1 - size);
  return [out, Math.floor(total / 2)];
}

function outSize(size: number, k: number, stride: number, padding: number): [number, number] {
  return padding === Padding.SAME ? samePad(size, k, stride) : [Math.floor((size - k) / stride) + 1, 0];
}

function conv(x: T, w: T, b: T, o: Record<string, number>): T {
  const [n, h, wd, c] = x.shape;
  const [oc, kh, kw] = w.shape;
  const [oh, padT] = outSize(h, kh, o.strideH, o.padding);
  const [ow, padL] = outSize(wd, kw, o.strideW, o.padding);
  const out = new Float32Array(n * oh * ow * oc);
  for (let bi = 0; bi < n; bi++)
    for (let y = 0; y < oh; y++)
      for (let xx = 0; xx < ow; xx++)
        for (let f = 0; f < oc; f++) {
          let acc = b.data[f];
          for (let ky = 0; ky < kh; ky++) {
            const iy = y * o.strideH + ky - padT;
            if (iy < 0 || iy >= h) continue;
            for (let kx = 0; kx < kw; kx++) {
              const ix = xx * o.strideW + kx - padL;
              if (ix < 0 || ix >= wd) continue;
              for (let ci = 0; ci < c; ci++)
                acc +=
                  x.data[((bi * h + iy) * wd + ix) * c + ci] * w.data[((f * kh + ky) * kw + kx) * c + ci];
            }
          }
          out[((bi * oh + y) * ow + xx) * oc + f] = acc;
        }
  return { shape: [n, oh, ow, oc], data: out };
}

function maxPool(x: T, o: Record<string, number>): T {
  const [n, h, wd, c] = x.shape;
  const [oh, padT] = outSize(h, o.filterH, o.strideH, o.padding);
  const [ow, padL] = outSize(wd, o.filterW, o.strideW, o.padding);
  const out = new Float32Array(n * oh * ow * c);
  for (let bi = 0; bi < n; bi++)
    for (let y = 0; y < oh; y++)
      for (let xx = 0; xx < ow; xx++)
        for (let ci = 0; ci < c; ci++) {
          let m = Number.NEGATIVE_INFINITY;
          for (let ky = 0; ky < o.filterH; ky++)
            for (let kx = 0; kx < o.filterW; kx++) {
              const iy = y * o.strideH + ky - padT;
              const ix = xx * o.strideW + kx - padL;
              if (iy >= 0 && iy < h && ix >= 0 && ix < wd)
                m = Math.max(m, x.data[((bi * h + iy) * wd + ix) * c + ci]);
            }
          out[((bi * oh + y) * ow + xx) * c + ci] = m;
        }
  return { shape: [n, oh, ow, c], data: out };
}

function fullyConnected(x: T, w: T, b: T): T {
  const n = x.shape[0];
  const [o, i] = w.shape;
  const out = new Float32Array(n * o);
  for (let bi = 0; bi < n; bi++)
    for (let f = 0; f < o; f++) {
      let acc = b.data[f];
      for (let k = 0; k < i; k++) acc += x.data[bi * i + k] * w.data[f * i + k];
      out[bi * o + f] = acc;
    }
  return { shape: [n, o], data: out };
}
