"""MaxPoolingWithArgmax2D, MaxUnpooling2D, AddCoords2D and BlurPool2D.

NumPy references written loop by loop, `tf.nn.max_pool_with_argmax` for the indices (inputs
drawn from a continuous distribution, so without ties: checked), hand cases for ties and for
the values the docstrings promise, gradients, every error message in full, and config and
`.keras` round trips inside functional models.
"""

import math

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnkit._gradients import input_gradient
from fcnkit.layers import (
    AddCoords2D,
    BlurPool2D,
    MaxPoolingWithArgmax2D,
    MaxUnpooling2D,
)
from fcnkit.layers.blur_pool import binomial_filter

to_numpy = keras.ops.convert_to_numpy
on_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="compares with a TensorFlow op"
)


def random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def error_message(error_type, function, *args, **kwargs):
    with pytest.raises(error_type) as error:
        function(*args, **kwargs)
    return str(error.value)


# === NumPy references ===


def numpy_pool_with_argmax(x, pool_size, padding="valid"):
    """Pooled values and within-window indices (first maximum in row-major order)."""
    pool_rows, pool_columns = pool_size
    batch, height, width, channels = x.shape
    if padding == "valid":
        rows, columns = height // pool_rows, width // pool_columns
        padded = x[:, : rows * pool_rows, : columns * pool_columns]
    else:
        rows, columns = math.ceil(height / pool_rows), math.ceil(width / pool_columns)
        top = (rows * pool_rows - height) // 2
        left = (columns * pool_columns - width) // 2
        padded = np.pad(
            x, [(0, 0), (top, rows * pool_rows - height - top),
                (left, columns * pool_columns - width - left), (0, 0)],
            constant_values=-np.inf,
        )
    pooled = np.zeros((batch, rows, columns, channels), x.dtype)
    indices = np.zeros((batch, rows, columns, channels), "int32")
    for i in range(rows):
        for j in range(columns):
            window = padded[:, i * pool_rows : (i + 1) * pool_rows,
                            j * pool_columns : (j + 1) * pool_columns]
            window = window.reshape(batch, pool_rows * pool_columns, channels)
            pooled[:, i, j] = window.max(axis=1)
            indices[:, i, j] = window.argmax(axis=1)  # NumPy returns the first maximum
    return pooled, indices


def numpy_unpool(pooled, indices, pool_size, output_size=None):
    pool_rows, pool_columns = pool_size
    batch, rows, columns, channels = pooled.shape
    full = np.zeros((batch, rows * pool_rows, columns * pool_columns, channels), pooled.dtype)
    for b, i, j, c in np.ndindex(pooled.shape):
        row, column = divmod(int(indices[b, i, j, c]), pool_columns)
        full[b, i * pool_rows + row, j * pool_columns + column, c] = pooled[b, i, j, c]
    if output_size is None:
        return full
    for axis, target in ((1, output_size[0]), (2, output_size[1])):
        size = full.shape[axis]
        if target < size:  # "same" padding removed: centred, the extra pixel below
            start = (size - target) // 2
            full = np.take(full, np.arange(start, start + target), axis=axis)
        else:  # "valid" pooling dropped these rows
            widths = [(0, 0)] * 4
            widths[axis] = (0, target - size)
            full = np.pad(full, widths)
    return full


def numpy_blur_pool(x, filter_size, strides, padding):
    row = np.array([math.comb(filter_size - 1, k) for k in range(filter_size)], "float64")
    kernel = np.outer(row, row) / row.sum() ** 2
    before, after = (filter_size - 1) // 2, filter_size // 2
    mode = "constant" if padding == "zero" else padding
    padded = np.pad(x.astype("float64"), [(0, 0), (before, after), (before, after), (0, 0)],
                    mode=mode)
    out_rows = math.ceil(x.shape[1] / strides[0])
    out_columns = math.ceil(x.shape[2] / strides[1])
    out = np.zeros((x.shape[0], out_rows, out_columns, x.shape[3]))
    for i in range(out_rows):
        for j in range(out_columns):
            window = padded[:, i * strides[0] : i * strides[0] + filter_size,
                            j * strides[1] : j * strides[1] + filter_size]
            out[:, i, j] = np.einsum("bhwc,hw->bc", window, kernel)
    return out


def numpy_coordinates(height, width, with_r):
    def axis(n):
        return np.zeros(1) if n == 1 else np.linspace(-1.0, 1.0, n)

    y, x = np.meshgrid(axis(height), axis(width), indexing="ij")
    channels = [x, y] + ([np.sqrt(x**2 + y**2)] if with_r else [])
    return np.stack(channels, axis=-1)


