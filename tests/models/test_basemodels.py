"""Stage 1, the base models: exact 90:10 sets per generator, Siamese pairs, reproducible training."""

import pandas as pd
import torch

from dfxlib.models import basemodels


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


def test_training_a_base_model_is_reproducible(tmp_path, fixture_root):
    import dfxlib
    from dfxlib.data.split import load_or_make_split

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
