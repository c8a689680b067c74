"""CropToMatch2D: NumPy reference, shapes, errors and serialisation."""

import keras
import numpy as np
import pytest

from fcnkit.layers import CropToMatch2D


def numpy_center_crop(features, height, width):
    top = (features.shape[1] - height) // 2
    left = (features.shape[2] - width) // 2
    return features[:, top : top + height, left : left + width]


# shape: (features (h, w), reference (h, w))
CASES = [((64, 64), (56, 56)), ((7, 9), (4, 4)), ((5, 5), (5, 5)), ((6, 8), (1, 3))]


@pytest.mark.parametrize("features_size, reference_size", CASES)
def test_matches_numpy_center_crop(features_size, reference_size):
    features = np.random.default_rng(0).normal(size=(2, *features_size, 3)).astype("float32")
    reference = np.zeros((2, *reference_size, 5))
    result = keras.ops.convert_to_numpy(CropToMatch2D()([features, reference]))
    np.testing.assert_array_equal(result, numpy_center_crop(features, *reference_size))


def test_odd_difference_removes_the_extra_row_at_the_bottom():
    features = np.arange(9, dtype="float32").reshape(1, 3, 3, 1)
    result = CropToMatch2D()([features, np.zeros((1, 2, 2, 1))])
    assert keras.ops.convert_to_numpy(result)[0, :, :, 0].tolist() == [[0, 1], [3, 4]]


def test_compute_output_shape_takes_channels_from_features():
    layer = CropToMatch2D()
    assert layer.compute_output_shape([(None, 64, 64, 128), (None, 56, 56, 64)]) == (
        None, 56, 56, 128,
    )


def test_larger_reference_is_refused():
    with pytest.raises(ValueError) as error:
        CropToMatch2D().compute_output_shape([(None, 4, 4, 1), (None, 6, 4, 1)])
    assert str(error.value) == (
        "`CropToMatch2D` can only make feature maps smaller: the reference height "
        "must be at most the features height. Received: input_shape="
        "[(None, 4, 4, 1), (None, 6, 4, 1)]"
    )


def test_saved_model_round_trip(tmp_path):
    features = keras.Input((10, 10, 2))
    reference = keras.Input((6, 6, 1))
    model = keras.Model([features, reference], CropToMatch2D(name="crop")([features, reference]))
    data = [np.random.default_rng(1).normal(size=(1, 10, 10, 2)), np.zeros((1, 6, 6, 1))]
    model.save(tmp_path / "crop.keras")
    loaded = keras.models.load_model(tmp_path / "crop.keras")
    assert isinstance(loaded.get_layer("crop"), CropToMatch2D)
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))
    config = CropToMatch2D(name="c").get_config()
    assert CropToMatch2D.from_config(config).get_config() == config
