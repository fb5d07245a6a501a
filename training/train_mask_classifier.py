#!/usr/bin/python3
"""Train the maskwatch 3-class face-mask classifier (version 2) and export it to ONNX.

Classes (output order): 0 mask, 1 no_mask, 2 incorrect.
Contract crop: square of side 1.25*max(w,h) centred on the face box, black outside the image,
rotated so the eyes are level when the detector gives eye landmarks, resized to 64x64;
input (pixel/255-0.5)/0.5, RGB, NCHW. Output "probs": softmax [N,3].

Run (from the repo root):
  node --import tsx training/detect_boxes.ts        # once: the maskwatch detector's faces -> /tmp
  /usr/bin/python3 training/train_mask_classifier.py

The default model learns only from data whose licence allows commercial use (Kaggle face-mask CC0,
chandrikadeb7 MIT, adityap27 MIT) plus synthetic `incorrect` faces composited from those.
Opt-in, NOT for the default model: --maskedfacenet (CC BY-NC-SA 4.0) and --research-data
(AIZOO WIDER+MAFA, research use only).
Data root: $MASKWATCH_DATA or --data (default ../shared/datasets beside the repository). Data is never
copied into the repo; decoded crops are cached under /tmp (--cache-dir) to speed up re-runs.
"""
import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

CLASSES = ["mask", "no_mask", "incorrect"]
KAGGLE_LABELS = {"with_mask": 0, "without_mask": 1, "mask_weared_incorrect": 2}
JSONL_LABELS = {"mask": 0, "no_mask": 1, "incorrect": 2}
CROP_SCALE = 1.25
SIZE = 64
CTX = 128  # training context patch: side 2*s at 128 px; contract crop = central half
MIN_EVAL_SIDE = 10
MIN_ROTATION = 0.05  # radians; the product does not rotate below this (src/vision/mask-classifier.ts)
MATCH_IOU = 0.4
CACHE_VERSION = "v2"


# ----------------------------------------------------------------------------- data
def crop_square(img, cx, cy, side, out):
    """Square [cx-side/2, cy-side/2, cx+side/2, cy+side/2], black outside, resized to out."""
    x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    ix0, iy0, ix1, iy1 = math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)
    c = img.crop((ix0, iy0, ix1, iy1))  # PIL fills outside-of-image with 0
    return c.resize((out, out), Image.BILINEAR, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))


def eye_angle(lm):
    if not lm or "left_eye" not in lm or "right_eye" not in lm:
        return 0.0
    (lx, ly), (rx, ry) = lm["left_eye"], lm["right_eye"]
    if rx <= lx:
        return 0.0
    return math.atan2(ry - ly, rx - lx)


