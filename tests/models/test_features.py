"""Stage 2, frozen features: computed once and cached, appended, per perturbation, recomputed when damaged,
float16, and a perturbed image decoded once for every backbone."""

import json

import numpy as np
import torch

import dfxlib
from dfxlib.data.batches import ImageStore
from dfxlib.models import features, networks
from dfxlib.models.backbones import create_backbone
from dfxlib.models.train import save_weights


def _feature_setup(tmp_path, fixture_root, backbone, n):
    """A smoke run, a store over the fixture, an untrained base model saved to disk, and n image paths."""
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "run"))
    folder = tmp_path / "m"
    net = networks.BaseClassifier(create_backbone(backbone, "none")).eval()
    save_weights(net, folder / "best.safetensors")
    model = networks.BaseModel(net=net, backbone=backbone, kind="unbalanced", main="dm", folder=folder)
    rels = sorted(str(p.relative_to(fixture_root)) for p in fixture_root.rglob("*.png"))[:n]
    return run, ImageStore(fixture_root), net, model, rels


def test_features_are_computed_once_and_cached(tmp_path, fixture_root):
    run, store, net, model, rels = _feature_setup(tmp_path, fixture_root, "test_convnext", 10)
    f1 = features.features(run, store, model, rels[:6])
    assert f1.shape == (6, 64) and store.decodes == 6
    f2 = features.features(run, store, model, rels)
    assert store.decodes == 10  # only the 4 new images were decoded and run
    np.testing.assert_array_equal(f2[:6], f1)
    fresh = ImageStore(fixture_root)
    f3 = features.features(run, fresh, model, rels[::-1])
    assert fresh.decodes == 0
    np.testing.assert_array_equal(f3, f2[::-1])
    with torch.no_grad():
        direct = net.backbone(fresh.batch(rels[:2], dfxlib.models.backbones.preprocess("test_convnext", 32))).numpy()
    np.testing.assert_allclose(f2[:2], direct, rtol=1e-5, atol=1e-5)


def test_feature_cache_appends_write_only_the_new_rows(tmp_path, fixture_root):
    run, store, _, model, rels = _feature_setup(tmp_path, fixture_root, "test_resnet", 9)
    f1 = features.features(run, store, model, rels[:5])
    shard0 = next((run.cache / "features").glob(f"{model.id}-*-raw.safetensors"))
    first = shard0.read_bytes()
    f2 = features.features(run, store, model, rels)
    shard1 = shard0.with_name(shard0.name.replace(".safetensors", ".1.safetensors"))
    assert shard0.read_bytes() == first and shard1.is_file()  # the first rows were not written again
    from safetensors.torch import load_file

    assert load_file(str(shard1))["features"].shape[0] == 4
    np.testing.assert_array_equal(f2[:5], f1)
    # a process killed after writing a shard but before its paths: the earlier rows still serve, no recompute
    index = shard0.with_suffix(".json")
    paths = json.loads(index.read_text())
    index.write_text(json.dumps(paths[:5]))
    fresh = ImageStore(fixture_root)
    np.testing.assert_array_equal(features.features(run, fresh, model, rels[:5]), f1)
    assert fresh.decodes == 0 and not shard1.exists()  # the orphan shard is dropped


def test_perturbed_features_are_cached_per_variant_and_decode_once(tmp_path, fixture_root):
    from dfxlib.data import perturb

    run, store, _, model, rels = _feature_setup(tmp_path, fixture_root, "test_resnet", 6)
    raw = features.features(run, store, model, rels)
    calls = []

    def noisy(img, seed):
        calls.append(seed)
        return perturb.PERTURBATIONS["noise10"](img, seed)
    n1 = features.features(run, store, model, rels, "noise10", noisy)
    n2 = features.features(run, store, model, rels, "noise10", noisy)
    assert store.decodes == 6  # each image decoded once for all variants
    assert len(calls) == 6 and len(set(calls)) == 6  # one seed per image, perturbed once
    np.testing.assert_array_equal(n1, n2)
    assert not np.allclose(raw, n1)
    assert len(list((run.cache / "features").glob("*.safetensors"))) == 2


def test_damaged_feature_cache_is_recomputed_not_fatal(tmp_path, fixture_root, capsys):
    run, store, _, model, rels = _feature_setup(tmp_path, fixture_root, "test_convnext", 4)
    good = features.features(run, store, model, rels)
    cache = next((run.cache / "features").glob("*.safetensors"))
    cache.write_bytes(b"not a safetensors file")
    again = features.features(run, store, model, rels)
    np.testing.assert_array_equal(good, again)
    out = capsys.readouterr().out
    assert cache.name in out and "damaged feature cache" in out
    from safetensors.torch import load_file
    assert load_file(str(cache))["features"].shape == (4, 64)  # rewritten whole


def test_float16_cache_and_perturbed_features_not_kept(tmp_path, fixture_root):
    from dfxlib.data import perturb

    run, store, _, model, rels = _feature_setup(tmp_path, fixture_root, "test_resnet", 6)
    full = features.features(run, store, model, rels)
    half_run = dfxlib.start("smoke", run_dir=str(tmp_path / "half"),
                            overrides={"feature_dtype": "float16", "cache_perturbed_features": False})
    half = features.features(half_run, store, model, rels)
    assert half.dtype == np.float32  # read back as float32
    np.testing.assert_allclose(half, full, rtol=2e-3, atol=1e-3)  # half precision: ~3 significant digits
    from safetensors.torch import load_file

    cached = next((half_run.cache / "features").glob("*-raw.safetensors"))
    assert load_file(str(cached))["features"].dtype == torch.float16
    noisy = features.features(half_run, store, model, rels, "noise10", perturb.PERTURBATIONS["noise10"])
    assert noisy.shape == full.shape
    assert not list((half_run.cache / "features").glob("*-noise10.*"))  # perturbed features not kept


def test_a_perturbed_image_is_computed_once_for_every_backbone(tmp_path, fixture_root):
    from dfxlib.data import perturb

    run, store, _, resnet, rels = _feature_setup(tmp_path, fixture_root, "test_resnet", 6)
    net = networks.BaseClassifier(create_backbone("test_convnext", "none")).eval()
    save_weights(net, tmp_path / "c" / "best.safetensors")
    convnext = networks.BaseModel(net=net, backbone="test_convnext", kind="unbalanced", main="gan",
                                folder=tmp_path / "c")
    calls = []

    def noisy(img, seed):
        calls.append(seed)
        return perturb.PERTURBATIONS["noise10"](img, seed)
    both = features.features_many(run, store, [resnet, convnext], rels, "noise10", noisy)
    assert len(calls) == 6  # once per image, not once per backbone
    # the same numbers as each backbone alone, from a fresh cache
    alone_run = dfxlib.start("smoke", run_dir=str(tmp_path / "alone"))
    for model, got in zip((resnet, convnext), both):
        alone = features.features(alone_run, ImageStore(fixture_root), model, rels, "noise10",
                                  perturb.PERTURBATIONS["noise10"])
        np.testing.assert_array_equal(got, alone)
