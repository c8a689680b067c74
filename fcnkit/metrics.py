"""Scores of image-to-image models: Dice and Jaccard on sets and soft, PSNR.

The functions `dice_coefficient` and `jaccard_index` score two binary masks
as sets (every pixel of the batch in one set) and `psnr` scores restored
images; they take NumPy arrays or tensors of any backend and return a Python
float. Dice and Jaccard are written with `keras.ops`; PSNR is computed in
float64 with NumPy.

`DiceCoefficient` and `JaccardIndex` are Keras metrics (`model.compile(
metrics=[...])`, with state across batches, saved in `.keras` files):

- on sets (`threshold=0.5`: a pixel belongs to the prediction when
  ŷ >= threshold, to the truth when y >= 0.5; `threshold="argmax"`: each
  pixel to the class of its largest probability) or soft (`threshold=None`:
  D = 2Σyŷ / (Σy + Σŷ), J = Σyŷ / (Σy + Σŷ - Σyŷ), the lecture's
  generalisation to [0, 1]);
- over everything seen (`per_image=False`: the sums run over every pixel of
  every batch, so the result is the score of the whole data set as one set,
  `dice_coefficient` of all of it) or per image (`per_image=True`: the mean of
  the images' scores);
- `average="micro"` (every channel in the same sums) or `"macro"` (the mean
  of the per-class scores, with `num_classes`).

Two empty sets agree perfectly: D = J = 1, in the functions and the classes
alike (a class absent from both truth and prediction scores 1 in a macro
average). A metric that has seen no image yet gives 0, as Keras's metrics do.

Lesson: ``01_image_to_image`` (the demo's held-out scores), ``07_losses``
(Dice and Jaccard, on sets and soft).
"""

import numbers

import keras
import numpy as np
from keras import ops

from fcnkit._validation import (
    check_bool,
    check_positive_float,
    check_positive_int,
    validate_option,
)

AVERAGES = ("micro", "macro")


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


# ------------------------------------------------------------ Keras metrics


def _check_threshold(threshold):
    if threshold is None or threshold == "argmax":
        return threshold
    if isinstance(threshold, numbers.Real) and not isinstance(threshold, bool):
        if 0.0 <= threshold <= 1.0:
            return float(threshold)
    raise ValueError(
        "`threshold` must be a probability in [0, 1] (sets: y_pred >= threshold), "
        '"argmax" (sets: the class of the largest probability) or None (soft scores). '
        f"Received: threshold={threshold!r}. Pass e.g. threshold=0.5."
    )


def _static_shape(tensor):
    return tuple(None if size is None else int(size) for size in tensor.shape)


