"""dfx predict: loading checkpoints safely, streaming prediction with error rows, contributions, Grad-CAM."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixture import make_run
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from dfxlib.data.index import CLASSES
from dfxlib.models import features, networks
from dfxlib.models.backbones import create_backbone, normalization_meta
from dfxlib.models.train import CheckpointMismatch, save_weights
from dfxlib.predict import complete, files, gradcam, inference
from dfxlib.run import Checkpoints
from dfxlib.workflow.cli import main

BACKBONE = "test_resnet"  # make_run's default


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("predict_run"))


@pytest.fixture(scope="module")
def pred(run_dir):
    return complete.load_predictor(run_dir, device="cpu")


def test_rows_for_files_folders_globs_and_bad_input(pred, fixture_root, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    inputs = [str(fixture_root / "real"), str(fixture_root / "gan_generated" / "gan_a" / "gan_a_00000.png"),
              str(fixture_root / "dm_generated" / "*" / "*_0000[01].png"), str(bad), str(tmp_path / "missing.png")]
    rows = list(inference.predict_paths(pred, inputs, batch_size=7))
    assert len(rows) == 20 + 1 + 4 + 2
    assert rows[-2]["path"] == str(bad) and "unreadable header" in rows[-2]["error"]
    assert "cannot read file" in rows[-1]["error"] and rows[-1]["p_fake"] == ""
    good = [r for r in rows if not r["error"]]
    assert len(good) == 25
    for r in good:
        p = np.array([r["p_dm"], r["p_gan"], r["p_real"]])
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert r["predicted"] == CLASSES[int(p.argmax())] and r["p_fake"] == pytest.approx(1 - r["p_real"])


def test_a_folder_reports_every_file_but_its_metadata(pred, tmp_path):
    folder = tmp_path / "mixed"
    (folder / ".hidden").mkdir(parents=True)
    Image.new("RGB", (20, 20), (10, 200, 30)).save(folder / "a.png")
    (folder / "b.avif").write_bytes(b"\x00\x00\x00\x1cftypavif" + b"\x00" * 40)  # a format Pillow may not read
    (folder / "MANIFEST.csv").write_text("path,family\n")
    (folder / ".hidden" / "c.png").write_bytes(b"")
    rows = list(inference.predict_paths(pred, [str(folder)]))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.avif"]  # not skipped in silence
    assert rows[0]["error"] == "" and rows[1]["error"]


def test_huge_images_are_read_whole_and_tiny_ones_get_a_note(pred, tmp_path):
    folder = tmp_path / "sizes"
    folder.mkdir()
    Image.new("RGB", (3000, 2000), (200, 10, 10)).save(folder / "a_huge.png")  # 3,000 px: read, not refused
    Image.new("RGB", (3000, 2000), (200, 10, 10)).save(folder / "b_huge.jpg", quality=95)
    Image.new("RGB", (1, 1), (1, 2, 3)).save(folder / "c_tiny.png")
    Image.new("RGB", (pred.input_size, pred.input_size)).save(folder / "d_exact.png")
    rows = list(inference.predict_paths(pred, [str(folder)]))
    assert [r["error"] for r in rows] == [""] * 4
    assert [r["note"] for r in rows] == ["", "", f"upscaled from 1x1 to {pred.input_size}x{pred.input_size}", ""]
    # the whole image, resized as the notebooks resize it (no reduced decode)
    x = pred.transform(Image.open(folder / "b_huge.jpg").convert("RGB"))[None]
    with torch.no_grad():
        ref = torch.softmax(pred.model(x), 1)[0, 1].item()
    assert rows[1]["p_gan"] == pytest.approx(ref, abs=1e-6)


def test_same_numbers_as_the_complete_model_and_any_batch_size(pred, fixture_root):
    files = sorted(str(p) for p in (fixture_root / "gan_generated").rglob("*.png"))[:9]
    a = [r["p_gan"] for r in inference.predict_paths(pred, files, batch_size=1)]
    b = [r["p_gan"] for r in inference.predict_paths(pred, files, batch_size=4, workers=2)]
    x = torch.stack([pred.transform(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        ref = torch.softmax(pred.model(x), 1)[:, 1].numpy()
    assert np.allclose(a, ref, atol=1e-5) and np.allclose(b, ref, atol=1e-5)


def test_prediction_streams(pred, fixture_root, monkeypatch):
    decoded = []
    real_decoded = inference.decoded
    monkeypatch.setattr(inference, "decoded",
                        lambda data, name, *a: decoded.append(name) or real_decoded(data, name, *a))
    rows = inference.predict_paths(pred, [str(fixture_root)], batch_size=4, workers=1)
    next(rows)
    assert 4 <= len(decoded) <= 8  # the first batch and at most one ahead, not the 60 files


def test_contributions_are_occlusion_drops(pred, fixture_root):
    files = sorted(str(p) for p in (fixture_root / "dm_generated").rglob("*.png"))[:3]
    rows = list(inference.predict_paths(pred, files, explain=True))
    x = torch.stack([pred.transform(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        feats = pred.model.features(x)
        probs = torch.softmax(pred.model.head(feats), 1)
        for k, c in enumerate(CLASSES):
            masked = feats.clone()
            masked[:, k] = 0
            p = torch.softmax(pred.model.head(masked), 1)
            for i, r in enumerate(rows):
                cls = CLASSES.index(r["predicted"])
                assert r[f"contrib_{c}"] == pytest.approx(float(probs[i, cls] - p[i, cls]), abs=1e-5)
    for r in rows:
        assert r["driver"] == max(CLASSES, key=lambda c: r[f"contrib_{c}"])


def test_grad_cam_finds_the_region_that_drives_the_class():
    class Toy(nn.Module):  # class 1's logit is the mean of channel 0 (red); class 0 reads nothing
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1, bias=False)
            with torch.no_grad():
                self.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])[:, :, None, None])

        def forward(self, x):
            a = self.conv(x)
            return torch.stack([torch.zeros(len(x)), a[:, 0].mean((1, 2))], 1)
    x = torch.zeros(1, 3, 8, 8)
    x[0, 0, :, :4] = 1.0  # red on the left
    x[0, 2, :, 4:] = 1.0  # blue on the right
    toy = Toy()
    maps, cls = gradcam.grad_cam(toy, [(toy.conv, 0)], x, target=1)
    m = maps[0][0]
    assert cls.tolist() == [1] and m.shape == (8, 8) and m.max() == pytest.approx(1.0)
    assert m[:, :3].min() > 0.9 and m[:, 5:].max() < 0.1


def test_complete_model_cams_name_layers_and_class(pred, fixture_root):
    imgs = [Image.open(p).convert("RGB") for p in sorted((fixture_root / "real").rglob("*.png"))[:2]]
    cams = gradcam.complete_cams(pred.model, features.prepare_batch(imgs, pred.transform), target="gan")
    assert cams["layers"] == {"dm": "layer4", "gan": "layer4", "real": "layer4"}
    assert cams["classes"] == ["gan", "gan"]
    stacked = np.stack([cams["maps"][c] for c in CLASSES])
    assert stacked.shape == (3, 2, 32, 32) and stacked.min() >= 0
    assert np.allclose(stacked.max(axis=(0, 2, 3)), 1.0)  # scaled per image over the three base models
    panel = gradcam.heatmap_panel(imgs[0], cams, 0, "x")
    assert panel.size == (4 * 160, 160 + 28)  # input + three overlays, 32 px maps shown at 160 px


def test_efficientnet_and_vit_cam_layers():
    assert gradcam.cam_layer(create_backbone("test_efficientnet", "none"))[0] == "bn2"
    name, _ = gradcam.cam_layer(create_backbone("test_vit", "none"))
    assert name.startswith("blocks.") and name.endswith(".norm1")


def test_mismatched_and_foreign_checkpoints_are_refused(tmp_path):
    run = make_run(tmp_path / "a")
    base = Checkpoints.of(run).base(BACKBONE, "unbalanced", "gan") / "best.safetensors"
    torch.manual_seed(42)  # retrain one base model after the head was made
    save_weights(networks.BaseClassifier(create_backbone(BACKBONE, "none")), base,
                 {"model": "base", "backbone": BACKBONE, "kind": "unbalanced", "main": "gan", "input_size": 32})
    with pytest.raises(CheckpointMismatch, match="retrained after the head"):
        complete.load_predictor(run, device="cpu")

    run = make_run(tmp_path / "b")
    head = Checkpoints.of(run).head(BACKBONE, "unbalanced") / "best.safetensors"
    save_file({"w": torch.zeros(1)}, str(head), metadata={"dfx": json.dumps({"model": "head", "format": 2})})
    with pytest.raises(CheckpointMismatch, match="format 2 was written by another dfx version"):
        complete.load_predictor(run, device="cpu")

    run = make_run(tmp_path / "c", normalization=[[0.5] * 3, [0.5] * 3])  # trained under other mean/std
    with pytest.raises(CheckpointMismatch, match=r"normalised by mean/std \[\[0.5, 0.5, 0.5\]"):
        complete.load_predictor(run, device="cpu")
    run = make_run(tmp_path / "d", normalization=normalization_meta(BACKBONE))  # the same: accepted
    assert complete.load_predictor(run, device="cpu").backbone == BACKBONE

    evil = tmp_path / "evil.safetensors"
    torch.save({"x": 1}, evil)  # a pickle in disguise: refused, never unpickled
    with pytest.raises(CheckpointMismatch, match="not a dfx safetensors checkpoint"):
        complete.load_predictor(evil, device="cpu")
    with pytest.raises(FileNotFoundError, match="no trained complete model for densenet121"):
        complete.load_predictor(tmp_path / "a", backbone="densenet121")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        complete.load_predictor(tmp_path / "nowhere")


def _rewrite_meta(path: Path, change) -> None:
    """Rewrite a checkpoint's dfx metadata with `change(meta)` (weights kept)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["dfx"])
    change(meta)
    save_file(load_file(str(path)), str(path), metadata={"dfx": json.dumps(meta)})


