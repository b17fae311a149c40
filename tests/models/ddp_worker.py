"""Run by tests/test_distributed.py under `torchrun` (or alone): `train.fit` of a small model without batch norm
on seeded batches, for each KIND its final weights saved per rank as OUT/KIND/rank<r>.safetensors. KIND
"classifier" (cross entropy, one forward per step) or "siamese" (dfx's Siamese step: two forwards of one shared
net per step, contrastive loss).

    torchrun --standalone --nproc_per_node=2 tests/models/ddp_worker.py OUT BATCH KIND...
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from dfxlib.models import distributed  # noqa: E402
from dfxlib.models.basemodels import siamese_step  # noqa: E402
from dfxlib.models.train import classifier_step, fit  # noqa: E402


def train(out: Path, batch: int, kind: str, dist: distributed.Dist) -> None:
    """Train the toy model with `kind`'s step; write its weights and (world, best epoch, best loss) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 8, generator=g), torch.randint(0, 3, (96,), generator=g)
    x2, same = torch.randn(96, 8, generator=g), torch.randint(0, 2, (96,), generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    step = classifier_step() if kind == "classifier" else siamese_step(2.0)

    def rows(idx):
        return (x[idx], y[idx]) if kind == "classifier" else (x[idx], x2[idx], same[idx])

    def train_batches(epoch: int):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, 64, batch):
            yield rows(order[i:i + batch])
    result = fit(model, step, train_batches, lambda: [rows(torch.arange(64, 96))], out / "model",
                 {"backbone": "toy"}, epochs=3, lr=1e-2, weight_decay=0.0, seed=0, progress=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{dist.rank}.safetensors"))
    (out / f"rank{dist.rank}.txt").write_text(f"{dist.world} {result.best_epoch} {result.best_val_loss!r}")


def main() -> None:
    dist = distributed.setup()
    for kind in sys.argv[3:]:
        train(Path(sys.argv[1]) / kind, int(sys.argv[2]), kind, dist)


if __name__ == "__main__":
    main()
