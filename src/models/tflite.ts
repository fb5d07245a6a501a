import { ByteBuffer } from "flatbuffers";

/**
 * A reader for the subset of the TFLite flatbuffer schema that plain float32 models use
 * (tensorflow/lite/schema/schema.fbs). Field numbers below are the schema's field ids.
 */

export const BuiltinOp = {
  ADD: 0,
  AVERAGE_POOL_2D: 1,
  CONCATENATION: 2,
  CONV_2D: 3,
  DEPTHWISE_CONV_2D: 4,
  FULLY_CONNECTED: 9,
  LOGISTIC: 14,
  MAX_POOL_2D: 17,
  MUL: 18,
  RELU: 19,
  RESHAPE: 22,
  SOFTMAX: 25,
  PAD: 34,
  TRANSPOSE: 39,
  SUB: 41,
  DIV: 42,
  EXP: 47,
  PRELU: 54,
  NEG: 59,
  SUM: 74,
  REDUCE_MAX: 82,
} as const;

export const TensorType = { FLOAT32: 0, INT32: 2 } as const;
export const Padding = { SAME: 0, VALID: 1 } as const;
export const Activation = { NONE: 0, RELU: 1, RELU_N1_TO_1: 2, RELU6: 3 } as const;

export interface TfliteTensor {
  name: string;
  shape: number[];
  type: number;
  /** Constant data, or null for activations. */
  data: Uint8Array | null;
}

export interface TfliteOperator {
  opcode: number;
  inputs: number[];
  outputs: number[];
  /** Builtin options as a plain object, decoded per opcode. */
  options: Record<string, number | number[]>;
}

export interface TfliteModel {
  version: number;
  tensors: TfliteTensor[];
  inputs: number[];
  outputs: number[];
  operators: TfliteOperator[];
}

export class TfliteFormatError extends Error {}

/** Reads a table's field: returns the absolute position of the field, or 0 when absent. */
function field(bb: ByteBuffer, table: number, id: number): number {
  const o = bb.__offset(table, 4 + 2 * id);
  return o ? table + o : 0;
}

function tableAt(bb: ByteBuffer, table: number, id: number): number {
  const p = field(bb, table, id);
  return p ? bb.__indirect(p) : 0;
}

function vectorOf(bb: ByteBuffer, table: number, id: number): { start: number; length: number } {
  const o = bb.__offset(table, 4 + 2 * id);
  if (!o) return { start: 0, length: 0 };
  return { start: bb.__vector(table + o), length: bb.__vector_len(table + o) };
}

function intVector(bb: ByteBuffer, table: number, id: number): number[] {
  const { start, length } = vectorOf(bb, table, id);
  const out: number[] = [];
  for (let i = 0; i < length; i++) out.push(bb.readInt32(start + 4 * i));
  return out;
}

function tableVector(bb: ByteBuffer, table: number, id: number): number[] {
  const { start, length } = vectorOf(bb, table, id);
  const out: number[] = [];
  for (let i = 0; i < length; i++) out.push(bb.__indirect(start + 4 * i));
  return out;
}

function stringField(bb: ByteBuffer, table: number, id: number): string {
  const o = bb.__offset(table, 4 + 2 * id);
  return o ? (bb.__string(table + o) as string) : "";
}

const int8 = (bb: ByteBuffer, t: number, id: number, dflt: number) => {
  const p = field(bb, t, id);
  return p ? bb.readInt8(p) : dflt;
};
const int32 = (bb: ByteBuffer, t: number, id: number, dflt: number) => {
  const p = field(bb, t, id);
  return p ? bb.readInt32(p) : dflt;
};
const float32 = (bb: ByteBuffer, t: number, id: number, dflt: number) => {
  const p = field(bb, t, id);
  return p ? bb.readFloat32(p) : dflt;
};

