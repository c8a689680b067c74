"""fcnkit.losses: the tabled oracles, NumPy references on random tensors, Keras's own
Dice and Tversky, empty masks (values and gradients), weighted cross-entropy and
its weight map in `Model.fit`, errors, config and `.keras` round trips."""

import itertools
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fcnkit import losses

# ------------------------------------------------------------ the oracles

# technical-facts §4.2: y = [[1,1,0,0], [1,1,0,0]], ŷ = [[0,1,0,1], [0.4,0,0,0.9]].
Y_TRUE = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], "float32")
Y_PRED = np.array([[0, 1, 0, 1], [0.4, 0, 0, 0.9]], "float32")

# (name, function of (y_true, y_pred, per_image), sample 1, sample 2, global), ε = 0.
ORACLES = [
    ("dice", lambda t, p, i: losses.dice_loss(t, p, per_image=i, epsilon=0),
     0.5, 0.75757576, 0.61643836),
    ("j", lambda t, p, i: losses.jaccard_loss(t, p, per_image=i, epsilon=0),
     0.66666667, 0.86206897, 0.76271186),
    ("j2", lambda t, p, i: losses.jaccard_loss(t, p, power=2, per_image=i, epsilon=0),
     0.66666667, 0.84435798, 0.74865350),
    ("power 1.5", lambda t, p, i: losses.jaccard_loss(t, p, power=1.5, per_image=i, epsilon=0),
     0.66666667, 0.85222387, 0.75467851),
]


def value(tensor):
    return keras.ops.convert_to_numpy(tensor)


@pytest.mark.parametrize("shape", [(2, 4, 1), (2, 2, 2, 1), (2, 1, 4, 1)],
                         ids=["1 spatial axis", "2x2", "1x4"])
@pytest.mark.parametrize("name, function, first, second, whole", ORACLES,
                         ids=[row[0] for row in ORACLES])
def test_tabled_oracles(shape, name, function, first, second, whole):
    y_true, y_pred = Y_TRUE.reshape(shape), Y_PRED.reshape(shape)
    np.testing.assert_allclose(value(function(y_true, y_pred, True)), [first, second],
                               rtol=1e-6)
    np.testing.assert_allclose(value(function(y_true, y_pred, False)), whole, rtol=1e-6)


def test_power_jaccard_oracle_of_the_authors_code():
    """powerLosses' `jaccard_pow_loss` (p = 2, smooth = 10 on both sides, all flattened)."""
    loss = losses.jaccard_loss(Y_TRUE[..., None], Y_PRED[..., None], power=2, epsilon=0,
                               smooth=10)
    assert float(loss) == pytest.approx(0.26782274, rel=1e-6)


def test_keras_docstring_values():
    y_true = Y_TRUE.reshape(2, 2, 2, 1)
    y_pred = Y_PRED.reshape(2, 2, 2, 1)
    np.testing.assert_allclose(value(losses.DiceLoss(per_image=True, reduction=None)(
        y_true, y_pred)), [0.5, 0.75757575], rtol=1e-6)
    assert float(losses.DiceLoss()(y_true, y_pred)) == pytest.approx(0.6164384, rel=1e-6)


# ----------------------------------------------------- NumPy references


def numpy_overlap_loss(y_true, y_pred, kind, per_image, average, power, epsilon, smooth):
    """The module's formulas written out with loops over images and classes (float64)."""
    y_true, y_pred = y_true.astype("float64"), y_pred.astype("float64")
    images = [slice(None)] if not per_image else [slice(b, b + 1) for b in range(len(y_true))]
    channels = ([slice(None)] if average == "micro"
                else [slice(c, c + 1) for c in range(y_true.shape[-1])])
    per_group = []
    for image in images:
        scores = []
        for channel in channels:
            t, p = y_true[image][..., channel], y_pred[image][..., channel]
            intersection = np.sum(t * p)
            size_true, size_pred = np.sum(t**power), np.sum(p**power)
            if size_true + size_pred == 0:
                scores.append(1.0)
            elif kind == "dice":
                scores.append((2 * intersection + smooth)
                              / (size_true + size_pred + smooth + epsilon))
            else:
                scores.append((intersection + smooth)
                              / (size_true + size_pred - intersection + smooth + epsilon))
        per_group.append(1.0 - np.mean(scores))
    return np.array(per_group) if per_image else np.array(per_group[0])


