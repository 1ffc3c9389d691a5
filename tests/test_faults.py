"""Bad input and damaged files: the library raises an exception that names the operation
and the offending value (or file), and changes nothing; never a silent wrong answer.

One test per class of fault, each parametrized over the cases that stand for it, on
every backend (the autouse ``backend`` fixture). Messages are checked loosely: each
listed fragment must appear. The scripts' faults are in test_faults_scripts.py.
"""

import re
import zipfile

import numpy as np
import pytest

import minivae as mv
import minivae.functional as F
from minivae import GradcheckError, Tensor, gradcheck, nn, to_numpy
from minivae.distributions import Bernoulli, Normal, StandardNormal
from minivae.optim import SGD, Adam
from minivae.tensor import record
from minivae.train import History, evaluate, fit, load_checkpoint, save_checkpoint, to_device


def raises(fn, kind, *fragments):
    """fn() raises `kind` with every fragment in its message."""
    with pytest.raises(kind) as info:
        fn()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def f64(a):
    return Tensor(np.asarray(a, dtype=np.float64))


def dense_model(units=3, features=4):
    model = nn.Sequential([nn.Dense(units)])
    model.build((features,))
    return model


# --- gradcheck fails on NaN and inf (item 4) ---------------------------------------------


def nan_backward(x):
    return record(x.data * 2, (x,), lambda g: (g * float("nan"),), "nan_backward").sum()


def nan_value(x):
    return record(x.data * float("nan"), (x,), lambda g: (g,), "nan_value").sum()


def nan_at_distance(x):  # finite at x = 1e-7, NaN at x - eps < 0
    return F.log(x).sum()


@pytest.mark.parametrize(
    "fn, point, fragments",
    [
        (
            lambda x: F.sqrt(x * x).sum(),
            [0.0, 1.0],
            ["analytic gradient of input 0", "nan", "coordinate (0,)"],
        ),
        (nan_backward, [1.0, 2.0], ["analytic gradient of input 0", "nan"]),
        (nan_value, [1.0, 2.0], ["function's value is not finite", "nan"]),
        (lambda x: F.log(x).sum(), [-1.0], ["function's value is not finite"]),
        (lambda x: (1.0 / x).sum(), [0.0, 1.0], ["not finite", "inf"]),
    ],
    ids=["sqrt(x*x) at 0", "backward g*nan", "NaN value", "log(-1)", "1/0"],
)
def test_gradcheck_fails_on_nan_and_inf(fn, point, fragments):
    with np.errstate(all="ignore"):
        raises(lambda: gradcheck(fn, [np.array(point)]), GradcheckError, "gradcheck:", *fragments)


def test_gradcheck_fails_when_the_function_is_not_finite_near_the_point():
    with np.errstate(all="ignore"):
        raises(
            lambda: gradcheck(nan_at_distance, [np.array([1e-7, 1.0])], eps=1e-6),
            GradcheckError,
            "gradcheck: input 0",
            "numeric derivative is",
            "not finite within eps",
        )


# --- a dtype mix is refused by every layer and conv op (item 5) ------------------------------

