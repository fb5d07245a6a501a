import onnxProto, { type onnx as P } from "onnx-proto";

const { onnx } = onnxProto;

import {
  Activation,
  BuiltinOp,
  floatData,
  intData,
  Padding,
  readTflite,
  TfliteFormatError,
  type TfliteModel,
  type TfliteOperator,
} from "./tflite.ts";

/**
 * Converts a plain float32 TFLite model (convolutions, pooling, fully connected,
 * element-wise and reduction ops) to ONNX (opset 13).
 *
 * TFLite is NHWC; ONNX convolutions are NCHW. Every 4-D activation is therefore held
 * in NCHW inside the graph and transposed back only where NHWC order matters
 * (flattening before a fully connected layer, graph outputs). Inputs and outputs keep
 * the TFLite NHWC layout, so callers feed and read exactly what the TFLite model takes.
 *
 * The PReLU idiom TF 1.x exported (relu(x) + alpha * -relu(-x)) is folded. On 4-D activations it
 * becomes x + conv1x1_depthwise(relu(conv1x1_depthwise(x, −1)), 1 − alpha): the same values up to
 * float rounding, made of ops ONNX Runtime keeps in its blocked (NCHWc) conv layout and fuses
 * (the relu into the first 1×1 conv, the add into the second), where its PRelu kernel is scalar
 * and forces a layout round trip (MTCNN ran 1.4–1.9× slower). relu(x) + alpha · −relu(−x) itself
 * would be exact but needs a relu of its own over the whole map (another 10% on P-Net).
 * For the same reason a convolution whose output channels are not a multiple of 8 and feed only
 * pooling, PReLU and further convolutions gets zero filters up to the next multiple (the next
 * convolution gets zero weights for them), so the blocked layout runs through.
 */
export interface ConvertOptions {
  /** Make the spatial input dimensions symbolic (fully convolutional nets such as P-Net). */
  dynamicSpatial?: boolean;
  /** Graph name written into the model. */
  name?: string;
}

const OPSET = 13;
const NHWC_TO_NCHW = [0, 3, 1, 2];
const NCHW_TO_NHWC = [0, 2, 3, 1];
/** Channel multiple ONNX Runtime's blocked conv layout wants (its AVX2 block; AVX-512 pads to 16 itself). */
const CHANNEL_BLOCK = 8;

export function convertTfliteToOnnx(tflite: Uint8Array, options: ConvertOptions = {}): Uint8Array {
  const model = readTflite(tflite);
  const graph = new GraphBuilder(model);
  graph.build(options);
  const proto = onnx.ModelProto.create({
    irVersion: 7,
    producerName: "maskwatch-tflite-to-onnx",
    producerVersion: "1",
    opsetImport: [{ domain: "", version: OPSET }],
    graph: graph.toProto(options.name ?? "converted"),
  });
  return onnx.ModelProto.encode(proto).finish();
}

type Layout = "nchw" | "plain";

class GraphBuilder {
  private readonly nodes: P.INodeProto[] = [];
  private readonly initializers: P.ITensorProto[] = [];
  private readonly inputs: P.IValueInfoProto[] = [];
  private readonly outputs: P.IValueInfoProto[] = [];
  /** ONNX value name and layout of each TFLite tensor index already produced. */
  private readonly values = new Map<number, { name: string; layout: Layout }>();
  private readonly consumers = new Map<number, TfliteOperator[]>();
  private readonly folded = new Set<TfliteOperator>();
  /** Channels a 4-D tensor has in the graph where zero channels were added (see the header). */
  private readonly padded = new Map<number, number>();
  private counter = 0;

  constructor(private readonly model: TfliteModel) {
    for (const op of model.operators) {
      for (const i of op.inputs) {
        if (!this.consumers.has(i)) this.consumers.set(i, []);
        this.consumers.get(i)!.push(op);
      }
    }
  }

