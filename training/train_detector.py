#!/usr/bin/env python3
"""Train Maskwatch's face + mask detector and export it to ONNX.

YuNet-n (libfacedetection.train, Apache-2.0) fine-tuned on masked and bare faces, with a mask head
(mask / no_mask / incorrect) added on the shared head features of every stride. The exported graph keeps
YuNet's outputs (cls/obj/bbox/kps per stride, decoded by src/vision/yunet.ts) and adds `mask_<s>`.

Run (from the repo root):  /usr/bin/python3 training/train_detector.py
Variant that also learns from research-use data (WIDER FACE / MAFA, aizoo-mafa-wider):  ... --research-data

Needs Debian's python3-torch python3-numpy python3-pil python3-onnx. Data from $MASKWATCH_DATA
(default ../shared/datasets); starting weights from $MASKWATCH_SHARED/models/yunet/yunet_n_dynamic.onnx.
Checkpoints go to --work (default /tmp/maskwatch-detector); an interrupted run resumes from the last one.
"""
import argparse
import hashlib
import json
import math
import os
import random
import time
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper
from PIL import Image, ImageOps

STRIDES = (8, 16, 32)
MASK_LABELS = ("mask", "no_mask", "incorrect")
KAGGLE_LABELS = {"with_mask": 0, "without_mask": 1, "mask_weared_incorrect": 2}
JSONL_LABELS = {"mask": 0, "no_mask": 1, "incorrect": 2, "face": -1}
YUNET_SHA256 = "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12"
MIN_FACE = 6.0  # px after augmentation: smaller faces are neither positives nor negatives


# ---------------------------------------------------------------- model

class DPUnit(nn.Module):
    """YuNet's depthwise-separable unit: 1x1 conv, depthwise 3x3 (BatchNorm folded in), optional ReLU."""

    def __init__(self, cin, cout, relu=True):
        super().__init__()
        self.pw = nn.Conv2d(cin, cout, 1)
        self.dw = nn.Conv2d(cout, cout, 3, padding=1, groups=cout)
        self.relu = relu

    def forward(self, x):
        x = self.dw(self.pw(x))
        return F.relu(x) if self.relu else x


class YuNetMask(nn.Module):
    """YuNet-n layout (channels read from the starting weights) plus a mask head per stride."""

    def __init__(self, ch):
        super().__init__()
        # ch: output widths of [stem, stem unit, then two units per stage x 5, neck]
        self.stem = nn.Conv2d(3, ch[0], 3, stride=2, padding=1)
        self.stem_dp = DPUnit(ch[0], ch[1])
        self.stages = nn.ModuleList()
        for i in range(5):
            a, b, c = ch[1 + 2 * i], ch[2 + 2 * i], ch[3 + 2 * i]
            self.stages.append(nn.Sequential(DPUnit(a, b), DPUnit(b, c)))
        n = ch[12]
        self.lateral = nn.ModuleList([DPUnit(ch[7], n), DPUnit(ch[9], n), DPUnit(ch[11], n)])
        self.share = nn.ModuleList([DPUnit(n, n) for _ in STRIDES])
        self.cls = nn.ModuleList([DPUnit(n, 1, relu=False) for _ in STRIDES])
        self.bbox = nn.ModuleList([DPUnit(n, 4, relu=False) for _ in STRIDES])
        self.obj = nn.ModuleList([DPUnit(n, 1, relu=False) for _ in STRIDES])
        self.kps = nn.ModuleList([DPUnit(n, 10, relu=False) for _ in STRIDES])
        self.mask = nn.ModuleList([
            nn.Sequential(nn.Conv2d(n, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),
                          nn.Conv2d(32, 3, 1)) for _ in STRIDES])

    def yunet_convs(self):
        """Convs in the order of the ONNX graph's Conv nodes."""
        out = [self.stem, self.stem_dp.pw, self.stem_dp.dw]
        for st in self.stages:
            for dp in st:
                out += [dp.pw, dp.dw]
        for i in (2, 1, 0):
            out += [self.lateral[i].pw, self.lateral[i].dw]
        for heads in (self.share, self.cls, self.bbox, self.obj, self.kps):
            for dp in heads:
                out += [dp.pw, dp.dw]
        return out

    def forward(self, x):
        """Per stride: logits cls [B,N,1], obj [B,N,1], bbox [B,N,4], kps [B,N,10], mask [B,N,3]."""
        x = self.stem_dp(F.relu(self.stem(x)))
        x = F.max_pool2d(x, 2)
        x = self.stages[0](x)
        x = self.stages[1](x)
        c3 = self.stages[2](F.max_pool2d(x, 2))
        c4 = self.stages[3](F.max_pool2d(c3, 2))
        c5 = self.stages[4](F.max_pool2d(c4, 2))
        p5 = self.lateral[2](c5)
        p4 = self.lateral[1](c4 + F.interpolate(p5, scale_factor=2.0, mode="nearest"))
        p3 = self.lateral[0](c3 + F.interpolate(p4, scale_factor=2.0, mode="nearest"))
        outs = []
        for i, p in enumerate((p3, p4, p5)):
            f = self.share[i](p)
            flat = lambda t: t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, t.shape[1])  # noqa: E731
            outs.append({"cls": flat(self.cls[i](f)), "obj": flat(self.obj[i](f)), "bbox": flat(self.bbox[i](f)),
                         "kps": flat(self.kps[i](f)), "mask": flat(self.mask[i](f))})
        return outs