OPTIONS = list(itertools.product(
    ["dice", "jaccard"], [False, True], ["micro", "macro"], [1, 1.5, 2],
    [(1e-7, 0.0), (0.0, 0.0), (1e-3, 10.0)],
))


@pytest.mark.parametrize("kind, per_image, average, power, constants", OPTIONS)
def test_matches_numpy_on_random_tensors(kind, per_image, average, power, constants):
    epsilon, smooth = constants
    rng = np.random.default_rng(len(OPTIONS))
    # shape: (batch 3, 5, 6, classes 4); soft targets, one image with an empty class.
    y_true = rng.random((3, 5, 6, 4)).astype("float32")
    y_true[1, ..., 2] = 0
    y_pred = rng.random((3, 5, 6, 4)).astype("float32")
    function = losses.dice_loss if kind == "dice" else losses.jaccard_loss
    result = function(y_true, y_pred, power=power, per_image=per_image, average=average,
                      epsilon=epsilon, smooth=smooth)
    expected = numpy_overlap_loss(y_true, y_pred, kind, per_image, average, power, epsilon,
                                  smooth)
    assert tuple(result.shape) == expected.shape
    np.testing.assert_allclose(value(result), expected, rtol=2e-6, atol=1e-7)


def test_dice_and_j_equal_keras_dice_and_tversky():
    """technical-facts §4.1: Tversky(alpha=1, beta=1) is the lecture's j with ε = 1e-7."""
    rng = np.random.default_rng(1)
    y_true = (rng.random((4, 8, 8, 3)) > 0.6).astype("float32")
    y_pred = rng.random((4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(value(losses.dice_loss(y_true, y_pred)),
                               value(keras.losses.dice(y_true, y_pred)), rtol=1e-6)
    np.testing.assert_allclose(value(losses.dice_loss(y_true, y_pred, per_image=True)),
                               value(keras.losses.dice(y_true, y_pred, axis=(1, 2, 3))),
                               rtol=1e-6)
    np.testing.assert_allclose(value(losses.jaccard_loss(y_true, y_pred)),
                               value(keras.losses.tversky(y_true, y_pred, 1.0, 1.0)), rtol=1e-6)
    np.testing.assert_allclose(
        value(losses.JaccardLoss(per_image=True)(y_true, y_pred)),
        value(keras.losses.Tversky(1.0, 1.0, axis=(1, 2, 3))(y_true, y_pred)), rtol=1e-6)


def test_segmentation_models_and_monai_settings():
    """segmentation_models' JaccardLoss (smooth 1e-5 on both sides, per class then the
    mean) and MONAI's DiceLoss(batch=True) with smooth_nr = smooth_dr = 1e-5: their
    formulas (technical-facts §4.3, §4.5), written here in NumPy."""
    rng = np.random.default_rng(2)
    y_true = (rng.random((2, 6, 6, 3)) > 0.5).astype("float32")
    y_pred = rng.random((2, 6, 6, 3)).astype("float32")
    s = 1e-5
    axes = (0, 1, 2)
    intersection = (y_true * y_pred).sum(axes, dtype="float64")
    total = y_true.sum(axes, dtype="float64") + y_pred.sum(axes, dtype="float64")
    sm_iou = (intersection + s) / (total - intersection + s)
    monai_dice = 1 - (2 * intersection + s) / (total + s)
    jaccard = losses.jaccard_loss(y_true, y_pred, average="macro", epsilon=0, smooth=s)
    assert float(jaccard) == pytest.approx(1 - sm_iou.mean(), rel=1e-6)
    dice = losses.dice_loss(y_true, y_pred, average="macro", epsilon=0, smooth=s)
    assert float(dice) == pytest.approx(monai_dice.mean(), rel=1e-6)


masks = hnp.arrays(np.uint8, (2, 3, 5, 1), elements=st.integers(0, 1))


@settings(max_examples=40, deadline=None)
@given(masks, masks)
def test_on_sets_the_losses_are_one_minus_the_lecture_scores(truth, prediction):
    """On binary masks (sets), 1 - loss is D and J image by image: 0 <= J <= D <= 1 and
    J = D / (2 - D); two empty sets score 1 (loss 0)."""
    dice = 1 - value(losses.dice_loss(truth, prediction, per_image=True, epsilon=0))
    jaccard = 1 - value(losses.jaccard_loss(truth, prediction, per_image=True, epsilon=0))
    jaccard2 = 1 - value(losses.jaccard_loss(truth, prediction, power=2, per_image=True,
                                             epsilon=0))
    assert np.all(jaccard >= -1e-7) and np.all(jaccard <= dice + 1e-6)
    assert np.all(dice <= 1 + 1e-6)
    np.testing.assert_allclose(jaccard, dice / (2 - dice), atol=1e-6)
    np.testing.assert_allclose(jaccard2, jaccard, atol=1e-6)  # y**2 = y on sets
    for image in range(2):
        a, b = truth[image].astype(bool), prediction[image].astype(bool)
        union = np.sum(a | b)
        expected = 1.0 if union == 0 else np.sum(a & b) / union
        assert jaccard[image] == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------ empty masks


def gradient(function, y_true, y_pred):
    y_pred = tf.constant(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = tf.reduce_sum(function(y_true, y_pred))
    return float(loss), tape.gradient(loss, y_pred).numpy()


EMPTY_CASES = [
    ("dice", lambda t, p: losses.dice_loss(t, p)),
    ("dice, eps 0", lambda t, p: losses.dice_loss(t, p, epsilon=0)),
    ("dice, per image macro", lambda t, p: losses.dice_loss(t, p, per_image=True,
                                                           average="macro", epsilon=0)),
    ("j", lambda t, p: losses.jaccard_loss(t, p)),
    ("j, eps 0", lambda t, p: losses.jaccard_loss(t, p, epsilon=0)),
    ("j2, eps 0", lambda t, p: losses.jaccard_loss(t, p, power=2, epsilon=0)),
    ("power 1.5, per image", lambda t, p: losses.jaccard_loss(t, p, power=1.5, epsilon=0,
                                                             per_image=True)),
    ("smooth", lambda t, p: losses.jaccard_loss(t, p, smooth=1.0)),
]


@pytest.mark.parametrize("name, function", EMPTY_CASES, ids=[c[0] for c in EMPTY_CASES])
def test_two_empty_masks_give_loss_zero_and_finite_gradients(name, function):
    empty = np.zeros((2, 4, 4, 2), "float32")
    loss, grad = gradient(function, empty, empty)
    assert loss == 0.0
    assert np.all(np.isfinite(grad)) and np.all(grad == 0)


def test_an_empty_image_in_a_batch_scores_zero_and_the_others_are_unchanged():
    rng = np.random.default_rng(3)
    y_true = (rng.random((3, 4, 4, 1)) > 0.5).astype("float32")
    y_pred = rng.random((3, 4, 4, 1)).astype("float32")
    y_true[1] = 0
    y_pred[1] = 0
    per_image = value(losses.jaccard_loss(y_true, y_pred, per_image=True, epsilon=0))
    assert per_image[1] == 0.0
    alone = value(losses.jaccard_loss(y_true[[0, 2]], y_pred[[0, 2]], per_image=True,
                                      epsilon=0))
    np.testing.assert_allclose(per_image[[0, 2]], alone, rtol=1e-6)
    _, grad = gradient(lambda t, p: losses.jaccard_loss(t, p, per_image=True, epsilon=0),
                       y_true, y_pred)
    assert np.all(np.isfinite(grad)) and np.all(grad[1] == 0) and np.any(grad[0] != 0)


def test_an_empty_target_needs_smooth_to_teach_anything():
    """With s = 0 an empty target gives loss 1 whatever ŷ > 0, and no gradient (I = 0);
    with s > 0 the gradient pushes ŷ down."""
    y_true = np.zeros((1, 2, 2, 1), "float32")
    y_pred = np.full((1, 2, 2, 1), 0.3, "float32")
    loss, grad = gradient(losses.jaccard_loss, y_true, y_pred)
    assert loss == pytest.approx(1.0) and np.all(grad == 0)
    loss, grad = gradient(lambda t, p: losses.jaccard_loss(t, p, smooth=1.0), y_true, y_pred)
    assert loss == pytest.approx(1 - 1 / (1.2 + 1), rel=1e-6)  # 1 - s / (P + s)
    assert np.all(grad > 0)


def test_gradients_are_finite_near_zero_and_one():
    y_true = np.array([1, 0, 1, 0], "float32").reshape(1, 2, 2, 1)
    y_pred = np.array([1, 0, 0, 1], "float32").reshape(1, 2, 2, 1)
    for power in (1, 1.5, 2):
        for function in (losses.dice_loss, losses.jaccard_loss):
            _, grad = gradient(lambda t, p, f=function: f(t, p, power=power, epsilon=0),
                               y_true, y_pred)
            assert np.all(np.isfinite(grad))


# ------------------------------------------------------- classes and reductions


def test_reductions_and_image_weights():
    rng = np.random.default_rng(4)
    y_true = (rng.random((4, 3, 3, 1)) > 0.5).astype("float32")
    y_pred = rng.random((4, 3, 3, 1)).astype("float32")
    per_image = value(losses.dice_loss(y_true, y_pred, per_image=True))
    assert value(losses.DiceLoss(per_image=True, reduction=None)(y_true, y_pred)).shape == (4,)
    assert value(losses.DiceLoss(reduction=None)(y_true, y_pred)).shape == ()
    assert float(losses.DiceLoss(per_image=True)(y_true, y_pred)) == pytest.approx(
        per_image.mean(), rel=1e-6)
    weights = np.array([1.0, 0.0, 2.0, 1.0], "float32")
    loss = losses.DiceLoss(per_image=True)
    assert float(loss(y_true, y_pred, sample_weight=weights)) == pytest.approx(
        (per_image * weights).sum() / 4, rel=1e-6)
    weighted_mean = losses.DiceLoss(per_image=True, reduction="mean_with_sample_weight")
    assert float(weighted_mean(y_true, y_pred, sample_weight=weights[:, None])) == (
        pytest.approx((per_image * weights).sum() / weights.sum(), rel=1e-6))


def error_text(error_type, function, *args, **kwargs):
    with pytest.raises(error_type) as error:
        function(*args, **kwargs)
    return str(error.value)


def test_sample_weights_the_overlap_losses_refuse():
    y = np.ones((2, 3, 3, 1), "float32")
    assert error_text(ValueError, losses.DiceLoss(), y, y, sample_weight=np.ones(2)) == (
        "`DiceLoss(per_image=False)` gives one value for the whole batch, so it takes no "
        "`sample_weight`. Received: sample_weight.shape=(2,). Use per_image=True for one "
        "weight per image; per-pixel weight maps belong to the cross-entropy "
        "(WeightedBinaryCrossentropy)."
    )
    assert error_text(ValueError, losses.JaccardLoss(per_image=True), y, y,
                      sample_weight=np.ones((2, 3, 3))) == (
        "`JaccardLoss(per_image=True)` takes one weight per image: `sample_weight` of shape "
        "(batch,). Received: sample_weight.shape=(2, 3, 3). Per-pixel weight maps belong to "
        "the cross-entropy (WeightedBinaryCrossentropy)."
    )


ARGUMENT_ERRORS = [
    ({"power": 0.5}, ValueError,
     "`power` must be a finite number >= 1 (the power Jaccard loss of Duque-Arias et al.). "
     "Received: power=0.5. Pass power=1 (the lecture's j) or power=2 (j2)."),
    ({"power": "2"}, TypeError,
     "`power` must be a number >= 1. Received: power='2' of type str. Pass power=1 (the "
     "lecture's j) or power=2 (j2)."),
    ({"epsilon": -1.0}, ValueError,
     "`epsilon` must be a finite number >= 0. Received: epsilon=-1.0. Pass 0 or a positive "
     "number such as epsilon=1e-07."),
    ({"smooth": None}, TypeError,
     "`smooth` must be a number (int or float). Received: smooth=None of type NoneType. "
     "Pass a number such as smooth=0.0."),
    ({"average": "mikro"}, ValueError,
     '`average` must be one of "micro", "macro". Received: average=\'mikro\'. '
     'Did you mean "micro"?'),
    ({"per_image": 1}, TypeError,
     "`per_image` must be True or False. Received: per_image=1 of type int. "
     "Pass per_image=True or per_image=False."),
]


@pytest.mark.parametrize("kwargs, error_type, message", ARGUMENT_ERRORS)
def test_argument_errors(kwargs, error_type, message):
    y = np.ones((1, 2, 2, 1), "float32")
    assert error_text(error_type, losses.jaccard_loss, y, y, **kwargs) == message
    assert error_text(error_type, losses.JaccardLoss, **kwargs) == message


def test_shape_errors():
    assert error_text(ValueError, losses.dice_loss, np.ones((2, 4, 4)),
                      np.ones((2, 4, 4, 3))) == (
        "`dice_loss` needs `y_true` and `y_pred` of the same shape. Received: "
        "y_true.shape=(2, 4, 4), y_pred.shape=(2, 4, 4, 3). One-hot encode class labels "
        "(keras.ops.one_hot) and keep the channel axis of binary masks, e.g. masks[..., None]."
    )
    assert error_text(ValueError, losses.jaccard_loss, np.ones((2, 4)), np.ones((2, 4))) == (
        "`jaccard_loss` needs tensors (batch, height, width, channels), or with any number "
        "of spatial axes (batch, ..., channels). Received: y_pred.shape=(2, 4). Add the "
        "missing axes, e.g. y[..., None] for the channel axis."
    )


def test_powers_above_two_warn_that_the_loss_can_be_negative():
    with pytest.warns(UserWarning, match=r"power=3 > 2: the sums of y\*\*p and ŷ\*\*p"):
        losses.JaccardLoss(power=3)
    y_true = np.ones((1, 1, 1, 1), "float32")
    y_pred = np.full((1, 1, 1, 1), 0.8, "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert float(losses.jaccard_loss(y_true, y_pred, power=3, epsilon=0)) < 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses.JaccardLoss(power=2)


def test_dtype_argument():
    y = np.ones((1, 2, 2, 1), "float32")
    for loss in (losses.DiceLoss(dtype="float16"), losses.JaccardLoss(dtype="float16")):
        result = loss(y, y * 0.5)
        assert keras.backend.standardize_dtype(result.dtype) == "float16"


ALL_LOSSES = [
    losses.DiceLoss(per_image=True, average="macro", power=2, epsilon=1e-5, smooth=1.0,
                    reduction="sum", name="dice_v_net"),
    losses.JaccardLoss(power=1.5, smooth=10.0, name="power_jaccard"),
    losses.WeightedBinaryCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
    losses.WeightedCategoricalCrossentropy(reduction="sum"),
]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda loss: type(loss).__name__)
def test_config_round_trip(loss):
    config = loss.get_config()
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == config


@pytest.mark.parametrize("loss", [losses.DiceLoss(per_image=True, power=2),
                                  losses.JaccardLoss(power=1.5, smooth=10.0),
                                  losses.WeightedBinaryCrossentropy()],
                         ids=lambda loss: type(loss).__name__)
def test_keras_file_round_trip(tmp_path, loss):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)),
                              keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
    model.compile(optimizer="sgd", loss=loss)
    rng = np.random.default_rng(5)
    x = rng.random((2, 6, 6, 1)).astype("float32")
    y = (x > 0.5).astype("float32")
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.loss) is type(loss) and loaded.loss.get_config() == loss.get_config()
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0),
                                                           rel=1e-6)


