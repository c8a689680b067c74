"""Scores of image-to-image models: Dice and Jaccard on sets, PSNR.

Dice and Jaccard (binary segmentation) are written with `keras.ops`; PSNR
(restoration) is computed in float64 with NumPy. All take NumPy arrays or
tensors of any backend and return a Python float.

Lesson: ``01_image_to_image`` (the demo's held-out scores).
"""

import keras
import numpy as np
from keras import ops

from fcnkit._validation import check_positive_float


def _binary_sets(y_true, y_pred, threshold):
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(
            "`y_true` and `y_pred` must have the same shape. Received: "
            f"y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )
    truth = ops.cast(ops.greater_equal(ops.cast(y_true, "float32"), 0.5), "float32")
    prediction = ops.cast(
        ops.greater_equal(ops.cast(y_pred, "float32"), threshold), "float32"
    )
    return truth, prediction


def _counts(y_true, y_pred, threshold):
    truth, prediction = _binary_sets(y_true, y_pred, threshold)
    intersection = ops.sum(truth * prediction)
    return intersection, ops.sum(truth), ops.sum(prediction)


def dice_coefficient(y_true, y_pred, threshold=0.5):
    """Dice coefficient of two binary masks: D(A, B) = 2|A ∩ B| / (|A| + |B|).

    All pixels of the batch form one set (a micro average). Predictions are
    turned into a set with `y_pred >= threshold`; the truth with `>= 0.5`.
    When both sets are empty the masks agree perfectly and the result is 1.

    Args:
        y_true: binary mask (any shape).
        y_pred: probabilities or binary mask, same shape as `y_true`.
        threshold: float, probability at which a pixel belongs to the object.

    Returns:
        A float in [0, 1].

    Example:

    >>> truth = np.array([1, 1, 0, 0])
    >>> dice_coefficient(truth, np.array([0.9, 0.2, 0.8, 0.1]))
    0.5

    Reference:
        Dice, Measures of the amount of ecologic association between species,
        Ecology 1945.
    """
    intersection, size_true, size_pred = _counts(y_true, y_pred, threshold)
    total = size_true + size_pred
    value = ops.where(total > 0, 2.0 * intersection / ops.maximum(total, 1.0), 1.0)
    return float(keras.ops.convert_to_numpy(value))


def jaccard_index(y_true, y_pred, threshold=0.5):
    """Jaccard index (IoU) of two binary masks: J(A, B) = |A ∩ B| / |A ∪ B|.

    Same conventions as `dice_coefficient`; J = D / (2 - D).

    Example:

    >>> truth = np.array([1, 1, 0, 0])
    >>> round(jaccard_index(truth, np.array([0.9, 0.2, 0.8, 0.1])), 4)
    0.3333

    Reference:
        Jaccard, Étude comparative de la distribution florale dans une portion
        des Alpes et du Jura, 1901.
    """
    intersection, size_true, size_pred = _counts(y_true, y_pred, threshold)
    union = size_true + size_pred - intersection
    value = ops.where(union > 0, intersection / ops.maximum(union, 1.0), 1.0)
    return float(keras.ops.convert_to_numpy(value))


def psnr(y_true, y_pred, data_range=1.0):
    """Peak signal-to-noise ratio in dB: PSNR = 10 log10(r² / MSE).

    The mean squared error is taken over every value of the arrays (a micro
    average over a batch), in float64. Equal arrays have an infinite PSNR.

    Args:
        y_true: reference image(s), any shape.
        y_pred: image(s) to score, exactly the shape of `y_true` (no
            broadcasting: a missing axis is a mistake, not a shortcut).
        data_range: float > 0, `r`, the distance between the smallest and the
            largest possible value (1 for images in [0, 1], 255 for uint8).

    Returns:
        A Python float in dB (`inf` when the arrays are equal).

    Raises:
        ValueError: if the shapes differ, the arrays are empty, or
            `data_range` is not positive.

    Example:

    >>> psnr(np.zeros(4), np.full(4, 0.1))  # MSE 0.01, range 1: 10 log10(100)
    20.0
    >>> psnr(np.zeros((2, 2)), np.zeros(2))
    Traceback (most recent call last):
    ...
    ValueError: `y_true` and `y_pred` must have the same shape ... Received: y_true.shape=(2, 2), y_pred.shape=(2,). ...
    """  # noqa: E501
    data_range = check_positive_float(data_range, "data_range")
    y_true = np.asarray(keras.ops.convert_to_numpy(y_true), dtype="float64")
    y_pred = np.asarray(keras.ops.convert_to_numpy(y_pred), dtype="float64")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            "`y_true` and `y_pred` must have the same shape (PSNR does not broadcast). "
            f"Received: y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}. "
            "Compare the same images with the same channels."
        )
    if y_true.size == 0:
        raise ValueError(
            f"`y_true` and `y_pred` must not be empty. Received: y_true.shape={y_true.shape}. "
            "Pass at least one value."
        )
    mse = float(np.mean((y_true - y_pred) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))
