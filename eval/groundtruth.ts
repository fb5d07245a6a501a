/**
 * Ground-truth loaders for `npm run eval`: PASCAL VOC XML, YOLO txt, the WIDER-style gt.txt of
 * wider-val-200 and dlib's imglab XML, plus a resolver from a dataset name or folder.
 *
 * Pure file parsing: no detector code. `sharp` is imported lazily, only where a YOLO label file
 * needs an image size that was not given.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** [x1, y1, x2, y2] in image pixels. */
export type Box = [number, number, number, number];

export interface GtObject {
  box: Box;
  /** Normalised class: "face" where the set has one class, else "mask" / "no_mask" / "incorrect" / …. */
  label: string;
  /** Neither a hit nor a miss when scoring (VOC `difficult`, dlib `ignore`). */
  difficult?: boolean;
}

export interface GtImage {
  /** Path of the image file. */
  image: string;
  /** Base name of the image without its extension (predictions are matched on it). */
  name: string;
  width?: number;
  height?: number;
  objects: GtObject[];
  /** WIDER-style sets: where the image came from and its size before resizing. */
  original?: { path: string; width: number; height: number };
}

export type Split = "train" | "val" | "test" | "all";
export type DatasetFormat = "voc" | "yolo" | "wider" | "dlib" | "jsonl";

export const IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"];

const LABEL_ALIASES: Record<string, string> = {
  with_mask: "mask",
  withmask: "mask",
  mask: "mask",
  masked: "mask",
  masked_face: "mask",
  face_mask: "mask",
  face_with_mask: "mask",
  mask_correct: "mask",
  correct_mask: "mask",
  without_mask: "no_mask",
  withoutmask: "no_mask",
  no_mask: "no_mask",
  nomask: "no_mask",
  unmasked: "no_mask",
  face_no_mask: "no_mask",
  face_without_mask: "no_mask",
  mask_weared_incorrect: "incorrect",
  with_incorrect_mask: "incorrect",
  with_mask_incorrect: "incorrect",
  mask_worn_incorrect: "incorrect",
  mask_worn_incorrectly: "incorrect",
  mask_incorrectly_worn: "incorrect",
  incorrectly_worn_mask: "incorrect",
  mask_worn_improperly: "incorrect",
  improperly_worn_mask: "incorrect",
  mask_incorrect: "incorrect",
  incorrect_mask: "incorrect",
  incorrect: "incorrect",
  face: "face",
};

/** The classes a mask classifier tells apart (ground-truth labels after `normaliseLabel`). */
export const MASK_LABELS = ["mask", "no_mask", "incorrect"] as const;

/** Labels that are neither a mask class nor "face" (a face of unknown mask status). */
export function isKnownLabel(label: string): boolean {
  return label === "face" || (MASK_LABELS as readonly string[]).includes(label);
}

/**
 * Something in a dataset that could not be used, reported instead of stopping the run: an
 * annotation that is not well-formed, one that names an image that is not there, an object
 * without a usable box, an image that does not decode.
 */
export interface GtProblem {
  /** The annotation or image file. */
  file: string;
  problem: string;
}

/**
 * Where loaders put problems. With a sink the unusable item is left out and listed; without one
 * the loader throws on the first problem (never a silent skip).
 */
function report(sink: GtProblem[] | undefined, file: string, problem: string): void {
  if (!sink) throw new Error(`${file}: ${problem}`);
  sink.push({ file, problem });
}

/** Kaggle / common spellings → mask / no_mask / incorrect (or "face"); unknown names lower-cased. */
export function normaliseLabel(raw: string): string {
  const key = raw
    .trim()
    .toLowerCase()
    .replace(/[\s-]+/g, "_");
  return LABEL_ALIASES[key] ?? key;
}

export function stem(file: string): string {
  const base = path.basename(file);
  const ext = path.extname(base);
  return ext ? base.slice(0, -ext.length) : base;
}

// ---------------------------------------------------------------------------------------------
// Small XML helpers (enough for VOC and imglab files)

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

export function decodeXml(text: string): string {
  return text
    .replace(/<!\[CDATA\[([\s\S]*?)\]\]>/g, "$1")
    .replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (m, e: string) => {
      if (e[0] === "#") {
        const code = e[1] === "x" || e[1] === "X" ? Number.parseInt(e.slice(2), 16) : Number(e.slice(1));
        return Number.isFinite(code) ? String.fromCodePoint(code) : m;
      }
      return ENTITIES[e.toLowerCase()] ?? m;
    });
}

function stripXmlNoise(xml: string): string {
  return xml
    .replace(/<!--[\s\S]*?-->/g, "")
    .replace(/<\?[\s\S]*?\?>/g, "")
    .replace(/<!DOCTYPE[^>]*>/gi, "");
}

