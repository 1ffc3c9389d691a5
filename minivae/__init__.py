"""minivae: a small reverse-mode autodiff engine on NumPy/CuPy, built to teach VAEs.

Reading order: backend.py, tensor.py, functional.py, gradcheck.py, then nn/,
optim.py, distributions.py, vae.py (see docs/README.md).
"""
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
from .tensor import Tensor, as_tensor, no_grad

__version__ = "0.1.0"
