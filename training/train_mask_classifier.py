#!/usr/bin/python3
"""Train the maskwatch 3-class face-mask classifier and export it to ONNX.

Classes (output order): 0 mask, 1 no_mask, 2 incorrect.
Contract crop: square of side 1.25*max(w,h) centred on the face box, black outside the
image, resized to 64x64 (bilinear, antialiased); input (pixel/255-0.5)/0.5, RGB, NCHW.
Output "probs": softmax [N,3].

Run (from the repo root):  /usr/bin/python3 training/train_mask_classifier.py
Data root: $MASKWATCH_DATA or --data (default ../shared/datasets beside the repository). Data is never copied
into the repo; decoded crops are cached under /tmp (--cache-dir) to speed up re-runs.
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
CROP_SCALE = 1.25
SIZE = 64
CTX = 128  # training context patch: side 2*s at 128 px; contract crop = central half
MIN_EVAL_SIDE = 10
CACHE_VERSION = "v1"


# ----------------------------------------------------------------------------- data
def crop_square(img, cx, cy, side, out):
    """Square [cx-side/2, cy-side/2, cx+side/2, cy+side/2], black outside, resized to out."""
    x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    ix0, iy0, ix1, iy1 = math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)
    c = img.crop((ix0, iy0, ix1, iy1))  # PIL fills outside-of-image with 0
    return c.resize((out, out), Image.BILINEAR, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))


def contract_crop(img, box):
    x1, y1, x2, y2 = box
    s = CROP_SCALE * max(x2 - x1, y2 - y1)
    return crop_square(img, (x1 + x2) / 2, (y1 + y2) / 2, s, SIZE)


def parse_voc(path):
    root = ET.parse(path).getroot()
    faces = []
    for o in root.findall("object"):
        bb = o.find("bndbox")
        box = [float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        faces.append((KAGGLE_LABELS[o.find("name").text], box))
    return faces


def kaggle_faces(data, stems):
    out = []
    for stem in stems:
        for i, (lab, box) in enumerate(parse_voc(os.path.join(data, "kaggle-face-mask/annotations", stem + ".xml"))):
            out.append({"stem": stem, "idx": i, "label": lab, "box": box})
    return out


def load_rgb(path):
    im = Image.open(path)
    im.load()
    return im.convert("RGB")


def build_kaggle(data, faces, ctx):
    """ctx=True: 128px context patches (side 2s) for augmentation; else 64px contract crops."""
    arr = np.zeros((len(faces), CTX if ctx else SIZE, CTX if ctx else SIZE, 3), np.uint8)
    cache_img, cur = None, None
    for n, f in enumerate(faces):
        if f["stem"] != cur:
            cur = f["stem"]
            cache_img = load_rgb(os.path.join(data, "kaggle-face-mask/images", cur + ".jpg"))
        if ctx:
            x1, y1, x2, y2 = f["box"]
            s = CROP_SCALE * max(x2 - x1, y2 - y1)
            arr[n] = np.asarray(crop_square(cache_img, (x1 + x2) / 2, (y1 + y2) / 2, 2 * s, CTX))
        else:
            arr[n] = np.asarray(contract_crop(cache_img, f["box"]))
    return arr


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
    ap.add_argument("--out-model", default="models/mask-classifier.onnx")
    ap.add_argument("--out-metrics", default="training/metrics.json")
    ap.add_argument("--out-heldout", default="training/heldout.json")
    ap.add_argument("--cache-dir", default="/tmp/maskwatch-train-cache")
    ap.add_argument("--no-maskedfacenet", action="store_true", help="train without MaskedFace-Net (CC BY-NC-SA)")
    ap.add_argument("--epochs", type=int, default=28)
    ap.add_argument("--samples-per-epoch", type=int, default=6144)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    use_mfn = not args.no_maskedfacenet

    torch.set_num_threads(2)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t_start = time.time()
    data = args.data
    splits = json.load(open(os.path.join(data, "kaggle-face-mask/splits.json")))

    # ---- data
    tr_faces = kaggle_faces(data, splits["train"])
    tr_faces = [f for f in tr_faces if min(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1]) >= 4]
    va_faces = [f for f in kaggle_faces(data, splits["val"])
                if min(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1]) >= MIN_EVAL_SIDE]
    te_faces = [f for f in kaggle_faces(data, splits["test"])
                if min(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1]) >= MIN_EVAL_SIDE]
    tr_ctx = cached(args.cache_dir, "kaggle-train-ctx" + data, lambda: build_kaggle(data, tr_faces, True))
    va_crops = cached(args.cache_dir, "kaggle-val-crop" + data, lambda: build_kaggle(data, va_faces, False))
    te_crops = cached(args.cache_dir, "kaggle-test-crop" + data, lambda: build_kaggle(data, te_faces, False))

    ctx_parts, lab_parts, src_parts, is_crop_parts = [tr_ctx], [np.array([f["label"] for f in tr_faces])], [], []
    src_names = ["kaggle"]
    src_parts.append(np.zeros(len(tr_faces), int))
    is_crop_parts.append(np.zeros(len(tr_faces), bool))
    used = {"kaggle-face-mask/train": {c: int(sum(f["label"] == k for f in tr_faces)) for k, c in enumerate(CLASSES)}}
    for src, sub, lab, paths in folder_sources(data, use_mfn):
        arr = cached(args.cache_dir, f"folder-{src}-{sub}-{len(paths)}" + data, lambda: build_folder(paths))
        if src not in src_names:
            src_names.append(src)
        ctx_parts.append(arr)
        lab_parts.append(np.full(len(paths), lab))
        src_parts.append(np.full(len(paths), src_names.index(src)))
        is_crop_parts.append(np.ones(len(paths), bool))
        used.setdefault(f"mask-crops/{src}", {c: 0 for c in CLASSES})[CLASSES[lab]] += len(paths)
    ctx = torch.from_numpy(np.concatenate(ctx_parts))
    labels = np.concatenate(lab_parts)
    srcs = np.concatenate(src_parts)
    is_crop = torch.from_numpy(np.concatenate(is_crop_parts))
    print("data:", json.dumps(used), "total", len(labels), f"prep {time.time() - t_start:.1f}s", flush=True)

    # sampling weights: each class 1/3 of the draws; within a class Kaggle (target domain)
    # gets half of the class mass when other sources exist, the rest split by count.
    w = np.zeros(len(labels))
    for k in range(3):
        ck = labels == k
        kag = ck & (srcs == 0)
        oth = ck & (srcs != 0)
        if oth.sum() == 0:
            w[kag] = 1.0 / kag.sum()
        else:
            w[kag] = 0.5 / kag.sum()
            w[oth] = 0.5 / oth.sum()
        w[ck] *= (1.0 / 3.0)
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
    va_gt = np.array([f["label"] for f in va_faces])
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
        pv = predict(model, va_crops).argmax(1)
        m = metrics(va_gt, pv)
        history.append({"epoch": ep + 1, "loss": round(tot_loss / steps_per_epoch, 4), "val_macro_f1": m["macro_f1"],
                        "val_acc": m["accuracy_3class"], "val_mask_vs_not": m["mask_vs_not_accuracy"]})
        print(f"ep {ep + 1:2d} loss {tot_loss / steps_per_epoch:.4f} val acc {m['accuracy_3class']:.4f} "
              f"bin {m['mask_vs_not_accuracy']:.4f} mF1 {m['macro_f1']:.4f} "
              f"inc-F1 {m['per_class']['incorrect']['f1']:.3f} ({time.time() - t0:.1f}s)", flush=True)
        # model selection on val macro-F1 (ties -> later epoch), only in the 2nd half of the schedule
        if ep + 1 > args.epochs // 2:
            key = (m["macro_f1"], m["accuracy_3class"])
            if best is None or key >= best[0]:
                best = (key, ep + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
    train_s = time.time() - t_train
    model.load_state_dict(best[2])
    model.eval()
    print(f"selected epoch {best[1]} val {best[0]} train {train_s:.0f}s", flush=True)

    # ---- prior correction (logit adjustment): training draws classes ~uniformly, real scenes are
    # mostly `mask`. Add tau*log(Kaggle-train class prior) to the final bias; tau picked on val.
    prior = np.bincount(np.array([f["label"] for f in tr_faces]), minlength=3).astype(np.float64)
    log_prior = np.log(prior / prior.sum())
    va_logp = np.log(np.clip(predict(model, va_crops), 1e-12, None))
    tau_scores = []
    for tau in (0.0, 0.25, 0.5, 0.75, 1.0):
        mt = metrics(va_gt, (va_logp + tau * log_prior).argmax(1))
        tau_scores.append({"tau": tau, "val_macro_f1": mt["macro_f1"], "val_mask_vs_not": mt["mask_vs_not_accuracy"],
                           "val_acc": mt["accuracy_3class"]})
        print("tau", tau, tau_scores[-1], flush=True)
    best_tau = max(tau_scores, key=lambda d: (d["val_macro_f1"], d["val_mask_vs_not"], -d["tau"]))["tau"]
    with torch.no_grad():
        model.fc.bias += torch.from_numpy(best_tau * log_prior).float()
    print("tau selected", best_tau, flush=True)

    # ---- export
    os.makedirs(os.path.dirname(os.path.abspath(args.out_model)), exist_ok=True)
    export = WithSoftmax(model).eval()
    dummy = torch.zeros(1, 3, SIZE, SIZE)
    torch.onnx.export(export, dummy, args.out_model, opset_version=13, input_names=["input"],
                      output_names=["probs"], dynamic_axes={"input": {0: "N"}, "probs": {0: "N"}},
                      do_constant_folding=True, export_params=True)
    blob = open(args.out_model, "rb").read()
    sha = hashlib.sha256(blob).hexdigest()

    # ---- evaluate (val + test, contract crops of ground-truth boxes)
    val_m = metrics(va_gt, predict(model, va_crops).argmax(1))
    te_gt = np.array([f["label"] for f in te_faces])
    te_prob = predict(model, te_crops)
    te_pred = te_prob.argmax(1)
    test_m = metrics(te_gt, te_pred)

    # ---- held-out list for product tests (deterministic, balanced)
    rng = random.Random(args.seed)
    by = {k: [i for i, f in enumerate(te_faces) if f["label"] == k] for k in range(3)}
    n_inc = len(by[2]) if len(by[2]) < 20 else 20
    pick = sorted(rng.sample(by[2], n_inc))
    rest = 60 - n_inc
    for k in (0, 1):
        want = rest // 2 if k == 0 else rest - rest // 2
        pick += sorted(rng.sample(by[k], min(want, len(by[k]))))
    heldout = [{"stem": te_faces[i]["stem"], "box": te_faces[i]["box"], "label": CLASSES[te_faces[i]["label"]],
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
        "model": {"path": "models/mask-classifier.onnx", "sha256": sha, "bytes": len(blob),
                  "architecture": "MaskNet: 3x3 s2 conv stem + 7 depthwise-separable blocks (24-48-64-64-128-128-256-256), "
                                  "BN folded, ReLU, global avg pool, dropout 0.2, linear 3, softmax",
                  "params": nparams, "opset": 13,
                  "input": "input float32 [N,3,64,64] RGB (pixel/255-0.5)/0.5",
                  "output": "probs float32 [N,3] softmax [mask, no_mask, incorrect]",
                  "crop": "square side 1.25*max(w,h) centred on box, black outside image, resize 64x64 bilinear antialiased"},
        "data": {
            "used_for_training": used,
            "maskedfacenet_used": use_mfn,
            "excluded": ["mask-crops/prajnasb (no licence, synthetic)",
                         "chandrikadeb7 augmented_image_* (augmented duplicates)",
                         "kaggle val (model selection only) and test (final report only)"],
            "kaggle_split_images": split_sizes,
            "kaggle_faces": {"train_used(min side>=4)": len(tr_faces), "val(min side>=10)": len(va_faces),
                             "test(min side>=10)": len(te_faces)},
            "licences": {"kaggle-face-mask": "CC0", "chandrikadeb7": "MIT",
                         "maskedfacenet": "CC BY-NC-SA 4.0 (model trained on it is arguably a derivative: "
                                          "non-commercial, share-alike)" if use_mfn else "not used"},
        },
        "training": {"seed": args.seed, "epochs": args.epochs, "samples_per_epoch": steps_per_epoch * args.batch,
                     "batch": args.batch, "lr": args.lr, "selected_epoch": best[1],
                     "logit_adjustment": {"log_prior_kaggle_train": [round(float(v), 4) for v in log_prior],
                                          "tau_selected_on_val": best_tau, "candidates": tau_scores},
                     "train_seconds": round(train_s, 1), "total_seconds": round(time.time() - t_start, 1),
                     "torch": torch.__version__, "threads": 2, "history": history},
        "test": test_m,
        "val": val_m,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out_metrics)), exist_ok=True)
    with open(args.out_metrics, "w") as fh:
        json.dump(res, fh, indent=1)
        fh.write("\n")
    print(json.dumps({"sha256": sha, "bytes": len(blob), "test": {k: test_m[k] for k in
                      ("mask_vs_not_accuracy", "accuracy_3class", "macro_f1")}, "test_cm": test_m["confusion_matrix_gt_pred"],
                      "val": {k: val_m[k] for k in ("mask_vs_not_accuracy", "accuracy_3class", "macro_f1")},
                      "val_cm": val_m["confusion_matrix_gt_pred"]}), flush=True)


if __name__ == "__main__":
    main()
