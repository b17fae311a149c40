"""The baselines: the linear probe uses the backbone as it came, fits on the seen images only, and joins
every evaluation as a Detector."""

import numpy as np
import torch

import dfxlib
from dfxlib.evaluation import scoring as ev
from dfxlib.models import baselines as bl
from dfxlib.models.backbones import create_backbone


def test_linear_probe_keeps_the_backbone_frozen_and_predicts_probabilities(tmp_path, fixture_root):
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                       overrides={"progress": False, "backbones": ["test_resnet"], "pretrained": "none",
                                  "bootstrap": 20})
    index = run.index()
    split = run.split(index)
    store = run.images(index)
    probe = bl.train_probe(run, store, split, "test_resnet")
    torch.manual_seed(run.config.seed)
    fresh = create_backbone("test_resnet", "none").state_dict()
    for k, v in probe.model.features_net.state_dict().items():
        assert torch.equal(v, fresh[k]), k  # never trained: the weights it came with
    seen = bl.seen_images(split)
    assert set(seen["split"]) == {"base", "fusion"} and probe.clf.classes.tolist() == [0, 1, 2]

    again = bl.frozen_backbone(run, "test_resnet")
    assert again.id == probe.model.id  # same bytes each time: its feature cache is reused, not recomputed
    det = bl.probe_detector(run, probe)
    assert (det.group, det.kind) == ("Linear probe", "linear probe")
    test = list(split.rows("test")["path"])
    p = det.predict(store, test, "raw", None)
    assert p.shape == (len(test), 3) and np.allclose(p.sum(1), 1.0)
    caches = list((run.cache / "features").glob(f"{probe.model.id}-*.json"))
    assert len(caches) == 1  # one cache (its paths, its shards of features) for the seen and test images together

    rob = ev.robustness(run, store, split, [det], ["raw", "jpeg50"])
    assert set(rob["kind"]) == {"linear probe"} and set(rob["condition"]) == {"RAW", "QF50"}
    assert set(rob["task"]) == {"multiclass", "binary"} and rob["accuracy"].between(0, 100).all()
    assert (rob["paper_accuracy"] == "").all()  # the paper has no probe row
