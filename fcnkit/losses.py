"""Segmentation losses: Dice, Jaccard (the lecture's j, j2, power Jaccard), weighted cross-entropy.

Each loss is a function `(y_true, y_pred, ...)` written with `keras.ops` and a
`keras.losses.Loss` class taking the same arguments, registered so that a
model compiled with it saves to and loads from `.keras` files.

Notation (the lecture's). `y` is the target and `ŷ` the prediction, both in
[0, 1] (probabilities: the output of a sigmoid or a softmax, not logits); the
sums run over the pixels that the reduction groups together:

    I = Σ y_i ŷ_i,    G_p = Σ y_i^p,    P_p = Σ ŷ_i^p    (p = `power`, 1 by default)

    Dice loss         1 - (2 I + s) / (G_p + P_p + s + ε)
    Jaccard loss      1 - (I + s) / (G_p + P_p - I + s + ε)

With `smooth` s = 0, the Jaccard loss with p = 1 is the lecture's j, with
p = 2 its j2, and any p >= 1 the power Jaccard loss of Duque-Arias et al.
(2021); ε (`epsilon`) keeps the denominator away from zero, as on the
slides. Their code adds s = 10 to both sides: `smooth=10`.

Which pixels a value groups (the reduction), for tensors
`(batch, height, width, channels)` (any number of spatial axes):

- `per_image=False` (the default): the whole batch at once, one value for the
  batch. This is the lecture's formula applied to the whole tensor, and
  `keras.losses.Dice()`, `keras.losses.Tversky()` and powerLosses do the same.
- `per_image=True`: each image on its own, one value per image; the class's
  `reduction` then averages them (`"sum_over_batch_size"`) or keeps them
  (`reduction=None`).
- `average="micro"` (the default): every channel (class) in the same sums.
  `average="macro"`: one value per channel, then their mean, so a small class
  counts as much as a large one (MONAI's `DiceLoss` does this).

Empty masks. Where y and ŷ are both zero everywhere in a group (nothing to
find, nothing found), the ratio is 0/0: fcnkit defines it as a perfect score,
loss 0, the convention of `fcnkit.metrics` for two empty sets, with zero
(finite) gradients. With s = 0, a group whose target is empty but whose
prediction is not has loss 1 whatever ŷ and a zero gradient (I = 0): such an
image teaches nothing, and with `per_image=True` every empty crop is one.
`smooth > 0` gives it a gradient towards ŷ = 0; the batch reduction
(the default) only meets it when the whole batch is empty.

The weighted cross-entropies multiply each pixel's cross-entropy by a weight
map `w` (the U-Net border weights of `fcnkit.weight_map`). In `Model.fit` the
map is the `sample_weight`, one weight per pixel, and the loss classes reduce
the weighted values with Keras's `reduction`: `"sum_over_batch_size"` (the
default) gives Σ w·CE / (number of pixels), `"mean_with_sample_weight"` gives
Σ w·CE / Σ w, and `"sum"` the U-Net paper's energy -Σ w log p itself.

Lesson: ``07_losses`` (the Dice, Jaccard, j and j2 slides of the lecture).

Reference:
    Duque-Arias, Velasco-Forero, Deschaud, Goulette, Serna, Decencière,
    Marcotegui, On power Jaccard losses for semantic segmentation, VISAPP 2021.
    Ronneberger, Fischer, Brox, U-Net: Convolutional Networks for Biomedical
    Image Segmentation, MICCAI 2015.
"""

from __future__ import annotations

import math
import numbers
import warnings

import keras
from keras import ops

from fcnkit._validation import check_bool, check_non_negative_float, validate_option

AVERAGES = ("micro", "macro")
# Keras's default `keras.backend.epsilon()`; a number here, so configs save it.
EPSILON = 1e-7
# Above this power, J_p can exceed 1 (the loss goes below 0), even for binary targets.
LARGEST_BOUNDED_POWER = 2.0


