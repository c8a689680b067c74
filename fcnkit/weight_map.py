"""The U-Net border weight map: make the thin gaps between touching cells count.

Ronneberger et al. (2015) weight each pixel's cross-entropy by

    w(x) = w_c(x) + w0 · exp(-(d1(x) + d2(x))² / (2σ²))

where w_c balances the class frequencies, and d1 and d2 are the distances
from x to the nearest and the second-nearest cell. Between two cells a few
pixels apart d1 + d2 is small and the weight reaches w_c + w0 (w0 = 10,
σ ≈ 5 pixels in the paper), so the network pays for merging the cells.

Conventions fixed here (the paper leaves them open):

- Distances are Euclidean, from pixel centre to pixel centre: d_k(x) is the
  distance from x to the nearest pixel of cell k (`scipy.ndimage.
  distance_transform_edt` of `labels != k`), so 1 for a background pixel next
  to the cell, and 0 inside it. d1 and d2 are the two smallest d_k(x) over the
  cells k; with fewer than two cells d2 is infinite and the border term 0.
- `apply_border_to="background"` (the default, as most implementations do):
  the border term is added on background pixels only, where the gaps are.
  `"all"` applies the formula to every pixel, as the paper writes it: inside
  a cell d1 = 0 and d2 is the distance to the nearest other cell.
- `class_weights="balanced"`: w_c = N / (n_classes · N_c), N pixels of which
  N_c in x's class (background or cell), n_classes the number of those two
  present (scikit-learn's "balanced"): the weighted classes have equal total
  weight and the mean of w_c is 1. None: w_c = 1. A pair `(background,
  cell)`: those values.

Lesson: ``06_segmentation`` (U-Net details: the weighted cross-entropy).

Reference:
    Ronneberger, Fischer, Brox, U-Net: Convolutional Networks for Biomedical
    Image Segmentation, MICCAI 2015, section 3 and Fig. 3.
"""

from __future__ import annotations

import numbers

import numpy as np

from fcnkit._validation import check_non_negative_float, check_positive_float, validate_option

APPLY_BORDER_TO = ("background", "all")


def _check_labels(instance_labels) -> np.ndarray:
    labels = np.asarray(instance_labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            "`instance_labels` must be an integer array: 0 for the background, k > 0 for "
            f"the pixels of cell k. Received: an array of dtype {labels.dtype}. Label a "
            "binary mask into cells with skimage.measure.label(mask)."
        )
    if labels.ndim != 2:
        raise ValueError(
            "`instance_labels` must be one 2D image (height, width). Received: "
            f"instance_labels.shape={labels.shape}. Pass one image at a time, e.g. "
            "labels[0, ..., 0] for the first of a batch (count, height, width, 1)."
        )
    if labels.size and labels.min() < 0:
        raise ValueError(
            "`instance_labels` must be 0 (background) or positive (cells). Received: "
            f"a smallest label of {labels.min()}. Relabel the cells 1, 2, ..."
        )
    return labels


def nearest_cell_distances(instance_labels):
    """d1 and d2: the distances from every pixel to the nearest and second-nearest cell.

    d_k(x) is the Euclidean distance from x to the nearest pixel of cell k (0
    inside it); d1 and d2 are the smallest and second-smallest over k. Where
    there are fewer than two cells, d2 (and with none, d1) is `inf`.

    Args:
        instance_labels: integer array `(height, width)`, 0 for the background
            and k > 0 for cell k.

    Returns:
        `(d1, d2)`, two float64 arrays `(height, width)`.

    Raises:
        TypeError: for labels that are not integers (a bool mask, floats).
        ValueError: for labels that are not 2D or are negative.

    Example:

    >>> labels = np.array([[1, 0, 0, 2]])
    >>> d1, d2 = nearest_cell_distances(labels)
    >>> d1.tolist(), d2.tolist()
    ([[0.0, 1.0, 1.0, 0.0]], [[3.0, 2.0, 2.0, 3.0]])
    """
    from scipy import ndimage

    labels = _check_labels(instance_labels)
    nearest = np.full(labels.shape, np.inf)
    second = np.full(labels.shape, np.inf)
    for cell in np.unique(labels[labels > 0]):
        distance = ndimage.distance_transform_edt(labels != cell)
        second = np.minimum(second, np.maximum(nearest, distance))
        nearest = np.minimum(nearest, distance)
    return nearest, second


