"""Stage 3, the fusion head and the complete model: the paper's class weights, complete models loaded, not retrained."""

import numpy as np
import pytest
import torch

from dfxlib.models import fusion
from dfxlib.models.backbones import feature_dim


def test_class_weights_are_inverse_counts():
    w = fusion.class_weights(np.array([0, 0, 0, 0, 1, 1, 2]))
    assert torch.allclose(w, torch.tensor([1 / 4, 1 / 2, 1.0]))


@pytest.mark.parametrize("head_patience, used", [(-1, 8), (5, 5), (0, 0)])
def test_a_head_stops_early_by_head_patience_else_by_patience(tmp_path, monkeypatch, head_patience, used):
    import dfxlib

    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"),
                       overrides={"progress": False, "patience": 8, "head_patience": head_patience})
    seen = {}

    def fake_fit(*args, **kw):
        seen.update(kw)
        raise RuntimeError("stop")  # what fit was asked is all this test reads
    monkeypatch.setattr(fusion, "fit", fake_fit)
    x, y = np.zeros((4, 3, 8), dtype=np.float32), np.array([0, 1, 2, 0])
    with pytest.raises(RuntimeError, match="stop"):
        fusion.train_head(run, run.checkpoints.heads / "b" / "k", x, y, x, y, {})
    assert seen["patience"] == used


def test_notebooks_04_to_06_load_the_complete_models_without_training(tmp_path, fixture_root, monkeypatch):
    import dfxlib
    from dfxlib.models.train import CheckpointMismatch, read_meta, save_weights
    from dfxlib.run import MissingPrerequisite
    from dfxlib.workflow import units

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
    assert type(loaded) is fusion.Complete and [b.id for b in loaded.bases] == [b.id for b in trained.bases]
    dim = feature_dim(trained.bases[0].features_net)
    x = np.random.default_rng(0).standard_normal((5, 3, dim), dtype=np.float32)
    trained.head.eval()
    assert np.array_equal(fusion.predict_head(loaded.head, x), fusion.predict_head(trained.head, x))

    # the head's probabilities are computed once per image and condition, across notebooks (cache/predictions/)
    from dfxlib.data import perturb
    from dfxlib.data.split import test_sets
    from dfxlib.models.features import stacked_features

    rels = sorted(test_sets(split, 0)[1]["path"])
    fresh = fusion.predict_head(loaded.head, stacked_features(run, store, loaded.bases, rels))
    real_head, calls = fusion.predict_head, []
    monkeypatch.setattr(fusion, "predict_head", lambda head, feats: calls.append(len(feats)) or real_head(head, feats))
    assert np.array_equal(fusion.complete_probs(run, store, loaded, rels), fresh) and calls == []  # 03 kept them
    jpeg = fusion.complete_probs(run, store, loaded, rels[:3], "jpeg50", perturb.get("jpeg50"))
    again = fusion.complete_probs(run, store, loaded, rels[:5], "jpeg50", perturb.get("jpeg50"))
    assert calls == [3, 2] and np.array_equal(again[:3], jpeg)  # only the two images not yet scored
    assert len(list((run.cache / "predictions").glob("*-jpeg50.json"))) == 1
    monkeypatch.undo()
    base = run.checkpoints.base("test_resnet", "unbalanced", "gan") / "best.safetensors"
    net = trained.bases[1].net
    with torch.no_grad():
        next(net.parameters()).add_(1.0)  # the GAN base model retrained: the head no longer belongs to it
    save_weights(net, base, read_meta(base))
    with pytest.raises(CheckpointMismatch, match="bases"):
        fusion.load_complete(run, split, "test_resnet", "unbalanced")
