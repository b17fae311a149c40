"""The DeepFeatureX stages: backbones, base-model data sets and losses, the fusion head, frozen bases, features."""

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from dfxlib import backbones, basemodels, fusion, models
from dfxlib.backbones import BackboneError, create_backbone, feature_dim, preprocess
from dfxlib.metrics import evaluate


def test_registry_has_the_papers_14_backbones():
    assert len(backbones.PAPER_BACKBONES) == 14
    names = {backbones.spec(n).paper_name for n in backbones.PAPER_BACKBONES}
    assert {"DenseNet 121", "ResNeXt 101", "ViT b32", "EfficientNet b4"} <= names
    assert backbones.spec("ViT b16").timm_name == "vit_base_patch16_224"
    with pytest.raises(BackboneError, match="unknown backbone"):
        backbones.spec("alexnet")


def test_feature_width_comes_from_the_model():
    m = create_backbone("test_efficientnet", "none")
    assert feature_dim(m) == m(torch.rand(2, 3, 32, 32)).shape[1] == m.num_features


def test_local_weights_file_and_folder(tmp_path):
    ref = create_backbone("test_convnext", "none")
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, tmp_path / "test_convnext.safetensors")
    for source in (tmp_path / "test_convnext.safetensors", tmp_path):
        m = create_backbone("test_convnext", str(source))
        for k, v in m.state_dict().items():
            assert torch.equal(v, state[k]), k
    with pytest.raises(BackboneError, match="no weights for backbone 'test_vit'"):
        create_backbone("test_vit", str(tmp_path))


def test_failed_download_says_how_to_work_offline(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("could not reach the hub")
        return real(*args, **kwargs)
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(BackboneError) as exc:
        create_backbone("resnet18", "imagenet")
    msg = str(exc.value)
    assert "resnet18" in msg and "local weights file" in msg and "pretrained=none" in msg


def test_preprocessing():
    from PIL import Image

    img = Image.new("RGB", (300, 200), (255, 128, 0))
    x = preprocess("resnet50", 256)(img)
    assert x.shape == (3, 256, 256)
    assert torch.allclose(x[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224,
                                                     (0 - 0.406) / 0.225]), atol=1e-3)
    assert preprocess("vit_b16", 256)(img).shape == (3, 224, 224)


def _base(n_per=(60, 30, 20)):
    rows = []
    for fam, gens in (("dm", ("d1", "d2")), ("gan", ("g1", "g2", "g3")), ("real", ("r1",))):
        for gi, g in enumerate(gens):
            for i in range(n_per[gi % 3]):
                rows.append({"path": f"{fam}/{g}/{i}.png", "family": fam, "generator": g})
    return pd.DataFrame(rows)


def test_unbalanced_set_is_exactly_90_10_and_per_generator():
    base = _base()
    s = basemodels.unbalanced_set(base, "real", 0.9, seed=0)
    mains, others = s[s.target == 1], s[s.target == 0]
    assert len(mains) == (base.family == "real").sum() == 60
    assert len(others) == round(60 / 9)
    assert set(others.family) <= {"dm", "gan"} and len(set(others.generator)) >= 3
    assert s.equals(basemodels.unbalanced_set(base, "real", 0.9, seed=0))
    assert not s.equals(basemodels.unbalanced_set(base, "real", 0.9, seed=1))
    g = basemodels.unbalanced_set(base, "gan", 0.9, seed=0)
    assert abs((g.target == 1).mean() - 0.9) < 0.01


def test_siamese_pairs_half_similar_redrawn_each_epoch():
    anchors = basemodels.siamese_anchors(_base(), "dm", seed=0)
    assert (anchors.target == 1).sum() == (anchors.target == 0).sum()
    p1, p1b, p2 = (basemodels.siamese_pairs(anchors, 0, 0, 1), basemodels.siamese_pairs(anchors, 0, 0, 1),
                   basemodels.siamese_pairs(anchors, 0, 0, 2))
    assert p1.equals(p1b) and not p1.equals(p2)
    assert abs(p1.dissimilar.mean() - 0.5) < 0.02
    t = dict(zip(anchors.path, anchors.target))
    assert ((p1.a.map(t) != p1.b.map(t)).astype(int) == p1.dissimilar).all()
    assert len(basemodels.siamese_pairs(anchors, 10, 0, 1)) == 10