  build(options: ConvertOptions): void {
    for (const index of this.model.inputs) {
      const t = this.model.tensors[index];
      const dims: (number | string)[] = [...t.shape];
      dims[0] = "N";
      if (options.dynamicSpatial && dims.length === 4) {
        dims[1] = "H";
        dims[2] = "W";
      }
      this.inputs.push(valueInfo(t.name, dims));
      if (t.shape.length === 4) {
        const name = this.fresh(`${t.name}_nchw`);
        this.node("Transpose", [t.name], [name], { perm: NHWC_TO_NCHW });
        this.values.set(index, { name, layout: "nchw" });
      } else {
        this.values.set(index, { name: t.name, layout: "plain" });
      }
    }
    for (const op of this.model.operators) {
      if (!this.folded.has(op)) this.convert(op);
    }
    for (const index of this.model.outputs) {
      this.assertUnpadded(index, "a graph output");
      const t = this.model.tensors[index];
      const v = this.value(index);
      if (v.layout === "nchw") this.node("Transpose", [v.name], [t.name], { perm: NCHW_TO_NHWC });
      else this.node("Identity", [v.name], [t.name]);
      this.outputs.push(valueInfo(t.name, null));
    }
  }

  toProto(name: string): P.IGraphProto {
    return {
      name,
      node: this.nodes,
      initializer: this.initializers,
      input: this.inputs,
      output: this.outputs,
    };
  }

  private convert(op: TfliteOperator): void {
    const o = op.options;
    const out = op.outputs[0];
    const channelAware =
      op.opcode === BuiltinOp.CONV_2D ||
      op.opcode === BuiltinOp.MAX_POOL_2D ||
      op.opcode === BuiltinOp.AVERAGE_POOL_2D ||
      (op.opcode === BuiltinOp.RELU && this.preluIdiom(op) !== undefined);
    if (!channelAware) for (const i of op.inputs) if (i >= 0) this.assertUnpadded(i, `operator ${op.opcode}`);
    switch (op.opcode) {
      case BuiltinOp.CONV_2D: {
        const x = this.activation(op.inputs[0], "nchw");
        const w = this.model.tensors[op.inputs[1]];
        const [oc, kh, kw, ic] = w.shape;
        const icTo = this.padded.get(op.inputs[0]) ?? ic;
        const ocTo =
          oc % CHANNEL_BLOCK && this.feedsOnlyChannelWiseOps(out)
            ? Math.ceil(oc / CHANNEL_BLOCK) * CHANNEL_BLOCK
            : oc;
        const oihw = padChannels(
          transposeOhwiToOihw(floatData(w), oc, kh, kw, ic),
          [oc, ic, kh, kw],
          ocTo,
          icTo,
        );
        const weights = this.constant(`${w.name}_oihw`, oihw, [ocTo, icTo, kh, kw]);
        const inputs = [x, weights];
        if (op.inputs[2] >= 0) {
          const b = this.model.tensors[op.inputs[2]];
          inputs.push(
            ocTo === oc
              ? this.constFloat(op.inputs[2])
              : this.constant(`${b.name}_padded`, padTo(floatData(b), ocTo), [ocTo]),
          );
        }
        if (ocTo !== oc) this.padded.set(out, ocTo);
        const y = this.withActivation(o.activation as number, out);
        this.node("Conv", inputs, [y.pre], {
          kernel_shape: [kh, kw],
          strides: [o.strideH as number, o.strideW as number],
          dilations: [o.dilationH as number, o.dilationW as number],
          auto_pad: padMode(o.padding as number),
        });
        this.finish(out, y, "nchw");
        return;
      }
      case BuiltinOp.MAX_POOL_2D:
      case BuiltinOp.AVERAGE_POOL_2D: {
        const x = this.activation(op.inputs[0], "nchw");
        const y = this.withActivation(o.activation as number, out);
        const attrs: Record<string, AttrValue> = {
          kernel_shape: [o.filterH as number, o.filterW as number],
          strides: [o.strideH as number, o.strideW as number],
          auto_pad: padMode(o.padding as number),
        };
        if (op.opcode === BuiltinOp.AVERAGE_POOL_2D) attrs.count_include_pad = 0;
        const channels = this.padded.get(op.inputs[0]);
        if (channels) this.padded.set(out, channels);
        this.node(op.opcode === BuiltinOp.MAX_POOL_2D ? "MaxPool" : "AveragePool", [x], [y.pre], attrs);
        this.finish(out, y, "nchw");
        return;
      }
      case BuiltinOp.FULLY_CONNECTED: {
        const src = this.value(op.inputs[0]);
        let x = src.name;
        if (src.layout === "nchw") {
          const nhwc = this.fresh("fc_nhwc");
          this.node("Transpose", [x], [nhwc], { perm: NCHW_TO_NHWC });
          x = nhwc;
        }
        const flat = this.fresh("fc_flat");
        this.node("Flatten", [x], [flat], { axis: 1 });
        const inputs = [flat, this.constFloat(op.inputs[1])];
        if (op.inputs[2] >= 0) inputs.push(this.constFloat(op.inputs[2]));
        const y = this.withActivation(o.activation as number, out);
        this.node("Gemm", inputs, [y.pre], { transB: 1 });
        this.finish(out, y, "plain");
        return;
      }
      case BuiltinOp.RELU:
        if (this.foldPrelu(op)) return;
        this.unary("Relu", op);
        return;
      case BuiltinOp.NEG:
        this.unary("Neg", op);
        return;
      case BuiltinOp.EXP:
        this.unary("Exp", op);
        return;
      case BuiltinOp.LOGISTIC:
        this.unary("Sigmoid", op);
        return;
      case BuiltinOp.ADD:
        this.binary("Add", op);
        return;
      case BuiltinOp.SUB:
        this.binary("Sub", op);
        return;
      case BuiltinOp.MUL:
        this.binary("Mul", op);
        return;
      case BuiltinOp.DIV:
        this.binary("Div", op);
        return;
      case BuiltinOp.REDUCE_MAX:
      case BuiltinOp.SUM: {
        const src = this.value(op.inputs[0]);
        const rank = this.model.tensors[op.inputs[0]].shape.length;
        const axes = Array.from(intData(this.model.tensors[op.inputs[1]])).map((a) =>
          mapAxis(a, rank, src.layout),
        );
        const keepdims = o.keepDims ? 1 : 0;
        const name = this.fresh(this.model.tensors[out].name);
        if (op.opcode === BuiltinOp.REDUCE_MAX) {
          this.node("ReduceMax", [src.name], [name], { axes, keepdims });
        } else {
          const axesName = this.constant(`${name}_axes`, BigInt64Array.from(axes.map(BigInt)), [axes.length]);
          this.node("ReduceSum", [src.name, axesName], [name], { keepdims });
        }
        if (src.layout === "nchw" && !keepdims)
          throw new TfliteFormatError("reduction without keep_dims on 4-D");
        this.values.set(out, { name, layout: src.layout });
        return;
      }
      case BuiltinOp.SOFTMAX: {
        const src = this.value(op.inputs[0]);
        const rank = this.model.tensors[op.inputs[0]].shape.length;
        if (o.beta !== 1) throw new TfliteFormatError("softmax with beta ≠ 1 is not supported");
        const name = this.fresh(this.model.tensors[out].name);
        this.node("Softmax", [src.name], [name], { axis: mapAxis(-1, rank, src.layout) });
        this.values.set(out, { name, layout: src.layout });
        return;
      }
      default:
        throw new TfliteFormatError(`unsupported TFLite operator code ${op.opcode}`);
    }
  }