class _OverlapMetric(keras.metrics.Metric):
    """State and options that `DiceCoefficient` and `JaccardIndex` share.

    With `per_image=False` the state is the sums I = Σ w·y·ŷ, G = Σ w·y and
    P = Σ w·ŷ (one per class for `"macro"`) and the number of images seen;
    with `per_image=True`, the weighted sum of the images' scores and the sum
    of their weights.
    """

    def __init__(self, threshold=0.5, per_image=False, average="micro", num_classes=None,
                 name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = _check_threshold(threshold)
        self.per_image = check_bool(per_image, "per_image")
        self.average = validate_option(average, "average", AVERAGES)
        self.num_classes = (None if num_classes is None
                            else check_positive_int(num_classes, "num_classes"))
        if self.average == "macro" and self.num_classes is None:
            raise ValueError(
                f'`{type(self).__name__}(average="macro")` keeps one score per class, so it '
                "needs their number. Received: num_classes=None. Pass num_classes=C, the "
                "number of channels of y_pred."
            )
        if self.per_image:
            self.total = self.add_variable((), "zeros", name="total")
            self.count = self.add_variable((), "zeros", name="count")
        else:
            shape = (self.num_classes,) if self.average == "macro" else ()
            self.intersection = self.add_variable(shape, "zeros", name="intersection")
            self.size_true = self.add_variable(shape, "zeros", name="size_true")
            self.size_pred = self.add_variable(shape, "zeros", name="size_pred")
            self.images = self.add_variable((), "zeros", name="images")

    def _sets(self, y_true, y_pred):
        what = f"`{type(self).__name__}`"
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), self.dtype)
        y_true = ops.cast(ops.convert_to_tensor(y_true), self.dtype)
        true_shape, pred_shape = _static_shape(y_true), _static_shape(y_pred)
        same = len(true_shape) == len(pred_shape) and all(
            a is None or b is None or a == b for a, b in zip(true_shape, pred_shape))
        if not same or len(pred_shape) < 3:
            raise ValueError(
                f"{what} needs `y_true` and `y_pred` of the same shape (batch, ..., "
                f"channels). Received: y_true.shape={true_shape}, "
                f"y_pred.shape={pred_shape}. One-hot encode class labels and keep the "
                "channel axis of binary masks, e.g. masks[..., None]."
            )
        channels = pred_shape[-1]
        if self.num_classes is not None and channels not in (None, self.num_classes):
            raise ValueError(
                f"{what} was made with num_classes={self.num_classes}, but y_pred has "
                f"{channels} channels. Received: y_pred.shape={pred_shape}. Pass "
                f"num_classes={channels}."
            )
        if self.threshold is None:
            return y_true, y_pred
        truth = ops.cast(ops.greater_equal(y_true, 0.5), self.dtype)
        if self.threshold == "argmax":
            if channels == 1:
                raise ValueError(
                    f'{what} with threshold="argmax" needs one channel per class; y_pred '
                    f"has one channel. Received: y_pred.shape={pred_shape}. Use "
                    "threshold=0.5 for a sigmoid output."
                )
            prediction = ops.one_hot(ops.argmax(y_pred, axis=-1), channels, dtype=self.dtype)
        else:
            prediction = ops.cast(ops.greater_equal(y_pred, self.threshold), self.dtype)
        return truth, prediction

    def _pixel_weights(self, sample_weight, rank):
        """Weights `(batch, 1, ..., 1)` or `(batch, ..., 1)` for the pixels."""
        weights = ops.cast(ops.convert_to_tensor(sample_weight), self.dtype)
        shape = _static_shape(weights)
        if len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1 and rank > 3):
            return ops.reshape(weights, (-1,) + (1,) * (rank - 1))
        if len(shape) == rank - 1:
            return ops.expand_dims(weights, -1)
        if len(shape) == rank and shape[-1] == 1:
            return weights
        raise ValueError(
            f"`{type(self).__name__}` takes one weight per image, shape (batch,), or per "
            f"pixel, shape (batch, ...) without the channels. Received: "
            f"sample_weight.shape={shape}."
        )

    def _image_weights(self, sample_weight):
        weights = ops.cast(ops.convert_to_tensor(sample_weight), self.dtype)
        shape = _static_shape(weights)
        if len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1):
            return ops.reshape(weights, (-1,))
        raise ValueError(
            f"`{type(self).__name__}(per_image=True)` averages the images' scores and "
            f"takes one weight per image, shape (batch,). Received: "
            f"sample_weight.shape={shape}. Use per_image=False to weight pixels."
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth, prediction = self._sets(y_true, y_pred)
        rank = len(prediction.shape)
        axes = list(range(1, rank - 1))
        if not self.per_image:
            axes.insert(0, 0)
        if self.average == "micro":
            axes.append(rank - 1)
        axes = tuple(axes)
        if self.per_image:
            scores = self._score(ops.sum(truth * prediction, axis=axes),
                                 ops.sum(truth, axis=axes), ops.sum(prediction, axis=axes))
            if self.average == "macro":
                scores = ops.mean(scores, axis=-1)
            weights = (ops.ones_like(scores) if sample_weight is None
                       else self._image_weights(sample_weight))
            self.total.assign_add(ops.sum(scores * weights))
            self.count.assign_add(ops.sum(weights))
            return
        if sample_weight is not None:
            weights = self._pixel_weights(sample_weight, rank)
            truth_weighted, prediction_weighted = truth * weights, prediction * weights
        else:
            truth_weighted, prediction_weighted = truth, prediction
        self.intersection.assign_add(ops.sum(truth_weighted * prediction, axis=axes))
        self.size_true.assign_add(ops.sum(truth_weighted, axis=axes))
        self.size_pred.assign_add(ops.sum(prediction_weighted, axis=axes))
        self.images.assign_add(ops.cast(ops.shape(truth)[0], self.dtype))

    def result(self):
        if self.per_image:
            return ops.divide_no_nan(self.total, self.count)
        scores = self._score(ops.convert_to_tensor(self.intersection),
                             ops.convert_to_tensor(self.size_true),
                             ops.convert_to_tensor(self.size_pred))
        score = ops.mean(scores) if self.average == "macro" else scores
        return ops.where(ops.greater(self.images, 0), score, ops.zeros_like(score))

    @staticmethod
    def _ratio(numerator, denominator, empty):
        """numerator / denominator, and 1 where both sets are empty."""
        safe = ops.where(empty, ops.ones_like(denominator), denominator)
        return ops.where(empty, ops.ones_like(numerator), numerator / safe)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold,
                "per_image": self.per_image, "average": self.average,
                "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="fcnkit")
class DiceCoefficient(_OverlapMetric):
    """Dice coefficient D = 2|A ∩ B| / (|A| + |B|) as a Keras metric, on sets or soft.

    On sets (`threshold` a number or `"argmax"`) or soft (`threshold=None`:
    D = 2Σyŷ / (Σy + Σŷ)); over everything seen or per image; micro or macro
    over the classes (see the module docstring). Two empty sets score 1.

    With `per_image=False`, `sample_weight` weights pixels (a pixel of
    weight w counts w times in |A|, |B| and |A ∩ B|): one weight per image
    `(batch,)` or a map `(batch, height, width)`, so a U-Net weight map given
    to `fit` weights the training score too. With `per_image=True` it weights
    the images in the mean, shape `(batch,)`.

    Args:
        threshold: a probability in [0, 1] (sets: ŷ >= threshold), `"argmax"`
            (sets: the most probable class) or None (soft). Defaults to 0.5.
        per_image: bool, the mean of the images' scores instead of the score of
            everything seen. Defaults to False.
        average: `"micro"` or `"macro"`. Defaults to `"micro"`.
        num_classes: int, the number of channels; needed for `"macro"`.
        name: the metric's name. Defaults to `"dice_coefficient"`.
        dtype: the dtype of the state. Defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a threshold outside [0, 1], an unknown `average`,
            `"macro"` without `num_classes`; when updated with tensors of
            different shapes, another number of channels, or weights of
            another shape.

    Example:

    >>> metric = DiceCoefficient()
    >>> truth = np.array([[1, 1, 0, 0], [1, 1, 0, 0]])[..., None]
    >>> metric.update_state(truth[:1], np.array([[0.9, 0.2, 0.8, 0.1]])[..., None])
    >>> metric.update_state(truth[1:], np.array([[0.6, 0.7, 0.1, 0.3]])[..., None])
    >>> round(float(metric.result()), 6)  # 2·3 / (4 + 4): both batches as one set
    0.75
    >>> soft = DiceCoefficient(threshold=None, per_image=True)
    >>> round(float(soft(truth, np.array([[1, 1, 0, 0], [0.5, 0.5, 0, 0]])[..., None])), 6)
    0.833333

    Reference:
        Dice, Ecology 1945. Lesson ``07_losses``.
    """

    def __init__(self, threshold=0.5, per_image=False, average="micro", num_classes=None,
                 name="dice_coefficient", dtype=None):
        super().__init__(threshold, per_image, average, num_classes, name, dtype)

    def _score(self, intersection, size_true, size_pred):
        total = size_true + size_pred
        return self._ratio(2.0 * intersection, total, ops.equal(total, 0.0))


@keras.saving.register_keras_serializable(package="fcnkit")
class JaccardIndex(_OverlapMetric):
    """Jaccard index (IoU) J = |A ∩ B| / |A ∪ B| as a Keras metric, on sets or soft.

    Soft (`threshold=None`): J = Σyŷ / (Σy + Σŷ - Σyŷ), the lecture's Jaccard
    similarity (1 - J is its j with ε = 0). Options and `sample_weight` as
    `DiceCoefficient`. On sets with `per_image=False` and one channel it is
    `keras.metrics.BinaryIoU(target_class_ids=[1])`; `threshold="argmax"`,
    `average="macro"` is `keras.metrics.OneHotMeanIoU` when every class is
    present (Keras leaves absent classes out, fcnkit counts them as 1).

    Args:
        threshold: a probability in [0, 1], `"argmax"` or None (soft).
        per_image: bool, the mean of the images' scores. Defaults to False.
        average: `"micro"` or `"macro"`. Defaults to `"micro"`.
        num_classes: int, the number of channels; needed for `"macro"`.
        name: the metric's name. Defaults to `"jaccard_index"`.
        dtype: the dtype of the state. Defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: as `DiceCoefficient`.

    Example:

    >>> truth = np.array([[1, 1, 0, 0], [1, 1, 0, 0]])[..., None]
    >>> prediction = np.array([[0.9, 0.2, 0.8, 0.1], [0.6, 0.7, 0.1, 0.3]])[..., None]
    >>> round(float(JaccardIndex()(truth, prediction)), 6)  # 3 / 5
    0.6
    >>> round(float(JaccardIndex(per_image=True)(truth, prediction)), 6)  # (1/3 + 1) / 2
    0.666667

    Reference:
        Jaccard, 1901. Lesson ``07_losses``.
    """

    def __init__(self, threshold=0.5, per_image=False, average="micro", num_classes=None,
                 name="jaccard_index", dtype=None):
        super().__init__(threshold, per_image, average, num_classes, name, dtype)

    def _score(self, intersection, size_true, size_pred):
        total = size_true + size_pred
        return self._ratio(intersection, total - intersection, ops.equal(total, 0.0))
