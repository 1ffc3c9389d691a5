"""Image layers (channels-last, as Keras): Conv2D, Conv2DTranspose, MaxPool2D, UpSampling2D.

Each layer comes after its differentiable op (``conv2d``, ``conv2d_transpose``,
``max_pool2d``, ``upsampling2d``): a forward computed on arrays and its backward
right beside it, built from the gather/scatter pair of ``im2col.py``.
"""

from __future__ import annotations

from .. import backend
from ..tensor import Tensor, record
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
from .layers import Layer, check_input, glorot_uniform, zeros

# --- convolution --------------------------------------------------------------


def conv2d(
    x: Tensor, kernel: Tensor, bias: Tensor | None = None, strides=(1, 1), padding="valid"
) -> Tensor:
    """x (N, H, W, C) convolved with kernel (kh, kw, C, F), plus bias (F,): out (N, oh, ow, F).

    (As in every deep-learning library this is a cross-correlation: the kernel is not flipped.)
    """
    xp = backend.xp()
    n, h, w, c = x.shape
    kh, kw, _, f = kernel.shape
    (sh, sw) = strides
    oh, ow = conv_output_length(h, kh, sh, padding), conv_output_length(w, kw, sw, padding)
    pads = (padding_amounts(h, kh, sh, padding), padding_amounts(w, kw, sw, padding))
    padded = pad2d(x.data, pads)
    padded_size = padded.shape[1:3]
    cols = xp.reshape(im2col(padded, (kh, kw), strides, (oh, ow)), (n * oh * ow, kh * kw * c))
    out = cols @ xp.reshape(kernel.data, (kh * kw * c, f))  # (windows, kh*kw*C) @ (kh*kw*C, F)
    if bias is not None:
        out += bias.data  # in place: `out` is a fresh array, and this saves a full-size copy
    parents = (x, kernel) if bias is None else (x, kernel, bias)

    def backward(g):
        g2 = xp.reshape(g, (n * oh * ow, f))
        # out = cols @ kernel, so d(kernel) = cols^T g, and d(cols) = g kernel^T, which
        # col2im adds back onto the pixels each window was gathered from
        gk = (
            xp.reshape(xp.matrix_transpose(cols) @ g2, kernel.shape)
            if kernel.requires_grad
            else None
        )
        gx = None
        if x.requires_grad:  # (not for the images fed to the first layer)
            per_offset = xp.reshape(kernel.data, (kh * kw, c, f))
            gcols = xp.reshape(g2 @ xp.matrix_transpose(per_offset), (kh * kw, n, oh, ow, c))
            gx = crop2d(col2im(gcols, padded_size, (kh, kw), strides), pads)
        return (gx, gk) if bias is None else (gx, gk, _sum_rows(g2))

    return record(xp.reshape(out, (n, oh, ow, f)), parents, backward, "conv2d")


def conv2d_transpose(
    x: Tensor, kernel: Tensor, bias: Tensor | None = None, strides=(1, 1), padding="valid"
) -> Tensor:
    """The adjoint of conv2d: x (N, h, w, C) with kernel (kh, kw, F, C), plus bias (F,), gives (N, H, W, F).

    conv2d maps an (H, W, F) image to (h, w, C) with this kernel; the transpose runs
    that map backwards, exactly as conv2d's backward does: each input pixel's C numbers
    times the kernel give a (kh, kw, F) patch, and col2im adds the patches into the
    output at stride s. Its own backward is therefore a convolution (im2col, matmul).
    H follows Keras: H = h s + max(kh - s, 0) (``valid``) or h s (``same``).
    """
    xp = backend.xp()
    n, h, w, c = x.shape
    kh, kw, f, _ = kernel.shape
    (sh, sw) = strides
    oh, ow = deconv_output_length(h, kh, sh, padding), deconv_output_length(w, kw, sw, padding)
    pads = (padding_amounts(oh, kh, sh, padding), padding_amounts(ow, kw, sw, padding))
    padded_size = (oh + sum(pads[0]), ow + sum(pads[1]))
    x2 = xp.reshape(x.data, (n * h * w, c))
    per_offset = xp.reshape(kernel.data, (kh * kw, f, c))
    # one (pixels, F) per offset
    cols = xp.reshape(x2 @ xp.matrix_transpose(per_offset), (kh * kw, n, h, w, f))
    out = col2im(cols, padded_size, (kh, kw), strides)
    if bias is not None:
        # in place on the fresh array (the padding it also lands on is cut off next)
        out += bias.data
    out = crop2d(out, pads)
    parents = (x, kernel) if bias is None else (x, kernel, bias)

    def backward(g):
        # the adjoint of col2im is im2col: gather the gradient's windows, one per input pixel
        gcols = xp.reshape(
            im2col(pad2d(g, pads), (kh, kw), strides, (h, w)), (n * h * w, kh * kw * f)
        )
        k2 = xp.reshape(kernel.data, (kh * kw * f, c))
        gx = xp.reshape(gcols @ k2, x.shape) if x.requires_grad else None
        gk = (
            xp.reshape(xp.matrix_transpose(gcols) @ x2, kernel.shape)
            if kernel.requires_grad
            else None
        )
        return (gx, gk) if bias is None else (gx, gk, _sum_rows(xp.reshape(g, (-1, f))))

    return record(out, parents, backward, "conv2d_transpose")


