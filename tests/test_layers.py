"""Layers: sizes as Keras computes them, values against plain loops and PyTorch,
gradients against finite differences, the adjoint identities, and the errors."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minivae
from minivae import Tensor, gradcheck, nn
from minivae.nn import conv2d, conv2d_transpose, max_pool2d, upsampling2d
from minivae.nn.im2col import (
    col2im,
    conv_output_length,
    deconv_output_length,
    im2col,
    padding_amounts,
)

# --- the rules, restated plainly (TensorFlow's, which Keras uses) ----------------


def same_pads(n, k, s):
    """TensorFlow's 'same': ceil(n / s) outputs, the odd padding row at the end."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def pads_of(n, k, s, padding):
    return same_pads(n, k, s) if padding == "same" else (0, 0)


def keras_deconv_length(n, k, s, padding):
    return n * s if padding == "same" else n * s + max(k - s, 0)


# --- naive loop implementations, one output (or input) pixel at a time -------------


def naive_conv2d(x, kernel, s, padding):
    n, h, w, c = x.shape
    kh, kw, _, f = kernel.shape
    (t, b), (l, r) = pads_of(h, kh, s, padding), pads_of(w, kw, s, padding)
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    oh, ow = (xp.shape[1] - kh) // s + 1, (xp.shape[2] - kw) // s + 1
    out = np.zeros((n, oh, ow, f))
    for i in range(n):
        for a in range(oh):
            for bb in range(ow):
                window = xp[i, a * s : a * s + kh, bb * s : bb * s + kw, :]
                for ff in range(f):
                    out[i, a, bb, ff] = np.sum(window * kernel[:, :, :, ff])
    return out


def naive_conv2d_transpose(x, kernel, s, padding):
    """Every input pixel stamps kernel[i, j] @ x[n, a, b] onto output pixel (a s + i, b s + j)."""
    n, h, w, c = x.shape
    kh, kw, f, _ = kernel.shape
    oh, ow = keras_deconv_length(h, kh, s, padding), keras_deconv_length(w, kw, s, padding)
    (t, b), (l, r) = pads_of(oh, kh, s, padding), pads_of(ow, kw, s, padding)
    out = np.zeros((n, oh + t + b, ow + l + r, f))
    for i in range(n):
        for a in range(h):
            for bb in range(w):
                for di in range(kh):
                    for dj in range(kw):
                        out[i, a * s + di, bb * s + dj, :] += kernel[di, dj] @ x[i, a, bb]
    return out[:, t : t + oh, l : l + ow, :]


def naive_max_pool(x, p, s, padding):
    n, h, w, c = x.shape
    (t, b), (l, r) = pads_of(h, p, s, padding), pads_of(w, p, s, padding)
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=-np.inf)
    oh, ow = (xp.shape[1] - p) // s + 1, (xp.shape[2] - p) // s + 1
    out = np.zeros((n, oh, ow, c))
    for a in range(oh):
        for bb in range(ow):
            out[:, a, bb, :] = xp[:, a * s : a * s + p, bb * s : bb * s + p, :].max(axis=(1, 2))
    return out


# --- random cases, kept tiny so finite differences are quick ----------------------


@st.composite
def conv_cases(draw):
    """(x, kernel for conv2d, strides, padding) with every size small."""
    k = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    s = draw(st.sampled_from([1, 2, 3]))
    padding = draw(st.sampled_from(["valid", "same"]))
    h, w = draw(st.integers(k[0], k[0] + 4)), draw(st.integers(k[1], k[1] + 4))
    n, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return rng.standard_normal((n, h, w, c)), rng.standard_normal((*k, c, f)), s, padding


@st.composite
def transpose_cases(draw):
    """(x, kernel (kh, kw, filters, in), stride, padding) for conv2d_transpose."""
    k = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    s = draw(st.sampled_from([1, 2, 3]))
    padding = draw(st.sampled_from(["valid", "same"]))
    h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return rng.standard_normal((n, h, w, c)), rng.standard_normal((*k, f, c)), s, padding