  /**
   * TF 1.x PReLU: a = relu(x); b = neg(x); c = relu(b); d = neg(c); e = mul(alpha, d); y = add(a, e).
   * Matched from the first relu; every intermediate must feed only the next step.
   */
  private preluIdiom(relu: TfliteOperator) {
    const x = relu.inputs[0];
    const a = relu.outputs[0];
    const only = (t: number) => {
      const c = this.consumers.get(t) ?? [];
      return c.length === 1 ? c[0] : undefined;
    };
    const negX = (this.consumers.get(x) ?? []).find((op) => op.opcode === BuiltinOp.NEG && op !== relu);
    if (!negX) return undefined;
    const relu2 = only(negX.outputs[0]);
    if (relu2?.opcode !== BuiltinOp.RELU) return undefined;
    const neg2 = only(relu2.outputs[0]);
    if (neg2?.opcode !== BuiltinOp.NEG) return undefined;
    const mul = only(neg2.outputs[0]);
    if (mul?.opcode !== BuiltinOp.MUL || mul.options.activation) return undefined;
    const alphaIndex = mul.inputs.find((i) => i !== neg2.outputs[0]);
    if (alphaIndex === undefined || !this.model.tensors[alphaIndex].data) return undefined;
    const add = only(mul.outputs[0]);
    if (add?.opcode !== BuiltinOp.ADD || add.options.activation || !add.inputs.includes(a)) return undefined;
    if (only(a) !== add || (this.consumers.get(x) ?? []).length !== 2) return undefined;
    return { x, alphaIndex, out: add.outputs[0], ops: [negX, relu2, neg2, mul, add] };
  }