def _sum_rows(g2):
    """The bias gradient: g2 (pixels, F) summed over its pixels, as the product ones @ g2
    (on NumPy, BLAS does this some 20x faster than xp.sum over axis 0)."""
    return backend.full((g2.shape[0],), 1.0, g2.dtype) @ g2


class _Conv(Layer):
    """What Conv2D and Conv2DTranspose share: arguments, lazy weights, input checks."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None):
        super().__init__(activation)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size", self)
        self.strides = _pair(strides, "strides", self)
        self.padding = _padding(padding, self)
        self.kernel = self.bias = None

    def _build(self, x: Tensor) -> None:
        check_input(self, x, 4)
        kh, kw = self.kernel_size
        c, f = x.shape[-1], self.filters
        # Keras's fans for every conv kernel: receptive field times the kernel's last two axes
        self.kernel = glorot_uniform(self._kernel_shape(c), kh * kw * c, kh * kw * f, x.dtype)
        self.bias = zeros((f,), x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel is None:
            self._build(x)
        check_input(self, x, 4, self._in_channels())
        return self.activation(self._apply(x, self.kernel, self.bias, self.strides, self.padding))


class Conv2D(_Conv):
    """Convolution: (N, H, W, C) -> (N, oh, ow, filters), kernel (kh, kw, C, filters)."""

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
    """Transposed convolution: (N, h, w, C) -> (N, H, W, filters), kernel (kh, kw, filters, C)."""

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
    n, h, w, c = x.shape
    (ph, pw), (sh, sw) = pool_size, strides
    oh, ow = conv_output_length(h, ph, sh, padding), conv_output_length(w, pw, sw, padding)
    pads = (padding_amounts(h, ph, sh, padding), padding_amounts(w, pw, sw, padding))
    padded = pad2d(x.data, pads, value=-float("inf"))
    padded_size = padded.shape[1:3]
    # a running maximum over the window offsets: the gather of im2col without the copy
    keys = list(window_offsets(pool_size, strides, (oh, ow)))
    out = padded[keys[0]]
    for key in keys[1:]:
        out = xp.maximum(out, padded[key])

    def backward(g):
        # the scatter of col2im: each offset adds g to the windows whose maximum it holds,
        # unless an earlier offset of the window already held it (`served`)
        gx = backend.full((n, *padded_size, c), 0.0, g.dtype)
        served = xp.zeros_like(out, dtype=xp.bool)
        for key in keys:
            wins = (padded[key] == out) & ~served
            served = served | wins
            gx[key] += g * xp.astype(wins, g.dtype)  # (a product: much faster than where)
        return (crop2d(gx, pads),)

    return record(out, (x,), backward, "max_pool2d")


class MaxPool2D(Layer):
    """Max pooling: (N, H, W, C) -> (N, oh, ow, C); strides default to pool_size."""

    def __init__(self, pool_size=2, strides=None, padding="valid"):
        super().__init__()
        self.pool_size = _pair(pool_size, "pool_size", self)
        self.strides = _pair(strides, "strides", self) if strides is not None else self.pool_size
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
    offset in the block is one strided slice, as in im2col.
    """
    xp = backend.xp()
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
        self.size = _pair(size, "size", self)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, 4)
        return upsampling2d(x, self.size)


# --- argument checks ----------------------------------------------------------


def _pair(value, what: str, layer) -> tuple[int, int]:
    """An int or a pair of positive ints, as Keras accepts for sizes and strides."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(
            f"{type(layer).__name__}: {what} must be a positive int or a pair of them, got "
            f"{value!r}"
        )
    return pair


def _padding(padding: str, layer) -> str:
    if str(padding).lower() not in PADDINGS:
        raise ValueError(
            f"{type(layer).__name__}: padding must be one of {PADDINGS}, got {padding!r}"
        )
    return str(padding).lower()