/**
 * Why `xml` is not well-formed enough to trust (unbalanced or unclosed tags, no root), or
 * undefined. A light check, not a validating parser: the loaders' regex reading would otherwise
 * turn a truncated file into an image with fewer faces, silently.
 */
export function xmlProblem(xml: string): string | undefined {
  const clean = stripXmlNoise(xml).replace(/<!\[CDATA\[[\s\S]*?\]\]>/g, "");
  const stack: string[] = [];
  let roots = 0;
  for (const m of clean.matchAll(/<(\/?)([A-Za-z_][\w:.-]*)((?:[^>"']|"[^"]*"|'[^']*')*?)(\/?)>/g)) {
    const [, close, name, , selfClose] = m;
    if (close) {
      const open = stack.pop();
      if (open !== name) {
        return open === undefined
          ? `closing tag </${name}> with no open element`
          : `<${open}> closed by </${name}>`;
      }
    } else if (!selfClose) {
      if (stack.length === 0) roots++;
      stack.push(name);
    } else if (stack.length === 0) roots++;
  }
  if (stack.length > 0) return `<${stack[stack.length - 1]}> is never closed (truncated file?)`;
  if (roots === 0) return "no XML element";
  if (roots > 1) return "more than one root element";
  if (clean.replace(/<[^>]*>/g, "").includes("<")) return "a stray < outside any tag";
  return undefined;
}

/** Attributes of a start tag's attribute text: `a='1' b="2"`. */
export function parseAttributes(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.matchAll(/([A-Za-z_][\w:.-]*)\s*=\s*(?:'([^']*)'|"([^"]*)")/g)) {
    out[m[1]] = decodeXml(m[2] ?? m[3] ?? "");
  }
  return out;
}

interface XmlElement {
  attrs: Record<string, string>;
  /** Inner text (raw XML), "" for a self-closing element. */
  body: string;
}

/** Every element named `tag` in `xml` (not nested in itself). */
function elements(xml: string, tag: string): XmlElement[] {
  const re = new RegExp(`<${tag}(\\s[^>]*?)?\\s*(?:/>|>([\\s\\S]*?)</${tag}\\s*>)`, "g");
  const out: XmlElement[] = [];
  for (const m of xml.matchAll(re)) out.push({ attrs: parseAttributes(m[1] ?? ""), body: m[2] ?? "" });
  return out;
}

/** Text of the first `tag` child (trimmed, entities decoded), or undefined. */
function childText(xml: string, tag: string): string | undefined {
  const el = elements(xml, tag)[0];
  return el === undefined ? undefined : decodeXml(el.body).trim();
}

function num(text: string | undefined): number | undefined {
  if (text === undefined || text.trim() === "") return undefined;
  const v = Number(text);
  return Number.isFinite(v) ? v : undefined;
}

// ---------------------------------------------------------------------------------------------
// PASCAL VOC

export interface VocAnnotation {
  filename?: string;
  width?: number;
  height?: number;
  objects: GtObject[];
  /** Objects left out, and why (no name, no box, a coordinate that is not a number). */
  skipped: string[];
}

/** One VOC annotation file. Coordinates are kept as written (floats allowed); labels normalised. */
export function parseVocXml(xml: string): VocAnnotation {
  const clean = stripXmlNoise(xml);
  const objects: GtObject[] = [];
  const skipped: string[] = [];
  elements(clean, "object").forEach((obj, k) => {
    // VOC person layouts nest <part><name/><bndbox/></part> inside an object: drop them first.
    const body = obj.body.replace(/<part\b[\s\S]*?<\/part\s*>/g, "");
    const name = childText(body, "name");
    const bb = elements(body, "bndbox")[0];
    if (name === undefined || name === "" || bb === undefined) {
      skipped.push(`object ${k + 1}: no ${name === undefined || name === "" ? "<name>" : "<bndbox>"}`);
      return;
    }
    const x1 = num(childText(bb.body, "xmin"));
    const y1 = num(childText(bb.body, "ymin"));
    const x2 = num(childText(bb.body, "xmax"));
    const y2 = num(childText(bb.body, "ymax"));
    if (x1 === undefined || y1 === undefined || x2 === undefined || y2 === undefined) {
      skipped.push(`object ${k + 1} (${name}): a box coordinate is missing or not a number`);
      return;
    }
    const o: GtObject = {
      box: [Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2), Math.max(y1, y2)],
      label: normaliseLabel(name),
    };
    const difficult = childText(body, "difficult");
    if (difficult !== undefined && (difficult === "1" || difficult.toLowerCase() === "true")) {
      o.difficult = true;
    }
    objects.push(o);
  });
  const rest = clean.replace(/<object\b[\s\S]*?<\/object\s*>/g, "");
  const size = elements(rest, "size")[0];
  const width = size ? num(childText(size.body, "width")) : undefined;
  const height = size ? num(childText(size.body, "height")) : undefined;
  const ann: VocAnnotation = { objects, skipped };
  const filename = childText(rest, "filename");
  if (filename) ann.filename = filename;
  if (width !== undefined && width > 0) ann.width = width;
  if (height !== undefined && height > 0) ann.height = height;
  return ann;
}

/** stem → file name of the images in a folder (first by IMAGE_EXTENSIONS order on clashes). */
function imageIndex(dir: string): Map<string, string> {
  const index = new Map<string, string>();
  if (!isDir(dir)) return index;
  const files = readdirSync(dir)
    .filter((f) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase()))
    .sort((a, b) => rankExt(a) - rankExt(b) || cmp(a, b));
  for (const f of files) if (!index.has(stem(f))) index.set(stem(f), f);
  return index;
}

function rankExt(f: string): number {
  return IMAGE_EXTENSIONS.indexOf(path.extname(f).toLowerCase());
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Natural order: "img2" before "img10". */
function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true });
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function firstDir(dir: string, names: string[]): string | undefined {
  for (const n of names) if (isDir(path.join(dir, n))) return path.join(dir, n);
  return undefined;
}

