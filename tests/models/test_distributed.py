"""One model on several processes: `torchrun` with gloo on CPU, DistributedDataParallel inside `train.fit`."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from dfxlib.models.distributed import Dist, gpu_index

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_shards_split_a_batch_among_processes():
    x, y = torch.arange(10).view(5, 2), torch.arange(5)
    parts = [Dist(rank=r, world=2).shard((x, y)) for r in (0, 1)]
    assert [p[1].tolist() for p in parts] == [[0, 1, 2], [3, 4]]
    assert torch.equal(Dist().shard(x), x)
    assert Dist(rank=1, world=4).shard((x[:2], y[:2]))[1].tolist() == [0, 1]  # too small to split: kept whole


def test_each_process_takes_its_own_gpu_or_the_one_it_was_given():
    assert [gpu_index(r, 4) for r in range(4)] == [0, 1, 2, 3]  # every process sees the node's four GPUs
    assert [gpu_index(r, 1) for r in range(4)] == [0, 0, 0, 0]  # Slurm bound one GPU to each task
    with pytest.raises(ValueError, match="process 2 of this node sees 2 GPU"):
        gpu_index(2, 2)


def test_two_processes_train_one_model_as_one_process_with_their_batch(tmp_path):
    """After three epochs under torchrun (2 processes, gloo, batches of 16 split 8 + 8) both ranks hold the
    same weights, and they match one process trained on the same batches of 16; only rank 0 wrote the
    checkpoint, without DDP's `module.` prefix. Both steps dfx trains with: a classifier's (one forward) and
    the Siamese base models' (two forwards of the shared network before one backward)."""
    kinds = ("classifier", "siamese")
    ddp, alone = tmp_path / "ddp", tmp_path / "alone"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           str(ddp), "16", *kinds]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    subprocess.run([sys.executable, str(WORKER), str(alone), "16", *kinds], check=True, timeout=300)
    for kind in kinds:
        d, a = ddp / kind, alone / kind
        r0, r1 = load_file(str(d / "rank0.safetensors")), load_file(str(d / "rank1.safetensors"))
        one = load_file(str(a / "rank0.safetensors"))
        for k in one:
            assert torch.equal(r0[k], r1[k]), (kind, k)
            torch.testing.assert_close(r0[k], one[k], rtol=1e-5, atol=1e-6, msg=f"{kind} {k}")
        assert not torch.equal(one["0.weight"], _initial()["0.weight"]), kind  # it trained
        world, best_epoch, _ = (d / "rank0.txt").read_text().split()
        assert (world, best_epoch) == ("2", (a / "rank0.txt").read_text().split()[1]), kind
        best = load_file(str(d / "model" / "best.safetensors"))
        assert set(best) == set(one) and not any(k.startswith("module.") for k in best)
        assert (d / "model" / "finished.json").is_file()


def _initial() -> dict:
    """The toy model's weights before training (the worker's seed)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).state_dict()
