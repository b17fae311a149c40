"""One fit loop for every model: seeded, logged, checkpointed atomically every epoch, resumable.

A run folder holds ``meta.json`` (what the model is: checked on resume and load), ``last_state.pt`` (the
epoch's weights, optimizer state and epoch, in one file: the commit point of an epoch, written every epoch
while training and deleted once the model is finished: about three times the model's size that nothing reads
again), ``finished.json`` (the last epoch and the best one, once finished), ``best.safetensors`` (minimum
validation loss), ``log.jsonl`` / ``log.csv`` and ``curves.png``. Best weights are read with safetensors and
training states with ``torch.load(weights_only=True)``: loading never executes pickled code.

Determinism: epoch e reseeds torch with (seed, e) and builds its batches from (seed, e), so a run resumed
after an interruption ends with the same weights as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import json
import math
import pickle
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from dfxlib.config import ConfigError
from dfxlib.evaluation.tables import atomic_write
from dfxlib.models.backbones import pickle_refusal
from dfxlib.models.distributed import Dist, current

Batch = Any
#: step(model, batch) -> (loss tensor, number correct, number of samples)
StepFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, float, int]]


class CheckpointMismatch(ValueError):
    """A checkpoint belongs to another model (backbone, classes, kind, ...); the message says which."""


@dataclass
class FitResult:
    """What fit() leaves: the best epoch and loss, the history table and the folder."""

    best_epoch: int
    best_val_loss: float
    history: pd.DataFrame
    folder: Path
    resumed_from: int = 0

    @property
    def cut_short(self) -> bool:
        """Its epochs ran out while its validation loss was still falling (`cut_short` of its folder)."""
        return cut_short(self.folder)


def classifier_step(weight: torch.Tensor | None = None) -> StepFn:
    """The training step of a classifier: cross entropy (weighted per class when `weight` is given) and the
    number of correct argmax predictions. Base models, plain classifiers and the fusion head share it."""
    def step(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, float, int]:
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits, y, weight=weight), float((logits.argmax(1) == y).sum()), len(y)
    return step


def device_of(setting: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else CPU; a device that is asked for but absent is a ConfigError."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(setting)
    except (RuntimeError, ValueError, TypeError):  # "tpu", "cuda:x": not a device name torch knows
        raise ConfigError(f"setting 'device': {setting!r} is not a device name; use auto, cpu, cuda, cuda:N or "
                          "mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"setting 'device': {setting!r}: dfx runs on cpu, cuda or mps; use device=auto or cpu")
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"setting 'device': {setting} is not available here ({torch.cuda.device_count()} CUDA "
                          "devices); use device=auto or cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"setting 'device': {setting} is not available here; use device=auto or cpu")
    return dev


#: version of the checkpoint layout (state-dict names and metadata); stored in every checkpoint, checked on load
CHECKPOINT_FORMAT = 1


def save_weights(model: nn.Module, path: Path, meta: dict | None = None) -> None:
    """Write a model's state dict as safetensors, atomically (metadata as JSON strings, with the format)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {**(meta or {}), "format": CHECKPOINT_FORMAT}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"dfx": json.dumps(meta)}))


