import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import {
  countObjects,
  dataRoot,
  detectFormat,
  type GtImage,
  loadGroundTruth,
  loadYolo,
  normaliseLabel,
  parseDlibXml,
  parseVocXml,
  parseWiderGt,
  parseYamlNames,
  parseYoloLabels,
  resolveDataset,
} from "../eval/groundtruth.ts";
import { unlessCI } from "./support/ci.ts";

function tempDir(): string {
  return mkdtempSync(path.join(tmpdir(), "maskwatch-gt-"));
}

// Parsers on hand-made text -------------------------------------------------------------------

test("labels normalise to mask / no_mask / incorrect", () => {
  assert.equal(normaliseLabel("with_mask"), "mask");
  assert.equal(normaliseLabel(" without_mask\n"), "no_mask");
  assert.equal(normaliseLabel("mask_weared_incorrect"), "incorrect");
  assert.equal(normaliseLabel("Without Mask"), "no_mask");
  assert.equal(normaliseLabel("face"), "face");
  assert.equal(normaliseLabel("Helmet"), "helmet");
});

test("VOC XML: attributes, whitespace, float coordinates, difficult, parts, entities", () => {
  const xml = `<?xml version="1.0" encoding="utf-8"?>
<!-- a comment <object> that is not one -->
<annotation verified="yes">
  <folder>images</folder>
  <filename> a&amp;b.png </filename>
  <size><width>640</width>
    <height> 480 </height><depth>3</depth></size>
  <object>
    <name>
      with_mask
    </name>
    <difficult>0</difficult>
    <bndbox><xmin>10.5</xmin><ymin>20</ymin><xmax>50.25</xmax><ymax>70</ymax></bndbox>
  </object>
  <object type="x">
    <name>without_mask</name><difficult>1</difficult>
    <bndbox>
      <xmin> 100 </xmin> <ymin>110</ymin> <xmax>90</xmax> <ymax>150</ymax>
    </bndbox>
  </object>
  <object>
    <name>mask_weared_incorrect</name>
    <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox>
    <part><name>head</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>1</xmax><ymax>1</ymax></bndbox></part>
    <difficult/>
  </object>
</annotation>`;
  const ann = parseVocXml(xml);
  assert.equal(ann.filename, "a&b.png");
  assert.equal(ann.width, 640);
  assert.equal(ann.height, 480);
  assert.deepEqual(ann.objects, [
    { box: [10.5, 20, 50.25, 70], label: "mask" },
    { box: [90, 110, 100, 150], label: "no_mask", difficult: true },
    { box: [1, 2, 3, 4], label: "incorrect" },
  ]);
});

test("YOLO labels: cx cy w h normalised to pixels, class names, polygons", () => {
  const objs = parseYoloLabels(
    "0 0.5 0.5 0.25 0.5\n\n1 0.1 0.2 0.2 0.2 0.9\n2 0.1 0.1 0.3 0.1 0.3 0.4\n",
    200,
    100,
    ["with_mask", "without_mask"],
  );
  assert.deepEqual(objs[0], { box: [75, 25, 125, 75], label: "mask" });
  assert.equal(objs[1].label, "no_mask");
  assert.deepEqual(
    objs[1].box.map((v) => Math.round(v * 1e6) / 1e6),
    [0, 10, 40, 30],
  );
  // Polygon (0.1,0.1) (0.3,0.1) (0.3,0.4) → its bounding box; class 2 has no name → "2".
  assert.deepEqual(
    objs[2].box.map((v) => Math.round(v * 1e6) / 1e6),
    [20, 10, 60, 40],
  );
  assert.equal(objs[2].label, "2");
});

test("data.yaml names: inline list, block list, index map", () => {
  assert.deepEqual(parseYamlNames("nc: 2\nnames: ['with_mask', \"without_mask\"]\n"), [
    "with_mask",
    "without_mask",
  ]);
  assert.deepEqual(parseYamlNames("names:\n  - a\n  - 'b'\ntrain: x\n"), ["a", "b"]);
  assert.deepEqual(parseYamlNames("path: .\nnames:\n  0: face\n  1: masked_face\n"), ["face", "masked_face"]);
  assert.equal(parseYamlNames("nc: 1\n"), undefined);
});

