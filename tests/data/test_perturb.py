"""Perturbations: pure, seeded, and what their names say."""

import io

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from dfxlib.data import perturb


@pytest.fixture()
def img():
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((6, 6, 1))).astype(np.uint8)  # 48x48 blocks
    return Image.fromarray(base)


def _err(a, b):
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean())


def test_every_perturbation_is_pure_and_keeps_rgb(img):
    before = np.asarray(img).copy()
    for name, fn in perturb.PERTURBATIONS.items():
        out = fn(img, 0)
        assert out.mode == "RGB", name
        assert np.array_equal(np.asarray(img), before), f"{name} changed its input"
        again = fn(img, 0)
        assert np.array_equal(np.asarray(out), np.asarray(again)), f"{name} is not deterministic"


def test_jpeg_is_444_and_degrades_with_quality(img):
    data = perturb.encode_jpeg(img.convert("RGBA"), 70)  # RGBA input is converted first
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(data))) == 0  # 4:4:4
    errs = [_err(img, perturb.PERTURBATIONS[f"jpeg{q}"](img, 0)) for q in perturb.JPEG_QUALITIES]
    assert errs == sorted(errs) and errs[0] > 0


def test_blur_sigma_rule_and_reference_option(img):
    assert [round(perturb.opencv_sigma(k), 2) for k in (3, 7, 15)] == [0.8, 1.4, 2.6]
    k = perturb.gaussian_kernel(7, 1.4)
    assert len(k) == 7 and k.sum() == pytest.approx(1) and k.argmax() == 3
    flat = Image.new("RGB", (20, 20), (100, 150, 200))
    assert np.array_equal(np.asarray(perturb.gaussian_blur(flat, 15)), np.asarray(flat))
    rule, ref = perturb.PERTURBATIONS["blur3"](img, 0), perturb.PERTURBATIONS["blur3_sigma4"](img, 0)
    assert _err(img, ref) > _err(img, rule) > 0  # sigma 4 blurs a 3x3 kernel more than sigma 0.8
    delta = np.zeros((9, 9, 3), np.uint8)
    delta[4, 4] = 255
    spread = np.asarray(perturb.gaussian_blur(Image.fromarray(delta), 3))[..., 0]
    assert spread[3:6, 3:6].min() > 0 and spread[:3].max() == 0  # support is exactly 3x3


def test_noise_is_seeded(img):
    a, b, c = (perturb.PERTURBATIONS["noise10"](img, s) for s in (1, 1, 2))
    assert np.array_equal(np.asarray(a), np.asarray(b)) and not np.array_equal(np.asarray(a), np.asarray(c))
    diff = np.asarray(a, float) - np.asarray(img, float)
    assert 8 < diff.std() < 11


def test_geometry(img):
    assert perturb.PERTURBATIONS["scale50"](img, 0).size == (24, 24)
    assert perturb.PERTURBATIONS["scale200"](img, 0).size == (96, 96)
    arr = np.asarray(img)
    assert np.array_equal(np.asarray(perturb.PERTURBATIONS["mirror"](img, 0)), arr[:, ::-1])
    assert np.array_equal(np.asarray(perturb.PERTURBATIONS["rot180"](img, 0)), arr[::-1, ::-1])
    r = np.asarray(perturb.PERTURBATIONS["rot45"](img, 0))
    assert r.shape == arr.shape and r[0, 0].max() == 0  # same canvas, black corner


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown perturbation 'jpeg101'.*jpeg90"):
        perturb.get("jpeg101")
    with pytest.raises(ValueError, match="unknown perturbation 'blur4'"):
        perturb.get("blur4")


def test_any_jpeg_quality_is_a_perturbation():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(perturb.get("jpeg42")(img, 0)), np.asarray(perturb.jpeg(img, 42)))
    assert np.array_equal(np.asarray(perturb.get("jpeg90")(img, 0)), np.asarray(perturb.jpeg(img, 90)))


def test_one_label_per_condition():
    from dfxlib.evaluation import generalization as gz
    from dfxlib.evaluation import paper

    assert [perturb.condition(v) for v in ("raw", "jpeg90", "jpeg75", "blur3")] == ["RAW", "QF90", "QF75", "blur3"]
    assert paper.CONDITIONS == ("RAW",) + tuple(f"QF{q}" for q in perturb.JPEG_QUALITIES)
    assert gz.conditions(80) == [("RAW", "raw"), ("QF80", "jpeg80")] and gz.conditions(0) == [("RAW", "raw")]