# === MaxPoolingWithArgmax2D ===

# (input shape, pool_size, padding)
POOL_CASES = [
    ((2, 4, 6, 3), 2, "valid"),
    ((1, 5, 7, 2), 2, "valid"),  # odd: the last row and column are dropped
    ((1, 5, 7, 2), 2, "same"),  # odd: the last windows are partial
    ((2, 7, 8, 1), 3, "same"),  # padding 1 above, 1 below; 0 left, 1 right
    ((1, 6, 6, 2), (2, 3), "valid"),
    ((1, 7, 4, 2), (3, 1), "same"),
    ((1, 3, 3, 1), 3, "valid"),
]


@pytest.mark.parametrize("shape, pool_size, padding", POOL_CASES)
def test_pooling_matches_numpy(shape, pool_size, padding):
    x = random(shape)
    pooled, indices = MaxPoolingWithArgmax2D(pool_size, padding=padding)(x)
    expected_pooled, expected_indices = numpy_pool_with_argmax(
        x, MaxPoolingWithArgmax2D(pool_size).pool_size, padding
    )
    np.testing.assert_array_equal(to_numpy(pooled), expected_pooled)
    np.testing.assert_array_equal(to_numpy(indices), expected_indices)
    assert keras.backend.standardize_dtype(indices.dtype) == "int32"


@pytest.mark.parametrize("shape, pool_size, padding", POOL_CASES)
def test_pooled_values_are_those_of_max_pooling_2d(shape, pool_size, padding):
    x = random(shape, seed=1)
    pooled, _ = MaxPoolingWithArgmax2D(pool_size, padding=padding)(x)
    expected = keras.layers.MaxPooling2D(pool_size, padding=padding)(x)
    np.testing.assert_array_equal(to_numpy(pooled), to_numpy(expected))


@on_tensorflow
@pytest.mark.parametrize("shape, pool_size, padding", [
    ((2, 8, 10, 3), 2, "valid"), ((2, 9, 11, 3), 2, "valid"), ((2, 9, 11, 3), 2, "same"),
    ((1, 7, 8, 4), 3, "same"), ((1, 8, 9, 2), (2, 3), "valid"),
])
def test_indices_match_tf_max_pool_with_argmax(shape, pool_size, padding):
    import tensorflow as tf

    inputs = random(shape, seed=2)
    assert len(np.unique(inputs)) == inputs.size  # no ties: TF does not say which one wins
    layer = MaxPoolingWithArgmax2D(pool_size, padding=padding)
    pool_rows, pool_columns = layer.pool_size
    pooled, indices = (to_numpy(t) for t in layer(inputs))
    tf_pooled, tf_flat = tf.nn.max_pool_with_argmax(
        inputs, layer.pool_size, layer.pool_size, padding.upper(), include_batch_in_index=False
    )
    # Within-window index -> pixel (row, column) -> flat index (row * width + column) *
    # channels + channel; "same" padding shifts the windows by (top, left).
    _, height, width, channels = inputs.shape
    top = (pooled.shape[1] * pool_rows - height) // 2 if padding == "same" else 0
    left = (pooled.shape[2] * pool_columns - width) // 2 if padding == "same" else 0
    i = np.arange(pooled.shape[1])[None, :, None, None]
    j = np.arange(pooled.shape[2])[None, None, :, None]
    channel = np.arange(channels)[None, None, None, :]
    row = i * pool_rows + indices // pool_columns - top
    column = j * pool_columns + indices % pool_columns - left
    np.testing.assert_array_equal((row * width + column) * channels + channel, tf_flat.numpy())
    np.testing.assert_array_equal(pooled, tf_pooled.numpy())


def test_ties_give_the_first_maximum_in_row_major_order():
    # Windows (2x2): all equal; [[0, 2], [2, 1]]; [[-0.0, 0.0], [-1, -1]]; [[1, 1], [3, 3]].
    x = np.array([[7, 7, 0, 2, -0.0, 0.0, 1, 1],
                  [7, 7, 2, 1, -1.0, -1.0, 3, 3]], dtype="float32").reshape(1, 2, 8, 1)
    _, indices = MaxPoolingWithArgmax2D(2)(x)
    assert to_numpy(indices)[0, 0, :, 0].tolist() == [0, 1, 0, 2]