# ------------------------------------------------------ weighted cross-entropy


def numpy_binary_crossentropy(y_true, y_pred):
    y_pred = np.clip(y_pred.astype("float64"), 1e-7, 1 - 1e-7)
    return -(y_true * np.log(y_pred) + (1 - y_true) * np.log(1 - y_pred)).mean(axis=-1)


def numpy_categorical_crossentropy(y_true, y_pred):
    y_pred = y_pred.astype("float64") / y_pred.sum(axis=-1, keepdims=True)
    return -(y_true * np.log(np.clip(y_pred, 1e-7, 1 - 1e-7))).sum(axis=-1)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_weighted_crossentropies_match_numpy():
    rng = np.random.default_rng(6)
    y_true = (rng.random((2, 5, 4, 1)) > 0.5).astype("float32")
    y_pred = rng.random((2, 5, 4, 1)).astype("float32")
    weights = rng.random((2, 5, 4)).astype("float32") * 10
    expected = weights * numpy_binary_crossentropy(y_true, y_pred)
    for weight_map in (weights, weights[..., None]):
        np.testing.assert_allclose(
            value(losses.weighted_binary_crossentropy(y_true, y_pred, weight_map)), expected,
            rtol=1e-5)
    logits = rng.normal(size=(2, 5, 4, 1)).astype("float32")
    np.testing.assert_allclose(
        value(losses.weighted_binary_crossentropy(y_true, logits, weights, from_logits=True)),
        weights * numpy_binary_crossentropy(y_true, 1 / (1 + np.exp(-logits))), rtol=1e-4)

    labels = rng.integers(0, 3, (2, 5, 4))
    one_hot = np.eye(3, dtype="float32")[labels]
    logits = rng.normal(size=(2, 5, 4, 3)).astype("float32")
    expected = weights * numpy_categorical_crossentropy(one_hot, softmax(logits))
    np.testing.assert_allclose(value(losses.weighted_categorical_crossentropy(
        one_hot, softmax(logits), weights)), expected, rtol=1e-5)
    np.testing.assert_allclose(value(losses.weighted_categorical_crossentropy(
        one_hot, logits, weights, from_logits=True)), expected, rtol=1e-4)
    # Without a weight map: Keras's own cross-entropies.
    np.testing.assert_allclose(
        value(losses.WeightedBinaryCrossentropy()(y_true, y_pred)),
        value(keras.losses.BinaryCrossentropy()(y_true, y_pred)), rtol=1e-6)
    np.testing.assert_allclose(
        value(losses.WeightedCategoricalCrossentropy()(one_hot, softmax(logits))),
        value(keras.losses.CategoricalCrossentropy()(one_hot, softmax(logits))), rtol=1e-6)