# ---------------------------------------------------------------- arguments


def _check_power(power) -> float:
    if not isinstance(power, numbers.Real) or isinstance(power, bool):
        raise TypeError(
            f"`power` must be a number >= 1. Received: power={power!r} of type "
            f"{type(power).__name__}. Pass power=1 (the lecture's j) or power=2 (j2)."
        )
    if not (math.isfinite(power) and power >= 1):
        raise ValueError(
            f"`power` must be a finite number >= 1 (the power Jaccard loss of Duque-Arias "
            f"et al.). Received: power={power!r}. Pass power=1 (the lecture's j) or "
            "power=2 (j2)."
        )
    if power > LARGEST_BOUNDED_POWER:
        warnings.warn(
            f"power={power} > 2: the sums of y**p and ŷ**p can fall below the intersection, "
            "so the loss can be negative, even for binary targets. Duque-Arias et al. use "
            "1 <= power <= 2.",
            stacklevel=3,
        )
    return float(power)


def _overlap_options(per_image, average, power, epsilon, smooth) -> dict:
    return {
        "per_image": check_bool(per_image, "per_image"),
        "average": validate_option(average, "average", AVERAGES),
        "power": _check_power(power),
        "epsilon": check_non_negative_float(epsilon, "epsilon"),
        "smooth": check_non_negative_float(smooth, "smooth"),
    }


def _static_shape(tensor) -> tuple:
    return tuple(None if size is None else int(size) for size in tensor.shape)


def _as_pair(y_true, y_pred, what):
    """Tensors of the same float type and rank >= 3 (batch, spatial..., channels)."""
    y_pred = ops.convert_to_tensor(y_pred)
    if not keras.backend.is_float_dtype(y_pred.dtype):
        y_pred = ops.cast(y_pred, keras.backend.floatx())
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    true_shape, pred_shape = _static_shape(y_true), _static_shape(y_pred)
    same = len(true_shape) == len(pred_shape) and all(
        a is None or b is None or a == b for a, b in zip(true_shape, pred_shape)
    )
    if not same:
        raise ValueError(
            f"{what} needs `y_true` and `y_pred` of the same shape. Received: "
            f"y_true.shape={true_shape}, y_pred.shape={pred_shape}. One-hot encode "
            "class labels (keras.ops.one_hot) and keep the channel axis of binary masks, "
            "e.g. masks[..., None]."
        )
    if len(pred_shape) < 3:
        raise ValueError(
            f"{what} needs tensors (batch, height, width, channels), or with any number of "
            f"spatial axes (batch, ..., channels). Received: y_pred.shape={pred_shape}. "
            "Add the missing axes, e.g. y[..., None] for the channel axis."
        )
    return y_true, y_pred


def _sum_axes(rank, per_image, average):
    """The axes summed for one value: spatial axes, plus the batch (`per_image=False`)
    and the channels (`average="micro"`)."""
    axes = list(range(1, rank - 1))
    if not per_image:
        axes.insert(0, 0)
    if average == "micro":
        axes.append(rank - 1)
    return tuple(axes)


def _raised(values, power):
    if power == 1.0:
        return values
    if power == 2.0:
        return ops.square(values)
    return ops.power(values, power)


def _overlap_sums(y_true, y_pred, per_image, average, power, what):
    """I, G_p and P_p for every group (see the module docstring)."""
    y_true, y_pred = _as_pair(y_true, y_pred, what)
    axes = _sum_axes(len(y_pred.shape), per_image, average)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    size_true = ops.sum(_raised(y_true, power), axis=axes)
    size_pred = ops.sum(_raised(y_pred, power), axis=axes)
    return intersection, size_true, size_pred


def _ratio(numerator, denominator, empty):
    """numerator / denominator, and 1 (a perfect score) where `empty`. The
    denominator is replaced where `empty` before dividing, so that no branch
    holds 0/0 and the gradient stays finite."""
    safe = ops.where(empty, ops.ones_like(denominator), denominator)
    return ops.where(empty, ops.ones_like(numerator), numerator / safe)


