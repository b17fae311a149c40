"""`dfx predict` gives the notebooks' answer: every model of the smoke run (complete models, plain classifier,
linear probe, the four one-logit detectors and DIF) on test-split images as PNG and JPEG, at their own size and
upscaled with texture to 4x and 8x the input size, against notebooks 05/06's path on the same folder
(`generalization.evaluate_wild`), to 1e-5."""

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dfxlib
from dfxlib.data.decode import load_rgb
from dfxlib.data.index import FAMILY_FOLDERS
from dfxlib.evaluation import generalization as gz
from dfxlib.predict import inference, served
from dfxlib.workflow.cli import main

TOL = 1e-5


@pytest.fixture(scope="module")
def run(smoke_run, tmp_path_factory):
    """The smoke run, as a copy (hard links; the appendable pixel stores copied): the notebooks' path below
    writes feature caches, which the plan test reads in the shared smoke run."""
    copy = tmp_path_factory.mktemp("parity_run") / "run"
    shutil.copytree(smoke_run, copy, copy_function=lambda a, b: (shutil.copy2 if "pixels" in Path(a).parts
                                                                  else os.link)(a, b))
    return dfxlib.start("smoke", run_dir=str(copy), overrides={"progress": False})


@pytest.fixture(scope="module")
def images(run, tmp_path_factory) -> Path:
    """Two test images per class, each as PNG and JPEG, at its own size and textured at 4x and 8x the input
    size (larger than twice the input: a reduced decode would read other pixels), in the paper's layout."""
    root = tmp_path_factory.mktemp("parity")
    index = run.index()
    test = run.split(index).rows("test").groupby("family").head(2)
    folders = {family: name for name, family in FAMILY_FOLDERS.items()}
    rng = np.random.default_rng(0)
    size = run.config.input_size
    for r in test.itertuples():
        img = load_rgb(index.abspath(r.path))
        for factor in (0, 4, 8):
            big = img if not factor else img.resize((size * factor, size * factor + 8), Image.Resampling.BICUBIC)
            a = np.asarray(big).astype(np.int16) + (rng.integers(-12, 13, np.asarray(big).shape) if factor else 0)
            out = root / folders[r.family] / f"{r.generator}_x{factor}"
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(out / f"{Path(r.path).stem}.png")
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(out / f"{Path(r.path).stem}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def notebooks(run, images):
    """Per served name, the notebooks' per-image p_fake and class probabilities on `images`."""
    rows = served.notebook_detectors(run)
    per, bad = gz.evaluate_wild(run, images, list(rows.values()), reencode=0)
    assert bad.empty
    out = {}
    for name, det in rows.items():
        part = per[(per["group"] == det.group) & (per["model"] == det.name)]
        out[name] = part.assign(path=[str(images / p) for p in part["path"]]).set_index("path")
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_model_predicts_what_the_notebooks_compute(smoke_run, images, notebooks, tmp_path):
    out = tmp_path / "all.csv"
    assert main(["predict", str(images), "--model", str(smoke_run), "--detector", "all", "--out", str(out),
                 "--device", "cpu"]) == 0
    got = read_csv(out)
    assert len(got) == 3 * 2 * 3 * 2 and not any(r["error"] for r in got)  # classes x images x sizes x formats
    assert set(notebooks) == {c[:-len(".p_fake")] for c in got[0] if c.endswith(".p_fake")}
    assert {"efficientnet_lite0/unbalanced", "efficientnet_lite0/siamese", "ssp", "dif"} <= set(notebooks)
    for name, ref in notebooks.items():
        p = np.array([float(r[f"{name}.p_fake"]) for r in got])
        want = ref.loc[[r["path"] for r in got], "p_fake"].to_numpy()
        assert np.abs(p - want).max() < TOL, name
        said_fake = [r[f"{name}.predicted"] != "real" for r in got]
        assert said_fake == list(ref.loc[[r["path"] for r in got], "pred_fake"] == 1), name


@pytest.mark.parametrize("detector", ["deepfeaturex", "plain", "probe"])
def test_a_three_class_model_gives_the_notebooks_class_probabilities(smoke_run, images, notebooks, detector):
    (model,) = served.load_models(smoke_run, detector, device="cpu")
    ref = notebooks[model.name]
    rows = list(inference.predict_paths(model, [str(images)], batch_size=5))
    for c in ("dm", "gan", "real"):
        got = np.array([r[f"p_{c}"] for r in rows])
        assert np.abs(got - ref.loc[[r["path"] for r in rows], f"p_{c}"].to_numpy()).max() < TOL, (detector, c)


def test_the_parity_images_tell_a_reduced_decode_apart(smoke_run, images):
    """The checks above can fail: the decode `dfx predict` used before (a JPEG decoded at a reduced scale, then
    resized) moves the models' probabilities on these textured large JPEGs far beyond the tolerance."""
    files = sorted(str(p) for p in images.rglob("*_x8/*.jpg"))
    shifts = {}
    for model in served.load_models(smoke_run, "all", device="cpu"):
        if model.name in ("ssp", "dif"):  # they read native pixels: no resize to reduce
            continue
        full = {r["path"]: r["p_fake"] for r in inference.predict_paths(model, files)}
        reduced = []
        for f in files:
            with Image.open(f) as img:
                img.draft("RGB", (2 * model.input_size, 2 * model.input_size))
                reduced.append(model.prepare(img.convert("RGB")))
        with torch.no_grad():
            p = 1 - model.forward(torch.stack(reduced))[:, 2].double().numpy()
        shifts[model.name] = float(np.abs(p - np.array([full[f] for f in files])).max())
    assert max(shifts.values()) > 100 * TOL, shifts


def test_one_detector_and_every_detector_from_the_command_line(smoke_run, images, tmp_path, capsys):
    """`--detector NAME`: dfx predict's columns, a binary detector's decision fake or real and no class
    probabilities; `--detector all`: an error row for an unreadable file, the others predicted; `--explain`
    reads a complete model only, refused in one line for a detector."""
    out = tmp_path / "ssp.csv"
    assert main(["predict", str(images), "--model", str(smoke_run), "--detector", "ssp", "--out", str(out)]) == 0
    rows = read_csv(out)
    assert list(rows[0]) == inference.COLUMNS and len(rows) == 36
    assert {r["predicted"] for r in rows} <= {"fake", "real"}
    assert {r["p_dm"] + r["p_gan"] + r["p_real"] for r in rows} == {""}
    assert all((float(r["p_fake"]) > 0.5) == (r["predicted"] == "fake") for r in rows)
    bad = tmp_path / "photos"
    bad.mkdir()
    (bad / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    Image.new("RGB", (300, 200), (20, 120, 30)).save(bad / "ok.png")
    out = tmp_path / "all.csv"
    assert main(["predict", str(bad), "--model", str(smoke_run), "--detector", "all", "--out", str(out)]) == 0
    cut, ok = sorted(read_csv(out), key=lambda r: r["path"])
    assert cut["error"] and all(v == "" for k, v in cut.items() if "." in k and k != "path")
    assert not ok["error"] and all(ok[k] != "" for k in ok if k.endswith(".p_fake"))
    capsys.readouterr()
    assert main(["predict", str(bad), "--model", str(smoke_run), "--detector", "dif", "--explain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--detector deepfeaturex" in err[0]


def test_a_detector_of_another_backbone_is_refused_by_name(smoke_run, tmp_path):
    """The same refusals as the complete model's: a checkpoint whose metadata names another network is refused
    with the field and both values, before any row is written."""
    import json

    from safetensors.torch import load_file, save_file

    from dfxlib.models.train import CheckpointMismatch, read_meta
    from dfxlib.run import Checkpoints

    copy = tmp_path / "run"
    shutil.copytree(Checkpoints.of(smoke_run).detector("x").parent, Checkpoints.of(copy).detector("x").parent)
    shutil.copy(smoke_run / "config.json", copy / "config.json")
    path = Checkpoints.of(copy).detector("wang2020") / "best.safetensors"
    meta = {**read_meta(path), "backbone": "resnet50"}
    save_file(load_file(str(path)), str(path), metadata={"dfx": json.dumps(meta)})
    with pytest.raises(CheckpointMismatch, match="backbone: checkpoint has 'resnet50'"):
        served.load_models(copy, "wang2020", device="cpu")
