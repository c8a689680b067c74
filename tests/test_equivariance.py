"""Translation equivariance, measured (`fcnkit.equivariance`).

Hand-countable masks, NumPy references for pooling, circular convolution as
the exactly equivariant case, the band that zero padding leaves at the
border against the receptive field, and the lecture's table with the rule
"exact for shifts that are multiples of the total stride".
"""

import re

import keras
import numpy as np
import pytest

from fcnkit.equivariance import (
    EquivarianceError,
    border_effect_width,
    equivariance_table,
    shift_equivariance_error,
    total_stride,
)
from fcnkit.models import unet
from fcnkit.receptive_field import receptive_field

layers = keras.layers
RNG = np.random.default_rng(0)
IMAGE = RNG.random((48, 48, 1)).astype("float32")


def stack(count, kernel=3, padding="same", channels=1):
    inputs = keras.Input((None, None, channels))
    x = inputs
    for index in range(count):
        x = layers.Conv2D(2, kernel, padding=padding,
                          kernel_initializer=keras.initializers.GlorotUniform(index))(x)
    return keras.Model(inputs, x)


def test_convolution_is_exactly_equivariant_in_the_interior():
    result = shift_equivariance_error(layers.Conv2D(2, 3, padding="same"), IMAGE, 1)
    assert isinstance(result, EquivarianceError) and isinstance(result.error, float)
    assert result.error == 0.0 and result.exact and result.output_shift == (1, 1)
    # By hand: output row p is compared when its RF [p - 1, p + 1] is inside the
    # image, avoids the wrapped-in row 0, and row p - 1 of F(x) is inside too:
    # p in [2, 46], 45 rows; the same for columns.
    assert result.mask.sum() == 45 * 45
    assert result.mask[2:47, 2:47].all()
    assert np.isnan(result.map[0]).all() and np.isnan(result.map[:, 0]).all()


def test_negative_and_one_axis_shifts():
    conv = layers.Conv2D(2, 5, padding="same")
    up_left = shift_equivariance_error(conv, IMAGE, (-3, 0))
    assert up_left.exact and up_left.shift == (-3, 0) and up_left.output_shift == (-3, 0)
    # Rows: p in [2, 42] (RF inside, away from the wrapped rows 45-47, p + 3 inside).
    assert up_left.mask.sum() == 41 * 44


def pool_numpy(x, size=2):
    rows, columns = x.shape[0] // size, x.shape[1] // size
    return x[:rows * size, :columns * size].reshape(rows, size, columns, size).max(axis=(1, 3))


def test_max_pooling_against_numpy():
    image = IMAGE[..., 0].astype("float64")
    pool = layers.MaxPooling2D(2)
    exact = shift_equivariance_error(pool, IMAGE, 2)
    assert exact.exact and exact.output_shift == (1, 1) and exact.scale == (0.5, 0.5)
    odd = shift_equivariance_error(pool, IMAGE, (1, 0))
    assert not odd.exact
    # NumPy: pool(roll(x, 1)) against pool(x) moved by 0 or 1 rows, on the mask.
    shifted = pool_numpy(np.roll(image, 1, axis=0))
    pooled = pool_numpy(image)
    errors = {}
    for t in (0, 1):
        moved = np.full_like(pooled, np.nan)
        moved[t:] = pooled[:len(pooled) - t]
        errors[t] = np.abs(shifted - moved)
    assert odd.output_shift[0] in (0, 1) and odd.output_shift[1] == 0
    expected = errors[odd.output_shift[0]][odd.mask].mean()
    assert odd.error == pytest.approx(expected, rel=1e-6)
    other = errors[1 - odd.output_shift[0]][odd.mask].mean()
    assert odd.error <= other + 1e-12  # the better of the two neighbouring shifts


def test_upsampling_maps_a_shift_of_t_to_two_t():
    result = shift_equivariance_error(layers.UpSampling2D(2), IMAGE, (3, -2))
    assert result.exact and result.output_shift == (6, -4) and result.scale == (2, 2)


