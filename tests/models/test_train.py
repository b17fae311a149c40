"""The one fit loop: resumable to the same weights, reused when finished, refused when mismatched, never unpickling
code, early stopping and the cut-short flag."""

import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfxlib.data.batches import order
from dfxlib.models.train import CheckpointMismatch, fit, is_finished, load_weights

X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))


Y = (X[:, 0] + 0.3 * X[:, 1] > 0).long()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))


def _step(model, batch):
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits, y), float((logits.argmax(1) == y).sum()), len(y)


def _train(epoch):
    idx = order(len(X), 0, epoch)
    for i in range(0, len(idx), 16):
        yield X[idx[i:i + 16]], Y[idx[i:i + 16]]


def _val():
    yield X[:16], Y[:16]


def _fit(folder, model, **kw):
    kw = {"epochs": 4, "lr": 1e-2, "weight_decay": 0.0, "seed": 3, "progress": False, **kw}
    return fit(model, _step, _train, _val, folder, {"backbone": "toy", "classes": ["a", "b"]}, **kw)


def test_resume_after_interruption_gives_the_same_weights(tmp_path):
    straight = _model()
    _fit(tmp_path / "a", straight)
    interrupted = _model()
    first = _fit(tmp_path / "b", interrupted, stop_after=2)
    assert len(first.history) == 2 and not is_finished(tmp_path / "b")
    resumed_model = _model()  # a fresh process: new model object, state from disk
    res = _fit(tmp_path / "b", resumed_model)
    assert res.resumed_from == 2 and len(res.history) == 4 and is_finished(tmp_path / "b")
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
    a, b = _model(), _model()
    load_weights(a, tmp_path / "a" / "best.safetensors")
    load_weights(b, tmp_path / "b" / "best.safetensors")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert (tmp_path / "a" / "log.csv").read_text().count("\n") == 5
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0


