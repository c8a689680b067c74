"""Shape arithmetic for convolutional networks, as pure functions.

Layers, models and the receptive-field tools all size their tensors with these
functions, so the formulas live in one place and are tested once.

Lesson: ``01_image_to_image`` (why a fully convolutional network accepts many
image sizes, but not all of them).
"""

from __future__ import annotations

import math
from typing import Sequence

from fcnkit._validation import check_positive_int, validate_option

PADDINGS = ("valid", "same")


def _check_size(size, name: str = "size") -> int | None:
    """A length along one axis: None (unknown) or a positive integer."""
    return None if size is None else check_positive_int(size, name)


def conv_output_size(
    size: int | None,
    kernel_size: int,
    strides: int = 1,
    padding: str = "valid",
    dilation_rate: int = 1,
) -> int | None:
    """Output length of a convolution or pooling along one axis (Keras rules).

    Args:
        size: int or None, input length. None (unknown) gives None.
        kernel_size: int, kernel (or pooling window) length.
        strides: int, step between two windows.
        padding: `"valid"` (no padding) or `"same"` (output is
            `ceil(size / strides)`).
        dilation_rate: int, spacing between kernel taps; the kernel then
            covers `dilation_rate * (kernel_size - 1) + 1` pixels.

    Returns:
        The output length, an int (0 when the window does not fit), or None.

    Example:

    >>> conv_output_size(572, 3)
    570
    >>> conv_output_size(570, 2, strides=2)
    285
    >>> conv_output_size(7, 3, strides=2, padding="same")
    4
    """
    padding = validate_option(padding, "padding", PADDINGS)
    size = _check_size(size)
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    strides = check_positive_int(strides, "strides")
    dilation_rate = check_positive_int(dilation_rate, "dilation_rate")
    if size is None:
        return None
    effective_kernel = dilation_rate * (kernel_size - 1) + 1
    if padding == "same":
        return math.ceil(size / strides)
    return max((size - effective_kernel) // strides + 1, 0)


def transposed_conv_output_size(
    size: int | None, kernel_size: int, strides: int = 1, padding: str = "valid"
) -> int | None:
    """Output length of a transposed convolution along one axis (Keras rules).

    Args:
        size: int or None, input length.
        kernel_size: int, kernel length.
        strides: int, upsampling factor.
        padding: `"valid"` gives `size * strides + max(kernel_size - strides, 0)`,
            `"same"` gives `size * strides`.

    Returns:
        The output length, or None when `size` is None.

    Example:

    >>> transposed_conv_output_size(28, 2, strides=2)
    56
    >>> transposed_conv_output_size(4, 3, strides=2)
    9
    """
    padding = validate_option(padding, "padding", PADDINGS)
    size = _check_size(size)
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    strides = check_positive_int(strides, "strides")
    if size is None:
        return None
    if padding == "same":
        return size * strides
    return size * strides + max(kernel_size - strides, 0)


def unet_size_trace(
    size: int, depth: int = 4, padding: str = "same", convs_per_block: int = 2,
    kernel_size: int = 3,
) -> list[int] | None:
    """Spatial size after every step of a U-Net, or None if the size is invalid.

    A size is valid when every 2×2 max-pooling sees an even, positive size and
    every convolution leaves at least one pixel. With `padding="valid"`, each
    3×3 convolution removes 2 pixels, so a block of two removes 4.

    Args:
        size: int, input height or width.
        depth: int, number of 2×2 poolings (and of upsamplings).
        padding: `"same"` or `"valid"`.
        convs_per_block: int, convolutions in each block.
        kernel_size: int, convolution kernel size.

    Returns:
        A list: the input size; for each encoder level, the size after its
        convolutions and after its pooling; the size after the bottleneck; the
        size after each decoder block (upsampling, then convolutions), the last
        one being the output size. None if `size` is invalid.

    Example:

    >>> unet_size_trace(572, depth=4, padding="valid")[-1]
    388
    >>> unet_size_trace(570, depth=4, padding="valid") is None
    True
    """
    padding = validate_option(padding, "padding", PADDINGS)
    size = check_positive_int(size, "size")
    depth = check_positive_int(depth, "depth")
    convs_per_block = check_positive_int(convs_per_block, "convs_per_block")
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    shrink = 0 if padding == "same" else convs_per_block * (kernel_size - 1)
    trace = [size]
    n = size
    for _ in range(depth):
        n -= shrink
        if n < 2 or n % 2:
            return None
        trace += [n, n // 2]  # after the block, then after the pooling
        n //= 2
    n -= shrink
    if n < 1:
        return None
    trace.append(n)
    for _ in range(depth):
        n = 2 * n - shrink
        if n < 1:
            return None
        trace.append(n)
    return trace


def unet_output_size(
    size: int | None, depth: int = 4, padding: str = "same"
) -> int | None:
    """Output height or width of a U-Net for a given input size.

    Args:
        size: int or None, input height or width.
        depth: int, number of 2×2 poolings.
        padding: `"same"` or `"valid"`.

    Returns:
        The output size, or None when `size` is None.

    Raises:
        ValueError: if `size` is not a valid U-Net input size; the message names
            the nearest valid sizes.

    Example:

    >>> unet_output_size(572, depth=4, padding="valid")
    388
    >>> unet_output_size(256, depth=4, padding="same")
    256
    """
    if size is None:
        return None
    trace = unet_size_trace(size, depth, padding)
    if trace is None:
        raise ValueError(_invalid_size_message(size, depth, padding))
    return trace[-1]


def is_valid_unet_size(size: int, depth: int = 4, padding: str = "same") -> bool:
    """Whether `size` is a valid U-Net input height or width.

    Example:

    >>> [n for n in range(180, 240) if is_valid_unet_size(n, 4, "valid")]
    [188, 204, 220, 236]
    """
    return unet_size_trace(size, depth, padding) is not None


def nearest_valid_unet_sizes(
    size: int, depth: int = 4, padding: str = "same"
) -> tuple[int | None, int]:
    """The largest valid size at or below `size` and the smallest at or above.

    Returns:
        `(below, above)`: `below` is None when no valid size is that small.

    Example:

    >>> nearest_valid_unet_sizes(250, depth=4, padding="same")
    (240, 256)
    >>> nearest_valid_unet_sizes(570, depth=4, padding="valid")
    (556, 572)
    """
    size = check_positive_int(size, "size")
    depth = check_positive_int(depth, "depth")
    below = next(
        (n for n in range(size, 0, -1) if is_valid_unet_size(n, depth, padding)),
        None,
    )
    above = next(
        n for n in range(max(size, 1), size + 2 ** (depth + 8))
        if is_valid_unet_size(n, depth, padding)
    )
    return below, above


def valid_unet_rule(depth: int = 4, padding: str = "same") -> str:
    """The valid-size rule of a U-Net in words.

    Example:

    >>> valid_unet_rule(4, "valid")
    'n ≡ 12 (mod 16) and n ≥ 188'
    >>> valid_unet_rule(3, "same")
    'n divisible by 8'
    """
    padding = validate_option(padding, "padding", PADDINGS)
    period = 2 ** check_positive_int(depth, "depth")
    if padding == "same":
        return f"n divisible by {period}"
    smallest = next(n for n in range(1, 100 * period) if is_valid_unet_size(n, depth, padding))
    return f"n ≡ {smallest % period} (mod {period}) and n ≥ {smallest}"


def _invalid_size_message(size: int, depth: int, padding: str) -> str:
    below, above = nearest_valid_unet_sizes(size, depth, padding)
    nearest = f"{below} or {above}" if below is not None else f"{above}"
    return (
        f"`unet` with depth={depth} and padding=\"{padding}\" needs height and "
        f"width {valid_unet_rule(depth, padding)}, so that every 2×2 "
        f"max-pooling sees an even size. Received: size={size}. "
        f"Pad or crop to the nearest valid size: {nearest}."
    )


def check_unet_input_shape(
    input_shape: Sequence[int | None], depth: int = 4, padding: str = "same"
) -> tuple[int | None, int | None]:
    """Check the spatial size of a U-Net input; return the output height and width.

    Args:
        input_shape: `(height, width, channels)`; height or width may be None:
            it is then not checked here, and an invalid size fails inside
            Keras when the model is called.
        depth: int, number of 2×2 poolings.
        padding: `"same"` or `"valid"`.

    Returns:
        `(output_height, output_width)`, None where the input size is None.

    Raises:
        ValueError: if a spatial size is invalid. The message names the rule,
            what was received and the nearest valid shape.

    Example:

    >>> check_unet_input_shape((572, 572, 1), depth=4, padding="valid")
    (388, 388)
    >>> check_unet_input_shape((250, 256, 1), depth=4)
    Traceback (most recent call last):
    ...
    ValueError: `unet` with depth=4 ... Pad or crop to (256, 256) (or crop to (240, 256)).
    """
    padding = validate_option(padding, "padding", PADDINGS)
    input_shape = _check_input_shape(input_shape)
    depth = check_positive_int(depth, "depth")
    spatial = input_shape[:2]
    if all(n is None or is_valid_unet_size(n, depth, padding) for n in spatial):
        return tuple(unet_output_size(n, depth, padding) for n in spatial)
    nearest = [
        (n, n) if n is None else nearest_valid_unet_sizes(n, depth, padding)
        for n in spatial
    ]
    up = tuple(above for _, above in nearest)
    down = tuple(below for below, _ in nearest)
    hint = f"Pad or crop to {up}"
    if None not in down and down != up:
        hint += f" (or crop to {down})"
    raise ValueError(
        f"`unet` with depth={depth} and padding=\"{padding}\" needs height and "
        f"width {valid_unet_rule(depth, padding)}. "
        f"Received: input_shape={input_shape}. {hint}."
    )


def _check_input_shape(input_shape) -> tuple:
    """`(height, width, channels)` with each entry None or a positive int."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels). "
            f"Received: input_shape={input_shape}"
        )
    return tuple(
        _check_size(n, f"input_shape[{axis}]") for axis, n in enumerate(input_shape)
    )


def nearest_multiples(size: int, multiple: int) -> tuple[int | None, int]:
    """The largest multiple of `multiple` at or below `size` and the smallest at or above.

    Returns:
        `(below, above)`: `below` is None when `size < multiple`.

    Example:

    >>> nearest_multiples(100, 32)
    (96, 128)
    >>> nearest_multiples(20, 32)
    (None, 32)
    """
    size = check_positive_int(size, "size")
    multiple = check_positive_int(multiple, "multiple")
    below = size // multiple * multiple
    above = -(-size // multiple) * multiple
    return (below or None), above


def check_input_shape_multiple(
    input_shape: Sequence[int | None], multiple: int, model: str, reason: str
) -> tuple[int | None, int | None]:
    """Check that the height and width of a model's input are multiples of `multiple`.

    For the models whose output has the input's size only when every downsampling
    divides evenly (FCN: 5 poolings, so multiples of 32). The message says the rule,
    why, what was received and the nearest valid shapes.

    Args:
        input_shape: `(height, width, channels)`; height or width may be None (not
            checked here).
        multiple: int, the period of valid sizes.
        model: str, the model's name in the message (e.g. `"fcn"`).
        reason: str, why the sizes must be multiples (a clause for the message).

    Returns:
        `(height, width)`, None where unknown.

    Raises:
        ValueError: if the height or the width is not a multiple of `multiple`.

    Example:

    >>> check_input_shape_multiple((100, 64, 3), 32, "fcn", "five 2×2 poolings")
    Traceback (most recent call last):
    ...
    ValueError: `fcn` needs height and width divisible by 32 (five 2×2 poolings). Received: input_shape=(100, 64, 3). Pad or crop to (128, 64) (or crop to (96, 64)).
    """  # noqa: E501
    input_shape = _check_input_shape(input_shape)
    multiple = check_positive_int(multiple, "multiple")
    spatial = input_shape[:2]
    if all(n is None or n % multiple == 0 for n in spatial):
        return spatial
    nearest = [(n, n) if n is None else nearest_multiples(n, multiple) for n in spatial]
    up = tuple(above for _, above in nearest)
    down = tuple(below for below, _ in nearest)
    hint = f"Pad or crop to {up}"
    # No smaller shape to crop to when a known size is below `multiple`.
    if all(d is not None for d, n in zip(down, spatial) if n is not None) and down != up:
        hint += f" (or crop to {down})"
    raise ValueError(
        f"`{model}` needs height and width divisible by {multiple} ({reason}). "
        f"Received: input_shape={input_shape}. {hint}."
    )


def check_input_shape_minimum(
    input_shape: Sequence[int | None], minimum: int, model: str, reason: str
) -> tuple[int | None, int | None]:
    """Check that the height and width of a model's input are at least `minimum`.

    Args:
        input_shape: `(height, width, channels)`; height or width may be None (not
            checked here).
        minimum: int, the smallest valid height and width.
        model: str, the model's name in the message (e.g. `"segnet"`).
        reason: str, why (a clause for the message).

    Returns:
        `(height, width)`, None where unknown.

    Raises:
        ValueError: if the height or the width is smaller than `minimum`.

    Example:

    >>> check_input_shape_minimum((8, 40, 3), 16, "segnet", "4 poolings")
    Traceback (most recent call last):
    ...
    ValueError: `segnet` needs height and width of at least 16 (4 poolings). Received: input_shape=(8, 40, 3). Pad to (16, 40).
    """  # noqa: E501
    input_shape = _check_input_shape(input_shape)
    minimum = check_positive_int(minimum, "minimum")
    spatial = input_shape[:2]
    if all(n is None or n >= minimum for n in spatial):
        return spatial
    padded = tuple(n if n is None else max(n, minimum) for n in spatial)
    raise ValueError(
        f"`{model}` needs height and width of at least {minimum} ({reason}). "
        f"Received: input_shape={input_shape}. Pad to {padded}."
    )
