"""fit(), the training step and checkpoints (minivae.train), on every backend."""

import numpy as np
import pytest

import minivae
from minivae import backend, train
from minivae import functional as F
from minivae.nn import Dense, Module, Sequential
from minivae.optim import SGD, Adam
from minivae.tensor import Tensor


def _data(n=40, d=6, seed=1):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _autoencoder(seed=0):
    """A small model whose weights depend only on `seed`."""
    backend.seed(seed)
    model = Sequential([Dense(8, "tanh"), Dense(6)])
    model.build((6,))
    return model


def _mse(model):
    def loss_fn(x):
        err = model(x) - x
        return {"loss": (err * err).sum(axis=-1).mean(), "mae": F.abs(err).mean()}

    return loss_fn


def _run(epochs, seed=0, history=None, model=None, optimizer=None, verbose=False, **kw):
    model = _autoencoder() if model is None else model
    optimizer = Adam(model.parameters(), lr=1e-2) if optimizer is None else optimizer
    x = _data()
    history = train.fit(
        model,
        _mse(model),
        optimizer,
        x[:32],
        x[32:],
        epochs=epochs,
        batch_size=10,
        seed=seed,
        verbose=verbose,
        history=history,
        **kw,
    )
    return model, optimizer, history


class Scalar(Module):
    """One weight w, starting at `value`."""

    def __init__(self, value):
        self.w = Tensor(backend.full((1,), value, backend.dtype("float32")), requires_grad=True)


def test_loss_falls_and_history_records_every_metric():
    _, _, history = _run(epochs=6)
    assert set(history.metrics) == {"loss", "mae", "val_loss", "val_mae"}
    assert history["val_mae"] is history.metrics["val_mae"]
    assert all(len(v) == 6 for v in history.metrics.values()) and len(history) == 6
    assert history.metrics["loss"][-1] < 0.7 * history.metrics["loss"][0]
    assert history.metrics["val_loss"][-1] < history.metrics["val_loss"][0]
    assert history.stopped is None


def test_same_seed_same_history_other_seed_other_history():
    a = _run(epochs=3, seed=5)[2].metrics
    b = _run(epochs=3, seed=5)[2].metrics
    c = _run(epochs=3, seed=6)[2].metrics  # same initial weights, other shuffling
    assert a == b
    assert a["loss"] != c["loss"]