def read_meta(path: Path) -> dict:
    """The dfx metadata of a safetensors checkpoint (no tensor is loaded, nothing is executed).
    CheckpointMismatch if the file is not a safetensors file or was written in another checkpoint format."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            saved = json.loads((fh.metadata() or {}).get("dfx", "{}"))
    except Exception as exc:  # safetensors raises its own error type for a file that is not safetensors
        raise CheckpointMismatch(f"{path}: not a dfx safetensors checkpoint, or a damaged one ({exc})") from None
    if not isinstance(saved, dict):  # valid JSON, but not the object dfx writes (e.g. `[1, 2]`)
        raise CheckpointMismatch(f"{path}: its dfx metadata is a JSON {type(saved).__name__}, not an object; this "
                                 "file was not written by dfx")
    fmt = saved.get("format", 1)  # checkpoints written before the format was recorded are format 1
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(f"{path}: checkpoint format {fmt} was written by another dfx version; this "
                                 f"version reads format {CHECKPOINT_FORMAT}")
    return saved


def check_meta(saved: dict, wanted: dict, where: Path) -> None:
    """Raise CheckpointMismatch if any key of `wanted` differs in `saved`."""
    diffs = [f"{k}: checkpoint has {saved.get(k)!r}, expected {v!r}" for k, v in wanted.items() if saved.get(k) != v]
    if diffs:
        raise CheckpointMismatch(f"{where}: checkpoint is for another model ({'; '.join(diffs)})")


def load_weights(model: nn.Module, path: Path, wanted_meta: dict | None = None) -> nn.Module:
    """Load safetensors weights into `model`, checking the saved metadata against `wanted_meta`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint")
    saved = read_meta(path)
    if wanted_meta:
        check_meta(saved, wanted_meta, path)
    try:
        state = load_file(str(path))
    except Exception as exc:  # a header that reads but cut or damaged tensor data
        raise CheckpointMismatch(f"{path}: corrupt checkpoint, its weights cannot be read ({exc})") from None
    diff = state_diff(model.state_dict(), state)
    if diff:
        raise CheckpointMismatch(f"{path}: weights do not fit this model ({diff})")
    model.load_state_dict(state)
    return model


