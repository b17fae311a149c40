"""Run by tests/test_distributed.py under `torchrun` (or alone): `train.fit` of a small model without batch norm
on seeded batches, its final weights saved per rank as rank<r>.safetensors in OUT.

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py OUT BATCH
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dfxlib import distributed  # noqa: E402
from dfxlib.train import classifier_step, fit  # noqa: E402


def main() -> None:
    out, batch = Path(sys.argv[1]), int(sys.argv[2])
    dist = distributed.setup()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 8, generator=g), torch.randint(0, 3, (96,), generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def train_batches(epoch: int):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, 64, batch):
            yield x[order[i:i + batch]], y[order[i:i + batch]]
    result = fit(model, classifier_step(), train_batches, lambda: [(x[64:], y[64:])], out / "model",
                 {"backbone": "toy"}, epochs=3, lr=1e-2, weight_decay=0.0, seed=0, progress=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{dist.rank}.safetensors"))
    (out / f"rank{dist.rank}.txt").write_text(f"{dist.world} {result.best_epoch} {result.best_val_loss!r}")


if __name__ == "__main__":
    main()
