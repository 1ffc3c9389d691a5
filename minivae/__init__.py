"""minivae: a small reverse-mode autodiff engine on NumPy/CuPy, built to teach VAEs.

Reading order: tensor.py, functional.py, gradcheck.py, then nn/, optim.py,
distributions.py, vae.py, and backend.py when you run on a GPU (see docs/README.md).

One ``import minivae as mv`` reaches everything: the tensor ops here, and the
subpackages ``mv.nn``, ``mv.optim``, ``mv.distributions``, ``mv.vae``, ``mv.train``,
``mv.datasets``, ``mv.estimators`` and ``mv.linalg``.
"""

# The subpackages, after the engine they are built on (so `mv.optim.Adam` works).
from . import datasets, distributions, estimators, linalg, nn, optim, train, vae
from .backend import BackendError, get_backend, seed, set_backend, to_numpy, use_backend
from .functional import (
    abs,
    clip,
    concatenate,
    exp,
    log,
    log1p,
    log_sigmoid,
    logsumexp,
    maximum,
    pad,
    relu,
    sigmoid,
    softplus,
    split,
    sqrt,
    square,
    stack,
    tanh,
    unstack,
    where,
)
from .gradcheck import GradcheckError, gradcheck
from .optim import SGD, Adam
from .tensor import Tensor, as_tensor, no_grad
from .train import evaluate, fit
from .vae import VAE

__version__ = "0.1.0"