def test_finished_run_is_reused_not_retrained(tmp_path):
    first = _fit(tmp_path, _model())
    # once finished, only the best weights are kept (the last weights and optimizer state are never read again)
    assert not (tmp_path / "last_state.pt").exists() and not (tmp_path / "last.safetensors").exists()
    assert is_finished(tmp_path) and (tmp_path / "best.safetensors").is_file()
    best = (tmp_path / "best.safetensors").read_bytes()
    (tmp_path / "curves.png").unlink()  # a figure lost (or never drawn) is drawn again from the log
    written = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = _fit(tmp_path, _model())
    assert again.resumed_from == 4 and len(again.history) == 4
    # loading writes nothing that is on disk (every notebook loads the fits again): only the missing figure
    assert [p.name for p in tmp_path.iterdir() if written.get(p) != p.stat().st_mtime_ns] == ["curves.png"]
    assert (again.best_epoch, again.best_val_loss) == (first.best_epoch, first.best_val_loss)
    assert (tmp_path / "best.safetensors").read_bytes() == best
    with pytest.raises(CheckpointMismatch, match="epochs"):  # a finished model of other settings is not reused
        _fit(tmp_path, _model(), epochs=6)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    _fit(tmp_path, _model(), stop_after=1)
    with pytest.raises(CheckpointMismatch, match="backbone: checkpoint has 'toy', expected 'other'"):
        fit(_model(), _step, _train, _val, tmp_path, {"backbone": "other", "classes": ["a", "b"]}, epochs=4,
            lr=1e-2, weight_decay=0.0, seed=3, progress=False)
    with pytest.raises(CheckpointMismatch, match="classes"):
        load_weights(_model(), tmp_path / "best.safetensors", {"classes": ["x", "y", "z"]})
    with pytest.raises(CheckpointMismatch, match=r"do not fit this model \(2 missing: weight, bias; 4 unexpected: "
                       r"0.bias, 0.weight, 3.bias and 1 more\)"):
        load_weights(nn.Linear(4, 3), tmp_path / "best.safetensors")
    wider = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    with pytest.raises(CheckpointMismatch, match=r"3 of another shape: 0.weight \(8, 4\) instead of \(16, 4\)"):
        load_weights(wider, tmp_path / "best.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((tmp_path / "best.safetensors").read_bytes()[:-40])
    with pytest.raises(CheckpointMismatch, match=r"cut.safetensors: not a dfx safetensors checkpoint, or a damaged one \(.*incomplete"):
        load_weights(_model(), cut)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_loading_never_runs_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "run"
    _fit(folder, _model(), stop_after=1)
    (folder / "last_state.pt").write_bytes(pickle.dumps({"optimizer": _Evil()}))
    with pytest.raises(CheckpointMismatch, match=r"last_state.pt: damaged training state \(refused: this pickle "
                       r"holds more than tensors.*delete .*run to train this model again"):
        _fit(folder, _model())
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("damage", ["cut", "empty", "no epoch", "garbage"])
def test_a_damaged_training_state_says_what_to_do(tmp_path, damage):
    folder = tmp_path / "run"
    _fit(folder, _model(), stop_after=1)
    state = folder / "last_state.pt"
    if damage == "cut":
        state.write_bytes(state.read_bytes()[:200])
    elif damage == "empty":
        state.write_bytes(b"")
    elif damage == "garbage":  # random bytes: damaged, not "a pickle that would run code" (#32 item 15)
        state.write_bytes(bytes(range(256)) * 4)
    else:
        st = torch.load(state, weights_only=True)
        del st["epoch"]
        torch.save(st, state)
    best = (folder / "best.safetensors").read_bytes()
    why = {"cut": "unreadable: ", "empty": "unreadable: ", "no epoch": "no 'epoch'",
           "garbage": "unreadable: not a PyTorch file, or a damaged one"}[damage]
    with pytest.raises(CheckpointMismatch, match=rf"last_state.pt: damaged training state \({why}"):
        _fit(folder, _model())
    with pytest.raises(CheckpointMismatch, match="damaged training state"):
        is_finished(folder)
    assert (folder / "best.safetensors").read_bytes() == best  # what was done is kept


def test_early_stopping_by_patience(tmp_path):
    def worse_val():  # validation loss that only grows
        worse_val.calls += 1
        yield X[:16], (1 - Y[:16]) if worse_val.calls > 1 else Y[:16]
    worse_val.calls = 0
    res = fit(_model(), _step, _train, worse_val, tmp_path, {"backbone": "toy"}, epochs=20, lr=1e-1,
              weight_decay=0.0, seed=0, patience=2, progress=False)
    assert len(res.history) < 20 and res.best_epoch == 1
    assert not res.cut_short  # stopped by patience: converged


def _scripted_val(losses):
    """A step that trains normally and reports the validation losses `losses`, one per epoch, in order."""
    it = iter(losses)

    def step(model, batch):
        if model.training:
            return _step(model, batch)
        return torch.tensor(next(it)), 0.0, 1
    return step


CREEPING = [1.0, 0.5, 0.499, 0.498, 0.497, 0.496, 0.495, 0.494]  # falls, then creeps down by 0.001 an epoch


def test_min_delta_stops_a_creeping_curve_and_keeps_its_minimum(tmp_path):
    kw = dict(epochs=len(CREEPING), lr=1e-2, weight_decay=0.0, seed=0, patience=2, progress=False)
    every = fit(_model(), _scripted_val(CREEPING), _train, _val, tmp_path / "a", {"backbone": "toy"}, **kw)
    assert len(every.history) == len(CREEPING)  # any decrease counts: the creep runs to the cap
    creep = fit(_model(), _scripted_val(CREEPING), _train, _val, tmp_path / "b", {"backbone": "toy"},
                min_delta=0.01, **kw)
    # patience counts from epoch 2, the last fall by more than 0.01; the weights kept are the minimum's (epoch 4)
    assert list(creep.history["epoch"]) == [1, 2, 3, 4] and creep.best_epoch == 4
    assert creep.best_val_loss == pytest.approx(0.498) and not creep.cut_short


def test_min_delta_survives_a_resume(tmp_path):
    kw = dict(epochs=len(CREEPING), lr=1e-2, weight_decay=0.0, seed=0, patience=2, progress=False, min_delta=0.01)
    losses = iter(CREEPING)  # one sequence across the interrupted call and the resumed one
    step = _scripted_val(losses)
    fit(_model(), step, _train, _val, tmp_path, {"backbone": "toy"}, stop_after=3, **kw)
    res = fit(_model(), step, _train, _val, tmp_path, {"backbone": "toy"}, **kw)
    assert res.resumed_from == 3 and list(res.history["epoch"]) == [1, 2, 3, 4] and res.best_epoch == 4
    with pytest.raises(CheckpointMismatch):  # a fit with another min_delta is another fit
        fit(_model(), step, _train, _val, tmp_path, {"backbone": "toy"}, **{**kw, "min_delta": 0.02})


def test_a_fit_still_improving_at_its_epoch_cap_is_flagged(tmp_path):
    falling = _fit(tmp_path / "a", _model(), epochs=2)  # a learnable task: validation loss still falling at 2
    assert falling.best_epoch == 2 and falling.cut_short
    def worse_val():
        worse_val.calls += 1
        yield X[:16], (1 - Y[:16]) if worse_val.calls > 1 else Y[:16]
    worse_val.calls = 0
    flat = fit(_model(), _step, _train, worse_val, tmp_path / "b", {"backbone": "toy"}, epochs=3, lr=1e-1,
               weight_decay=0.0, seed=0, progress=False)
    assert flat.best_epoch == 1 and not flat.cut_short  # ran to the cap, but its best was earlier


def test_an_epoch_stopped_before_its_commit_runs_again(tmp_path, monkeypatch):
    """A job stopped while writing an epoch (a time limit's signal, a kill) after its log but before its
    training state resumes from the epoch before: no epoch missing from the log, the same final weights."""
    from dfxlib.models import train

    straight = _model()
    _fit(tmp_path / "a", straight)
    real, calls = train.atomic_write, []

    def stopped(path, write):
        if Path(path).name == "last_state.pt":
            calls.append(path)
            if len(calls) == 3:
                raise KeyboardInterrupt  # epoch 3 logged, its state never written
        return real(path, write)
    monkeypatch.setattr(train, "atomic_write", stopped)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", _model())
    monkeypatch.setattr(train, "atomic_write", real)
    resumed = _model()
    res = _fit(tmp_path / "b", resumed)
    assert res.resumed_from == 2 and list(res.history["epoch"]) == [1, 2, 3, 4]
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_learning_rate_schedules_follow_the_published_recipes():
    """SSP's poly lr (epoch 1 at 9.70e-5, the last at 0), GANFingerprint's warm-up then cosine (its first epoch at
    factor 0, as its code), Wang2020's lr / 10 after `patience` epochs without a better validation accuracy."""
    from dfxlib.models.train import lr_factor

    assert 1e-4 * lr_factor("poly", 1, 30, [], 0) == pytest.approx(9.70e-5, abs=5e-8)
    assert lr_factor("poly", 30, 30, [], 0) == 0.0
    assert [lr_factor("warmup_cosine", e, 20, [], 0) for e in (1, 2, 3)] == [0.0, 0.5, 1.0]
    assert lr_factor("warmup_cosine", 20, 20, [], 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 17 / 18)))
    flat = [{"val_acc": 0.6}] * 6
    assert [lr_factor("plateau", e, 99, flat[:e - 1], 5) for e in (6, 7)] == [1.0, 0.1]
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("step", 1, 10, [], 0)