LAYERS = {
    "Dense": (lambda: nn.Dense(2), (3,)),
    "Conv2D": (lambda: nn.Conv2D(2, 3), (5, 5, 1)),
    "Conv2DTranspose": (lambda: nn.Conv2DTranspose(2, 3), (3, 3, 1)),
    "MaxPool2D": (lambda: nn.MaxPool2D(2), (4, 4, 1)),
    "UpSampling2D": (lambda: nn.UpSampling2D(2), (2, 2, 1)),
    "Flatten": (lambda: nn.Flatten(), (2, 2)),
    "Reshape": (lambda: nn.Reshape((4,)), (2, 2)),
    "Sequential": (lambda: nn.Sequential([nn.Flatten(), nn.Dense(2)]), (2, 2)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_every_layer_refuses_a_dtype_mix(name):
    make, shape = LAYERS[name]
    layer = make()
    layer.build(shape, dtype="float32")
    before = layer.state_dict()
    raises(
        lambda: layer(f64(np.ones((1, *shape)))),
        TypeError,
        f"{name}: built for float32 input, got float64",
    )
    assert all(p.dtype == mv.backend.dtype("float32") for p in layer.parameters())
    assert all(np.array_equal(before[k], v) for k, v in layer.state_dict().items())


@pytest.mark.parametrize(
    "op, kernel_shape", [(nn.conv.conv2d, (2, 2, 1, 1)), (nn.conv.conv2d_transpose, (2, 2, 1, 1))]
)
def test_conv_ops_refuse_a_dtype_mix(op, kernel_shape):
    x = Tensor(np.ones((1, 3, 3, 1)), dtype="float32")
    raises(
        lambda: op(x, f64(np.ones(kernel_shape))),
        TypeError,
        f"{op.__name__}: mixing float32 and float64",
    )
    raises(
        lambda: op(x, Tensor(np.ones(kernel_shape), dtype="float32"), f64(np.ones(1))),
        TypeError,
        f"{op.__name__}: mixing float32 and float64",
    )


def test_adam_on_a_conv_layer_keeps_float32():
    layer = nn.Conv2D(2, 3)
    layer.build((5, 5, 1), dtype="float32")
    with pytest.raises(TypeError):
        layer(f64(np.ones((1, 5, 5, 1))))
    opt = Adam(layer.parameters())
    layer(Tensor(np.ones((1, 5, 5, 1)), dtype="float32")).sum().backward()
    opt.step()
    assert layer.kernel.dtype == mv.backend.dtype("float32")


# --- a backward must return one gradient per parent, shaped and typed like it -------------


@pytest.mark.parametrize(
    "backward, fragments",
    [
        (
            lambda g: (mv.backend.xp().sum(g),),
            ["the gradient for parent 0 has shape ()", "the parent has (3,)"],
        ),
        (
            lambda g: (g, g),
            ["must return a tuple of one gradient (or None) per parent (1), got 2 gradients"],
        ),
        (lambda g: g, ["must return a tuple of one gradient"]),
    ],
    ids=["wrong shape", "too many", "not a tuple"],
)
def test_a_backward_with_a_wrong_answer_is_refused(backward, fragments):
    x = f64([1.0, 2.0, 3.0])
    x.requires_grad = True
    y = record(x.data * 2, (x,), backward, "my_op")
    raises(lambda: y.sum().backward(), (TypeError, ValueError), "backward of 'my_op'", *fragments)


def test_a_backward_returning_another_dtype_is_refused():
    x = Tensor([1.0, 2.0], dtype="float32", requires_grad=True)
    xp = mv.backend.xp()
    y = record(x.data * 2, (x,), lambda g: (xp.astype(g, xp.float64),), "my_op")
    raises(
        lambda: y.sum().backward(), ValueError, "backward of 'my_op'", "dtype float64", "float32"
    )


# --- Bernoulli data outside [0, 1] (item 6) and the one uint8 rule (issue 12) ---------------


@pytest.mark.parametrize(
    "value, fragments",
    [
        (255.0, ["from 255 to 255", "divide by 255"]),
        (-0.5, ["from -0.5 to -0.5"]),
        (1.5, ["to 1.5"]),
    ],
)
def test_bernoulli_refuses_data_outside_0_1(value, fragments):
    raises(
        lambda: Bernoulli(Tensor([2.0])).log_prob(Tensor([value])),
        ValueError,
        "Bernoulli.log_prob: x must lie in [0, 1]",
        *fragments,
    )


def test_bernoulli_accepts_its_support_and_can_skip_the_check():
    assert np.isfinite(Bernoulli(Tensor([2.0, -1.0])).log_prob(Tensor([0.0, 1.0])).numpy()).all()
    assert np.isfinite(
        Bernoulli(Tensor([2.0]), validate=False).log_prob(Tensor([0.5])).numpy()
    ).all()


def tiny_vae(likelihood="bernoulli"):
    return mv.VAE(
        nn.Sequential([nn.Dense(4)]),
        nn.Sequential([nn.Dense(6 if likelihood == "bernoulli" else 12)]),
        likelihood=likelihood,
    )


def test_a_bernoulli_vae_refuses_0_to_255_data():
    x = Tensor(np.full((2, 6), 255.0))
    raises(
        lambda: tiny_vae().elbo(x),
        ValueError,
        "VAE.elbo (Bernoulli likelihood): x must lie in [0, 1]",
        "from 255 to 255",
        "divide by 255",
    )
    raises(
        lambda: tiny_vae().log_marginal(x, samples=4, chunk=2),
        ValueError,
        "VAE.log_marginal (Bernoulli likelihood): x must lie in [0, 1]",
        "divide by 255",
    )
    # validate_data=False skips the check (for data known to lie in [0, 1])
    unchecked = tiny_vae()
    unchecked.validate_data = False
    assert np.isfinite(unchecked.elbo(x)["loss"].numpy())
    assert np.isfinite(unchecked.log_marginal(x, samples=4, chunk=2).numpy()).all()


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("method", ["elbo", "encode", "log_marginal"])
def test_the_vae_refuses_raw_integer_arrays(likelihood, method):
    x = np.full((2, 6), 255, dtype=np.uint8)
    raises(
        lambda: getattr(tiny_vae(likelihood), method)(x),
        TypeError,
        f"VAE.{method}: x is an array of uint8",
        "x / 255",
    )


def test_uint8_is_rescaled_in_one_place_only():
    """Tensor() never rescales; to_device (which fit and evaluate use) maps uint8 to [0, 1]."""
    pixels = np.array([[0, 51, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(Tensor(pixels).numpy(), [[0.0, 51.0, 255.0]])
    np.testing.assert_allclose(to_device(pixels).numpy(), [[0.0, 0.2, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(
        to_device(np.array([[0, 2]], dtype=np.int64)).numpy(), [[0.0, 2.0]]
    )
    seen = []
    model = dense_model(features=3)
    evaluate(
        model, lambda x: seen.append(x.numpy().copy()) or {"loss": (model(x) ** 2).mean()}, pixels
    )
    np.testing.assert_allclose(seen[0], [[0.0, 0.2, 1.0]], rtol=1e-6)


def test_fit_trains_a_bernoulli_vae_on_uint8_images():
    x = np.random.default_rng(0).integers(0, 256, (8, 6)).astype(np.uint8)
    vae = tiny_vae()
    vae.elbo(to_device(x[:1]))
    history = fit(vae, vae.elbo, Adam(vae.parameters()), x, epochs=1, batch_size=4, verbose=False)
    assert np.isfinite(history["loss"][0])


# --- joins, splits and axes (item 7 and the axis class) ----------------------------------

A = np.ones((2, 3))


@pytest.mark.parametrize(
    "call, kind, fragments",
    [
        (
            lambda: F.concatenate([f64(A), f64(A)], axis=5),
            ValueError,
            ["concatenate: axis 5 is out of range"],
        ),
        (lambda: F.concatenate([f64(A), f64(A)], axis=-3), ValueError, ["concatenate: axis -3"]),
        (lambda: F.concatenate([]), ValueError, ["concatenate: expected a non-empty list"]),
        (lambda: F.stack([f64(A), f64(A)], axis=7), ValueError, ["stack: axis 7 is out of range"]),
        (lambda: F.stack([]), ValueError, ["stack: expected a non-empty list"]),
        (lambda: F.unstack(f64(A), axis=4), ValueError, ["unstack: axis 4 is out of range"]),
        (lambda: F.split(f64(A), 3, axis=3), ValueError, ["split: axis 3 is out of range"]),
        (lambda: F.split(f64(A), [4, -1]), ValueError, ["split:", "[4, -1]", "got -1"]),
        (lambda: F.split(f64(A), 1.5), TypeError, ["split: sections", "got 1.5"]),
        (lambda: F.split(f64(A), [1.5, 1.5]), TypeError, ["split:", "got 1.5"]),
        (
            lambda: F.concatenate([f64(A)], axis=1.0),
            TypeError,
            ["concatenate: axis must be an integer, got 1.0"],
        ),
        (
            lambda: f64(A).sum(axis=1.0),
            TypeError,
            ["sum: axis must be None, an int or a tuple of ints, got 1.0"],
        ),
        (lambda: f64(A).sum(axis=(0, 0)), ValueError, ["sum: axis (0, 0) names an axis twice"]),
        (lambda: f64(A).mean(axis="0"), TypeError, ["mean: axis must be"]),
        (lambda: F.logsumexp(f64(A), axis=True), TypeError, ["logsumexp: axis must be", "True"]),
    ],
    ids=[
        "concat axis 5",
        "concat axis -3",
        "concat []",
        "stack axis 7",
        "stack []",
        "unstack axis 4",
        "split axis 3",
        "split [4, -1]",
        "split 1.5",
        "split [1.5, 1.5]",
        "concat axis 1.0",
        "sum axis 1.0",
        "sum axis (0, 0)",
        "mean axis '0'",
        "logsumexp axis True",
    ],
)
def test_axes_and_split_points_are_checked(call, kind, fragments):
    raises(call, kind, *fragments)


def test_numpy_integers_are_accepted_as_axes_and_indices():
    t = f64(np.arange(6.0).reshape(2, 3))
    assert t.sum(axis=np.int64(1)).shape == (2,)
    assert F.concatenate([t, t], axis=np.int64(0)).shape == (4, 3)
    np.testing.assert_array_equal(t[np.int64(1)].numpy(), [3.0, 4.0, 5.0])
    assert t.reshape(np.int64(3), 2).shape == (3, 2)


def test_logsumexp_over_an_empty_axis_is_minus_infinity():
    x = f64(np.ones((2, 0)))
    x.requires_grad = True
    with np.errstate(divide="ignore"):
        y = F.logsumexp(x, axis=-1)
        y.sum().backward()
    np.testing.assert_array_equal(y.numpy(), [-np.inf, -np.inf])
    assert to_numpy(x.grad).shape == (2, 0)


@pytest.mark.parametrize(
    "call, fragments",
    [
        (lambda: F.clip(f64([0.0]), 1.0, -1.0), ["clip: low 1.0 is above high -1.0"]),
        (lambda: F.clip(f64([0.0]), float("nan")), ["clip: low must be a number or None, got nan"]),
        (
            lambda: F.where(f64([1.0]).data, f64([1.0]), f64([2.0])),
            ["where: condition must be a boolean"],
        ),
        (lambda: (f64(np.ones((0, 3))) ** 2).mean(), ["mean: over no elements"]),
    ],
    ids=["clip low > high", "clip nan", "where float condition", "mean of empty"],
)
def test_other_silent_answers_are_refused(call, fragments):
    raises(call, (ValueError, TypeError), *fragments)


# --- the constructor (item 8, dtype spellings, the int-array message) ------------------------


@pytest.mark.parametrize(
    "data, fragments",
    [
        (None, ["Tensor: expected real numbers", "got None"]),
        (np.array([1 + 2j, 3j]), ["Tensor: expected real numbers", "complex128"]),
        ([1 + 2j], ["Tensor: expected real numbers", "complex"]),
        ("abc", ["Tensor: expected real numbers", "str"]),
        (np.array(["a"], dtype=object), ["Tensor: expected real numbers", "object"]),
        ([[1.0], [2.0, 3.0]], ["Tensor: cannot make an array of list data"]),
    ],
    ids=["None", "complex array", "complex list", "str", "object array", "ragged list"],
)
def test_constructor_refuses_what_has_no_real_value(data, fragments):
    raises(lambda: Tensor(data), TypeError, *fragments)


@pytest.mark.parametrize("dtype", [np.float32, np.dtype("float32"), "float32"])
def test_constructor_takes_every_spelling_of_a_dtype(dtype):
    assert Tensor([1.0], dtype=dtype).dtype == mv.backend.dtype("float32")


def test_an_integer_array_is_named_as_what_it_is():
    raises(
        lambda: (
            f64([1.0, 2.0]) + np.array([1, 2])
            if mv.get_backend().name == "numpy"
            else f64([1.0, 2.0]) + mv.backend.asarray([1, 2])
        ),
        TypeError,
        "add: mixing float64 and an array of int64",
        'Tensor(x, dtype="float64")',
    )


def test_item_and_float_read_one_value():
    assert Tensor([2.5]).item() == 2.5 and float(Tensor([[2.5]])) == 2.5
    assert isinstance(Tensor(1.0).item(), float)
    raises(
        lambda: float(f64([1.0, 2.0])), ValueError, "item(): a tensor of shape (2,) has 2 elements"
    )


# --- integer arguments: any integer (np.int64 too), never a float or a bool ------------------


@pytest.mark.parametrize(
    "make, kind, fragments",
    [
        (lambda: nn.Conv2D(2, 3, strides=1.5), ValueError, ["Conv2D: strides", "got 1.5"]),
        (lambda: nn.Conv2D(2, 3, strides=True), ValueError, ["Conv2D: strides", "got True"]),
        (lambda: nn.Conv2D(2, 0), ValueError, ["Conv2D: kernel_size", "got 0"]),
        (lambda: nn.Conv2D(0, 3), ValueError, ["Conv2D: filters must be an integer >= 1, got 0"]),
        (lambda: nn.Conv2DTranspose(2.5, 3), TypeError, ["Conv2DTranspose: filters", "got 2.5"]),
        (lambda: nn.MaxPool2D(2.0), ValueError, ["MaxPool2D: pool_size", "got 2.0"]),
        (lambda: nn.UpSampling2D((2, 1.5)), ValueError, ["UpSampling2D: size", "(2, 1.5)"]),
        (lambda: nn.Dense(2.9), TypeError, ["Dense: units must be an integer >= 1, got 2.9"]),
        (lambda: nn.Dense(0), ValueError, ["Dense: units must be an integer >= 1, got 0"]),
        (lambda: nn.Dense(True), TypeError, ["Dense: units", "got True"]),
        (lambda: nn.Reshape((2, 0)), ValueError, ["Reshape:", "got 0"]),
        (
            lambda: nn.Sequential([nn.Dense(2), 3]),
            TypeError,
            ["Sequential: expected a layer", "int"],
        ),
        (lambda: StandardNormal(2.5), TypeError, ["StandardNormal: dim", "2.5"]),
    ],
    ids=[
        "strides 1.5",
        "strides True",
        "kernel 0",
        "filters 0",
        "filters 2.5",
        "pool 2.0",
        "size (2, 1.5)",
        "Dense 2.9",
        "Dense 0",
        "Dense True",
        "Reshape 0",
        "Sequential int",
        "StandardNormal 2.5",
    ],
)
def test_sizes_must_be_positive_integers(make, kind, fragments):
    raises(make, kind, *fragments)


def test_numpy_integers_are_accepted_as_sizes():
    i = np.int64
    assert nn.Conv2D(i(2), i(3), strides=i(2)).strides == (2, 2)
    assert nn.Conv2D(2, (i(3), 2)).kernel_size == (3, 2)
    assert nn.MaxPool2D(i(2)).pool_size == (2, 2) and nn.UpSampling2D(i(3)).size == (3, 3)
    assert nn.Dense(i(3)).units == 3 and isinstance(nn.Dense(i(3)).units, int)


@pytest.mark.parametrize(
    "call, kind, fragments",
    [
        (
            lambda: nn.Sequential([nn.Dense(3)]).build(4),
            TypeError,
            ["build: input_shape must be a tuple", "(4,)"],
        ),
        (lambda: nn.Sequential([nn.Dense(3)]).build((4.5,)), TypeError, ["build:", "4.5"]),
        (
            lambda: nn.Sequential([nn.Dense(3)]).build((4,), dtype="int32"),
            TypeError,
            ["build: dtype", "int32"],
        ),
        (
            lambda: nn.Flatten()(Tensor(1.0)),
            ValueError,
            ["Flatten: expected input of shape (N, ...), got ()"],
        ),
        (
            lambda: nn.Reshape((1,))(Tensor(1.0)),
            ValueError,
            ["Reshape: expected input of shape (N, ...), got ()"],
        ),
    ],
    ids=["build(4)", "build((4.5,))", "build int32", "Flatten 0-d", "Reshape 0-d"],
)
def test_shapes_given_to_layers_are_checked(call, kind, fragments):
    raises(call, kind, *fragments)


@pytest.mark.parametrize(
    "dist",
    [lambda: Normal(Tensor([0.0]), Tensor([1.0])), lambda: Bernoulli(Tensor([0.0]))],
    ids=["Normal", "Bernoulli"],
)
def test_sample_takes_an_int_and_refuses_bad_shapes(dist):
    assert dist().sample(2).shape == (2, 1) and dist().sample(np.int64(3)).shape == (3, 1)
    name = type(dist()).__name__
    raises(lambda: dist().sample((-1,)), ValueError, f"{name}.sample: sample_shape (-1,)")
    raises(lambda: dist().sample(2.5), TypeError, f"{name}.sample", "2.5")


# --- optimisers: hyperparameters (NaN fails every comparison, so it must be named) -----------


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda p, v: Adam(p, lr=v), "lr"),
        (lambda p, v: SGD(p, lr=v), "lr"),
        (lambda p, v: Adam(p, beta1=v), "beta1"),
        (lambda p, v: Adam(p, beta2=v), "beta2"),
        (lambda p, v: Adam(p, eps=v), "eps"),
        (lambda p, v: SGD(p, momentum=v), "momentum"),
    ],
    ids=["Adam lr", "SGD lr", "beta1", "beta2", "eps", "momentum"],
)
@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -0.1, "0.1"], ids=["nan", "inf", "negative", "str"]
)
def test_optimiser_hyperparameters_are_checked(make, name, value):
    params = dense_model().parameters()
    raises(
        lambda: make(params, value), ValueError, f": {name} must be a finite number", repr(value)
    )


@pytest.mark.parametrize(
    "make, name",
    [(lambda p: Adam(p, beta1=1.0), "beta1"), (lambda p: SGD(p, momentum=1.0), "momentum")],
)
def test_moment_decays_must_stay_below_one(make, name):
    raises(
        lambda: make(dense_model().parameters()),
        ValueError,
        f"{name} must be a finite number in [0, 1)",
    )


# --- fit and evaluate: sizes, empty sets, the loss dict -------------------------------------


def run_fit(**kwargs):
    model = dense_model()
    loss_fn = kwargs.pop("loss_fn", lambda x: {"loss": (model(x) ** 2).mean()})
    x_train = kwargs.pop("x_train", np.ones((8, 4), np.float32))
    return fit(
        model,
        loss_fn,
        Adam(model.parameters()),
        x_train,
        **{"epochs": 1, "verbose": False, **kwargs},
    )


@pytest.mark.parametrize(
    "kwargs, kind, fragments",
    [
        ({"batch_size": 2.5}, TypeError, ["fit: batch_size must be an integer >= 1, got 2.5"]),
        ({"batch_size": 0}, ValueError, ["fit: batch_size", "got 0"]),
        ({"epochs": 1.5}, TypeError, ["fit: epochs", "got 1.5"]),
        ({"seed": -1}, ValueError, ["fit: seed", "got -1"]),
        ({"patience": 0.5}, TypeError, ["fit: patience", "0.5"]),
        (
            {"x_train": np.ones((0, 4), np.float32)},
            ValueError,
            ["fit: x_train must be an array with at least one row"],
        ),
        (
            {"x_val": np.ones((0, 4), np.float32)},
            ValueError,
            ["fit: x_val must be an array with at least one row"],
        ),
        ({"x_train": [[1.0] * 4] * 8}, ValueError, ["fit: x_train must be an array", "list"]),
        (
            {"loss_fn": lambda x: {"kl": Tensor(0.0)}},
            ValueError,
            ["train_step: loss_fn must return", "'loss'", "['kl']"],
        ),
        (
            {"loss_fn": lambda x: Tensor(0.0)},
            ValueError,
            ["train_step: loss_fn must return", "Tensor"],
        ),
        (
            {"loss_fn": lambda x: {"loss": Tensor(0.0, requires_grad=True), "kl": 0.5}},
            ValueError,
            ["train_step: loss_fn must return", "float"],
        ),
    ],
    ids=[
        "batch 2.5",
        "batch 0",
        "epochs 1.5",
        "seed -1",
        "patience 0.5",
        "empty train",
        "empty val",
        "list",
        "no loss key",
        "not a dict",
        "float metric",
    ],
)
def test_fit_refuses_bad_arguments(kwargs, kind, fragments):
    raises(lambda: run_fit(**kwargs), kind, *fragments)


def test_evaluate_refuses_an_empty_set_and_a_bad_loss():
    model = dense_model()
    raises(
        lambda: evaluate(model, lambda x: {"loss": model(x).mean()}, np.ones((0, 4), np.float32)),
        ValueError,
        "evaluate: x must be an array with at least one row",
    )
    raises(
        lambda: evaluate(model, lambda x: {"kl": model(x).mean()}, np.ones((2, 4), np.float32)),
        ValueError,
        "evaluate: loss_fn must return",
        "'loss'",
    )


def test_an_empty_batch_is_refused_not_nan():
    raises(
        lambda: tiny_vae().elbo(Tensor(np.ones((0, 6)))), ValueError, "VAE.encode: an empty batch"
    )
    model = dense_model()
    raises(
        lambda: mv.train.train_step(
            lambda x: {"loss": (model(x) ** 2).mean()},
            Adam(model.parameters()),
            Tensor(np.ones((0, 4)), dtype="float32"),
        ),
        ValueError,
        "mean: over no elements",
    )


# --- files: weights and checkpoints --------------------------------------------------------


def damaged(tmp_path, kind, good):
    """A damaged copy of the file `good`: truncated, empty, text, or an .npy."""
    path = tmp_path / f"{kind}.npz"
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "npy":
        path = tmp_path / "weights.npy"
        np.save(path, np.ones(3))
    return path


KINDS = ["truncated", "empty", "text", "npy"]


@pytest.mark.parametrize("kind", KINDS)
def test_load_weights_of_a_damaged_file_is_one_error_naming_it(tmp_path, kind):
    good = tmp_path / "good.npz"
    dense_model().save_weights(good)
    model = dense_model()
    before = model.state_dict()
    path = damaged(tmp_path, kind, good)
    raises(lambda: model.load_weights(path), ValueError, str(path), "cannot read it as an .npz")
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.backends("numpy")  # (file bytes: one backend is enough)
def test_a_flipped_byte_anywhere_is_refused_or_harmless(tmp_path):
    """Every 3rd byte of a weights file flipped in turn: each copy is refused with one
    ValueError naming it, or loads the very same weights (a flip in zip metadata)."""
    good, saved = tmp_path / "good.npz", dense_model()
    saved.save_weights(good)
    data, path = good.read_bytes(), tmp_path / "flipped.npz"
    expected = saved.state_dict()
    for pos in range(0, len(data), 3):
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        path.write_bytes(bytes(flipped))
        model = dense_model()
        try:
            model.load_weights(path)
        except ValueError as exc:
            assert str(path) in str(exc), f"byte {pos}: {exc}"
        else:
            assert all(np.array_equal(expected[k], v) for k, v in model.state_dict().items()), (
                f"byte {pos}"
            )


def test_load_weights_of_a_missing_file_names_it(tmp_path):
    raises(lambda: dense_model().load_weights(tmp_path / "nope.npz"), FileNotFoundError, "nope.npz")


def test_load_weights_refuses_nan_weights(tmp_path):
    path = tmp_path / "nan.npz"
    np.savez(path, **{k: v * np.nan for k, v in dense_model().state_dict().items()})
    raises(
        lambda: dense_model().load_weights(path),
        ValueError,
        str(path),
        "NaN or infinite",
        "layers.0.kernel",
    )


def checkpoint(tmp_path, change=None):
    model = dense_model()
    opt = Adam(model.parameters())
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, opt, History(seed=0, best_weights=model.state_dict()))
    if change:
        arrays = dict(np.load(path))
        change(arrays)
        np.savez(path, **arrays)
    return path


def drop(key):
    return lambda arrays: arrays.pop(key)


def put(key, value):
    return lambda arrays: arrays.__setitem__(key, value)


CHECKPOINT_FAULTS = {
    "model shape": (
        put("model/layers.0.kernel", np.zeros((2, 2), np.float32)),
        ["layers.0.kernel", "shape"],
    ),
    "model NaN": (
        put("model/layers.0.kernel", np.full((4, 3), np.nan, np.float32)),
        ["NaN or infinite"],
    ),
    "model missing": (drop("model/layers.0.bias"), ["layers.0.bias"]),
    "optimiser shape": (
        put("optimizer/m.0", np.zeros((9, 9), np.float32)),
        ["Adam.load_state_dict", "m.0"],
    ),
    "optimiser NaN": (
        put("optimizer/v.1", np.full((3,), np.inf, np.float32)),
        ["v.1", "NaN or infinite"],
    ),
    "optimiser missing": (drop("optimizer/t"), ["Adam.load_state_dict", "missing ['t']"]),
    "step count": (put("optimizer/t", np.array(-2.5)), ["step count t"]),
    "best NaN": (put("best/layers.0.bias", np.full((3,), np.nan, np.float32)), ["NaN or infinite"]),
    "no history": (drop("history"), ["no history"]),
    "bad history": (put("history", np.array("{not json")), ["cannot resume"]),
    "old history": (put("history", np.array('{"metrics": {}}')), ["cannot resume"]),
}


@pytest.mark.parametrize("fault", CHECKPOINT_FAULTS)
def test_load_checkpoint_refuses_a_bad_part_and_changes_nothing(tmp_path, fault):
    change, fragments = CHECKPOINT_FAULTS[fault]
    path = checkpoint(tmp_path, change)
    model = dense_model()
    opt = Adam(model.parameters())
    weights, state = model.state_dict(), opt.state_dict()
    raises(lambda: load_checkpoint(path, model, opt), ValueError, str(path), *fragments)
    assert all(np.array_equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(np.array_equal(state[k], v) for k, v in opt.state_dict().items())


@pytest.mark.parametrize("kind", KINDS)
def test_load_checkpoint_of_a_damaged_file_names_it(tmp_path, kind):
    path = damaged(tmp_path, kind, checkpoint(tmp_path))
    model = dense_model()
    raises(lambda: load_checkpoint(path, model, Adam(model.parameters())), ValueError, str(path))


def test_a_good_checkpoint_still_loads(tmp_path):
    model = dense_model()
    history = load_checkpoint(checkpoint(tmp_path), model, Adam(model.parameters()))
    assert history.seed == 0 and history.best_weights is not None


def test_optimiser_state_with_nan_is_refused():
    opt = Adam(dense_model().parameters())
    state = {k: v * np.nan if k != "t" else v for k, v in opt.state_dict().items()}
    raises(
        lambda: opt.load_state_dict(state),
        ValueError,
        "Adam.load_state_dict: state m.0",
        "NaN or infinite",
    )


def test_a_zip_that_is_not_numpy_names_the_file(tmp_path):
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    model = dense_model()
    message = raises(lambda: model.load_weights(path), ValueError, str(path))
    assert re.search("no weight|cannot read", message)


# --- the same classes, found elsewhere ------------------------------------------------------


@pytest.mark.parametrize(
    "call, kind, fragments",
    [
        (
            lambda: nn.conv.conv2d(f64(np.ones((3, 3, 1))), f64(np.ones((2, 2, 1, 1)))),
            ValueError,
            ["conv2d: expected 4-d x", "(3, 3, 1)"],
        ),
        (
            lambda: nn.conv.conv2d(
                f64(np.ones((1, 3, 3, 1))), f64(np.ones((2, 2, 1, 1))), strides=2
            ),
            ValueError,
            ["conv2d: strides must be a pair of positive ints, got 2"],
        ),
        (
            lambda: nn.conv.conv2d_transpose(
                f64(np.ones((1, 3, 3, 1))), f64(np.ones((2, 2, 1, 1))), padding="full"
            ),
            ValueError,
            ["conv2d_transpose: padding", "'full'"],
        ),
        (
            lambda: nn.conv.max_pool2d(f64(np.ones((1, 4, 4, 1))), 2),
            ValueError,
            ["max_pool2d: pool_size must be a pair of positive ints, got 2"],
        ),
        (
            lambda: nn.conv.upsampling2d(f64(np.ones((4, 4, 1))), (2, 2)),
            ValueError,
            ["upsampling2d: expected 4-d x"],
        ),
        (lambda: f64([1.0, 2.0])[0.5:], TypeError, ["Tensor[...]: only basic indexing", "0.5"]),
        (lambda: f64([1.0, 2.0])[True], TypeError, ["Tensor[...]: only basic indexing", "True"]),
        (
            lambda: f64([1.0, 2.0]) ** float("nan"),
            ValueError,
            ["power: the exponent must be finite, got nan"],
        ),
        (lambda: f64([1.0, 2.0]).reshape(2.0, 1), TypeError, ["reshape:", "got 2.0"]),
        (
            lambda: gradcheck(lambda x: x.sum(), [np.ones(2)], eps=0.0),
            ValueError,
            ["gradcheck: eps must be a finite number > 0, got 0.0"],
        ),
        (
            lambda: gradcheck(lambda x: x.sum(), [np.ones(2)], atol=float("nan")),
            ValueError,
            ["gradcheck: atol must be a finite number >= 0, got nan"],
        ),
        (
            lambda: mv.VAE(nn.Dense(2), nn.Dense(2), log_std_min=float("nan")),
            ValueError,
            ["VAE: log_std_min must be a finite number or None, got nan"],
        ),
        (
            lambda: Normal(Tensor([0.0]), Tensor([1.0]), event_ndim=1.5),
            TypeError,
            ["Normal: event_ndim must be an integer >= 0, got 1.5"],
        ),
        (
            lambda: Bernoulli(Tensor([0.0]), event_ndim=True),
            TypeError,
            ["Bernoulli: event_ndim", "True"],
        ),
        (
            lambda: tiny_vae().decode(Tensor(np.zeros((1, 2))), x_shape=(6.5,)),
            TypeError,
            ["VAE.decode:", "6.5"],
        ),
        (
            lambda: mv.estimators.score_function_grad(
                lambda z: z.sum(axis=-1),
                lambda: Normal(Tensor([0.0]), Tensor([1.0])),
                [],
                samples=2,
                baseline=float("nan"),
            ),
            TypeError,
            ["score_function_grad: baseline", "nan"],
        ),
        (
            lambda: to_device([[1.0, 2.0]]),
            TypeError,
            ["to_device: expected a host NumPy array, got list"],
        ),
    ],
    ids=[
        "conv2d 3-d",
        "conv2d strides 2",
        "deconv padding",
        "max_pool2d pool 2",
        "upsampling 3-d",
        "slice 0.5",
        "index True",
        "power nan",
        "reshape 2.0",
        "gradcheck eps 0",
        "gradcheck atol nan",
        "VAE log_std_min nan",
        "Normal event_ndim 1.5",
        "Bernoulli event_ndim True",
        "decode x_shape 6.5",
        "baseline nan",
        "to_device list",
    ],
)
def test_the_same_classes_elsewhere(call, kind, fragments):
    raises(call, kind, *fragments)


def test_numpy_integers_are_accepted_as_sample_counts():
    vae = tiny_vae(likelihood="gaussian")
    x = Tensor(np.full((2, 6), 0.5))
    assert np.isfinite(vae.elbo(x, samples=np.int64(2))["loss"].item())
    assert vae.sample(np.int64(3)).shape == (3, 6)


def test_a_failed_first_call_does_not_fix_a_layers_dtype():
    layer = nn.Dense(2)
    with pytest.raises(ValueError):
        layer(f64(1.0))  # 0-d: refused before any weight is made
    assert layer(Tensor(np.ones((1, 3)), dtype="float32")).dtype == mv.backend.dtype("float32")