def interpolate(model, init, alpha):
    """WiSE-FT (Wortsman et al. 2022): alpha x fine-tuned + (1 - alpha) x starting weights, for every
    weight the starting model has (the new mask head keeps its trained weights). It keeps most of the
    fine-tuning's gain on the new data and much of the starting model's robustness elsewhere."""
    start = init.state_dict()
    mixed = {k: (alpha * v + (1 - alpha) * start[k]) if not k.startswith("mask.") else v
             for k, v in model.state_dict().items()}
    model.load_state_dict(mixed)
    return model


def load_yunet(path):
    raw = open(path, "rb").read()
    sha = hashlib.sha256(raw).hexdigest()
    if sha != YUNET_SHA256:
        raise SystemExit(f"{path}: sha256 {sha}, expected {YUNET_SHA256}")
    m = onnx.load_from_string(raw)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    w = lambda i: inits[convs[i].input[1]]  # noqa: E731
    ch = [w(0).shape[0]] + [w(i).shape[0] for i in range(1, 23, 2)] + [w(23).shape[0]]
    model = YuNetMask(ch)
    targets = model.yunet_convs()
    if len(targets) != len(convs):
        raise SystemExit(f"YuNet graph has {len(convs)} convs, the model {len(targets)}")
    with torch.no_grad():
        for conv, node in zip(targets, convs):
            wt = inits[node.input[1]]
            if tuple(conv.weight.shape) != wt.shape:
                raise SystemExit(f"shape mismatch at {node.output[0]}: {tuple(conv.weight.shape)} vs {wt.shape}")
            conv.weight.copy_(torch.from_numpy(wt.copy()))
            conv.bias.copy_(torch.from_numpy(inits[node.input[2]].copy()))
    return model, ch


# ---------------------------------------------------------------- data

