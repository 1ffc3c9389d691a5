"""gradcheck itself: it passes correct gradients, and it catches wrong ones, small
inputs coordinate by coordinate, large ones along random directions, naming the input,
the place and both values. (Its use on every op is in test_functional.py.)
"""

import re

import numpy as np
import pytest

import minivae.functional as F
from minivae import GradcheckError, Tensor, backend, gradcheck
from minivae.tensor import record


def square_missing_factor_2(x):
    """x^2 with a wrong backward: g * x instead of 2 g x."""
    return record(x.data * x.data, (x,), lambda g: (g * x.data,), "bad_square")


def square_wrong_at(coordinate):
    """x^2 whose backward is right everywhere but at one coordinate, where it is off by 1."""

    def fn(x):
        bump = np.zeros(x.shape)
        bump[coordinate] = 1.0
        bump = backend.asarray(bump, dtype=x.dtype)
        return record(
            x.data * x.data, (x,), lambda g: (2 * g * x.data + g * bump,), "bumped_square"
        )

    return fn


def square_off_by(relative):
    return lambda x: record(
        x.data * x.data, (x,), lambda g: (2 * g * x.data * (1 + relative),), "scaled_square"
    )


def test_passes_correct_gradients_small_and_large():
    rng = np.random.default_rng(0)
    assert gradcheck(
        lambda x, w: F.tanh(x @ w).sum(), [rng.standard_normal((3, 4)), rng.standard_normal((4, 2))]
    )
    # 400 > 100: random directions
    assert gradcheck(lambda x: F.softplus(x) * x, [rng.standard_normal((20, 20))])


def test_small_input_names_input_coordinate_and_both_values():
    x = np.array([0.5, -2.0, 1.0])
    with pytest.raises(GradcheckError) as caught:
        gradcheck(lambda x: square_missing_factor_2(x).sum(), [x])
    message = str(caught.value)
    # the largest error
    assert message.startswith("gradcheck: input 0 (shape (3,)), worst at coordinate (1,)")
    analytic, numeric = map(float, re.search(r"analytic (\S+), numeric (\S+) ", message).groups())
    assert analytic == -2.0  # what the wrong backward says, x
    assert numeric == pytest.approx(-4.0, rel=1e-8)  # the true derivative, 2x


def test_names_the_input_that_is_wrong():
    rng = np.random.default_rng(0)
    with pytest.raises(
        GradcheckError, match=re.escape("input 1 (shape (2, 2)), worst at coordinate")
    ):
        gradcheck(
            lambda a, b: a.sum() + square_missing_factor_2(b).sum(),
            [rng.standard_normal(3), rng.standard_normal((2, 2))],
        )


def test_large_input_catches_an_error_in_a_single_coordinate():
    x = np.random.default_rng(0).standard_normal((15, 20))
    assert gradcheck(square_wrong_at((0, 0)), [x], atol=2.0)  # an error of 1 is inside atol 2 ...
    with pytest.raises(
        GradcheckError, match=r"input 0 \(shape \(15, 20\)\), worst at random direction \d"
    ):
        gradcheck(square_wrong_at((7, 13)), [x])  # ... but not inside the default atol


def test_non_scalar_output_is_checked_through_a_random_projection():
    x = np.random.default_rng(0).standard_normal((4, 3))
    with pytest.raises(GradcheckError, match="coordinate"):
        gradcheck(square_wrong_at((2, 1)), [x])


def test_tolerances_are_respected():
    x = np.random.default_rng(0).standard_normal(5)
    assert gradcheck(square_off_by(1e-4), [x])  # within the default rtol 1e-3
    with pytest.raises(GradcheckError, match="rtol 1e-05"):
        gradcheck(square_off_by(1e-4), [x], atol=0.0, rtol=1e-5)


def test_refuses_anything_but_float64_and_says_why():
    with pytest.raises(
        TypeError, match="input 0 has dtype float32; finite differences need float64"
    ):
        gradcheck(F.exp, [np.ones(3, dtype=np.float32)])
    with pytest.raises(
        TypeError, match="input 1 has dtype .*float32; finite differences need float64"
    ):
        gradcheck(lambda a, b: a * b, [np.ones(3), Tensor(np.ones(3, dtype=np.float32))])
    with pytest.raises(TypeError, match="input 0 has dtype list"):
        gradcheck(F.exp, [[1.0, 2.0]])


def test_leaves_its_inputs_alone():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    before = x.numpy().copy()
    assert gradcheck(lambda x: (x * x).sum(), [x])
    assert x.grad is None
    np.testing.assert_array_equal(x.numpy(), before)


def test_an_input_the_output_ignores_has_zero_gradient():
    assert gradcheck(lambda a, b: (a * 2.0).sum(), [np.ones(2), np.ones(3)])
    # and a real gradient is not mistaken for zero
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(
            lambda a: record(a.data * 2.0, (a,), lambda g: (None,), "no_backward").sum(),
            [np.ones(2)],
        )