def test_contrastive_loss_margin_2():
    d = torch.tensor([0.0, 1.0, 3.0, 1.0])
    y = torch.tensor([0, 0, 1, 1])  # 1 = dissimilar
    expect = (0 + 0.5 * 1 + 0 + 0.5 * 1) / 4
    assert float(models.contrastive_loss(d, y, 2.0)) == pytest.approx(expect)


@pytest.mark.parametrize("D, after_conv2", [(512, 126), (1024, 254), (2048, 510), (64, 14)])
def test_fusion_head_shape_and_layers(D, after_conv2):
    head = models.FusionHead()
    assert head(torch.rand(4, 3, D)).shape == (4, 3)
    assert head.convs[:7](torch.rand(1, 3, D)).shape[-1] == after_conv2
    kinds = [type(m).__name__ for m in head.convs]
    assert kinds == ["Conv1d", "ReLU", "BatchNorm1d"] * 4 + ["Conv1d", "ReLU"]
    convs = [m for m in head.convs if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (16, 7, 2, 1), (64, 5, 2, 1), (256, 3, 1, 1), (512, 3, 1, 1), (1024, 3, 1, 1)]
    assert head.classifier.in_features == 1024 and head.classifier.out_features == 3


def _bn_buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


def test_frozen_bases_keep_batch_norm_statistics_while_the_head_trains():
    torch.manual_seed(0)
    bases = [create_backbone("test_efficientnet", "none") for _ in range(3)]
    model = models.CompleteModel(bases, models.FusionHead())
    before = _bn_buffers(model.bases)
    assert before, "the test needs batch-norm layers in the bases"
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-3)
    model.train()
    assert model.head.training and not any(m.training for m in model.bases.modules())
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 3, 32, 32) * 3), torch.randint(0, 3, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _bn_buffers(model.bases)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.bases.parameters())
    # control: the same steps with the bases in training mode (the reference's bug) do move them
    model.bases.train()
    for b in model.bases:
        b(torch.rand(8, 3, 32, 32) * 3)
    moved = _bn_buffers(model.bases)
    assert any(not torch.equal(before[k], moved[k]) for k in before)


def test_class_weights_are_inverse_counts():
    w = fusion.class_weights(np.array([0, 0, 0, 0, 1, 1, 2]))
    assert torch.allclose(w, torch.tensor([1 / 4, 1 / 2, 1.0]))


def test_metrics_collapse_to_binary_with_fake_positive():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    m = evaluate(y, probs, binary=True, n_boot=50)
    assert m["class_names"] == ["real", "fake"]
    assert m["accuracy"] == 0.5  # dm ok, gan called real, real ok, real called dm
    assert m["recall_fake"] == 0.5 and m["precision_fake"] == 0.5
    assert m["auc"] == pytest.approx(0.75)
    lo, hi = m["accuracy_ci"]
    assert lo <= m["accuracy"] <= hi
    m3 = evaluate(y, probs, binary=False, n_boot=10)
    assert m3["confusion"].shape == (3, 3) and m3["accuracy"] == 0.5


def test_fake_score_keeps_float32_probabilities_apart():
    """1 - p(real) in float32 would merge scores one float32 step apart near 0.3 (half of these 50), and two
    tables that score the same predictions from differently typed copies would give different AUCs."""
    from dfxlib.metrics import fake_score

    p_real = np.float32(0.3) + np.arange(50, dtype=np.float32) * np.float32(3e-8)
    probs = np.c_[np.zeros(50, np.float32), 1 - p_real, p_real]
    assert len(np.unique(p_real)) == 50 and len(np.unique(np.float32(1) - p_real)) < 50
    assert len(np.unique(fake_score(probs))) == 50
    assert np.array_equal(fake_score(probs), fake_score(probs.astype(np.float64)))


