"""Convolution as one matrix product: gather patches (im2col), scatter them back (col2im).

A 2-D convolution slides a (kh, kw) window over the image and, at each output
pixel, takes the dot product of the window's kh*kw*C numbers with each filter.
Written as loops that is slow; written as a matrix product it is one call to BLAS:

1. **im2col** (gather): copy every window into one row of a matrix. For an input
   (N, H, W, C) and oh x ow windows, the rows are the N*oh*ow windows and the
   columns their kh*kw*C numbers: entry (i, j, c) of window (a, b) is pixel
   (a*s + i, b*s + j), channel c. That formula, evaluated once per shape, is an
   index array of pixels, and the whole gather is one ``take`` with it.
2. **matmul**: (N*oh*ow, kh*kw*C) @ (kh*kw*C, F) gives all F filters at every
   output pixel; reshaped, that is the output (N, oh, ow, F).
3. **col2im** (scatter) undoes the gather's bookkeeping: each window's numbers go
   back to where they came from, and where windows overlap they are *added*. It
   loops over the kh*kw *offsets* (i, j) of the window, not over the pixels: the
   (i, j)-th number of every window at once is the strided slice
   ``x[:, i : i + s*oh : s, j : j + s*ow : s, :]``, and each offset is one ``+=``.

Gather and scatter are each other's adjoint (transpose): <im2col(x), c> =
<x, col2im(c)> for any x and c. That is why one pair serves everything:

* conv backward to its input        = a conv-transpose of g (below)
* conv-transpose forward            = col2im of (x @ kernel^T), one product per offset;
                                      at stride 1, when that makes fewer numbers, the
                                      same sums as a conv (im2col) of the zero-padded x
                                      with the kernel flipped (conv.py, _add_patches)
* conv-transpose backward to input  = im2col of g, then @ kernel (a conv)
* max pooling                       = the offset loop keeping a running maximum;
                                      its backward, the scatter loop
* upsampling backward               = the offset loop summing the copies

Only ``take``, slicing, reshape and ``+=`` into slices are used: all in the Array
API standard, so the same code runs on NumPy, CuPy and array_api_strict.

Sizes follow Keras (and TensorFlow):

* ``valid``: no padding, oh = floor((H - kh) / s) + 1 (windows that would stick
  out are dropped).
* ``same``: oh = ceil(H / s); the total padding ``max((oh - 1) s + kh - H, 0)`` is
  split with the smaller half on top/left and the extra row/column at the
  bottom/right.
* transposed convolution (``output_padding=None``): ``valid`` gives
  H s + max(kh - s, 0), ``same`` gives H s (Keras's deconv_output_length).
"""

from __future__ import annotations

import functools

import numpy as np

from .. import backend

PADDINGS = ("valid", "same")


def conv_output_length(n: int, k: int, s: int, padding: str) -> int:
    """Output length of a convolution (or pooling) over length n, window k, stride s."""
    if padding == "same":
        return -(-n // s)  # ceil(n / s)
    return (n - k) // s + 1


def deconv_output_length(n: int, k: int, s: int, padding: str) -> int:
    """Output length of a transposed convolution, as Keras computes it without output_padding."""
    if padding == "same":
        return n * s
    return n * s + max(k - s, 0)


def padding_amounts(n: int, k: int, s: int, padding: str) -> tuple[int, int]:
    """(before, after) padding of a length-n axis; with ``same`` the odd one goes after."""
    if padding != "same":
        return (0, 0)
    total = max((conv_output_length(n, k, s, "same") - 1) * s + k - n, 0)
    return (total // 2, total - total // 2)


def pad2d(x, pads, value=0.0):
    """Pad the two spatial axes of (N, H, W, C): pads = ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    n, h, w, c = x.shape
    out = backend.full((n, top + h + bottom, left + w + right, c), value, x.dtype)
    out[:, top : top + h, left : left + w, :] = x
    return out


def crop2d(x, pads):
    """The inverse of pad2d: cut the padding off again."""
    (top, bottom), (left, right) = pads
    _, h, w, _ = x.shape
    return x[:, top : h - bottom, left : w - right, :]


def window_offsets(kernel_size, strides, out_size):
    """Yield, for each kernel offset (i, j) in row-major order, the index key that picks
    the (i, j)-th number of every window at once: ``x[key]`` has shape (N, oh, ow, C).

    This loop over the kh*kw offsets (instead of over the oh*ow windows) is the whole
    trick: each step is one strided slice, a few large array operations in all.
    """
    (kh, kw), (sh, sw), (oh, ow) = kernel_size, strides, out_size
    for i in range(kh):
        for j in range(kw):
            yield (
                slice(None),
                slice(i, i + sh * (oh - 1) + 1, sh),
                slice(j, j + sw * (ow - 1) + 1, sw),
                slice(None),
            )


def im2col(x, kernel_size, strides, out_size):
    """Gather the windows of a (padded) image x (N, H, W, C) into (N, oh, ow, kh*kw, C).

    Entry [n, a, b, i*kw + j, c] is x[n, a*sh + i, b*sw + j, c]: window (a, b), offset (i, j).
    Reshaped to (N*oh*ow, kh*kw*C), each row is one window, in the order of a
    Keras kernel (kh, kw, C, F) reshaped to (kh*kw*C, F).

    The gather is one ``take``: each image's pixels in a row (H*W of them, each C numbers),
    and ``window_index`` saying, for every entry of every window, which pixel to copy
    (whole pixels, C numbers at a time: several times faster than number by number).
    """
    xp = backend.xp()
    n, h, w, c = x.shape
    (kh, kw), (oh, ow) = kernel_size, out_size
    index = window_index((h, w), kernel_size, strides, out_size)
    windows = xp.take(xp.reshape(x, (n, h * w, c)), index, axis=1)
    return xp.reshape(windows, (n, oh, ow, kh * kw, c))


@functools.lru_cache(maxsize=64)
def _window_index(image_size, kernel_size, strides, out_size, backend_name):
    # (`backend_name`: only the cache key, as backend.constant's)
    (_, w), (kh, kw), (sh, sw), (oh, ow) = image_size, kernel_size, strides, out_size
    a, b, i, j = np.ogrid[:oh, :ow, :kh, :kw]  # window (a, b), offset (i, j)
    pixel = (a * sh + i) * w + (b * sw + j)  # the pixel that entry is, counted row by row
    return backend.asarray(pixel.reshape(-1))


def window_index(image_size, kernel_size, strides, out_size):
    """The pixel index im2col gathers with, built once per shape and backend (it depends only
    on the sizes, so every step of training reuses the same array on the device)."""
    return _window_index(image_size, kernel_size, strides, out_size, backend.get_backend().name)


def col2im(cols, image_size, kernel_size, strides):
    """Scatter windows back into an image (N, H, W, C), adding where windows overlap.

    The adjoint of im2col: a loop over the kernel offsets (``window_offsets``), each one
    ``+=`` into a strided slice of the image. Its input
    has the offset axis first, (kh*kw, N, oh, ow, C), so that each offset's numbers lie
    together in memory (the matmuls that feed col2im produce this layout directly).
    Pixels no window covers (the rows ``valid`` drops) stay zero.
    """
    _, n, oh, ow, c = cols.shape
    out = backend.full((n, *image_size, c), 0.0, cols.dtype)
    for k, key in enumerate(window_offsets(kernel_size, strides, (oh, ow))):
        out[key] += cols[k, ...]
    return out
