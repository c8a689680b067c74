"""Shape arithmetic: hand-computed cases, Keras cross-checks and the U-Net rules."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fcnkit import shapes

# (size, kernel, strides, padding, dilation) -> output size, computed by hand.
CONV_CASES = [
    ((572, 3, 1, "valid", 1), 570),
    ((570, 2, 2, "valid", 1), 285),
    ((7, 3, 2, "same", 1), 4),
    ((8, 3, 2, "same", 1), 4),
    ((10, 3, 1, "valid", 2), 6),  # a dilated 3-tap kernel covers 5 pixels
    ((2, 5, 1, "valid", 1), 0),  # the kernel does not fit
]


@pytest.mark.parametrize("args, expected", CONV_CASES)
def test_conv_output_size_hand_cases(args, expected):
    assert shapes.conv_output_size(*args) == expected


@pytest.mark.parametrize(
    "size, kernel, strides, padding, dilation",
    [(n, k, s, p, d) for n in (9, 16, 31) for k in (1, 2, 3, 5)
     for s in (1, 2, 3) for p in ("valid", "same") for d in (1, 2)
     if not (s > 1 and d > 1)],
)
def test_conv_output_size_matches_keras(size, kernel, strides, padding, dilation):
    layer = keras.layers.Conv2D(
        1, kernel, strides=strides, padding=padding, dilation_rate=dilation
    )
    if padding == "valid" and dilation * (kernel - 1) + 1 > size:
        pytest.skip("Keras rejects kernels larger than the input")
    keras_size = layer.compute_output_shape((1, size, size, 1))[1]
    assert shapes.conv_output_size(size, kernel, strides, padding, dilation) == keras_size


@pytest.mark.parametrize(
    "size, kernel, strides, padding",
    [(n, k, s, p) for n in (1, 4, 7) for k in (1, 2, 3, 4) for s in (1, 2, 3)
     for p in ("valid", "same")],
)
def test_transposed_conv_output_size_matches_keras(size, kernel, strides, padding):
    layer = keras.layers.Conv2DTranspose(1, kernel, strides=strides, padding=padding)
    keras_size = layer.compute_output_shape((1, size, size, 1))[1]
    assert shapes.transposed_conv_output_size(size, kernel, strides, padding) == keras_size


def test_none_sizes_stay_unknown():
    assert shapes.conv_output_size(None, 3) is None
    assert shapes.transposed_conv_output_size(None, 2, 2) is None
    assert shapes.unet_output_size(None) is None


def test_original_unet_trace_matches_the_paper_figure():
    # Ronneberger et al. 2015, Fig. 1: 572 → 570 → 568 → 284 ... → 388.
    assert shapes.unet_size_trace(572, depth=4, padding="valid") == [
        572, 568, 284, 280, 140, 136, 68, 64, 32, 28, 52, 100, 196, 388,
    ]


@given(st.integers(min_value=1, max_value=2000))
def test_valid_unet_sizes_are_12_mod_16_from_188(size):
    expected = size % 16 == 12 and size >= 188
    assert shapes.is_valid_unet_size(size, depth=4, padding="valid") is expected
    if expected:
        assert shapes.unet_output_size(size, 4, "valid") == size - 184


@given(st.integers(min_value=1, max_value=2000), st.integers(1, 5))
def test_same_unet_sizes_are_multiples_of_two_to_the_depth(size, depth):
    assert shapes.is_valid_unet_size(size, depth, "same") is (size % 2**depth == 0)


@given(st.integers(min_value=1, max_value=1500), st.integers(1, 4),
       st.sampled_from(["same", "valid"]))
def test_nearest_valid_sizes_bracket_the_size(size, depth, padding):
    below, above = shapes.nearest_valid_unet_sizes(size, depth, padding)
    assert above >= size and shapes.is_valid_unet_size(above, depth, padding)
    assert not any(shapes.is_valid_unet_size(n, depth, padding) for n in range(size, above))
    if below is not None:
        assert below <= size and shapes.is_valid_unet_size(below, depth, padding)
        assert not any(
            shapes.is_valid_unet_size(n, depth, padding) for n in range(below + 1, size)
        )


def test_invalid_valid_unet_size_names_the_nearest_sizes():
    message = (
        '`unet` with depth=4 and padding="valid" needs height and width '
        "n ≡ 12 (mod 16) and n ≥ 188. Received: input_shape=(570, 570, 1). "
        "Pad or crop to (572, 572) (or crop to (556, 556))."
    )
    with pytest.raises(ValueError) as error:
        shapes.check_unet_input_shape((570, 570, 1), depth=4, padding="valid")
    assert str(error.value) == message


def test_too_small_size_has_only_an_upper_suggestion():
    with pytest.raises(ValueError) as error:
        shapes.check_unet_input_shape((100, None, 1), depth=4, padding="valid")
    assert str(error.value) == (
        '`unet` with depth=4 and padding="valid" needs height and width '
        "n ≡ 12 (mod 16) and n ≥ 188. Received: input_shape=(100, None, 1). "
        "Pad or crop to (188, None)."
    )


def test_unet_output_size_error_names_nearest_sizes():
    with pytest.raises(ValueError) as error:
        shapes.unet_output_size(250, depth=4, padding="same")
    assert str(error.value) == (
        '`unet` with depth=4 and padding="same" needs height and width n '
        "divisible by 16, so that every 2×2 max-pooling sees an even size. "
        "Received: size=250. Pad or crop to the nearest valid size: 240 or 256."
    )


@pytest.mark.parametrize(
    "call, error_type, message",
    [
        (lambda: shapes.conv_output_size(5, 0), ValueError,
         "`kernel_size` must be a positive integer (1 or more). Received: kernel_size=0. "
         "Pass kernel_size=1 or more."),
        (lambda: shapes.conv_output_size(5, 3, padding="full"), ValueError,
         '`padding` must be one of "valid", "same". Received: padding=\'full\'.'),
        (lambda: shapes.transposed_conv_output_size(5, 2, strides=-1), ValueError,
         "`strides` must be a positive integer (1 or more). Received: strides=-1. "
         "Pass strides=1 or more."),
        (lambda: shapes.conv_output_size(5, True), TypeError,
         "`kernel_size` must be a positive integer (a Python int or a NumPy integer). "
         "Received: kernel_size=True of type bool. Pass a number such as kernel_size=1, "
         "not True or False."),
        (lambda: shapes.conv_output_size(5.0, 3), TypeError,
         "`size` must be a positive integer (a Python int or a NumPy integer). "
         "Received: size=5.0 of type float. Pass size=5 (an int, not a float)."),
        (lambda: shapes.unet_output_size(0), ValueError,
         "`size` must be a positive integer (1 or more). Received: size=0. "
         "Pass size=1 or more."),
        (lambda: shapes.is_valid_unet_size(64, depth=2.0), TypeError,
         "`depth` must be a positive integer (a Python int or a NumPy integer). "
         "Received: depth=2.0 of type float. Pass depth=2 (an int, not a float)."),
        (lambda: shapes.check_unet_input_shape((64, 64)), ValueError,
         "`input_shape` must be (height, width, channels). "
         "Received: input_shape=(64, 64)"),
        (lambda: shapes.check_unet_input_shape((64, -64, 1)), ValueError,
         "`input_shape[1]` must be a positive integer (1 or more). "
         "Received: input_shape[1]=-64. Pass input_shape[1]=1 or more."),
    ],
)
def test_bad_arguments(call, error_type, message):
    with pytest.raises(error_type) as error:
        call()
    assert str(error.value) == message


def test_numpy_integers_are_sizes_like_ints():
    size, depth = np.int64(572), np.int32(4)
    assert shapes.unet_output_size(size, depth, "valid") == 388
    assert type(shapes.conv_output_size(size, np.uint8(3))) is int
    assert shapes.nearest_valid_unet_sizes(np.int16(250), depth) == (240, 256)
    assert shapes.check_unet_input_shape((size, None, np.int64(1)), depth, "valid") == (388, None)
