"""Image layers (channels-last, as Keras): Conv2D, Conv2DTranspose, MaxPool2D, UpSampling2D.

Each layer comes after its differentiable op (``conv2d``, ``conv2d_transpose``,
``max_pool2d``, ``upsampling2d``): a forward computed on arrays and its backward
right beside it, built from the gather/scatter pair of ``im2col.py``.
"""

from __future__ import annotations

from .. import backend
from ..tensor import Tensor, as_int, is_int, lift, record
from .im2col import (
    PADDINGS,
    col2im,
    conv_output_length,
    crop2d,
    deconv_output_length,
    im2col,
    pad2d,
    padding_amounts,
    window_offsets,
)
from .layers import Layer, check_input, get_initializer, make_weights, sum_rows

# --- convolution --------------------------------------------------------------


def conv2d(
    x: Tensor, kernel: Tensor, bias: Tensor | None = None, strides=(1, 1), padding="valid"
) -> Tensor:
    """x (N, H, W, C) convolved with kernel (kh, kw, C, F), plus bias (F,): out (N, oh, ow, F).

    (As in every deep-learning library this is a cross-correlation: the kernel is not flipped.)
    """
    xp = backend.xp()
    kernel, bias = _same_kind(x, kernel, bias, "conv2d")
    _check_op_args("conv2d", x, kernel, strides, padding)
    n, h, w, c = x.shape
    kh, kw, _, f = kernel.shape
    (sh, sw) = strides
    oh, ow = conv_output_length(h, kh, sh, padding), conv_output_length(w, kw, sw, padding)
    pads = (padding_amounts(h, kh, sh, padding), padding_amounts(w, kw, sw, padding))
    padded = pad2d(x.data, pads)
    padded_size = padded.shape[1:3]
    cols = _windows(padded, (kh, kw), strides, (oh, ow))
    out = cols @ xp.reshape(kernel.data, (kh * kw * c, f))  # (windows, kh*kw*C) @ (kh*kw*C, F)
    if bias is not None:
        out += bias.data  # in place: `out` is a fresh array, and this saves a full-size copy
    parents = (x, kernel) if bias is None else (x, kernel, bias)

    def backward(g):
        g2 = xp.reshape(g, (n * oh * ow, f))
        # out = cols @ kernel, so d(kernel) = cols^T g; d(x) adds g times the kernel back onto
        # the pixels each window was gathered from: the transposed convolution of g
        gk = xp.reshape(cols.mT @ g2, kernel.shape) if kernel.requires_grad else None
        gx = None
        if x.requires_grad:  # (not for the images fed to the first layer)
            gx = crop2d(_add_patches(g, kernel.data, strides, padded_size), pads)
        return (gx, gk) if bias is None else (gx, gk, sum_rows(g2))

    return record(xp.reshape(out, (n, oh, ow, f)), parents, backward, "conv2d")