def test_gradient_of_ties_goes_to_the_indexed_pixel():
    x = np.array([[7, 7, 0, 2], [7, 7, 2, 1]], dtype="float32").reshape(1, 2, 4, 1)
    inputs = keras.Input((2, 4, 1))
    pooled, indices = MaxPoolingWithArgmax2D(2)(inputs)
    model = keras.Model(inputs, MaxUnpooling2D(2)([pooled, indices]))
    gradient = input_gradient(model, x, np.ones((1, 2, 4, 1), "float32"))
    assert gradient[0, :, :, 0].tolist() == [[1, 0, 0, 1], [0, 0, 0, 0]]


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_windows_of_minus_infinity_point_at_their_first_pixel_in_the_image(padding):
    # All pixels tie at -inf: the first one inside the image is the maximum. (TensorFlow's
    # max_pool returns the lowest float32 for them, JAX's -inf: MaxPooling2D's value.)
    x = np.full((1, 5, 7, 1), -np.inf, dtype="float32")
    x[0, 0, 0, 0] = 1.0
    pooled, indices = MaxPoolingWithArgmax2D(3, padding=padding)(x)
    restored = to_numpy(MaxUnpooling2D(3)([pooled, indices, x]))
    if padding == "valid":  # one window row, two columns
        assert to_numpy(indices)[0, :, :, 0].tolist() == [[0, 0]]
        positions = ([0, 0], [0, 3])
    else:  # 1 row of padding below; 2 columns: 1 left, 1 right
        assert to_numpy(indices)[0, :, :, 0].tolist() == [[1, 0, 0], [1, 0, 0]]
        positions = ([0, 0, 0, 3, 3, 3], [0, 2, 5, 0, 2, 5])
    np.testing.assert_array_equal(restored[0, positions[0], positions[1], 0],
                                  to_numpy(pooled)[0, :, :, 0].ravel())
    expected = to_numpy(keras.layers.MaxPooling2D(3, padding=padding)(x))
    np.testing.assert_array_equal(to_numpy(pooled), expected)


def test_gradient_of_the_pooled_values_is_that_of_max_pooling_2d():
    x = random((2, 7, 9, 3), seed=3)
    weights = random((2, 3, 4, 3), seed=4)
    inputs = keras.Input((7, 9, 3))
    ours = keras.Model(inputs, MaxPoolingWithArgmax2D(2)(inputs)[0])
    keras_pooling = keras.Model(inputs, keras.layers.MaxPooling2D(2)(inputs))
    np.testing.assert_array_equal(
        input_gradient(ours, x, weights), input_gradient(keras_pooling, x, weights)
    )