def _loss_from_scores(scores, average):
    if average == "macro":
        scores = ops.mean(scores, axis=-1)
    return 1.0 - scores


# ---------------------------------------------------------------- functions


def dice_loss(y_true, y_pred, per_image=False, average="micro", power=1, epsilon=EPSILON,
              smooth=0.0):
    """Soft Dice loss: 1 - (2 I + s) / (G_p + P_p + s + ε).

    With the defaults this is `keras.losses.dice(y_true, y_pred)` (the whole
    batch, ε = 1e-7); `power=2` gives the squared denominators of V-Net
    (Milletari et al. 2016). See the module docstring for the notation, the
    reductions and the value for empty masks (0).

    Args:
        y_true: target, `(batch, ..., channels)`, in [0, 1] (binary masks, or
            one-hot classes).
        y_pred: probabilities of the same shape.
        per_image: bool, one value per image instead of one for the batch.
        average: `"micro"` (channels summed together) or `"macro"` (the mean
            of the per-channel losses).
        power: number >= 1, the exponent p of G_p and P_p.
        epsilon: number >= 0, ε added to the denominator.
        smooth: number >= 0, s added to the numerator and the denominator.

    Returns:
        A tensor: shape `(batch,)` with `per_image=True`, else a scalar.

    Raises:
        ValueError: for tensors of different shapes or of rank below 3, an
            unknown `average`, a `power` below 1, or a negative `epsilon` or
            `smooth`.
        TypeError: for a `per_image` that is not a bool or a number that is
            not a number.

    Example:

    >>> y_true = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], "float32")[..., None]
    >>> y_pred = np.array([[0, 1, 0, 1], [0.4, 0, 0, 0.9]], "float32")[..., None]
    >>> np.round(keras.ops.convert_to_numpy(dice_loss(y_true, y_pred, per_image=True)), 6)
    array([0.5     , 0.757576], dtype=float32)
    >>> round(float(dice_loss(y_true, y_pred)), 6)  # the whole batch: 1 - 2·2.4 / (4 + 3.3)
    0.616438

    Reference:
        Milletari, Navab, Ahmadi, V-Net, 3DV 2016 (power 2). Lesson ``07_losses``.
    """
    options = _overlap_options(per_image, average, power, epsilon, smooth)
    intersection, size_true, size_pred = _overlap_sums(
        y_true, y_pred, options["per_image"], options["average"], options["power"],
        "`dice_loss`",
    )
    total = size_true + size_pred
    s, eps = options["smooth"], options["epsilon"]
    scores = _ratio(2.0 * intersection + s, total + s + eps, ops.equal(total, 0.0))
    return _loss_from_scores(scores, options["average"])


