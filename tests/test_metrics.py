"""Dice and Jaccard on sets: hand-computed values and the lecture's properties."""

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
