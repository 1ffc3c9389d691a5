"""Layers and models (Keras semantics: channels-last, lazily built weights).

Reading order: module.py (parameters, saving, summary), layers.py (Dense and the
shape layers), im2col.py (convolution as a matrix product), conv.py (the image layers).
"""

from .conv import (
    Conv2D,
    Conv2DTranspose,
    MaxPool2D,
    UpSampling2D,
    conv2d,
    conv2d_transpose,
    max_pool2d,
    upsampling2d,
)
from .layers import Dense, Flatten, Layer, Reshape, Sequential, get_activation
from .module import Module
