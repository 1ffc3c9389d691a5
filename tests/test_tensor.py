"""The Tensor and its graph: how data gets in, how backward() walks, what it frees.

The values and gradients of single ops are in test_functional.py (one table, checked
against NumPy, finite differences and torch). Here: the constructor's dtype rules and
its explicit door onto the device, the learner's pitfalls (a reused node, backward
twice, a freed graph), deep graphs, flat memory, no_grad, float32 end to end, and the
errors for bad input.
"""

import gc
import re
import tracemalloc

import numpy as np
import pytest

import minivae
import minivae.functional as F
from minivae import Tensor, backend, no_grad, to_numpy
from minivae.tensor import Slots


def grad_of(t) -> np.ndarray:
    return to_numpy(t.grad)


# --- the constructor: dtypes, and the one explicit door onto the device -------------


@pytest.mark.parametrize(
    "data, dtype, expected",
    [
        (np.ones(2, dtype=np.float64), None, "float64"),  # a float array keeps its dtype
        (np.ones(2, dtype=np.float32), None, "float32"),
        (np.float64(1.5), None, "float64"),  # so does a NumPy float scalar
        (1.5, None, "float32"),  # Python numbers and lists become float32
        (3, None, "float32"),
        ([[1, 2], [3, 4]], None, "float32"),
        (np.arange(3), None, "float32"),  # so do integer and boolean arrays
        (np.array([True, False]), None, "float32"),
        ([1.0, 2.0], "float64", "float64"),  # dtype= forces
        (np.ones(2, dtype=np.float64), "float32", "float32"),
    ],
)
def test_constructor_dtype_rules(data, dtype, expected):
    t = Tensor(data, dtype=dtype)
    assert t.dtype == backend.dtype(expected)
    assert backend.is_array(t.data)  # on the current backend's device, whatever came in
    np.testing.assert_array_equal(t.numpy(), np.asarray(data, dtype=expected))


def test_constructor_refuses_other_dtypes():
    with pytest.raises(
        TypeError, match="Tensor: dtype must be 'float32' or 'float64', got 'int32'"
    ):
        Tensor([1, 2], dtype="int32")


def test_constructor_moves_foreign_arrays_onto_the_device(strict):
    """A NumPy array, a strict array on another device, another Tensor: all moved here."""
    host_device = strict.Device("CPU_DEVICE")
    for data in [np.array([1.0, 2.0]), strict.asarray([1.0, 2.0], device=host_device)]:
        t = Tensor(data)
        assert backend.is_array(t.data) and t.dtype == backend.dtype("float64")
        np.testing.assert_array_equal(t.numpy(), [1.0, 2.0])
    with minivae.use_backend("numpy"):
        on_numpy = Tensor([1.0, 2.0])
    moved = Tensor(on_numpy)
    assert backend.is_array(moved.data) and moved._backend == backend.get_backend().name


def test_raw_arrays_of_another_device_are_refused_in_ops(strict):
    """Only the constructor moves data; an op given a foreign array raises, naming the op."""
    t = Tensor([1.0, 2.0])
    foreign = strict.asarray([1.0, 2.0], device=strict.Device("CPU_DEVICE"))
    with pytest.raises(TypeError, match="add: cannot combine a Tensor on backend"):
        t + foreign
    with pytest.raises(TypeError, match="multiply: cannot combine"):
        t * foreign
    with pytest.raises(
        TypeError, match="add: cannot combine a Tensor on backend 'numpy' with builtins.list"
    ):
        with minivae.use_backend("numpy"):
            Tensor([1.0]) + [1.0]


@pytest.mark.backends("strict", "cupy")  # on numpy, a NumPy array is the backend's own array
def test_numpy_arrays_are_refused_in_ops_on_a_device_backend():
    t = Tensor([1.0, 2.0])
    name = minivae.get_backend().name
    with pytest.raises(
        TypeError,
        match=re.escape(
            f"subtract: cannot combine a Tensor on backend '{name}' with "
            "numpy.ndarray; wrap it in Tensor(...)"
        ),
    ):
        t - np.ones(2)
    with pytest.raises(TypeError, match="add: cannot combine"):
        np.ones(2) + t  # NumPy hands the operation to the Tensor (Tensor.__array_ufunc__ = None)
    with pytest.raises(TypeError, match="backward: cannot combine"):
        (t * 2).backward(np.ones(2))


def test_mixing_float32_and_float64_is_refused_not_promoted():
    x32, x64 = Tensor([1.0, 2.0], dtype="float32"), Tensor([1.0, 2.0], dtype="float64")
    with pytest.raises(TypeError, match="add: mixing float32 and float64"):
        x32 + x64
    with pytest.raises(TypeError, match="multiply: mixing float32 and float64"):
        x32 * backend.asarray(np.ones(2))  # a float64 backend array


