"""minivae: a small reverse-mode autodiff engine on NumPy/CuPy, built to teach VAEs.

Reading order: tensor.py, functional.py, gradcheck.py, then nn/, optim.py,
distributions.py, vae.py, and backend.py when you run on a GPU (see docs/README.md).

One ``import minivae as mv`` reaches everything: the tensor ops here, the names
a new op is written with (``mv.record``, ``mv.lift``, ``mv.unbroadcast``,
``mv.broadcast_shapes``, ``mv.normalize_axes``; docs/autodiff.md), and the
subpackages ``mv.nn``, ``mv.optim``, ``mv.distributions``, ``mv.vae``, ``mv.train``,
``mv.datasets``, ``mv.estimators``, ``mv.linalg`` and ``mv.graph`` (pictures of the graph).
"""

# The subpackages (mv.optim.Adam, mv.nn.Dense, ...); each imports the engine it is built on.
from . import datasets, distributions, estimators, graph, linalg, nn, optim, train, vae
from .backend import BackendError, get_backend, seed, set_backend, to_numpy, use_backend
from .functional import (
    abs,
    bernoulli_log_prob,
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
from .tensor import (  # the engine, and the public API for writing an op (docs/autodiff.md)
    Tensor,
    as_tensor,
    broadcast_shapes,
    lift,
    no_grad,
    normalize_axes,
    record,
    record_outputs,
    unbroadcast,
)
from .train import evaluate, fit
from .vae import VAE

__version__ = "0.1.0"