def conv2d_transpose(
    x: Tensor, kernel: Tensor, bias: Tensor | None = None, strides=(1, 1), padding="valid"
) -> Tensor:
    """The adjoint of conv2d: x (N, h, w, C) with kernel (kh, kw, F, C), plus bias (F,), gives
    (N, H, W, F).

    conv2d maps an (H, W, F) image to (h, w, C) with this kernel; the transpose runs
    that map backwards, exactly as conv2d's backward does: each input pixel's C numbers
    times the kernel give a (kh, kw, F) patch, and the patches are added into the
    output at stride s. Its own backward is therefore a convolution (im2col, matmul).
    H follows Keras: H = h s + max(kh - s, 0) (``valid``) or h s (``same``).
    """
    xp = backend.xp()
    kernel, bias = _same_kind(x, kernel, bias, "conv2d_transpose")
    _check_op_args("conv2d_transpose", x, kernel, strides, padding)
    n, h, w, c = x.shape
    kh, kw, f, _ = kernel.shape
    (sh, sw) = strides
    oh, ow = deconv_output_length(h, kh, sh, padding), deconv_output_length(w, kw, sw, padding)
    pads = (padding_amounts(oh, kh, sh, padding), padding_amounts(ow, kw, sw, padding))
    padded_size = (oh + sum(pads[0]), ow + sum(pads[1]))
    out = _add_patches(x.data, kernel.data, strides, padded_size)
    if bias is not None:
        # in place on the fresh array (the padding it also lands on is cut off next)
        out += bias.data
    out = crop2d(out, pads)
    parents = (x, kernel) if bias is None else (x, kernel, bias)

    def backward(g):
        # the adjoint of adding patches is gathering windows: one per input pixel
        gcols = _windows(pad2d(g, pads), (kh, kw), strides, (h, w))
        k2 = xp.reshape(kernel.data, (kh * kw * f, c))
        gx = xp.reshape(gcols @ k2, x.shape) if x.requires_grad else None
        x2 = xp.reshape(x.data, (n * h * w, c))
        gk = xp.reshape(gcols.mT @ x2, kernel.shape) if kernel.requires_grad else None
        return (gx, gk) if bias is None else (gx, gk, sum_rows(xp.reshape(g, (-1, f))))

    return record(out, parents, backward, "conv2d_transpose")


def _windows(padded, kernel_size, strides, out_size):
    """im2col as a matrix: one row per window, (N*oh*ow, kh*kw*C)."""
    n, *_, c = padded.shape
    (kh, kw), (oh, ow) = kernel_size, out_size
    return backend.xp().reshape(
        im2col(padded, kernel_size, strides, out_size), (n * oh * ow, kh * kw * c)
    )