@pytest.mark.parametrize("reduction, normalise", [
    ("sum_over_batch_size", lambda total, weights: total / weights.size),
    ("mean_with_sample_weight", lambda total, weights: total / weights.sum()),
    ("sum", lambda total, weights: total),  # the U-Net paper's energy
])
def test_weight_map_reductions(reduction, normalise):
    rng = np.random.default_rng(7)
    y_true = (rng.random((3, 4, 6, 1)) > 0.5).astype("float32")
    y_pred = rng.random((3, 4, 6, 1)).astype("float32")
    weights = (rng.random((3, 4, 6)) * 5).astype("float32")
    pixels = numpy_binary_crossentropy(y_true, y_pred)
    loss = losses.WeightedBinaryCrossentropy(reduction=reduction)
    for sample_weight in (weights, weights[..., None]):
        assert float(loss(y_true, y_pred, sample_weight=sample_weight)) == pytest.approx(
            normalise((weights * pixels).sum(), weights), rel=1e-5)
    # One weight per image applies to all its pixels (not to the last pixel axis).
    per_image = np.array([1.0, 3.0, 0.5], "float32")
    broadcast = np.broadcast_to(per_image[:, None, None], weights.shape)
    assert float(loss(y_true, y_pred, sample_weight=per_image)) == pytest.approx(
        normalise((broadcast * pixels).sum(), broadcast), rel=1e-5)