@pytest.mark.parametrize("pool_size, padding", [(2, "valid"), (2, "same"), (3, "same")])
def test_output_shapes(pool_size, padding):
    layer = MaxPoolingWithArgmax2D(pool_size, padding=padding)
    ceil = padding == "same"
    expected = (None, -(-7 // pool_size) if ceil else 7 // pool_size,
                -(-10 // pool_size) if ceil else 10 // pool_size, 3)
    assert layer.compute_output_shape((None, 7, 10, 3)) == [expected, expected]
    assert layer.compute_output_shape((None, None, None, 3)) == [(None, None, None, 3)] * 2
    inputs = keras.Input((7, 10, 3))
    pooled, indices = layer(inputs)
    assert (pooled.shape, indices.shape) == (expected, expected)
    assert (pooled.dtype, indices.dtype) == ("float32", "int32")


# === MaxUnpooling2D ===


@pytest.mark.parametrize("shape, pool_size, padding", POOL_CASES)
def test_unpool_of_pool_keeps_each_maximum_at_its_position(shape, pool_size, padding):
    x = random(shape, seed=5)
    pool_pair = MaxPoolingWithArgmax2D(pool_size).pool_size
    pooled, indices = MaxPoolingWithArgmax2D(pool_size, padding=padding)(x)
    restored = to_numpy(MaxUnpooling2D(pool_size)([pooled, indices, x]))
    expected_pooled, expected_indices = numpy_pool_with_argmax(x, pool_pair, padding)
    expected = numpy_unpool(expected_pooled, expected_indices, pool_pair, shape[1:3])
    np.testing.assert_array_equal(restored, expected)
    # One nonzero per window and channel (no zeros in x), equal to the window's maximum,
    # where it was in x.
    assert restored.shape == x.shape
    assert np.count_nonzero(restored) == expected_pooled.size
    nonzero = restored != 0
    np.testing.assert_array_equal(restored[nonzero], x[nonzero])


def test_default_and_explicit_output_sizes():
    x = random((1, 5, 7, 2), seed=6)
    pooled, indices = MaxPoolingWithArgmax2D(2)(x)  # 2 x 3
    default = to_numpy(MaxUnpooling2D(2)([pooled, indices]))
    explicit = to_numpy(MaxUnpooling2D(2, output_size=(5, 7))([pooled, indices]))
    recorded = to_numpy(MaxUnpooling2D(2)([pooled, indices, x]))
    assert default.shape == (1, 4, 6, 2) and explicit.shape == (1, 5, 7, 2)
    np.testing.assert_array_equal(explicit, recorded)
    np.testing.assert_array_equal(explicit[:, :4, :6], default)
    assert not explicit[:, 4:].any() and not explicit[:, :, 6:].any()


def test_unpooling_spreads_processed_values_by_the_indices():
    pooled = np.array([[1.5, -2.0]], dtype="float32").reshape(1, 1, 2, 1)
    indices = np.array([[3, 0]], dtype="int32").reshape(1, 1, 2, 1)
    restored = MaxUnpooling2D(2)([pooled, indices])
    assert to_numpy(restored)[0, :, :, 0].tolist() == [[0, 0, -2, 0], [0, 1.5, 0, 0]]
    restored = MaxUnpooling2D((1, 3))([pooled, np.array([2, 1], "int32").reshape(1, 1, 2, 1)])
    assert to_numpy(restored)[0, :, :, 0].tolist() == [[0, 0, 1.5, 0, -2, 0]]


def test_unpooling_gradient_goes_to_the_pooled_values_at_their_indices():
    x = random((2, 6, 5, 3), seed=7)
    weights = random((2, 6, 5, 3), seed=8)
    inputs = keras.Input((6, 5, 3))
    pooled, indices = MaxPoolingWithArgmax2D(2)(inputs)
    model = keras.Model(inputs, MaxUnpooling2D(2)([pooled, indices, inputs]))
    gradient = input_gradient(model, x, weights)
    # d/dx sum(unpool(pool(x)) * w) = w at each window's maximum, 0 elsewhere (and in the
    # dropped last column).
    restored = to_numpy(model(x))
    np.testing.assert_array_equal(gradient, np.where(restored != 0, weights, 0))
    assert np.count_nonzero(gradient) == 2 * 3 * 2 * 3


def test_unpooling_output_shapes():
    layer = MaxUnpooling2D(2)
    assert layer.compute_output_shape([(None, 3, 4, 8)] * 2) == (None, 6, 8, 8)
    assert layer.compute_output_shape([(None, None, None, 8)] * 2) == (None, None, None, 8)
    reference = (None, 7, 9, 1)
    assert layer.compute_output_shape([(None, 3, 4, 8)] * 2 + [reference]) == (None, 7, 9, 8)
    assert MaxUnpooling2D(3, output_size=(7, 12)).compute_output_shape(
        [(None, 3, 4, 8)] * 2) == (None, 7, 12, 8)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_dynamic_sizes_in_a_functional_model(padding):
    inputs = keras.Input((None, None, 2))
    pooled, indices = MaxPoolingWithArgmax2D(2, padding=padding)(inputs)
    model = keras.Model(inputs, MaxUnpooling2D(2)([pooled, indices, inputs]))
    for shape in [(1, 6, 8, 2), (2, 7, 5, 2)]:
        x = random(shape, seed=9)
        expected = numpy_unpool(*numpy_pool_with_argmax(x, (2, 2), padding), (2, 2), shape[1:3])
        np.testing.assert_array_equal(model.predict(x, verbose=0), expected)


@settings(deadline=None, max_examples=25)
@given(height=st.integers(2, 9), width=st.integers(2, 9), pool=st.integers(2, 3),
       padding=st.sampled_from(["valid", "same"]), seed=st.integers(0, 1000))
def test_unpool_of_pool_keeps_the_maxima_and_zeros_the_rest(height, width, pool, padding,
                                                             seed):
    if padding == "valid" and min(height, width) < pool:
        return
    x = np.random.default_rng(seed).uniform(0.5, 1.5, (1, height, width, 2)).astype("float32")
    pooled, indices = MaxPoolingWithArgmax2D(pool, padding=padding)(x)
    restored = to_numpy(MaxUnpooling2D(pool)([pooled, indices, x]))
    nonzero = restored != 0
    assert np.count_nonzero(restored) == to_numpy(pooled).size
    np.testing.assert_array_equal(restored[nonzero], x[nonzero])
    np.testing.assert_array_equal(np.sort(restored[nonzero]), np.sort(to_numpy(pooled).ravel()))


# === AddCoords2D ===


@pytest.mark.parametrize("height, width", [(1, 1), (1, 5), (4, 7), (3, 3), (6, 2)])
@pytest.mark.parametrize("with_r", [False, True])
def test_coordinates_match_numpy(height, width, with_r):
    x = random((2, height, width, 3))
    outputs = to_numpy(AddCoords2D(with_r=with_r)(x))
    assert outputs.shape == (2, height, width, 5 + with_r)
    np.testing.assert_array_equal(outputs[..., :3], x)
    expected = numpy_coordinates(height, width, with_r)
    for b in range(2):
        np.testing.assert_allclose(outputs[b, ..., 3:], expected, rtol=0, atol=1e-7)


def test_corners_are_exactly_plus_minus_one_on_a_non_square_input():
    outputs = to_numpy(AddCoords2D(with_r=True)(np.zeros((1, 5, 9, 1), "float32")))
    x, y, r = outputs[0, ..., 1], outputs[0, ..., 2], outputs[0, ..., 3]
    assert x[:, 0].tolist() == [-1] * 5 and x[:, -1].tolist() == [1] * 5
    assert y[0].tolist() == [-1] * 9 and y[-1].tolist() == [1] * 9
    assert x[2, 4] == 0 and y[2, 4] == 0 and r[2, 4] == 0
    assert r[0, 0] == np.float32(math.sqrt(2))


def test_size_one_axes_are_zero():
    outputs = to_numpy(AddCoords2D()(np.zeros((1, 1, 3, 1), "float32")))
    assert outputs[0, 0, :, 1].tolist() == [-1, 0, 1] and outputs[0, 0, :, 2].tolist() == [0] * 3


def test_coordinates_follow_dynamic_sizes():
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, AddCoords2D(with_r=True)(inputs))
    assert model.output.shape == (None, None, None, 4)
    for height, width in [(3, 8), (6, 1)]:
        outputs = model.predict(np.zeros((1, height, width, 1), "float32"), verbose=0)
        np.testing.assert_allclose(outputs[0, ..., 1:], numpy_coordinates(height, width, True),
                                   rtol=0, atol=1e-7)


def test_coordinates_pass_the_gradient_of_the_input_channels_only():
    inputs = keras.Input((4, 5, 2))
    model = keras.Model(inputs, AddCoords2D(with_r=True)(inputs))
    weights = random((1, 4, 5, 5), seed=10)
    gradient = input_gradient(model, random((1, 4, 5, 2)), weights)
    np.testing.assert_array_equal(gradient, weights[..., :2])


def test_add_coords_output_shape():
    assert AddCoords2D().compute_output_shape((None, None, None, 3)) == (None, None, None, 5)
    assert AddCoords2D(with_r=True).compute_output_shape((2, 4, 5, None)) == (2, 4, 5, None)


# === BlurPool2D ===


def test_binomial_filters_are_rows_of_pascals_triangle():
    rows = [[1], [1, 1], [1, 2, 1], [1, 3, 3, 1], [1, 4, 6, 4, 1], [1, 5, 10, 10, 5, 1],
            [1, 6, 15, 20, 15, 6, 1]]
    for size, row in enumerate(rows, start=1):
        row = np.array(row, "float64")
        np.testing.assert_allclose(binomial_filter(size), np.outer(row, row) / row.sum() ** 2,
                                   rtol=1e-15)
        assert binomial_filter(size).sum() == pytest.approx(1.0, abs=1e-15)


# (input shape, filter_size, strides, padding)
BLUR_CASES = [
    ((2, 8, 8, 3), 4, 2, "reflect"),  # the defaults
    ((1, 7, 9, 2), 4, 2, "reflect"),  # odd sizes: ceil(7 / 2) = 4
    ((1, 7, 6, 2), 3, 2, "symmetric"),
    ((1, 9, 8, 1), 5, 2, "zero"),
    ((1, 6, 7, 2), 7, 3, "reflect"),
    ((1, 5, 6, 2), 2, (2, 1), "reflect"),
    ((1, 5, 6, 1), 6, 1, "symmetric"),
    ((1, 5, 7, 2), 1, 2, "reflect"),
]


@pytest.mark.parametrize("shape, filter_size, strides, padding", BLUR_CASES)
def test_blur_pool_matches_numpy(shape, filter_size, strides, padding):
    x = random(shape, seed=11)
    layer = BlurPool2D(filter_size, strides=strides, padding=padding)
    outputs = to_numpy(layer(x))
    expected = numpy_blur_pool(x, filter_size, layer.strides, padding)
    assert outputs.shape == expected.shape
    assert layer.compute_output_shape(shape) == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)


def test_filter_size_one_is_plain_subsampling():
    x = random((1, 7, 8, 3))
    np.testing.assert_array_equal(to_numpy(BlurPool2D(1, strides=2)(x)), x[:, ::2, ::2])


def test_shape_of_zhang_s_check_and_channels_kept_apart():
    x = random((1, 128, 128, 2))
    x[..., 1] = 0.0
    outputs = to_numpy(BlurPool2D()(x))
    assert outputs.shape == (1, 64, 64, 2)
    assert not outputs[..., 1].any() and outputs[..., 0].any()


def test_constant_image_stays_constant():
    for padding in ("reflect", "symmetric"):
        outputs = to_numpy(BlurPool2D(5, padding=padding)(np.full((1, 9, 10, 2), 3.0, "float32")))
        np.testing.assert_allclose(outputs, 3.0, rtol=1e-6)


def test_blur_pool_removes_the_aliasing_of_a_one_pixel_shift():
    # Stripes 0, 1, 0, 1, ...: subsampling by 2 sees all 0 or all 1 depending on a one-pixel
    # shift; with the [1, 2, 1] blur both shifts give 0.5 (away from the border).
    stripes = np.tile(np.array([0.0, 1.0], "float32"), 8).reshape(1, 1, 16, 1)
    stripes = np.repeat(stripes, 4, axis=1)
    shifted = np.roll(stripes, 1, axis=2)
    plain = [to_numpy(BlurPool2D(1)(image))[0, 1, 1:-1, 0] for image in (stripes, shifted)]
    blurred = [to_numpy(BlurPool2D(3)(image))[0, 1, 1:-1, 0] for image in (stripes, shifted)]
    assert plain[0].tolist() == [0] * 6 and plain[1].tolist() == [1] * 6
    assert blurred[0].tolist() == [0.5] * 6 and blurred[1].tolist() == [0.5] * 6


def test_blur_pool_gradient_is_its_transpose():
    # The layer is linear: <gradient of sum(y * w), x> = sum(y(x) * w) for every x.
    # (float32: a wrong gradient would be off by far more than the 1e-5 allowed.)
    inputs = keras.Input((7, 8, 2))
    model = keras.Model(inputs, BlurPool2D(4)(inputs))
    weights = random((1, 4, 4, 2), seed=12)
    x = random((1, 7, 8, 2), seed=13)
    gradient = input_gradient(model, np.zeros_like(x), weights)
    assert np.sum(gradient * x) == pytest.approx(float(np.sum(to_numpy(model(x)) * weights)),
                                                 rel=1e-5)
    assert np.all(gradient[:, 1:-1, 1:-1] != 0)


def test_blur_pool_with_dynamic_sizes():
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, BlurPool2D(3)(inputs))
    for shape in [(1, 6, 7, 2), (2, 9, 4, 2)]:
        x = random(shape, seed=14)
        np.testing.assert_allclose(model.predict(x, verbose=0),
                                   numpy_blur_pool(x, 3, (2, 2), "reflect"),
                                   rtol=1e-5, atol=1e-6)