def face_patch(img, box, lm, mult, out):
    """Square of side mult*1.25*max(w,h) centred on the box, eyes levelled like the product does
    (when landmarks exist and the eye line is >= MIN_ROTATION off level), resized to out x out.
    Returns (uint8 array, landmarks in patch pixels or None)."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(1.0, mult * CROP_SCALE * max(x2 - x1, y2 - y1))
    a = eye_angle(lm)
    if abs(a) < MIN_ROTATION:
        a = 0.0
        patch = crop_square(img, cx, cy, side, out)
    else:
        # anti-aliased axis-aligned square covering the rotated one, then a bilinear rotation
        cover = side * (abs(math.cos(a)) + abs(math.sin(a)))
        work = int(math.ceil(out * cover / side))
        sq = crop_square(img, cx, cy, cover, work)
        step = (side / out) * (work / cover)
        c, s = math.cos(a), math.sin(a)
        # output pixel (x, y) -> source (scx + dx*c - dy*s, scy + dx*s + dy*c), d = (p - out/2)*step
        ox = -out / 2 * step
        patch = sq.transform((out, out), Image.AFFINE,
                             (step * c, -step * s, work / 2 + ox * c - ox * s,
                              step * s, step * c, work / 2 + ox * s + ox * c), resample=Image.BILINEAR)
    return np.asarray(patch), patch_landmarks(box, lm, mult, out)


def patch_landmarks(box, lm, mult, out):
    """Landmarks in the pixels of face_patch(img, box, lm, mult, out); None without landmarks."""
    if not lm:
        return None
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(1.0, mult * CROP_SCALE * max(x2 - x1, y2 - y1))
    a = eye_angle(lm)
    if abs(a) < MIN_ROTATION:
        a = 0.0
    k = out / side
    c, s = math.cos(a), math.sin(a)
    plm = {}
    for name, (px, py) in lm.items():
        dx, dy = px - cx, py - cy
        plm[name] = (out / 2 + (dx * c + dy * s) * k, out / 2 + (-dx * s + dy * c) * k)
    return plm


def parse_voc(path):
    root = ET.parse(path).getroot()
    faces = []
    for o in root.findall("object"):
        bb = o.find("bndbox")
        box = [float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        faces.append((KAGGLE_LABELS[o.find("name").text], box))
    return faces


def load_rgb(path):
    im = Image.open(path)
    im.load()
    return im.convert("RGB")


def min_side(box):
    return min(box[2] - box[0], box[3] - box[1])


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def match(gt, det):
    """Greedy one-to-one matching by IoU >= MATCH_IOU: list of (gt index, det index)."""
    pairs = sorted(((iou(g["box"], d["box"]), i, j) for i, g in enumerate(gt) for j, d in enumerate(det)),
                   reverse=True)
    used_g, used_d, out = set(), set(), []
    for v, i, j in pairs:
        if v < MATCH_IOU:
            break
        if i in used_g or j in used_d:
            continue
        used_g.add(i)
        used_d.add(j)
        out.append((i, j))
    return sorted(out)


def photo_faces(data, dataset, keys, dets, min_gt=4):
    """Per photo: ground-truth faces and the detector faces matched to them (labels from the match).
    Returns (gt_faces, det_faces); each face {"file", "label", "box", "lm"}."""
    gts, dfs = [], []
    for key in keys:
        if dataset == "kaggle-face-mask":
            file = os.path.join(data, dataset, "images", key + ".jpg")
            gt = [{"label": lab, "box": box} for lab, box in
                  parse_voc(os.path.join(data, dataset, "annotations", key + ".xml"))]
        else:
            file = os.path.join(data, dataset, key[0])
            gt = [{"label": JSONL_LABELS[f["label"]], "box": f["box"]} for f in key[1]]
            key = key[0]
        gt = [g for g in gt if min_side(g["box"]) >= min_gt]
        for g in gt:
            gts.append({"file": file, "label": g["label"], "box": g["box"], "lm": None})
        if dets is not None:
            det = dets.get(key, [])
            for i, j in match(gt, det):
                dfs.append({"file": file, "label": gt[i]["label"], "box": det[j]["box"], "lm": det[j]["landmarks"],
                            "head": det[j].get("head")})
    return gts, dfs


def jsonl_photos(data, dataset, labels=("mask", "no_mask", "incorrect")):
    out = []
    for line in open(os.path.join(data, dataset, "labels.jsonl")):
        r = json.loads(line)
        out.append((r["image"], [f for f in r["faces"] if f["label"] in labels]))
    return out


def build_patches(faces, mult, out, with_lm=False):
    arr = np.zeros((len(faces), out, out, 3), np.uint8)
    lms = []
    img, cur = None, None
    for n, f in enumerate(faces):
        if f["file"] != cur:
            cur = f["file"]
            img = load_rgb(cur)
        arr[n], plm = face_patch(img, f["box"], f["lm"], mult, out)
        lms.append(plm)
    return (arr, lms) if with_lm else arr


def build_folder(paths):
    """Already-cropped faces: 'face square' = centre square of side min(w,h); context side 2x."""
    arr = np.zeros((len(paths), CTX, CTX, 3), np.uint8)
    for n, p in enumerate(paths):
        im = load_rgb(p)
        w, h = im.size
        arr[n] = np.asarray(crop_square(im, w / 2, h / 2, 2 * min(w, h), CTX))
    return arr


def folder_sources(data, use_mfn):
    mc = os.path.join(data, "mask-crops")
    srcs = [
        ("chandrikadeb7", "with_mask", 0),
        ("chandrikadeb7", "without_mask", 1),
    ]
    if use_mfn:
        srcs += [
            ("maskedfacenet", "mask_correct", 0),
            ("maskedfacenet", "no_mask", 1),
            ("maskedfacenet", "mask_incorrect", 2),
        ]
    out = []
    for src, sub, lab in srcs:
        d = os.path.join(mc, src, sub)
        names = sorted(n for n in os.listdir(d) if n.lower().endswith((".jpg", ".jpeg", ".png")))
        if src == "chandrikadeb7":
            # augmented_image_* are augmented duplicates of other files: skip them
            names = [n for n in names if not n.startswith("augmented_image_")]
        out.append((src, sub, lab, [os.path.join(d, n) for n in names]))
    return out


def cached(cache_dir, key, fn):
    if cache_dir is None:
        return fn()
    os.makedirs(cache_dir, exist_ok=True)
    p = os.path.join(cache_dir, CACHE_VERSION + "-" + hashlib.sha1(key.encode()).hexdigest()[:16] + ".npy")
    if os.path.exists(p):
        return np.load(p)
    a = fn()
    np.save(p + ".tmp.npy", a)
    os.replace(p + ".tmp.npy", p)
    return a


# ----------------------------------------------------------------------------- synthetic `incorrect`
def face_geometry(lm):
    """Eye centre, eye-to-mouth height, eye distance, nose; None when the landmarks are implausible."""
    if not lm or any(k not in lm for k in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")):
        return None
    le, re, no = np.array(lm["left_eye"]), np.array(lm["right_eye"]), np.array(lm["nose"])
    mc = (np.array(lm["mouth_left"]) + np.array(lm["mouth_right"])) / 2
    ec = (le + re) / 2
    em, iod = mc[1] - ec[1], re[0] - le[0]
    if em < 6 or iod < 5 or not (ec[1] + 0.2 * em < no[1] < mc[1] - 0.1 * em) or not (0.5 < em / iod < 2.0):
        return None
    return {"ec": ec, "em": em, "iod": iod, "nose": no, "mc": mc}


def synth_incorrect(A, ga, B, gb, rng):
    """Composite: the lower part of masked face A's mask (cut just below its nose tip) laid on bare
    face B with its top edge below B's nose (or, less often, below the mouth), aligned by eyes and
    mouth. A, B: levelled 128-px context patches (uint8 HxWx3); ga, gb: face_geometry in patch pixels."""
    H, W = B.shape[:2]
    k = 0.5 * (gb["em"] / ga["em"] + gb["iod"] / ga["iod"])  # B pixels per A pixel
    cut_a = ga["nose"][1] + rng.uniform(0.0, 0.12) * ga["em"]
    u = rng.uniform(0.62, 0.92) if rng.random() < 0.8 else rng.uniform(1.0, 1.2)
    top_b = gb["ec"][1] + u * gb["em"]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    xa = ga["ec"][0] + (xs - gb["ec"][0]) / k
    ya = cut_a + (ys - top_b) / k
    At = torch.from_numpy(A).permute(2, 0, 1)[None].float()
    grid = torch.from_numpy(np.stack([xa / W * 2 - 1, ya / H * 2 - 1], -1))[None].float()
    samp = F.grid_sample(At, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    samp = samp.permute(1, 2, 0).numpy()
    # geometric region in A's frame: across the lower face, top edge hard, sides and bottom feathered
    half = rng.uniform(0.95, 1.25) * ga["iod"]
    dx = np.abs(xa - ga["ec"][0])
    side = np.clip((half - dx) / (0.3 * ga["iod"]), 0, 1)
    top = np.clip((ya - cut_a) / 0.6 + 0.5, 0, 1)
    bottom = np.clip((cut_a + 1.25 * ga["em"] - ya) / (0.25 * ga["em"]), 0, 1)
    geo = side * top * bottom
    # keep A's mask fabric, not A's skin: distance from A's skin colour (between the eyes)
    ex, ey = int(round(ga["ec"][0])), int(round(ga["ec"][1] - 0.1 * ga["em"]))
    r = max(1, int(0.12 * ga["iod"]))
    skin = np.median(A[max(0, ey - r):ey + r + 1, max(0, ex - r):ex + r + 1].reshape(-1, 3), 0)
    dist = np.sqrt(((samp - skin) ** 2).sum(-1))
    col = np.clip((dist - 20.0) / 35.0, 0, 1)
    if (col * geo).sum() < 0.35 * geo.sum():  # a skin-coloured mask: fall back to the region alone
        col = np.ones_like(col)
    alpha = torch.from_numpy(geo * col)[None, None].float()
    alpha = F.avg_pool2d(F.pad(alpha, (1, 1, 1, 1), mode="replicate"), 3, 1)[0, 0].numpy()
    alpha = np.minimum(alpha, geo)[..., None]
    out = B.astype(np.float64) * (1 - alpha) + samp * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def make_synth(masked, bare, n, seed):
    """n synthetic `incorrect` context patches from (patch, geometry) lists of masked and bare faces."""
    rng = random.Random(seed)
    out = np.zeros((n, CTX, CTX, 3), np.uint8)
    for i in range(n):
        A, ga = masked[rng.randrange(len(masked))]
        B, gb = bare[rng.randrange(len(bare))]
        out[i] = synth_incorrect(A, ga, B, gb, rng)
    return out


# ----------------------------------------------------------------------------- model
def dws(cin, cout, stride):
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MaskNet(nn.Module):
    def __init__(self, width=1.0):
        super().__init__()
        c = lambda n: int(round(n * width))
        self.features = nn.Sequential(
            nn.Conv2d(3, c(24), 3, 2, 1, bias=False), nn.BatchNorm2d(c(24)), nn.ReLU(inplace=True),  # 32
            dws(c(24), c(48), 1),
            dws(c(48), c(64), 2),  # 16
            dws(c(64), c(64), 1),
            dws(c(64), c(128), 2),  # 8
            dws(c(128), c(128), 1),
            dws(c(128), c(256), 2),  # 4
            dws(c(256), c(256), 1),
        )
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(c(256), 3)

    def forward(self, x):
        x = self.features(x)
        x = x.mean((2, 3))
        return self.fc(self.drop(x))


class WithSoftmax(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return F.softmax(self.m(x), dim=1)


# ----------------------------------------------------------------------------- augmentation
def augment(ctx_u8, is_crop, g):
    """ctx_u8: uint8 [B,128,128,3] context patches -> float [B,3,64,64] in [0,1]."""
    B = ctx_u8.shape[0]
    x = ctx_u8.permute(0, 3, 1, 2).float() / 255.0
    r = lambda *s: torch.rand(*s, generator=g)
    # geometry: contract crop = central half of the context (half-extent 0.5 in grid units)
    scale = 0.85 + 0.40 * r(B)
    scale = torch.where(is_crop, 0.80 + 0.35 * r(B), scale)
    a = 0.5 * scale
    tx = (r(B) * 2 - 1) * 0.10
    ty = (r(B) * 2 - 1) * 0.10
    ang = (r(B) * 2 - 1) * math.radians(15)
    flip = torch.where(r(B) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([
        torch.stack([a * cos * flip, -a * sin, tx], 1),
        torch.stack([a * sin * flip, a * cos, ty], 1),
    ], 1)
    grid = F.affine_grid(theta, (B, 3, SIZE, SIZE), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # low resolution (small faces): down- and up-sample part of the batch
    m = r(B) < 0.35
    if m.any():
        sz = [10, 14, 18, 24, 32, 44][int(r(1).item() * 6)]
        lo = F.interpolate(x[m], size=(sz, sz), mode="area")
        x[m] = F.interpolate(lo, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    # colour jitter
    gray_w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    b = (0.65 + 0.7 * r(B)).view(B, 1, 1, 1)
    x = x * b
    mean = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    c = (0.65 + 0.7 * r(B)).view(B, 1, 1, 1)
    x = (x - mean) * c + mean
    gray = (x * gray_w).sum(1, keepdim=True)
    s = (0.5 + 1.0 * r(B)).view(B, 1, 1, 1)
    s = torch.where(r(B).view(B, 1, 1, 1) < 0.05, torch.zeros_like(s), s)  # occasional grayscale
    x = (x - gray) * s + gray
    # blur
    mb = r(B) < 0.25
    if mb.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16.0
        k = k.view(1, 1, 3, 3).repeat(3, 1, 1, 1)
        x[mb] = F.conv2d(F.pad(x[mb], (1, 1, 1, 1), mode="replicate"), k, groups=3)
    # noise
    sig = (r(B) < 0.3).float() * 0.04 * r(B)
    x = x + torch.randn(x.shape, generator=g) * sig.view(B, 1, 1, 1)
    return x.clamp(0, 1)


def normalize(x01):
    return (x01 - 0.5) / 0.5


# ----------------------------------------------------------------------------- metrics
def metrics(gt, pred):
    gt, pred = np.asarray(gt), np.asarray(pred)
    cm = np.zeros((3, 3), int)
    for a, b in zip(gt, pred):
        cm[a, b] += 1
    per = {}
    f1s = []
    for k, name in enumerate(CLASSES):
        tp = cm[k, k]
        p = tp / cm[:, k].sum() if cm[:, k].sum() else 0.0
        rc = tp / cm[k, :].sum() if cm[k, :].sum() else 0.0
        f1 = 2 * p * rc / (p + rc) if p + rc else 0.0
        per[name] = {"precision": round(float(p), 4), "recall": round(float(rc), 4), "f1": round(float(f1), 4),
                     "support": int(cm[k, :].sum())}
        f1s.append(f1)
    return {
        "n": int(len(gt)),
        "mask_vs_not_accuracy": round(float(((gt == 0) == (pred == 0)).mean()), 4),
        "accuracy_3class": round(float((gt == pred).mean()), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "per_class": per,
        "confusion_matrix_gt_pred": cm.tolist(),
        "confusion_order": CLASSES,
    }


@torch.no_grad()
def predict(model, crops_u8, bs=256):
    model.eval()
    out = []
    for i in range(0, len(crops_u8), bs):
        x = torch.from_numpy(crops_u8[i:i + bs]).permute(0, 3, 1, 2).float() / 255.0
        out.append(F.softmax(model(normalize(x)), 1))
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    default_data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "datasets")
    ap.add_argument("--data", default=os.environ.get("MASKWATCH_DATA", os.path.normpath(default_data)))
    ap.add_argument("--detector-boxes", default="/tmp/maskwatch-detector-boxes.json",
                    help="output of training/detect_boxes.ts (the maskwatch detector's faces)")
    ap.add_argument("--out-model", default="models/mask-classifier.onnx")
    ap.add_argument("--out-metrics", default="training/metrics.json")
    ap.add_argument("--out-heldout", default="training/heldout.json")
    ap.add_argument("--cache-dir", default="/tmp/maskwatch-train-cache")
    ap.add_argument("--no-synth", action="store_true", help="no synthetic `incorrect` faces")
    ap.add_argument("--synth-count", type=int, default=1500)
    ap.add_argument("--no-detector-crops", action="store_true", help="ground-truth boxes only")
    ap.add_argument("--maskedfacenet", action="store_true",
                    help="OPT-IN, NOT the default model: also MaskedFace-Net (CC BY-NC-SA 4.0 -> non-commercial)")
    ap.add_argument("--research-data", action="store_true",
                    help="OPT-IN, NOT the default model: also aizoo-mafa-wider (WIDER/MAFA, research use only)")
    ap.add_argument("--prior-tau", default="0",
                    help="logit adjustment toward the Kaggle-train class prior: a number (default 0: none, "
                         "the model stays balanced, since a deployment's share of masked faces is unknown) "
                         "or 'auto' (chosen on Kaggle val)")
    ap.add_argument("--epochs", type=int, default=28)
    ap.add_argument("--samples-per-epoch", type=int, default=6144)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t_start = time.time()
    data = args.data
    cache = lambda key, fn: cached(args.cache_dir, key + "|" + data, fn)
    splits = json.load(open(os.path.join(data, "kaggle-face-mask/splits.json")))
    use_det = not args.no_detector_crops
    dets = json.load(open(args.detector_boxes))["sets"]
    det_sha = hashlib.sha256(open(args.detector_boxes, "rb").read()).hexdigest()[:16]

    # ---- data: Kaggle (ground-truth boxes and the detector's matched boxes)
    kdet = dets["kaggle-face-mask"]
    tr_gt, tr_det = photo_faces(data, "kaggle-face-mask", splits["train"], kdet, min_gt=4)
    va_gt, va_det = photo_faces(data, "kaggle-face-mask", splits["val"], kdet, min_gt=MIN_EVAL_SIDE)
    te_gt, te_det = photo_faces(data, "kaggle-face-mask", splits["test"], kdet, min_gt=MIN_EVAL_SIDE)
    va_gt_crops = cache("kaggle-val-gt-crop", lambda: build_patches(va_gt, 1, SIZE))
    te_gt_crops = cache("kaggle-test-gt-crop", lambda: build_patches(te_gt, 1, SIZE))
    va_det_crops = cache("kaggle-val-det-crop" + det_sha, lambda: build_patches(va_det, 1, SIZE))
    te_det_crops = cache("kaggle-test-det-crop" + det_sha, lambda: build_patches(te_det, 1, SIZE))

    parts = []  # (name, group, ctx uint8 [n,128,128,3], labels, is_crop)

    def add(name, group, arr, labels, is_crop=False):
        parts.append((name, group, arr, np.asarray(labels, int), is_crop))

    add("kaggle-face-mask/train (ground-truth boxes)", "kaggle",
        cache("kaggle-train-gt-ctx", lambda: build_patches(tr_gt, 2, CTX)), [f["label"] for f in tr_gt])
    tr_det_ctx = lm_det = None
    if use_det or not args.no_synth:
        tr_det_ctx = cache("kaggle-train-det-ctx" + det_sha, lambda: build_patches(tr_det, 2, CTX))
    if use_det:
        add("kaggle-face-mask/train (maskwatch detector boxes)", "kaggle", tr_det_ctx, [f["label"] for f in tr_det])
    ad_photos = jsonl_photos(data, "adityap27-face-mask")
    ad_gt, ad_det = photo_faces(data, "adityap27-face-mask", ad_photos, dets["adityap27-face-mask"], min_gt=4)
    add("adityap27-face-mask (ground-truth boxes)", "adityap27",
        cache("adityap27-gt-ctx", lambda: build_patches(ad_gt, 2, CTX)), [f["label"] for f in ad_gt])
    ad_det_ctx = None
    if use_det or not args.no_synth:
        ad_det_ctx = cache("adityap27-det-ctx" + det_sha, lambda: build_patches(ad_det, 2, CTX))
    if use_det:
        add("adityap27-face-mask (maskwatch detector boxes)", "adityap27", ad_det_ctx, [f["label"] for f in ad_det])
    for src, sub, lab, paths in folder_sources(data, args.maskedfacenet):
        arr = cache(f"folder-{src}-{sub}-{len(paths)}", lambda: build_folder(paths))
        add(f"mask-crops/{src}", src, arr, np.full(len(paths), lab), True)
    if args.research_data:
        rs_gt, _ = photo_faces(data, "aizoo-mafa-wider", jsonl_photos(data, "aizoo-mafa-wider"), None, min_gt=12)
        add("aizoo-mafa-wider (ground-truth boxes)", "aizoo",
            cache("aizoo-gt-ctx", lambda: build_patches(rs_gt, 2, CTX)), [f["label"] for f in rs_gt])

    # ---- synthetic `incorrect`: masks from commercial-licence masked faces lowered under the nose
    # of commercial-licence bare faces (Kaggle train + adityap27, maskwatch detector landmarks)
    synth_info = None
    if not args.no_synth:
        def donors(arr, faces, label):
            lm = [patch_landmarks(f["box"], f["lm"], 2, CTX) for f in faces]
            out = []
            for a, f, l in zip(arr, faces, lm):
                if f["label"] != label or min_side(f["box"]) < 16:
                    continue
                g = face_geometry(l)
                if g is not None:
                    out.append((a, g))
            return out

        masked = donors(tr_det_ctx, tr_det, 0) + donors(ad_det_ctx, ad_det, 0)
        bare = donors(tr_det_ctx, tr_det, 1) + donors(ad_det_ctx, ad_det, 1)
        syn = cache(f"synth-{args.synth_count}-{args.seed}-{det_sha}",
                    lambda: make_synth(masked, bare, args.synth_count, args.seed))
        add("synthetic incorrect (Kaggle train + adityap27 masks lowered onto bare faces)", "synth", syn,
            np.full(len(syn), 2))
        synth_info = {"count": int(len(syn)), "mask_donors": len(masked), "bare_faces": len(bare)}

    ctx = torch.from_numpy(np.concatenate([p[2] for p in parts]))
    labels = np.concatenate([p[3] for p in parts])
    is_crop = torch.from_numpy(np.concatenate([np.full(len(p[3]), p[4]) for p in parts]))
    part_of = np.concatenate([np.full(len(p[3]), i) for i, p in enumerate(parts)])
    used = {}
    for name, _, _, labs, _ in parts:
        u = used.setdefault(name, {c: 0 for c in CLASSES})
        for k, c in enumerate(CLASSES):
            u[c] += int((labs == k).sum())
    print("data:", json.dumps(used, indent=1), "total", len(labels), f"prep {time.time() - t_start:.1f}s", flush=True)

    # sampling weights: each class 1/3 of the draws; within a class Kaggle (the target domain) gets
    # half of the mass when other sources have that class, the other groups share the rest equally;
    # within a group each part (ground-truth / detector boxes) equally, within a part uniformly.
    w = np.zeros(len(labels))
    groups = sorted({p[1] for p in parts})
    for k in range(3):
        present = {g: [i for i, p in enumerate(parts) if p[1] == g and (p[3] == k).any()] for g in groups}
        present = {g: v for g, v in present.items() if v}
        others = [g for g in present if g != "kaggle"]
        for g, idxs in present.items():
            gm = (0.5 if others else 1.0) if g == "kaggle" else (0.5 if "kaggle" in present else 1.0) / len(others)
            for i in idxs:
                m = (part_of == i) & (labels == k)
                w[m] = gm / len(idxs) / m.sum() / 3.0
    weights = torch.from_numpy(w)
    labels_t = torch.from_numpy(labels).long()

    # ---- train
    g = torch.Generator().manual_seed(args.seed)
    model = MaskNet()
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = args.samples_per_epoch // args.batch
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.15)
    crit = nn.CrossEntropyLoss(label_smoothing=0.05)
    va_gt_y = np.array([f["label"] for f in va_gt])
    va_det_y = np.array([f["label"] for f in va_det])

    def val_score(pg, pd):
        mg, md = metrics(va_gt_y, pg), metrics(va_det_y, pd)
        return mg, md, (mg["macro_f1"] + md["macro_f1"]) / 2

    best = None
    history = []
    t_train = time.time()
    for ep in range(args.epochs):
        model.train()
        t0 = time.time()
        idx = torch.multinomial(weights, steps_per_epoch * args.batch, replacement=True, generator=g)
        tot_loss = 0.0
        for s in range(steps_per_epoch):
            bi = idx[s * args.batch:(s + 1) * args.batch]
            x = normalize(augment(ctx[bi], is_crop[bi], g))
            loss = crit(model(x), labels_t[bi])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item()
        mg, md, score = val_score(predict(model, va_gt_crops).argmax(1), predict(model, va_det_crops).argmax(1))
        history.append({"epoch": ep + 1, "loss": round(tot_loss / steps_per_epoch, 4), "val_score": round(score, 4),
                        "val_gt_macro_f1": mg["macro_f1"], "val_gt_incorrect_f1": mg["per_class"]["incorrect"]["f1"],
                        "val_det_macro_f1": md["macro_f1"], "val_det_incorrect_f1": md["per_class"]["incorrect"]["f1"],
                        "val_gt_mask_vs_not": mg["mask_vs_not_accuracy"]})
        print(f"ep {ep + 1:2d} loss {tot_loss / steps_per_epoch:.4f} val gt: bin {mg['mask_vs_not_accuracy']:.4f} "
              f"mF1 {mg['macro_f1']:.4f} inc-F1 {mg['per_class']['incorrect']['f1']:.3f} | det: "
              f"mF1 {md['macro_f1']:.4f} inc-F1 {md['per_class']['incorrect']['f1']:.3f} ({time.time() - t0:.1f}s)",
              flush=True)
        # model selection on val macro-F1 (mean of ground-truth and detector crops; ties -> later
        # epoch), only in the 2nd half of the schedule
        if ep + 1 > args.epochs // 2:
            key = (round(score, 6), mg["accuracy_3class"])
            if best is None or key >= best[0]:
                best = (key, ep + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
    train_s = time.time() - t_train
    model.load_state_dict(best[2])
    model.eval()
    print(f"selected epoch {best[1]} val {best[0]} train {train_s:.0f}s", flush=True)

    # ---- prior correction (logit adjustment): training draws classes ~uniformly. Adding
    # tau*log(Kaggle-train class prior) to the final bias fits Kaggle's share of masks (80 %); off by
    # default (--prior-tau 0), as it cost no_mask recall on other photos (docs/models/mask-classifier.md).
    prior = np.bincount(np.array([f["label"] for f in tr_gt]), minlength=3).astype(np.float64)
    log_prior = np.log(prior / prior.sum())
    lg = np.log(np.clip(predict(model, va_gt_crops), 1e-12, None))
    ld = np.log(np.clip(predict(model, va_det_crops), 1e-12, None))
    tau_scores = []
    for tau in (0.0, 0.25, 0.5, 0.75, 1.0):
        mg, md, score = val_score((lg + tau * log_prior).argmax(1), (ld + tau * log_prior).argmax(1))
        tau_scores.append({"tau": tau, "val_score": round(score, 4), "val_gt_macro_f1": mg["macro_f1"],
                           "val_det_macro_f1": md["macro_f1"], "val_gt_mask_vs_not": mg["mask_vs_not_accuracy"]})
        print("tau", tau, tau_scores[-1], flush=True)
    if args.prior_tau == "auto":
        best_tau = max(tau_scores, key=lambda d: (d["val_score"], d["val_gt_mask_vs_not"], -d["tau"]))["tau"]
    else:
        best_tau = float(args.prior_tau)
    with torch.no_grad():
        model.fc.bias += torch.from_numpy(best_tau * log_prior).float()
    print("tau", args.prior_tau, "->", best_tau, flush=True)

    # ---- `incorrect` needs more evidence: it is rare in every real set (Kaggle 3 %, others less),
    # while balanced training makes it as likely as the others. Lower its logit by the shift that
    # scores best on val (ties: the smaller shift).
    lg = np.log(np.clip(predict(model, va_gt_crops), 1e-12, None))
    ld = np.log(np.clip(predict(model, va_det_crops), 1e-12, None))
    shift_scores = []
    for shift in (0.0, 0.5, 1.0, 1.5, 2.0):
        d = np.array([0.0, 0.0, -shift])
        mg, md, score = val_score((lg + d).argmax(1), (ld + d).argmax(1))
        shift_scores.append({"shift": shift, "val_score": round(score, 4), "val_gt_macro_f1": mg["macro_f1"],
                             "val_det_macro_f1": md["macro_f1"],
                             "val_gt_incorrect_f1": mg["per_class"]["incorrect"]["f1"]})
        print("incorrect shift", shift, shift_scores[-1], flush=True)
    best_shift = max(shift_scores, key=lambda d: (d["val_score"], -d["shift"]))["shift"]
    with torch.no_grad():
        model.fc.bias[2] -= best_shift
    print("incorrect shift selected", best_shift, flush=True)

    # ---- export
    os.makedirs(os.path.dirname(os.path.abspath(args.out_model)), exist_ok=True)
    export = WithSoftmax(model).eval()
    dummy = torch.zeros(1, 3, SIZE, SIZE)
    torch.onnx.export(export, dummy, args.out_model, opset_version=13, input_names=["input"],
                      output_names=["probs"], dynamic_axes={"input": {0: "N"}, "probs": {0: "N"}},
                      do_constant_folding=True, export_params=True)
    blob = open(args.out_model, "rb").read()
    sha = hashlib.sha256(blob).hexdigest()

    # ---- evaluate: val + test, contract crops of ground-truth boxes and of the detector's boxes
    val_m = metrics(va_gt_y, predict(model, va_gt_crops).argmax(1))
    val_det_m = metrics(va_det_y, predict(model, va_det_crops).argmax(1))
    te_gt_y = np.array([f["label"] for f in te_gt])
    te_prob = predict(model, te_gt_crops)
    te_pred = te_prob.argmax(1)
    test_m = metrics(te_gt_y, te_pred)
    te_det_y = np.array([f["label"] for f in te_det])
    test_det_m = metrics(te_det_y, predict(model, te_det_crops).argmax(1))
    # the detector's own mask head on the same matched test faces (argmax)
    head = np.array([f["head"] for f in te_det])
    test_head_m = metrics(te_det_y, head.argmax(1)) if head.ndim == 2 else None

    # ---- held-out list for product tests (deterministic, balanced)
    rng = random.Random(args.seed)
    by = {k: [i for i, f in enumerate(te_gt) if f["label"] == k] for k in range(3)}
    n_inc = len(by[2]) if len(by[2]) < 20 else 20
    pick = sorted(rng.sample(by[2], n_inc))
    rest = 60 - n_inc
    for k in (0, 1):
        want = rest // 2 if k == 0 else rest - rest // 2
        pick += sorted(rng.sample(by[k], min(want, len(by[k]))))
    stem = lambda f: os.path.splitext(os.path.basename(f["file"]))[0]
    heldout = [{"stem": stem(te_gt[i]), "box": te_gt[i]["box"], "label": CLASSES[te_gt[i]["label"]],
                "predicted": CLASSES[int(te_pred[i])],
                "probs": [round(float(p), 4) for p in te_prob[i]]} for i in pick]
    with open(args.out_heldout, "w") as fh:
        json.dump({"description": "Kaggle face-mask TEST-split faces (never trained on); box = [x1,y1,x2,y2] in "
                                  "image pixels from the VOC annotation; predicted = this model's argmax on the "
                                  "contract crop (PIL bilinear/antialias resize; other resizers may differ slightly)",
                   "images_dir": "kaggle-face-mask/images", "model_sha256": sha, "faces": heldout}, fh, indent=1)
        fh.write("\n")

    split_sizes = {k: len(v) for k, v in splits.items()}
    res = {
        "model": {"path": "models/mask-classifier.onnx", "version": 2, "sha256": sha, "bytes": len(blob),
                  "architecture": "MaskNet: 3x3 s2 conv stem + 7 depthwise-separable blocks (24-48-64-64-128-128-256-256), "
                                  "BN folded, ReLU, global avg pool, dropout 0.2, linear 3, softmax",
                  "params": nparams, "opset": 13,
                  "input": "input float32 [N,3,64,64] RGB (pixel/255-0.5)/0.5",
                  "output": "probs float32 [N,3] softmax [mask, no_mask, incorrect]",
                  "crop": "square side 1.25*max(w,h) centred on box, eyes levelled when landmarks exist, black "
                          "outside image, resize 64x64 bilinear antialiased"},
        "data": {
            "used_for_training": used,
            "synthetic_incorrect": synth_info,
            "detector_crops": use_det,
            "detector_boxes_file_sha256_16": det_sha,
            "maskedfacenet_used": args.maskedfacenet,
            "research_data_used": args.research_data,
            "commercial_use_data_only": not (args.maskedfacenet or args.research_data),
            "excluded": ["mask-crops/prajnasb (no licence, synthetic)",
                         "chandrikadeb7 augmented_image_* (augmented duplicates)",
                         "kaggle val (model selection only) and test (final report only)"]
                        + ([] if args.maskedfacenet else ["mask-crops/maskedfacenet (CC BY-NC-SA 4.0)"])
                        + ([] if args.research_data else ["aizoo-mafa-wider (WIDER/MAFA: research use only)"]),
            "kaggle_split_images": split_sizes,
            "kaggle_faces": {"train_gt(min side>=4)": len(tr_gt), "train_detector_matched": len(tr_det),
                             "val_gt(min side>=10)": len(va_gt), "val_detector_matched": len(va_det),
                             "test_gt(min side>=10)": len(te_gt), "test_detector_matched": len(te_det)},
            "licences": {"kaggle-face-mask": "CC0", "chandrikadeb7": "MIT",
                         "adityap27-face-mask": "MIT (repository); photos are third-party web images",
                         "maskedfacenet": "CC BY-NC-SA 4.0 -> model non-commercial, share-alike"
                         if args.maskedfacenet else "not used",
                         "aizoo-mafa-wider": "WIDER FACE / MAFA: research use only -> model research-only"
                         if args.research_data else "not used"},
        },
        "training": {"seed": args.seed, "epochs": args.epochs, "samples_per_epoch": steps_per_epoch * args.batch,
                     "batch": args.batch, "lr": args.lr, "selected_epoch": best[1],
                     "selection": "mean of val macro-F1 on ground-truth-box crops and on detector-box crops",
                     "logit_adjustment": {"log_prior_kaggle_train": [round(float(v), 4) for v in log_prior],
                                          "tau": best_tau, "tau_option": args.prior_tau,
                                          "val_candidates": tau_scores},
                     "incorrect_logit_shift": {"selected_on_val": best_shift, "candidates": shift_scores},
                     "train_seconds": round(train_s, 1), "total_seconds": round(time.time() - t_start, 1),
                     "torch": torch.__version__, "threads": args.threads, "history": history},
        "test": test_m,
        "test_detector_crops": test_det_m,
        "test_detector_mask_head": test_head_m,
        "val": val_m,
        "val_detector_crops": val_det_m,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out_metrics)), exist_ok=True)
    with open(args.out_metrics, "w") as fh:
        json.dump(res, fh, indent=1)
        fh.write("\n")
    brief = lambda m: {k: m[k] for k in ("mask_vs_not_accuracy", "accuracy_3class", "macro_f1")} | {
        "incorrect_f1": m["per_class"]["incorrect"]["f1"], "cm": m["confusion_matrix_gt_pred"]}
    print(json.dumps({"sha256": sha, "bytes": len(blob), "val": brief(val_m), "val_det": brief(val_det_m),
                      "test": brief(test_m), "test_det": brief(test_det_m),
                      "test_head": brief(test_head_m) if test_head_m else None}), flush=True)


if __name__ == "__main__":
    main()