def parse_voc(path):
    root = ET.parse(path).getroot()
    boxes, labels = [], []
    for o in root.iter("object"):
        bb = o.find("bndbox")
        boxes.append([float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(KAGGLE_LABELS.get(o.find("name").text, -1))
    return boxes, labels


def load_samples(data, split, research):
    out = []
    kag = os.path.join(data, "kaggle-face-mask")
    splits = json.load(open(os.path.join(kag, "splits.json")))
    for stem in splits[split]:
        b, lab = parse_voc(os.path.join(kag, "annotations", stem + ".xml"))
        out.append((os.path.join(kag, "images", stem + ".jpg"), np.array(b, np.float32).reshape(-1, 4), lab))
    if split != "train":
        return out
    sets = ["adityap27-face-mask"] + (["aizoo-mafa-wider"] if research else [])
    for name in sets:
        for line in open(os.path.join(data, name, "labels.jsonl")):
            r = json.loads(line)
            b = [f["box"] for f in r["faces"]]
            lab = [JSONL_LABELS[f["label"]] for f in r["faces"]]
            out.append((os.path.join(data, name, r["image"]), np.array(b, np.float32).reshape(-1, 4), lab))
    return out


def augment(sample, size, rng):
    """A size x size crop of the photo scaled so its long side is ~640 px (x0.45-1.6), flipped and jittered.
    Returns BGR float [3,size,size] (0..255), boxes [n,4], labels [n], ignore boxes [m,4]."""
    path, boxes, labels = sample
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    W, H = img.size
    s = 640.0 * math.exp(rng.uniform(math.log(0.45), math.log(1.6))) / max(W, H)
    nw, nh = max(1, round(W * s)), max(1, round(H * s))
    img = img.resize((nw, nh), Image.BILINEAR)
    ox = rng.randint(min(0, nw - size), max(0, nw - size))
    oy = rng.randint(min(0, nh - size), max(0, nh - size))
    canvas = np.zeros((size, size, 3), np.uint8)
    src = np.asarray(img)
    x0, y0 = max(0, ox), max(0, oy)
    x1, y1 = min(nw, ox + size), min(nh, oy + size)
    canvas[y0 - oy:y1 - oy, x0 - ox:x1 - ox] = src[y0:y1, x0:x1]
    b = boxes * s - np.array([ox, oy, ox, oy], np.float32)
    clipped = np.clip(b, 0, size)
    area = np.maximum(0, b[:, 2] - b[:, 0]) * np.maximum(0, b[:, 3] - b[:, 1])
    carea = np.maximum(0, clipped[:, 2] - clipped[:, 0]) * np.maximum(0, clipped[:, 3] - clipped[:, 1])
    side = np.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1])
    keep = (carea >= 0.6 * np.maximum(area, 1e-6)) & (side >= MIN_FACE)
    ignore = (~keep) & (carea > 0)
    lab = np.array(labels, np.int64)
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
        clipped = np.stack([size - clipped[:, 2], clipped[:, 1], size - clipped[:, 0], clipped[:, 3]], 1)
    x = canvas.astype(np.float32)
    x = x * rng.uniform(0.65, 1.35) + rng.uniform(-25, 25)  # brightness / contrast
    grey = x.mean(2, keepdims=True)
    x = grey + (x - grey) * (0.0 if rng.random() < 0.05 else rng.uniform(0.6, 1.4))  # saturation
    x = np.clip(x, 0, 255)[:, :, ::-1]  # RGB -> BGR, as YuNet reads
    return (torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
            torch.from_numpy(clipped[keep]), torch.from_numpy(lab[keep]), torch.from_numpy(clipped[ignore]))


# ---------------------------------------------------------------- assignment and loss

def grid(size):
    centers, strides = [], []
    for s in STRIDES:
        n = size // s
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        centers.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).float())
        strides.append(torch.full((n * n,), float(s)))
    return torch.cat(centers), torch.cat(strides)


def decode_boxes(bbox, cells, strides):
    cx = (cells[:, 0] + bbox[:, 0]) * strides
    cy = (cells[:, 1] + bbox[:, 1]) * strides
    w = torch.exp(bbox[:, 2].clamp(max=8)) * strides
    h = torch.exp(bbox[:, 3].clamp(max=8)) * strides
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def box_iou(a, b):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    aa = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    ab = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    return inter / (aa[:, None] + ab[None] - inter + 1e-9)


