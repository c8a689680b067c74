"""Overlap measures for binary segmentation: Dice and Jaccard on sets.

Written with `keras.ops`, so they take NumPy arrays or tensors of any backend.

Lesson: ``01_image_to_image`` (the demo's held-out scores).
"""

import keras
from keras import ops


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