def test_weight_map_shape_errors():
    y = np.full((2, 4, 4, 1), 0.5, "float32")
    assert error_text(ValueError, losses.weighted_binary_crossentropy, y, y,
                      np.ones((2, 4, 5))) == (
        "`weighted_binary_crossentropy` needs one weight per pixel: `weight_map` of shape "
        "(2, 4, 4) (or with a last axis of 1). Received: weight_map.shape=(2, 4, 5). "
        "Compute one map per image, e.g. with fcnkit.weight_map.unet_weight_map."
    )
    assert error_text(ValueError, losses.WeightedBinaryCrossentropy(), y, y,
                      sample_weight=np.ones((2, 4, 4, 2))) == (
        "`WeightedBinaryCrossentropy` takes a weight map with one weight per pixel, shape "
        "(2, 4, 4) (or with a last axis of 1), or one weight per image, shape (2,). "
        "Received: sample_weight.shape=(2, 4, 4, 2). Compute one map per image, e.g. with "
        "fcnkit.weight_map.unet_weight_map."
    )


def tiny_model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((None, None, 2)),
                              keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
    return model


def test_the_weight_map_reaches_the_loss_in_fit():
    """`fit` on a tf.data stream of (x, y, weight map): the logged loss is the NumPy
    weighted mean, and one SGD step moves the weights by the gradient of that mean
    (checked against a GradientTape on the weighted NumPy-equivalent expression)."""
    rng = np.random.default_rng(8)
    x = rng.random((4, 8, 8, 2)).astype("float32")
    y = (rng.random((4, 8, 8, 1)) > 0.5).astype("float32")
    weights = (1 + 9 * rng.random((4, 8, 8))).astype("float32")
    stream = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(4)

    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    prediction = model.predict(x, verbose=0)
    expected = (weights * numpy_binary_crossentropy(y, prediction)).mean()
    with tf.GradientTape() as tape:
        output = model(x)
        direct = tf.reduce_mean(weights * keras.losses.binary_crossentropy(y, output))
    gradients = tape.gradient(direct, model.trainable_weights)

    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=losses.WeightedBinaryCrossentropy())
    history = model.fit(stream, epochs=1, verbose=0, shuffle=False)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    for old, new, grad in zip(before, model.get_weights(), gradients):
        np.testing.assert_allclose(new, old - 0.5 * grad.numpy(), rtol=1e-4, atol=1e-6)

    # Zero weights: nothing to learn, the model does not move.
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=losses.WeightedBinaryCrossentropy())
    zeros = tf.data.Dataset.from_tensor_slices((x, y, np.zeros_like(weights))).batch(4)
    assert model.fit(zeros, epochs=1, verbose=0, shuffle=False).history["loss"] == [0.0]
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_overlap_losses_train_in_fit():
    rng = np.random.default_rng(9)
    x = rng.random((4, 8, 8, 2)).astype("float32")
    y = (x[..., :1] > 0.5).astype("float32")
    for loss in (losses.DiceLoss(), losses.JaccardLoss(power=2, per_image=True)):
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
        history = model.fit(x, y, batch_size=4, epochs=5, verbose=0).history["loss"]
        assert np.all(np.isfinite(history)) and history[-1] < history[0]


