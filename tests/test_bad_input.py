import numpy as np
import pytest

from dfxlib.data.audit import audit
from dfxlib.data.decode import ImageError, load_rgb
from dfxlib.data.index import build_index


@pytest.mark.parametrize("check", ["full", "header"])
def test_every_bad_file_is_listed_with_a_reason(bad_root, check):
    root, kinds = bad_root
    idx = build_index(root, check=check, max_pixels=10_000_000, progress=False)
    t = idx.table.set_index("path")
    assert set(t.index) == set(kinds)  # indexing went on past every bad file
    expect_error = {"zero-byte": "empty file", "non-image": "not an image", "bomb": "decompression bomb",
                    "unexpected": "unexpected location", "truncated": "truncated"}
    for rel, kind in kinds.items():
        err = t.loc[rel, "error"]
        if kind in expect_error:
            assert expect_error[kind] in err, (rel, err)
        else:
            assert err == "", (rel, err)
    notes = {"cmyk": "CMYK", "16-bit": "16-bit", "palette": "palette", "rgba": "alpha", "grayscale": "grayscale",
             "animated": "animated"}
    for rel, kind in kinds.items():
        if kind in notes:
            assert notes[kind] in t.loc[rel, "note"], (rel, t.loc[rel, "note"])


def test_audit_lists_bad_and_converted_files(bad_root):
    root, kinds = bad_root
    result = audit(build_index(root, max_pixels=10_000_000, progress=False))
    assert set(result.unusable["path"]) == {r for r, k in kinds.items()
                                            if k in ("zero-byte", "non-image", "bomb", "unexpected", "truncated")}
    assert {"real/src/cmyk.jpg", "real/src/gray16.png", "gan_generated/g1/animated.gif"} <= set(
        result.converted["path"])
    assert any("cannot be used" in w and "zero.png" in w for w in result.warnings)


def test_load_rgb_converts_every_readable_mode(bad_root):
    root, kinds = bad_root
    for rel, kind in kinds.items():
        if kind in ("cmyk", "16-bit", "palette", "rgba", "grayscale", "animated", "ok"):
            img = load_rgb(root / rel)
            assert img.mode == "RGB" and img.size == (24, 24), rel
    g16 = np.asarray(load_rgb(root / "real/src/gray16.png"))[..., 0]
    assert g16.max() > 200 and g16.min() == 0  # 16-bit values scaled, not clipped to white


@pytest.mark.parametrize("rel, reason", [("real/src/zero.png", "empty file"), ("real/src/text.png", "not an image"),
                                         ("real/src/truncated.png", "truncated"),
                                         ("gan_generated/g1/bomb.png", "decompression bomb")])
def test_load_rgb_errors_name_the_file(bad_root, rel, reason):
    root, _ = bad_root
    with pytest.raises(ImageError) as exc:
        load_rgb(root / rel, max_pixels=10_000_000)
    assert str(root / rel) in str(exc.value) and reason in str(exc.value)


# ---------------------------------------------------------------------------------------- special files
@pytest.fixture()
def special_root(bad_root):
    """The bad corpus plus what a filesystem can hold besides files: a FIFO and a link to /dev/zero named
    like images (reading either used to hang or fill memory)."""
    import os

    root, kinds = bad_root
    os.mkfifo(root / "real" / "src" / "fifo.png")
    os.symlink("/dev/zero", root / "real" / "src" / "zero_device.png")
    return root, {**kinds, "real/src/fifo.png": "fifo", "real/src/zero_device.png": "device"}


def test_special_files_are_refused_without_reading_them(special_root):
    import concurrent.futures

    root, kinds = special_root
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a hang fails the test instead of blocking it
        idx = pool.submit(build_index, root, max_pixels=10_000_000, progress=False).result(timeout=60)
    t = idx.table.set_index("path")
    assert "FIFO" in t.loc["real/src/fifo.png", "error"]
    assert "character device" in t.loc["real/src/zero_device.png", "error"]
    assert t.loc["real/src/ok.png", "error"] == ""  # the rest of the folder is indexed as before
    for rel, reason in (("real/src/fifo.png", "FIFO"), ("real/src/zero_device.png", "character device")):
        with pytest.raises(ImageError, match=reason) as exc:
            load_rgb(root / rel)
        assert str(root / rel) in str(exc.value)
    with pytest.raises(ImageError, match="character device"):
        load_rgb("/dev/zero")


def test_symlink_loops_and_dangling_links_are_named(bad_root):
    import os

    root, _ = bad_root
    os.symlink("loop_b.png", root / "real" / "src" / "loop_a.png")
    os.symlink("loop_a.png", root / "real" / "src" / "loop_b.png")
    os.symlink("gone.png", root / "real" / "src" / "dangling.png")
    t = build_index(root, max_pixels=10_000_000, progress=False).table.set_index("path")
    assert "Too many levels of symbolic links" in t.loc["real/src/loop_a.png", "error"]
    assert "No such file or directory" in t.loc["real/src/dangling.png", "error"]
    with pytest.raises(ImageError, match="Too many levels of symbolic links"):
        load_rgb(root / "real" / "src" / "loop_a.png")  # predict says the same