def circular_convolution(kernel):
    """A 3x3 convolution with circular padding: exactly equivariant everywhere."""
    def apply(x):
        padded = np.concatenate([x[:, -1:], x, x[:, :1]], axis=1)
        padded = np.concatenate([padded[:, :, -1:], padded, padded[:, :, :1]], axis=2)
        out = np.zeros_like(x)
        for i in range(3):
            for j in range(3):
                out += kernel[i, j] * padded[:, i:i + x.shape[1], j:j + x.shape[2]]
        return out
    return apply


def test_circular_comparison_is_exact_for_circular_padding_only():
    kernel = RNG.standard_normal((3, 3))
    circular = shift_equivariance_error(circular_convolution(kernel), IMAGE, (5, 7),
                                        comparison="circular")
    assert circular.exact and circular.mask.all() and circular.scale == (1, 1)
    # Zero padding: differences only within 1 pixel of the border or of the seam.
    conv = layers.Conv2D(1, 3, padding="same", use_bias=False)
    zero = shift_equivariance_error(conv, IMAGE, (5, 0), comparison="circular")
    assert not zero.exact
    rows_with_differences = np.flatnonzero(zero.map.max(axis=1) > 1e-6)
    assert set(rows_with_differences) <= {47, 0, 4, 5, 6}
    assert {0, 5}.issubset(rows_with_differences)


