"""Bilinear interpolation as the kernel of a transposed convolution (Long et al.'s FCN)."""

from __future__ import annotations

import keras
import numpy as np

from fcnkit._validation import check_positive_int


def bilinear_profile(size: int) -> np.ndarray:
    """The 1-D bilinear kernel of length `size`: a triangle of half-width `(size + 1) // 2`.

    Long et al.'s `upsample_filt`: with `factor = (size + 1) // 2` and the centre at
    `factor - 1` (odd `size`) or `factor - 0.5` (even `size`), tap `i` is
    `1 - |i - centre| / factor`. For `size = 2 * s` it interpolates linearly when used as
    a transposed convolution of stride `s`: its `s` phases each sum to 1.

    Example:

    >>> bilinear_profile(4).tolist()
    [0.25, 0.75, 0.75, 0.25]
    >>> bilinear_profile(3).tolist()
    [0.5, 1.0, 0.5]
    """
    size = check_positive_int(size, "size")
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1 - np.abs(np.arange(size) - centre) / factor


def bilinear_kernel(size: int) -> np.ndarray:
    """The `size` x `size` kernel of a transposed convolution of stride `size // 2`
    that interpolates bilinearly (Long et al.'s initialisation of FCN upsampling).

    The outer product of `bilinear_profile(size)` with itself. Lesson ``02_upsampling``
    shows that `Conv2DTranspose(kernel_size=2 * s, strides=s, padding="same")` with this
    kernel equals `UpSampling2D(s, interpolation="bilinear")` away from the border.

    Example:

    >>> bilinear_kernel(4)[0].tolist()
    [0.0625, 0.1875, 0.1875, 0.0625]
    """
    profile = bilinear_profile(size)
    return np.outer(profile, profile)


@keras.saving.register_keras_serializable(package="fcnkit")
class BilinearUpsampling(keras.initializers.Initializer):
    """Initialises a transposed convolution to bilinear upsampling, channel by channel.

    An initializer (not a layer), for the `kernel_initializer` of a
    `keras.layers.Conv2DTranspose` of kernel size `2 * s` and stride `s`: each
    channel is upsampled on its own with `bilinear_kernel` (the outer product of the
    row and column profiles for a non-square kernel) and the channels do not mix,
    so the layer needs as many filters as input channels. With `padding="same"` the
    layer then equals `keras.layers.UpSampling2D(s, interpolation="bilinear")` except
    in a band of `s // 2` pixels along the border (where the transposed convolution
    misses the neighbours beyond the image). Long et al. (2015) start the upsampling
    layers of FCN-32s/16s/8s from this kernel; `fcnkit.models.fcn` uses it.

    It takes no arguments: the kernel depends only on the shape the layer asks for.

    Returns:
        Called as `initializer(shape, dtype=None)` with `shape = (rows, columns,
        output_channels, input_channels)`: a tensor of that shape, zero except on the
        channel diagonal.

    Raises:
        ValueError: for a shape that is not 4D, or with different numbers of input and
            output channels.

    Example:

    >>> upsample = keras.layers.Conv2DTranspose(
    ...     2, 4, strides=2, padding="same", use_bias=False,
    ...     kernel_initializer=BilinearUpsampling())
    >>> ramp = np.broadcast_to(np.arange(6, dtype="float32")[:, None], (1, 2, 6, 2))
    >>> keras.ops.convert_to_numpy(upsample(ramp))[0, 1, 1:-1, 0].tolist()
    [0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.25, 4.75]

    Reference:
        Long, Shelhamer, Darrell, Fully Convolutional Networks for Semantic
        Segmentation, CVPR 2015 (section 3.3; `surgery.py::upsample_filt` in their code).
        Lesson: ``02_upsampling``.
    """

    def __call__(self, shape, dtype=None):
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError(
                "`BilinearUpsampling` initialises the 4D kernel (rows, columns, "
                "output_channels, input_channels) of a Conv2DTranspose. Received: "
                f"shape={shape}. Use it as the kernel_initializer of a Conv2DTranspose."
            )
        rows, columns, outputs, inputs = shape
        if outputs != inputs:
            raise ValueError(
                "`BilinearUpsampling` upsamples each channel on its own, so the "
                "transposed convolution needs as many filters as input channels. "
                f"Received: shape={shape} ({outputs} filters, {inputs} input channels). "
                f"Pass filters={inputs}."
            )
        kernel = np.outer(bilinear_profile(rows), bilinear_profile(columns))
        weights = np.zeros(shape, dtype="float64")
        channels = np.arange(outputs)
        weights[:, :, channels, channels] = kernel[:, :, None]
        dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
        return keras.ops.convert_to_tensor(weights.astype(dtype), dtype=dtype)

    def get_config(self):
        return {}