def jaccard_loss(y_true, y_pred, power=1, per_image=False, average="micro", epsilon=EPSILON,
                 smooth=0.0):
    """Soft (power) Jaccard loss: 1 - (I + s) / (G_p + P_p - I + s + ε).

    `power=1` is the lecture's j = 1 - Σyŷ / (Σy + Σŷ - Σyŷ + ε), `power=2`
    its j2 = 1 - Σyŷ / (Σy² + Σŷ² - Σyŷ + ε) ("works slightly better",
    Duque-Arias et al. 2021), any p >= 1 their power Jaccard loss (their code:
    `smooth=10`). With the defaults, `power=1` equals
    `keras.losses.Tversky(alpha=1, beta=1)` (I + fp + fn = G + P - I). Above
    p = 2 the loss can be negative (a warning says so). See the module
    docstring for the reductions and the value for empty masks (0).

    Args:
        y_true: target, `(batch, ..., channels)`, in [0, 1].
        y_pred: probabilities of the same shape.
        power: number >= 1, the exponent p.
        per_image: bool, one value per image instead of one for the batch.
        average: `"micro"` or `"macro"` (the mean of the per-channel losses).
        epsilon: number >= 0, the lecture's ε, added to the denominator.
        smooth: number >= 0, s added to the numerator and the denominator.

    Returns:
        A tensor: shape `(batch,)` with `per_image=True`, else a scalar.

    Raises:
        ValueError, TypeError: as `dice_loss`.

    Example:

    >>> y_true = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], "float32")[..., None]
    >>> y_pred = np.array([[0, 1, 0, 1], [0.4, 0, 0, 0.9]], "float32")[..., None]
    >>> j = jaccard_loss(y_true, y_pred, per_image=True, epsilon=0)
    >>> np.round(keras.ops.convert_to_numpy(j), 6)  # 1 - 1/3 and 1 - 0.4/2.9
    array([0.666667, 0.862069], dtype=float32)
    >>> round(float(jaccard_loss(y_true, y_pred, power=2, epsilon=0)), 6)  # j2
    0.748654
    >>> round(float(jaccard_loss(y_true, y_pred, power=2, epsilon=0, smooth=10)), 6)
    0.267823

    Reference:
        Duque-Arias et al., On power Jaccard losses for semantic segmentation,
        VISAPP 2021. Lesson ``07_losses``.
    """
    options = _overlap_options(per_image, average, power, epsilon, smooth)
    intersection, size_true, size_pred = _overlap_sums(
        y_true, y_pred, options["per_image"], options["average"], options["power"],
        "`jaccard_loss`",
    )
    union = size_true + size_pred - intersection
    s, eps = options["smooth"], options["epsilon"]
    empty = ops.equal(size_true + size_pred, 0.0)
    scores = _ratio(intersection + s, union + s + eps, empty)
    return _loss_from_scores(scores, options["average"])


def _weighted(values, weight_map, what):
    """`values` (per pixel) times the weight map, which may keep a channel axis of 1."""
    if weight_map is None:
        return values
    weights = ops.cast(ops.convert_to_tensor(weight_map), values.dtype)
    shape, weight_shape = _static_shape(values), _static_shape(weights)
    if len(weight_shape) == len(shape) + 1 and weight_shape[-1] == 1:
        weights = ops.squeeze(weights, axis=-1)
        weight_shape = weight_shape[:-1]
    same = len(weight_shape) == len(shape) and all(
        a is None or b is None or a == b for a, b in zip(shape, weight_shape)
    )
    if not same:
        raise ValueError(
            f"{what} needs one weight per pixel: `weight_map` of shape {shape} "
            f"(or with a last axis of 1). Received: weight_map.shape={weight_shape}. "
            "Compute one map per image, e.g. with fcnkit.weight_map.unet_weight_map."
        )
    return values * weights


def weighted_binary_crossentropy(y_true, y_pred, weight_map=None, from_logits=False):
    """Per-pixel binary cross-entropy times a weight map: w(x) · CE(x).

    CE(x) = -(y log ŷ + (1 - y) log(1 - ŷ)), averaged over the channels as
    `keras.losses.binary_crossentropy` does (probabilities are clipped to
    [1e-7, 1 - 1e-7]). Summed over the pixels, it is the energy of the U-Net
    paper, -Σ w(x) log p(x), for a sigmoid output.

    Args:
        y_true: binary target `(batch, ..., channels)`.
        y_pred: probabilities (or logits with `from_logits=True`), same shape.
        weight_map: per-pixel weights `(batch, ...)` (the shape of the result)
            or with a last axis of 1; None weights every pixel by 1.
        from_logits: bool, whether `y_pred` holds logits.

    Returns:
        The weighted cross-entropy of each pixel, shape `y_true.shape[:-1]`.

    Raises:
        ValueError: for tensors of different shapes or of rank below 3, or a
            weight map of another shape.

    Example:

    >>> y_true = np.array([[[1.0], [0.0]]])                # one image of 1×2 pixels
    >>> y_pred = np.array([[[0.5], [0.5]]])
    >>> values = weighted_binary_crossentropy(y_true, y_pred, np.array([[2.0, 1.0]]))
    >>> np.round(keras.ops.convert_to_numpy(values) / np.log(2), 6)  # 2 ln 2, ln 2
    array([[2., 1.]])

    Reference:
        Ronneberger, Fischer, Brox, U-Net, MICCAI 2015 (the weighted energy).
        Lesson ``06_segmentation``.
    """
    from_logits = check_bool(from_logits, "from_logits")
    y_true, y_pred = _as_pair(y_true, y_pred, "`weighted_binary_crossentropy`")
    values = ops.mean(ops.binary_crossentropy(y_true, y_pred, from_logits=from_logits),
                      axis=-1)
    return _weighted(values, weight_map, "`weighted_binary_crossentropy`")


