"""fcnkit.metrics.DiceCoefficient and JaccardIndex: Keras metrics with state, on sets and
soft, per image and over everything seen, micro and macro; checked against the set
functions, NumPy, Keras's IoU metrics, `Model.evaluate` and `.keras` round trips."""

import keras
import numpy as np
import pytest

from fcnkit import losses, metrics


def random_pair(seed, shape=(5, 6, 7, 1), empty_image=None):
    rng = np.random.default_rng(seed)
    truth = (rng.random(shape) > 0.6).astype("float32")
    prediction = rng.random(shape).astype("float32")
    if empty_image is not None:  # an image with nothing to find (but something found)
        truth[empty_image] = 0
    return truth, prediction


def result(metric):
    return float(keras.ops.convert_to_numpy(metric.result()))


def stream(metric, truth, prediction, batch_size, sample_weight=None):
    """Update `metric` batch by batch; return its result."""
    metric.reset_state()
    for start in range(0, len(truth), batch_size):
        part = slice(start, start + batch_size)
        weights = None if sample_weight is None else sample_weight[part]
        metric.update_state(truth[part], prediction[part], sample_weight=weights)
    return result(metric)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_over_everything_seen_equals_the_set_functions_on_all_of_it(batch_size):
    truth, prediction = random_pair(0, empty_image=2)
    assert stream(metrics.DiceCoefficient(), truth, prediction, batch_size) == pytest.approx(
        metrics.dice_coefficient(truth, prediction), rel=1e-6)
    assert stream(metrics.JaccardIndex(), truth, prediction, batch_size) == pytest.approx(
        metrics.jaccard_index(truth, prediction), rel=1e-6)
    assert stream(metrics.JaccardIndex(threshold=0.7), truth, prediction, batch_size) == (
        pytest.approx(metrics.jaccard_index(truth, prediction, threshold=0.7), rel=1e-6))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_per_image_is_the_mean_of_the_images_scores(batch_size):
    truth, prediction = random_pair(1, empty_image=2)
    dice = [metrics.dice_coefficient(t, p) for t, p in zip(truth, prediction)]
    jaccard = [metrics.jaccard_index(t, p) for t, p in zip(truth, prediction)]
    assert jaccard[2] == 0.0  # empty truth, non-empty prediction
    assert stream(metrics.DiceCoefficient(per_image=True), truth, prediction, batch_size) == (
        pytest.approx(np.mean(dice), rel=1e-6))
    assert stream(metrics.JaccardIndex(per_image=True), truth, prediction, batch_size) == (
        pytest.approx(np.mean(jaccard), rel=1e-6))


def test_soft_scores_are_one_minus_the_losses_with_epsilon_zero():
    truth, prediction = random_pair(2, shape=(3, 4, 4, 2))
    truth = truth * 0.8  # soft targets too
    for per_image in (False, True):
        dice = metrics.DiceCoefficient(threshold=None, per_image=per_image)
        jaccard = metrics.JaccardIndex(threshold=None, per_image=per_image)
        dice_loss = losses.dice_loss(truth, prediction, per_image=per_image, epsilon=0)
        jaccard_loss = losses.jaccard_loss(truth, prediction, per_image=per_image, epsilon=0)
        assert stream(dice, truth, prediction, 2) == pytest.approx(
            float(np.mean(1 - keras.ops.convert_to_numpy(dice_loss))), rel=1e-6)
        assert stream(jaccard, truth, prediction, 3) == pytest.approx(
            float(np.mean(1 - keras.ops.convert_to_numpy(jaccard_loss))), rel=1e-6)


