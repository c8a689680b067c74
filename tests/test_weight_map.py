"""fcnkit.weight_map: the U-Net border weights on hand-made layouts, against a direct
NumPy computation (every pixel against every pixel of every cell), by hand, and errors."""

import math

import numpy as np
import pytest

from fcnkit.weight_map import nearest_cell_distances, unet_weight_map


def direct_weight_map(labels, w0, sigma, class_weights, apply_border_to):
    """The formula computed pixel by pixel: distances to every pixel of every cell."""
    rows, cols = np.indices(labels.shape)
    cells = [k for k in np.unique(labels) if k > 0]
    background = int(np.count_nonzero(labels == 0))
    foreground = labels.size - background
    if class_weights == "balanced":
        present = int(background > 0) + int(foreground > 0)
        weights_of = {False: labels.size / (present * background) if background else 0.0,
                      True: labels.size / (present * foreground) if foreground else 0.0}
    elif class_weights is None:
        weights_of = {False: 1.0, True: 1.0}
    else:
        weights_of = {False: class_weights[0], True: class_weights[1]}
    result = np.zeros(labels.shape)
    for r in range(labels.shape[0]):
        for c in range(labels.shape[1]):
            distances = sorted(
                np.sqrt((rows[labels == k] - r) ** 2 + (cols[labels == k] - c) ** 2).min()
                for k in cells
            )
            border = 0.0
            if len(distances) >= 2 and (apply_border_to == "all" or labels[r, c] == 0):
                border = w0 * math.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2))
            result[r, c] = weights_of[bool(labels[r, c] > 0)] + border
    return result


def two_cells(gap=3, height=10, width=18):
    """Two 4×5 rectangles side by side, `gap` background columns between them."""
    labels = np.zeros((height, width), "int32")
    labels[3:7, 2:7] = 1
    labels[3:7, 7 + gap:12 + gap] = 2
    return labels


def touching_diagonally():
    labels = np.zeros((9, 9), "int64")
    labels[1:4, 1:4] = 1
    labels[4:8, 4:8] = 2
    return labels


def three_cells():
    labels = np.zeros((11, 13), "uint16")
    labels[1:4, 1:4] = 5  # labels need not be 1, 2, 3
    labels[1:4, 8:12] = 9
    labels[7:10, 4:8] = 2
    return labels


LAYOUTS = {
    "gap of 3": two_cells(3),
    "gap of 1": two_cells(1),
    "gap of 8": two_cells(8),
    "touching diagonally": touching_diagonally(),
    "three cells": three_cells(),
}

SETTINGS = [
    (10.0, 5.0, "balanced", "background"),
    (10.0, 5.0, "balanced", "all"),
    (5.0, 2.0, None, "background"),
    (1.0, 3.0, (0.5, 2.0), "all"),
]


