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
the metrics are summed on the device and read back once per epoch, so a GPU is
never made to wait for the host in the middle of an epoch.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from . import backend
from .nn.module import save_npz
from .tensor import Tensor, no_grad


def to_device(x: np.ndarray) -> Tensor:
    """A host batch as a Tensor on the device.

    uint8 images cross as bytes and become float32 in [0, 1] on the device: moving
    one byte per pixel is four times cheaper than moving a float32.
    """
    data = backend.asarray(x)
    if x.dtype == np.uint8:
        data = backend.xp().astype(data, backend.dtype("float32")) / 255
    return Tensor(data)


def train_step(loss_fn, optimizer, x: Tensor) -> dict:
    """One step of gradient descent on the batch `x`; returns loss_fn's dict."""
    optimizer.zero_grad()
    parts = loss_fn(x)
    parts["loss"].backward()
    optimizer.step()
    return parts


class History:
    """What fit() has seen, one entry per finished epoch.

    ``metrics["loss"]``, ``metrics["val_kl"]``, ...: the epoch's mean of each metric;
    ``seconds``: each epoch's wall time; ``seed``: the seed the run's epochs draw from;
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
        return cls(**json.loads(text), best_weights=best_weights)

    def to_csv(self) -> str:
        """One row per epoch: epoch (from 1), seconds, then every metric."""
        names = list(self.metrics)
        rows = [",".join(["epoch", "seconds", *names])]
        for i in range(len(self)):
            values = [self.seconds[i]] + [self.metrics[k][i] for k in names]
            rows.append(",".join([str(i + 1)] + [repr(float(v)) for v in values]))
        return "\n".join(rows) + "\n"


class _Sums:
    """Running sums of each metric, weighted by batch size, kept on the device.

    Summed in float64: 18 batches of losses near -80,000 (-800 per image times 100)
    would lose the last digits of the mean in float32.
    """

    def __init__(self, prefix: str = ""):
        self.prefix, self.sums, self.count = prefix, {}, 0

    def add(self, parts: dict, n: int) -> None:
        xp = backend.xp()
        for name, value in parts.items():
            if value.ndim != 0:
                raise ValueError(
                    f"fit: loss_fn must return scalar Tensors; {name!r} has shape {value.shape}"
                )
            weighted = xp.astype(value.data, xp.float64) * n
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


def _validation_sums(model, loss_fn, x: np.ndarray, batch_size: int, prefix: str) -> _Sums:
    was_training = model.training
    model.eval()
    sums = _Sums(prefix)
    with no_grad():
        for idx in _batches(np.arange(len(x)), batch_size):
            sums.add(loss_fn(to_device(x[idx])), len(idx))
    model.train(was_training)
    return sums


def evaluate(model, loss_fn, x: np.ndarray, batch_size: int = 100) -> dict[str, float]:
    """The mean of every metric of loss_fn over `x`, in evaluation mode, without gradients."""
    return _read_means(_validation_sums(model, loss_fn, x, batch_size, ""))


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
) -> History:
    """Train `model` for up to `epochs` epochs; return the History.

    loss_fn(batch) -> dict of scalar Tensors with key "loss" (minimised); the other
        entries are metrics ("kl", "nll"), averaged and recorded with it.
    x_train, x_val: host NumPy arrays, one example per row (uint8 images are scaled
        to [0, 1] on the device, see to_device).
    seed: the random stream of epoch e restarts from (seed, e) (see epoch_seed).
    patience: stop when the monitored loss ("val_loss", or "loss" without x_val) has
        not improved for this many epochs, and restore the weights of the best epoch.
    on_epoch_end(history): called after every finished epoch (e.g. to save a checkpoint).
    history: a History from load_checkpoint to continue; training resumes at epoch
        len(history) and `epochs` counts from the start of the run, as in Keras.
    step(batch) -> dict: one training step; by default train_step(loss_fn, optimizer, batch).

    A NaN or infinite metric stops training, restores the weights from the start of
    that epoch (the last good ones) and records why in ``history.stopped``.
    """
    history = history if history is not None else History(seed=seed)
    if history.seed != seed:
        raise ValueError(
            f"fit: this run was started with seed {history.seed}, not {seed}; "
            "resuming with another seed would not continue it"
        )
    if len(x_train) == 0 or batch_size < 1:
        raise ValueError(
            f"fit: need training data and batch_size >= 1, got {len(x_train)} rows, batch_size "
            f"{batch_size}"
        )
    step = step or (lambda x: train_step(loss_fn, optimizer, x))
    monitor = "val_loss" if x_val is not None else "loss"
    steps = math.ceil(len(x_train) / batch_size)
    model.train()

    while len(history) < epochs and history.stopped is None:
        epoch = len(history)
        backend.seed(epoch_seed(seed, epoch))
        last_good = model.state_dict(), optimizer.state_dict()  # host copies, to undo a blow-up
        start = time.perf_counter()

        train = _Sums()
        for idx in _batches(backend.permutation(len(x_train)), batch_size):
            train.add(step(to_device(x_train[idx])), len(idx))
        parts = [train]
        if x_val is not None:
            parts.append(_validation_sums(model, loss_fn, x_val, batch_size, "val_"))
        means = _read_means(*parts)  # the metrics' one device-to-host read of the epoch
        seconds = time.perf_counter() - start

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
    return the History to pass to fit(history=...)."""
    with np.load(path, allow_pickle=False) as f:
        groups = {"model/": {}, "optimizer/": {}, "best/": {}}
        for key in f.files:
            for prefix, group in groups.items():
                if key.startswith(prefix):
                    group[key[len(prefix) :]] = f[key]
        text = str(f["history"][()])
    model.load_state_dict(groups["model/"])
    optimizer.load_state_dict(groups["optimizer/"])
    return History.from_json(text, best_weights=groups["best/"] or None)