@st.composite
def pool_cases(draw):
    p = draw(st.integers(1, 3))
    s = draw(st.sampled_from([1, 2, 3]))
    padding = draw(st.sampled_from(["valid", "same"]))
    h, w = draw(st.integers(p, p + 4)), draw(st.integers(p, p + 4))
    shape = (draw(st.integers(1, 2)), h, w, draw(st.integers(1, 3)))
    # distinct values 0.05 apart, shuffled: no two within gradcheck's step (1e-6) of a tie,
    # where the maximum has a kink
    order = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(math.prod(shape))
    return ((order - order.size / 2) * 0.05).reshape(shape), p, s, padding


def f64(a):
    return Tensor(a, dtype="float64")


# --- sizes ---------------------------------------------------------------------------


def test_output_lengths_follow_keras():
    # the lecture's layers: 28 -5-> 24 -pool-> 12 -5-> 8; and back: 8 -5T-> 12, 24 -5T-> 28
    assert conv_output_length(28, 5, 1, "valid") == 24
    assert conv_output_length(24, 2, 2, "valid") == 12
    assert conv_output_length(12, 5, 1, "valid") == 8
    assert deconv_output_length(8, 5, 1, "valid") == 12
    assert deconv_output_length(24, 5, 1, "valid") == 28
    # strided: windows that stick out are dropped (valid), or padded for (same)
    assert conv_output_length(7, 3, 2, "valid") == 3
    assert conv_output_length(8, 3, 3, "valid") == 2
    assert conv_output_length(7, 3, 2, "same") == 4
    assert conv_output_length(28, 5, 2, "same") == 14
    # Keras's deconv_output_length without output_padding
    assert deconv_output_length(7, 5, 2, "same") == 14
    assert deconv_output_length(7, 3, 2, "valid") == 15
    assert deconv_output_length(7, 1, 3, "valid") == 21  # kernel shorter than the stride
    # 'same': odd total padding puts the extra row at the end
    assert padding_amounts(4, 2, 1, "same") == (0, 1)
    assert padding_amounts(6, 3, 2, "same") == (0, 1)
    assert padding_amounts(5, 3, 2, "same") == (1, 1)
    assert padding_amounts(5, 1, 3, "same") == (0, 0)
    assert padding_amounts(5, 3, 1, "valid") == (0, 0)


@given(st.integers(1, 9), st.integers(1, 4), st.integers(1, 3), st.sampled_from(["valid", "same"]))
def test_transposed_length_is_a_length_the_convolution_maps_back(h, k, s, padding):
    """Keras's transposed-conv output length L is one whose convolution has h outputs."""
    length = deconv_output_length(h, k, s, padding)
    assert conv_output_length(length, k, s, padding) == h


def test_same_padding_puts_the_extra_row_and_column_at_the_bottom_right():
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    out = conv2d(f64(x), f64(np.ones((2, 2, 1, 1))), padding="same").numpy()
    assert out.shape == (1, 4, 4, 1)
    # no padding on top
    assert out[0, 0, 0, 0] == x[0, 0, 0, 0] + x[0, 0, 1, 0] + x[0, 1, 0, 0] + x[0, 1, 1, 0]
    assert out[0, 3, 3, 0] == x[0, 3, 3, 0]  # the window at the corner sees padding below and right


# --- forward values against plain loops ------------------------------------------------


@given(conv_cases())
def test_conv2d_matches_loops(case):
    x, k, s, padding = case
    b = np.linspace(-1, 1, k.shape[3])
    out = conv2d(f64(x), f64(k), f64(b), strides=(s, s), padding=padding).numpy()
    np.testing.assert_allclose(out, naive_conv2d(x, k, s, padding) + b, rtol=1e-12, atol=1e-12)


@given(transpose_cases())
def test_conv2d_transpose_matches_loops(case):
    x, k, s, padding = case
    b = np.linspace(-1, 1, k.shape[2])
    out = conv2d_transpose(f64(x), f64(k), f64(b), strides=(s, s), padding=padding).numpy()
    np.testing.assert_allclose(
        out, naive_conv2d_transpose(x, k, s, padding) + b, rtol=1e-12, atol=1e-12
    )