def test_macro_average_over_classes_by_hand():
    # One image 1×4, two classes. Class 0: truth {0, 1}, prediction {0} -> D = 2/3, J = 1/2.
    # Class 1: truth {2, 3}, prediction {1, 2, 3} -> D = 4/5, J = 2/3.
    truth = np.array([[[[1, 0], [1, 0], [0, 1], [0, 1]]]], "float32")
    prediction = np.array([[[[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]]]], "float32")
    dice = metrics.DiceCoefficient(threshold="argmax", average="macro", num_classes=2)
    jaccard = metrics.JaccardIndex(threshold="argmax", average="macro", num_classes=2)
    assert stream(dice, truth, prediction, 1) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert stream(jaccard, truth, prediction, 1) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # Micro: all classes in one set: |A ∩ B| = 3, |A| = |B| = 4.
    micro = metrics.DiceCoefficient(threshold="argmax")
    assert stream(micro, truth, prediction, 1) == pytest.approx(6 / 8)


def test_agree_with_keras_iou_metrics():
    truth, prediction = random_pair(3)
    binary_iou = keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.5)
    binary_iou.update_state(truth, prediction)
    assert stream(metrics.JaccardIndex(), truth, prediction, 2) == pytest.approx(
        result(binary_iou), rel=1e-6)

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, (4, 6, 6))
    one_hot = np.eye(3, dtype="float32")[labels]
    probabilities = rng.random((4, 6, 6, 3)).astype("float32")
    mean_iou = keras.metrics.OneHotMeanIoU(num_classes=3)
    mean_iou.update_state(one_hot, probabilities)
    ours = metrics.JaccardIndex(threshold="argmax", average="macro", num_classes=3)
    assert stream(ours, one_hot, probabilities, 3) == pytest.approx(result(mean_iou), rel=1e-6)


def test_sample_weights():
    truth, prediction = random_pair(5)
    # Over everything: an integer weight per image counts its pixels that many times.
    weights = np.array([2, 0, 1, 3, 1], "float32")
    repeated = np.repeat(np.arange(5), weights.astype(int))
    for metric, function in ((metrics.DiceCoefficient(), metrics.dice_coefficient),
                             (metrics.JaccardIndex(), metrics.jaccard_index)):
        assert stream(metric, truth, prediction, 2, weights) == pytest.approx(
            function(truth[repeated], prediction[repeated]), rel=1e-6)
    # A per-pixel map: weighted sizes, in NumPy.
    pixel_weights = np.random.default_rng(6).random(truth.shape[:3]).astype("float32")
    a, b = truth[..., 0], (prediction[..., 0] >= 0.5).astype("float32")
    expected = 2 * np.sum(pixel_weights * a * b) / np.sum(pixel_weights * (a + b))
    for sample_weight in (pixel_weights, pixel_weights[..., None]):
        assert stream(metrics.DiceCoefficient(), truth, prediction, 5, sample_weight) == (
            pytest.approx(expected, rel=1e-5))
    # Per image: a weighted mean of the images' scores.
    dice = np.array([metrics.dice_coefficient(t, p) for t, p in zip(truth, prediction)])
    assert stream(metrics.DiceCoefficient(per_image=True), truth, prediction, 2, weights) == (
        pytest.approx(np.sum(weights * dice) / np.sum(weights), rel=1e-6))


def test_empty_sets_and_nothing_seen():
    empty = np.zeros((2, 3, 3, 1), "float32")
    for per_image in (False, True):
        for metric_class in (metrics.DiceCoefficient, metrics.JaccardIndex):
            metric = metric_class(per_image=per_image)
            assert result(metric) == 0.0  # no image seen yet, as Keras's metrics
            metric.update_state(empty, empty)
            assert result(metric) == 1.0  # two empty sets agree perfectly
    # A class absent from truth and prediction scores 1 in the macro average.
    truth = np.zeros((1, 2, 2, 2), "float32")
    truth[..., 0] = 1
    metric = metrics.JaccardIndex(threshold=None, average="macro", num_classes=2)
    metric.update_state(truth, truth)
    assert result(metric) == 1.0