/**
 * The stems in a split: `splits.json` (`{ train: [...], val: [...], test: [...] }`, stems or file
 * names) or VOC `ImageSets/Main/<split>.txt`. Undefined where the set has no split information
 * or `split` is "all".
 */
export function readSplit(dir: string, split: Split): Set<string> | undefined {
  if (split === "all") return undefined;
  const json = path.join(dir, "splits.json");
  if (isFile(json)) {
    const data = JSON.parse(readFileSync(json, "utf8")) as Record<string, unknown>;
    const list = data[split];
    if (!Array.isArray(list)) {
      throw new Error(`${json}: no "${split}" list (has ${Object.keys(data).join(", ")})`);
    }
    return new Set(list.map((s) => stem(String(s))));
  }
  const sets = path.join(dir, "ImageSets", "Main", `${split}.txt`);
  if (isFile(sets)) {
    const names = readFileSync(sets, "utf8")
      .split(/\r?\n/)
      .map((l) => l.trim().split(/\s+/)[0])
      .filter((l) => l);
    return new Set(names.map(stem));
  }
  return undefined;
}

export interface VocOptions {
  /** Default "test". A set with no split information loads whole. */
  split?: Split;
  annotationsDir?: string;
  imagesDir?: string;
  /**
   * Problems (XML not well-formed or unreadable, an image that is not there, unusable objects)
   * are listed here and the affected annotation or object left out; without it they throw.
   */
  problems?: GtProblem[];
}