def test_plain_callable_needs_a_margin_for_the_interior():
    double = lambda x: 2 * x  # noqa: E731
    message = (
        "An interior comparison needs the receptive field of `fn`, which is computed for "
        "Keras models and layers only. Received: fn of type function and margin=None. Pass "
        "margin=<half-width of its receptive field, in input pixels>, or "
        "comparison=\"circular\"."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        shift_equivariance_error(double, IMAGE, 1)
    assert shift_equivariance_error(double, IMAGE, 1, margin=0).exact


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"x": np.zeros((4, 4))}, ValueError,
         "`x` must be an image (rows, columns, channels) or a batch (n, rows, columns, "
         "channels). Received: an array of shape (4, 4). Add the channel axis of a grey "
         "image with x[..., np.newaxis]."),
        ({"shift": 1.5}, TypeError,
         "`shift` must be an int (the same shift along rows and columns) or a pair of ints "
         "(rows, columns), in input pixels. Received: shift=1.5."),
        ({"comparison": "border"}, ValueError, "comparison"),
        ({"fn": lambda x: x[..., 0], "comparison": "circular"}, ValueError,
         "`fn` must return a batch of images (n, rows, columns, channels). Received: an "
         "output of shape (1, 48, 48). For a layer with several outputs, pass a function "
         "returning one, e.g. lambda x: layer(x)[0]."),
        ({"x": np.zeros((6, 6, 1)), "shift": 3, "fn": layers.Conv2D(1, 5, padding="same")},
         ValueError,
         "No output pixel has a receptive field inside the image in both F(T(x)) and F(x), "
         "away from the shifted-in band, so there is nothing to compare. Received: x of "
         "shape (6, 6), shift=(3, 3). Use a larger image or a smaller shift, or "
         "comparison=\"circular\"."),
    ],
)
def test_bad_arguments(kwargs, error, message):
    arguments = {"fn": layers.Conv2D(1, 3, padding="same"), "x": IMAGE, "shift": 1, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        shift_equivariance_error(**arguments)


@pytest.mark.parametrize("count", [1, 2, 4])
def test_border_band_of_same_convolutions_is_half_the_receptive_field(count):
    model = stack(count)
    size = receptive_field(model).size[0]
    assert border_effect_width(model, IMAGE) == ((size - 1) // 2,) * 2 == (count, count)


def test_border_band_per_axis_and_none_without_padding():
    inputs = keras.Input((None, None, 1))
    rectangular = keras.Model(inputs, layers.Conv2D(1, (3, 7), padding="same")(inputs))
    assert border_effect_width(rectangular, IMAGE) == (1, 3)
    assert border_effect_width(stack(3, padding="valid"), IMAGE) == (0, 0)


def test_border_band_of_a_unet_lies_within_its_receptive_field():
    keras.utils.set_random_seed(0)
    model = unet((None, None, 1), num_classes=1, depth=2, filters=2, output_activation=None)
    image = np.random.default_rng(5).random((64, 64, 1))
    # The band holds the output pixels whose receptive field reaches past the border.
    # A U-Net's field is not centred on its pixel (phases), so the band is its
    # effective padding P = 22, not (r - 1) / 2 = 21.5.
    rf = receptive_field(model)
    reaching_out = [p for p in range(64)
                    if not 0 <= rf.interval((p, p))[0][0] <= rf.interval((p, p))[0][1] < 64]
    expected = max(min(p, 63 - p) + 1 for p in reaching_out)
    # The outermost pixels depend on the padding weakly: a tolerance at round-off.
    assert border_effect_width(model, image, tolerance=1e-9) == (expected, expected) == (22, 22)
    assert all(width <= 22 for width in border_effect_width(model, image))
    assert rf.padding == (22, 22) and rf.size == (44, 44)
    # Interior equivariance holds for multiples of the total stride 4 only.
    assert total_stride(model) == 4
    assert shift_equivariance_error(model, image, 4).exact
    assert not shift_equivariance_error(model, image, 2).exact


def test_total_stride():
    inputs = keras.Input((None, None, 1))
    up = keras.Model(inputs, layers.Conv2DTranspose(1, 2, strides=2)(inputs))
    assert total_stride(up) == 1
    assert total_stride(unet((None, None, 1), depth=4, filters=2)) == 16
    assert total_stride(stack(2)) == 1


@pytest.fixture(scope="module")
def table():
    return equivariance_table(shifts=(1, 2, 3, 4, 8, 16))


def test_table_matches_the_lecture(table):
    answers = {row["operator"]: row["lecture"] for row in table}
    assert answers == {
        "convolution 3×3, stride 1": "yes",
        "max-pooling 2×2, stride 2": "no",
        "transposed convolution 2×2, stride 2": "yes",
        "upsampling ×2 (nearest)": "yes",
        "convolution 3×3, stride 2": "",
        "max-pooling stride 1 + BlurPool stride 2": "",
        "U-Net, 4 levels": "",
    }
    for row in table:
        exact = [row[f"shift {t}"].exact for t in table.shifts]
        if row["lecture"] == "yes":
            assert all(exact), row["operator"]
        if row["lecture"] == "no":
            assert not all(exact), row["operator"]


def test_table_shows_the_rule_of_the_total_stride(table):
    strides = {row["operator"]: int(row["stride"]) for row in table}
    assert strides["U-Net, 4 levels"] == 16 and strides["max-pooling 2×2, stride 2"] == 2
    for row in table:
        stride = int(row["stride"])
        for t in table.shifts:
            assert row[f"shift {t}"].exact == (t % stride == 0), (row["operator"], t)
    blur = next(r for r in table if "BlurPool" in r["operator"])
    pool = next(r for r in table if r["operator"] == "max-pooling 2×2, stride 2")
    assert blur["shift 1"].relative < pool["shift 1"].relative  # anti-aliasing helps


def test_table_prints_like_the_lecture(table):
    lines = str(table).splitlines()
    assert lines[0].split() == ["operator", "lecture", "S", "shift", "1", "shift", "2",
                                "shift", "3", "shift", "4", "shift", "8", "shift", "16"]
    assert lines[2].split()[-6:] == ["exact"] * 6
    assert lines[3].split()[-6:-4] == [f"{table[1]['shift 1'].relative:.2f}", "exact"]
