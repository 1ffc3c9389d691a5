"""Layers and models (Keras semantics: channels-last, lazily built weights)."""
from .layers import Dense, Flatten, Layer, Reshape, Sequential, get_activation
from .module import Module
