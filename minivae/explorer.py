"""The latent explorer: one self-contained HTML page to move through a 2-d latent space by hand.

``write_explorer(path, decoder, ...)`` writes a page that holds the trained decoder's
weights (base64 float32) and runs the decoder in JavaScript: the image decoded at the
pointer updates as it moves, the validation encodings are drawn as points, and a click
on a point shows that image beside its reconstruction (the decoded posterior mean, as
the examples' reconstruction plots). Nothing is fetched: no network, no CDN, so the
file opens from disk.

The page's decoder computes what minivae computes: each Dense layer's ``x @ kernel +
bias`` and activation in turn, then the sigmoid that turns the last layer's logits into
the image (the mean of the Gaussian likelihood, or the Bernoulli's probabilities). For
the Gaussian likelihood only the mean half of the last layer travels (the page shows
the mean, never the log-std), which halves the page.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np

from . import backend
from .files import write_text
from .nn import Dense, Sequential
from .nn.layers import ACTIVATIONS as LAYER_ACTIVATIONS

PAGE = Path(__file__).with_name("explorer.html")  # the page's HTML, CSS and JavaScript
# minivae's activation names -> the page's (None and "linear" are both the identity)
ACTIVATIONS = {
    None: "linear",
    "linear": "linear",
    "relu": "relu",
    "softplus": "softplus",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
}


def decoder_layers(decoder: Sequential, image_shape, likelihood: str = "gaussian") -> list[dict]:
    """The decoder as [{"kernel": (in, out) float32, "bias": (out,), "activation": name}], the
    last layer cut to the image's pixels for a Gaussian likelihood (its mean logits)."""
    if likelihood not in ("gaussian", "bernoulli"):
        raise ValueError(
            f"write_explorer: unknown likelihood {likelihood!r}; expected 'gaussian' or 'bernoulli'"
        )
    layers = getattr(decoder, "layers", None)
    if not isinstance(decoder, Sequential) or not layers:
        raise ValueError(
            f"write_explorer: the decoder must be a non-empty Sequential of Dense layers, "
            f"got {type(decoder).__name__}"
        )
    names = {fn: name for name, fn in LAYER_ACTIVATIONS.items()}  # the function -> its name
    out = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, Dense) or layer.kernel is None:
            what = type(layer).__name__ if not isinstance(layer, Dense) else "an unbuilt Dense"
            raise ValueError(
                f"write_explorer: decoder layer {i} is {what}; the page runs built Dense layers"
            )
        if layer.activation not in names:
            raise ValueError(
                f"write_explorer: decoder layer {i} has activation {layer.activation!r}; "
                f"the page knows {sorted(map(str, ACTIVATIONS))}"
            )
        out.append(
            {
                "kernel": backend.to_numpy(layer.kernel.data).astype(np.float32),
                "bias": backend.to_numpy(layer.bias.data).astype(np.float32),
                "activation": ACTIVATIONS[names[layer.activation]],
            }
        )
    if out[0]["kernel"].shape[0] != 2:
        raise ValueError(
            f"write_explorer: the page explores a 2-d latent; the decoder takes "
            f"{out[0]['kernel'].shape[0]} inputs"
        )
    pixels = math.prod(image_shape)
    need = 2 * pixels if likelihood == "gaussian" else pixels
    last = out[-1]
    if last["kernel"].shape[1] != need or last["activation"] != "linear":
        raise ValueError(
            f"write_explorer: a {likelihood!r} decoder for {tuple(image_shape)} images must end in "
            f"a linear Dense of {need} units, got {last['kernel'].shape[1]} ({last['activation']})"
        )
    last["kernel"], last["bias"] = (
        last["kernel"][:, :pixels],
        last["bias"][:pixels],
    )  # the mean logits
    return out


def write_explorer(
    path,
    decoder: Sequential,
    encodings,
    images,
    *,
    image_shape,
    likelihood: str = "gaussian",
    labels=None,
    class_names=None,
    color=None,
    color_label: str | None = None,
    title: str = "latent explorer",
) -> int:
    """Write the page to `path` (atomically); return its size in bytes.

    encodings: (N, 2) posterior means of the validation images; images: (N, *image_shape)
    in [0, 1]. Points are coloured by `labels` (ints indexing `class_names`) where there
    are labels, else by the numbers `color` (e.g. the video frame) on a colour ramp.
    """
    layers = decoder_layers(decoder, image_shape, likelihood)
    z = np.asarray(encodings, dtype=np.float32)
    images = np.asarray(images, dtype=np.float32)
    if (
        z.ndim != 2
        or z.shape[1] != 2
        or len(images) != len(z)
        or images.shape[1:] != tuple(image_shape)
    ):
        raise ValueError(
            f"write_explorer: need encodings (N, 2) and images (N, *{tuple(image_shape)}), "
            f"got {z.shape} and {images.shape}"
        )
    if not (np.isfinite(z).all() and np.isfinite(images).all()):
        raise ValueError("write_explorer: the encodings or the images hold NaN or infinity")
    data = {
        "title": title,
        "imageShape": list(image_shape)[:2],
        "layers": [
            {
                "in": int(layer["kernel"].shape[0]),
                "out": int(layer["kernel"].shape[1]),
                "activation": layer["activation"],
                "kernel": _b64(layer["kernel"]),
                "bias": _b64(layer["bias"]),
            }
            for layer in layers
        ],
        "z": _b64(z),
        "images": _b64(np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)),
        "labels": None if labels is None else [int(c) for c in labels],
        "classNames": None if class_names is None else list(class_names),
        "color": None if color is None else [float(c) for c in color],
        "colorLabel": color_label,
    }
    # "</" inside the JSON could close the script element: JSON allows it escaped as "<\/"
    page = PAGE.read_text().replace("__DATA__", json.dumps(data).replace("</", "<\\/"))
    write_text(path, page)
    return len(page.encode())


def _b64(a: np.ndarray) -> str:
    """Row-major little-endian bytes, base64: the page views them as Float32Array/Uint8Array."""
    return base64.b64encode(
        np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    ).decode()
