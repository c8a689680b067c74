"""Keras layers for fully convolutional networks."""

from fcnkit.layers.add_coords import AddCoords2D
from fcnkit.layers.blur_pool import BlurPool2D
from fcnkit.layers.crop_to_match import CropToMatch2D
from fcnkit.layers.max_unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

__all__ = [
    "AddCoords2D",
    "BlurPool2D",
    "CropToMatch2D",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
]