function decodeOptions(bb: ByteBuffer, opcode: number, t: number): Record<string, number | number[]> {
  if (!t) return {};
  switch (opcode) {
    case BuiltinOp.CONV_2D:
      return {
        padding: int8(bb, t, 0, 0),
        strideW: int32(bb, t, 1, 1),
        strideH: int32(bb, t, 2, 1),
        activation: int8(bb, t, 3, 0),
        dilationW: int32(bb, t, 4, 1),
        dilationH: int32(bb, t, 5, 1),
      };
    case BuiltinOp.DEPTHWISE_CONV_2D:
      return {
        padding: int8(bb, t, 0, 0),
        strideW: int32(bb, t, 1, 1),
        strideH: int32(bb, t, 2, 1),
        depthMultiplier: int32(bb, t, 3, 1),
        activation: int8(bb, t, 4, 0),
        dilationW: int32(bb, t, 5, 1),
        dilationH: int32(bb, t, 6, 1),
      };
    case BuiltinOp.MAX_POOL_2D:
    case BuiltinOp.AVERAGE_POOL_2D:
      return {
        padding: int8(bb, t, 0, 0),
        strideW: int32(bb, t, 1, 1),
        strideH: int32(bb, t, 2, 1),
        filterW: int32(bb, t, 3, 1),
        filterH: int32(bb, t, 4, 1),
        activation: int8(bb, t, 5, 0),
      };
    case BuiltinOp.FULLY_CONNECTED:
      return {
        activation: int8(bb, t, 0, 0),
        weightsFormat: int8(bb, t, 1, 0),
        keepNumDims: int8(bb, t, 2, 0),
      };
    case BuiltinOp.SOFTMAX:
      return { beta: float32(bb, t, 0, 1) };
    case BuiltinOp.RESHAPE:
      return { newShape: intVector(bb, t, 0) };
    case BuiltinOp.ADD:
    case BuiltinOp.MUL:
    case BuiltinOp.SUB:
    case BuiltinOp.DIV:
      return { activation: int8(bb, t, 0, 0) };
    case BuiltinOp.SUM:
    case BuiltinOp.REDUCE_MAX:
      return { keepDims: int8(bb, t, 0, 0) };
    case BuiltinOp.CONCATENATION:
      return { axis: int32(bb, t, 0, 0), activation: int8(bb, t, 1, 0) };
    default:
      return {};
  }
}

export function readTflite(bytes: Uint8Array): TfliteModel {
  if (bytes.length < 8 || String.fromCharCode(...bytes.subarray(4, 8)) !== "TFL3") {
    throw new TfliteFormatError("not a TFLite model (file identifier TFL3 missing)");
  }
  const bb = new ByteBuffer(bytes);
  const model = bb.readInt32(0);
  const version = int32(bb, model, 0, 0);

  const opcodes = tableVector(bb, model, 1).map((oc) => {
    const deprecated = int8(bb, oc, 0, 0);
    const builtin = int32(bb, oc, 3, 0);
    if (stringField(bb, oc, 1)) throw new TfliteFormatError(`custom operator ${stringField(bb, oc, 1)}`);
    return Math.max(deprecated, builtin);
  });

  const buffers = tableVector(bb, model, 4).map((b) => {
    const { start, length } = vectorOf(bb, b, 0);
    return length ? bytes.subarray(start, start + length) : null;
  });

  const subgraphs = tableVector(bb, model, 2);
  if (subgraphs.length !== 1) throw new TfliteFormatError(`expected one subgraph, found ${subgraphs.length}`);
  const sg = subgraphs[0];

  const tensors = tableVector(bb, sg, 0).map((t): TfliteTensor => {
    const bufferIndex = int32(bb, t, 2, 0);
    const quant = tableAt(bb, t, 4);
    if (quant && vectorOf(bb, quant, 2).length > 0) {
      throw new TfliteFormatError(`quantized tensor ${stringField(bb, t, 3)} is not supported`);
    }
    return {
      name: stringField(bb, t, 3),
      shape: intVector(bb, t, 0),
      type: int8(bb, t, 1, 0),
      data: buffers[bufferIndex] ?? null,
    };
  });

  const operators = tableVector(bb, sg, 3).map((op): TfliteOperator => {
    const opcode = opcodes[int32(bb, op, 0, 0)];
    return {
      opcode,
      inputs: intVector(bb, op, 1),
      outputs: intVector(bb, op, 2),
      options: decodeOptions(bb, opcode, tableAt(bb, op, 4)),
    };
  });

  return { version, tensors, inputs: intVector(bb, sg, 1), outputs: intVector(bb, sg, 2), operators };
}

/** Constant float32 data of a tensor (copied, so alignment never matters). */
export function floatData(t: TfliteTensor): Float32Array {
  if (!t.data) throw new TfliteFormatError(`tensor ${t.name} has no constant data`);
  if (t.type !== TensorType.FLOAT32) throw new TfliteFormatError(`tensor ${t.name} is not float32`);
  const copy = new Uint8Array(t.data);
  return new Float32Array(copy.buffer, 0, copy.length / 4);
}

export function intData(t: TfliteTensor): Int32Array {
  if (!t.data) throw new TfliteFormatError(`tensor ${t.name} has no constant data`);
  const copy = new Uint8Array(t.data);
  return new Int32Array(copy.buffer, 0, copy.length / 4);
}
