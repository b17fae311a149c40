"""The compared detectors: what their parts compute, one label convention, training on the shared splits."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dfxlib
from dfxlib import detectors as dt
from dfxlib.config import DETECTOR_NAMES, ConfigError, resolve
from dfxlib.evaluation.scoring import Detector


def test_registry_and_settings_agree():
    assert tuple(dt.DETECTORS) + ("dif",) == DETECTOR_NAMES  # DIF (dfxlib.dif) is no one-logit network
    with pytest.raises(ConfigError, match="'detectors': unknown 'npr'"):
        resolve("smoke", {"detectors": ["simplecnn", "npr"]})
    with pytest.raises(ConfigError, match="detector_backbone"):
        resolve("smoke", {"detector_backbone": "resnet9000"})


def test_simplicity_is_the_four_direction_sum():
    rng = np.random.default_rng(0)
    p = rng.integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    q = p.astype(int)
    for k in range(2):
        ref = 0
        for i in range(5):
            for j in range(6):
                if j + 1 < 6:
                    ref += np.abs(q[k, i, j] - q[k, i, j + 1]).sum()
                if i + 1 < 5:
                    ref += np.abs(q[k, i, j] - q[k, i + 1, j]).sum()
                if i + 1 < 5 and j + 1 < 6:
                    ref += np.abs(q[k, i, j] - q[k, i + 1, j + 1]).sum() + np.abs(q[k, i + 1, j] - q[k, i, j + 1]).sum()
        assert dt.simplicity(p[k:k + 1])[0] == ref


def test_simplest_patch_is_the_candidate_a_crop_by_crop_search_picks():
    """The window view cuts the same 64 candidates as cropping each one with PIL (x, y in the right order), and
    the simplest of them is returned, on images of several shapes, for the evaluation grid and a training draw."""
    rng = np.random.default_rng(3)
    for h, w in ((64, 64), (40, 90), (120, 33)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for seed in (None, 5):
            if seed is None:
                ys, xs = np.meshgrid(np.linspace(0, h - 32, 8).round().astype(int),
                                     np.linspace(0, w - 32, 8).round().astype(int), indexing="ij")
                ys, xs = ys.ravel(), xs.ravel()
            else:
                g = np.random.default_rng(seed)
                ys, xs = g.integers(0, h - 31, 64), g.integers(0, w - 31, 64)
            crops = np.stack([np.asarray(img.crop((int(x), int(y), int(x) + 32, int(y) + 32))) for y, x in zip(ys, xs)])
            best = crops[int(np.argmin(dt.simplicity(crops)))]
            assert np.array_equal(np.asarray(dt.simplest_patch(img, seed)), best), (h, w, seed)


def test_simplest_patch_finds_the_flat_region_deterministically():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    a[64:96, 0:32] = 128  # a flat 32x32 square at a grid position (bottom-left)
    img = Image.fromarray(a)
    patch = dt.simplest_patch(img, None)
    assert patch.size == (32, 32) and np.ptp(np.asarray(patch)) == 0
    assert np.array_equal(np.asarray(dt.simplest_patch(img, None)), np.asarray(patch))
    r1, r2 = dt.simplest_patch(img, 7), dt.simplest_patch(img, 7)
    assert np.array_equal(np.asarray(r1), np.asarray(r2))  # training draws are seeded
    small = dt.simplest_patch(Image.fromarray(a[:20, :20]), None)  # under 32 px: resized to 256 first
    assert small.size == (32, 32)


def test_srm_filters_are_fixed_high_pass_and_truncated():
    assert dt.SRM_FILTERS.shape == (3, 5, 5)
    assert np.allclose(dt.SRM_FILTERS.sum((1, 2)), 0, atol=1e-6)  # flat input -> zero response
    from dfxlib.models.backbones import create_backbone

    torch.manual_seed(0)
    net = dt.SSPNet(create_backbone("test_resnet", "none"), 64)
    assert "srm" in dict(net.named_buffers()) and not any("srm" in n for n, _ in net.named_parameters())
    seen = {}
    net.backbone.register_forward_pre_hook(lambda m, inp: seen.setdefault("x", inp[0]))
    net.features(torch.randn(2, 3, 32, 32) * 10)
    x = seen["x"]
    assert x.shape == (2, 3, 64, 64) and x.abs().max() <= 3.0 and x.abs().max() == 3.0


def test_one_logit_models_and_wang_init():
    torch.manual_seed(0)
    assert dt.SimpleCNN(64)(torch.randn(3, 3, 64, 64)).shape == (3,)
    assert dt.SimpleCNN(32)(torch.randn(1, 3, 32, 32)).shape == (1,)  # batch of one keeps its dimension
    from dfxlib.models.backbones import create_backbone

    w = dt.BackboneLogit(create_backbone("test_resnet", "none"))
    assert abs(float(w.fc.weight.detach().std()) - 0.02) < 0.01


def test_wang_augmentation_is_seeded_and_changes_images():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    outs = [np.asarray(dt.wang_augment(img, np.random.default_rng(s), prob=1.0)) for s in (3, 3, 4)]
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    assert not np.array_equal(outs[0], np.asarray(img))
    same = dt.wang_augment(img, np.random.default_rng(3), prob=0.0)
    assert np.array_equal(np.asarray(same), np.asarray(img))


@pytest.mark.parametrize("name", list(dt.DETECTORS))
def test_train_evaluate_and_reuse(name, tmp_path, fixture_root):
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                       overrides={"progress": False, "detector_epochs": 1})
    index = run.index()
    split = run.split(index)
    store = run.images(index)
    det = dt.train_detector(run, store, split, name)
    assert det.fit.history["epoch"].tolist() == [1]
    test = split.rows("test")
    p, f = dt.outputs(run, store, det, list(test["path"]))
    assert p.shape == (len(test),) and ((p >= 0) & (p <= 1)).all() and f.shape[0] == len(test)
    again = dt.outputs(run, store, det, list(test["path"]))[0]
    assert np.array_equal(p, again)  # evaluation is deterministic (SSP's patch grid included)
    row = dt.as_detector(run, det)
    assert isinstance(row, Detector) and row.group == "Detectors"
    probs = row.predict(store, list(test["path"]), "raw", None)
    assert np.allclose(probs[:, 0], p) and np.allclose(probs.sum(1), 1)
    assert ((probs.argmax(1) != 2) == (p > 0.5)).all()  # the 3-class collapse reads fake iff p > 0.5
    reused = dt.train_detector(run, store, split, name)  # finished: loaded, not retrained
    assert reused.fit.resumed_from == 1
    for a, b in zip(det.net.state_dict().values(), reused.net.state_dict().values()):
        assert torch.equal(a, b)


def test_ganfingerprint_keeps_the_backbone_and_initialises_only_new_layers():
    from dfxlib.models.backbones import create_backbone

    torch.manual_seed(0)
    bb = create_backbone("test_resnet", "none")
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    net = dt.GANFingerprint(bb)
    for k, v in bb.state_dict().items():
        assert torch.equal(v, before[k]), k  # the reference re-initialised its pretrained ResNet; not here
    assert float(net.attention.gamma.detach()) == 0.0
    assert abs(float(net.embed[0].weight.detach().std()) - 0.01) < 0.003
    net.eval()
    assert net(torch.randn(1, 3, 64, 64)).shape == (1,)  # a batch of one keeps its dimension
    x = torch.randn(2, 3, 64, 64)
    assert net.features(x).shape == (2, 512)


def test_confusions_count_true_rows_and_predicted_columns():
    import pandas as pd

    per = pd.DataFrame({"detector": ["a"] * 5 + ["b"], "fake": [0, 0, 1, 1, 1, 1], "pred_fake": [0, 1, 1, 1, 0, 1]})
    (na, cm, names), (nb, cmb, _) = dt.confusions(per)
    assert (na, nb, names) == ("a", "b", ["real", "fake"])
    assert cm.tolist() == [[1, 1], [1, 2]] and cmb.tolist() == [[0, 0], [0, 1]]


def test_pca_panels_before_and_after_per_detector(tmp_path, fixture_root):
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                       overrides={"progress": False, "detector_epochs": 1})
    index = run.index()
    split = run.split(index)
    store = run.images(index)
    det = dt.train_detector(run, store, split, "simplecnn")
    rows = split.rows("test")
    panels = dt.pca_panels(run, store, [det], rows)
    assert [t for t, _, _ in panels] == ["SimpleCNN: before training", "SimpleCNN: after training"]
    assert panels[0][1].shape == (len(rows), 512) and not np.allclose(panels[0][1], panels[1][1])
    assert panels[0][2].tolist() == (rows["family"] != "real").astype(int).tolist()


@pytest.mark.parametrize("name", ["simplecnn", "wang2020", "ganfingerprint", "ssp"])
def test_the_paper_profile_trains_each_detector_with_its_published_recipe(name, tmp_path, fixture_root,
                                                                         monkeypatch):
    """#31: on the paper path (detector_recipe="published"), one epoch of each detector runs with its recipe's
    optimizer, weight decay, batch and scheduled learning rate, and keeps the weights its recipe selects."""
    from dfxlib.detectors import training
    from dfxlib.detectors.registry import RECIPES, recipe_of
    from dfxlib.models.train import load_state, lr_factor

    small = {"detector_backbone": "test_resnet", "fingerprint_backbone": "test_resnet", "detector_pretrained": "none",
             "backbones": ("test_resnet",), "pretrained": "none", "input_size": 32, "progress": False,
             "keep_images": True}
    run = dfxlib.start("paper", run_dir=str(tmp_path / "r"), data_root=str(fixture_root), overrides=small)
    recipe = RECIPES[name]
    assert recipe_of(run.config, name) == recipe and run.config.detector_recipe == "published"
    seen = {}
    real_fit = training.fit

    def one_epoch(net, step, train_batches, *args, **kwargs):
        seen.update(kwargs, first=next(iter(train_batches(1)))[0].shape[0])
        return real_fit(net, step, train_batches, *args, **kwargs, stop_after=1)
    monkeypatch.setattr(training, "fit", one_epoch)
    index = run.index()
    split = run.split(index)
    n_train = len(training.train_val(training.training_rows(split), run.config.val_fraction, run.config.seed)[0])
    det = training.train_detector(run, run.images(index), split, name)
    assert (seen["optimizer"], seen["lr"], seen["weight_decay"], seen["epochs"], seen["schedule"], seen["select"]) == (
        recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.epochs, recipe.schedule, recipe.select)
    assert seen["first"] == min(recipe.batch_size, n_train)
    state = load_state(det.folder / "last_state.pt")
    group = state["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(recipe.lr * lr_factor(recipe.schedule, 1, recipe.epochs, [], recipe.patience))
    assert group["weight_decay"] == recipe.weight_decay
    meta = json.loads((det.folder / "meta.json").read_text())
    assert (meta.get("optimizer", "adam"), meta.get("schedule", "constant")) == (recipe.optimizer, recipe.schedule)
    if name == "simplecnn":  # the comparative study's 224 px, whatever the run's input_size (32 here)
        assert det.net.fc1[1].in_features == 256 * (224 // 16) ** 2 and meta["input_size"] == 224
    logged = json.loads((det.folder / "log.jsonl").read_text().splitlines()[0])
    assert ("val_score" in logged) == (recipe.select == "val_score") == (name == "ganfingerprint")


def test_wang2020_validates_as_its_code_on_the_paper_path(tmp_path):
    """CNNDetection validates through its blur and JPEG (probability 0.5 each, sigma 1.5, quality 65), the shorter
    side resized and the centre crop taken: seeded per image, so a validation image reads the same every epoch;
    the shared recipe validates as it tests."""
    from dfxlib.detectors.registry import spec_of
    from dfxlib.detectors.transforms import crop_size, norm_of, wang_augment
    from dfxlib.models.backbones import resize_normalize

    over = {"progress": False, "input_size": 64}
    shared = dfxlib.start("smoke", run_dir=str(tmp_path / "s"), overrides=over)
    assert spec_of("wang2020").val_tf(shared) is None and spec_of("ssp").val_tf(shared) is None
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "p"), overrides={**over, "detector_recipe": "published"})
    val, test = spec_of("wang2020").val_tf(run), spec_of("wang2020").eval_tf(run)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8))
    outs = [val(img, seed) for seed in range(12)]
    assert all(o.shape == (3, crop_size(run), crop_size(run)) for o in outs)
    assert torch.equal(val(img, 3), outs[3])  # the same draw for the same image every epoch
    drawn = [np.random.default_rng(seed).random(2) < 0.5 for seed in range(12)]  # (blur, JPEG) per seed
    plain = [k for k, (b, j) in enumerate(drawn) if not b and not j]
    changed = [k for k, (b, j) in enumerate(drawn) if b or j]
    assert plain and changed
    assert all(torch.equal(outs[k], outs[plain[0]]) for k in plain)  # neither applied: one image
    assert not any(torch.equal(outs[k], outs[plain[0]]) for k in changed)
    resized = img.resize((107, 64), Image.Resampling.BILINEAR)  # the shorter side to 64, aspect kept
    augmented = wang_augment(resized, np.random.default_rng(changed[0]), sigma=(1.5, 1.5), quality=(65, 65))
    c = crop_size(run)
    left, top = round((107 - c) / 2), round((64 - c) / 2)
    expected = resize_normalize(c, 0, *norm_of(run.config.detector_backbone))(
        augmented.crop((left, top, left + c, top + c)))
    assert torch.equal(outs[changed[0]], expected) and test(img).shape == outs[0].shape


def test_ganfingerprint_selects_by_its_combined_score():
    """Its code's score: 0.10 acc + 0.05 precision + 0.70 recall + 0.10 F1 + 0.05 AUC, REAL the positive class.
    A model that calls everything real scores 0.05 + 0.025 + 0.70 + 0.1 * 2/3 + 0.025 (AUC 0.5) on a balanced set,
    far above one that calls everything fake (0.05 + 0 + 0 + 0 + 0.025)."""
    from dfxlib.detectors.training import combined_score

    y = np.array([0, 0, 1, 1])  # fake = 1
    assert combined_score(y, np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(1.0)
    assert combined_score(y, np.array([0.1, 0.1, 0.1, 0.1])) == pytest.approx(0.05 + 0.025 + 0.70 + 0.1 * 2 / 3 + 0.025)
    assert combined_score(y, np.array([0.9, 0.9, 0.9, 0.9])) == pytest.approx(0.05 + 0.025)


def test_wang2020_reads_images_as_its_code_on_the_paper_path(tmp_path, monkeypatch):
    """Published recipe: training resizes the shorter side to the input size (aspect kept) before its random
    crop; evaluation takes the centre crop of the image as it is, without resizing (CNNDetection's test)."""
    from dfxlib.detectors.transforms import crop_size, wang_eval, wang_train
    from dfxlib.models.backbones import resize_normalize

    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), overrides={"progress": False, "input_size": 64,
                                                                         "detector_recipe": "published"})
    crop = crop_size(run)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8))
    left, top = round((150 - crop) / 2), round((90 - crop) / 2)
    norm = resize_normalize(crop, 0, *dt.transforms.norm_of(run.config.detector_backbone))
    assert torch.equal(wang_eval(run)(img), norm(img.crop((left, top, left + crop, top + crop))))
    seen = []
    monkeypatch.setattr(dt.transforms, "wang_augment", lambda im, rng: seen.append(im.size) or im)
    assert wang_train(run)(img, 3).shape == (3, crop, crop)
    assert seen == [(107, 64)]  # shorter side 64, aspect kept (150 x 90 -> 107 x 64)
    shared = dfxlib.start("smoke", run_dir=str(tmp_path / "s"), overrides={"progress": False, "input_size": 64})
    assert torch.equal(wang_eval(shared)(img), resize_normalize(64, crop, *dt.transforms.norm_of(
        shared.config.detector_backbone))(img))