test("YOLO folder: images/ + labels/ with classes.txt, sizes from the header or a map", async () => {
  const dir = tempDir();
  try {
    mkdirSync(path.join(dir, "images"));
    mkdirSync(path.join(dir, "labels"));
    const png = await sharp({ create: { width: 40, height: 20, channels: 3, background: "#808080" } })
      .png()
      .toBuffer();
    writeFileSync(path.join(dir, "images", "p1.png"), png);
    writeFileSync(path.join(dir, "images", "p2.png"), png);
    writeFileSync(path.join(dir, "labels", "p1.txt"), "1 0.5 0.5 0.5 1\n");
    writeFileSync(path.join(dir, "labels", "classes.txt"), "with_mask\nwithout_mask\n");
    assert.equal(detectFormat(dir), "yolo");
    const gt = await loadYolo(dir, { split: "all" });
    assert.deepEqual(
      gt.map((g) => [g.name, g.width, g.height, g.objects]),
      [
        ["p1", 40, 20, [{ box: [10, 0, 30, 20], label: "no_mask" }]],
        ["p2", undefined, undefined, []],
      ],
    );
    const sized = await loadYolo(dir, {
      split: "all",
      sizes: { p1: { width: 400, height: 200 } },
      names: ["a", "b"],
    });
    assert.deepEqual(sized[0].objects, [{ box: [100, 0, 300, 200], label: "b" }]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("YOLO folder: split folders (val as valid) and splits.json", async () => {
  const dir = tempDir();
  try {
    for (const s of ["train", "valid"]) {
      mkdirSync(path.join(dir, "images", s), { recursive: true });
      mkdirSync(path.join(dir, "labels", s), { recursive: true });
      writeFileSync(path.join(dir, "labels", s, `${s}1.txt`), "0 0.5 0.5 0.5 0.5\n");
      writeFileSync(path.join(dir, "images", s, `${s}1.jpg`), "");
    }
    writeFileSync(path.join(dir, "data.yaml"), "names: [with_mask]\n");
    const sizes = { train1: { width: 10, height: 10 }, valid1: { width: 20, height: 20 } };
    const val = await loadYolo(dir, { split: "val", sizes });
    assert.deepEqual(
      val.map((g) => [g.name, g.objects]),
      [["valid1", [{ box: [5, 5, 15, 15], label: "mask" }]]],
    );
    assert.equal((await loadYolo(dir, { split: "all", sizes })).length, 2);
    await assert.rejects(loadYolo(dir, { split: "test", sizes }), /no "test" folder/);

    const flat = tempDir();
    try {
      writeFileSync(path.join(flat, "a.txt"), "0 0.5 0.5 1 1\n");
      writeFileSync(path.join(flat, "b.txt"), "");
      writeFileSync(path.join(flat, "splits.json"), JSON.stringify({ train: ["a"], test: ["b"] }));
      const flatSizes = { a: { width: 8, height: 8 } };
      assert.deepEqual(
        (await loadYolo(flat, { sizes: flatSizes })).map((g) => g.name),
        ["b"],
      );
      assert.deepEqual(
        (await loadYolo(flat, { split: "train", sizes: flatSizes })).map((g) => g.objects[0].box),
        [[0, 0, 8, 8]],
      );
    } finally {
      rmSync(flat, { recursive: true, force: true });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("WIDER-style gt.txt: headers, comments, boxes, empty images", () => {
  const text = `# DERIVED by helper: a comment line with many words
# 0--Parade/0_Parade_1.jpg 1024 768
1.5 2 11.5 12
20 20 30 40
# 1--Handshaking/1_Hand_2.jpg 800 600
# 2--Demo/2_Demo_3.jpg 640 480
5 5 6 6
`;
  const gt = parseWiderGt(text, "/imgs");
  assert.deepEqual(
    gt.map((g) => [g.name, g.image, g.objects.length]),
    [
      ["0_Parade_1", "/imgs/0_Parade_1.jpg", 2],
      ["1_Hand_2", "/imgs/1_Hand_2.jpg", 0],
      ["2_Demo_3", "/imgs/2_Demo_3.jpg", 1],
    ],
  );
  assert.deepEqual(gt[0].objects[0], { box: [1.5, 2, 11.5, 12], label: "face" });
  assert.deepEqual(gt[0].original, { path: "0--Parade/0_Parade_1.jpg", width: 1024, height: 768 });
});

test("dlib imglab XML: boxes, ignore, labels, landmark parts", () => {
  const xml = `<?xml version='1.0' encoding='ISO-8859-1'?>
<dataset><name>x</name><images>
  <image file='sub/a.jpg' width='500' height='300'>
    <box top='10' left='20' width='30' height='40'/>
    <box top="1" left="2" width="3" height="4" ignore="1"/>
    <box top='5' left='6' width='7' height='8'>
      <label>with_mask</label>
      <part name='00' x='1' y='2'/>
    </box>
  </image>
  <image file='b.png'/>
</images></dataset>`;
  const gt = parseDlibXml(xml, "/base");
  assert.equal(gt.length, 2);
  assert.equal(gt[0].image, "/base/sub/a.jpg");
  assert.equal(gt[0].name, "a");
  assert.equal(gt[0].width, 500);
  assert.deepEqual(gt[0].objects, [
    { box: [20, 10, 50, 50], label: "face" },
    { box: [2, 1, 5, 5], label: "face", difficult: true },
    { box: [6, 5, 13, 13], label: "mask" },
  ]);
  assert.deepEqual(gt[1], { image: "/base/b.png", name: "b", objects: [] });
});

test("resolver: names and aliases under the data root, paths as given, clear errors", () => {
  const root = tempDir();
  try {
    mkdirSync(path.join(root, "wider-val-200", "images"), { recursive: true });
    writeFileSync(path.join(root, "wider-val-200", "gt.txt"), "# a/b.jpg 10 10\n1 1 5 5\n");
    const r = resolveDataset("wider", { root });
    assert.equal(r.path, path.join(root, "wider-val-200"));
    assert.equal(r.format, "wider");
    assert.equal(resolveDataset(path.join(root, "wider-val-200", "gt.txt"), { root }).format, "wider");
    assert.throws(() => resolveDataset("nope", { root }), /dataset "nope" not found/);
    assert.equal(dataRoot({ MASKWATCH_DATA: root }), root);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

// The real datasets ---------------------------------------------------------------------------

const ROOT = dataRoot();
const SKIP = `datasets not found at ${ROOT} (set MASKWATCH_DATA to the shared datasets folder)`;

function needs(sub: string): string | undefined {
  return existsSync(path.join(ROOT, sub)) ? undefined : `${SKIP}: no ${sub}`;
}

function allImagesExist(gt: GtImage[]): void {
  const missing = gt.filter((g) => !existsSync(g.image)).map((g) => g.image);
  assert.deepEqual(missing.slice(0, 5), [], `${missing.length} image files missing`);
}

test("Kaggle face-mask: test split from splits.json", async (t) => {
  const why = needs("kaggle-face-mask/splits.json");
  if (why) return t.skip(unlessCI(why));
  const splits = JSON.parse(
    readFileSync(path.join(ROOT, "kaggle-face-mask", "splits.json"), "utf8"),
  ) as Record<string, string[]>;
  assert.equal(resolveDataset("kaggle").format, "voc");
  const gt = await loadGroundTruth("kaggle");
  assert.equal(gt.length, splits["test"].length);
  assert.equal(gt.length, 160);
  assert.deepEqual(new Set(gt.map((g) => g.name)), new Set(splits["test"]));
  const c = countObjects(gt);
  assert.equal(c.objects, 924);
  assert.deepEqual(c.byLabel, { mask: 689, no_mask: 218, incorrect: 17 });
  assert.equal(c.difficult, 0);
  assert.ok(gt.every((g) => g.width! > 0 && g.height! > 0));
  allImagesExist(gt);
  // The whole set and the other splits add up to the README's counts.
  const all = countObjects(await loadGroundTruth("kaggle", { split: "all" }));
  assert.equal(all.images, 853);
  assert.deepEqual(all.byLabel, { mask: 3232, no_mask: 717, incorrect: 123 });
  const train = countObjects(await loadGroundTruth("kaggle", { split: "train" }));
  const val = countObjects(await loadGroundTruth("kaggle", { split: "val" }));
  assert.deepEqual([train.images, val.images], [614, 79]);
  assert.equal(train.objects + val.objects + c.objects, 4072);
});

test("wider-val-200: 200 images, 4,370 faces", async (t) => {
  const why = needs("wider-val-200/gt.txt");
  if (why) return t.skip(unlessCI(why));
  assert.equal(resolveDataset("wider").format, "wider");
  const gt = await loadGroundTruth("wider");
  const c = countObjects(gt);
  assert.equal(c.images, 200);
  assert.equal(c.objects, 4370);
  assert.deepEqual(c.byLabel, { face: 4370 });
  assert.equal(new Set(gt.map((g) => g.name)).size, 200);
  allImagesExist(gt);
  // Most WIDER faces here are tiny (shorter side < 10 px at 416×416).
  const tiny = gt
    .flatMap((g) => g.objects)
    .filter((o) => Math.min(o.box[2] - o.box[0], o.box[3] - o.box[1]) < 10);
  assert.equal(tiny.length, 3287);
});

test("dlib faces: testing.xml (default) and training.xml", async (t) => {
  const why = needs("dlib-faces/testing.xml");
  if (why) return t.skip(unlessCI(why));
  assert.equal(resolveDataset("dlib").format, "dlib");
  const test = await loadGroundTruth("dlib");
  assert.deepEqual([test.length, countObjects(test).objects], [5, 25]);
  assert.deepEqual(test[0].objects[0], { box: [274, 181, 326, 234], label: "face" });
  allImagesExist(test);
  const train = await loadGroundTruth("dlib", { split: "train" });
  assert.deepEqual([train.length, countObjects(train).objects], [4, 18]);
  const file = await loadGroundTruth(path.join(ROOT, "dlib-faces", "testing.xml"));
  assert.equal(countObjects(file).objects, 25);
});