def test_training_a_base_model_is_reproducible(tmp_path, fixture_root):
    import dfxlib
    from dfxlib.split import load_or_make_split

    def train(folder):
        run = dfxlib.start("smoke", run_dir=str(folder), data_root=str(fixture_root),
                           overrides={"progress": False, "base_epochs": 2, "pretrained": "none"})
        index = run.index()
        split = load_or_make_split(index.usable, run.dir, 0)
        torch.rand(5)  # whatever ran before must not change the result
        return basemodels.train_base_model(run, run.images(index), split, "test_resnet", "unbalanced", "gan")

    a = train(tmp_path / "a")
    torch.manual_seed(123)
    b = train(tmp_path / "b")
    assert a.fit.history["val_loss"].tolist() == b.fit.history["val_loss"].tolist()
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k]), k


def test_vectorised_bootstrap_matches_sklearn_per_resample():
    from sklearn.metrics import accuracy_score, f1_score

    from dfxlib.metrics import _confusions, _scores

    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    idx = rng.integers(0, 50, (20, 50))
    idx[0] = np.where(t == 0)[0][0]  # a degenerate resample: one image, classes missing
    conf = _confusions(t, p, 3, idx)
    for b in range(20):
        tt, pp = t[idx[b]], p[idx[b]]
        assert _scores(conf, "accuracy")[b] == pytest.approx(accuracy_score(tt, pp))
        assert _scores(conf, "f1_macro")[b] == pytest.approx(f1_score(tt, pp, average="macro", zero_division=0))
    tb, pb = (t > 0).astype(int), (p > 0).astype(int)
    cb = _confusions(tb, pb, 2, idx)
    for b in range(20):
        assert _scores(cb, "f1_pos")[b] == pytest.approx(f1_score(tb[idx[b]], pb[idx[b]], zero_division=0))
    for b in range(20):
        assert _scores(conf, "balanced_accuracy")[b] == pytest.approx(
            np.mean([np.mean(p[idx[b]][t[idx[b]] == c] == c) for c in np.unique(t[idx[b]])]))


@pytest.mark.parametrize("binary", [False, True])
def test_evaluate_point_values_match_sklearn(binary):
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, f1_score,
                                 precision_recall_fscore_support)

    from dfxlib.metrics import to_binary

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 80)
    probs = rng.dirichlet(np.ones(3), 80)
    probs[y == 1] *= [0.2, 1.0, 0.2]  # some signal, and class 0 under-predicted
    m = evaluate(y, probs, binary=binary, n_boot=20)
    t, p = (to_binary(y), to_binary(probs.argmax(1))) if binary else (y, probs.argmax(1))
    assert m["accuracy"] == pytest.approx(accuracy_score(t, p))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(t, p))
    f1 = f1_score(t, p, zero_division=0) if binary else f1_score(t, p, average="macro", zero_division=0)
    assert m["f1"] == pytest.approx(f1)
    pr, rc, f1s, _ = precision_recall_fscore_support(t, p, labels=list(range(len(m["class_names"]))),
                                                     zero_division=0)
    for i, name in enumerate(m["class_names"]):
        assert (m[f"precision_{name}"], m[f"recall_{name}"], m[f"f1_{name}"]) == pytest.approx((pr[i], rc[i], f1s[i]))
    for key in ("accuracy", "f1", "balanced_accuracy"):
        lo, hi = m[f"{key}_ci"]
        assert lo <= m[key] <= hi and hi - lo < 0.5


def test_vectorised_auc_and_ap_match_sklearn_with_ties_and_resamples():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from dfxlib.metrics import _auc_ap, _resamples, score_metrics

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 120)
    score = np.round(rng.random(120) + 0.3 * y, 1)  # coarse scores: many ties
    idx = _resamples(120, 15, 2)
    counts = np.stack([np.bincount(r, minlength=120) for r in idx]).astype(float)
    auc, ap = _auc_ap(y, score, counts)
    for b, r in enumerate(idx):
        assert auc[b] == pytest.approx(roc_auc_score(y[r], score[r]))
        assert ap[b] == pytest.approx(average_precision_score(y[r], score[r]))
    one = np.zeros((1, 120))
    one[0, y == 1] = 1.0  # a resample holding one class only
    assert np.isnan(_auc_ap(y, score, one)[0][0])
    m = score_metrics(y, score, 300, 0)
    assert m["auc"] == pytest.approx(roc_auc_score(y, score))
    assert m["ap"] == pytest.approx(average_precision_score(y, score))
    assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1] and m["ap_ci"][0] <= m["ap"] <= m["ap_ci"][1]


