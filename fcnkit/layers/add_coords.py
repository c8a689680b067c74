"""Coordinate channels (CoordConv): where each pixel is, as extra input channels."""

from __future__ import annotations

import keras
from keras import ops

from fcnkit._validation import check_bool
from fcnkit.layers._arguments import check_rank_4


def _coordinates(size, dtype):
    """`2 * index / (size - 1) - 1` for index 0..size-1: from -1 to 1 exactly; 0 when size 1."""
    index = ops.cast(ops.arange(size), dtype)
    size = ops.cast(size, dtype)
    # (2i - (n - 1)) / (n - 1) is exactly -1, 0 and 1 at the ends and the centre.
    return (2 * index - (size - 1)) / ops.maximum(size - 1, 1)


@keras.saving.register_keras_serializable(package="fcnkit")
class AddCoords2D(keras.layers.Layer):
    """Appends the pixel coordinates as channels: x, then y, then (optionally) the radius.

    A convolution cannot tell where it is in the image; with these channels (CoordConv:
    `Conv2D` after `AddCoords2D`) it can. Channel `channels` (the first new one) is x, the
    column, from -1 at the left to 1 at the right; channel `channels + 1` is y, the row, from
    -1 at the top to 1 at the bottom:
    `x[j] = 2 * j / (width - 1) - 1`, `y[i] = 2 * i / (height - 1) - 1`. Each axis is
    normalised by its own size, so the corners are exactly ±1 for any shape. (The original
    code divides the rows by the width and the columns by the height, which is only right
    for square inputs.) An axis of size 1 gets the value 0, its centre. With `with_r=True`
    a third channel holds the distance to the centre, `sqrt(x**2 + y**2)`, from 0 to
    `sqrt(2)` at the corners.

    The coordinates are computed from the input's size at every call, so the layer works on
    inputs whose height and width are unknown until run time.

    Args:
        with_r: bool, whether to append the radius channel too. Defaults to False.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape:
        `(batch, height, width, channels)`, channels last.

    Output shape:
        `(batch, height, width, channels + 2)`, or `channels + 3` with `with_r=True`.

    Raises:
        TypeError: if `with_r` is not a bool.
        ValueError: for an input that is not 4D.

    Example:

    >>> image = np.zeros((1, 2, 3, 1), dtype="float32")
    >>> outputs = keras.ops.convert_to_numpy(AddCoords2D()(image))
    >>> outputs.shape
    (1, 2, 3, 3)
    >>> outputs[0, :, :, 1].tolist()  # x
    [[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]
    >>> outputs[0, :, :, 2].tolist()  # y
    [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]

    Reference:
        Liu et al., An Intriguing Failing of Convolutional Neural Networks and the CoordConv
        Solution, NeurIPS 2018 (uber-research/CoordConv, `AddCoords`).
        Lesson: ``05_translation_equivariance``.
    """

    def __init__(self, with_r=False, **kwargs):
        super().__init__(**kwargs)
        self.with_r = check_bool(with_r, "with_r")

    def compute_output_shape(self, input_shape):
        check_rank_4("AddCoords2D", input_shape)
        channels = input_shape[3]
        added = 3 if self.with_r else 2
        return (*input_shape[:3], None if channels is None else channels + added)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)

    def call(self, inputs):
        if not keras.backend.is_float_dtype(inputs.dtype):
            inputs = ops.cast(inputs, self.compute_dtype)
        shape = ops.shape(inputs)
        zeros = ops.zeros_like(inputs[..., :1])
        x = zeros + ops.reshape(_coordinates(shape[2], inputs.dtype), (1, 1, -1, 1))
        y = zeros + ops.reshape(_coordinates(shape[1], inputs.dtype), (1, -1, 1, 1))
        channels = [inputs, x, y]
        if self.with_r:
            channels.append(ops.sqrt(x * x + y * y))
        return ops.concatenate(channels, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"with_r": self.with_r})
        return config
