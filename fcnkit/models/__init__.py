"""Fully convolutional models, as functional Keras builders.

`encoders` turns keras.applications backbones (or your own model) into U-Net encoders.
"""

from fcnkit.models import encoders
from fcnkit.models.fcn import fcn
from fcnkit.models.plain_cnn import plain_cnn
from fcnkit.models.segnet import segnet
from fcnkit.models.unet import unet

__all__ = ["encoders", "fcn", "plain_cnn", "segnet", "unet"]