def _add_patches(x, kernel, strides, size):
    """The transposed convolution on arrays, before cropping: each pixel of x (N, h, w, C)
    times kernel (kh, kw, F, C) is a (kh, kw, F) patch, added into an (N, *size, F) image at
    the pixel's position times the stride. (conv2d's backward to its input is this too.)

    Two orders give the same sums. Scatter, as the sentence says: one product per kernel
    offset, then col2im adds the patches, an add per offset. Or, at stride 1, gather:
    output pixel (y, x) receives entry (i, j) of the patches of input pixels (y - i, x - j),
    so it is a convolution of x zero-padded by (kh - 1, kw - 1) with the kernel flipped:
    im2col, then one product. The gather copies kh*kw*C numbers per output pixel, the
    scatter makes kh*kw*F per input pixel: gather when C <= F.
    """
    xp = backend.xp()
    n, h, w, c = x.shape
    kh, kw, f, _ = kernel.shape
    if tuple(strides) == (1, 1) and c <= f:
        padded = pad2d(x, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
        flipped = xp.permute_dims(xp.flip(kernel, axis=(0, 1)), (0, 1, 3, 2))  # (kh, kw, C, F)
        out = _windows(padded, (kh, kw), strides, size) @ xp.reshape(flipped, (kh * kw * c, f))
        return xp.reshape(out, (n, *size, f))
    x2 = xp.reshape(x, (n * h * w, c))
    if f == 1:  # kernel rows (kh*kw, C) @ x^T is already (offsets, pixels, 1): one product
        products = xp.reshape(kernel, (kh * kw, c)) @ x2.mT
    else:  # one (pixels, F) product per offset
        products = x2 @ xp.reshape(kernel, (kh * kw, f, c)).mT
    return col2im(xp.reshape(products, (kh * kw, n, h, w, f)), size, (kh, kw), strides)


def _same_kind(x: Tensor, kernel, bias, op: str):
    """The kernel and bias on x's backend and in x's dtype, else an error (as every op refuses
    a mix: a float32 model fed float64 would otherwise come out, and train, in float64)."""
    return lift(kernel, x, op), (None if bias is None else lift(bias, x, op))


def _check_op_args(op: str, x: Tensor, kernel, pair, padding, what: str = "strides") -> None:
    """What the layers check, for a caller of the op itself: ranks, a size pair, a padding."""
    if x.ndim != 4 or (kernel is not None and kernel.ndim != 4):
        shapes = f"x {x.shape}" + (f" and kernel {kernel.shape}" if kernel is not None else "")
        raise ValueError(f"{op}: expected 4-d x (N, H, W, C) and a 4-d kernel, got {shapes}")
    if not (
        isinstance(pair, (tuple, list))
        and len(pair) == 2
        and all(is_int(s) and s >= 1 for s in pair)
    ):
        raise ValueError(f"{op}: {what} must be a pair of positive ints, got {pair!r}")
    if padding not in PADDINGS:
        raise ValueError(f"{op}: padding must be one of {PADDINGS}, got {padding!r}")


class _Conv(Layer):
    """What Conv2D and Conv2DTranspose share: arguments, lazy weights, input checks."""

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
    ):
        super().__init__(activation)
        self.kernel_initializer = get_initializer(kernel_initializer)
        self.bias_initializer = get_initializer(bias_initializer)
        self.filters = as_int(filters, type(self).__name__, "filters", 1)
        self.kernel_size = _size_pair(kernel_size, "kernel_size", self)
        self.strides = _size_pair(strides, "strides", self)
        self.padding = _padding(padding, self)
        self.kernel = self.bias = None

    def _build(self, x: Tensor) -> None:
        check_input(self, x, 4)
        shape = self._kernel_shape(x.shape[-1])
        self.kernel, self.bias = make_weights(self, shape, self.filters, x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel is None:
            self._build(x)
        check_input(self, x, 4, self._in_channels())
        return self.activation(self._apply(x, self.kernel, self.bias, self.strides, self.padding))


class Conv2D(_Conv):
    """Convolution: (N, H, W, C) -> (N, oh, ow, filters), kernel (kh, kw, C, filters)
    (PyTorch's nn.Conv2d weight (filters, C, kh, kw) permuted by (2, 3, 1, 0))."""

    def _kernel_shape(self, c):
        return (*self.kernel_size, c, self.filters)

    def _in_channels(self):
        return self.kernel.shape[2]

    def _apply(self, x, kernel, bias, strides, padding):
        _, h, w, _ = x.shape
        if padding == "valid" and (h < self.kernel_size[0] or w < self.kernel_size[1]):
            raise ValueError(
                f"{self.name}: input {x.shape} is smaller than the kernel {self.kernel_size} "
                "(padding 'valid')"
            )
        return conv2d(x, kernel, bias, strides, padding)


class Conv2DTranspose(_Conv):
    """Transposed convolution: (N, h, w, C) -> (N, H, W, filters), kernel (kh, kw, filters, C)
    (PyTorch's nn.ConvTranspose2d weight (C, filters, kh, kw) permuted by (2, 3, 1, 0))."""

    def _kernel_shape(self, c):
        return (*self.kernel_size, self.filters, c)

    def _in_channels(self):
        return self.kernel.shape[3]

    def _apply(self, x, kernel, bias, strides, padding):
        return conv2d_transpose(x, kernel, bias, strides, padding)


# --- pooling and upsampling -----------------------------------------------------


def max_pool2d(x: Tensor, pool_size=(2, 2), strides=None, padding="valid") -> Tensor:
    """The maximum of each (ph, pw) window of x (N, H, W, C), windows `strides` apart.

    The gradient of a window's output goes to one input: its maximum, and at a tie
    the first maximum in row-major window order (top row first, left to right).
    With ``same`` the padding is -inf, so it is never the maximum.
    """
    xp = backend.xp()
    strides = strides or pool_size
    _check_op_args("max_pool2d", x, None, pool_size, padding, "pool_size")
    _check_op_args("max_pool2d", x, None, strides, padding)
    n, h, w, c = x.shape
    (ph, pw), (sh, sw) = pool_size, strides
    oh, ow = conv_output_length(h, ph, sh, padding), conv_output_length(w, pw, sw, padding)
    pads = (padding_amounts(h, ph, sh, padding), padding_amounts(w, pw, sw, padding))
    padded = pad2d(x.data, pads, value=-float("inf"))
    padded_size = padded.shape[1:3]
    # a running maximum over the window offsets (window_offsets: one strided slice each)
    keys = list(window_offsets(pool_size, strides, (oh, ow)))
    out = padded[keys[0]]
    for key in keys[1:]:
        out = xp.maximum(out, padded[key])

    overlap = sh < ph or sw < pw  # windows that overlap share inputs

    def backward(g):
        # the scatter of col2im: each offset sends g to the windows whose maximum it holds,
        # unless an earlier offset of the window already held it (`served`); the last
        # offset holds it wherever no earlier one did
        gx = backend.full((n, *padded_size, c), 0.0, g.dtype)

        def send(key, wins):
            part = g * xp.astype(wins, g.dtype)  # (a product: much faster than where)
            if overlap:  # an input in several windows gets the sum of their gradients
                gx[key] += part
            else:  # each input is in one window: a write, cheaper than +=
                gx[key] = part

        served = xp.zeros_like(out, dtype=xp.bool)
        for key in keys[:-1]:
            wins = (padded[key] == out) & ~served
            served = served | wins
            send(key, wins)
        send(keys[-1], ~served)
        return (crop2d(gx, pads),)

    return record(out, (x,), backward, "max_pool2d")


class MaxPool2D(Layer):
    """Max pooling: (N, H, W, C) -> (N, oh, ow, C); strides default to pool_size."""

    def __init__(self, pool_size=2, strides=None, padding="valid"):
        super().__init__()
        self.pool_size = _size_pair(pool_size, "pool_size", self)
        self.strides = self.pool_size if strides is None else _size_pair(strides, "strides", self)
        self.padding = _padding(padding, self)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, 4)
        if self.padding == "valid" and (
            x.shape[1] < self.pool_size[0] or x.shape[2] < self.pool_size[1]
        ):
            raise ValueError(
                f"{self.name}: input {x.shape} is smaller than the pool {self.pool_size} (padding "
                "'valid')"
            )
        return max_pool2d(x, self.pool_size, self.strides, self.padding)