def test_epoch_means_weight_each_batch_by_its_size():
    # 10 rows in batches of 4, 4, 2: the mean of batch means would be wrong
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    means = train.evaluate(Sequential([]), lambda b: {"loss": b.mean()}, x, batch_size=4)
    assert means == {"loss": pytest.approx(4.5, abs=1e-12)}


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    full_model, _, full = _run(epochs=4, patience=10)

    model, optimizer, first = _run(epochs=2, patience=10)
    train.save_checkpoint(tmp_path / "ckpt.npz", model, optimizer, first)
    model = _autoencoder(seed=99)  # other weights: the checkpoint must overwrite them
    optimizer = Adam(model.parameters(), lr=1e-2)
    history = train.load_checkpoint(tmp_path / "ckpt.npz", model, optimizer)
    assert len(history) == 2 and optimizer.t == 2 * 4  # 32 training rows in batches of 10
    model, _, resumed = _run(
        epochs=4, history=history, model=model, optimizer=optimizer, patience=10
    )

    assert resumed.metrics == full.metrics  # bit for bit
    for (name, a), (_, b) in zip(full_model.named_parameters(), model.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary file left


def test_resuming_with_another_seed_is_refused():
    _, _, history = _run(epochs=1, seed=0)
    with pytest.raises(ValueError, match="seed 0, not 1"):
        _run(epochs=2, seed=1, history=history)


def test_early_stopping_restores_the_best_weights():
    # Training pulls w towards +1, validation wants -1: the validation loss only gets worse,
    # so the best epoch is the first, and patience 2 stops after the third.
    model = Scalar(0.0)
    seen = []

    def loss_fn(x):
        d = x - model.w
        return {"loss": (d * d).mean()}

    history = train.fit(
        model,
        loss_fn,
        SGD(model.parameters(), lr=0.1),
        np.ones((8, 1), np.float32),
        -np.ones((8, 1), np.float32),
        epochs=50,
        batch_size=4,
        patience=2,
        verbose=False,
        on_epoch_end=lambda h: seen.append(model.w.numpy().copy()),
    )
    assert len(history) == 3 and history.best_epoch("val_loss") == 0
    assert "early stopping" in history.stopped and "epoch 1" in history.stopped
    np.testing.assert_array_equal(model.w.numpy(), seen[0])
    assert not np.array_equal(seen[0], seen[-1])


def test_nan_stops_training_and_keeps_the_last_good_weights(capsys):
    # loss log(w), SGD lr 0.4 from w = 1: w = 0.6 after epoch 1, then -0.067, where log is NaN.
    model = Scalar(1.0)
    ones = np.ones((4, 1), np.float32)
    with np.errstate(invalid="ignore"):
        history = train.fit(
            model,
            lambda x: {"loss": F.log(model.w).sum()},
            SGD(model.parameters(), lr=0.4),
            ones,
            ones,
            epochs=10,
            batch_size=4,
            verbose=False,
        )
    assert len(history) == 1 and np.isfinite(history.metrics["val_loss"]).all()
    assert "epoch 2: val_loss became nan" in history.stopped
    assert "epoch 2: val_loss became nan" in capsys.readouterr().err  # said even when quiet
    np.testing.assert_allclose(model.w.numpy(), [0.6], rtol=1e-6)


def test_nan_stop_restores_the_optimiser_state_too():
    # Adam's moments see the NaN gradient of the bad epoch; they must be rolled back with the
    # weights.
    model = Scalar(1.0)
    ones = np.ones((4, 1), np.float32)
    opt = Adam(model.parameters(), lr=0.7)
    with np.errstate(invalid="ignore", divide="ignore"):
        history = train.fit(
            model,
            lambda x: {"loss": F.log(model.w).sum()},
            opt,
            ones,
            ones,
            epochs=10,
            batch_size=4,
            verbose=False,
        )
    assert history.stopped is not None and "optimiser state" in history.stopped
    assert opt.t == len(history)  # one step per epoch: the bad epoch's step is undone
    state = opt.state_dict()
    assert np.isfinite(state["m.0"]).all() and np.isfinite(state["v.0"]).all()
    assert np.isfinite(model.w.numpy()).all()


def test_metrics_are_read_from_the_device_once_per_epoch(monkeypatch):
    # The number of device-to-host reads must not grow with the number of batches.
    reads = []
    real = backend.to_numpy
    monkeypatch.setattr(backend, "to_numpy", lambda x: reads.append(1) or real(x))
    if minivae.get_backend().name == "strict":
        # float(x), bool(x), int(x) of a device array are reads too (on CuPy each waits for the GPU)
        array_type = type(backend.asarray([0.0]))
        for name in ("__float__", "__bool__", "__int__", "__index__"):
            method = getattr(array_type, name)
            monkeypatch.setattr(
                array_type, name, lambda self, _m=method: reads.append(1) or _m(self)
            )
    counts = []
    for batch_size in (16, 2):  # 2 and 16 steps per epoch
        reads.clear()
        model = _autoencoder()
        train.fit(
            model,
            _mse(model),
            Adam(model.parameters()),
            _data(32),
            epochs=2,
            batch_size=batch_size,
            verbose=False,
        )
        counts.append(len(reads))
    assert counts[0] == counts[1]


def test_progress_line_per_epoch_and_quiet_mode(capsys):
    _run(epochs=2, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2" and len(lines) == 4
    assert lines[1].startswith("4/4 - ") and "ms/step - loss: " in lines[1]
    assert lines[1].index("mae: ") < lines[1].index("val_loss: ")  # training metrics first
    _run(epochs=2, verbose=False)
    assert capsys.readouterr().out == ""


def test_explicit_step_is_what_fit_runs():
    # fit(step=...) with the four-line step gives the same run as the built-in step
    model = _autoencoder()
    optimizer = Adam(model.parameters(), lr=1e-2)
    loss_fn = _mse(model)

    def step(x):
        optimizer.zero_grad()
        parts = loss_fn(x)
        parts["loss"].backward()
        optimizer.step()
        return parts

    _, _, history = _run(epochs=2, model=model, optimizer=optimizer, step=step)
    assert history.metrics == _run(epochs=2)[2].metrics


def test_to_device_scales_uint8_images_to_float32():
    x = np.array([[0, 51, 255]], dtype=np.uint8)
    t = train.to_device(x)
    assert t.dtype == backend.dtype("float32")
    np.testing.assert_allclose(t.numpy(), [[0.0, 0.2, 1.0]], rtol=1e-7)
    assert train.to_device(x.astype(np.float64)).dtype == backend.dtype("float64")


def test_loss_fn_must_return_scalars():
    model = _autoencoder()
    with pytest.raises(ValueError, match="'err' has shape \\(10, 6\\)"):
        train.fit(
            model,
            lambda x: {"loss": model(x).sum(), "err": model(x)},
            Adam(model.parameters()),
            _data(),
            epochs=1,
            batch_size=10,
            verbose=False,
        )


def test_history_csv_has_one_row_per_epoch():
    _, _, history = _run(epochs=3)
    rows = history.to_csv().splitlines()
    assert rows[0] == "epoch,seconds,loss,mae,val_loss,val_mae"
    table = np.array([[float(v) for v in row.split(",")] for row in rows[1:]])
    np.testing.assert_array_equal(table[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(table[:, 4], history.metrics["val_loss"])


def test_a_summed_loss_with_reduction_sum_records_the_same_per_example_means():
    def summed(model):
        mean = _mse(model)
        return lambda x: {k: v * x.shape[0] for k, v in mean(x).items()}

    x = _data(n=40)
    histories = []
    # batches of 10 (30 rows): a summed loss's SGD step is the mean's times 10, so lr / 10
    # walks the same path, and fit must record the same per-example means for both
    for loss, reduction, lr in ((_mse, "mean", 1e-2), (summed, "sum", 1e-3)):
        model = _autoencoder()
        opt = SGD(model.parameters(), lr=lr)
        histories.append(
            train.fit(
                model,
                loss(model),
                opt,
                x[:30],
                x[30:],
                epochs=2,
                batch_size=10,
                verbose=False,
                reduction=reduction,
            )
        )
    mean, total = histories
    for k in mean.metrics:
        np.testing.assert_allclose(total[k], mean[k], rtol=1e-5)
    model = _autoencoder()
    per_example = train.evaluate(model, _mse(model), x[30:], batch_size=3)  # batches 3, 3, 3, 1
    summed_eval = train.evaluate(model, summed(model), x[30:], batch_size=3, reduction="sum")
    for k in per_example:
        assert summed_eval[k] == pytest.approx(per_example[k], rel=1e-6)
    with pytest.raises(ValueError, match=r"fit: reduction must be 'mean' or 'sum', got 'none'"):
        _run(epochs=1, reduction="none")


def test_epoch_time_excludes_the_validation_pass(monkeypatch):
    # a fake clock that only the validation pass moves: fit's seconds must not see it
    clock = [0.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: clock[0])
    model = _autoencoder()
    mse = _mse(model)

    def loss_fn(x):
        if not model.training:
            clock[0] += 100.0
        return mse(x)

    x = _data()
    history = train.fit(
        model,
        loss_fn,
        Adam(model.parameters()),
        x[:32],
        x[32:],
        epochs=2,
        batch_size=10,
        verbose=False,
    )
    assert clock[0] == 2 * 100.0 and history.seconds == [0.0, 0.0]