def test_usable_in_compile_evaluate_and_keras_files(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, None, 1)),
                              keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
    dice = metrics.DiceCoefficient(name="dice")
    soft = metrics.JaccardIndex(threshold=None, per_image=True, name="soft_jaccard")
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=[dice, soft])
    x = np.random.default_rng(7).random((6, 8, 8, 1)).astype("float32")
    y = (x > 0.5).astype("float32")
    scores = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    prediction = model.predict(x, verbose=0)
    assert scores["dice"] == pytest.approx(metrics.dice_coefficient(y, prediction), rel=1e-5)
    soft_jaccard = 1 - keras.ops.convert_to_numpy(
        losses.jaccard_loss(y, prediction, per_image=True, epsilon=0))
    assert scores["soft_jaccard"] == pytest.approx(float(soft_jaccard.mean()), rel=1e-5)
    # Evaluating again resets the state first: same numbers.
    assert model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True) == pytest.approx(
        scores)
    history = model.fit(x, y, batch_size=3, epochs=1, verbose=0).history
    assert set(history) == {"loss", "dice", "soft_jaccard"}

    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.evaluate(x, y, batch_size=4, verbose=0, return_dict=True) == pytest.approx(
        model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True), rel=1e-6)


METRICS = [
    metrics.DiceCoefficient(threshold=0.3, per_image=True, name="dice_03"),
    metrics.DiceCoefficient(threshold=None, average="macro", num_classes=3),
    metrics.JaccardIndex(threshold="argmax", average="macro", num_classes=4, dtype="float64"),
]


@pytest.mark.parametrize("metric", METRICS, ids=lambda metric: metric.name)
def test_config_round_trip(metric):
    config = metric.get_config()
    clone = type(metric).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(metric))
    assert type(restored) is type(metric) and restored.get_config() == config


def error_text(error_type, function, *args, **kwargs):
    with pytest.raises(error_type) as error:
        function(*args, **kwargs)
    return str(error.value)


def test_errors():
    assert error_text(ValueError, metrics.DiceCoefficient, threshold=1.5) == (
        '`threshold` must be a probability in [0, 1] (sets: y_pred >= threshold), "argmax" '
        "(sets: the class of the largest probability) or None (soft scores). Received: "
        "threshold=1.5. Pass e.g. threshold=0.5."
    )
    assert error_text(ValueError, metrics.JaccardIndex, average="macro") == (
        '`JaccardIndex(average="macro")` keeps one score per class, so it needs their '
        "number. Received: num_classes=None. Pass num_classes=C, the number of channels of "
        "y_pred."
    )
    y = np.ones((2, 3, 3, 2), "float32")
    metric = metrics.DiceCoefficient(num_classes=3)
    assert error_text(ValueError, metric.update_state, y, y) == (
        "`DiceCoefficient` was made with num_classes=3, but y_pred has 2 channels. "
        "Received: y_pred.shape=(2, 3, 3, 2). Pass num_classes=2."
    )
    assert error_text(ValueError, metrics.DiceCoefficient().update_state, y[..., 0], y) == (
        "`DiceCoefficient` needs `y_true` and `y_pred` of the same shape (batch, ..., "
        "channels). Received: y_true.shape=(2, 3, 3), y_pred.shape=(2, 3, 3, 2). One-hot "
        "encode class labels and keep the channel axis of binary masks, e.g. masks[..., None]."
    )
    argmax = metrics.JaccardIndex(threshold="argmax")
    assert error_text(ValueError, argmax.update_state, y[..., :1], y[..., :1]) == (
        '`JaccardIndex` with threshold="argmax" needs one channel per class; y_pred has one '
        "channel. Received: y_pred.shape=(2, 3, 3, 1). Use threshold=0.5 for a sigmoid output."
    )
    per_image = metrics.JaccardIndex(per_image=True)
    assert error_text(ValueError, per_image.update_state, y, y,
                      sample_weight=np.ones((2, 3, 3))) == (
        "`JaccardIndex(per_image=True)` averages the images' scores and takes one weight "
        "per image, shape (batch,). Received: sample_weight.shape=(2, 3, 3). Use "
        "per_image=False to weight pixels."
    )
    with pytest.raises(TypeError, match="`per_image` must be True or False"):
        metrics.JaccardIndex(per_image="yes")