# _add_patches has three ways to the same sums: gather (stride 1, C <= F), one product
# (F = 1) and a product per offset; each, with its gradients, against the loops
@pytest.mark.parametrize("c, f, s", [(2, 3, 1), (3, 1, 1), (3, 2, 1), (2, 3, 2), (3, 1, 2)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_every_way_of_adding_patches_matches_loops(c, f, s, padding):
    rng = np.random.default_rng(c * 10 + f + s)
    x, k = rng.standard_normal((2, 3, 4, c)), rng.standard_normal((3, 2, f, c))
    out = conv2d_transpose(f64(x), f64(k), strides=(s, s), padding=padding).numpy()
    np.testing.assert_allclose(
        out, naive_conv2d_transpose(x, k, s, padding), rtol=1e-12, atol=1e-12
    )
    assert gradcheck(lambda a, w: conv2d_transpose(a, w, strides=(s, s), padding=padding), [x, k])
    # conv2d's backward to its input adds patches too, with the kernel's channels swapped
    image = rng.standard_normal((2, 5, 6, f))
    assert gradcheck(lambda a, w: conv2d(a, w, strides=(s, s), padding=padding), [image, k])


@given(pool_cases())
def test_max_pool_matches_loops(case):
    x, p, s, padding = case
    out = max_pool2d(f64(x), (p, p), (s, s), padding).numpy()
    np.testing.assert_array_equal(out, naive_max_pool(x, p, s, padding))


def test_upsampling_repeats_each_pixel():
    x = np.arange(12.0).reshape(1, 2, 3, 2)
    out = upsampling2d(f64(x), (2, 3)).numpy()
    np.testing.assert_array_equal(out, np.repeat(np.repeat(x, 2, axis=1), 3, axis=2))


# --- forward values against PyTorch (NCHW, so the layouts are converted) ----------------


def to_nchw(torch, x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def from_nchw(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@given(conv_cases())
def test_conv2d_matches_torch(torch, case):
    x, k, s, padding = case
    (t, b), (l, r) = (
        pads_of(x.shape[1], k.shape[0], s, padding),
        pads_of(x.shape[2], k.shape[1], s, padding),
    )
    xt = torch.nn.functional.pad(to_nchw(torch, x), (l, r, t, b))
    expected = torch.nn.functional.conv2d(
        xt, torch.from_numpy(k.transpose(3, 2, 0, 1).copy()), stride=s
    )
    out = conv2d(f64(x), f64(k), strides=(s, s), padding=padding).numpy()
    np.testing.assert_allclose(out, from_nchw(expected), rtol=1e-10, atol=1e-12)


@given(transpose_cases())
def test_conv2d_transpose_matches_torch(torch, case):
    x, k, s, padding = case
    kh, kw = k.shape[:2]
    # torch gives the full result, (h - 1) s + k long; Keras's output is a window of it
    # (with zero rows past its end when k < s), at the offset of the 'same' padding
    # (in, out, kh, kw), as torch wants it
    kernel = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())
    full = from_nchw(torch.nn.functional.conv_transpose2d(to_nchw(torch, x), kernel, stride=s))
    oh, ow = (
        keras_deconv_length(x.shape[1], kh, s, padding),
        keras_deconv_length(x.shape[2], kw, s, padding),
    )
    (t, b), (l, r) = pads_of(oh, kh, s, padding), pads_of(ow, kw, s, padding)
    padded = np.zeros((x.shape[0], oh + t + b, ow + l + r, k.shape[2]))
    padded[:, : full.shape[1], : full.shape[2], :] = full
    out = conv2d_transpose(f64(x), f64(k), strides=(s, s), padding=padding).numpy()
    np.testing.assert_allclose(out, padded[:, t : t + oh, l : l + ow, :], rtol=1e-10, atol=1e-12)


@given(pool_cases())
def test_max_pool_matches_torch(torch, case):
    x, p, s, padding = case
    (t, b), (l, r) = pads_of(x.shape[1], p, s, padding), pads_of(x.shape[2], p, s, padding)
    xt = torch.nn.functional.pad(to_nchw(torch, x), (l, r, t, b), value=-math.inf)
    expected = torch.nn.functional.max_pool2d(xt, p, stride=s)
    np.testing.assert_array_equal(
        max_pool2d(f64(x), (p, p), (s, s), padding).numpy(), from_nchw(expected)
    )


def test_upsampling_matches_torch(torch):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    expected = torch.nn.functional.interpolate(
        to_nchw(torch, x), scale_factor=(2, 3), mode="nearest"
    )
    np.testing.assert_array_equal(upsampling2d(f64(x), (2, 3)).numpy(), from_nchw(expected))


# --- gradients: every op and every layer, w.r.t. input and weights ----------------------


@given(conv_cases())
def test_conv2d_gradients(case):
    x, k, s, padding = case
    assert gradcheck(
        lambda x, k, b: conv2d(x, k, b, (s, s), padding), [x, k, np.linspace(-1, 1, k.shape[3])]
    )


@given(transpose_cases())
def test_conv2d_transpose_gradients(case):
    x, k, s, padding = case
    assert gradcheck(
        lambda x, k, b: conv2d_transpose(x, k, b, (s, s), padding),
        [x, k, np.linspace(-1, 1, k.shape[2])],
    )


@given(pool_cases())
def test_max_pool_gradients(case):
    x, p, s, padding = case  # distinct values, far apart: the maximum is differentiable
    assert gradcheck(lambda x: max_pool2d(x, (p, p), (s, s), padding), [x])


@given(st.integers(1, 3), st.integers(1, 3))
def test_upsampling_gradients(sh, sw):
    assert gradcheck(
        lambda x: upsampling2d(x, (sh, sw)),
        [np.random.default_rng(sh * 3 + sw).standard_normal((2, 2, 3, 2))],
    )


def layer_gradcheck(layer, x, weights=("kernel", "bias")):
    """gradcheck of layer(x) w.r.t. x and each weight, built first on x."""
    layer.build(x.shape[1:], dtype="float64")
    start = [x] + [getattr(layer, name).numpy() for name in weights]

    def run(x, *values):
        for name, value in zip(weights, values):
            setattr(layer, name, value)
        return layer(x)

    return gradcheck(run, start)


@given(conv_cases(), st.sampled_from([None, "tanh", "softplus"]))
def test_conv2d_layer_gradients(case, activation):
    x, k, s, padding = case
    layer = nn.Conv2D(k.shape[-1], k.shape[:2], strides=s, padding=padding, activation=activation)
    layer.build(x.shape[1:], dtype="float64")
    # not zero
    layer.bias = Tensor(np.random.default_rng(1).standard_normal(k.shape[-1]), requires_grad=True)
    assert layer_gradcheck(layer, x)


@given(transpose_cases(), st.sampled_from([None, "sigmoid"]))
def test_conv2d_transpose_layer_gradients(case, activation):
    x, k, s, padding = case
    layer = nn.Conv2DTranspose(
        k.shape[2], k.shape[:2], strides=s, padding=padding, activation=activation
    )
    assert layer_gradcheck(layer, x)


@pytest.mark.parametrize("shape", [(3, 4), (3, 2, 4)])  # Dense works over the last axis
def test_dense_layer_gradients(shape):
    x = np.random.default_rng(0).standard_normal(shape)
    assert layer_gradcheck(nn.Dense(5, activation="tanh"), x)


@pytest.mark.parametrize(
    "layer",
    [
        nn.MaxPool2D(2),
        nn.MaxPool2D(3, strides=1, padding="same"),
        nn.UpSampling2D((2, 1)),
        nn.Flatten(),
        nn.Reshape((6, 5)),
    ],
    ids=lambda layer: layer.name,
)
def test_weightless_layer_gradients(layer):  # (no weights, so one instance serves every backend)
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 1))
    assert layer_gradcheck(layer, x, weights=())


# --- the transposed convolution is the exact adjoint of the convolution ------------------


@given(conv_cases())
def test_conv2d_transpose_is_the_adjoint_of_conv2d(case):
    """<conv2d(u, K), y> = <u, conv2d_transpose(y, K)> for every u, y: the defining identity.

    u takes the length Keras's transposed convolution produces from conv2d's output.
    """
    x, k, s, padding = case
    oh, ow = conv2d(f64(x), f64(k), strides=(s, s), padding=padding).shape[1:3]
    rng = np.random.default_rng(0)
    u = rng.standard_normal(
        (
            x.shape[0],
            keras_deconv_length(oh, k.shape[0], s, padding),
            keras_deconv_length(ow, k.shape[1], s, padding),
            x.shape[3],
        )
    )
    y = rng.standard_normal((x.shape[0], oh, ow, k.shape[3]))
    left = np.sum(conv2d(f64(u), f64(k), strides=(s, s), padding=padding).numpy() * y)
    right = np.sum(u * conv2d_transpose(f64(y), f64(k), strides=(s, s), padding=padding).numpy())
    assert left == pytest.approx(right, rel=1e-12, abs=1e-12)


@given(conv_cases())
def test_col2im_is_the_adjoint_of_im2col(case):
    x, k, s, _ = case
    kh, kw = k.shape[:2]
    oh, ow = (
        conv_output_length(x.shape[1], kh, s, "valid"),
        conv_output_length(x.shape[2], kw, s, "valid"),
    )
    # col2im's layout
    c = np.random.default_rng(0).standard_normal((kh * kw, x.shape[0], oh, ow, x.shape[3]))
    xd, cd = f64(x).data, f64(c).data
    # im2col's
    left = np.sum(minivae.to_numpy(im2col(xd, (kh, kw), (s, s), (oh, ow))) * np.moveaxis(c, 0, 3))
    right = np.sum(x * minivae.to_numpy(col2im(cd, x.shape[1:3], (kh, kw), (s, s))))
    assert left == pytest.approx(right, rel=1e-12, abs=1e-12)


# --- pooling and upsampling: where the gradient goes ----------------------------------------


def test_max_pool_gives_a_tie_to_the_first_maximum_in_row_major_order():
    x = f64(np.array([[1.0, 3.0], [3.0, 3.0]]).reshape(1, 2, 2, 1))
    x.requires_grad = True
    max_pool2d(x, (2, 2)).sum().backward()
    np.testing.assert_array_equal(minivae.to_numpy(x.grad), [[[[0.0], [1.0]], [[0.0], [0.0]]]])


def test_max_pool_overlapping_windows_add_their_gradients():
    x = f64(np.array([[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]).reshape(1, 3, 3, 1))
    x.requires_grad = True
    max_pool2d(x, (2, 2), (1, 1)).sum().backward()  # the centre is the maximum of all 4 windows
    assert minivae.to_numpy(x.grad)[0, 1, 1, 0] == 4.0
    assert minivae.to_numpy(x.grad).sum() == 4.0


def test_max_pool_overlapping_windows_each_give_a_tie_to_their_own_first_maximum():
    x = f64(np.ones((1, 2, 3, 1)))  # two windows, (0, 0) and (0, 1): every entry ties
    x.requires_grad = True
    max_pool2d(x, (2, 2), (1, 1)).sum().backward()
    np.testing.assert_array_equal(minivae.to_numpy(x.grad)[0, :, :, 0], [[1, 1, 0], [0, 0, 0]])


def test_upsampling_backward_sums_the_copies():
    x = f64(np.ones((1, 2, 2, 1)))
    x.requires_grad = True
    upsampling2d(x, (2, 3)).sum().backward()
    np.testing.assert_array_equal(minivae.to_numpy(x.grad), np.full((1, 2, 2, 1), 6.0))


# --- weights: Keras's shapes and initialisers, built lazily ------------------------------


def test_weights_have_keras_shapes_and_are_built_lazily():
    conv, deconv, dense = nn.Conv2D(4, (3, 2)), nn.Conv2DTranspose(4, 3), nn.Dense(6)
    assert conv.kernel is None and conv.count_params() == 0
    assert conv.build((9, 9, 5)) == (7, 8, 4)
    assert conv.kernel.shape == (3, 2, 5, 4) and conv.bias.shape == (4,)
    assert deconv.build((4, 4, 5)) == (6, 6, 4)
    assert deconv.kernel.shape == (3, 3, 4, 5) and deconv.bias.shape == (4,)
    assert dense.build((7,)) == (6,)
    assert dense.kernel.shape == (7, 6) and dense.bias.shape == (6,)
    assert [name for name, _ in conv.named_parameters()] == ["kernel", "bias"]


@pytest.mark.parametrize(
    "make, input_shape, fans",
    [
        (lambda: nn.Conv2D(64, 3), (8, 8, 32), (3 * 3 * 32, 3 * 3 * 64)),
        (lambda: nn.Conv2DTranspose(32, 3), (8, 8, 64), (3 * 3 * 32, 3 * 3 * 64)),
        (lambda: nn.Dense(300), (200,), (200, 300)),
    ],
    ids=["Conv2D", "Conv2DTranspose", "Dense"],
)
def test_glorot_uniform_kernels_and_zero_biases(make, input_shape, fans):
    layer = make()
    layer.build(input_shape)
    kernel = layer.kernel.numpy()
    limit = math.sqrt(6 / sum(fans))
    assert np.abs(kernel).max() <= limit
    # uniform on [-limit, limit] has std limit / sqrt(3); with >= 18,000 draws the sample
    # std's relative standard error is about 0.3%, so 3% is a ten-sigma band
    assert kernel.std() == pytest.approx(limit / math.sqrt(3), rel=0.03)
    assert abs(kernel.mean()) < 0.05 * limit
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)


def test_float32_stays_float32_through_every_layer():
    model = nn.Sequential(
        [
            nn.Conv2D(2, 3, padding="same", activation="relu"),
            nn.MaxPool2D(2),
            nn.UpSampling2D(2),
            nn.Conv2DTranspose(1, 3, strides=2, activation="sigmoid"),
            nn.Flatten(),
            nn.Dense(3),
        ]
    )
    x = Tensor(np.random.default_rng(0).uniform(size=(2, 6, 6, 1)).astype(np.float32))
    out = model(x)
    assert out.dtype == minivae.backend.dtype("float32")
    out.sum().backward()
    assert all(p.grad.dtype == minivae.backend.dtype("float32") for p in model.parameters())


def test_activations_by_name_or_callable():
    x = f64(np.array([[-2.0, 0.5]]))
    for name, fn in [
        ("relu", lambda v: np.maximum(v, 0)),
        ("sigmoid", lambda v: 1 / (1 + np.exp(-v))),
        ("tanh", np.tanh),
        ("softplus", lambda v: np.log1p(np.exp(v))),
        (None, lambda v: v),
    ]:
        layer = nn.Dense(2, activation=name)
        layer.build((2,), dtype="float64")
        linear = x.numpy() @ layer.kernel.numpy()
        np.testing.assert_allclose(layer(x).numpy(), fn(linear), rtol=1e-12)
    doubled = nn.Dense(2, activation=lambda t: t * 2)
    doubled.build((2,), dtype="float64")
    np.testing.assert_allclose(
        doubled(x).numpy(), 2 * x.numpy() @ doubled.kernel.numpy(), rtol=1e-12
    )
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        nn.Dense(2, activation="swish")


# --- bad input names the layer, what it expected and what it got ----------------------------


def test_wrong_channel_count_names_layer_and_shapes():
    conv = nn.Conv2D(4, 3)
    conv.build((8, 8, 3))
    with pytest.raises(
        ValueError, match=r"Conv2D: expected input of shape \(N, \?, \?, 3\), got \(2, 8, 8, 1\)"
    ):
        conv(Tensor(np.zeros((2, 8, 8, 1)), dtype="float32"))
    deconv = nn.Conv2DTranspose(4, 3)
    deconv.build((8, 8, 2))
    with pytest.raises(
        ValueError,
        match=r"Conv2DTranspose: expected input of shape \(N, \?, \?, 2\), got \(1, 8, 8, 5\)",
    ):
        deconv(Tensor(np.zeros((1, 8, 8, 5)), dtype="float32"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Conv2D(4, 3),
        lambda: nn.Conv2DTranspose(4, 3),
        lambda: nn.MaxPool2D(2),
        lambda: nn.UpSampling2D(2),
    ],
    ids=["Conv2D", "Conv2DTranspose", "MaxPool2D", "UpSampling2D"],
)
def test_wrong_rank_names_layer_and_shapes(make):
    layer = make()
    with pytest.raises(
        ValueError,
        match=rf"{layer.name}: expected input of shape \(N, \?, \?, \?\), got \(2, 28, 28\)",
    ):
        layer(Tensor(np.zeros((2, 28, 28))))


def test_input_smaller_than_the_window_is_refused():
    with pytest.raises(
        ValueError, match=r"Conv2D: input \(1, 4, 4, 1\) is smaller than the kernel \(5, 5\)"
    ):
        nn.Conv2D(2, 5)(Tensor(np.zeros((1, 4, 4, 1))))
    with pytest.raises(
        ValueError, match=r"MaxPool2D: input \(1, 1, 4, 1\) is smaller than the pool \(2, 2\)"
    ):
        nn.MaxPool2D(2)(Tensor(np.zeros((1, 1, 4, 1))))
    assert nn.Conv2D(2, 5, padding="same")(Tensor(np.zeros((1, 4, 4, 1)))).shape == (1, 4, 4, 2)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Conv2D: padding must be one of"):
        nn.Conv2D(2, 3, padding="full")
    with pytest.raises(
        ValueError,
        match=r"Conv2DTranspose: strides must be a positive int or a pair of them, got 0",
    ):
        nn.Conv2DTranspose(2, 3, strides=0)
    with pytest.raises(
        ValueError,
        match=r"MaxPool2D: pool_size must be a positive int or a pair of them, got \(2, 2, 2\)",
    ):
        nn.MaxPool2D((2, 2, 2))
    assert nn.Conv2D(2, 3, padding="SAME").padding == "same"  # Keras lower-cases it too


def test_dense_and_reshape_errors():
    dense = nn.Dense(3)
    dense.build((4,))
    with pytest.raises(
        ValueError, match=r"Dense: expected input of shape \(N, \.\.\., 4\), got \(2, 5\)"
    ):
        dense(Tensor(np.zeros((2, 5)), dtype="float32"))
    with pytest.raises(ValueError, match=r"Reshape: cannot reshape input \(2, 6\) to \(N, 4, 2\)"):
        nn.Reshape((4, 2))(Tensor(np.zeros((2, 6))))


@pytest.mark.parametrize("strides", [(2, 1), (1, 3), (3, 2)])
def test_non_square_strides_against_torch_and_finite_differences(torch, strides):
    """The hypothesis cases draw one stride for both axes; here the two differ, so a
    mix-up of the row and column stride would show."""
    rng = np.random.default_rng(1)
    # k >= s: torch's sizes agree
    x, k = rng.standard_normal((2, 7, 8, 3)), rng.standard_normal((3, 3, 3, 4))
    out = conv2d(f64(x), f64(k), strides=strides).numpy()
    expected = torch.nn.functional.conv2d(
        to_nchw(torch, x), torch.from_numpy(k).permute(3, 2, 0, 1), stride=strides
    )
    np.testing.assert_allclose(out, from_nchw(expected), rtol=1e-10, atol=1e-10)

    # the transpose maps the 4 channels back to 3 with the same kernel
    y = rng.standard_normal(out.shape)
    back = conv2d_transpose(f64(y), f64(k), strides=strides).numpy()
    expected = torch.nn.functional.conv_transpose2d(
        to_nchw(torch, y), torch.from_numpy(k).permute(3, 2, 0, 1), stride=strides
    )
    np.testing.assert_allclose(back, from_nchw(expected), rtol=1e-10, atol=1e-10)

    pooled = max_pool2d(f64(x), (2, 3), strides, "valid").numpy()
    expected = torch.nn.functional.max_pool2d(to_nchw(torch, x), (2, 3), strides)
    np.testing.assert_array_equal(pooled, from_nchw(expected))

    small, ks = rng.standard_normal((1, 5, 6, 2)), rng.standard_normal((2, 3, 2, 2))
    assert gradcheck(lambda a, w: conv2d(a, w, strides=strides, padding="same"), [small, ks])
    assert gradcheck(
        lambda a, w: conv2d_transpose(a, w, strides=strides, padding="same"), [small, ks]
    )
    assert gradcheck(lambda a: max_pool2d(a, (2, 2), strides, "same"), [small])


# --- initializers: PyTorch's default, and weights brought from PyTorch ------------------

TORCH_INIT = {"kernel_initializer": "pytorch", "bias_initializer": "pytorch"}


@pytest.mark.parametrize(
    "make, input_shape, fan_in",
    [
        (lambda: nn.Conv2D(64, 3, **TORCH_INIT), (8, 8, 32), 3 * 3 * 32),
        # torch's fan_in of a transposed kernel (in, out, kh, kw) is out * kh * kw
        (lambda: nn.Conv2DTranspose(32, 3, **TORCH_INIT), (8, 8, 64), 3 * 3 * 32),
        (lambda: nn.Dense(300, **TORCH_INIT), (200,), 200),
    ],
    ids=["Conv2D", "Conv2DTranspose", "Dense"],
)
def test_pytorch_initializer_draws_uniform_on_one_over_sqrt_fan_in(make, input_shape, fan_in):
    layer = make()
    layer.build(input_shape)
    bound = 1 / math.sqrt(fan_in)
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
    # >= 18,000 draws: a 3% band on the std is ten standard errors (as for glorot above)
    assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert np.unique(bias).size == bias.size  # drawn, not zeros


def test_weights_exported_from_torch_give_torch_outputs(torch):
    torch.manual_seed(0)
    linear, conv = torch.nn.Linear(4, 3), torch.nn.Conv2d(2, 5, 3)
    deconv = torch.nn.ConvTranspose2d(2, 5, 3, stride=2)

    def weights(w):  # an initializer returning given weights (the fans are not needed)
        return lambda shape, fan_in, fan_out, dtype: w

    def from_torch(module, kernel_layout):
        kernel = module.weight.detach().numpy().transpose(kernel_layout)
        return dict(
            kernel_initializer=weights(kernel),
            bias_initializer=weights(module.bias.detach().numpy()),
        )

    x = np.random.default_rng(0).standard_normal((2, 6, 6, 2))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    dense = nn.Dense(3, **from_torch(linear, (1, 0)))  # nn.Linear's (out, in) -> Dense's (in, out)
    v = x[:, 0, :4, 0]  # (2, 4)
    expected = linear(torch.from_numpy(v.copy())).detach().numpy()
    np.testing.assert_allclose(
        dense(Tensor(v, dtype="float64")).numpy(), expected, rtol=1e-12, atol=1e-12
    )
    layout = (2, 3, 1, 0)  # torch's (out, in, kh, kw) or (in, out, kh, kw) -> (kh, kw, ., .)
    for theirs, ours in [
        (conv, nn.Conv2D(5, 3, **from_torch(conv, layout))),
        (deconv, nn.Conv2DTranspose(5, 3, 2, **from_torch(deconv, layout))),
    ]:
        expected = theirs(xt).detach().numpy().transpose(0, 2, 3, 1)
        got = ours(Tensor(x, dtype="float64")).numpy()
        if isinstance(ours, nn.Conv2DTranspose):
            # Keras's 'valid' window of torch's full output
            expected = expected[:, : got.shape[1], : got.shape[2]]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_initializer_errors_name_the_layer_and_the_shapes():
    with pytest.raises(
        ValueError,
        match=r"unknown initializer 'he'; expected one of "
        r"\['glorot_uniform', 'pytorch', 'zeros'\] or a callable",
    ):
        nn.Dense(3, kernel_initializer="he")
    layer = nn.Dense(3, kernel_initializer=lambda shape, fan_in, fan_out, dtype: np.zeros((3, 4)))
    with pytest.raises(
        ValueError,
        match=r"Dense: the kernel initializer returned shape \(3, 4\), "
        r"expected \(4, 3\)",
    ):
        layer.build((4,))