def giou_loss(p, g):
    lt = torch.max(p[:, :2], g[:, :2])
    rb = torch.min(p[:, 2:], g[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    ap = (p[:, 2:] - p[:, :2]).clamp(min=0).prod(1)
    ag = (g[:, 2:] - g[:, :2]).clamp(min=0).prod(1)
    union = ap + ag - inter + 1e-9
    iou = inter / union
    clt = torch.min(p[:, :2], g[:, :2])
    crb = torch.max(p[:, 2:], g[:, 2:])
    carea = (crb - clt).clamp(min=0).prod(1) + 1e-9
    return 1 - iou + (carea - union) / carea


def assign(pred_boxes, score, gt, cells, strides):
    """SimOTA-style dynamic-k matching (YOLOX), restricted to cells near each face's centre."""
    n = pred_boxes.shape[0]
    if gt.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    centers = (cells + 0.5) * strides[:, None]
    gc = (gt[:, :2] + gt[:, 2:]) / 2
    in_box = ((centers[None] > gt[:, None, :2]) & (centers[None] < gt[:, None, 2:])).all(2)
    radius = 2.5 * strides[None, :]
    in_ctr = ((centers[None] - gc[:, None]).abs() < radius[..., None]).all(2)
    cand = in_box | in_ctr
    iou = box_iou(gt, pred_boxes)  # [m, n]
    cost = -torch.log(score[None].clamp(min=1e-6)) + 3.0 * -torch.log(iou.clamp(min=1e-6))
    cost = cost + 1e5 * (~(in_box & in_ctr)).float() + 1e8 * (~cand).float()
    match = torch.zeros_like(cost, dtype=torch.bool)
    for j in range(gt.shape[0]):
        k = max(1, int(torch.topk(iou[j] * cand[j], min(10, n)).values.sum().item()))
        idx = torch.topk(cost[j], k, largest=False).indices
        idx = idx[cand[j, idx]]
        match[j, idx] = True
    multi = match.sum(0) > 1
    if multi.any():
        best = torch.argmin(torch.where(match, cost, torch.full_like(cost, 1e12)), 0)
        match[:, multi] = False
        match[best[multi], multi.nonzero().squeeze(1)] = True
    gj, pos = match.nonzero(as_tuple=True)
    return pos, gj


def losses(out, tout, batch, cells, strides, class_w):
    cat = lambda key, o: torch.cat([lv[key] for lv in o], 1)  # noqa: E731
    cls, obj, bbox, kps, mask = (cat(k, out) for k in ("cls", "obj", "bbox", "kps", "mask"))
    tcls, tobj, tkps = (cat(k, tout) for k in ("cls", "obj", "kps"))
    centers = (cells + 0.5) * strides[:, None]
    l_obj = l_cls = l_box = l_kps = l_mask = 0.0
    npos = nmask = 0
    for b, (_, gt, lab, ign) in enumerate(batch):
        pb = decode_boxes(bbox[b], cells, strides)
        score = torch.sqrt(torch.sigmoid(cls[b, :, 0]) * torch.sigmoid(obj[b, :, 0])).detach()
        pos, gj = assign(pb.detach(), score, gt, cells, strides)
        target = torch.zeros_like(obj[b, :, 0])
        valid = torch.ones_like(target, dtype=torch.bool)
        if ign.shape[0]:
            inside = ((centers[None] > ign[:, None, :2]) & (centers[None] < ign[:, None, 2:])).all(2).any(0)
            valid &= ~inside
        target[pos] = 1.0
        valid[pos] = True
        l_obj = l_obj + F.binary_cross_entropy_with_logits(obj[b, valid, 0], target[valid], reduction="sum")
        if pos.numel():
            g = gt[gj]
            iou = box_iou(pb[pos].detach(), g).diagonal()
            l_cls = l_cls + F.binary_cross_entropy_with_logits(cls[b, pos, 0], iou, reduction="sum")
            l_box = l_box + giou_loss(pb[pos], g).sum()
            tw = torch.sqrt(torch.sigmoid(tcls[b, pos, 0]) * torch.sigmoid(tobj[b, pos, 0])).clamp(min=0.1)
            l_kps = l_kps + (F.smooth_l1_loss(kps[b, pos], tkps[b, pos], reduction="none").sum(1) * tw).sum()
            known = lab[gj] >= 0
            if known.any():
                l_mask = l_mask + F.cross_entropy(mask[b, pos[known]], lab[gj][known], weight=class_w, reduction="sum")
                nmask += int(known.sum())
            npos += pos.numel()
    npos = max(npos, 1)
    parts = {"obj": l_obj / npos, "cls": l_cls / npos, "box": 5.0 * l_box / npos, "kps": 0.5 * l_kps / npos,
             "mask": l_mask / max(nmask, 1)}
    return sum(parts.values()), {k: float(v) for k, v in parts.items()}


# ---------------------------------------------------------------- export

class Export(nn.Module):
    """The product's contract: YuNet's outputs (probabilities for cls/obj) plus mask probabilities."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        outs = self.m(x)
        res = []
        for key, fn in (("cls", torch.sigmoid), ("obj", torch.sigmoid), ("bbox", None), ("kps", None),
                        ("mask", lambda t: torch.softmax(t, -1))):
            for lv in outs:
                res.append(fn(lv[key]) if fn else lv[key])
        return tuple(res)


def export(model, path):
    names = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps", "mask") for s in STRIDES]
    model.eval()
    x = torch.zeros(1, 3, 320, 320)
    dyn = {"input": {0: "batch", 2: "height", 3: "width"}}
    dyn.update({n: {0: "batch", 1: "cells"} for n in names})
    torch.onnx.export(Export(model), x, path, input_names=["input"], output_names=names, dynamic_axes=dyn,
                      opset_version=11, do_constant_folding=True)
    model.train()
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---------------------------------------------------------------- main

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    shared = os.environ.get("MASKWATCH_SHARED", os.path.join(repo, "..", "shared"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("MASKWATCH_DATA", os.path.join(shared, "datasets")))
    ap.add_argument("--init", default=os.path.join(shared, "models", "yunet", "yunet_n_dynamic.onnx"))
    ap.add_argument("--research-data", action="store_true",
                    help="also train on aizoo-mafa-wider (WIDER FACE / MAFA: research use only)")
    ap.add_argument("--steps", type=int, default=1300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/maskwatch-detector")
    ap.add_argument("--out", default=os.path.join(repo, "models", "maskwatch-detector.onnx"))
    ap.add_argument("--metrics", default=os.path.join(here, "detector-metrics.json"))
    ap.add_argument("--wise", type=float, default=0.5,
                    help="weight of the fine-tuned weights against the starting ones in the export (WiSE-FT; 1 = fine-tuned only)")
    ap.add_argument("--export-checkpoint", metavar="ONNX",
                    help="only export the run's last checkpoint to this file (to evaluate a run in progress)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    torch.use_deterministic_algorithms(True)
    research = a.research_data
    work = os.path.join(a.work, "research" if research else "default")
    os.makedirs(work, exist_ok=True)
    samples = load_samples(a.data, "train", research)
    print(f"{len(samples)} training photos ({'with' if research else 'without'} aizoo-mafa-wider)", flush=True)

    model, ch = load_yunet(a.init)
    teacher, _ = load_yunet(a.init)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    other = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4}, {"params": other, "weight_decay": 0}], lr=a.lr)
    warm = 150
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(i, a.steps) / a.steps))))
    class_w = torch.tensor([1.0, 1.0, 3.0])
    cells, strides = grid(a.size)
    ckpt = os.path.join(work, "last.pt")
    if a.export_checkpoint:
        st = torch.load(ckpt)
        model.load_state_dict(st["model"])
        interpolate(model, teacher, a.wise)
        print(f"step {st['step']}, wise {a.wise}: {a.export_checkpoint} sha256 {export(model, a.export_checkpoint)}")
        return
    step = 0
    log = []
    if os.path.exists(ckpt):
        st = torch.load(ckpt)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        step, log = st["step"], st["log"]
        print(f"resumed at step {step}", flush=True)
    t0 = time.time()
    run = {k: 0.0 for k in ("obj", "cls", "box", "kps", "mask")}
    while step < a.steps:
        rng = random.Random(a.seed * 100003 + step)  # each step's draws depend only on the step: resumable
        batch = [augment(samples[rng.randrange(len(samples))], a.size, rng) for _ in range(a.batch)]
        x = torch.stack([b[0] for b in batch])
        out = model(x)
        with torch.no_grad():
            tout = teacher(x)
        loss, parts = losses(out, tout, batch, cells, strides, class_w)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        step += 1
        for k in run:
            run[k] += parts[k]
        if step % 50 == 0:
            avg = {k: round(v / 50, 4) for k, v in run.items()}
            log.append({"step": step, **avg})
            el = time.time() - t0
            print(f"step {step}/{a.steps} {avg} lr {sched.get_last_lr()[0]:.2e} {el:.0f}s", flush=True)
            run = {k: 0.0 for k in run}
        if step % 250 == 0 or step == a.steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step, "log": log}, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)

    out = a.out.replace(".onnx", "-research.onnx") if research else a.out
    interpolate(model, teacher, a.wise)
    sha = export(model, out)
    size = os.path.getsize(out)
    print(f"exported {out} ({size} bytes, sha256 {sha})", flush=True)
    metrics = json.load(open(a.metrics)) if os.path.exists(a.metrics) else {}
    metrics["research" if research else "default"] = {
        "model": os.path.relpath(out, repo), "sha256": sha, "bytes": size, "photos": len(samples),
        "steps": a.steps, "batch": a.batch, "crop": a.size, "lr": a.lr, "seed": a.seed, "wise": a.wise, "channels": ch,
        "loss_log": log}
    with open(a.metrics, "w") as f:
        json.dump(metrics, f, indent=1)


if __name__ == "__main__":
    main()
