"""Dice and Jaccard on sets (hand-computed values, the lecture's properties) and PSNR."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fcnkit import metrics

# (truth, prediction, dice, jaccard), computed by hand.
CASES = [
    ([1, 1, 0, 0], [1, 1, 0, 0], 1.0, 1.0),  # A = B
    ([1, 1, 0, 0], [0, 0, 1, 1], 0.0, 0.0),  # A ∩ B = ∅
    ([1, 1, 0, 0], [1, 0, 1, 0], 0.5, 1 / 3),  # |A∩B| = 1, |A| = |B| = 2
    ([1, 1, 1, 0], [1, 0, 0, 0], 0.5, 1 / 3),  # 2·1/(3+1); 1/3
    ([1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 1], 8 / 10, 4 / 6),
    ([0, 0], [0, 0], 1.0, 1.0),  # both empty: perfect agreement
]


@pytest.mark.parametrize("truth, prediction, dice, jaccard", CASES)
def test_hand_computed(truth, prediction, dice, jaccard):
    truth, prediction = np.array(truth), np.array(prediction, dtype="float32")
    assert metrics.dice_coefficient(truth, prediction) == pytest.approx(dice, abs=1e-6)
    assert metrics.jaccard_index(truth, prediction) == pytest.approx(jaccard, abs=1e-6)


def test_threshold_turns_probabilities_into_a_set():
    truth = np.array([1, 1, 0])
    probabilities = np.array([0.7, 0.4, 0.2])
    assert metrics.dice_coefficient(truth, probabilities) == pytest.approx(2 / 3)
    assert metrics.dice_coefficient(truth, probabilities, threshold=0.3) == pytest.approx(1.0)


masks = hnp.arrays(np.uint8, (3, 7), elements=st.integers(0, 1))


@given(masks, masks)
def test_lecture_properties(truth, prediction):
    """0 ≤ J ≤ D ≤ 1 and J = D / (2 − D) for any two sets."""
    dice = metrics.dice_coefficient(truth, prediction)
    jaccard = metrics.jaccard_index(truth, prediction)
    assert 0.0 <= jaccard <= dice + 1e-7 <= 1.0 + 1e-7
    assert jaccard == pytest.approx(dice / (2 - dice), abs=1e-6)


def test_shape_mismatch():
    with pytest.raises(ValueError) as error:
        metrics.dice_coefficient(np.zeros((2, 3)), np.zeros((3, 2)))
    assert str(error.value) == (
        "`y_true` and `y_pred` must have the same shape. "
        "Received: y_true.shape=(2, 3), y_pred.shape=(3, 2)"
    )


# -------------------------------------------------------------------- PSNR

# (target, prediction, data_range, dB), by hand: 10 log10(r² / MSE).
PSNR_CASES = [
    (np.zeros(4), np.full(4, 0.1), 1.0, 20.0),  # MSE 0.01
    (np.zeros(2), np.array([0.0, 0.2]), 1.0, 10 * np.log10(50)),  # MSE (0 + 0.04) / 2
    (np.zeros((2, 2)), np.full((2, 2), 2.55), 255, 40.0),  # uint8 range: 255² / 2.55²
    (np.ones(3), np.ones(3) * 0.9, 0.5, 10 * np.log10(0.25 / 0.01)),
]


@pytest.mark.parametrize("target, prediction, data_range, expected", PSNR_CASES)
def test_psnr_by_hand(target, prediction, data_range, expected):
    value = metrics.psnr(target, prediction, data_range)
    assert type(value) is float
    assert value == pytest.approx(expected, abs=1e-9)


def test_psnr_of_equal_images_is_infinite():
    assert metrics.psnr(np.ones((3, 3)), np.ones((3, 3))) == float("inf")


def test_psnr_matches_numpy_and_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(0)
    target = rng.random((2, 17, 9, 3)).astype("float32")
    prediction = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1).astype("float32")
    mse = np.mean((target.astype("float64") - prediction.astype("float64")) ** 2)
    value = metrics.psnr(target, prediction)
    assert value == pytest.approx(10 * np.log10(1 / mse), abs=1e-9)
    # scikit-image sums in float32 for float32 inputs: agreement to 1e-6 dB.
    assert value == pytest.approx(
        peak_signal_noise_ratio(target, prediction, data_range=1.0), abs=1e-6)
    # Keras tensors give the same value.
    assert metrics.psnr(keras.ops.convert_to_tensor(target),
                        keras.ops.convert_to_tensor(prediction)) == pytest.approx(value)


@pytest.mark.parametrize("target_shape, prediction_shape",
                         [((2, 2), (2,)), ((1, 4), (4,)), ((4, 4, 1), (4, 4))])
def test_psnr_never_broadcasts(target_shape, prediction_shape):
    with pytest.raises(ValueError) as error:
        metrics.psnr(np.zeros(target_shape), np.zeros(prediction_shape))
    assert str(error.value) == (
        "`y_true` and `y_pred` must have the same shape (PSNR does not broadcast). "
        f"Received: y_true.shape={target_shape}, y_pred.shape={prediction_shape}. "
        "Compare the same images with the same channels."
    )


def test_psnr_bad_range_and_empty_arrays():
    with pytest.raises(ValueError) as error:
        metrics.psnr(np.zeros(2), np.ones(2), data_range=0)
    assert str(error.value) == (
        "`data_range` must be a finite number > 0. Received: data_range=0. "
        "Pass a positive number such as data_range=0.001."
    )
    with pytest.raises(TypeError):
        metrics.psnr(np.zeros(2), np.ones(2), data_range=True)
    with pytest.raises(ValueError, match="must not be empty"):
        metrics.psnr(np.zeros(0), np.zeros(0))