  private foldPrelu(relu: TfliteOperator): boolean {
    const idiom = this.preluIdiom(relu);
    if (!idiom) return false;
    const src = this.value(idiom.x);
    const alphaTensor = this.model.tensors[idiom.alphaIndex];
    const alpha = floatData(alphaTensor);
    const name = this.fresh(this.model.tensors[idiom.out].name);
    if (src.layout === "nchw" && alphaTensor.shape.length === 1) {
      // x + (1 − alpha) · relu(−x): x where x > 0, alpha · x otherwise.
      const c = this.padded.get(idiom.x) ?? alpha.length;
      const depthwise = (input: string, scale: Float32Array, suffix: string) => {
        const output = this.fresh(`${name}_${suffix}`);
        const w = this.constant(`${alphaTensor.name}_${suffix}`, padTo(scale, c), [c, 1, 1, 1]);
        this.node("Conv", [input, w], [output], { kernel_shape: [1, 1], group: c });
        return output;
      };
      const negated = depthwise(src.name, new Float32Array(alpha.length).fill(-1), "negated");
      const negative = this.fresh(`${name}_negative`);
      this.node("Relu", [negated], [negative]);
      const scaled = depthwise(
        negative,
        alpha.map((v) => 1 - v),
        "scaled",
      );
      this.node("Add", [src.name, scaled], [name]);
      if (this.padded.has(idiom.x)) this.padded.set(idiom.out, c);
    } else {
      const slope = this.constant(`${alphaTensor.name}_slope`, alpha, alphaTensor.shape);
      this.node("PRelu", [src.name, slope], [name]);
    }
    this.values.set(idiom.out, { name, layout: src.layout });
    for (const op of idiom.ops) this.folded.add(op);
    return true;
  }

  /**
   * Whether tensor `t` reaches only per-channel ops (pooling, PReLU) on its way into the data
   * input of convolutions, so zero channels added to it change nothing.
   */
  private feedsOnlyChannelWiseOps(t: number): boolean {
    if (this.model.outputs.includes(t)) return false;
    const consumers = this.consumers.get(t) ?? [];
    if (!consumers.length) return false;
    return consumers.every((op) => {
      switch (op.opcode) {
        case BuiltinOp.CONV_2D:
          return op.inputs[0] === t && !op.inputs.slice(1).includes(t);
        case BuiltinOp.MAX_POOL_2D:
        case BuiltinOp.AVERAGE_POOL_2D:
          return this.feedsOnlyChannelWiseOps(op.outputs[0]);
        case BuiltinOp.RELU: {
          const idiom = this.preluIdiom(op);
          return idiom !== undefined && this.feedsOnlyChannelWiseOps(idiom.out);
        }
        case BuiltinOp.NEG:
          return consumers.some((c) => c.opcode === BuiltinOp.RELU && this.preluIdiom(c)?.ops[0] === op);
        default:
          return false;
      }
    });
  }

  private assertUnpadded(index: number, user: string): void {
    if (this.padded.has(index))
      throw new TfliteFormatError(
        `internal: channel padding of ${this.model.tensors[index].name} reaches ${user}`,
      );
  }

  private unary(type: string, op: TfliteOperator): void {
    const src = this.value(op.inputs[0]);
    const name = this.fresh(this.model.tensors[op.outputs[0]].name);
    this.node(type, [src.name], [name]);
    this.values.set(op.outputs[0], { name, layout: src.layout });
  }

  private binary(type: string, op: TfliteOperator): void {
    const ts = op.inputs.map((i) => this.model.tensors[i]);
    const layout: Layout = op.inputs.some(
      (i) => !ts[op.inputs.indexOf(i)].data && this.value(i).layout === "nchw",
    )
      ? "nchw"
      : "plain";
    const names = op.inputs.map((i, k) => {
      const t = ts[k];
      if (!t.data) return this.activation(i, layout);
      const data = floatData(t);
      // A per-channel constant broadcasts over NHWC's last axis; in NCHW it must be [C,1,1].
      const shape = layout === "nchw" && t.shape.length === 1 ? [data.length, 1, 1] : t.shape;
      return this.constant(`${t.name}_c`, data, shape);
    });
    const y = this.withActivation(op.options.activation as number, op.outputs[0]);
    this.node(type, names, [y.pre]);
    this.finish(op.outputs[0], y, layout);
  }

  /** The ONNX name of a produced tensor, converted to the wanted layout. */
  private activation(index: number, layout: Layout): string {
    const v = this.value(index);
    if (v.layout === layout || this.model.tensors[index].shape.length !== 4) return v.name;
    const name = this.fresh(`${v.name}_${layout}`);
    this.node("Transpose", [v.name], [name], { perm: layout === "nchw" ? NHWC_TO_NCHW : NCHW_TO_NHWC });
    return name;
  }

