"""Benchmark: fusion-head training from the frozen-feature cache against running the three backbones every
step (what the reference code does), on the same data, from the same initial head, in the same batch order.

    python benchmarks/bench_fusion.py [--profile mini] [--backbone test_efficientnet] [--images 256] [--epochs 2]
    python benchmarks/bench_fusion.py --backbone densenet121 --input-size 256 --images 64 --epochs 1   # paper-sized

Prints the time of one head epoch each way and their ratio (target: at least 50x), the one-off cost of filling
the cache, and the validation accuracy each way (they must agree: frozen features are the same numbers).
The base backbones are randomly initialised (seeded): speed and equality do not depend on their training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import dfxlib
from dfxlib.data.batches import ImageStore, order
from dfxlib.data.index import CLASS_INDEX, CLASSES
from dfxlib.models import features, fusion, networks
from dfxlib.models.backbones import create_backbone, preprocess
from dfxlib.models.train import save_weights


def head_epoch(head, opt, batches, weight) -> float:
    """Seconds of one epoch of head training over `batches` of (a function giving logits, labels)."""
    t0 = time.perf_counter()
    head.train()
    for logits_fn, y in batches:
        loss = F.cross_entropy(logits_fn(), y, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--backbone", default="")
    ap.add_argument("--images", type=int, default=256, help="fusion images used (0 = the whole fusion split)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--input-size", type=int, default=0, help="network input side (default: the profile's)")
    ap.add_argument("--run-dir", default="", help="reuse a run folder (its MiniDFX world and split)")
    args = ap.parse_args()
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="dfx-bench-fusion-")
    overrides = {"progress": False, **({"input_size": args.input_size} if args.input_size else {})}
    run = dfxlib.start(args.profile, run_dir=run_dir, overrides=overrides)
    cfg = run.config
    backbone = args.backbone or cfg.backbones[0]
    index = run.index()
    split = run.split(index)
    rows = split.rows("fusion")
    if args.images:
        rows = rows.sample(n=min(args.images, len(rows)), random_state=0).sort_values("path")
    rels, y = list(rows["path"]), torch.tensor(rows["family"].map(CLASS_INDEX).to_numpy(dtype=np.int64))
    weight = fusion.class_weights(y.numpy())

    bases = []
    for k, c in enumerate(CLASSES):
        torch.manual_seed(k)
        net = networks.BaseClassifier(create_backbone(backbone, "none")).eval()
        folder = Path(run_dir) / "bench_bases" / c
        save_weights(net, folder / "best.safetensors")
        bases.append(networks.BaseModel(net=net, backbone=backbone, kind="unbalanced", main=c, folder=folder))
    tf = preprocess(backbone, cfg.input_size)
    bs = cfg.batch_size

    # reference: decode, preprocess and run the three frozen backbones at every step
    torch.manual_seed(0)
    head_ref = networks.FusionHead()
    model = networks.CompleteModel([b.features_net for b in bases], head_ref)
    disk = ImageStore(index.root, keep=False)
    opt = torch.optim.Adam(head_ref.parameters(), lr=cfg.head_lr)
    ref_times = []
    for epoch in range(args.epochs):
        idx = order(len(rels), cfg.seed, epoch)
        batches = ((lambda j=idx[i:i + bs]: model(disk.batch([rels[t] for t in j], tf)), y[idx[i:i + bs]])
                   for i in range(0, len(idx), bs) if len(idx[i:i + bs]) > 1)
        ref_times.append(head_epoch(head_ref, opt, batches, weight))

    # cached: features once, then the head on tensors
    torch.manual_seed(0)
    head_c = networks.FusionHead()
    t0 = time.perf_counter()
    feats = torch.as_tensor(features.stacked_features(run, ImageStore(index.root, keep=False), bases, rels))
    fill = time.perf_counter() - t0
    opt = torch.optim.Adam(head_c.parameters(), lr=cfg.head_lr)
    cache_times = []
    for epoch in range(args.epochs):
        idx = order(len(rels), cfg.seed, epoch)
        batches = ((lambda j=idx[i:i + bs]: head_c(feats[j]), y[idx[i:i + bs]])
                   for i in range(0, len(idx), bs) if len(idx[i:i + bs]) > 1)
        cache_times.append(head_epoch(head_c, opt, batches, weight))

    head_ref.eval(), head_c.eval()
    with torch.no_grad():
        acc_ref = float((head_ref(feats).argmax(1) == y).float().mean())
        acc_c = float((head_c(feats).argmax(1) == y).float().mean())
    diff = max(float((a - b).abs().max()) for a, b in zip(head_ref.state_dict().values(), head_c.state_dict().values()))
    r, c = float(np.mean(ref_times)), float(np.mean(cache_times))
    print(f"backbone {backbone} ({cfg.input_size} px), {len(rels)} images, batch {bs}, {args.epochs} epochs, "
          f"{torch.get_num_threads()} threads")
    print(f"head epoch, backbones every step (reference): {r:8.3f} s")
    print(f"head epoch, from the feature cache          : {c:8.3f} s")
    print(f"speed-up per epoch: {r / c:.1f}x (target >= 50x)")
    print(f"one-off cache fill: {fill:.3f} s; speed-up over {args.epochs} epochs including it: "
          f"{sum(ref_times) / (sum(cache_times) + fill):.1f}x")
    print(f"training accuracy after {args.epochs} epochs: reference {acc_ref:.4f}, cached {acc_c:.4f}; "
          f"largest head-weight difference {diff:.2e}")


if __name__ == "__main__":
    main()