def test_balanced_accuracy_and_the_binary_columns_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from dfxlib.metrics import balanced_accuracy, binary_scores

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 90)
    score = rng.random(90) + 0.4 * y
    pred = (score > 0.7).astype(int)
    assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    three, guess = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    assert balanced_accuracy(three, guess) == pytest.approx(balanced_accuracy_score(three, guess))
    row = binary_scores(y, score, pred, 200, 0)
    assert list(row) == ["balanced_accuracy", "balanced_accuracy_ci95", "auc", "auc_ci95", "ap", "ap_ci95"]
    assert row["balanced_accuracy"] == round(100 * balanced_accuracy_score(y, pred), 2)
    assert row["auc"] == round(100 * roc_auc_score(y, score), 2)
    lo, hi = (float(v) for v in row["auc_ci95"].strip("[]").split(","))
    assert lo <= row["auc"] <= hi


def test_notebooks_04_to_06_load_the_complete_models_without_training(tmp_path, fixture_root):
    import dfxlib
    from dfxlib import units
    from dfxlib.run import MissingPrerequisite
    from dfxlib.train import CheckpointMismatch, read_meta, save_weights

    over = {"progress": False, "backbones": ["test_resnet"], "pretrained": "none", "base_kinds": ["unbalanced"],
            "detectors": []}
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root), overrides=over)
    split, store = units.prepare(run)
    for c in ("dm", "gan", "real"):
        units.execute(run.dir, f"base/test_resnet/unbalanced/{c}")
    with pytest.raises(MissingPrerequisite, match="run notebook 03_complete_model first"):
        fusion.load_complete(run, split, "test_resnet", "unbalanced")
    trained = fusion.train_complete(run, store, split, "test_resnet", "unbalanced")
    (loaded,) = fusion.load_complete_models(run, split)
    assert type(loaded) is fusion.Fused and [b.id for b in loaded.bases] == [b.id for b in trained.bases]
    dim = feature_dim(trained.bases[0].features_net)
    x = np.random.default_rng(0).standard_normal((5, 3, dim), dtype=np.float32)
    trained.head.eval()
    assert np.array_equal(fusion.predict_head(loaded.head, x), fusion.predict_head(trained.head, x))
    base = run.dir / "checkpoints" / "base" / "test_resnet" / "unbalanced" / "gan" / "best.safetensors"
    net = trained.bases[1].net
    with torch.no_grad():
        next(net.parameters()).add_(1.0)  # the GAN base model retrained: the head no longer belongs to it
    save_weights(net, base, read_meta(base))
    with pytest.raises(CheckpointMismatch, match="bases"):
        fusion.load_complete(run, split, "test_resnet", "unbalanced")


def test_siamese_embeddings_are_unit_norm_so_scale_cannot_collapse_the_loss():
    f = torch.randn(6, 32)
    e = models.embedding(f)
    assert torch.allclose(e.norm(dim=1), torch.ones(6))
    assert torch.allclose(models.embedding(1e-3 * f), e, atol=1e-6)  # shrinking every feature changes nothing
    d = torch.nn.functional.pairwise_distance(e[:3], e[3:])
    y = torch.tensor([0, 1, 1])
    step = basemodels.siamese_step(1.0)
    net = models.SiameseNet(torch.nn.Identity())
    loss, _, n = step(net, (f[:3], f[3:], y))
    assert n == 3 and torch.isclose(loss, models.contrastive_loss(d, y, 1.0))


def test_the_fusion_head_standardises_its_inputs_whatever_their_scale():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 40) * torch.tensor([1.0, 1e-3, 30.0])[None, :, None] + 5.0
    heads = []
    for scale in (1.0, 1000.0):
        torch.manual_seed(1)
        head = models.FusionHead(in_channels=3, feature_dim=40).eval()
        head.set_input_stats(x * scale)
        heads.append(head(x * scale))
    assert torch.allclose(heads[0], heads[1], atol=1e-4)  # same logits for features 1000x larger
    assert {"in_mean", "in_std"} <= set(models.FusionHead(3, feature_dim=40).state_dict())
    const = torch.ones(8, 3, 40)
    head = models.FusionHead(3, feature_dim=40)
    head.set_input_stats(const)  # a constant feature keeps std 1: no division by zero
    assert torch.isfinite(head.eval()(const)).all()
