"""Every differentiable op, checked three ways in float64 on shapes drawn by hypothesis:

1. the forward value equals NumPy's,
2. backward() agrees with finite differences (``gradcheck``),
3. value and gradient equal torch.autograd's.

Each op is one row of ``OPS``: the op on minivae Tensors, the same on NumPy arrays, the
same on torch tensors, how its input shapes are drawn and where its inputs live (away
from 0 for log and division). Tensor operators (+, @, sum, slicing, ...) are rows too.
Then: stability at +-1000, and the errors for shapes that do not fit.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minivae.functional as F
from minivae import Tensor, backend, gradcheck, to_numpy

# --- where inputs live --------------------------------------------------------


def anywhere(rng, shape):
    return rng.uniform(-3, 3, shape)


def positive(rng, shape):  # log, sqrt, fractional powers
    return rng.uniform(0.2, 3, shape)


def above_minus_one(rng, shape):  # log1p
    return rng.uniform(-0.8, 3, shape)


def nonzero(rng, shape):  # denominators: either sign, never near 0
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 3, shape)


# Kinks (abs, relu, clip, where's switch, maximum's tie) keep this far from every input:
# 1000 times gradcheck's step eps = 1e-6, so no central difference straddles one (a draw
# of -1.78e-07 for abs once failed a fresh clone's run).
MARGIN = 1e-3


def away_from(*kinks):
    """`anywhere`, with each value within MARGIN of a kink pushed out to MARGIN on its side."""

    def sample(rng, shape):
        x = rng.uniform(-3, 3, shape)
        for k in kinks:
            x = np.where(np.abs(x - k) < MARGIN, k + np.copysign(MARGIN, x - k), x)
        return x

    return sample


def unit_interval(rng, shape):  # Bernoulli data: grey pixels in [0, 1]
    return rng.uniform(0, 1, shape)


def even_hundredths(rng, shape):  # maximum's first input: 0.02 k ...
    return np.round(rng.uniform(-3, 3, shape) / 0.02) * 0.02


def odd_hundredths(rng, shape):  # ... and its second, 0.02 k + 0.01: never within 0.01 of a tie
    return even_hundredths(rng, shape) + 0.01


# --- how shapes are drawn: size-1 axes, odd sizes, 0-d, broadcasting -------------

one_shape = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5).map(lambda s: (s,))
one_shape_1d = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5).map(lambda s: (s,))
one_shape_2d = hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=5).map(lambda s: (s,))
broadcastable_pair = hnp.mutually_broadcastable_shapes(
    num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=4
).map(lambda b: b.input_shapes)
equal_pair = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4).map(lambda s: (s, s))
even_last_axis = st.tuples(
    hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4), st.sampled_from([2, 4, 6])
).map(lambda t: (t[0] + (t[1],),))


@st.composite
def pair_differing_on_last_axis(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4))
    return lead + (draw(st.integers(1, 4)),), lead + (draw(st.integers(1, 4)),)


@st.composite
def matmul_pair(draw):
    """Matrix @ matrix with broadcast batch axes, or a vector on either side (or both)."""
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    batch_a, batch_b = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)
    ).input_shapes
    kind = draw(
        st.sampled_from(
            ["matrix @ matrix", "vector @ matrix", "matrix @ vector", "vector @ vector"]
        )
    )
    a = (k,) if kind.startswith("vector") else batch_a + (n, k)
    b = (k,) if kind.endswith("vector") else batch_b + (k, m)
    return a, b


@dataclass(frozen=True)
class Op:
    ours: Callable  # on minivae Tensors
    numpy: Callable  # on NumPy arrays
    torch: Callable  # (torch module, *torch tensors)
    shapes: st.SearchStrategy = one_shape  # draws a tuple of input shapes
    domains: tuple = (anywhere,)  # one sampler per input (the last one repeats)


def same(expr, shapes=one_shape, domains=(anywhere,)):
    """An op written the same way for minivae, NumPy and torch (operators and methods)."""
    return Op(expr, expr, lambda T, *xs: expr(*xs), shapes, domains)


def sum_parts(parts):  # weight part i by i+1, so every part's gradient is distinct
    return sum((i + 1) * p for i, p in enumerate(parts))


def torch_pad(T, x, widths):  # torch wants (before, after) pairs from the last axis to the first
    return T.nn.functional.pad(x, [n for pair in reversed(widths) for n in pair], value=0.5)


PAD = [(1, 0), (0, 2), (2, 1)]

OPS = {
    # tensor.py: operators, reductions, shape changes
    "add": same(lambda a, b: a + b, broadcastable_pair),
    "subtract": same(lambda a, b: a - b, broadcastable_pair),
    "multiply": same(lambda a, b: a * b, broadcastable_pair),
    "divide": same(lambda a, b: a / b, broadcastable_pair, (anywhere, nonzero)),
    "number + x": same(lambda x: 2.5 + x),
    "number - x": same(lambda x: 2.5 - x),
    "x * number": same(lambda x: x * -1.5),
    "number / x": same(lambda x: 2.5 / x, domains=(nonzero,)),
    "negative": same(lambda x: -x),
    "x ** 2": same(lambda x: x**2),
    "x ** 3": same(lambda x: x**3),
    "x ** 0.5": same(lambda x: x**0.5, domains=(positive,)),
    "x ** -1.5": same(lambda x: x**-1.5, domains=(positive,)),
    "matmul": same(lambda a, b: a @ b, matmul_pair()),
    "sum": same(lambda x: x.sum()),
    "sum(axis=0)": same(lambda x: x.sum(axis=0), one_shape_1d),
    "sum(axis=-1, keepdims)": same(lambda x: x.sum(axis=-1, keepdims=True), one_shape_1d),
    "sum(axis=(0, -1))": Op(
        lambda x: x.sum(axis=(0, -1)),
        lambda x: x.sum(axis=(0, -1)),
        lambda T, x: x.sum(dim=(0, -1)),
        one_shape_2d,
    ),
    "mean": same(lambda x: x.mean()),
    "mean(axis=-1)": Op(
        lambda x: x.mean(axis=-1),
        lambda x: x.mean(axis=-1),
        lambda T, x: x.mean(dim=-1),
        one_shape_1d,
    ),
    "reshape(-1)": same(lambda x: x.reshape(-1)),
    "reshape to 2-d": same(lambda x: x.reshape(x.shape[0], -1), one_shape_1d),
    "transpose": Op(
        lambda x: x.transpose(),
        lambda x: x.transpose(),
        lambda T, x: x.permute(tuple(reversed(range(x.ndim)))),
        one_shape,
    ),
    "transpose(1, 0, 2)": Op(
        lambda x: x.transpose(1, 0, 2),
        lambda x: x.transpose(1, 0, 2),
        lambda T, x: x.permute(1, 0, 2),
        hnp.array_shapes(min_dims=3, max_dims=3).map(lambda s: (s,)),
    ),
    "x[0]": same(lambda x: x[0], one_shape_1d),
    # (slice ends stay in bounds: the array API leaves out-of-bounds ends unspecified)
    "x[1:, ..., :2]": same(
        lambda x: x[1:, ..., :2],
        hnp.array_shapes(min_dims=2, max_dims=3, min_side=2).map(lambda s: (s,)),
    ),
    "x[::-2]": Op(
        lambda x: x[::-2], lambda x: x[::-2], lambda T, x: T.flip(x, [0])[::2], one_shape_1d
    ),
    "x[..., -1]": same(lambda x: x[..., -1], one_shape_1d),
    "x.exp()": Op(lambda x: x.exp(), np.exp, lambda T, x: x.exp()),
    "x.log()": Op(lambda x: x.log(), np.log, lambda T, x: x.log(), domains=(positive,)),
    # functional.py: elementwise
    "exp": Op(F.exp, np.exp, lambda T, x: T.exp(x)),
    "log": Op(F.log, np.log, lambda T, x: T.log(x), domains=(positive,)),
    "log1p": Op(F.log1p, np.log1p, lambda T, x: T.log1p(x), domains=(above_minus_one,)),
    "sqrt": Op(F.sqrt, np.sqrt, lambda T, x: T.sqrt(x), domains=(positive,)),
    "square": Op(F.square, np.square, lambda T, x: T.square(x)),
    "abs": Op(F.abs, np.abs, lambda T, x: T.abs(x), domains=(away_from(0.0),)),
    "tanh": Op(F.tanh, np.tanh, lambda T, x: T.tanh(x)),
    "relu": Op(
        F.relu, lambda x: np.maximum(x, 0), lambda T, x: T.relu(x), domains=(away_from(0.0),)
    ),
    "sigmoid": Op(F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), lambda T, x: T.sigmoid(x)),
    "softplus": Op(
        F.softplus, lambda x: np.logaddexp(0, x), lambda T, x: T.nn.functional.softplus(x)
    ),
    "log_sigmoid": Op(
        F.log_sigmoid, lambda x: -np.logaddexp(0, -x), lambda T, x: T.nn.functional.logsigmoid(x)
    ),
    "bernoulli_log_prob": Op(
        F.bernoulli_log_prob,
        lambda a, x: x * a - np.logaddexp(0, a),
        lambda T, a, x: (
            -T.nn.functional.binary_cross_entropy_with_logits(
                *T.broadcast_tensors(a, x),
                reduction="none",  # (torch wants equal shapes)
            )
        ),
        broadcastable_pair,
        (anywhere, unit_interval),
    ),
    "logaddexp": Op(
        F.logaddexp, np.logaddexp, lambda T, a, b: T.logaddexp(a, b), broadcastable_pair
    ),
    "logaddexp(h, -5.0)": Op(
        lambda h: F.logaddexp(h, -5.0),
        lambda h: np.logaddexp(h, -5.0),
        lambda T, h: T.logaddexp(h, T.tensor(-5.0, dtype=h.dtype)),
        domains=(lambda rng, shape: rng.uniform(-8, 3, shape),),  # on both sides of the floor
    ),
    "normal_log_prob": Op(
        F.normal_log_prob,
        lambda x, mu, log_std: (
            -0.5 * ((x - mu) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
        ),
        lambda T, x, mu, log_std: T.distributions.Normal(mu, log_std.exp()).log_prob(x),
        hnp.mutually_broadcastable_shapes(
            num_shapes=3, min_dims=0, max_dims=3, min_side=1, max_side=4
        ).map(lambda b: b.input_shapes),
    ),
    "normal_kl_to_standard": Op(
        F.normal_kl_to_standard,
        lambda mu, log_std: 0.5 * (mu**2 + np.exp(2 * log_std) - 1) - log_std,
        lambda T, mu, log_std: T.distributions.kl_divergence(
            T.distributions.Normal(mu, log_std.exp()),
            T.distributions.Normal(T.zeros_like(mu), T.ones_like(mu)),
        ),
        broadcastable_pair,
    ),
    "logsumexp(axis=-1)": Op(
        lambda x: F.logsumexp(x, axis=-1),
        lambda x: np.log(np.exp(x).sum(-1)),
        lambda T, x: T.logsumexp(x, dim=-1),
        one_shape_1d,
    ),
    "logsumexp(axis=0, keepdims)": Op(
        lambda x: F.logsumexp(x, axis=0, keepdims=True),
        lambda x: np.log(np.exp(x).sum(0, keepdims=True)),
        lambda T, x: T.logsumexp(x, dim=0, keepdim=True),
        one_shape_1d,
    ),
    "logsumexp(axis=None)": Op(
        lambda x: F.logsumexp(x, axis=None),
        lambda x: np.log(np.exp(x).sum()),
        lambda T, x: T.logsumexp(x.reshape(-1), dim=0),
        one_shape,
    ),
    "maximum": Op(
        F.maximum,
        np.maximum,
        lambda T, a, b: T.maximum(a, b),
        broadcastable_pair,
        (even_hundredths, odd_hundredths),
    ),
    "clip(-1, 1)": Op(
        lambda x: F.clip(x, -1.0, 1.0),
        lambda x: np.clip(x, -1, 1),
        lambda T, x: T.clip(x, -1, 1),
        domains=(away_from(-1.0, 1.0),),
    ),
    "clip(low only)": Op(
        lambda x: F.clip(x, low=0.5),
        lambda x: np.clip(x, 0.5, None),
        lambda T, x: T.clip(x, min=0.5),
        domains=(away_from(0.5),),
    ),
    "where": Op(
        lambda a, b: F.where(a > 0, a, b),
        lambda a, b: np.where(a > 0, a, b),
        lambda T, a, b: T.where(a > 0, a, b),
        broadcastable_pair,
        (away_from(0.0), anywhere),
    ),
    # functional.py: joining and splitting
    "concatenate": Op(
        lambda a, b: F.concatenate([a, b], axis=-1),
        lambda a, b: np.concatenate([a, b], axis=-1),
        lambda T, a, b: T.cat([a, b], dim=-1),
        pair_differing_on_last_axis(),
    ),
    "stack(axis=-1)": Op(
        lambda a, b: F.stack([a, b], axis=-1),
        lambda a, b: np.stack([a, b], axis=-1),
        lambda T, a, b: T.stack([a, b], dim=-1),
        equal_pair,
    ),
    "split in 2": Op(
        lambda x: sum_parts(F.split(x, 2, axis=-1)),
        lambda x: sum_parts(np.split(x, 2, axis=-1)),
        lambda T, x: sum_parts(T.chunk(x, 2, dim=-1)),
        even_last_axis,
    ),
    "split at sizes": Op(
        lambda x: sum_parts(F.split(x, [1, 1, x.shape[-1] - 2])),
        lambda x: sum_parts(np.split(x, [1, 2], axis=-1)),
        lambda T, x: sum_parts(T.split(x, [1, 1, x.shape[-1] - 2], dim=-1)),
        even_last_axis,
    ),
    "unstack": Op(
        lambda x: sum_parts(F.unstack(x, axis=0)),
        lambda x: sum_parts(list(x)),
        lambda T, x: sum_parts(T.unbind(x, dim=0)),
        one_shape_1d,
    ),
    # ops with several outputs, some unused (their gradients are zeros, filled in by the op)
    "split, one part used": Op(
        lambda x: F.split(x, [1, x.shape[-1] - 1])[0] * 2,
        lambda x: np.split(x, [1], axis=-1)[0] * 2,
        lambda T, x: T.split(x, [1, x.shape[-1] - 1], dim=-1)[0] * 2,
        even_last_axis,
    ),
    "unstack, the last slice used": Op(
        lambda x: F.unstack(x, axis=0)[-1] * 3,
        lambda x: list(x)[-1] * 3,
        lambda T, x: T.unbind(x, dim=0)[-1] * 3,
        one_shape_1d,
    ),
    "pad": Op(
        lambda x: F.pad(x, PAD[: x.ndim], value=0.5),
        lambda x: np.pad(x, PAD[: x.ndim], constant_values=0.5),
        lambda T, x: torch_pad(T, x, PAD[: x.ndim]),
        hnp.array_shapes(min_dims=1, max_dims=3).map(lambda s: (s,)),
    ),
}


def draw_inputs(op: Op, data) -> list[np.ndarray]:
    """Float64 host arrays of the drawn shapes, each from its op's domain."""
    shapes = data.draw(op.shapes, label="shapes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    return [
        np.asarray(op.domains[min(i, len(op.domains) - 1)](rng, s)) for i, s in enumerate(shapes)
    ]