def state_diff(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], show: int = 3) -> str:
    """What keeps `found` from loading where `expected` is wanted (missing and unexpected names, other
    shapes, a few of each and their counts), or "" when it fits."""
    def some(items: list[str]) -> str:
        return ", ".join(items[:show]) + (f" and {len(items) - show} more" if len(items) > show else "")
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} instead of {tuple(v.shape)}" for k, v in expected.items()
              if k in found and found[k].shape != v.shape]
    parts = [f"{len(missing)} missing: {some(missing)}" if missing else "",
             f"{len(extra)} unexpected: {some(extra)}" if extra else "",
             f"{len(shapes)} of another shape: {some(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


#: the file that marks a finished fit (its last weights and optimizer state are then deleted)
FINISHED = "finished.json"


def load_state(path: Path, device: torch.device | str = "cpu") -> dict:
    """A training state (`last_state.pt`: weights, optimizer, epoch, best) read with weights_only; a damaged file is a
    CheckpointMismatch that says what to do (the model's best weights are kept)."""
    try:
        st = torch.load(path, weights_only=True, map_location=device)
        missing = [f"no {k!r}" for k in ("optimizer", "epoch", "best", "best_epoch", "finished") if k not in st]
    except pickle.UnpicklingError as exc:
        missing = [pickle_refusal(exc, path)]
    except Exception as exc:  # cut, empty, not a torch file
        missing = [f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"]
    if missing:
        raise CheckpointMismatch(f"{path}: damaged training state ({', '.join(missing)}), so training cannot resume "
                                 f"from it; delete {Path(path).parent} to train this model again from the start")
    return st


def _curves(history: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    a.plot(history["epoch"], history["train_loss"], label="train")
    a.plot(history["epoch"], history["val_loss"], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(history["epoch"], history["train_acc"], label="train")
    b.plot(history["epoch"], history["val_acc"], label="validation")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy"), b.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def _optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam, or AdamW (decoupled weight decay); ValueError for any other name."""
    if name not in ("adam", "adamw"):
        raise ValueError(f"optimizer: 'adam' or 'adamw', got {name!r}")
    return (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(params, lr=lr, weight_decay=weight_decay,
                                                                         betas=(0.9, 0.999))


#: learning-rate schedules of `fit` (the compared detectors' published recipes); "plateau" ends a fit whose next
#: learning rate would fall below MIN_LR
SCHEDULES = ("constant", "poly", "warmup_cosine", "plateau")
#: which weights `fit` keeps: the lowest validation loss, the highest validation accuracy or validation score
SELECTS = ("val_loss", "val_acc", "val_score")
MIN_LR = 1e-6


def lr_factor(schedule: str, epoch: int, epochs: int, history: Sequence[dict], patience: int) -> float:
    """The factor on the learning rate for `epoch` (1-based) of at most `epochs`, from the rows of the epochs
    before it: "constant" 1; "poly" (1 - epoch / epochs) ** 0.9 (SSP, applied at the start of each epoch);
    "warmup_cosine" e / 2 for the first two epochs e = 0, 1, then a half cosine to the last (GANFingerprint's
    LambdaLR, its first epoch at factor 0 as published); "plateau" divided by 10 each time validation accuracy
    has not risen by 0.001 for `patience` epochs (Wang2020's early stopping, which then goes on at lr / 10)."""
    if schedule == "constant":
        return 1.0
    if schedule == "poly":
        return max(0.0, 1.0 - epoch / epochs) ** 0.9
    if schedule == "warmup_cosine":
        e = epoch - 1
        return e / 2 if e < 2 else 0.5 * (1 + math.cos(math.pi * (e - 2) / max(epochs - 2, 1)))
    if schedule == "plateau":
        factor, best, since = 1.0, -math.inf, 0
        for row in history:
            if row["val_acc"] > best + 0.001:
                best, since = row["val_acc"], 0
            else:
                since += 1
                if since >= max(patience, 1):
                    factor, since = factor / 10, 0
        return factor
    raise ValueError(f"schedule: one of {', '.join(SCHEDULES)}, got {schedule!r}")


def fit(model: nn.Module, step: StepFn, train_batches: Callable[[int], Iterable[Batch]],
        val_batches: Callable[[], Iterable[Batch]], folder: str | Path, meta: dict, *, epochs: int,
        lr: float, weight_decay: float, seed: int, patience: int = 0, device: torch.device | None = None,
        amp: bool = False, progress: bool = True, params: Iterable[nn.Parameter] | None = None,
        stop_after: int | None = None, config_json: str = "", optimizer: str = "adam", schedule: str = "constant",
        select: str = "val_loss", val_score: Callable[[nn.Module], float] | None = None,
        min_delta: float = 0.0) -> FitResult:
    """Train with Adam (or AdamW, decoupled weight decay: `optimizer="adamw"`), keep the minimum-validation-loss
    weights (`select="val_acc"`: the maximum-validation-accuracy ones; `select="val_score"`: those of the highest
    `val_score(model)`, a score on the validation set computed after each epoch and logged as `val_score`), resume from `folder` if it holds an
    unfinished run of the same model (`meta` must match), skip training if it holds a finished one. The learning
    rate follows `schedule` (`lr_factor`); with "plateau", `patience` paces its drops and the fit ends when the
    next rate would fall below MIN_LR.

    `train_batches(epoch)` yields the batches of an epoch (seed them with the epoch); `val_batches()` the
    validation batches. `patience` > 0 stops after that many epochs without a better validation loss; with
    `min_delta`, an epoch counts as better for patience only when it beats the last such epoch by more than
    `min_delta` (the units of what selects the weights: Keras's and Lightning's `min_delta`), while the weights
    kept are still those of the best epoch run.
    `stop_after` ends the call after that epoch as if interrupted (for tests). `config_json` (the run's
    settings) is saved beside the weights as config.json.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    device = device or torch.device("cpu")
    model.to(device)
    meta = {**meta, "epochs": epochs, "lr": lr, "weight_decay": weight_decay, "seed": seed, "patience": patience}
    for key, value, default in (("optimizer", optimizer, "adam"), ("schedule", schedule, "constant"),
                                ("select", select, "val_loss"), ("min_delta", min_delta, 0.0)):
        if value != default:  # recorded only when not the default, so existing checkpoints still match
            meta[key] = value
    if select not in SELECTS or (select == "val_score") != (val_score is not None):
        raise ValueError(f"select: one of {', '.join(SELECTS)} ('val_score' with a val_score function), got {select!r}")
    lr_factor(schedule, 1, epochs, [], patience)  # an unknown schedule is said before anything is written
    opt = _optimizer(optimizer, params if params is not None else [p for p in model.parameters() if p.requires_grad],
                     lr, weight_decay)
    st = _resume(folder, meta, model, opt, device)
    resumed_from = st.start - 1
    dist = current()
    if dist.main and not st.finished:  # a finished fit is loaded, and nothing of it is written again
        atomic_write(folder / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
        if config_json:
            atomic_write(folder / "config.json", lambda tmp: Path(tmp).write_text(config_json))
    net = dist.wrap(model, device)
    use_amp = amp and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext
    bar = tqdm(range(st.start, epochs + 1), desc=meta.get("name", folder.name), disable=not progress or not dist.main,
               leave=False)
    for epoch in bar if not st.finished else []:
        torch.manual_seed(seed * 100_003 + epoch)
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(schedule, epoch, epochs, st.history, patience)
        t0 = time.perf_counter()
        net.train()
        tl, tc, tn = _pass(net, step, train_batches(epoch), dist, autocast, opt)
        model.eval()
        vl, vc, vn = _pass(model, step, val_batches(), dist, autocast)
        row = {"epoch": epoch, "train_loss": tl / max(tn, 1), "train_acc": tc / max(tn, 1),
               "val_loss": vl / max(vn, 1), "val_acc": vc / max(vn, 1)}
        if val_score is not None:
            row["val_score"] = float(val_score(model))
        row["seconds"] = time.perf_counter() - t0
        st.history.append(row)
        key = row["val_loss"] if select == "val_loss" else -row[select]  # lower is better
        if dist.agree(key < st.best):  # decided on rank 0, the same on every process
            st.best, st.best_epoch = key, epoch
            if dist.main:
                save_weights(model, folder / "best.safetensors", meta)
        if key < st.mark - min_delta:  # an improvement that resets patience
            st.mark, st.mark_epoch = key, epoch
        if schedule == "plateau":  # patience paces the rate; the fit ends when it is spent
            st.finished = epoch == epochs or lr * lr_factor(schedule, epoch + 1, epochs, st.history, patience) < MIN_LR
        else:
            st.finished = (patience > 0 and epoch - st.mark_epoch >= patience) or epoch == epochs
        if dist.main:
            _checkpoint(folder, model, opt, meta, st, epoch)
        bar.set_postfix(val_loss=f"{row['val_loss']:.4f}", best=st.best_epoch)
        if st.finished or (stop_after is not None and epoch >= stop_after):
            break
    bar.close()
    dist.barrier()  # every process returns once rank 0 has written
    table = pd.DataFrame(st.history)
    ran = len(table) > resumed_from  # epochs ran in this call (else the log and curves are on disk already)
    if len(table) and dist.main and (ran or not (folder / "log.csv").exists()):
        atomic_write(folder / "log.csv", lambda tmp: table.to_csv(tmp, index=False))
    if len(table) and dist.main and (ran or not (folder / "curves.png").exists()):
        _curves(table, folder / "curves.png", meta.get("name", folder.name))
    best_loss = next((h["val_loss"] for h in st.history if h["epoch"] == st.best_epoch), st.best)
    return FitResult(best_epoch=st.best_epoch, best_val_loss=best_loss, history=table, folder=folder,
                     resumed_from=resumed_from)


@dataclass
class _FitState:
    """Where a fit stands: the next epoch, the best validation loss and its epoch, whether it is finished, the
    rows of the epochs run so far, and the loss and epoch of the last improvement by more than `min_delta` (what
    patience counts from; the best ones when `min_delta` is 0)."""

    start: int = 1
    best: float = math.inf
    best_epoch: int = 0
    finished: bool = False
    history: list[dict] = field(default_factory=list)
    mark: float = math.inf
    mark_epoch: int = 0

    def __post_init__(self) -> None:
        if self.mark == math.inf:  # a state saved before min_delta existed: patience counted from the best
            self.mark, self.mark_epoch = self.best, self.best_epoch


def _resume(folder: Path, meta: dict, model: nn.Module, opt: torch.optim.Optimizer, device: torch.device) -> _FitState:
    """The state saved in `folder` (a finished fit, or an unfinished one: its last weights and optimizer state
    loaded into `model` and `opt`), checked against `meta`; a fresh state when there is none."""
    meta_path, done, state_path = folder / "meta.json", folder / FINISHED, folder / "last_state.pt"

    def history(start: int) -> list[dict]:
        rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
        return [h for h in rows if h["epoch"] < start]
    if meta_path.is_file() and done.is_file():
        check_meta(json.loads(meta_path.read_text()), meta, meta_path)
        st = json.loads(done.read_text())
        start = int(st["epoch"]) + 1
        return _FitState(start, float(st["best"]), int(st["best_epoch"]), True, history(start))
    if meta_path.is_file() and state_path.is_file():
        check_meta(json.loads(meta_path.read_text()), meta, meta_path)
        st = load_state(state_path, device)
        if "model" in st:
            _load_state_dict(model, st["model"], state_path)
        else:  # a state written before the weights were part of it
            load_weights(model, folder / "last.safetensors")
        opt.load_state_dict(st["optimizer"])
        start = int(st["epoch"]) + 1
        return _FitState(start, float(st["best"]), int(st["best_epoch"]), bool(st["finished"]), history(start),
                         float(st.get("mark", math.inf)), int(st.get("mark_epoch", 0)))
    return _FitState()


def _pass(net: nn.Module, step: StepFn, batches: Iterable[Batch], dist: Dist, autocast,
          opt: torch.optim.Optimizer | None = None) -> list[float]:
    """Loss x samples, correct and samples over `batches` (this process's share of each), summed over every
    process; a training pass (a step of `opt` per batch) when `opt` is given, else without gradients."""
    loss_sum, correct_sum, n_sum = 0.0, 0.0, 0
    for batch in batches:
        batch = dist.shard(batch)
        with (nullcontext() if opt is not None else torch.no_grad()), autocast():
            loss, correct, n = step(net, batch)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loss_sum += float(loss.detach()) * n
        correct_sum += correct
        n_sum += n
    return dist.total([loss_sum, correct_sum, n_sum])


def _checkpoint(folder: Path, model: nn.Module, opt: torch.optim.Optimizer, meta: dict, st: _FitState,
                epoch: int) -> None:
    """Commit the epoch: the log first (rows past the saved state are dropped on resume), then one file that
    is the commit point: the training state (weights, optimizer, epoch) or, once finished, `finished.json` (the
    state is then deleted: the best weights are what is used from then on). A job stopped at any point (a
    time limit's signal, a kill) resumes from a consistent epoch."""
    state_path = folder / "last_state.pt"
    atomic_write(folder / "log.jsonl", lambda tmp: Path(tmp).write_text(
        "".join(json.dumps(h) + "\n" for h in st.history)))
    if st.finished:
        atomic_write(folder / FINISHED, lambda tmp: Path(tmp).write_text(json.dumps(
            {"epoch": epoch, "best": st.best, "best_epoch": st.best_epoch})))
        for p in (state_path, folder / "last.safetensors"):
            p.unlink(missing_ok=True)
        return
    atomic_write(state_path, lambda tmp: torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                    "epoch": epoch, "best": st.best, "best_epoch": st.best_epoch,
                                                    "mark": st.mark, "mark_epoch": st.mark_epoch,
                                                    "finished": False}, tmp))


def _load_state_dict(model: nn.Module, sd: dict, path: Path) -> None:
    """Weights saved in a training state, or CheckpointMismatch saying how they differ."""
    diff = state_diff(model.state_dict(), sd)
    if diff:
        raise CheckpointMismatch(f"{path}: the weights do not fit this model ({diff})")
    model.load_state_dict(sd)


def cut_short(folder: str | Path) -> bool:
    """True if the finished fit in `folder` ran out of epochs while its validation loss was still falling (its
    best epoch is its last, and that last epoch is the cap): more epochs would likely have given a better model."""
    folder = Path(folder)
    try:
        st = json.loads((folder / FINISHED).read_text())
        cap = int(json.loads((folder / "meta.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        return False
    return int(st["epoch"]) >= cap and int(st["best_epoch"]) == int(st["epoch"])


def is_finished(folder: str | Path) -> bool:
    """True if `folder` holds a finished fit (its best weights can be used)."""
    if (Path(folder) / FINISHED).is_file():
        return True
    p = Path(folder) / "last_state.pt"  # a fit finished before finished.json existed keeps its state
    return p.is_file() and bool(load_state(p)["finished"])