# === Errors ===


def test_pooling_errors():
    assert error_message(ValueError, MaxPoolingWithArgmax2D, 2, strides=1) == (
        "`MaxPoolingWithArgmax2D` supports non-overlapping windows only: `strides` must "
        "equal `pool_size`, so that every input pixel belongs to at most one window and "
        "unpooling puts it back in one place. Received: strides=1, pool_size=2. Leave "
        "strides=None."
    )
    assert error_message(ValueError, MaxPoolingWithArgmax2D, 2, padding="full") == (
        '`padding` must be one of "valid", "same". Received: padding=\'full\'.'
    )
    assert error_message(ValueError, MaxPoolingWithArgmax2D, (2, 2, 2)) == (
        "`pool_size` must be a positive integer or a tuple of 2 positive integers (rows, "
        "columns). Received: pool_size=(2, 2, 2). Pass e.g. pool_size=2 or pool_size=(2, 3)."
    )
    assert error_message(ValueError, MaxPoolingWithArgmax2D, (2, 0)) == (
        "`pool_size[1]` must be a positive integer (1 or more). Received: pool_size[1]=0. "
        "Pass pool_size[1]=1 or more."
    )
    assert error_message(TypeError, MaxPoolingWithArgmax2D, 2.0) == (
        "`pool_size` must be a positive integer (a Python int or a NumPy integer). "
        "Received: pool_size=2.0 of type float. Pass pool_size=2 (an int, not a float)."
    )
    layer = MaxPoolingWithArgmax2D(3)
    assert error_message(ValueError, layer.compute_output_shape, (None, 2, 8, 1)) == (
        "`MaxPoolingWithArgmax2D` with pool_size=(3, 3) and padding=\"valid\" needs a height "
        "of at least 3. Received: input_shape=(None, 2, 8, 1). Use a larger input or "
        "padding=\"same\"."
    )
    assert error_message(ValueError, layer, np.zeros((8, 8, 1), "float32")) == (
        "`MaxPoolingWithArgmax2D` expects a 4D input (batch, height, width, channels) in "
        "channels-last format. Received: input shape (8, 8, 1)."
    )