def upsampling2d(x: Tensor, size=(2, 2)) -> Tensor:
    """Nearest-neighbour upsampling: every pixel becomes a (sh, sw) block of copies.

    Backward: each input pixel was copied sh*sw times, so it receives the sum of the
    gradients of its copies: the blocks are windows of stride (sh, sw), and each
    offset in the block is one strided slice, as in col2im.
    """
    xp = backend.xp()
    _check_op_args("upsampling2d", x, None, size, "valid", "size")
    n, h, w, c = x.shape
    sh, sw = size
    blocks = xp.broadcast_to(xp.reshape(x.data, (n, h, 1, w, 1, c)), (n, h, sh, w, sw, c))
    out = xp.reshape(blocks, (n, h * sh, w * sw, c))

    def backward(g):
        first, *others = window_offsets(size, size, (h, w))
        gx = g[first]
        for key in others:
            gx = gx + g[key]
        return (gx,)

    return record(out, (x,), backward, "upsampling2d")


class UpSampling2D(Layer):
    """(N, H, W, C) -> (N, H*sh, W*sw, C) by repeating pixels."""

    def __init__(self, size=2):
        super().__init__()
        self.size = _size_pair(size, "size", self)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, 4)
        return upsampling2d(x, self.size)


# --- argument checks ----------------------------------------------------------


def _size_pair(value, what: str, layer) -> tuple[int, int]:
    """An int or a pair of positive ints, as Keras accepts for sizes and strides."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(is_int(v) and v >= 1 for v in pair):
        raise ValueError(
            f"{type(layer).__name__}: {what} must be a positive int or a pair of them, got "
            f"{value!r}"
        )
    return tuple(int(v) for v in pair)


def _padding(padding: str, layer) -> str:
    if str(padding).lower() not in PADDINGS:
        raise ValueError(
            f"{type(layer).__name__}: padding must be one of {PADDINGS}, got {padding!r}"
        )
    return str(padding).lower()