def test_a_16_bit_colour_png_gets_a_note(tmp_path):
    import struct
    import zlib

    from dfxlib.data.decode import inspect_file

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    w = h = 4
    raw = b"".join(b"\x00" + b"\x12\x34\x56\x78\x9a\xbc" * w for _ in range(h))  # 16 bits per channel
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "deep.png").write_bytes(png)
    info = inspect_file(tmp_path / "deep.png")
    assert info.error == "" and "16-bit colour PNG read as 8-bit" in info.note
    assert load_rgb(tmp_path / "deep.png").getpixel((0, 0)) == (0x12, 0x56, 0x9a)  # the high bytes


def test_max_pixels_is_dfx_limit_not_pillows(tmp_path):
    """A header declaring 20,000 x 10,000 pixels (past Pillow's own hard limit of 178,956,970): dfx's
    `max_pixels` decides, in dfx's words, both ways."""
    import struct
    import zlib

    from dfxlib.data.decode import inspect_file

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20_000, 10_000, 8, 2, 0, 0, 0))
           + chunk(b"IEND", b""))
    (tmp_path / "wide.png").write_bytes(png)
    info = inspect_file(tmp_path / "wide.png", check="header")
    assert info.error == "decompression bomb refused: 20000x10000 = 200000000 pixels > max_pixels=89478485"
    info = inspect_file(tmp_path / "wide.png", check="header", max_pixels=300_000_000)
    assert (info.width, info.height, info.error) == (20_000, 10_000, "")


def test_a_file_over_the_byte_cap_is_refused(tmp_path):
    from dfxlib.data.decode import read_file

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * 5000)
    assert len(read_file(big, cap=10_000)) == 5004
    with pytest.raises(ImageError, match=r"file too large \(5004 bytes > 1000\)"):
        read_file(big, cap=1000)


# ------------------------------------------------------------------------------------------- run folders
def test_run_folders_that_are_not_dfx_runs_are_refused(tmp_path, monkeypatch):
    from pathlib import Path

    import dfxlib
    from dfxlib.config import ConfigError, project_root

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for where, says in (("/", "filesystem root"), (str(tmp_path / "home"), "home folder"),
                        (str(project_root()), "source tree"), (str(project_root() / "notebooks"), "source tree"),
                        (str(project_root() / "runs"), "source tree")):
        with pytest.raises(ConfigError, match=says):
            dfxlib.start("smoke", run_dir=where)
    other = tmp_path / "somebody_elses"
    other.mkdir()
    (other / "config.json").write_text('{"precious": true}')
    with pytest.raises(ConfigError, match="not empty and dfx did not write it"):
        dfxlib.start("smoke", run_dir=str(other))
    assert (other / "config.json").read_text() == '{"precious": true}' and len(list(other.iterdir())) == 1
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "new"))  # a new folder becomes dfx's, and stays so
    assert (run.dir / ".dfx-run").is_file()
    assert dfxlib.start("smoke", run_dir=str(tmp_path / "new")).dir == run.dir
    with pytest.raises(ConfigError, match="data_root=.*no such file"):
        dfxlib.start("smoke", run_dir=str(tmp_path / "typo"), data_root=str(tmp_path / "nowhere"))
    assert not (tmp_path / "typo").exists()  # nothing created for a bad data_root
    assert Path(project_root() / "notebooks" / "01_dataset_audit.ipynb").read_text().count('"outputs": []') > 0


@pytest.mark.parametrize("umask, mode", [(0o022, "0o644"), (0o077, "0o600")])
def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path, umask, mode):
    """Tables, weights and feature caches get the mode `open()` would give them (#32 item 6: every
    best.safetensors and feature shard was 0600, unreadable to the group on a shared cluster folder)."""
    import subprocess
    import sys

    code = (f"import os, stat; os.umask({umask}); from pathlib import Path; import torch;"
            "from dfxlib.evaluation.tables import atomic_write_text; from dfxlib.models.train import save_weights;"
            "from dfxlib.evaluation.tables import atomic_write; from safetensors.torch import save_file;"
            f"d = Path({str(tmp_path)!r}) / oct({umask}); d.mkdir();"
            "atomic_write_text(d / 't.csv', 'a\\n'); save_weights(torch.nn.Linear(2, 2), d / 'best.safetensors', {});"
            "atomic_write(d / 'f.safetensors', lambda tmp: save_file({'x': torch.zeros(2)}, tmp));"
            "print(sorted({oct(stat.S_IMODE(p.stat().st_mode)) for p in d.iterdir()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == repr([mode])  # as any file written with open() would be: the group reads a shared run


def test_a_16_bit_image_converts_in_strips_to_the_same_values(tmp_path, monkeypatch):
    """#32 item 7: 16-bit images were converted through a full-size float64 copy (two 9000-pixel PNGs peaked at
    2.9 GB; benchmarks/bench_predict_memory.py prints the figure). In strips, the values are those of the
    whole-image formula: x / 257, rounded, clipped."""
    from PIL import Image

    from dfxlib.data import decode

    monkeypatch.setattr(decode, "STRIP_ROWS", 7)  # several strips, the last one short
    values = np.random.default_rng(3).integers(0, 65536, (50, 61), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    got = np.asarray(decode.load_rgb(tmp_path / "g16.png"))
    expect = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L").convert("RGB")
    assert got.shape[:2] == (expect.height, expect.width) and np.array_equal(got, np.asarray(expect))