def test_unpooling_errors():
    pooled = keras.Input((3, 4, 2))
    indices = keras.Input((3, 4, 2), dtype="int32")
    assert error_message(ValueError, MaxUnpooling2D(2), pooled) == (
        "`MaxUnpooling2D` must be called on a list [pooled, indices] or [pooled, indices, "
        "reference]. Received: 1 input of shape (None, 3, 4, 2)."
    )
    assert error_message(ValueError, MaxUnpooling2D(2), [pooled]) == (
        "`MaxUnpooling2D` must be called on a list [pooled, indices] or [pooled, indices, "
        "reference]. Received: 1 input of shape [(None, 3, 4, 2)]."
    )
    other = keras.Input((3, 5, 2), dtype="int32")
    assert error_message(ValueError, MaxUnpooling2D(2), [pooled, other]) == (
        "`MaxUnpooling2D` needs indices of the same shape as the pooled values, both from "
        "one MaxPoolingWithArgmax2D. Received: pooled shape (None, 3, 4, 2), indices shape "
        "(None, 3, 5, 2)."
    )
    reference = keras.Input((7, 8, 1))
    layer = MaxUnpooling2D(2, output_size=(6, 8))
    assert error_message(ValueError, layer, [pooled, indices, reference]) == (
        "`MaxUnpooling2D` takes its output size either from `output_size` or from a "
        "reference tensor, not both. Received: output_size=(6, 8) and a reference of shape "
        "(None, 7, 8, 1). Remove one of them."
    )
    assert error_message(ValueError, MaxUnpooling2D(2, output_size=(8, 8)),
                         [pooled, indices]) == (
        "`MaxUnpooling2D` with pool_size=(2, 2) cannot unpool a height of 3 to 8: pooling "
        "by 2 gives 3 from a height between 5 and 7. Received: input_shape=[(None, 3, 4, 2), "
        "(None, 3, 4, 2)], output_size=(8, 8). Unpool to the size of the tensor that was "
        "pooled: call the layer on [pooled, indices, that_tensor]."
    )
    assert error_message(ValueError, MaxUnpooling2D(2), [pooled, indices,
                                                        keras.Input((6, 10, 1))]) == (
        "`MaxUnpooling2D` with pool_size=(2, 2) cannot unpool a width of 4 to 10: pooling "
        "by 2 gives 4 from a width between 7 and 9. Received: input_shape=[(None, 3, 4, 2), "
        "(None, 3, 4, 2), (None, 6, 10, 1)]. Unpool to the size of the tensor that was "
        "pooled: call the layer on [pooled, indices, that_tensor]."
    )
    assert error_message(ValueError, MaxUnpooling2D, 2, output_size=7) == (
        "`output_size` must be None or a tuple (height, width) of 2 positive integers. "
        "Received: output_size=7. Pass e.g. output_size=(361, 481)."
    )


