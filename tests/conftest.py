"""Shared fixtures: a tiny generated dataset and a corpus of bad files."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fixture import empty_slurm_queue, make_fixture
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_WILD = REPO.parent / "shared" / "wild"


@pytest.fixture(scope="session", autouse=True)
def dfx_cache(tmp_path_factory) -> Path:
    """The suite's own per-user cache (converted weights, the MiniDFX worlds runs share), so that no test reads or
    fills the user's ~/.cache/dfx; $DFX_CACHE, when set, is kept (to reuse one between sessions)."""
    os.environ.setdefault("DFX_CACHE", str(tmp_path_factory.mktemp("dfx-cache")))
    return Path(os.environ["DFX_CACHE"])


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """Every notebook executed once on the smoke profile (shared by the notebook and JupyterLab tests).
    $DFX_TEST_SMOKE_RUN names a finished smoke run to reuse instead, when iterating on these tests."""
    from dfxlib.workflow.notebooks import run_notebooks

    if os.environ.get("DFX_TEST_SMOKE_RUN"):
        return Path(os.environ["DFX_TEST_SMOKE_RUN"])
    run_dir = tmp_path_factory.mktemp("smoke_run")
    run_notebooks("smoke", {"run_dir": str(run_dir)}, log=lambda *_: None)
    return run_dir


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory) -> Path:
    """A clean dataset in the paper layout: 6 generators x 10 PNGs of 32 px."""
    return make_fixture(tmp_path_factory.mktemp("fixture"), per_generator=10, size=32, seed=1)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge 1-bit image (tiny file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    raw = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def make_bad_corpus(root: Path) -> dict[str, str]:
    """Write one file per kind of bad input under a paper-layout `root`; returns {relative path: kind}."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    files: dict[str, bytes] = {}
    good = _png_bytes(rgb)
    files["real/src/ok.png"] = good
    files["real/src/truncated.png"] = good[: len(good) // 2]
    files["real/src/zero.png"] = b""
    files["real/src/text.png"] = b"this is not an image\n" * 10
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, format="JPEG")
    files["real/src/cmyk.jpg"] = buf.getvalue()
    files["real/src/gray16.png"] = _png_bytes(Image.fromarray((np.arange(24 * 24).reshape(24, 24) * 100)
                                                              .astype(np.uint16)))
    files["real/src/palette.png"] = _png_bytes(rgb.convert("P"))
    files["real/src/rgba.png"] = _png_bytes(rgb.convert("RGBA"))
    files["real/src/gray.png"] = _png_bytes(rgb.convert("L"))
    buf = io.BytesIO()
    rgb.save(buf, format="GIF", save_all=True, append_images=[rgb.rotate(90), rgb.rotate(180)])
    files["gan_generated/g1/animated.gif"] = buf.getvalue()
    files["gan_generated/g1/bomb.png"] = _bomb_png(20_000, 20_000)
    files["gan_generated/stray.png"] = good  # not in an architecture folder
    files["dm_generated/d1/ok.png"] = good
    kinds = {"real/src/ok.png": "ok", "real/src/truncated.png": "truncated", "real/src/zero.png": "zero-byte",
             "real/src/text.png": "non-image", "real/src/cmyk.jpg": "cmyk", "real/src/gray16.png": "16-bit",
             "real/src/palette.png": "palette", "real/src/rgba.png": "rgba", "real/src/gray.png": "grayscale",
             "gan_generated/g1/animated.gif": "animated", "gan_generated/g1/bomb.png": "bomb",
             "gan_generated/stray.png": "unexpected", "dm_generated/d1/ok.png": "ok"}
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return kinds


@pytest.fixture()
def bad_root(tmp_path) -> tuple[Path, dict[str, str]]:
    """A paper-layout folder with one file per kind of bad input."""
    root = tmp_path / "bad"
    return root, make_bad_corpus(root)


@pytest.fixture(scope="session")
def _slurm_daemons(tmp_path_factory):
    """A one-node Slurm cluster on the loopback address (Debian's slurmctld, slurmd and munge; started as root,
    stopped at the end), with SLURM_CONF pointing at it; skipped, saying why, where it cannot start."""
    import shutil
    import subprocess
    import time

    import psutil

    missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue") if not shutil.which(b)]
    if missing:
        pytest.skip(f"Slurm is not installed here ({', '.join(missing)} not found); .ci/run installs slurmctld, "
                    "slurmd and munge with apt")
    if os.geteuid() != 0:
        pytest.skip("starting a one-node Slurm cluster needs root (its daemons run as root)")
    scratch = tmp_path_factory.mktemp("slurm")
    for d in ("state", "spool"):
        (scratch / d).mkdir()
    memory = int(psutil.virtual_memory().total / 2**20 * 0.8)
    conf = scratch / "dfx-test-slurm.conf"  # the name that marks this fixture's daemons
    subprocess.run(["pkill", "-f", "dfx-test-slurm.conf"], capture_output=True)  # left by an interrupted session
    conf.write_text((Path(__file__).with_name("slurm-one-node.conf").read_text().replace("SCRATCH", str(scratch))
                     .replace("CPUS", str(os.cpu_count() or 1)).replace("MEMORY", str(memory))))
    if not Path("/etc/munge/munge.key").exists():
        subprocess.run(["mungekey", "-c"], check=True)
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    subprocess.run(["slurmctld", "-c", "-f", str(conf)], check=True)
    subprocess.run(["slurmd", "-N", "localhost", "-f", str(conf)], check=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.split()
        if state and state[0] in ("idle", "mix", "alloc"):
            break
        time.sleep(1)
    else:
        pytest.fail(f"the one-node Slurm cluster did not come up ({state}); logs in {scratch}")
    yield conf
    subprocess.run(["scancel", "--user=root"], capture_output=True)
    subprocess.run(["pkill", "-f", "dfx-test-slurm.conf"], capture_output=True)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


@pytest.fixture
def slurm_cluster(_slurm_daemons):
    """The one-node Slurm cluster (its configuration file), its queue emptied after the test: jobs a failing
    test leaves behind would hold the next test's jobs back."""
    yield _slurm_daemons
    empty_slurm_queue()