def check_op(op: Op, arrays, torch=None):
    """Forward equals NumPy and keeps float64; gradcheck passes; with `torch`, the value
    and the gradient of <output, r> (r a fixed random array) equal torch.autograd's."""
    xs = [Tensor(a, requires_grad=True) for a in arrays]
    out = op.ours(*xs)
    expected = op.numpy(*arrays)
    assert out.shape == np.shape(expected) and out.dtype == xs[0].dtype
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert gradcheck(op.ours, arrays)
    if torch is None:
        return
    r = np.random.default_rng(1).standard_normal(out.shape)
    (out * Tensor(r)).sum().backward()
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    t_out = op.torch(torch, *ts)
    (t_out * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    for i, (x, t) in enumerate(zip(xs, ts)):
        np.testing.assert_allclose(
            to_numpy(x.grad), t.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"input {i}"
        )


@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_op_forward_and_gradcheck(name, data):
    check_op(OPS[name], draw_inputs(OPS[name], data))


@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_op_matches_torch(name, data, torch):
    check_op(OPS[name], draw_inputs(OPS[name], data), torch)


# --- stable forms at +-1000: finite values, the right limits, finite gradients ----------

STABLE = {  # op: (its values at [-1000, 1000], its derivatives there)
    "sigmoid": (F.sigmoid, [0.0, 1.0], [0.0, 0.0]),
    "softplus": (F.softplus, [0.0, 1000.0], [0.0, 1.0]),
    "log_sigmoid": (F.log_sigmoid, [-1000.0, 0.0], [1.0, 0.0]),
    "bernoulli_log_prob(a, x=1)": (
        lambda a: F.bernoulli_log_prob(a, 1.0),
        [-1000.0, 0.0],
        [1.0, 0.0],
    ),
    "bernoulli_log_prob(a, x=0)": (
        lambda a: F.bernoulli_log_prob(a, 0.0),
        [0.0, -1000.0],
        [0.0, -1.0],
    ),
}


# an overflow inside (exp(1000) = inf) fails the test
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", STABLE)
def test_stable_at_large_inputs(name, dtype):
    fn, values, derivatives = STABLE[name]
    x = Tensor([-1000.0, 1000.0], requires_grad=True, dtype=dtype)
    y = fn(x)
    y.sum().backward()
    assert y.dtype == x.dtype and x.grad.dtype == x.dtype
    np.testing.assert_array_equal(y.numpy(), values)
    np.testing.assert_array_equal(to_numpy(x.grad), derivatives)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logsumexp_stable_at_large_inputs(dtype):
    x = Tensor(
        [[1000.0, 1000.0], [-1000.0, -1000.0], [1000.0, -1000.0]], requires_grad=True, dtype=dtype
    )
    y = F.logsumexp(x, axis=-1)
    y.sum().backward()
    rtol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(y.numpy(), [1000 + np.log(2), -1000 + np.log(2), 1000.0], rtol=rtol)
    np.testing.assert_allclose(to_numpy(x.grad), [[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]], rtol=rtol)
    assert y.dtype == x.dtype and x.grad.dtype == x.dtype


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # log(0) = -inf is the point
def test_logsumexp_of_all_minus_infinity_is_minus_infinity():
    y = F.logsumexp(Tensor([[-np.inf, -np.inf], [0.0, -np.inf]]), axis=-1)
    np.testing.assert_array_equal(y.numpy(), [-np.inf, 0.0])


# --- shapes that do not fit: the error names the op and both shapes -----------------

MISFITS = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
    "maximum": F.maximum,
    "where": lambda a, b: F.where(a > 0, a, b),
}


