"""Training: one explicit step, and fit() that repeats it over epochs.

The step is four lines, the same in every framework:

    optimizer.zero_grad()        # gradients accumulate (tensor.py), so clear the last step's
    parts = loss_fn(x)           # forward: a dict of scalar Tensors, "loss" among them
    parts["loss"].backward()     # reverse mode: d loss / d every weight
    optimizer.step()             # move every weight against its gradient

fit() adds what Keras's ``Model.fit`` does around it: shuffled mini-batches, a
validation pass, a history of every metric, early stopping that restores the
best weights, a progress line per epoch, and a clean stop when a loss turns NaN
or infinite. ``save_checkpoint`` / ``load_checkpoint`` carry a run across an
interruption so that it continues exactly.

Device traffic: each batch is moved to the device explicitly (``to_device``);
the metrics are summed on the device and read back at the end of the training
pass and of the validation pass, so a GPU is never made to wait for the host in
the middle of an epoch.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from . import backend
from .nn.module import read_npz, save_npz
from .tensor import Tensor, as_int, no_grad


def to_device(x: np.ndarray) -> Tensor:
    """A host batch as a Tensor on the device.

    The one place where integer images are rescaled: uint8 pixels 0..255 cross as bytes
    and become float32 in [0, 1] (x / 255) on the device (moving one byte per pixel is
    four times cheaper than moving a float32). Every other dtype is converted as
    ``Tensor(x)`` converts it, which never rescales. fit() and evaluate() use this.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"to_device: expected a host NumPy array, got {type(x).__name__}")
    data = backend.asarray(x)
    if x.dtype == np.uint8:
        data = backend.xp().astype(data, backend.dtype("float32")) / 255
    return Tensor(data)


def binarize(x: Tensor) -> Tensor:
    """A fresh Bernoulli draw of every pixel, 1 with probability x (intensities in [0, 1]).

    Dynamic binarisation (Burda et al. 2016): called on every training batch, it draws from
    the backend's generator, which fit() reseeds each epoch, so each epoch sees new binary
    images and a resumed run sees the same ones."""
    xp = backend.xp()
    u = backend.uniform(x.shape, x.dtype)
    return Tensor(xp.astype(u < x.data, x.dtype))


def train_step(loss_fn, optimizer, x: Tensor) -> dict:
    """One step of gradient descent on the batch `x`; returns loss_fn's dict."""
    optimizer.zero_grad()
    parts = _loss_parts(loss_fn(x), "train_step")
    parts["loss"].backward()
    optimizer.step()
    return parts


def _loss_parts(parts, who: str) -> dict:
    """loss_fn's answer, refused unless it is a dict of Tensors holding "loss"."""
    tensors = isinstance(parts, dict) and all(isinstance(v, Tensor) for v in parts.values())
    if not tensors or "loss" not in parts:
        kinds = (
            sorted({type(v).__name__ for v in parts.values()}) if isinstance(parts, dict) else []
        )
        got = (
            f"a dict with keys {sorted(parts)} and values {kinds}"
            if isinstance(parts, dict)
            else type(parts).__name__
        )
        raise ValueError(
            f"{who}: loss_fn must return a dict of scalar Tensors with key 'loss' "
            f"(e.g. {{'loss': loss}}), got {got}"
        )
    return parts


