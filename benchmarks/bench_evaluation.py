"""Benchmark: where evaluation time goes in notebooks 04 and 05, with a cold feature cache.

    python benchmarks/bench_evaluation.py [--profile mini] [--run-dir runs/mini] [--backbone test_resnet]
    python benchmarks/bench_evaluation.py --profile smoke --backbone densenet121 --input-size 256 --no-wild

Runs the real evaluation code on the run's data: the robustness path (`evaluation.robustness`, test split,
JPEG QF50 / blur 7 / noise 5 / rotation 45) and the generalization path (`generalization.evaluate_tsets`, the
nine test sets, RAW and JPEG) and, when the folder exists, the wild path (`generalization.evaluate_wild`),
for a DeepFeatureX Net and a DeepFeatureX-SN complete model and a plain
classifier of one backbone (seeded random weights: time does not depend on training). Prints the wall time
of each path and its split into image preparation (decode, perturb, preprocess, collate), backbone forward
passes, fusion-head forward passes and the rest (metrics, bootstrap, cache I/O); target: forward passes
(backbones + head) at least 80% of evaluation time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import dfxlib
from dfxlib.data.index import CLASSES
from dfxlib.evaluation import generalization as gz
from dfxlib.evaluation import scoring as ev
from dfxlib.models import baselines as bl
from dfxlib.models import features, fusion, networks
from dfxlib.models.backbones import create_backbone
from dfxlib.models.train import save_weights


def model(run_dir: Path, backbone: str, name: str, n_classes: int, seed: int) -> networks.BaseModel:
    """A seeded, randomly initialised classifier saved like a trained one (its id names its weights)."""
    torch.manual_seed(seed)
    net = networks.BaseClassifier(create_backbone(backbone, "none"), n_classes=n_classes).eval()
    folder = run_dir / "bench_models" / backbone / name
    save_weights(net, folder / "best.safetensors")
    kind, _, main = name.partition("-")
    return networks.BaseModel(net=net, backbone=backbone, kind=kind, main=main, folder=folder)


class HeadClock:
    """Seconds in the forward passes of some fusion heads, from hooks on each head (the library keeps no head
    timer)."""

    def __init__(self, heads: list[torch.nn.Module]):
        self.seconds, self._t0 = 0.0, 0.0
        for h in heads:
            h.register_forward_pre_hook(self._start)
            h.register_forward_hook(self._stop)

    def _start(self, *_) -> None:
        self._t0 = time.perf_counter()

    def _stop(self, *_) -> None:
        self.seconds += time.perf_counter() - self._t0


def timed(label: str, fn, heads: HeadClock) -> dict:
    """Run `fn` with fresh counters; the wall time and its split."""
    features.TIMES.reset()
    heads.seconds = 0.0
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    t = features.TIMES
    rest = wall - t.prepare - t.forward - heads.seconds
    return {"path": label, "wall_s": round(wall, 2), "images_prepared": t.images,
            "prepare_%": round(100 * t.prepare / wall, 1), "backbone_forward_%": round(100 * t.forward / wall, 1),
            "head_forward_%": round(100 * heads.seconds / wall, 1), "rest_%": round(100 * rest / wall, 1),
            "forward_total_%": round(100 * (t.forward + heads.seconds) / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--run-dir", default="", help="reuse a run folder (its MiniDFX world and split)")
    ap.add_argument("--backbone", default="")
    ap.add_argument("--input-size", type=int, default=0, help="network input side (default: the profile's)")
    ap.add_argument("--fakes", type=int, default=0, help="fakes per generalization set (default: the profile's)")
    ap.add_argument("--no-wild", action="store_true", help="skip the wild path")
    args = ap.parse_args()
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="dfx-bench-eval-"))
    overrides = {"progress": False, **({"input_size": args.input_size} if args.input_size else {}),
                 **({"tset_fakes": args.fakes} if args.fakes else {})}
    run = dfxlib.start(args.profile, run_dir=str(run_dir), overrides=overrides)
    cfg = run.config
    backbone = args.backbone or cfg.backbones[0]
    index = run.index()
    split = run.split(index)
    store = run.images(index)
    stamp = f"{time.time_ns()}"  # new weights every run: the feature cache starts cold
    completes = []
    for i, kind in enumerate(("unbalanced", "siamese")):
        bases = [model(run_dir, backbone, f"{kind}-{c}-{stamp}", 2, 10 * i + k) for k, c in enumerate(CLASSES)]
        torch.manual_seed(i)
        completes.append(fusion.Complete(backbone=backbone, kind=kind, bases=bases, head=networks.FusionHead().eval()))
    plain = model(run_dir, backbone, f"plain-all-{stamp}", len(CLASSES), 99)
    detectors = [bl.plain_detector(run, plain)] + [ev.complete_detector(run, c) for c in completes]
    clock = HeadClock([c.head for c in completes])
    fakes, reals = gz.tset_pools(run, index, split)
    sets = gz.make_tsets(fakes, reals, cfg.tset_fakes, cfg.seed)
    rows = [
        timed("robustness (04): jpeg50, blur7, noise5, rot45",
              lambda: ev.robustness(run, store, split, detectors[1:], ["jpeg50", "blur7", "noise5", "rot45"]), clock),
        timed(f"generalization (05): 9 sets, RAW + JPEG QF{cfg.tset_jpeg}",
              lambda: gz.evaluate_tsets(run, store, sets, detectors, cfg.tset_jpeg), clock),
    ]
    wild = run.wild_root()
    if args.no_wild:
        pass
    elif wild.is_dir():
        rows.append(timed(f"wild (05): {wild.name}, as found + JPEG QF{cfg.wild_reencode}",
                          lambda: gz.evaluate_wild(run, wild, detectors, cfg.wild_reencode), clock))
    else:
        print(f"{wild} is absent: the wild path is not measured")
    print(f"backbone {backbone} ({cfg.input_size} px), {cfg.profile} data, {torch.get_num_threads()} threads; "
          f"7 feature extractors (2 x 3 base models + 1 plain classifier), bootstrap {cfg.bootstrap}")
    print(pd.DataFrame(rows).to_string(index=False))
    print("target: forward_total_% >= 80 (decoding, perturbing and collating must not dominate)")


if __name__ == "__main__":
    main()