@pytest.mark.parametrize("change,message", [
    (lambda m: m.pop("bases"), "head metadata field 'bases' is missing"),
    (lambda m: m.pop("backbone"), "head metadata field 'backbone' is missing"),
    (lambda m: m.update(bases="abc"), "field 'bases' is 'abc', not the identities of the 3 base models"),
    (lambda m: m.update(bases=m["bases"][:2]), "field 'bases' is .*not the identities of the 3 base models"),
    (lambda m: m.update(backbone=["x"]), r"field 'backbone' is \['x'\], not a backbone name"),
    (lambda m: m.update(in_channels="3"), "field 'in_channels' is '3', not 3"),
    (lambda m: m.update(kind=None), "unknown base-model kind None"),
])
def test_malformed_head_metadata_is_named_before_any_output(tmp_path, fixture_root, capsys, change, message):
    run = make_run(tmp_path / "run")
    _rewrite_meta(Checkpoints.of(run).head(BACKBONE, "unbalanced") / "best.safetensors", change)
    with pytest.raises(CheckpointMismatch, match=message):
        complete.load_predictor(run, device="cpu")
    out = tmp_path / "kept.csv"
    out.write_text("earlier results\n")
    assert main(["predict", str(fixture_root / "real"), "--model", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "best.safetensors" in err
    assert out.read_text() == "earlier results\n"  # --out not touched before the model loaded


def test_metadata_that_is_not_an_object_and_an_unknown_device_are_one_line(tmp_path, fixture_root, capsys):
    """#32 item 9: head metadata `[1, 2]` (valid JSON, not an object) raised AttributeError; `--device tpu` and
    `cuda:x` raised RuntimeError. Each is now one line naming the file or the setting."""
    from safetensors.torch import load_file

    run = make_run(tmp_path / "run")
    for device in ("tpu", "cuda:x"):
        assert main(["predict", str(fixture_root / "real"), "--model", str(run), "--device", device]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"'{device}' is not a device name" in err, err
    head = Checkpoints.of(run).head(BACKBONE, "unbalanced") / "best.safetensors"
    save_file(load_file(str(head)), str(head), metadata={"dfx": "[1, 2]"})
    assert main(["predict", str(fixture_root / "real"), "--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its dfx metadata is a JSON list, not an object" in err and str(head) in err


def test_a_damaged_base_model_is_not_called_retrained(tmp_path):
    import os

    run = make_run(tmp_path / "run")
    head = Checkpoints.of(run).head(BACKBONE, "unbalanced") / "best.safetensors"
    base = Checkpoints.of(run).base(BACKBONE, "unbalanced", "dm") / "best.safetensors"
    data = bytearray(base.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the weights: the header still reads
    base.write_bytes(bytes(data))
    os.utime(base, (head.stat().st_mtime - 60,) * 2)
    with pytest.raises(CheckpointMismatch, match="not the base model the head .* not newer than the head: damaged"):
        complete.load_predictor(run, device="cpu")
    base.write_bytes(bytes(data[:-20]))  # cut: its header no longer covers the file
    with pytest.raises(CheckpointMismatch, match="dm/best.safetensors: not a dfx safetensors checkpoint, or a damaged"):
        complete.load_predictor(run, device="cpu")


def test_cli_writes_csv_and_heatmaps(run_dir, fixture_root, tmp_path, capsys):
    out = tmp_path / "res.csv"
    heat = tmp_path / "heat"
    files = sorted((fixture_root / "real" / "real_a").glob("*.png"))[:3]
    rc = main(["predict", *map(str, files), str(tmp_path / "gone.png"), "--model", str(run_dir), "--out", str(out),
               "--explain", "--heatmaps", str(heat), "--cam-class", "real"])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [*map(str, files), str(tmp_path / "gone.png")]
    assert set(rows[0]) >= {"p_dm", "p_gan", "p_real", "predicted", "p_fake", "error", "driver", "heatmap"}
    assert rows[-1]["error"] and not rows[-1]["heatmap"]
    assert all(Path(r["heatmap"]).is_file() for r in rows[:3])
    assert "4 images, 1 unreadable" in capsys.readouterr().err
    assert main(["predict", str(files[0]), "--model", str(tmp_path / "none")]) == 2


def test_cli_to_stdout(run_dir, fixture_root, capsys):
    f = next((fixture_root / "real" / "real_b").glob("*.png"))
    assert main(["predict", str(f), "--model", str(run_dir)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and rows[0]["path"] == str(f) and rows[0]["predicted"] in CLASSES


def test_detector_cams_name_the_layer_and_take_the_class():
    from dfxlib import detectors as dt

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    cnn = dt.SimpleCNN(64).eval()
    maps, layer = gradcam.detector_cams(cnn, x, "fake")
    assert layer == "convs.10" and maps.shape == (2, 64, 64) and 0 <= maps.min() and maps.max() <= 1
    wang = dt.BackboneLogit(create_backbone("test_resnet", "none")).eval()
    fake, layer = gradcam.detector_cams(wang, x, "fake")
    real, _ = gradcam.detector_cams(wang, x, "real")
    assert layer == "backbone.layer4" and not np.allclose(fake, real)  # the class changes the map
    assert all(p.grad is None for p in wang.parameters())  # explaining does not touch training state


def test_cli_output_failures_are_one_line_and_keep_whole_rows(run_dir, fixture_root, tmp_path, capsys,
                                                              monkeypatch):
    files = [str(p) for p in sorted((fixture_root / "real" / "real_a").glob("*.png"))[:4]]
    # an unwritable output: one line naming it, no traceback
    assert main(["predict", files[0], "--model", str(run_dir), "--out", "/sys/dfx.csv"]) == 1
    err = capsys.readouterr().err
    assert "dfx predict: /sys/dfx.csv: Permission denied" in err and "Traceback" not in err
    # a full disk (/dev/full): says how many rows were complete
    assert main(["predict", files[0], "--model", str(run_dir), "--out", "/dev/full"]) == 1
    assert "No space left on device; /dev/full holds 0 complete rows" in capsys.readouterr().err
    # Ctrl-C after two rows: the CSV holds the header and two whole rows, and says so
    real = inference.predict_paths

    def interrupted(*args, **kwargs):
        for i, row in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield row
    monkeypatch.setattr(inference, "predict_paths", interrupted)
    out = tmp_path / "part.csv"
    assert main(["predict", *files, "--model", str(run_dir), "--out", str(out)]) == 130
    assert f"dfx predict: interrupted; {out} holds 2 complete rows" in capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == files[:2] and all(r["p_real"] for r in rows)


def test_heatmap_names_carry_no_control_characters(run_dir, fixture_root, tmp_path):
    import shutil

    odd = tmp_path / "odd\nname\a.png"
    shutil.copy(next((fixture_root / "real" / "real_a").glob("*.png")), odd)
    out = tmp_path / "r.csv"
    assert main(["predict", str(odd), "--model", str(run_dir), "--out", str(out), "--heatmaps",
                 str(tmp_path / "h")]) == 0
    (heat,) = (tmp_path / "h").iterdir()
    assert heat.name == "000000_odd_name_.png"
    assert list(csv.DictReader(out.open()))[0]["heatmap"] == str(heat)


def test_cli_fails_when_no_input_could_be_read(run_dir, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.png"), "--model", str(run_dir)]) == 1
    assert "1 images, 1 unreadable" in capsys.readouterr().err


def test_cli_into_a_closed_pipe_exits_quietly(run_dir, fixture_root):
    import subprocess
    import sys

    files = [str(p) for p in sorted((fixture_root / "real").rglob("*.png"))]
    proc = subprocess.Popen([sys.executable, "-m", "dfxlib.workflow.cli", "predict", *files, "--model", str(run_dir),
                             "--batch-size", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()  # the header, then the reader goes away (as `| head -1` does)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 1
    assert "Traceback" not in err and "output closed early; standard output holds" in err


def test_a_head_saved_before_inputs_were_standardised_is_refused_by_name(tmp_path):
    from dfxlib.models.train import read_meta

    root = make_run(tmp_path / "run")
    head_path = Checkpoints.of(root).head("test_resnet", "unbalanced") / "best.safetensors"
    meta = {k: v for k, v in read_meta(head_path).items() if k not in ("inputs", "format")}
    save_weights(networks.FusionHead(), head_path, meta)  # an old head: raw inputs, no standardisation buffers
    with pytest.raises(CheckpointMismatch, match="inputs: checkpoint has None, expected 'standardised'"):
        complete.load_predictor(root)


def test_predict_never_writes_over_an_input_or_a_file_that_is_not_a_csv(run_dir, fixture_root, tmp_path, capsys):
    """#32 item 2: `dfx predict x.png --out x.png` replaced the image with a CSV. Refused before the model loads,
    the image untouched; a new or existing .csv is written as before."""
    img = tmp_path / "x.png"
    shutil.copy2(next((fixture_root / "real" / "real_a").glob("*.png")), img)
    before = img.read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["predict", str(img), "--model", str(run_dir), "--out", str(img)]) == 2
    assert "one of the images to classify" in capsys.readouterr().err and img.read_bytes() == before
    assert main(["predict", str(img), "--model", str(run_dir), "--out", str(notes)]) == 2
    assert "would be replaced" in capsys.readouterr().err and notes.read_text() == "mine"
    out = tmp_path / "res.csv"
    out.write_text("old results\n")
    assert main(["predict", str(img), "--model", str(run_dir), "--out", str(out)]) == 0
    assert out.read_text().startswith("path,")


def test_a_file_named_like_a_formula_is_a_safe_cell(run_dir, fixture_root, tmp_path, capsys, monkeypatch):
    """#32 item 13: a file named `=HYPERLINK(1).png` lands in the CSV as a text cell a spreadsheet will not run
    (the leading-quote convention); negative numbers are numbers."""
    img = tmp_path / "=HYPERLINK(1).png"
    shutil.copy2(next((fixture_root / "real" / "real_a").glob("*.png")), img)
    monkeypatch.chdir(tmp_path)  # the path cell is the name as given: relative, it starts with "="
    assert main(["predict", "*.png", "--model", str(run_dir), "--explain"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["path"] == "'=HYPERLINK(1).png" and rows[0]["predicted"] in CLASSES
    assert files.spreadsheet_safe("-0.5") == "'-0.5" and files.spreadsheet_safe(-0.5) == -0.5
    assert files.spreadsheet_safe("@x") == "'@x" and files.spreadsheet_safe("plain.png") == "plain.png"


def test_a_recursive_glob_does_not_follow_links_to_folders(tmp_path):
    """#32 item 4: `dfx predict 'gloop/**/*.png'` with two links to `.` wrote no row in 60 s (glob recursed
    through the links); now each image comes out once, and `**` still matches no folder as well as several."""
    root = tmp_path / "gloop"
    (root / "sub" / "deeper").mkdir(parents=True)
    for rel in ("a.png", "sub/b.png", "sub/deeper/c.png", ".hidden.png"):
        (root / rel).write_bytes(b"x")
    (root / "loop1").symlink_to(".")
    (root / "sub" / "loop2").symlink_to("..")
    found = list(files.iter_inputs([f"{root}/**/*.png"]))
    assert found == [f"{root}/a.png", f"{root}/sub/b.png", f"{root}/sub/deeper/c.png"]
    assert list(files.iter_inputs([f"{root}/*.png"])) == [f"{root}/a.png"]


def test_a_disk_that_fills_mid_row_leaves_only_whole_rows(run_dir, fixture_root, tmp_path, capsys, monkeypatch):
    """#32 item 8: a disk that filled during a row left half of it in the CSV, while the message said the file
    "holds 798 complete rows". The third row's write stops half-way here (ENOSPC): the file keeps the header and
    two whole rows, and the message says two."""
    import errno
    import os

    images = [str(p) for p in sorted((fixture_root / "real" / "real_a").glob("*.png"))[:4]]
    real_write, calls = os.write, []

    def filling(fd, data):
        calls.append(len(data))
        if len(calls) == 4:  # header, two rows, then half of the third
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)
    out = tmp_path / "full.csv"
    monkeypatch.setattr(files.os, "write", filling)
    assert main(["predict", *images, "--model", str(run_dir), "--out", str(out)]) == 1
    assert f"No space left on device; {out} holds 2 complete rows" in capsys.readouterr().err
    text = out.read_text()
    assert out.read_bytes().endswith(b"\r\n")  # the last thing in the file is a whole row
    assert [r["path"] for r in csv.DictReader(io.StringIO(text))] == images[:2]


def test_cli_takes_a_head_file_or_folder_as_the_model(run_dir, fixture_root, tmp_path, capsys):
    """`--model` naming the head checkpoint or its folder (not a run folder) predicts as the run folder does."""
    head = Checkpoints.of(run_dir).head(BACKBONE, "unbalanced") / "best.safetensors"
    image = str(sorted((fixture_root / "real").rglob("*.png"))[0])
    got = []
    for model in (run_dir, head, head.parent):
        out = tmp_path / f"{len(got)}.csv"
        assert main(["predict", image, "--model", str(model), "--out", str(out), "--device", "cpu"]) == 0
        got.append(out.read_text())
    assert got[0] == got[1] == got[2] and len(got[0].splitlines()) == 2