  private value(index: number): { name: string; layout: Layout } {
    const v = this.values.get(index);
    if (v) return v;
    const t = this.model.tensors[index];
    if (t.data) return { name: this.constFloat(index), layout: "plain" };
    throw new TfliteFormatError(`tensor ${t.name} is used before it is produced`);
  }

  private constFloat(index: number): string {
    const t = this.model.tensors[index];
    return this.constant(t.name, floatData(t), t.shape);
  }

  private withActivation(activation: number, out: number): { pre: string; activation: number; out: number } {
    const base = this.fresh(this.model.tensors[out].name);
    return { pre: activation === Activation.NONE ? base : `${base}_pre`, activation, out };
  }

  private finish(out: number, y: { pre: string; activation: number }, layout: Layout): void {
    let name = y.pre;
    if (y.activation !== Activation.NONE) {
      name = y.pre.replace(/_pre$/, "");
      if (y.activation === Activation.RELU) this.node("Relu", [y.pre], [name]);
      else if (y.activation === Activation.RELU6) {
        this.node("Clip", [y.pre, this.scalar(0), this.scalar(6)], [name]);
      } else if (y.activation === Activation.RELU_N1_TO_1) {
        this.node("Clip", [y.pre, this.scalar(-1), this.scalar(1)], [name]);
      } else throw new TfliteFormatError(`unsupported fused activation ${y.activation}`);
    }
    this.values.set(out, { name, layout });
  }

  private scalar(v: number): string {
    return this.constant(`scalar_${v}`, Float32Array.of(v), []);
  }

  private constant(name: string, data: Float32Array | BigInt64Array, dims: number[]): string {
    const existing = this.initializers.find((t) => t.name === name);
    if (existing) return name;
    const isFloat = data instanceof Float32Array;
    this.initializers.push({
      name,
      dims,
      dataType: isFloat ? onnx.TensorProto.DataType.FLOAT : onnx.TensorProto.DataType.INT64,
      rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    });
    return name;
  }

  private fresh(base: string): string {
    return `${base}__${this.counter++}`;
  }

  private node(
    opType: string,
    input: string[],
    output: string[],
    attrs: Record<string, AttrValue> = {},
  ): void {
    this.nodes.push({
      opType,
      input,
      output,
      name: `${opType}_${this.nodes.length}`,
      attribute: Object.entries(attrs).map(([name, value]) => attribute(name, value)),
    });
  }
}

type AttrValue = number | number[] | string;

function attribute(name: string, value: AttrValue): P.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === "string") return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  return { name, type: T.INT, i: value };
}

function valueInfo(name: string, dims: (number | string)[] | null): P.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: dims
          ? { dim: dims.map((d) => (typeof d === "string" ? { dimParam: d } : { dimValue: d })) }
          : null,
      },
    },
  };
}

function padMode(padding: number): string {
  // TF's SAME puts the odd extra pixel at the end, as ONNX SAME_UPPER does.
  return padding === Padding.SAME ? "SAME_UPPER" : "VALID";
}

function mapAxis(axis: number, rank: number, layout: Layout): number {
  const a = axis < 0 ? axis + rank : axis;
  return layout === "nchw" ? NHWC_TO_NCHW.indexOf(a) : a;
}

function transposeOhwiToOihw(w: Float32Array, o: number, h: number, wd: number, i: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let a = 0; a < o; a++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < wd; x++)
        for (let c = 0; c < i; c++) out[((a * i + c) * h + y) * wd + x] = w[((a * h + y) * wd + x) * i + c];
  return out;
}

/** `a` with zeros appended up to length `n`. */
function padTo(a: Float32Array, n: number): Float32Array {
  if (a.length === n) return a;
  const out = new Float32Array(n);
  out.set(a);
  return out;
}

/** OIHW weights [o, i, h, w] grown to oTo output and iTo input channels with zeros. */
function padChannels(w: Float32Array, [o, i, h, wd]: number[], oTo: number, iTo: number): Float32Array {
  if (o === oTo && i === iTo) return w;
  const out = new Float32Array(oTo * iTo * h * wd);
  const plane = h * wd;
  for (let a = 0; a < o; a++)
    for (let c = 0; c < i; c++)
      out.set(w.subarray((a * i + c) * plane, (a * i + c + 1) * plane), (a * iTo + c) * plane);
  return out;
}