def weighted_categorical_crossentropy(y_true, y_pred, weight_map=None, from_logits=False):
    """Per-pixel categorical cross-entropy times a weight map: -w(x) log ŷ_ℓ(x)(x).

    The U-Net paper's loss: a softmax over the classes at every pixel, and
    the log-probability of the true class ℓ(x) weighted by w(x). `y_true` is
    one-hot (or soft); the cross-entropy is -Σ_c y_c log ŷ_c, with ŷ clipped
    as in `keras.losses.categorical_crossentropy`.

    Args:
        y_true: one-hot target `(batch, ..., classes)`.
        y_pred: probabilities (or logits with `from_logits=True`), same shape.
        weight_map: per-pixel weights `(batch, ...)` or with a last axis of 1;
            None weights every pixel by 1.
        from_logits: bool, whether `y_pred` holds logits.

    Returns:
        The weighted cross-entropy of each pixel, shape `y_true.shape[:-1]`.

    Raises:
        ValueError: as `weighted_binary_crossentropy`.

    Example:

    >>> y_true = np.array([[[1.0, 0.0], [0.0, 1.0]]])       # 1×2 pixels, 2 classes
    >>> y_pred = np.array([[[0.5, 0.5], [0.75, 0.25]]])
    >>> values = weighted_categorical_crossentropy(y_true, y_pred, np.array([[1.0, 10.0]]))
    >>> np.round(keras.ops.convert_to_numpy(values) / np.log(2), 6)  # ln 2, 10 · ln 4
    array([[ 1., 20.]])

    Reference:
        Ronneberger, Fischer, Brox, U-Net, MICCAI 2015. Lesson ``06_segmentation``.
    """
    from_logits = check_bool(from_logits, "from_logits")
    y_true, y_pred = _as_pair(y_true, y_pred, "`weighted_categorical_crossentropy`")
    values = ops.categorical_crossentropy(y_true, y_pred, from_logits=from_logits, axis=-1)
    return _weighted(values, weight_map, "`weighted_categorical_crossentropy`")


# ------------------------------------------------------------------ classes


def _check_image_weights(loss, sample_weight):
    """A loss with one value per image (or per batch) takes one weight per image."""
    if sample_weight is None:
        return
    shape = _static_shape(ops.convert_to_tensor(sample_weight))
    if not loss.per_image:
        raise ValueError(
            f"`{type(loss).__name__}(per_image=False)` gives one value for the whole batch, "
            f"so it takes no `sample_weight`. Received: sample_weight.shape={shape}. Use "
            "per_image=True for one weight per image; per-pixel weight maps belong to the "
            "cross-entropy (WeightedBinaryCrossentropy)."
        )
    if len(shape) > 2 or (len(shape) == 2 and shape[-1] != 1):
        raise ValueError(
            f"`{type(loss).__name__}(per_image=True)` takes one weight per image: "
            f"`sample_weight` of shape (batch,). Received: sample_weight.shape={shape}. "
            "Per-pixel weight maps belong to the cross-entropy (WeightedBinaryCrossentropy)."
        )


