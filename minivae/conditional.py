"""The conditional VAE (Sohn, Lee & Yan 2015): encoder and decoder also see the label y.

    q(z|x, y),  p(z) = N(0, I),  p(x|z, y):   ELBO(x|y) = E_q[log p(x|z, y)] - KL(q(z|x, y) || p(z))

It is the VAE of vae.py with y (one-hot) appended to each network's input: the encoder
sees [flatten(x), y], the decoder [z, y]. Since z no longer has to carry the class, it
can carry the style; sampling z ~ p(z) with a chosen y draws that class, and decoding one
image's z under every label re-draws it as each class.
"""

from __future__ import annotations

import numpy as np

from . import backend
from . import functional as F
from .distributions import check_count
from .nn.module import Module
from .tensor import Tensor, as_tensor, no_grad
from .vae import VAE


def one_hot(labels, classes: int, like: Tensor) -> Tensor:
    """(N,) integer labels (host or backend array) as an (N, classes) Tensor in like's dtype."""
    xp = backend.xp()
    y = backend.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"one_hot: expected labels of shape (N,), got {tuple(y.shape)}")
    hot = xp.astype(y, xp.int64)[:, None] == backend.asarray(np.arange(classes)[None, :])
    bad = ~xp.any(hot, axis=1) | (
        xp.astype(y, xp.float64) != xp.astype(xp.astype(y, xp.int64), xp.float64)
    )
    if bool(xp.any(bad)):
        raise ValueError(f"one_hot: labels must be integers 0..{classes - 1}")
    return Tensor(xp.astype(hot, like.dtype))


class _WithLabel(Module):
    """net([flatten(inputs), y]): y is the label batch the ConditionalVAE set for this call,
    repeated when the decoder sees k draws of z per image (rows ordered draw by draw)."""

    def __init__(self, net):
        self.net, self.label = net, None

    def forward(self, inputs):
        flat = inputs.reshape(inputs.shape[0], -1)
        repeats = flat.shape[0] // self.label.shape[0]
        y = self.label if repeats == 1 else F.concatenate([self.label] * repeats, axis=0)
        return self.net(F.concatenate([flat, y], axis=1))


class ConditionalVAE(VAE):
    """VAE(encoder, decoder, ...) whose networks get the one-hot label as extra inputs: the
    encoder (N, D + classes) -> posterior parameters, the decoder (M, l + classes) -> likelihood
    parameters. Every method takes the labels y, (N,) integers in 0..classes-1."""

    def __init__(self, encoder, decoder, classes: int, **kw):
        check_count("ConditionalVAE", "classes", classes)
        super().__init__(_WithLabel(encoder), _WithLabel(decoder), **kw)
        self.classes = classes

    def _given(self, y, like):
        hot = one_hot(y, self.classes, as_tensor(like))
        self.encoder.label = self.decoder.label = hot
        return hot

    def elbo(
        self, x, y, samples: int = 1, estimator: str = "analytic", eps=None, beta=None
    ) -> dict:
        """VAE.elbo of x given its labels y."""
        self._given(y, x)
        return super().elbo(x, samples, estimator, eps, beta=beta)

    def log_marginal(self, x, y, samples: int = 1000, chunk: int = 100, eps=None):
        """log p(x|y), importance-sampled with q(z|x, y)."""
        self._given(y, x)
        return super().log_marginal(x, samples, chunk, eps=eps)

    def encode_given(self, x, y):
        """q(z|x, y)."""
        self._given(y, x)
        return self.encode(x)

    def decode_given(self, z, y, x_shape=None):
        """p(x|z, y) for z of shape (N, l) and labels y (N,)."""
        self._given(y, z)
        return self.decode(z, x_shape)

    def sample(self, y, x_shape=None) -> Tensor:
        """The decoded means of one draw z ~ p(z) for each label in y: shape (len(y), *x_shape)."""
        if self.prior is None:
            raise ValueError(
                "ConditionalVAE.sample: the latent size is not known yet; call it on data first"
            )
        with no_grad():
            z = self.prior.sample((backend.asarray(y).shape[0],))
            return self.decode_given(z, y, x_shape).mean