@pytest.mark.parametrize("op", MISFITS)
def test_broadcast_mismatch_names_op_and_shapes(op):
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4,)))
    with pytest.raises(ValueError, match=rf"^{op}: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        MISFITS[op](a, b)


@pytest.mark.parametrize(
    "a, b, message",
    [
        ((2, 3), (4, 5), r"matmul: shapes \(2, 3\) and \(4, 5\) do not fit \(3 != 4\)"),
        ((3,), (4,), r"matmul: shapes \(3,\) and \(4,\) do not fit \(3 != 4\)"),
        (
            (2, 3, 4),
            (5, 4, 2),
            r"matmul of \(2, 3, 4\) and \(5, 4, 2\), batch axes: shapes \(2,\) and \(5,\)",
        ),
        ((), (3,), r"matmul: shapes \(\) and \(3,\): a 0-d operand"),
    ],
)
def test_matmul_mismatch_names_shapes(a, b, message):
    with pytest.raises(ValueError, match=message):
        Tensor(np.ones(a)) @ Tensor(np.ones(b))


def test_backward_through_one_output_frees_the_op_for_the_others():
    """backward() frees every op it passes; an op with several outputs is one op."""
    x = Tensor(backend.asarray(np.arange(6.0).reshape(2, 3)), requires_grad=True)
    a, b = F.split(x, [1, 2], axis=-1)
    a.sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [[1, 0, 0], [1, 0, 0]])
    with pytest.raises(RuntimeError, match="a second time"):
        b.sum().backward()


