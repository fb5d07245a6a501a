import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import {
  countObjects,
  dataRoot,
  detectFormat,
  type GtImage,
  type GtProblem,
  isKnownLabel,
  loadGroundTruth,
  loadVoc,
  loadYolo,
  normaliseLabel,
  parseDlibXml,
  parseVocXml,
  parseWiderGt,
  parseYamlNames,
  parseYoloLabels,
  resolveDataset,
  xmlProblem,
} from "../eval/groundtruth.ts";
import type { ClassifyGtRun } from "../eval/report.ts";
import { Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import { unlessCI } from "./support/ci.ts";
import { REPO } from "./support/paths.ts";

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

test("every common spelling of the three classes maps; others are unknown, not dropped", () => {
  const expect: Record<string, string[]> = {
    mask: ["with_mask", "With Mask", "with-mask", "mask", "Mask", "masked", "mask_correct"],
    no_mask: ["without_mask", "Without Mask", "no_mask", "no-mask", "No Mask", "nomask", "unmasked"],
    incorrect: [
      "with_incorrect_mask",
      "With Incorrect Mask",
      "mask_weared_incorrect",
      "incorrect",
      "Incorrect",
      "mask_worn_incorrectly",
      "incorrect_mask",
    ],
    face: ["face", "Face"],
  };
  for (const [label, spellings] of Object.entries(expect)) {
    for (const raw of spellings) {
      assert.equal(normaliseLabel(raw), label, raw);
      assert.ok(isKnownLabel(normaliseLabel(raw)), raw);
    }
  }
  for (const raw of ["helmet", "0", "person", "with_mask_2"])
    assert.ok(!isKnownLabel(normaliseLabel(raw)), raw);
  const ann = parseVocXml(
    "<annotation><object><name>with_incorrect_mask</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>",
  );
  assert.deepEqual(
    ann.objects.map((o) => o.label),
    ["incorrect"],
  );
});

test("XML well-formedness: truncated, mismatched, no root, two roots", () => {
  assert.equal(
    xmlProblem('<?xml version="1.0"?><!-- c --><annotation a="x>y"><b/><c>t</c></annotation>'),
    undefined,
  );
  assert.match(xmlProblem("<annotation><object><name>a</name>")!, /<object> is never closed/);
  assert.match(xmlProblem("<annotation><object></annotation>")!, /<object> closed by <\/annotation>/);
  assert.match(xmlProblem("</annotation>")!, /no open element/);
  assert.match(xmlProblem("not xml at all")!, /no XML element/);
  assert.match(xmlProblem("<a/><b/>")!, /more than one root/);
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

test("labels.jsonl folder: boxes and labels, bad lines and boxes listed as problems", async () => {
  const dir = tempDir();
  writeFileSync(
    path.join(dir, "labels.jsonl"),
    [
      JSON.stringify({
        image: "images/a.jpg",
        width: 640,
        height: 480,
        faces: [
          { box: [10, 20, 50, 70], label: "with_mask" },
          { box: [60, 20, 90, 60], label: "incorrect" },
          { box: [5, 5, 5, 9], label: "no_mask" },
        ],
      }),
      "{not json",
      JSON.stringify({ faces: [] }),
      "",
      JSON.stringify({ image: "images/b.jpg", faces: [{ box: [1, 2, 3, 4] }] }),
    ].join("\n"),
  );
  assert.equal(detectFormat(dir), "jsonl");
  assert.equal(detectFormat(path.join(dir, "labels.jsonl")), "jsonl");
  const problems: GtProblem[] = [];
  const gt = await loadGroundTruth(dir, { problems });
  assert.deepEqual(
    gt.map((g) => [g.name, g.image, g.width, g.objects]),
    [
      [
        "a",
        path.join(dir, "images/a.jpg"),
        640,
        [
          { box: [10, 20, 50, 70], label: "mask" },
          { box: [60, 20, 90, 60], label: "incorrect" },
        ],
      ],
      ["b", path.join(dir, "images/b.jpg"), undefined, [{ box: [1, 2, 3, 4], label: "face" }]],
    ],
  );
  assert.deepEqual(
    problems.map((p) => [path.basename(p.file), p.problem]),
    [
      ["labels.jsonl:1", "a face without a usable box"],
      ["labels.jsonl:2", "not JSON"],
      ["labels.jsonl:3", "needs an `image` path and a `faces` list"],
    ],
  );
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

/** A VOC annotation with `objects` as [label, x1, y1, x2, y2]. */
function vocXml(filename: string, objects: [string, number, number, number, number][]): string {
  const objs = objects
    .map(
      ([name, x1, y1, x2, y2]) =>
        `<object><name>${name}</name><bndbox><xmin>${x1}</xmin><ymin>${y1}</ymin><xmax>${x2}</xmax><ymax>${y2}</ymax></bndbox></object>`,
    )
    .join("\n");
  return `<annotation><filename>${filename}</filename>\n${objs}\n</annotation>\n`;
}

test("VOC folder: missing image, malformed XML, unusable objects are listed and left out", async () => {
  const dir = tempDir();
  try {
    mkdirSync(path.join(dir, "annotations"));
    mkdirSync(path.join(dir, "images"));
    const png = await sharp({ create: { width: 60, height: 40, channels: 3, background: "#808080" } })
      .png()
      .toBuffer();
    writeFileSync(path.join(dir, "images", "ok.png"), png);
    writeFileSync(path.join(dir, "images", "partly.png"), png);
    const ann = (f: string, text: string) => writeFileSync(path.join(dir, "annotations", f), text);
    ann(
      "ok.xml",
      vocXml("ok.png", [
        ["with_mask", 1, 1, 20, 20],
        ["with_incorrect_mask", 30, 5, 50, 30],
        ["helmet", 2, 2, 9, 9],
      ]),
    );
    ann("gone.xml", vocXml("gone.jpg", [["with_mask", 1, 1, 20, 20]]));
    ann("broken.xml", vocXml("ok.png", [["with_mask", 1, 1, 20, 20]]).slice(0, 60));
    ann(
      "partly.xml",
      "<annotation><filename>partly.png</filename><object><name>no_mask</name></object><object><name>mask</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object><object><name>mask</name><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object></annotation>",
    );
    ann("notvoc.xml", "<something><else/></something>");
    assert.equal(detectFormat(dir), "voc");
    const problems: GtProblem[] = [];
    const gt = loadVoc(dir, { split: "all", problems });
    assert.deepEqual(
      gt.map((g) => [g.name, path.basename(g.image), g.objects.map((o) => o.label)]),
      [
        ["ok", "ok.png", ["mask", "incorrect", "helmet"]],
        ["partly", "partly.png", ["mask"]],
      ],
    );
    const byFile = problems.map((p) => `${path.basename(p.file)}: ${p.problem}`).sort();
    assert.equal(byFile.length, 5, byFile.join("\n"));
    assert.match(byFile[0], /^broken\.xml: malformed XML: <\w+> is never closed \(truncated file\?\)$/);
    assert.match(byFile[1], /^gone\.xml: names an image that is not there: .*images[/\\]gone\.jpg$/);
    assert.match(byFile[2], /^notvoc\.xml: malformed XML: no <annotation> element/);
    assert.equal(byFile[3], "partly.xml: object 1: no <bndbox>");
    assert.equal(byFile[4], "partly.xml: object 2 (mask): a box coordinate is missing or not a number");
    // Through the resolver, the same; without a list to put them in, the first problem throws.
    const again: GtProblem[] = [];
    assert.equal((await loadGroundTruth(dir, { split: "all", problems: again })).length, 2);
    assert.equal(again.length, 5);
    assert.throws(() => loadVoc(dir, { split: "all" }), /broken\.xml: malformed XML/);
    // A split naming an image with no annotation is a problem too, not a crash.
    writeFileSync(path.join(dir, "splits.json"), JSON.stringify({ test: ["ok", "nothere"] }));
    const split: GtProblem[] = [];
    assert.deepEqual(
      loadVoc(dir, { split: "test", problems: split }).map((g) => g.name),
      ["ok"],
    );
    assert.deepEqual(
      split.map((p) => [path.basename(p.file), p.problem]),
      [["nothere.xml", "in the split, no annotation"]],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("YOLO folder: Roboflow layout with data.yaml; a label file with no image is a problem", async () => {
  const dir = tempDir();
  try {
    for (const s of ["train", "valid", "test"]) {
      mkdirSync(path.join(dir, s, "images"), { recursive: true });
      mkdirSync(path.join(dir, s, "labels"), { recursive: true });
    }
    writeFileSync(
      path.join(dir, "data.yaml"),
      "nc: 3\nnames: ['with_mask', 'without_mask', 'with_incorrect_mask']\n",
    );
    const png = await sharp({ create: { width: 100, height: 50, channels: 3, background: "#808080" } })
      .png()
      .toBuffer();
    writeFileSync(path.join(dir, "test", "images", "t1.png"), png);
    writeFileSync(
      path.join(dir, "test", "labels", "t1.txt"),
      "2 0.5 0.5 0.2 0.4\n0 0.2 0.2 0.1 0.2\n7 0.8 0.5 0.1 0.2\n",
    );
    writeFileSync(path.join(dir, "test", "labels", "lost.txt"), "1 0.5 0.5 0.2 0.4\n");
    writeFileSync(path.join(dir, "valid", "images", "v1.png"), png);
    assert.equal(detectFormat(dir), "yolo");
    const problems: GtProblem[] = [];
    const gt = await loadYolo(dir, { split: "test", problems });
    assert.deepEqual(
      gt.map((g) => [g.name, g.objects.map((o) => o.label)]),
      [["t1", ["incorrect", "mask", "7"]]],
    );
    assert.deepEqual(gt[0].objects[0].box, [40, 15, 60, 35]);
    assert.deepEqual(
      problems.map((p) => [path.basename(p.file), p.problem]),
      [["lost.txt", "no image lost.* to take its size from"]],
    );
    await assert.rejects(
      loadYolo(dir, { split: "test" }),
      /lost\.txt: no image lost\.\* to take its size from/,
    );
    assert.deepEqual(
      (await loadYolo(dir, { split: "val" })).map((g) => g.name),
      ["v1"],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
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

// npm run eval on a small real folder ----------------------------------------------------------

function runEval(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", "eval/run.ts", ...args],
      { cwd: REPO, timeout: 120_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** A Kaggle annotation's objects as [label, x1, y1, x2, y2]. */
function kaggleObjects(name: string): [string, number, number, number, number][] {
  const ann = parseVocXml(
    readFileSync(path.join(ROOT, "kaggle-face-mask", "annotations", `${name}.xml`), "utf8"),
  );
  return ann.objects.map((o) => [o.label, ...o.box]);
}

test("eval --classify-gt on a VOC folder of Kaggle photos: other spellings, problems reported, product crop", async (t) => {
  const why = needs("kaggle-face-mask/annotations/maksssksksss130.xml");
  if (why) return t.skip(unlessCI(why));
  const dir = tempDir();
  try {
    mkdirSync(path.join(dir, "Annotations"));
    mkdirSync(path.join(dir, "JPEGImages"));
    const images = path.join(ROOT, "kaggle-face-mask", "images");
    for (const n of ["maksssksksss42", "maksssksksss112", "maksssksksss130"])
      copyFileSync(path.join(images, `${n}.jpg`), path.join(dir, "JPEGImages", `${n}.jpg`));
    writeFileSync(path.join(dir, "JPEGImages", "corrupt.jpg"), Buffer.from("not a jpeg at all"));
    // Other public VOC sets' spellings of Kaggle's labels.
    const spell: Record<string, string> = {
      mask: "with_mask",
      no_mask: "no_mask",
      incorrect: "with_incorrect_mask",
    };
    const relabel = (name: string) =>
      kaggleObjects(name).map(([l, ...b]) => [spell[l], ...b] as [string, number, number, number, number]);
    const ann = (f: string, text: string) => writeFileSync(path.join(dir, "Annotations", f), text);
    ann(
      "maksssksksss42.xml",
      vocXml("maksssksksss42.jpg", [
        ...relabel("maksssksksss42"),
        ["with_mask", 5, 5, 12, 11], // 6 px: too small
        ["helmet", 100, 100, 140, 140],
        ["face", 150, 100, 190, 140],
      ]),
    );
    ann("maksssksksss112.xml", vocXml("maksssksksss112.jpg", relabel("maksssksksss112")));
    ann(
      "maksssksksss130.xml",
      vocXml(
        "maksssksksss130.jpg",
        kaggleObjects("maksssksksss130").map(([l, ...b]) => [
          l === "incorrect" ? "mask_weared_incorrect" : "without_mask",
          ...b,
        ]),
      ),
    );
    ann("gone.xml", vocXml("gone.jpg", [["with_mask", 10, 10, 50, 50]]));
    ann("broken.xml", vocXml("maksssksksss42.jpg", [["with_mask", 10, 10, 50, 50]]).slice(0, 70));
    ann("corrupt.xml", vocXml("corrupt.jpg", [["without_mask", 10, 10, 50, 50]]));
    const out = path.join(dir, "out.json");
    const md = path.join(dir, "out.md");
    const r = await runEval([
      "--classify-gt",
      "--voc",
      dir,
      "--split",
      "all",
      "--json",
      out,
      "--markdown",
      md,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const run = JSON.parse(readFileSync(out, "utf8")) as ClassifyGtRun;
    assert.deepEqual(run.problems.map((p) => path.basename(p.file)).sort(), [
      "broken.xml",
      "corrupt.jpg",
      "gone.xml",
    ]);
    assert.match(run.problems.find((p) => p.file.endsWith("corrupt.jpg"))!.problem, /^unreadable image/);
    assert.match(r.stdout, /warning: 3 problems \(left out\)/);
    assert.match(r.stdout, /gone\.xml: names an image that is not there/);
    const n42 = kaggleObjects("maksssksksss42").length;
    const n112 = kaggleObjects("maksssksksss112").length;
    const n130 = kaggleObjects("maksssksksss130").length;
    assert.equal(run.images, 4);
    assert.equal(run.imagesClassified, 3);
    assert.equal(run.gtFaces, n42 + 3 + n112 + n130 + 1);
    assert.deepEqual(run.skipped, {
      small: 1,
      difficult: 0,
      unlabelled: 1,
      unknownLabels: { helmet: 1 },
      inProblemImages: 1,
    });
    const res = run.result;
    assert.equal(res.faces, n42 + n112 + n130);
    // with_incorrect_mask and mask_weared_incorrect both count as incorrect (1 + 2 in these photos).
    assert.deepEqual(
      [res.perClass.mask.support, res.perClass.no_mask.support, res.perClass.incorrect.support],
      [6, 2, 3],
    );
    // The run's decisions are the product's: the same crops through MaskClassifier.classify.
    const engine = new Engine();
    try {
      const classifier = await engine.maskClassifier();
      const counts = [0, 1, 2].map(() => [0, 0, 0]);
      const order = ["mask", "no_mask", "incorrect"];
      for (const n of ["maksssksksss42", "maksssksksss112", "maksssksksss130"]) {
        const { image } = await decodeImage(readFileSync(path.join(images, `${n}.jpg`)));
        const objs = kaggleObjects(n);
        const got = await classifier.classify(
          image,
          objs.map(([, ...box]) => ({ box, score: 1 })),
        );
        objs.forEach(([l], i) => {
          counts[order.indexOf(l)][order.indexOf(got[i].label)]++;
        });
      }
      assert.deepEqual(res.confusion.counts, counts);
    } finally {
      await engine.close();
    }
    assert.ok(res.confusion.counts[0][0] >= 5, "the masked faces of maksssksksss42 are masked");
    assert.match(readFileSync(md, "utf8"), /\| GT \\ predicted \| mask \| no_mask \| incorrect \|/);
    // The detector run on the same folder reports the same problems and scores the three photos.
    const det = await runEval(["--voc", dir, "--split", "all", "--json", out]);
    assert.equal(det.code, 0, det.stderr);
    const scored = JSON.parse(readFileSync(out, "utf8")) as { images: number; problems: GtProblem[] };
    assert.equal(scored.images, 3);
    assert.deepEqual(scored.problems.map((p) => path.basename(p.file)).sort(), [
      "broken.xml",
      "corrupt.jpg",
      "gone.xml",
    ]);
    assert.match(det.stdout, /labels that are no mask class \(scored as faces, in no mask class\): helmet 1/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