def test_add_coords_errors():
    assert error_message(TypeError, AddCoords2D, with_r="yes") == (
        "`with_r` must be True or False. Received: with_r='yes' of type str. Pass "
        "with_r=True or with_r=False."
    )
    assert error_message(ValueError, AddCoords2D(), np.zeros((2, 3), "float32")) == (
        "`AddCoords2D` expects a 4D input (batch, height, width, channels) in channels-last "
        "format. Received: input shape (2, 3)."
    )


def test_blur_pool_errors():
    assert error_message(ValueError, BlurPool2D, 8) == (
        "`filter_size` must be between 1 and 7, the binomial filters of Zhang (2019). "
        "Received: filter_size=8. Use 4 (the default), 3 (Tri-3) or 5 (Bin-5)."
    )
    assert error_message(ValueError, BlurPool2D, 0) == (
        "`filter_size` must be a positive integer (1 or more). Received: filter_size=0. "
        "Pass filter_size=1 or more."
    )
    assert error_message(ValueError, BlurPool2D, padding="replicate") == (
        '`padding` must be one of "reflect", "symmetric", "zero". Received: '
        "padding='replicate'."
    )
    assert error_message(ValueError, BlurPool2D, strides=(2, 0)) == (
        "`strides[1]` must be a positive integer (1 or more). Received: strides[1]=0. "
        "Pass strides[1]=1 or more."
    )
    assert error_message(ValueError, BlurPool2D(7).compute_output_shape, (None, 8, 3, 1)) == (
        "`BlurPool2D` with filter_size=7 pads 3 pixels with padding=\"reflect\", which needs "
        "a width of at least 4. Received: input_shape=(None, 8, 3, 1). Use a larger input, "
        "a smaller filter_size or padding=\"zero\"."
    )
    assert error_message(ValueError, BlurPool2D(6, padding="symmetric"),
                         np.zeros((1, 2, 5, 1), "float32")) == (
        "`BlurPool2D` with filter_size=6 pads 3 pixels with padding=\"symmetric\", which "
        "needs a height of at least 3. Received: input_shape=(1, 2, 5, 1). Use a larger "
        "input, a smaller filter_size or padding=\"zero\"."
    )
    assert BlurPool2D(3, padding="symmetric")(np.ones((1, 1, 1, 1), "float32")).shape == (
        1, 1, 1, 1)
    assert error_message(ValueError, BlurPool2D(), keras.Input((8, 8, None))) == (
        "`BlurPool2D` filters each channel separately, so it needs the number of channels. "
        "Received: input_shape=(None, 8, 8, None). Give the input a known last axis, e.g. "
        "keras.Input((None, None, 3))."
    )