def _class_weight_values(labels, class_weights) -> tuple[float, float]:
    """(w_background, w_cell)."""
    if class_weights is None:
        return 1.0, 1.0
    if isinstance(class_weights, str):
        validate_option(class_weights, "class_weights", ("balanced",))
        cells = int(np.count_nonzero(labels))
        background = labels.size - cells
        present = int(background > 0) + int(cells > 0)
        return tuple(
            labels.size / (present * count) if count else 0.0 for count in (background, cells)
        )
    if (isinstance(class_weights, (tuple, list)) and len(class_weights) == 2
            and all(isinstance(value, numbers.Real) and not isinstance(value, bool)
                    for value in class_weights)):
        return tuple(check_non_negative_float(value, f"class_weights[{index}]")
                     for index, value in enumerate(class_weights))
    raise ValueError(
        '`class_weights` must be "balanced", None (w_c = 1) or a pair of numbers '
        f"(background, cell). Received: class_weights={class_weights!r}. Pass e.g. "
        'class_weights="balanced" or class_weights=(1.0, 2.0).'
    )


def unet_weight_map(instance_labels, w0=10.0, sigma=5.0, class_weights="balanced",
                    apply_border_to="background"):
    """The U-Net weight map w = w_c + w0 · exp(-(d1 + d2)² / (2σ²)) of one image.

    See the module docstring for the distances, the class weights and where
    the border term applies. Give the map to the loss as the per-pixel
    `sample_weight` of `fcnkit.losses.WeightedBinaryCrossentropy` (or
    `WeightedCategoricalCrossentropy`). The distances are measured on the whole
    image: compute the map before cropping, then crop it with the image
    (`fcnkit.training.crop_dataset(..., weight_maps=...)` does).

    Args:
        instance_labels: integer array `(height, width)`: 0 for the background,
            k > 0 for the pixels of cell k (`skimage.measure.label(mask)` turns
            a binary mask into one; touching cells then merge into one).
        w0: number >= 0, the largest border weight. Defaults to 10.
        sigma: number > 0, the width σ of the border term in pixels.
            Defaults to 5.
        class_weights: `"balanced"` (the default), None, or `(background, cell)`.
        apply_border_to: `"background"` (the default) or `"all"` pixels.

    Returns:
        A float32 array `(height, width)`.

    Raises:
        TypeError: for labels that are not integers, or a `w0`/`sigma` that is
            not a number.
        ValueError: for labels that are not 2D or are negative, a negative
            `w0`, a `sigma` <= 0, or an unknown option.

    Example:

    >>> labels = np.zeros((1, 7), int); labels[0, :2] = 1; labels[0, 5:] = 2
    >>> weights = unet_weight_map(labels, w0=10, sigma=5, class_weights=None)
    >>> np.round(weights, 3).tolist()  # the gap: d1 + d2 = 4, so 1 + 10 exp(-16/50)
    [[1.0, 1.0, 8.261, 8.261, 8.261, 1.0, 1.0]]

    Reference:
        Ronneberger, Fischer, Brox, U-Net, MICCAI 2015. Lesson ``06_segmentation``.
    """
    labels = _check_labels(instance_labels)
    w0 = check_non_negative_float(w0, "w0")
    sigma = check_positive_float(sigma, "sigma")
    apply_border_to = validate_option(apply_border_to, "apply_border_to", APPLY_BORDER_TO)
    background_weight, cell_weight = _class_weight_values(labels, class_weights)

    weights = np.where(labels > 0, cell_weight, background_weight)
    nearest, second = nearest_cell_distances(labels)
    with np.errstate(invalid="ignore"):  # inf - inf never happens; inf² is fine
        border = w0 * np.exp(-((nearest + second) ** 2) / (2.0 * sigma**2))
    if apply_border_to == "background":
        border = np.where(labels == 0, border, 0.0)
    return (weights + border).astype("float32")