def test_join_split_and_pad_errors_name_the_op_and_shapes():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((3, 3)))
    with pytest.raises(
        ValueError, match=re.escape("concatenate: shapes [(2, 3), (3, 3)] differ outside axis 1")
    ):
        F.concatenate([a, b], axis=1)
    with pytest.raises(
        ValueError, match=re.escape("stack: all shapes must be equal, got [(2, 3), (3, 3)]")
    ):
        F.stack([a, b])
    with pytest.raises(
        ValueError,
        match=re.escape("split: axis 1 of shape (2, 3) does not split into 2 equal parts"),
    ):
        F.split(a, 2, axis=1)
    with pytest.raises(ValueError, match=re.escape("split: sizes [1, 1] do not add up to 3")):
        F.split(a, [1, 1])
    with pytest.raises(
        ValueError,
        match=re.escape("pad: need 2 non-negative (before, after) pairs for shape (2, 3)"),
    ):
        F.pad(a, [(1, 1)])
    with pytest.raises(
        ValueError, match=re.escape("logsumexp: axis 2 is out of range for a tensor with 2 axes")
    ):
        F.logsumexp(a, axis=2)


def test_gradient_at_kinks_follows_the_documented_choice():
    """relu'(0) = 0, |x|'(0) = 0, maximum's tie goes to its first argument, clip passes
    the gradient at its boundaries: the choices the docstrings state."""
    x = Tensor([0.0, -1.0, 1.0], requires_grad=True, dtype="float64")
    (F.relu(x) + F.abs(x) + F.clip(x, -1.0, 1.0)).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [1.0, 0.0, 3.0])
    a, b = Tensor([2.0], requires_grad=True), Tensor([2.0], requires_grad=True)
    F.maximum(a, b).sum().backward()
    assert float(to_numpy(a.grad)[0]) == 1.0 and float(to_numpy(b.grad)[0]) == 0.0