class History:
    """What fit() has seen, one entry per finished epoch.

    ``metrics["loss"]``, ``metrics["val_kl"]``, ...: the epoch's per-example mean of each
    metric; ``seconds``: each epoch's training time (the validation pass excluded);
    ``seed``: the seed the run's epochs draw from;
    ``best_weights``: host copies of the weights at the best epoch so far (kept only
    with early stopping); ``stopped``: why fit stopped before its last epoch, or None.
    """

    def __init__(self, metrics=None, seconds=None, seed=None, best_weights=None, stopped=None):
        self.metrics: dict[str, list[float]] = metrics or {}
        self.seconds: list[float] = seconds or []
        self.seed, self.best_weights, self.stopped = seed, best_weights, stopped

    def __len__(self) -> int:
        return len(self.seconds)

    def __getitem__(self, name: str) -> list[float]:
        """``history["val_loss"]``: one metric's list, as Keras's ``history.history[name]``."""
        return self.metrics[name]

    def best_epoch(self, monitor: str) -> int:
        """The index of the epoch with the lowest `monitor` (the first, at a tie)."""
        return int(np.argmin(self.metrics[monitor]))

    def to_json(self) -> str:
        # json writes a float as its shortest exact repr, so the numbers survive bit for bit
        return json.dumps(
            {
                "metrics": self.metrics,
                "seconds": self.seconds,
                "seed": self.seed,
                "stopped": self.stopped,
            }
        )

    @classmethod
    def from_json(cls, text: str, best_weights=None) -> History:
        """The History to_json wrote; ValueError if a field is missing or the lengths disagree."""
        data = json.loads(text)
        fields = {"metrics", "seconds", "seed", "stopped"}
        if not isinstance(data, dict) or set(data) != fields:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"History.from_json: expected the fields {sorted(fields)}, got {got}")
        if any(len(values) != len(data["seconds"]) for values in data["metrics"].values()):
            raise ValueError(
                "History.from_json: the metrics and seconds hold different numbers of epochs"
            )
        return cls(**data, best_weights=best_weights)

    def to_csv(self) -> str:
        """One row per epoch: epoch (from 1), seconds, then every metric."""
        names = list(self.metrics)
        rows = [",".join(["epoch", "seconds", *names])]
        for i in range(len(self)):
            values = [self.seconds[i]] + [self.metrics[k][i] for k in names]
            rows.append(",".join([str(i + 1)] + [repr(float(v)) for v in values]))
        return "\n".join(rows) + "\n"


class _Sums:
    """Running sums of each metric over the examples, kept on the device: a per-example
    mean (reduction "mean") is weighted by the batch size, a batch sum is added as it is.

    Summed in float64: 18 batches of losses near -80,000 (-800 per image times 100)
    would lose the last digits of the mean in float32.
    """

    def __init__(self, prefix: str = ""):
        self.prefix, self.sums, self.count = prefix, {}, 0

    def add(self, parts: dict, n: int, reduction: str = "mean") -> None:
        xp = backend.xp()
        for name, value in _loss_parts(parts, "fit").items():
            if value.ndim != 0:
                raise ValueError(
                    f"fit: loss_fn must return scalar Tensors; {name!r} has shape {value.shape}"
                )
            weighted = xp.astype(value.data, xp.float64)
            if reduction == "mean":
                weighted = weighted * n
            key = self.prefix + name
            self.sums[key] = self.sums[key] + weighted if key in self.sums else weighted
        self.count += n


def _read_means(*all_sums: _Sums) -> dict[str, float]:
    """The means of every metric, read from the device in ONE transfer."""
    keys = [(s, k) for s in all_sums for k in s.sums]
    host = backend.to_numpy(backend.xp().stack([s.sums[k] for s, k in keys]))
    return {k: float(v) / s.count for (s, k), v in zip(keys, host)}


def _batches(order: np.ndarray, batch_size: int):
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _validation_sums(
    model, loss_fn, x: np.ndarray, batch_size: int, prefix: str, reduction: str
) -> _Sums:
    was_training = model.training
    model.eval()
    sums = _Sums(prefix)
    with no_grad():
        for idx in _batches(np.arange(len(x)), batch_size):
            sums.add(_loss_parts(loss_fn(to_device(x[idx])), "evaluate"), len(idx), reduction)
    model.train(was_training)
    return sums


def evaluate(
    model, loss_fn, x: np.ndarray, batch_size: int = 100, reduction: str = "mean"
) -> dict[str, float]:
    """The per-example mean of every metric of loss_fn over `x`, in evaluation mode, without
    gradients (`reduction` as in fit; uint8 images are scaled to [0, 1], see to_device)."""
    _check_reduction("evaluate", reduction)
    _check_rows("evaluate", "x", x)
    batch_size = as_int(batch_size, "evaluate", "batch_size", 1)
    return _read_means(_validation_sums(model, loss_fn, x, batch_size, "", reduction))


