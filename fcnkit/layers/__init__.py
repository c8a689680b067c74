"""Keras layers for fully convolutional networks."""

from fcnkit.layers.crop_to_match import CropToMatch2D

__all__ = ["CropToMatch2D"]
