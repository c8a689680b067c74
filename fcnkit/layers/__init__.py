"""Keras layers for fully convolutional networks (and the bilinear initializer of FCN's
transposed convolutions)."""

from fcnkit.layers.add_coords import AddCoords2D
from fcnkit.layers.bilinear_upsampling import BilinearUpsampling, bilinear_kernel
from fcnkit.layers.blur_pool import BlurPool2D
from fcnkit.layers.crop_to_match import CropToMatch2D
from fcnkit.layers.max_unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

__all__ = [
    "AddCoords2D",
    "BilinearUpsampling",
    "BlurPool2D",
    "CropToMatch2D",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "bilinear_kernel",
]
