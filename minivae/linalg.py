"""Lower-triangular matrices: what a full-covariance Gaussian needs, and nothing more.

A covariance is carried by its Cholesky factor, Sigma = L L^T with L lower
triangular and a positive diagonal. Then no inverse is ever formed:

* log det Sigma = 2 * sum_i log L_ii  (the determinant of a triangular matrix is
  the product of its diagonal);
* x^T Sigma^-1 x = ||y||^2 where L y = x, and y comes from forward substitution,
  one row at a time (``tril_solve``).

The latent spaces of a VAE are small (l = 2 in the lecture), so the Python loops
over rows below are cheap and read like the textbook algorithm.
"""

from __future__ import annotations

import functools

import numpy as np

from . import backend
from . import functional as F
from .tensor import _float_name as _dtype_name
from .tensor import as_tensor, broadcast_shapes, lift, record, unbroadcast


def _forward_substitution(L, b):
    """y with L y = b, row by row: y_i = (b_i - sum_{j<i} L_ij y_j) / L_ii."""
    ys = []
    for i in range(L.shape[-1]):
        acc = b[..., i]
        for j in range(i):
            acc = acc - L[..., i, j] * ys[j]
        ys.append(acc / L[..., i, i])
    return backend.xp().stack(ys, axis=-1)


def _back_substitution(L, g):
    """x with L^T x = g: L^T is upper triangular, so go from the last row up:
    x_i = (g_i - sum_{j>i} L_ji x_j) / L_ii."""
    n = L.shape[-1]
    xs = [None] * n
    for i in reversed(range(n)):
        acc = g[..., i]
        for j in range(i + 1, n):
            acc = acc - L[..., j, i] * xs[j]
        xs[i] = acc / L[..., i, i]
    return backend.xp().stack(xs, axis=-1)


def lower_mask(n: int):
    """Boolean (n, n), True on and below the diagonal (the standard has no tril)."""
    return _lower_mask(backend.get_backend().name, n)


# The constant arrays of this file are built on the host once per backend and size (and
# dtype): rebuilt every step, each would be a host-to-device copy every step on a GPU.
# `backend_name` is only the cache key; the arrays are made on the current backend.


@functools.cache
def _lower_mask(backend_name: str, n: int):
    return backend.asarray(np.tri(n, dtype=bool))


@functools.cache
def _placements(backend_name: str, n: int, dtype: str):
    """fill_tril's 0/1 matrices: diagonal entry i -> flat index i*n + i, strictly-lower
    entry k -> its (row, col) in row-major order (1,0), (2,0), (2,1), ..."""
    m = n * (n - 1) // 2
    place_diag = np.zeros((n, n * n))
    place_diag[np.arange(n), np.arange(n) * (n + 1)] = 1.0
    rows, cols = np.tril_indices(n, k=-1)
    place_lower = np.zeros((m, n * n))
    place_lower[np.arange(m), rows * n + cols] = 1.0
    dt = backend.dtype(dtype)
    return backend.asarray(place_diag, dt), backend.asarray(place_lower, dt)


def tril_solve(L, b):
    """y with L y = b, for lower-triangular L (..., l, l) and b (..., l).

    Batch axes broadcast: one L per data point (N, l, l) solves a stack of
    samples b (S, N, l). Only the lower triangle of L is read.
    """
    L = as_tensor(L)
    b = lift(b, L, "tril_solve")
    if L.ndim < 2 or L.shape[-1] != L.shape[-2] or b.ndim < 1 or b.shape[-1] != L.shape[-1]:
        raise ValueError(
            f"tril_solve: expected L of shape (..., l, l) and b of shape (..., l), got {L.shape} "
            f"and {b.shape}"
        )
    broadcast_shapes(L.shape[:-2], b.shape[:-1], "tril_solve")
    xp = backend.xp()
    y = _forward_substitution(L.data, b.data)

    def backward(g):
        # y = L^-1 b, so dy = L^-1 (db - dL y). With h = L^-T g:
        #   grad_b = h                (a back substitution, no inverse)
        #   grad_L = -h y^T, kept on the lower triangle (the only entries the forward read)
        h = _back_substitution(L.data, g)
        gL = -xp.expand_dims(h, axis=-1) * xp.expand_dims(y, axis=-2)
        gL = xp.where(lower_mask(L.shape[-1]), gL, xp.zeros_like(gL))
        return unbroadcast(gL, L.shape), unbroadcast(h, b.shape)

    return record(y, (L, b), backward, "tril_solve")


def diagonal(L):
    """The diagonal (..., l) of a batch of square matrices (..., l, l), differentiable."""
    L = as_tensor(L)
    return F.stack([L[..., i, i] for i in range(L.shape[-1])], axis=-1)


def fill_tril(diag, strictly_lower):
    """Assemble L (..., l, l) from its diagonal (..., l) and its strictly-lower entries
    (..., l(l-1)/2), taken row by row: (1,0), (2,0), (2,1), (3,0), ...

    Each entry is put in place by a constant 0/1 matrix P, L_flat = diag @ P_diag +
    lower @ P_lower, so the backward is the matmul's: gradients are read back
    from the same places.
    """
    diag, strictly_lower = as_tensor(diag), as_tensor(strictly_lower)
    n = diag.shape[-1]
    m = n * (n - 1) // 2
    if strictly_lower.shape[-1] != m:
        raise ValueError(
            f"fill_tril: a {n}x{n} factor has {m} strictly-lower entries, got "
            f"{strictly_lower.shape[-1]} "
            f"(diagonal of shape {diag.shape}, entries of shape {strictly_lower.shape})"
        )
    place_diag, place_lower = _placements(backend.get_backend().name, n, _dtype_name(diag.dtype))
    flat = diag @ as_tensor(place_diag)
    if m:
        flat = flat + strictly_lower @ as_tensor(place_lower)
    return flat.reshape(*diag.shape, n)
