"""Bundled datasets: shapes, split, determinism and the documented derivations."""

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from fcnkit import datasets


@pytest.fixture(scope="module")
def nuclei():
    return datasets.load("nuclei")


@pytest.fixture(scope="module")
def text():
    return datasets.load("text_deblur")


def test_nuclei_shapes_types_and_values(nuclei):
    (x_train, y_train), (x_test, y_test) = nuclei
    assert x_train.shape == (1, 384, 512, 3) and x_test.shape == (1, 128, 512, 3)
    assert y_train.shape == (1, 384, 512, 1) and y_test.shape == (1, 128, 512, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.uint8
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(np.concatenate([y_train.ravel(), y_test.ravel()]))) == {0, 1}


def test_nuclei_train_and_test_are_disjoint_regions_of_ihc(nuclei):
    (x_train, _), (x_test, _) = nuclei
    whole = np.concatenate([x_train[0], x_test[0]], axis=0)
    np.testing.assert_array_equal(whole, data.immunohistochemistry() / np.float32(255))


def test_nuclei_masks_are_the_documented_derivation(nuclei):
    (_, y_train), (_, y_test) = nuclei
    mask = datasets.nuclei_mask(data.immunohistochemistry())
    np.testing.assert_array_equal(np.concatenate([y_train[0, ..., 0], y_test[0, ..., 0]]), mask)
    # The 80th-percentile threshold, then the opening, leave fewer than 20 %
    # of the pixels as nuclei (19 %); both regions hold a fair share of them.
    assert 0.15 < mask.mean() < 0.2
    for part in (y_train, y_test):
        assert 0.05 < part.mean() < 0.3


def test_text_deblur_pairs(text):
    (x_train, y_train), (x_test, y_test) = text
    np.testing.assert_array_equal(y_train[0, ..., 0], data.page() / np.float32(255))
    np.testing.assert_array_equal(y_test[0, ..., 0], data.text() / np.float32(255))
    assert x_train.shape == y_train.shape == (1, 191, 384, 1)
    assert x_test.shape == y_test.shape == (1, 172, 448, 1)
    for blurred, sharp in ((x_train, y_train), (x_test, y_test)):
        residual = blurred - ndimage.gaussian_filter(sharp[0, ..., 0].astype("float64"),
                                                     datasets.TEXT_BLUR_SIGMA)[None, ..., None]
        # What is left after removing the blur is the noise (clipping aside).
        assert abs(residual.std() - datasets.TEXT_NOISE_STD) < 0.003


def test_blur_without_noise_is_a_gaussian_filter():
    image = np.random.default_rng(0).random((20, 30)).astype("float32")
    expected = np.clip(ndimage.gaussian_filter(image.astype("float64"), 1.5), 0, 1)
    np.testing.assert_allclose(datasets.blur_and_noise(image, 1.5, 0.0), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["nuclei", "text_deblur"])
def test_loading_is_deterministic(name):
    first, second = datasets.load(name), datasets.load(name)
    for (a_x, a_y), (b_x, b_y) in zip(first, second):
        np.testing.assert_array_equal(a_x, b_x)
        np.testing.assert_array_equal(a_y, b_y)


def test_unknown_dataset():
    with pytest.raises(ValueError) as error:
        datasets.load("nucleus")
    assert str(error.value) == (
        '`name` must be one of "nuclei", "text_deblur". Received: name=\'nucleus\'. '
        'Did you mean "nuclei"?'
    )


@pytest.mark.parametrize("name", ["nuclei", "text_deblur"])
def test_descriptions_give_the_shapes_without_loading(name, request):
    (x_train, y_train), (x_test, y_test) = request.getfixturevalue(
        "nuclei" if name == "nuclei" else "text")
    info = datasets.DATASETS[name]
    assert info.name == name and info.kind in datasets.KINDS
    assert x_train.shape == info.train_shape and x_test.shape == info.test_shape
    assert y_train.shape[-1] == y_test.shape[-1] == info.target_channels
    # Segmentation targets are binary masks; restoration targets are images.
    binary = set(np.unique(y_test).tolist()) <= {0, 1}
    assert binary is (info.kind == "segmentation")


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match='`kind` must be one of "segmentation", "restoration"'):
        datasets.DatasetInfo(name="x", task="x", kind="counting", source="x", split="x",
                             train_shape=(1, 8, 8, 1), test_shape=(1, 8, 8, 1),
                             target_channels=1, builder=lambda: None)


def test_noise_seed_is_checked():
    with pytest.raises(TypeError, match="`seed` must be an integer >= 0"):
        datasets.blur_and_noise(np.zeros((4, 4)), seed=1.5)
    np.testing.assert_array_equal(datasets.blur_and_noise(np.zeros((4, 4)), seed=np.int64(3)),
                                  datasets.blur_and_noise(np.zeros((4, 4)), seed=3))