@pytest.mark.parametrize("w0, sigma, class_weights, apply_border_to", SETTINGS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_the_direct_computation(layout, w0, sigma, class_weights, apply_border_to):
    labels = LAYOUTS[layout]
    result = unet_weight_map(labels, w0=w0, sigma=sigma, class_weights=class_weights,
                             apply_border_to=apply_border_to)
    assert result.dtype == np.float32 and result.shape == labels.shape
    expected = direct_weight_map(labels, w0, sigma, class_weights, apply_border_to)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_by_hand_in_the_gap():
    """Gap of 3 columns, class weights 1: on row 4, column 7 + i of the gap is
    i + 1 from cell 1 and 3 - i from cell 2, so d1 + d2 = 4 everywhere in it."""
    labels = two_cells(3)
    weights = unet_weight_map(labels, class_weights=None)
    np.testing.assert_allclose(weights[4, 7:10], 1 + 10 * math.exp(-16 / 50), rtol=1e-6)
    # Inside the cells nothing is added (background only, the default) ...
    np.testing.assert_array_equal(weights[labels > 0], 1.0)
    # ... and with "all", a cell pixel next to the gap has d1 = 0, d2 = 4.
    everywhere = unet_weight_map(labels, class_weights=None, apply_border_to="all")
    assert everywhere[4, 6] == pytest.approx(1 + 10 * math.exp(-16 / 50), rel=1e-6)
    # The narrower the gap, the larger the weight: d1 + d2 = gap + 1.
    peaks = [unet_weight_map(two_cells(gap), class_weights=None)[4, 7] for gap in (1, 3, 8)]
    assert peaks == pytest.approx([1 + 10 * math.exp(-(gap + 1) ** 2 / 50)
                                   for gap in (1, 3, 8)], rel=1e-6)


def test_nearest_and_second_nearest_distances():
    d1, d2 = nearest_cell_distances(three_cells())
    # Pixel (5, 6): cell 2 at (7, 6) is 2 away; cell 9 at (3, 8) is sqrt(8); cell 5 at
    # (3, 3) is sqrt(13): the second-nearest is cell 9, not the farthest.
    assert d1[5, 6] == pytest.approx(2.0) and d2[5, 6] == pytest.approx(math.sqrt(8))


def test_fewer_than_two_cells_have_no_border_term():
    one = np.zeros((6, 6), "int32")
    one[2:4, 2:4] = 1
    d1, d2 = nearest_cell_distances(one)
    assert np.isinf(d2).all() and d1[2, 2] == 0
    # Balanced: 32 background pixels and 4 cell pixels, equal total weight.
    weights = unet_weight_map(one)
    np.testing.assert_allclose(weights[one == 0], 36 / (2 * 32), rtol=1e-6)
    np.testing.assert_allclose(weights[one == 1], 36 / (2 * 4), rtol=1e-6)
    assert weights.mean() == pytest.approx(1.0, rel=1e-6)
    # No cell at all: one class present, weight 1 everywhere.
    np.testing.assert_array_equal(unet_weight_map(np.zeros((4, 5), "int32")), 1.0)


def test_a_mirrored_layout_gives_the_mirrored_map():
    labels = three_cells()
    np.testing.assert_allclose(unet_weight_map(labels[:, ::-1]),
                               unet_weight_map(labels)[:, ::-1], rtol=1e-6)


def error_text(error_type, *args, **kwargs):
    with pytest.raises(error_type) as error:
        unet_weight_map(*args, **kwargs)
    return str(error.value)


def test_errors():
    labels = two_cells()
    assert error_text(TypeError, labels > 0) == (
        "`instance_labels` must be an integer array: 0 for the background, k > 0 for the "
        "pixels of cell k. Received: an array of dtype bool. Label a binary mask into cells "
        "with skimage.measure.label(mask)."
    )
    assert error_text(TypeError, labels.astype("float32")).startswith(
        "`instance_labels` must be an integer array: 0 for the background, k > 0 for the "
        "pixels of cell k. Received: an array of dtype float32.")
    assert error_text(ValueError, labels[None, ..., None]) == (
        "`instance_labels` must be one 2D image (height, width). Received: "
        "instance_labels.shape=(1, 10, 18, 1). Pass one image at a time, e.g. "
        "labels[0, ..., 0] for the first of a batch (count, height, width, 1)."
    )
    assert error_text(ValueError, labels - 1) == (
        "`instance_labels` must be 0 (background) or positive (cells). Received: a smallest "
        "label of -1. Relabel the cells 1, 2, ..."
    )
    assert error_text(ValueError, labels, sigma=0) == (
        "`sigma` must be a finite number > 0. Received: sigma=0. Pass a positive number "
        "such as sigma=0.001."
    )
    assert error_text(ValueError, labels, w0=-1).startswith(
        "`w0` must be a finite number >= 0. Received: w0=-1.")
    assert error_text(ValueError, labels, class_weights="balance") == (
        '`class_weights` must be one of "balanced". Received: class_weights=\'balance\'. '
        'Did you mean "balanced"?'
    )
    assert error_text(ValueError, labels, class_weights=(1, 2, 3)) == (
        '`class_weights` must be "balanced", None (w_c = 1) or a pair of numbers '
        "(background, cell). Received: class_weights=(1, 2, 3). Pass e.g. "
        'class_weights="balanced" or class_weights=(1.0, 2.0).'
    )
    assert error_text(ValueError, labels, apply_border_to="cells") == (
        '`apply_border_to` must be one of "background", "all". Received: '
        "apply_border_to='cells'."
    )