/** A VOC folder: `annotations/` (or `Annotations/`) of XML files, `images/` (or `JPEGImages/`) beside. */
export function loadVoc(dir: string, options: VocOptions = {}): GtImage[] {
  const split = options.split ?? "test";
  const annDir = options.annotationsDir ?? firstDir(dir, ["annotations", "Annotations"]) ?? dir;
  const imgDir = options.imagesDir ?? firstDir(dir, ["images", "JPEGImages", "Images"]) ?? dir;
  const keep = readSplit(dir, split);
  const index = imageIndex(imgDir);
  const files = readdirSync(annDir)
    .filter((f) => f.toLowerCase().endsWith(".xml"))
    .sort(naturalCompare);
  const out: GtImage[] = [];
  const problems = options.problems;
  /** Stems whose annotation was read, usable or not (the split check below). */
  const seen = new Set<string>();
  for (const f of files) {
    const name = stem(f);
    if (keep && !keep.has(name)) continue;
    seen.add(name);
    const xmlFile = path.join(annDir, f);
    let xml: string;
    try {
      xml = readFileSync(xmlFile, "utf8");
    } catch (err) {
      report(problems, xmlFile, `unreadable: ${err instanceof Error ? err.message : String(err)}`);
      continue;
    }
    const bad = xmlProblem(xml) ?? (/<annotation[\s>]/.test(xml) ? undefined : "no <annotation> element");
    if (bad) {
      report(problems, xmlFile, `malformed XML: ${bad}`);
      continue;
    }
    const ann = parseVocXml(xml);
    for (const why of ann.skipped) report(problems, xmlFile, why);
    let file = ann.filename && isFile(path.join(imgDir, ann.filename)) ? ann.filename : undefined;
    file ??= index.get(name) ?? (ann.filename ? index.get(stem(ann.filename)) : undefined);
    if (file === undefined) {
      const wanted = ann.filename ?? `${name}.*`;
      report(problems, xmlFile, `names an image that is not there: ${path.join(imgDir, wanted)}`);
      continue;
    }
    const img: GtImage = { image: path.join(imgDir, file), name, objects: ann.objects };
    if (ann.width !== undefined) img.width = ann.width;
    if (ann.height !== undefined) img.height = ann.height;
    out.push(img);
  }
  if (keep) {
    const missing = [...keep].filter((s) => !seen.has(s));
    if (missing.length > 0) {
      const message = `split "${split}" names ${missing.length} images with no annotation, e.g. ${missing[0]}`;
      if (!problems) throw new Error(`${dir}: ${message}`);
      for (const s of missing)
        problems.push({ file: path.join(annDir, `${s}.xml`), problem: "in the split, no annotation" });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// YOLO

export type SizeMap =
  | Map<string, { width: number; height: number }>
  | Record<string, { width: number; height: number }>;

export interface YoloOptions {
  split?: Split;
  labelsDir?: string;
  imagesDir?: string;
  /** Class names by index; else classes.txt / obj.names / data.yaml `names:` in the folder. */
  names?: string[];
  /** Image sizes by stem or file name; else read from the image header with sharp. */
  sizes?: SizeMap;
  /** As VocOptions.problems: a label file with no image, an image whose size cannot be read. */
  problems?: GtProblem[];
}

/** Class names from a data.yaml text: `names: [a, b]`, a `- a` block list or a `0: a` map. */
export function parseYamlNames(yaml: string): string[] | undefined {
  const lines = yaml.split(/\r?\n/);
  const i = lines.findIndex((l) => /^names\s*:/.test(l));
  if (i < 0) return undefined;
  const unquote = (s: string) => s.trim().replace(/^(['"])(.*)\1$/, "$2");
  const inline = lines[i]
    .replace(/^names\s*:/, "")
    .replace(/\s#.*$/, "")
    .trim();
  if (inline.startsWith("[")) {
    const inner = inline.replace(/^\[/, "").replace(/\]\s*$/, "");
    return inner
      .split(",")
      .map(unquote)
      .filter((s) => s !== "");
  }
  if (inline !== "") return undefined;
  const byIndex: string[] = [];
  const list: string[] = [];
  for (const line of lines.slice(i + 1)) {
    if (line.trim() === "" || line.trim().startsWith("#")) continue;
    if (!/^\s/.test(line)) break;
    const item = line.match(/^\s*-\s*(.*?)\s*$/);
    const entry = line.match(/^\s*(\d+)\s*:\s*(.*?)\s*$/);
    if (item) list.push(unquote(item[1]));
    else if (entry) byIndex[Number(entry[1])] = unquote(entry[2]);
    else break;
  }
  if (list.length > 0) return list;
  if (byIndex.length > 0) return Array.from(byIndex, (n, k) => n ?? String(k));
  return undefined;
}

function yoloNames(dirs: string[]): string[] | undefined {
  for (const dir of dirs) {
    for (const f of ["classes.txt", "obj.names", "classes.names", "labels.txt"]) {
      const p = path.join(dir, f);
      if (isFile(p)) {
        return readFileSync(p, "utf8")
          .split(/\r?\n/)
          .map((l) => l.trim())
          .filter((l) => l);
      }
    }
    for (const f of ["data.yaml", "data.yml", "dataset.yaml"]) {
      const p = path.join(dir, f);
      if (isFile(p)) {
        const names = parseYamlNames(readFileSync(p, "utf8"));
        if (names) return names;
      }
    }
  }
  return undefined;
}

function lookupSize(
  sizes: SizeMap | undefined,
  keys: string[],
): { width: number; height: number } | undefined {
  if (!sizes) return undefined;
  for (const k of keys) {
    const v = sizes instanceof Map ? sizes.get(k) : Object.hasOwn(sizes, k) ? sizes[k] : undefined;
    if (v) return v;
  }
  return undefined;
}

/** Width and height as displayed (EXIF orientations 5–8 swap them, as the usual YOLO tools do). */
export async function imageSize(file: string): Promise<{ width: number; height: number }> {
  const { default: sharp } = await import("sharp");
  const meta = await sharp(file).metadata();
  if (!meta.width || !meta.height) throw new Error(`${file}: no image size in its header`);
  const swap = meta.orientation !== undefined && meta.orientation >= 5;
  return swap ? { width: meta.height, height: meta.width } : { width: meta.width, height: meta.height };
}

/**
 * One YOLO label file's text → boxes in pixels. Lines are `cls cx cy w h` (normalised); a line of
 * `cls x1 y1 x2 y2 x3 y3 …` (segment polygon) becomes its bounding box.
 */
export function parseYoloLabels(text: string, width: number, height: number, names?: string[]): GtObject[] {
  const out: GtObject[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/#.*$/, "").trim();
    if (!line) continue;
    const t = line.split(/[\s,]+/).map(Number);
    if (t.length < 5 || t.some((v) => !Number.isFinite(v))) continue;
    const cls = t[0];
    let box: Box;
    if (t.length >= 7 && t.length % 2 === 1) {
      const xs = t.filter((_, k) => k > 0 && k % 2 === 1);
      const ys = t.filter((_, k) => k > 0 && k % 2 === 0);
      box = [
        Math.min(...xs) * width,
        Math.min(...ys) * height,
        Math.max(...xs) * width,
        Math.max(...ys) * height,
      ];
    } else {
      const [cx, cy, w, h] = [t[1], t[2], Math.abs(t[3]), Math.abs(t[4])];
      box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height];
    }
    const name = names?.[cls];
    out.push({ box, label: name !== undefined ? normaliseLabel(name) : String(cls) });
  }
  return out;
}

/**
 * A YOLO folder. Layouts: `images/<split>/` + `labels/<split>/` (Ultralytics), `images/` +
 * `labels/`, or label .txt files beside the images. Images without a label file have no faces.
 */
export async function loadYolo(dir: string, options: YoloOptions = {}): Promise<GtImage[]> {
  const split = options.split ?? "test";
  const pairs: { images: string; labels: string }[] = [];
  let splitDirs = false;
  if (options.labelsDir || options.imagesDir) {
    const labels = options.labelsDir ?? options.imagesDir!;
    pairs.push({ images: options.imagesDir ?? labels, labels });
  } else if (roboflowSplits(dir, split).length > 0) {
    // Roboflow's export: <split>/images + <split>/labels, data.yaml at the top.
    for (const s of roboflowSplits(dir, split)) {
      pairs.push({ images: path.join(dir, s, "images"), labels: path.join(dir, s, "labels") });
    }
    splitDirs = true;
  } else {
    const labelsRoot = firstDir(dir, ["labels"]);
    const imagesRoot = firstDir(dir, ["images"]) ?? labelsRoot ?? dir;
    const labelBase = labelsRoot ?? imagesRoot;
    const folderNames: Record<Exclude<Split, "all">, string[]> = {
      train: ["train"],
      val: ["val", "valid"],
      test: ["test"],
    };
    const wanted = split === "all" ? ["train", "val", "valid", "test"] : folderNames[split];
    const splitPairs = wanted
      .map((s) => ({ images: path.join(imagesRoot, s), labels: path.join(labelBase, s) }))
      .filter((p) => isDir(p.labels) || isDir(p.images));
    splitDirs = ["train", "val", "valid", "test"].some((s) => isDir(path.join(labelBase, s)));
    if (splitPairs.length > 0) pairs.push(...splitPairs);
    else if (splitDirs) throw new Error(`${dir}: no "${split}" folder under ${labelBase}`);
    else pairs.push({ images: imagesRoot, labels: labelBase });
  }
  const names = options.names ?? yoloNames([dir, ...pairs.map((p) => p.labels), path.dirname(dir)]);
  // Without split folders, a splits.json (or ImageSets) beside the data still selects images.
  const keep = splitDirs ? undefined : readSplit(dir, split);
  const out: GtImage[] = [];
  for (const pair of pairs) {
    const index = imageIndex(pair.images);
    const labelFiles = isDir(pair.labels)
      ? readdirSync(pair.labels).filter((f) => f.endsWith(".txt") && !/^(classes|labels)\.txt$/.test(f))
      : [];
    const byStem = new Map(labelFiles.map((f) => [stem(f), f]));
    const stems = [...new Set([...index.keys(), ...byStem.keys()])].sort(naturalCompare);
    for (const s of stems) {
      if (keep && !keep.has(s)) continue;
      const imageFile = index.get(s);
      const image = path.join(pair.images, imageFile ?? `${s}.jpg`);
      const labelFile = byStem.get(s);
      const text = labelFile ? readFileSync(path.join(pair.labels, labelFile), "utf8") : "";
      let size = lookupSize(options.sizes, [s, imageFile ?? "", image]);
      if (!size && text.trim() !== "") {
        const labelPath = path.join(pair.labels, labelFile ?? `${s}.txt`);
        if (!imageFile) {
          report(options.problems, labelPath, `no image ${s}.* to take its size from`);
          continue;
        }
        try {
          size = await imageSize(image);
        } catch (err) {
          report(
            options.problems,
            image,
            `unreadable image: ${err instanceof Error ? err.message : String(err)}`,
          );
          continue;
        }
      }
      const objects = size ? parseYoloLabels(text, size.width, size.height, names) : [];
      const img: GtImage = { image, name: s, objects };
      if (size) {
        img.width = size.width;
        img.height = size.height;
      }
      out.push(img);
    }
  }
  return out;
}

/** Roboflow YOLO export split folders present for `split` (each with images/ and labels/). */
function roboflowSplits(dir: string, split: Split): string[] {
  const wanted =
    split === "all" ? ["train", "valid", "val", "test"] : split === "val" ? ["valid", "val"] : [split];
  const has = (s: string) => isDir(path.join(dir, s, "labels")) && isDir(path.join(dir, s, "images"));
  const present = ["train", "valid", "val", "test"].filter(has);
  if (present.length === 0) return [];
  const chosen = wanted.filter(has);
  if (chosen.length === 0) throw new Error(`${dir}: no "${split}" folder (has ${present.join(", ")})`);
  return chosen;
}

// ---------------------------------------------------------------------------------------------
// WIDER-style gt.txt (wider-val-200)

/**
 * `# relpath origW origH` starts an image; each following `x1 y1 x2 y2` line is a face in the
 * resized image's pixels. Other `#` lines are comments. Images are looked up by base name in
 * `imagesDir`. Every face is labelled "face".
 */
export function parseWiderGt(text: string, imagesDir: string): GtImage[] {
  const out: GtImage[] = [];
  let cur: GtImage | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    if (line.startsWith("#")) {
      const t = line.slice(1).trim().split(/\s+/);
      if (t.length === 3 && /^\d+$/.test(t[1]) && /^\d+$/.test(t[2])) {
        const base = path.basename(t[0]);
        cur = {
          image: path.join(imagesDir, base),
          name: stem(base),
          objects: [],
          original: { path: t[0], width: Number(t[1]), height: Number(t[2]) },
        };
        out.push(cur);
      }
      continue;
    }
    const v = line.split(/[\s,]+/).map(Number);
    if (v.length < 4 || v.slice(0, 4).some((x) => !Number.isFinite(x))) {
      throw new Error(`gt.txt line ${i + 1}: not "x1 y1 x2 y2": ${line}`);
    }
    if (!cur) throw new Error(`gt.txt line ${i + 1}: a box before any "# relpath W H" line`);
    const [x1, y1, x2, y2] = v;
    cur.objects.push({
      box: [Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2), Math.max(y1, y2)],
      label: "face",
    });
  }
  return out;
}

/** A folder holding gt.txt and images/, or the gt.txt file itself. */
export function loadWider(dirOrFile: string): GtImage[] {
  const file = isDir(dirOrFile) ? path.join(dirOrFile, "gt.txt") : dirOrFile;
  const dir = path.dirname(file);
  const imagesDir = isDir(path.join(dir, "images")) ? path.join(dir, "images") : dir;
  return parseWiderGt(readFileSync(file, "utf8"), imagesDir);
}

// ---------------------------------------------------------------------------------------------
// JSON lines (labels.jsonl)

/**
 * One JSON object per line: `{"image": "images/a.jpg", "width": W, "height": H, "faces": [{"box":
 * [x1, y1, x2, y2], "label": "mask"}]}`, image paths relative to the file's folder. A line that is
 * not such an object is listed as a problem and left out.
 */
export function loadJsonl(dirOrFile: string, problems?: GtProblem[]): GtImage[] {
  const file = isDir(dirOrFile) ? path.join(dirOrFile, "labels.jsonl") : dirOrFile;
  const dir = path.dirname(file);
  const out: GtImage[] = [];
  const lines = readFileSync(file, "utf8").split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    const where = `${file}:${i + 1}`;
    let row: { image?: unknown; width?: unknown; height?: unknown; faces?: unknown };
    try {
      row = JSON.parse(lines[i]);
    } catch {
      report(problems, where, "not JSON");
      continue;
    }
    if (typeof row?.image !== "string" || !Array.isArray(row.faces)) {
      report(problems, where, "needs an `image` path and a `faces` list");
      continue;
    }
    const objects: GtObject[] = [];
    for (const f of row.faces as { box?: unknown; label?: unknown }[]) {
      const b = f?.box;
      if (!Array.isArray(b) || b.length !== 4 || !b.every(Number.isFinite) || b[2] <= b[0] || b[3] <= b[1]) {
        report(problems, where, "a face without a usable box");
        continue;
      }
      objects.push({ box: b as Box, label: normaliseLabel(typeof f.label === "string" ? f.label : "face") });
    }
    const img: GtImage = { image: path.resolve(dir, row.image), name: stem(row.image), objects };
    if (typeof row.width === "number") img.width = row.width;
    if (typeof row.height === "number") img.height = row.height;
    out.push(img);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// dlib imglab XML

/**
 * `<image file='..' [width height]><box top left width height [ignore='1']>[<label>..</label>]`.
 * Boxes become [left, top, left + width, top + height]; `ignore` boxes are `difficult`.
 * Image paths are resolved against `baseDir` (the XML file's folder).
 */
export function parseDlibXml(xml: string, baseDir: string): GtImage[] {
  const clean = stripXmlNoise(xml);
  const out: GtImage[] = [];
  for (const im of elements(clean, "image")) {
    const file = im.attrs["file"];
    if (file === undefined) continue;
    const objects: GtObject[] = [];
    for (const b of elements(im.body, "box")) {
      const top = num(b.attrs["top"]);
      const left = num(b.attrs["left"]);
      const w = num(b.attrs["width"]);
      const h = num(b.attrs["height"]);
      if (top === undefined || left === undefined || w === undefined || h === undefined) continue;
      const label = childText(b.body, "label");
      const o: GtObject = {
        box: [left, top, left + w, top + h],
        label: label ? normaliseLabel(label) : "face",
      };
      const ignore = b.attrs["ignore"];
      if (ignore !== undefined && ignore !== "0" && ignore.toLowerCase() !== "false") o.difficult = true;
      objects.push(o);
    }
    const img: GtImage = { image: path.resolve(baseDir, file), name: stem(file), objects };
    const width = num(im.attrs["width"]);
    const height = num(im.attrs["height"]);
    if (width !== undefined && width > 0) img.width = width;
    if (height !== undefined && height > 0) img.height = height;
    out.push(img);
  }
  return out;
}

export function isDlibXml(text: string): boolean {
  return /<image\s[^>]*\bfile\s*=/.test(text) && !/<annotation[\s>]/.test(text);
}

/** dlib's split files: test → testing.xml, train → training.xml, all → both. */
function dlibFiles(dir: string, split: Split): string[] {
  const want =
    split === "all"
      ? ["training.xml", "testing.xml"]
      : split === "train"
        ? ["training.xml"]
        : ["testing.xml"];
  if (split === "val") throw new Error(`${dir}: dlib sets have training.xml / testing.xml only (no "val")`);
  const files = want.map((f) => path.join(dir, f)).filter(isFile);
  if (files.length > 0) return files;
  const xmls = readdirSync(dir)
    .filter((f) => f.toLowerCase().endsWith(".xml"))
    .map((f) => path.join(dir, f))
    .filter((f) => isDlibXml(readFileSync(f, "utf8")));
  if (xmls.length === 1) return xmls;
  throw new Error(`${dir}: cannot tell which imglab XML holds "${split}" (found ${xmls.length})`);
}

/** An imglab XML file, or a folder with training.xml / testing.xml. */
export function loadDlib(dirOrFile: string, split: Split = "test"): GtImage[] {
  const files = isDir(dirOrFile) ? dlibFiles(dirOrFile, split) : [dirOrFile];
  return files.flatMap((f) => parseDlibXml(readFileSync(f, "utf8"), path.dirname(f)));
}

// ---------------------------------------------------------------------------------------------
// Resolver

/** Repository root (the folder above eval/). */
export const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));

/** `MASKWATCH_DATA`, else `$MASKWATCH_SHARED/datasets`, else `<repo>/../shared/datasets`. */
export function dataRoot(env: NodeJS.ProcessEnv = process.env): string {
  const v = env["MASKWATCH_DATA"];
  if (v) return path.resolve(v);
  const shared = env["MASKWATCH_SHARED"];
  return shared ? path.resolve(shared, "datasets") : path.resolve(REPO_ROOT, "..", "shared", "datasets");
}

export const DATASET_ALIASES: Record<string, string> = {
  kaggle: "kaggle-face-mask",
  "kaggle-mask": "kaggle-face-mask",
  "face-mask": "kaggle-face-mask",
  wider: "wider-val-200",
  widerface: "wider-val-200",
  "wider-val": "wider-val-200",
  dlib: "dlib-faces",
};

/** The format of a dataset folder or file, from what it holds. */
export function detectFormat(p: string): DatasetFormat {
  if (isFile(p)) {
    const head = readFileSync(p, "utf8").slice(0, 4096);
    if (p.toLowerCase().endsWith(".xml")) return isDlibXml(head) ? "dlib" : "voc";
    if (p.toLowerCase().endsWith(".jsonl")) return "jsonl";
    if (/^\s*#\s*\S+\s+\d+\s+\d+\s*$/m.test(head)) return "wider";
    throw new Error(
      `${p}: not a dataset file this loader knows (imglab XML, WIDER-style gt.txt or labels .jsonl)`,
    );
  }
  if (!isDir(p)) throw new Error(`${p}: no such dataset folder`);
  if (isFile(path.join(p, "gt.txt"))) return "wider";
  if (isFile(path.join(p, "labels.jsonl"))) return "jsonl";
  if (firstDir(p, ["annotations", "Annotations"])) return "voc";
  const entries = readdirSync(p);
  const xmls = entries.filter((f) => f.toLowerCase().endsWith(".xml"));
  if (xmls.some((f) => isDlibXml(readFileSync(path.join(p, f), "utf8").slice(0, 65536)))) return "dlib";
  if (xmls.some((f) => /<annotation[\s>]/.test(readFileSync(path.join(p, f), "utf8")))) return "voc";
  if (roboflowSplits(p, "all").length > 0) return "yolo";
  if (firstDir(p, ["labels"]) || entries.some((f) => f.endsWith(".txt") && f !== "README.txt")) return "yolo";
  throw new Error(
    `${p}: cannot tell the annotation format (VOC, YOLO, WIDER gt.txt, imglab XML or labels.jsonl)`,
  );
}

export interface ResolvedDataset {
  /** Folder or file the loader reads. */
  path: string;
  format: DatasetFormat;
}

/**
 * A dataset argument → where it is and its format: an existing path (file or folder, relative to
 * the working directory), else a name or alias (kaggle, wider, dlib) under `root` (default
 * `dataRoot()`).
 */
export function resolveDataset(
  arg: string,
  options: { root?: string; format?: DatasetFormat } = {},
): ResolvedDataset {
  const root = options.root ?? dataRoot();
  let p: string | undefined;
  if (
    existsSync(arg) &&
    (path.isAbsolute(arg) || arg.includes("/") || arg.includes(path.sep) || arg.startsWith("."))
  ) {
    p = path.resolve(arg);
  }
  if (!p) {
    const name = DATASET_ALIASES[arg.toLowerCase()] ?? arg;
    const cand = path.resolve(root, name);
    if (existsSync(cand)) p = cand;
    else if (existsSync(arg)) p = path.resolve(arg);
    else {
      const known = isDir(root) ? readdirSync(root).filter((f) => isDir(path.join(root, f))) : [];
      throw new Error(
        `dataset "${arg}" not found (looked for ${cand}; data root ${root}` +
          `${known.length ? `, holding ${known.join(", ")}` : ", which is missing: set MASKWATCH_DATA"})`,
      );
    }
  }
  return { path: p, format: options.format ?? detectFormat(p) };
}

export interface LoadOptions {
  /** Default "test" (Kaggle splits.json test; dlib testing.xml; sets without splits load whole). */
  split?: Split;
  /** Skip format detection. */
  format?: DatasetFormat;
  /** Data root for names; default `dataRoot()`. */
  root?: string;
  /** YOLO only. */
  names?: string[];
  /** YOLO only. */
  sizes?: SizeMap;
  /** VOC and YOLO: problems are listed here and the items left out (see VocOptions.problems). */
  problems?: GtProblem[];
}

/** Resolve `arg` and load its ground truth. */
export async function loadGroundTruth(arg: string, options: LoadOptions = {}): Promise<GtImage[]> {
  const resolved = resolveDataset(arg, options);
  return loadResolved(resolved, options);
}

export async function loadResolved(ds: ResolvedDataset, options: LoadOptions = {}): Promise<GtImage[]> {
  const split = options.split ?? "test";
  switch (ds.format) {
    case "voc":
      if (isFile(ds.path)) {
        const xml = readFileSync(ds.path, "utf8");
        const bad = xmlProblem(xml);
        if (bad) {
          report(options.problems, ds.path, `malformed XML: ${bad}`);
          return [];
        }
        const ann = parseVocXml(xml);
        for (const why of ann.skipped) report(options.problems, ds.path, why);
        const dir = path.dirname(ds.path);
        const name = stem(ds.path);
        const img: GtImage = {
          image: path.join(dir, ann.filename ?? `${name}.jpg`),
          name,
          objects: ann.objects,
        };
        if (ann.width !== undefined) img.width = ann.width;
        if (ann.height !== undefined) img.height = ann.height;
        return [img];
      }
      return loadVoc(ds.path, { split, problems: options.problems });
    case "yolo":
      return loadYolo(ds.path, {
        split,
        names: options.names,
        sizes: options.sizes,
        problems: options.problems,
      });
    case "wider":
      return loadWider(ds.path);
    case "dlib":
      return loadDlib(ds.path, split);
    case "jsonl":
      return loadJsonl(ds.path, options.problems);
  }
}

/** Faces per normalised label, and the difficult ones. */
export function countObjects(images: GtImage[]): {
  images: number;
  objects: number;
  difficult: number;
  byLabel: Record<string, number>;
} {
  const byLabel: Record<string, number> = {};
  let objects = 0;
  let difficult = 0;
  for (const im of images) {
    for (const o of im.objects) {
      objects++;
      if (o.difficult) difficult++;
      byLabel[o.label] = (byLabel[o.label] ?? 0) + 1;
    }
  }
  return { images: images.length, objects, difficult, byLabel };
}