def test_ganfingerprint_trains_on_its_own_augmentations_on_the_paper_path(tmp_path):
    """Published recipe: GANFingerprint's stack (resized crop, flip, rotation, colour jitter, JPEG, noise, blur,
    erasing), seeded per image and epoch: the same seed gives the same tensor, others differ; the shared recipe
    keeps its flip only (the built-in tables' draws)."""
    from dfxlib.detectors.transforms import fingerprint_train, flip_train

    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), overrides={"progress": False, "input_size": 64,
                                                                         "detector_recipe": "published"})
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8))
    tf = fingerprint_train(run)
    outs = [tf(img, s) for s in range(12)]
    assert all(o.shape == (3, 64, 64) for o in outs) and torch.equal(tf(img, 5), outs[5])
    assert len({o.sum().item() for o in outs}) == 12
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    tf(img, 1)  # its draws come from a forked RNG: training's own (dropout, order) is left as it was
    assert torch.equal(torch.rand(3), a)
    shared = dfxlib.start("smoke", run_dir=str(tmp_path / "s"), overrides={"progress": False, "input_size": 64})
    assert torch.equal(fingerprint_train(shared)(img, 3), flip_train(shared)(img, 3))
    # testing: the shorter side to 64 (100 x 80 -> 80 x 64), the centre 64 x 64, as its test transform
    from torchvision.transforms import v2 as T

    from dfxlib.detectors.transforms import fingerprint_eval, norm_of
    ref = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToImage(), T.ToDtype(torch.float32, scale=True),
                     T.Normalize(*norm_of(run.config.fingerprint_backbone))])(img)
    assert torch.equal(fingerprint_eval(run)(img), ref)