def _check_reduction(who: str, reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{who}: reduction must be 'mean' or 'sum', got {reduction!r}")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed epoch `epoch` of a run seeded with `seed` draws from.

    Every epoch restarts the random stream (shuffling and the model's noise) from
    (seed, epoch), so what an epoch draws depends on nothing else: a resumed run
    draws exactly what the uninterrupted run drew, on every backend, without saving
    a generator's internal state. SeedSequence mixes the pair into a well-spread seed.
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def fit(
    model,
    loss_fn,
    optimizer,
    x_train: np.ndarray,
    x_val: np.ndarray | None = None,
    *,
    epochs: int,
    batch_size: int = 32,
    seed: int = 0,
    patience: int | None = None,
    verbose: bool = True,
    on_epoch_end=None,
    history: History | None = None,
    step=None,
    reduction: str = "mean",
    kl_weight=None,
) -> History:
    """Train `model` for up to `epochs` epochs; return the History.

    loss_fn(batch) -> dict of scalar Tensors with key "loss" (minimised); the other
        entries are metrics ("kl", "nll"), recorded with it. Each value is a per-example
        mean over the batch (reduction="mean", e.g. VAE.elbo's default): fit multiplies
        it by the batch size, sums, and divides by the number of examples, so the epoch's
        number is the mean over all examples even when the last batch is smaller. For a
        loss summed over the batch (VAE.elbo(reduction="sum"), PyTorch's
        reduction="sum"), pass reduction="sum": the sums are added as they are. Either
        way the history holds per-example means.
    x_train, x_val: host NumPy arrays, one example per row; uint8 images are scaled
        to [0, 1] on the device (to_device, the one place that rescales; Tensor() and
        VAE.elbo never do, and a Bernoulli likelihood refuses data outside [0, 1]).
    seed: every epoch e starts by reseeding the backend's one global random stream
        (backend.seed) from (seed, e) (see epoch_seed): the shuffle and every draw made
        during the epoch (the model's noise, and any draw of your own in loss_fn or
        on_epoch_end) come from it, and after fit the stream is where the last epoch
        left it. Reseed yourself after fit if later draws must not depend on the run.
    patience: stop when the monitored loss ("val_loss", or "loss" without x_val) has
        not improved for this many epochs, and restore the weights of the best epoch.
    on_epoch_end(history): called after every finished epoch (e.g. to save a checkpoint).
    history: a History from load_checkpoint to continue; training resumes at epoch
        len(history) and `epochs` counts from the start of the run, as in Keras.
    step(batch) -> dict: one training step; by default train_step(loss_fn, optimizer, batch).
    kl_weight: a number, or a function of the epoch (from 0) such as vae.kl_warmup(10): set as
        model.beta (the KL weight VAE.elbo trains with) before every epoch and recorded in the
        history as "beta". None leaves model.beta alone.

    history.seconds and the progress line time the training pass only: validation is
    run after the clock stops.

    A NaN or infinite metric stops training, restores the weights from the start of
    that epoch (the last good ones) and records why in ``history.stopped``.
    """
    history = history if history is not None else History(seed=seed)
    if history.seed != seed:
        raise ValueError(
            f"fit: this run was started with seed {history.seed}, not {seed}; "
            "resuming with another seed would not continue it"
        )
    epochs = as_int(epochs, "fit", "epochs", 0)
    seed = as_int(seed, "fit", "seed", 0)
    batch_size = as_int(batch_size, "fit", "batch_size", 1)
    patience = None if patience is None else as_int(patience, "fit", "patience", 0)
    _check_rows("fit", "x_train", x_train)
    if x_val is not None:
        _check_rows("fit", "x_val", x_val)  # an empty one would silently skip validation
    _check_reduction("fit", reduction)
    step = step or (lambda x: train_step(loss_fn, optimizer, x))
    monitor = "val_loss" if x_val is not None else "loss"
    steps = math.ceil(len(x_train) / batch_size)
    model.train()

    while len(history) < epochs and history.stopped is None:
        epoch = len(history)
        backend.seed(epoch_seed(seed, epoch))
        last_good = model.state_dict(), optimizer.state_dict()  # host copies, to undo a blow-up
        start = time.perf_counter()
        if kl_weight is not None:
            model.beta = kl_weight(epoch) if callable(kl_weight) else kl_weight

        train = _Sums()
        for idx in _batches(backend.permutation(len(x_train)), batch_size):
            train.add(step(to_device(x_train[idx])), len(idx), reduction)
        means = _read_means(train)  # the read waits for the device, so the time is the real one
        seconds = time.perf_counter() - start
        if x_val is not None:
            val = _validation_sums(model, loss_fn, x_val, batch_size, "val_", reduction)
            means.update(_read_means(val))

        broken = [k for k, v in means.items() if not math.isfinite(v)]
        if broken:
            model.load_state_dict(last_good[0])
            optimizer.load_state_dict(last_good[1])  # Adam's moments would hold the NaNs too
            history.stopped = (
                f"epoch {epoch + 1}: {broken[0]} became {means[broken[0]]}; stopped and restored "
                f"the weights and optimiser state from the start of that epoch "
                f"(try a smaller learning rate)"
            )
            print(f"fit: {history.stopped}", file=sys.stderr)
            break

        if kl_weight is not None:
            means["beta"] = float(model.beta)
        for k, v in means.items():
            history.metrics.setdefault(k, []).append(v)
        history.seconds.append(seconds)
        if patience is not None:
            best = history.best_epoch(monitor)
            if best == epoch:
                history.best_weights = model.state_dict()
            elif epoch - best >= patience:
                history.stopped = (
                    f"early stopping: {monitor} has not improved for {patience} epochs; "
                    f"best was epoch {best + 1}"
                )
        if verbose:
            print(
                f"Epoch {epoch + 1}/{epochs}\n{_progress_line(means, steps, seconds)}", flush=True
            )
            if history.stopped:
                print(history.stopped, flush=True)
        if on_epoch_end is not None:
            on_epoch_end(history)

    if patience is not None and history.best_weights is not None:
        model.load_state_dict(history.best_weights)
    return history


def _check_rows(who: str, name: str, x) -> None:
    if not hasattr(x, "shape") or len(x.shape) == 0 or len(x) == 0:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{who}: {name} must be an array with at least one row, got {shape}")


def _progress_line(means: dict, steps: int, seconds: float) -> str:
    """Keras's one line per epoch: steps, time, then the metrics, training before validation."""
    names = sorted(k for k in means if not k.startswith("val_")) + sorted(
        k for k in means if k.startswith("val_")
    )
    metrics = " - ".join(f"{k}: {means[k]:.4f}" for k in names)
    return f"{steps}/{steps} - {seconds:.1f}s - {1000 * seconds / steps:.0f}ms/step - {metrics}"


# --- checkpoints ---------------------------------------------------------------


def save_checkpoint(path, model, optimizer, history: History) -> None:
    """Everything needed to continue a run exactly, in one ``.npz`` written atomically.

    Weights, optimiser state (Adam's moments and step count), the history (whose
    length is the epoch count), the best weights for early stopping, and the random
    state: each epoch restarts the stream from (history.seed, epoch), so the seed and
    the epoch count are all of it (see epoch_seed).
    """
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optimizer/{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update({f"best/{k}": v for k, v in (history.best_weights or {}).items()})
    arrays["history"] = np.array(history.to_json())
    arrays["epoch"] = np.array(len(history))  # for a person inspecting the file
    save_npz(path, arrays)


def load_checkpoint(path, model, optimizer) -> History:
    """Load what save_checkpoint wrote into `model` (already built) and `optimizer`;
    return the History to pass to fit(history=...).

    Every part (weights, optimiser state, best weights, history) is checked before
    either the model or the optimiser is touched, so a bad file changes nothing; any
    problem is one ValueError naming the file (FileNotFoundError if there is none)."""
    arrays = read_npz(path)
    groups = {"model/": {}, "optimizer/": {}, "best/": {}}
    for key, value in arrays.items():
        for prefix, group in groups.items():
            if key.startswith(prefix):
                group[key[len(prefix) :]] = value
    try:
        model.check_state_dict(groups["model/"])
        optimizer.check_state_dict(groups["optimizer/"])
        if groups["best/"]:
            model.check_state_dict(groups["best/"])
        if "history" not in arrays:
            raise ValueError("it has no history")
        best = groups["best/"] or None
        history = History.from_json(str(arrays["history"][()]), best_weights=best)
    except (ValueError, TypeError) as exc:  # (json's errors are ValueErrors)
        raise ValueError(f"{path}: cannot resume from this checkpoint: {exc}") from None
    model.load_state_dict(groups["model/"])
    optimizer.load_state_dict(groups["optimizer/"])
    return history