# --------------------------------------------------------------- JAX backend

# Computes the losses, the metrics and one weighted `fit` step on fixed data; prints JSON.
_BACKEND_RUN = """
import json
import keras
import numpy as np
from fcnkit import losses, metrics
from fcnkit.training import CropSequence

rng = np.random.default_rng(0)
y_true = (rng.random((3, 8, 8, 2)) > 0.6).astype("float32")
y_pred = rng.random((3, 8, 8, 2)).astype("float32")
weights = (1 + 9 * rng.random((3, 8, 8))).astype("float32")
values = {
    "dice": losses.DiceLoss()(y_true, y_pred),
    "j2 per image macro": losses.JaccardLoss(power=2, per_image=True, average="macro")(
        y_true, y_pred),
    "weighted": losses.WeightedBinaryCrossentropy()(y_true, y_pred, sample_weight=weights),
    "dice metric": metrics.DiceCoefficient()(y_true, y_pred),
    "soft jaccard per image": metrics.JaccardIndex(threshold=None, per_image=True)(
        y_true, y_pred),
}
model = keras.Sequential([keras.Input((None, None, 2)),
                          keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
model.set_weights([np.full((3, 3, 2, 1), 0.05, "float32"), np.zeros(1, "float32")])
model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.WeightedBinaryCrossentropy())
images = rng.random((2, 16, 16, 2)).astype("float32")
stream = CropSequence(images, (images[..., :1] > 0.5).astype("float32"), 8, batch_size=2,
                      steps_per_epoch=2, weight_maps=1 + 9 * images[..., 0])
values["fit loss"] = model.fit(stream, epochs=1, verbose=0, shuffle=False).history["loss"][0]
values["kernel sum"] = np.sum(model.get_weights()[0])
print(json.dumps({k: float(keras.ops.convert_to_numpy(v)) for k, v in values.items()}))
"""


@pytest.mark.slow
def test_same_numbers_on_jax(capsys):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "TF_ENABLE_ONEDNN_OPTS": "0"}
    completed = subprocess.run([sys.executable, "-c", _BACKEND_RUN], env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    jax = json.loads(completed.stdout.strip().splitlines()[-1])
    exec(_BACKEND_RUN, {})  # the same on TensorFlow, in this process
    tensorflow = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert tensorflow.keys() == jax.keys()
    for name in tensorflow:
        assert jax[name] == pytest.approx(tensorflow[name], rel=1e-5, abs=1e-6), name