@pytest.mark.backends("numpy")  # the case where a NumPy array is native
def test_numpy_array_on_the_left_gives_a_tensor():
    out = np.ones(2, dtype=np.float32) + Tensor([1.0, 2.0], requires_grad=True)
    assert isinstance(out, Tensor) and out.requires_grad
    np.testing.assert_array_equal(out.numpy(), [2.0, 3.0])


def test_numbers_take_the_tensor_dtype():
    for number in [2, 2.5, np.float64(2.5), np.float32(2.5), True]:
        x = Tensor([1.0], dtype="float32")
        assert (
            (x * number).dtype == x.dtype
            and (number - x).dtype == x.dtype
            and (x**number).dtype == x.dtype
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda a, b: a + b,
        lambda a, b: a @ b,
        lambda a, b: F.concatenate([a, b]),
        lambda a, b: F.stack([a, b]),
        lambda a, b: F.maximum(a, b),
    ],
)
def test_mixing_tensors_from_two_backends_names_both(make, strict):
    with minivae.use_backend("numpy"):
        a = Tensor([1.0, 2.0])
    with minivae.use_backend("strict"):
        b = Tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="mixing tensors from backends 'numpy' and 'strict'"):
        make(a, b)


# --- learner pitfalls ---------------------------------------------------------------


def test_reused_node_gets_the_sum_of_its_gradients():
    x = Tensor([3.0], requires_grad=True, dtype="float64")
    (x * x).backward(Tensor([1.0], dtype="float64"))
    assert grad_of(x)[0] == 6.0  # d(x^2)/dx = 2x, from two uses of x
    x.grad = None
    y = x * 2.0  # y feeds two branches
    (y * 3.0 + y.exp()).sum().backward()
    np.testing.assert_allclose(grad_of(x), [2 * (3 + np.exp(6.0))], rtol=1e-15)


def test_each_node_backward_runs_once():
    """A node used three times passes its gradient on once, after all three arrived."""
    x = Tensor([0.5, 1.5], requires_grad=True, dtype="float64")
    y = x * 2.0
    loss = (y * y + y).sum()
    calls = []
    inner = y.grad_fn
    y.grad_fn = lambda g: calls.append(to_numpy(g)) or inner(g)
    loss.backward()
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], 2 * to_numpy(y.data) + 1)
    np.testing.assert_allclose(grad_of(x), 2 * (2 * to_numpy(y.data) + 1))


def test_backward_twice_on_fresh_graphs_accumulates():
    x = Tensor([1.0, 2.0], requires_grad=True)
    for _ in range(2):
        (x * 3.0).sum().backward()  # a new graph each time
    np.testing.assert_array_equal(grad_of(x), [6.0, 6.0])  # doubled: zero .grad between steps


def test_second_backward_through_a_freed_graph_raises():
    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x.exp()
    loss = h.sum()
    loss.backward()
    with pytest.raises(
        RuntimeError, match="a second time: its graph was freed by the first backward"
    ):
        loss.backward()
    with pytest.raises(RuntimeError, match="a second time"):
        (h * 2.0).sum().backward()  # a new graph through the freed part raises too


def test_only_leaves_keep_gradients_and_constants_get_none():
    w = Tensor([1.0, 2.0], requires_grad=True)
    c = Tensor([3.0, 4.0])
    h = w * c
    h.sum().backward()
    np.testing.assert_array_equal(grad_of(w), [3.0, 4.0])
    assert h.grad is None and c.grad is None and not c.requires_grad