def test_fit_keeps_the_selected_weights_and_a_plateau_schedule_ends_when_spent(tmp_path):
    """select="val_acc" keeps the most accurate epoch where the lowest loss is another; "plateau" stops once the
    next learning rate would fall below 1e-6 (1e-4 after three drops), well before its cap."""
    val = iter([(1.0, 9), (0.5, 6), (0.8, 7)] * 30)  # (loss, correct of 10) per validation pass

    def step(model, batch):
        loss, correct = next(val) if not model.training else (None, 0)
        if model.training:
            x, y = batch
            return F.cross_entropy(model(x), y), 0.0, len(y)
        return torch.tensor(loss), float(correct), 10
    by_loss = fit(_model(), step, _train, lambda: [None], tmp_path / "loss", {"m": 1}, epochs=3, lr=1e-3,
                  weight_decay=0.0, seed=0, progress=False)
    val = iter([(1.0, 9), (0.5, 6), (0.8, 7)] * 30)
    by_acc = fit(_model(), step, _train, lambda: [None], tmp_path / "acc", {"m": 1}, epochs=3, lr=1e-3,
                 weight_decay=0.0, seed=0, progress=False, select="val_acc")
    assert (by_loss.best_epoch, by_acc.best_epoch) == (2, 1) and by_acc.best_val_loss == pytest.approx(1.0)
    val = iter([(1.0, 9), (0.5, 6), (0.8, 7)] * 30)
    scores = iter([0.2, 0.1, 0.7])
    by_score = fit(_model(), step, _train, lambda: [None], tmp_path / "score", {"m": 1}, epochs=3, lr=1e-3,
                   weight_decay=0.0, seed=0, progress=False, select="val_score", val_score=lambda m: next(scores))
    assert by_score.best_epoch == 3 and by_score.history["val_score"].tolist() == [0.2, 0.1, 0.7]
    with pytest.raises(ValueError, match="val_score"):  # a score selection names its score
        fit(_model(), step, _train, lambda: [None], tmp_path / "none", {"m": 1}, epochs=1, lr=1e-3,
            weight_decay=0.0, seed=0, progress=False, select="val_score")
    val = iter([(1.0, 9)] + [(1.0, 5)] * 60)  # better once, then never again
    plateau = fit(_model(), step, _train, lambda: [None], tmp_path / "plateau", {"m": 1}, epochs=50, lr=1e-4,
                  weight_decay=0.0, seed=0, patience=1, progress=False, schedule="plateau", select="val_acc")
    assert len(plateau.history) == 4
