"""Fully convolutional models, as functional Keras builders."""

from fcnkit.models.plain_cnn import plain_cnn
from fcnkit.models.unet import unet

__all__ = ["plain_cnn", "unet"]
