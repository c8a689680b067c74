"""Anti-aliased downsampling (BlurPool): a binomial low-pass filter, then subsampling."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from fcnkit._validation import check_positive_int, validate_option
from fcnkit.layers._arguments import check_rank_4, positive_int_pair
from fcnkit.shapes import conv_output_size

PADDINGS = ("reflect", "symmetric", "zero")
MAX_FILTER_SIZE = 7


def binomial_filter(filter_size: int) -> np.ndarray:
    """The `filter_size`×`filter_size` binomial filter of BlurPool, summing to 1.

    The outer product of a row of Pascal's triangle with itself: [1], [1, 1], [1, 2, 1],
    [1, 3, 3, 1], ... up to [1, 6, 15, 20, 15, 6, 1] (`filter_size` 1 to 7).

    Example:

    >>> (binomial_filter(3) * 16).tolist()
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    filter_size = _check_filter_size(filter_size)
    row = np.array([math.comb(filter_size - 1, k) for k in range(filter_size)], dtype="float64")
    kernel = np.outer(row, row)
    return kernel / kernel.sum()


def _check_filter_size(filter_size) -> int:
    filter_size = check_positive_int(filter_size, "filter_size")
    if filter_size > MAX_FILTER_SIZE:
        raise ValueError(
            f"`filter_size` must be between 1 and {MAX_FILTER_SIZE}, the binomial filters of "
            f"Zhang (2019). Received: filter_size={filter_size}. Use 4 (the default), 3 "
            "(Tri-3) or 5 (Bin-5)."
        )
    return filter_size


def padding_widths(filter_size: int) -> tuple[int, int]:
    """Padding `(before, after)` of BlurPool along each axis: `floor((f - 1) / 2)`,
    `ceil((f - 1) / 2)` (the extra pixel of an even filter goes below / right).

    Example:

    >>> padding_widths(4)
    (1, 2)
    """
    return (filter_size - 1) // 2, filter_size // 2


@keras.saving.register_keras_serializable(package="fcnkit")
class BlurPool2D(keras.layers.Layer):
    """Blurs each channel with a binomial filter, then keeps every `strides`-th pixel.

    Subsampling a feature map (max-pooling, strided convolution) aliases: shifting the
    input by one pixel can change the output completely. Zhang (2019) low-pass filters
    before subsampling: `MaxPooling2D(2)` becomes `MaxPooling2D(2, strides=1)` then
    `BlurPool2D()`, a strided `Conv2D` + ReLU becomes the stride-1 convolution, ReLU,
    `BlurPool2D()`. Each channel is filtered on its own (depthwise) with the same fixed
    binomial filter (`binomial_filter`), so the channels are kept and the layer has no
    weights.

    The input is padded by `floor((f - 1) / 2)` pixels above and to the left and
    `ceil((f - 1) / 2)` below and to the right (`f = filter_size`), with `padding`
    ("reflect" by default, as in Zhang's code), so that the output has `ceil(size / strides)`
    pixels per axis. `filter_size=1` is plain subsampling, `x[:, ::strides, ::strides]`.

    Args:
        filter_size: int from 1 to 7: the filter [1], [1, 1] (Rect-2), [1, 2, 1] (Tri-3),
            [1, 3, 3, 1] (the default, Tri-4), [1, 4, 6, 4, 1] (Bin-5), ... per axis.
        strides: int or tuple of 2 ints, the subsampling step. Defaults to 2.
        padding: `"reflect"` (the default: the image mirrored without repeating the border
            pixel, as `numpy.pad(mode="reflect")`), `"symmetric"` (mirrored with the
            border pixel) or `"zero"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape:
        `(batch, height, width, channels)`, channels last; the channels must be known.
        A mirror cannot be wider than the image: with `"reflect"` the height and width
        must exceed the padding `ceil((f - 1) / 2)`, with `"symmetric"` reach it (at
        least 4 and 3 pixels for `filter_size=7`). Checked where the size is known when
        the layer is built; sizes known only at run time are the backend's to refuse.

    Output shape:
        `(batch, ceil(height / strides[0]), ceil(width / strides[1]), channels)`.

    Raises:
        ValueError: for a filter size outside 1–7, an unknown padding, an input that is not
            4D, unknown channels, or an input too small for the reflection.
        TypeError: for a filter size or strides that are not integers.

    Example:

    >>> image = np.zeros((1, 4, 4, 1), dtype="float32")
    >>> image[0, :, 2:, 0] = 1.0  # a vertical edge
    >>> blurred = BlurPool2D(filter_size=3)(image)
    >>> keras.ops.convert_to_numpy(blurred)[0, :, :, 0].tolist()
    [[0.0, 0.75], [0.0, 0.75]]

    Reference:
        Zhang, Making Convolutional Networks Shift-Invariant Again, ICML 2019
        (adobe/antialiased-cnns, `BlurPool`). Lesson: ``05_translation_equivariance``.
    """

    def __init__(self, filter_size=4, strides=2, padding="reflect", **kwargs):
        super().__init__(**kwargs)
        self.filter_size = _check_filter_size(filter_size)
        self.strides = positive_int_pair(strides, "strides")
        self.padding = validate_option(padding, "padding", PADDINGS)
        self._kernel = None

    def compute_output_shape(self, input_shape):
        check_rank_4("BlurPool2D", input_shape)
        largest = max(padding_widths(self.filter_size))
        minimum = {"reflect": largest + 1, "symmetric": largest, "zero": 1}[self.padding]
        sizes = []
        for axis, name in ((1, "height"), (2, "width")):
            size = input_shape[axis]
            if size is not None and size < minimum:
                raise ValueError(
                    f"`BlurPool2D` with filter_size={self.filter_size} pads {largest} "
                    f"pixel{'s' if largest > 1 else ''} with padding=\"{self.padding}\", "
                    f"which needs a {name} of at least {minimum}. Received: input_shape="
                    f"{tuple(input_shape)}. Use a larger input, a smaller filter_size or "
                    "padding=\"zero\"."
                )
            strides = self.strides[axis - 1]
            sizes.append(conv_output_size(size, strides, strides, "same"))
        return (input_shape[0], *sizes, input_shape[3])

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        channels = input_shape[3]
        if channels is None:
            raise ValueError(
                "`BlurPool2D` filters each channel separately, so it needs the number of "
                f"channels. Received: input_shape={tuple(input_shape)}. Give the input a "
                "known last axis, e.g. keras.Input((None, None, 3))."
            )
        kernel = binomial_filter(self.filter_size)
        self._kernel = np.tile(kernel[:, :, None, None], (1, 1, channels, 1))

    def call(self, inputs):
        before, after = padding_widths(self.filter_size)
        if after > 0:
            mode = "constant" if self.padding == "zero" else self.padding
            inputs = ops.pad(
                inputs, [[0, 0], [before, after], [before, after], [0, 0]], mode=mode
            )
        kernel = ops.convert_to_tensor(self._kernel, dtype=inputs.dtype)
        if self.strides[0] == self.strides[1]:
            return ops.depthwise_conv(inputs, kernel, strides=self.strides, padding="valid")
        # TensorFlow's depthwise convolution needs equal strides: filter, then subsample.
        outputs = ops.depthwise_conv(inputs, kernel, strides=1, padding="valid")
        return outputs[:, :: self.strides[0], :: self.strides[1]]

    def get_config(self):
        config = super().get_config()
        config.update(
            {"filter_size": self.filter_size, "strides": self.strides, "padding": self.padding}
        )
        return config