def test_broadcast_gradients_are_summed_back_to_each_input_shape():
    a = Tensor(np.ones((3, 1)), requires_grad=True)
    b = Tensor(np.ones(4), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    np.testing.assert_array_equal(grad_of(a), np.full((3, 1), 4.0))  # each a_i met 4 b's
    np.testing.assert_array_equal(grad_of(b), np.full(4, 3.0))


# --- deep graphs and memory -----------------------------------------------------------


def test_a_10000_op_chain_backpropagates():
    x = Tensor([0.5], requires_grad=True, dtype="float64")
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()  # a recursive walk would pass Python's recursion limit (1000)
    np.testing.assert_allclose(grad_of(x), [1.0001**10_000], rtol=1e-12)


def test_a_10000_op_chain_can_be_dropped_without_backward():
    y = Tensor([0.5], requires_grad=True)
    for _ in range(10_000):
        y = F.tanh(y)
    del y  # freeing a deep chain of Tensors must not overflow the C stack
    gc.collect()


def test_a_graph_with_exponentially_many_paths_is_walked_once_per_node():
    x = Tensor([1.0], requires_grad=True, dtype="float64")
    y = x
    for _ in range(1000):
        y = y * 0.5 + y * 0.5  # 2^1000 paths from y back to x, 4000 nodes
    y.sum().backward()
    np.testing.assert_allclose(grad_of(x), [1.0], rtol=1e-12)


def live_tensors() -> int:
    gc.collect()
    # type(), not isinstance(): that would wake lazy torch modules
    return sum(type(o) is Tensor for o in gc.get_objects())


def test_memory_stays_flat_over_2000_steps_even_when_every_loss_is_kept():
    """The learner's leak: ``history.append(loss)`` instead of ``float(loss.numpy())``.

    backward() frees the graph, so a kept loss holds only its own scalar, not the
    activations behind it. Without the freeing this test fails: each kept loss then
    holds 7 tensors and about 37 KB (measured with the freeing line disabled).
    """
    backend.seed(0)
    x = Tensor(backend.normal((64, 16), backend.dtype("float32")))
    w = Tensor(backend.normal((16, 32), backend.dtype("float32")), requires_grad=True)
    b = Tensor(backend.full((32,), 0.0, backend.dtype("float32")), requires_grad=True)
    activation_bytes = 64 * 32 * 4

    def step():
        h = F.tanh(x @ w + b)
        loss = (h * h).mean()
        w.grad = b.grad = None
        loss.backward()
        return loss

    history = [step() for _ in range(100)]  # warm-up: caches, first allocations
    tracemalloc.start()
    try:
        tensors_before, (bytes_before, _) = live_tensors(), tracemalloc.get_traced_memory()
        history += [step() for _ in range(2000)]
        tensors_after, (bytes_after, _) = live_tensors(), tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tensors_after - tensors_before <= 2000  # the kept losses themselves, nothing behind them
    # per step, less than one activation
    assert (bytes_after - bytes_before) / 2000 < activation_bytes


# --- no_grad, detach -------------------------------------------------------------------


def test_no_grad_records_nothing_and_restores_on_exit():
    w = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        out = (w * 2.0).sum()
        with no_grad():
            pass
        assert not (w * 2.0).requires_grad  # still off after the nested block
    assert not out.requires_grad and out.parents == ()
    assert (w * 2.0).requires_grad
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0  # noqa: B018 - the exception is the point
    assert (w * 2.0).requires_grad  # restored after an exception too


def test_detach_cuts_the_graph():
    w = Tensor([1.0, 2.0], requires_grad=True)
    d = (w * 2.0).detach()
    assert not d.requires_grad and d.parents == ()
    ((w * 2.0).sum() + (d * w).sum()).backward()
    np.testing.assert_array_equal(grad_of(w), [4.0, 6.0])  # 2 + d, d a constant


# --- float32 stays float32 --------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_through_forward_and_backward(dtype):
    """Every intermediate value, every gradient passed between nodes and every leaf
    gradient keeps the input dtype, through Python numbers and every kind of op."""
    backend.seed(0)
    x = Tensor(backend.normal((4, 6), backend.dtype(dtype)), requires_grad=True)
    w = Tensor(backend.normal((6, 6), backend.dtype(dtype)), requires_grad=True)
    h = F.tanh(x @ w + 0.5) * 2 - 1 / (1 + F.square(x))
    a, b = F.split(h, 2, axis=-1)
    z = F.concatenate([F.sigmoid(a), F.softplus(b) ** 1.5], axis=-1) + F.log_sigmoid(h) - F.relu(h)
    z = F.stack(F.unstack(z, axis=0), axis=1).transpose().reshape(4, 6)
    z = F.where(z > 0, F.sqrt(F.abs(z) + 1e-3), F.exp(z)) + F.log1p(F.square(z)) + F.maximum(z, 0.1)
    z = F.pad(F.clip(z, -5.0, 5.0), [(1, 0), (0, 1)])[1:, :-1]
    loss = F.logsumexp(z, axis=-1).mean() + z.sum(axis=0).mean() / 3 + F.log(z * z + 1).sum()

    expected = backend.dtype(dtype)
    seen = []
    for node in loss.topological_order():
        assert node.dtype == expected, node.op
        if node.grad_fn is not None:  # record what flows through each backward

            def spy(g, inner=node.grad_fn, name=node.op):
                grads = inner(g)
                seen.append((name, dtypes(g), [d for pg in grads for d in dtypes(pg)]))
                return grads

            node.grad_fn = spy
    loss.backward()
    assert len(seen) > 30
    for name, g_dtypes, parent_dtypes in seen:
        assert all(d == expected for d in g_dtypes + parent_dtypes), name
    assert x.grad.dtype == expected and w.grad.dtype == expected


def dtypes(g) -> list:
    """The dtype of a gradient; of each filled slot, for the outputs of split and unstack."""
    if isinstance(g, Slots):
        return [s.dtype for s in g.values()]
    return [] if g is None else [g.dtype]


# --- errors for bad input ---------------------------------------------------------------


def test_backward_on_a_non_scalar_needs_grad():
    y = Tensor(np.ones((2, 3)), requires_grad=True) * 2.0
    with pytest.raises(
        ValueError,
        match=re.escape("backward() on a non-scalar tensor of shape (2, 3) needs `grad`"),
    ):
        y.backward()
    with pytest.raises(
        ValueError, match=re.escape("backward(): grad has shape (3,), tensor has (2, 3)")
    ):
        y.backward(Tensor(np.ones(3)))


def test_backward_on_a_non_scalar_with_grad_gives_the_vector_jacobian_product():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).backward(Tensor([1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(grad_of(x), [2.0, 0.0, 12.0])


def test_backward_on_a_constant_says_so():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (Tensor([1.0]) * 2.0).sum().backward()


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda t: t.sum(axis=2),
            ValueError,
            "sum: axis 2 is out of range for a tensor with 2 axes",
        ),
        (
            lambda t: t.mean(axis=-3),
            ValueError,
            "mean: axis -3 is out of range for a tensor with 2 axes",
        ),
        (
            lambda t: t.reshape(4, 2),
            ValueError,
            "reshape: cannot reshape (2, 3) (6 elements) to (4, 2)",
        ),
        (
            lambda t: t.transpose(0, 0),
            ValueError,
            "transpose: axes (0, 0) are not a permutation of the 2 axes",
        ),
        (
            lambda t: t[None],
            TypeError,
            "Tensor[...]: only basic indexing (ints, slices, ...) is supported",
        ),
        (lambda t: t[np.array([0, 1])], TypeError, "Tensor[...]: only basic indexing"),
        (
            lambda t: t[0, 0, 0],
            IndexError,
            "Tensor[...]: (0, 0, 0) indexes more axes than the 2 of shape (2, 3)",
        ),
        (lambda t: t ** Tensor(2.0), TypeError, "Tensor ** p: p must be a Python number"),
        (lambda t: t ** np.ones(2), TypeError, "Tensor ** p: p must be a Python number"),
        (lambda t: len(t.sum()), TypeError, "len() of a 0-d Tensor"),
    ],
)
def test_bad_arguments_name_the_op(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(Tensor(np.ones((2, 3))))


def test_comparisons_give_boolean_arrays_without_graph():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    for result, expected in [
        (x > 2.0, [False, False, True]),
        (x <= Tensor([1.0, 1.0, 4.0]), [True, False, True]),
        (x < 2.0, [True, False, False]),
        (x >= 2.0, [False, True, True]),
    ]:
        assert backend.is_array(result) and result.dtype == backend.xp().bool
        np.testing.assert_array_equal(to_numpy(result), expected)
    assert x == x and x != Tensor([1.0, 2.0, 3.0])  # == is identity: tensors can sit in sets


def test_plain_properties():
    t = Tensor(np.ones((2, 3)), requires_grad=True)
    assert (t.shape, t.ndim, t.size, len(t)) == ((2, 3), 2, 6, 2)
    assert repr(t) == f"Tensor(shape=(2, 3), dtype={t.dtype}, op=leaf, requires_grad=True)"


@pytest.mark.backends("numpy")  # writability is a NumPy array flag
def test_a_leaf_gradient_is_a_writable_array():
    x = Tensor(np.ones((3, 2)), requires_grad=True)
    x.sum().backward()
    x.grad *= 0.5  # e.g. gradient clipping in place
    np.testing.assert_array_equal(x.grad, np.full((3, 2), 0.5))


def test_each_leaf_gradient_is_its_own_array():
    """Clipping one leaf's .grad in place changes no other gradient, no number and not the
    caller's array: a + b hands both the same g, a number given to backward() is a shared
    constant, and a Tensor given to it is the caller's."""
    a, b = Tensor(np.ones(3), requires_grad=True), Tensor(np.ones(3), requires_grad=True)
    (a + b).backward(Tensor(np.ones(3)))
    a.grad *= 0.5
    np.testing.assert_array_equal(minivae.to_numpy(b.grad), np.ones(3))
    # ... also where one side reaches its leaf through a view (reshape's backward is one)
    a, b = Tensor(np.ones((2, 3)), requires_grad=True), Tensor(np.ones(6), requires_grad=True)
    (a + b.reshape(2, 3)).backward(Tensor(np.ones((2, 3))))
    a.grad *= 0.5
    np.testing.assert_array_equal(minivae.to_numpy(b.grad), np.ones(6))
    w = Tensor(1.5, requires_grad=True)
    (w + 1.0).backward(3.0)
    w.grad *= 0
    assert float((Tensor(np.ones(3)) * 3.0).numpy()[0]) == 3.0
    given, c = Tensor(np.ones(3)), Tensor(np.ones(3), requires_grad=True)
    (c * 1.0).backward(given)
    c.grad *= 0
    np.testing.assert_array_equal(given.numpy(), np.ones(3))