# === Serialisation ===

LAYERS = [
    MaxPoolingWithArgmax2D((2, 3), padding="same", name="pool"),
    MaxUnpooling2D(3, output_size=(7, 8), name="unpool"),
    AddCoords2D(with_r=True, name="coords"),
    BlurPool2D(5, strides=(2, 1), padding="symmetric", name="blur"),
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: type(layer).__name__)
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


def pooling_model(input_shape):
    inputs = keras.Input(input_shape)
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    pooled, indices = MaxPoolingWithArgmax2D(2, name="pool")(features)
    decoded = keras.layers.Conv2D(4, 3, padding="same")(pooled)
    unpooled = MaxUnpooling2D(2, name="unpool")([decoded, indices, features])
    coordinates = AddCoords2D(with_r=True, name="coords")(unpooled)
    blurred = BlurPool2D(3, padding="symmetric", name="blur")(coordinates)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(blurred))


@pytest.mark.parametrize("input_shape", [(9, 11, 1), (None, None, 1)])
def test_keras_file_round_trip_gives_identical_outputs(tmp_path, input_shape):
    keras.utils.set_random_seed(0)
    model = pooling_model(input_shape)
    x = random((2, 9, 11, 1), seed=15)
    model.save(tmp_path / "pooling.keras")
    loaded = keras.models.load_model(tmp_path / "pooling.keras")
    for name, layer_class in [("pool", MaxPoolingWithArgmax2D), ("unpool", MaxUnpooling2D),
                              ("coords", AddCoords2D), ("blur", BlurPool2D)]:
        assert type(loaded.get_layer(name)) is layer_class
    expected = model.predict(x, verbose=0)
    assert expected.shape == (2, 5, 6, 2)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def test_keras_file_round_trip_of_explicit_output_size(tmp_path):
    inputs = keras.Input((7, 8, 2))
    pooled, indices = MaxPoolingWithArgmax2D((2, 3), padding="same")(inputs)
    model = keras.Model(inputs, MaxUnpooling2D((2, 3), output_size=(7, 8))([pooled, indices]))
    model.save(tmp_path / "unpool.keras")
    loaded = keras.models.load_model(tmp_path / "unpool.keras")
    x = random((1, 7, 8, 2), seed=16)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    expected = numpy_unpool(*numpy_pool_with_argmax(x, (2, 3), "same"), (2, 3), (7, 8))
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