class _OverlapLoss(keras.losses.Loss):
    """What `DiceLoss` and `JaccardLoss` share: options, sample weights, config."""

    _function = None

    def __init__(self, power, per_image, average, epsilon, smooth, reduction, name, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        options = _overlap_options(per_image, average, power, epsilon, smooth)
        self.per_image = options["per_image"]
        self.average = options["average"]
        self.power = options["power"]
        self.epsilon = options["epsilon"]
        self.smooth = options["smooth"]

    def __call__(self, y_true, y_pred, sample_weight=None):
        _check_image_weights(self, sample_weight)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        return type(self)._function(
            y_true, y_pred, power=self.power, per_image=self.per_image,
            average=self.average, epsilon=self.epsilon, smooth=self.smooth,
        )

    def get_config(self):
        config = super().get_config()
        config.update(power=self.power, per_image=self.per_image, average=self.average,
                      epsilon=self.epsilon, smooth=self.smooth)
        config["dtype"] = self._dtype_policy.name
        return config


@keras.saving.register_keras_serializable(package="fcnkit")
class DiceLoss(_OverlapLoss):
    """Soft Dice loss, 1 - (2 I + s) / (G_p + P_p + s + ε), as a Keras loss.

    See `dice_loss` for the formula and the module docstring for the
    reductions. `per_image=False` (the default) gives one value for the
    batch; `per_image=True` one per image, which `reduction` averages
    (`"sum_over_batch_size"`) or keeps (`None`), and then `sample_weight`
    may weight the images (shape `(batch,)`).

    Args:
        per_image: bool, one value per image.
        average: `"micro"` or `"macro"`.
        power: number >= 1 (2: V-Net's squared denominators).
        epsilon: number >= 0, added to the denominator.
        smooth: number >= 0, added to the numerator and the denominator.
        reduction: Keras's loss reduction. Defaults to `"sum_over_batch_size"`.
        name: the loss's name. Defaults to `"dice_loss"`.
        dtype: the dtype of the computation. Defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: when called with a `sample_weight` that is not one weight
            per image, or with any `sample_weight` and `per_image=False`; and as
            `dice_loss` for the arguments.

    Example:

    >>> y_true = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], "float32")[..., None]
    >>> y_pred = np.array([[0, 1, 0, 1], [0.4, 0, 0, 0.9]], "float32")[..., None]
    >>> round(float(DiceLoss(per_image=True)(y_true, y_pred)), 6)  # (0.5 + 0.757576) / 2
    0.628788
    >>> model = keras.Sequential([keras.Input((4, 1)), keras.layers.Dense(1, "sigmoid")])
    >>> model.compile(optimizer="adam", loss=DiceLoss())

    Reference:
        Lesson ``07_losses``.
    """

    _function = staticmethod(dice_loss)

    def __init__(self, per_image=False, average="micro", power=1, epsilon=EPSILON, smooth=0.0,
                 reduction="sum_over_batch_size", name="dice_loss", dtype=None):
        super().__init__(power, per_image, average, epsilon, smooth, reduction, name, dtype)


@keras.saving.register_keras_serializable(package="fcnkit")
class JaccardLoss(_OverlapLoss):
    """Soft (power) Jaccard loss, 1 - (I + s) / (G_p + P_p - I + s + ε), as a Keras loss.

    `JaccardLoss()` is the lecture's j, `JaccardLoss(power=2)` its j2. See
    `jaccard_loss` for the formula, `DiceLoss` for the reductions and
    `sample_weight`.

    Args:
        power: number >= 1: 1 for j, 2 for j2, p for the power Jaccard loss.
        per_image: bool, one value per image.
        average: `"micro"` or `"macro"`.
        epsilon: number >= 0, the lecture's ε.
        smooth: number >= 0, added to the numerator and the denominator.
        reduction: Keras's loss reduction. Defaults to `"sum_over_batch_size"`.
        name: the loss's name. Defaults to `"jaccard_loss"`.
        dtype: the dtype of the computation. Defaults to `keras.backend.floatx()`.

    Raises:
        ValueError, TypeError: as `DiceLoss`.

    Example:

    >>> y_true = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], "float32")[..., None]
    >>> y_pred = np.array([[0, 1, 0, 1], [0.4, 0, 0, 0.9]], "float32")[..., None]
    >>> j2 = JaccardLoss(power=2, per_image=True, epsilon=0, reduction=None)
    >>> np.round(keras.ops.convert_to_numpy(j2(y_true, y_pred)), 6)  # one j2 per image
    array([0.666667, 0.844358], dtype=float32)

    Reference:
        Duque-Arias et al., VISAPP 2021. Lesson ``07_losses``.
    """

    _function = staticmethod(jaccard_loss)

    def __init__(self, power=1, per_image=False, average="micro", epsilon=EPSILON, smooth=0.0,
                 reduction="sum_over_batch_size", name="jaccard_loss", dtype=None):
        super().__init__(power, per_image, average, epsilon, smooth, reduction, name, dtype)


def _pixel_weights(loss, y_pred, sample_weight):
    """The `sample_weight` of a per-pixel loss, for the pixels of `y_pred`.

    One weight per image, `(batch,)`, is spread over the image's pixels (Keras
    would align it with the last pixel axis instead, and
    `"mean_with_sample_weight"` must divide by the pixels' weights). A
    per-pixel map must match the pixels, with or without a last axis of 1."""
    if sample_weight is None:
        return None
    pixels = ops.ones_like(y_pred[..., 0])
    shape = _static_shape(pixels)
    weights = ops.cast(ops.convert_to_tensor(sample_weight), pixels.dtype)
    received = weight_shape = _static_shape(weights)
    if len(weight_shape) == 2 and weight_shape[-1] == 1 and len(shape) > 2:
        weights = ops.squeeze(weights, axis=-1)
        weight_shape = weight_shape[:1]
    if len(weight_shape) == 1 and len(shape) > 1:
        return ops.reshape(weights, (-1,) + (1,) * (len(shape) - 1)) * pixels
    if len(weight_shape) == len(shape) + 1 and weight_shape[-1] == 1:
        weight_shape = weight_shape[:-1]
    same = len(weight_shape) == len(shape) and all(
        a is None or b is None or a == b for a, b in zip(shape, weight_shape)
    )
    if not same:
        raise ValueError(
            f"`{type(loss).__name__}` takes a weight map with one weight per pixel, shape "
            f"{shape} (or with a last axis of 1), or one weight per image, shape "
            f"({shape[0]},). Received: sample_weight.shape={received}. Compute one map "
            "per image, e.g. with fcnkit.weight_map.unet_weight_map."
        )
    return weights


class _WeightedCrossentropy(keras.losses.Loss):
    """What the weighted cross-entropies share: the weight map as `sample_weight`."""

    _function = None

    def __init__(self, from_logits, reduction, name, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = check_bool(from_logits, "from_logits")

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        sample_weight = _pixel_weights(self, y_pred, sample_weight)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        return type(self)._function(y_true, y_pred, from_logits=self.from_logits)

    def get_config(self):
        config = super().get_config()
        config.update(from_logits=self.from_logits, dtype=self._dtype_policy.name)
        return config


@keras.saving.register_keras_serializable(package="fcnkit")
class WeightedBinaryCrossentropy(_WeightedCrossentropy):
    """Binary cross-entropy per pixel, weighted by a map given as `sample_weight`.

    The U-Net way to make some pixels count more (the thin gaps between
    touching cells, a rare class): each pixel's cross-entropy CE(x) (see
    `weighted_binary_crossentropy`) is multiplied by its weight w(x). In
    `Model.fit` the weight map is the `sample_weight`, one weight per pixel:
    `fit(x, y, sample_weight=maps)` with maps `(count, height, width)`, or a
    dataset of `(x, y, map)` batches (`fcnkit.training.crop_dataset(...,
    weight_maps=maps)` crops and flips them with the images). One weight per
    image, shape `(batch,)`, is accepted too.

    The reduction fixes the normalisation:

    - `"sum_over_batch_size"` (the default): Σ w·CE / (number of pixels), the
      mean over the pixels of w·CE. Its size does not depend on the crop size.
    - `"mean_with_sample_weight"`: Σ w·CE / Σ w, a weighted mean.
    - `"sum"`: Σ w·CE, the paper's energy E = -Σ w(x) log p(x).

    Without a weight map it is `keras.losses.BinaryCrossentropy()`.

    Args:
        from_logits: bool, whether the model outputs logits. Defaults to False.
        reduction: Keras's loss reduction. Defaults to `"sum_over_batch_size"`.
        name: the loss's name. Defaults to `"weighted_binary_crossentropy"`.
        dtype: the dtype of the computation. Defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: when called with a `sample_weight` that is neither one
            weight per pixel nor one per image.

    Example:

    >>> y_true = np.array([[[1.0], [0.0]]])                # one image of 1×2 pixels
    >>> y_pred = np.array([[[0.5], [0.5]]])
    >>> weights = np.array([[3.0, 1.0]])
    >>> loss = WeightedBinaryCrossentropy()
    >>> round(float(loss(y_true, y_pred, sample_weight=weights) / np.log(2)), 6)  # (3+1)/2
    2.0
    >>> loss = WeightedBinaryCrossentropy(reduction="mean_with_sample_weight")
    >>> round(float(loss(y_true, y_pred, sample_weight=weights) / np.log(2)), 6)  # (3+1)/4
    1.0

    Reference:
        Ronneberger, Fischer, Brox, U-Net, MICCAI 2015. Lesson ``06_segmentation``.
    """

    _function = staticmethod(weighted_binary_crossentropy)

    def __init__(self, from_logits=False, reduction="sum_over_batch_size",
                 name="weighted_binary_crossentropy", dtype=None):
        super().__init__(from_logits, reduction, name, dtype)


@keras.saving.register_keras_serializable(package="fcnkit")
class WeightedCategoricalCrossentropy(_WeightedCrossentropy):
    """Categorical cross-entropy per pixel, weighted by a map given as `sample_weight`.

    The loss of the U-Net paper: a softmax at every pixel, and -w(x) log of
    the probability of the true class (see `weighted_categorical_crossentropy`).
    The weight map reaches it as in `WeightedBinaryCrossentropy`, and the
    reduction normalises it the same way (`"sum"`: the paper's energy).
    Without a weight map it is `keras.losses.CategoricalCrossentropy()`.

    Args:
        from_logits: bool, whether the model outputs logits. Defaults to False.
        reduction: Keras's loss reduction. Defaults to `"sum_over_batch_size"`.
        name: the loss's name. Defaults to `"weighted_categorical_crossentropy"`.
        dtype: the dtype of the computation. Defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: as `WeightedBinaryCrossentropy`.

    Example:

    >>> y_true = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> y_pred = np.array([[[0.5, 0.5], [0.75, 0.25]]])
    >>> loss = WeightedCategoricalCrossentropy(reduction="sum")
    >>> round(float(loss(y_true, y_pred, sample_weight=np.array([[1.0, 10.0]]))), 4)
    14.5561

    Reference:
        Ronneberger, Fischer, Brox, U-Net, MICCAI 2015. Lesson ``06_segmentation``.
    """

    _function = staticmethod(weighted_categorical_crossentropy)

    def __init__(self, from_logits=False, reduction="sum_over_batch_size",
                 name="weighted_categorical_crossentropy", dtype=None):
        super().__init__(from_logits, reduction, name, dtype)
