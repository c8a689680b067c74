"""Training on crops: paired augmentation, determinism, settings, tasks, checkpoints and resume."""

import ast
import csv
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from fcnkit import datasets, metrics, training
from fcnkit.training import checkpoint, device


def coordinate_images(count=2, height=24, width=20):
    """Images whose pixels encode (image, row, column); masks a function of them."""
    index, rows, cols = np.meshgrid(np.arange(count), np.arange(height), np.arange(width),
                                    indexing="ij")
    images = np.stack([index, rows, cols], axis=-1).astype("float32")
    masks = ((rows * 7 + cols * 3 + index) % 5 == 0).astype("uint8")[..., None]
    return images, masks


def check_crop_is_paired(image_crop, mask_crop, images, masks):
    """The crop must be a (possibly flipped) window of one image, and the mask
    crop the same window of that image's mask, with the same flips."""
    which = int(image_crop[0, 0, 0])
    rows, cols = image_crop[..., 1].astype(int), image_crop[..., 2].astype(int)
    assert (image_crop[..., 0] == which).all()
    np.testing.assert_array_equal(mask_crop, masks[which][rows, cols])
    # Rows and columns each run in steps of exactly +1 or -1 (a flip at most).
    for steps in (np.unique(np.diff(rows, axis=0)), np.unique(np.diff(cols, axis=1))):
        assert len(steps) == 1 and steps[0] in (1, -1)
    return rows[1, 0] < rows[0, 0], cols[0, 1] < cols[0, 0]


def test_tf_data_crops_are_paired_and_flipped():
    images, masks = coordinate_images()
    dataset = training.crop_dataset(images, masks, crop_size=8, batch_size=16, seed=3)
    flips = set()
    for x_batch, y_batch in dataset.take(4):
        assert y_batch.dtype.name == "uint8"
        for x, y in zip(x_batch.numpy(), y_batch.numpy()):
            flips.add(check_crop_is_paired(x, y, images, masks))
    assert flips == {(False, False), (False, True), (True, False), (True, True)}


def test_numpy_sequence_crops_are_paired_and_flipped():
    images, masks = coordinate_images()
    sequence = training.CropSequence(images, masks, 8, batch_size=16, steps_per_epoch=4, seed=3)
    flips = set()
    for step in range(len(sequence)):
        x_batch, y_batch = sequence[step]
        for x, y in zip(x_batch, y_batch):
            flips.add(check_crop_is_paired(x, y, images, masks))
    assert flips == {(False, False), (False, True), (True, False), (True, True)}


def test_no_flips_keeps_orientation():
    images, masks = coordinate_images()
    x_batch, y_batch = next(iter(training.crop_dataset(images, masks, 8, 32, flips=False)))
    for x, y in zip(x_batch.numpy(), y_batch.numpy()):
        assert check_crop_is_paired(x, y, images, masks) == (False, False)


def test_same_seed_same_crops_other_seed_other_crops():
    images, masks = coordinate_images()

    def first_batch(seed):
        return next(iter(training.crop_dataset(images, masks, 8, 8, seed=seed)))[0].numpy()

    reference = first_batch(1)
    keras.utils.set_random_seed(123)  # the global seed must not matter
    np.testing.assert_array_equal(first_batch(1), reference)
    assert not np.array_equal(first_batch(2), reference)


def test_start_continues_the_stream():
    images, masks = coordinate_images()
    stream = training.crop_dataset(images, masks, 8, 4, seed=5)
    third_batch = list(stream.take(3))[2][0].numpy()
    resumed = training.crop_dataset(images, masks, 8, 4, seed=5, start=2 * 4)
    np.testing.assert_array_equal(next(iter(resumed))[0].numpy(), third_batch)


def test_narrow_image_type_keeps_target_values():
    images, masks = coordinate_images()
    soft_targets = masks.astype("float32") * 0.25 + 0.5  # values 0.5 and 0.75
    x_batch, y_batch = next(iter(training.crop_dataset(images.astype("uint8"), soft_targets,
                                                       8, 16)))
    assert x_batch.dtype.name == "uint8" and y_batch.dtype.name == "float32"
    for x, y in zip(x_batch.numpy(), y_batch.numpy()):
        check_crop_is_paired(x.astype("float32"), y, images, soft_targets)


def test_crops_cover_the_whole_image():
    images, masks = coordinate_images(count=1, height=12, width=12)
    seen = np.zeros((12, 12), bool)
    # 512 crops of 4×4 among 81 positions: each corner position is drawn
    # about 6 times.
    for x_batch, _ in training.crop_dataset(images, masks, 4, 64, seed=0).take(8):
        for crop in x_batch.numpy():
            seen[crop[..., 1].astype(int), crop[..., 2].astype(int)] = True
    assert seen.all()


@pytest.mark.parametrize(
    "images, targets, crop, message",
    [
        (np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1)), 9,
         "`crop_size` must be between 1 and the smallest image side (8). "
         "Received: crop_size=9. Use a smaller crop or larger images."),
        (np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 7, 1)), 4,
         "Each target must have the count, height and width of its image. "
         "Received: images.shape=(1, 8, 8, 1), targets.shape=(1, 8, 7, 1)"),
        (np.zeros((8, 8, 1)), np.zeros((8, 8, 1)), 4,
         "`images` and `targets` must be 4D arrays (count, height, width, channels). "
         "Received: images.shape=(8, 8, 1), targets.shape=(8, 8, 1)"),
    ],
)
def test_bad_inputs(images, targets, crop, message):
    with pytest.raises(ValueError) as error:
        training.crop_dataset(images, targets, crop, 2)
    assert str(error.value) == message


def test_predict_image_pads_by_reflection_and_crops_back():
    model = keras.Sequential([keras.Input((None, None, 1)), keras.layers.AveragePooling2D(4),
                              keras.layers.UpSampling2D(4)])
    image = np.random.default_rng(0).random((1, 10, 13, 1)).astype("float32")
    # NumPy reference: reflect-pad 10×13 to 12×16, average 4×4 blocks, repeat, crop.
    padded = np.pad(image[0, ..., 0], ((0, 2), (0, 3)), mode="reflect")
    blocks = padded.reshape(3, 4, 4, 4).mean(axis=(1, 3))
    expected = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)[:10, :13]
    result = training.predict_image(model, image, multiple=4)
    np.testing.assert_allclose(result[0, ..., 0], expected, rtol=1e-6)


# ------------------------------------------------------- counts and sizes


IMAGES = np.zeros((1, 16, 16, 1), "float32")
IDENTITY = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Identity()])

# Every count or size of the data functions, through the package's one validator.
COUNT_CALLS = {
    "crop_dataset.crop_size": lambda v: training.crop_dataset(IMAGES, IMAGES, v, 2),
    "crop_dataset.batch_size": lambda v: training.crop_dataset(IMAGES, IMAGES, 8, v),
    "CropSequence.crop_size": lambda v: training.CropSequence(IMAGES, IMAGES, v, 2, 1),
    "CropSequence.batch_size": lambda v: training.CropSequence(IMAGES, IMAGES, 8, v, 1),
    "CropSequence.steps_per_epoch": lambda v: training.CropSequence(IMAGES, IMAGES, 8, 2, v),
    "predict_image.multiple": lambda v: training.predict_image(IDENTITY, IMAGES, multiple=v),
    "predict_image.batch_size": lambda v: training.predict_image(IDENTITY, IMAGES, batch_size=v),
}


@pytest.mark.parametrize("call", COUNT_CALLS)
def test_counts_take_numpy_integers_and_refuse_bools_floats_and_zero(call):
    function, name = COUNT_CALLS[call], call.split(".")[1]
    function(np.int64(4))  # accepted, like 4
    function(np.uint8(4))
    for value, kind in ((True, "bool"), (4.0, "float"), ("4", "str")):
        with pytest.raises(TypeError) as error:
            function(value)
        assert str(error.value).startswith(
            f"`{name}` must be a positive integer (a Python int or a NumPy integer). "
            f"Received: {name}={value!r} of type {kind}. Pass "
        )
    with pytest.raises(ValueError) as error:
        function(0)
    assert str(error.value) == (
        f"`{name}` must be a positive integer (1 or more). Received: {name}=0. "
        f"Pass {name}=1 or more."
    )


@pytest.mark.parametrize(
    "kwargs, error_type, message",
    [
        ({"seed": -1}, ValueError,
         "`seed` must be an integer >= 0. Received: seed=-1. Pass seed=0 or more."),
        ({"start": 1.0}, TypeError,
         "`start` must be an integer >= 0 (a Python int or a NumPy integer). "
         "Received: start=1.0 of type float. Pass start=1 (an int, not a float)."),
        ({"flips": 1}, TypeError,
         "`flips` must be True or False. Received: flips=1 of type int. "
         "Pass flips=True or flips=False."),
    ],
)
def test_crop_dataset_seed_start_and_flips(kwargs, error_type, message):
    with pytest.raises(error_type) as error:
        training.crop_dataset(IMAGES, IMAGES, 8, 2, **kwargs)
    assert str(error.value) == message


def test_numpy_sequence_continues_with_the_next_epoch():
    images, masks = coordinate_images()
    sequence = training.CropSequence(images, masks, 8, 4, steps_per_epoch=2, seed=1)
    sequence.on_epoch_end()
    resumed = training.CropSequence(images, masks, 8, 4, steps_per_epoch=2, seed=1,
                                    first_epoch=np.int64(1))
    np.testing.assert_array_equal(resumed[1][0], sequence[1][0])
    assert not np.array_equal(resumed[1][0], training.CropSequence(
        images, masks, 8, 4, steps_per_epoch=2, seed=1)[1][0])


# ---------------------------------------------------------------- settings


def test_settings_normalise_types_and_names():
    settings = training.TrainSettings(dataset="NUCLEI", model="UNet", epochs=np.int32(3),
                                      learning_rate=np.float32(0.5), batch_norm=np.bool_(True),
                                      seed=np.uint8(2))
    assert (settings.dataset, settings.model) == ("nuclei", "unet")
    assert [type(settings.epochs), type(settings.learning_rate), type(settings.batch_norm),
            type(settings.seed)] == [int, float, bool, int]
    assert settings == training.TrainSettings(epochs=3, learning_rate=0.5, batch_norm=True,
                                              seed=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 4


def test_settings_round_trip_through_json_and_diff():
    settings = training.TrainSettings(dataset="text_deblur", model="plain_cnn", seed=3)
    again = training.TrainSettings.from_dict(json.loads(json.dumps(settings.as_dict())))
    assert again == settings and settings.diff(again) == {}
    other = dataclasses.replace(settings, learning_rate=1e-3, depth=2)
    assert settings.diff(other) == {"learning_rate": (0.002, 0.001), "depth": (3, 2)}
    assert other.diff(settings) == {"learning_rate": (0.001, 0.002), "depth": (2, 3)}
    # A record written before a setting existed reads as its default.
    assert training.TrainSettings.from_dict({"seed": 3, "dataset": "text_deblur",
                                             "model": "plain_cnn"}) == settings
    with pytest.raises(ValueError) as error:
        training.TrainSettings.from_dict({"seed": 3, "optimizer": "sgd"})
    assert str(error.value).startswith("Unknown training settings: optimizer. Expected names "
                                       "among dataset, model, epochs, ")
    with pytest.raises(TypeError):
        settings.diff(settings.as_dict())


# ------------------------------------------------------------------- tasks


def test_every_dataset_kind_has_a_task():
    assert set(training.TASKS) == set(datasets.KINDS)
    assert training.task_for("nuclei").output_activation == "sigmoid"
    assert training.task_for("text_deblur").loss == "mean_absolute_error"


def test_task_scores_by_hand():
    truth = np.array([1, 1, 0, 0])
    scores = training.task_for("nuclei").evaluate(None, truth, np.array([0.9, 0.2, 0.8, 0.1]))
    assert scores == {"test_dice": 0.5, "test_jaccard": 0.3333}
    target, blurred, restored = np.zeros(4), np.full(4, 0.1), np.full(4, 0.01)
    # MSE 0.01 -> 20 dB; MSE 1e-4 -> 40 dB.
    assert training.task_for("text_deblur").evaluate(blurred, target, restored) == {
        "test_psnr_input": 20.0, "test_psnr": 40.0}


def test_training_code_never_tests_a_dataset_name():
    """What a dataset implies comes from its description, not from `== "nuclei"`."""
    names = set(datasets.DATASETS)
    package = Path(training.__file__).parent
    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
                found += [(path.name, node.lineno) for value in constants if value in names]
    assert found == []


# ------------------------------------------------------------------- train

TINY = dict(crop_size=32, batch_size=2, steps_per_epoch=2, depth=1, filters=4, verbose=0)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def learning_rate(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def test_train_writes_everything_and_resumes_past_the_plan(tmp_path):
    out = tmp_path / "run"
    first = training.train("nuclei", "unet", epochs=1, out=out, **TINY)
    for name in ("model.keras", "history.csv", "metrics.json", "report.png",
                 "checkpoint.keras"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == first
    assert 0.0 <= first["test_jaccard"] <= first["test_dice"] <= 1.0
    assert len(read_rows(out / "history.csv")) == 1

    checkpoint_weights = keras.models.load_model(out / "checkpoint.keras").get_weights()
    second = training.train("nuclei", "unet", epochs=3, out=out, resume=True, **TINY)
    assert second["resumed_from_epoch"] == 1 and second["schedule_epochs"] == 1
    rows = read_rows(out / "history.csv")
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert training.read_record(out) == {
        "format": 1,
        "epochs_done": 3,
        "settings": {"dataset": "nuclei", "model": "unet", "epochs": 1, "crop_size": 32,
                     "batch_size": 2, "steps_per_epoch": 2, "learning_rate": 0.002,
                     "depth": 1, "filters": 4, "batch_norm": False, "loss": "crossentropy",
                     "weight_map": False, "seed": 0},
        "environment": {"backend": "tensorflow", "mixed_precision": False},
    }
    resumed = keras.models.load_model(out / "checkpoint.keras")
    # The optimizer went on counting from the checkpoint: 3 epochs of 2 steps.
    assert int(resumed.optimizer.iterations) == 3 * TINY["steps_per_epoch"]
    # The schedule planned 1 epoch (2 steps): the 2 extra epochs ran at its
    # final rate, a tenth of the learning rate.
    assert learning_rate(resumed) == pytest.approx(0.1 * 0.002, rel=1e-6)
    assert any(not np.array_equal(a, b)
               for a, b in zip(checkpoint_weights, resumed.get_weights()))


def test_resume_trims_a_history_row_logged_after_the_checkpoint(tmp_path):
    training.train("text_deblur", "plain_cnn", epochs=1, out=tmp_path, **TINY)
    history = tmp_path / "history.csv"
    history.write_text(history.read_text() + "1,0.5,0.5\n")  # an epoch cut short
    training.train("text_deblur", "plain_cnn", epochs=2, out=tmp_path, resume=True, **TINY)
    assert [row["epoch"] for row in read_rows(history)] == ["0", "1"]


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """A one-epoch U-Net run on nuclei, resumed (and refused) by several tests."""
    out = tmp_path_factory.mktemp("recorded")
    training.train("nuclei", "unet", epochs=1, out=out, **TINY)
    return out


def folder_contents(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


# Every setting a resumed run must keep: (argument, value in this call, in the run).
CHANGED_SETTINGS = [
    ("dataset", "text_deblur", "nuclei"),
    ("model", "plain_cnn", "unet"),
    ("depth", 2, 1),
    ("filters", 8, 4),
    ("batch_norm", True, False),
    ("learning_rate", 0.001, 0.002),
    ("crop_size", 16, 32),
    ("batch_size", 3, 2),
    ("steps_per_epoch", 3, 2),
    ("seed", 1, 0),
    ("loss", "jaccard2", "crossentropy"),
    ("weight_map", True, False),
]
# Another dataset brings its task's default loss with it: both are named.
ALSO_CHANGED = {
    "dataset": "; loss='crossentropy' in the run, 'mean_absolute_error' in this call",
}


@pytest.mark.parametrize("name, value, recorded", CHANGED_SETTINGS,
                         ids=[name for name, _, _ in CHANGED_SETTINGS])
def test_resume_refuses_each_changed_setting(recorded_run, name, value, recorded):
    before = folder_contents(recorded_run)
    arguments = {"dataset": "nuclei", "model": "unet", **TINY, name: value}
    with pytest.raises(ValueError) as error:
        training.train(epochs=2, out=recorded_run, resume=True, **arguments)
    assert str(error.value) == (
        f"`resume=True` continues the run in {recorded_run}, which was trained with other "
        f"settings: {name}={recorded!r} in the run, {value!r} in this call"
        f"{ALSO_CHANGED.get(name, '')}. Resume with the run's settings, or train into "
        "another folder."
    )
    assert folder_contents(recorded_run) == before  # refused before writing anything


def test_resume_names_every_changed_setting(recorded_run):
    with pytest.raises(ValueError) as error:
        training.train("nuclei", "unet", epochs=2, out=recorded_run, resume=True,
                       **{**TINY, "seed": 5, "learning_rate": 0.01})
    assert ("settings: learning_rate=0.002 in the run, 0.01 in this call; "
            "seed=0 in the run, 5 in this call. ") in str(error.value)


@pytest.mark.parametrize(
    "environment, listed",
    [({"backend": "jax", "mixed_precision": False},
      "backend='tensorflow' in the run, 'jax' in this call"),
     ({"backend": "tensorflow", "mixed_precision": True},
      "mixed_precision=False in the run, True in this call")],
)
def test_resume_refuses_another_backend_or_precision(recorded_run, monkeypatch, environment,
                                                     listed):
    monkeypatch.setattr(device, "environment", lambda mixed_precision=None: environment)
    with pytest.raises(ValueError) as error:
        training.train("nuclei", "unet", epochs=2, out=recorded_run, resume=True, **TINY)
    assert f"which was trained with other settings: {listed}. Resume" in str(error.value)


def test_resume_needs_epochs_left(recorded_run):
    with pytest.raises(ValueError) as error:
        training.train("nuclei", "unet", epochs=1, out=recorded_run, resume=True, **TINY)
    assert str(error.value) == (
        f"The run in {recorded_run} has already done 1 epochs. Received: epochs=1. "
        "Ask for more epochs to continue it."
    )


@pytest.mark.parametrize(
    "kwargs, error_type, message",
    [
        ({"crop_size": 36, "depth": 3}, ValueError,
         "`crop_size` must be divisible by 8, the total stride of a U-Net of depth 3. "
         "Received: crop_size=36. Use 32 or 40."),
        ({"model": "fcn", "crop_size": 100}, ValueError,
         "`crop_size` must be divisible by 32, the total stride of an FCN. "
         "Received: crop_size=100. Use 96 or 128."),
        ({"model": "segnet", "crop_size": 12, "depth": 4}, ValueError,
         "`crop_size` must be at least 2**depth=16 for a SegNet of depth 4. Received: "
         "crop_size=12. Use 16 or more, or a smaller depth."),
        ({"model": "segnet", "crop_size": 256, "depth": 8}, ValueError,
         "segnet with depth=8 needs held-out images of at least 256 pixels a side, "
         "but the nuclei test images have a side of 128. Received: depth=8. "
         "Use depth=7 or less."),
        ({"crop_size": 512}, ValueError,
         "`crop_size` must be at most the smallest side of the nuclei training images "
         "(384 pixels). Received: crop_size=512. Use 384 or less."),
        ({"crop_size": 256, "depth": 8}, ValueError,
         "unet with depth=8 needs held-out images of at least 256 pixels a side, "
         "but the nuclei test images have a side of 128. Received: depth=8. "
         "Use depth=7 or less."),
        ({"epochs": 0}, ValueError,
         "`epochs` must be a positive integer (1 or more). Received: epochs=0. "
         "Pass epochs=1 or more."),
        ({"epochs": True}, TypeError,
         "`epochs` must be a positive integer (a Python int or a NumPy integer). "
         "Received: epochs=True of type bool. Pass a number such as epochs=1, "
         "not True or False."),
        ({"steps_per_epoch": 2.5}, TypeError,
         "`steps_per_epoch` must be a positive integer (a Python int or a NumPy integer). "
         "Received: steps_per_epoch=2.5 of type float. Pass a whole number, "
         "e.g. steps_per_epoch=int(...)."),
        ({"batch_norm": "yes"}, TypeError,
         "`batch_norm` must be True or False. Received: batch_norm='yes' of type str. "
         "Pass batch_norm=True or batch_norm=False."),
        ({"learning_rate": -0.1}, ValueError,
         "`learning_rate` must be a finite number > 0. Received: learning_rate=-0.1. "
         "Pass a positive number such as learning_rate=0.001."),
        ({"learning_rate": "0.1"}, TypeError,
         "`learning_rate` must be a number (int or float). Received: learning_rate='0.1' "
         "of type str. Pass a number such as learning_rate=0.001."),
        ({"seed": -1}, ValueError,
         "`seed` must be an integer >= 0. Received: seed=-1. Pass seed=0 or more."),
        ({"model": "unett"}, ValueError,
         '`model` must be one of "unet", "plain_cnn", "fcn", "segnet". Received: model=\'unett\'. '
         'Did you mean "unet"?'),
        ({"verbose": 3}, ValueError,
         "`verbose` must be 0 (silent), 1 (progress bars) or 2 (one line per epoch). "
         "Received: verbose=3. Pass one of 0, 1, 2."),
        ({"resume": "no"}, TypeError,
         "`resume` must be True or False. Received: resume='no' of type str. "
         "Pass resume=True or resume=False."),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, kwargs, error_type,
                                                             message):
    arguments = {"dataset": "nuclei", "model": "unet", "epochs": 1, **TINY, **kwargs}
    with pytest.raises(error_type) as error:
        training.train(out=tmp_path / "run", **arguments)
    assert str(error.value) == message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "model, layer, settings",
    [("fcn", "upscore8", dict(TINY, filters=2)),
     ("segnet", "decoder_block1_unpool", dict(TINY, batch_norm=True))],
)
def test_fcn_and_segnet_train_and_predict_the_held_out_image(tmp_path, model, layer,
                                                              settings):
    result = training.train("nuclei", model, epochs=1, out=tmp_path, **settings)
    network = keras.models.load_model(tmp_path / "model.keras")
    assert network.get_layer(layer) is not None  # the architecture asked for
    # The held-out scores are those of the saved model on the whole test image
    # (128 × 512: a multiple of 32, so the FCN needs no padding).
    (_, _), (x_test, y_test) = datasets.load("nuclei")
    predicted = network.predict(x_test, verbose=0)
    assert predicted.shape == y_test.shape
    assert result["test_dice"] == pytest.approx(
        float(metrics.dice_coefficient(y_test, predicted)), abs=1e-3)


def test_restoration_run_takes_numpy_integers_and_reports_psnr(tmp_path):
    numpy_tiny = {key: np.int64(value) for key, value in TINY.items()}
    result = training.train("text_deblur", "plain_cnn", epochs=np.int64(1), out=tmp_path,
                            seed=np.int32(0), **numpy_tiny)
    assert "test_dice" not in result
    assert result["settings"]["steps_per_epoch"] == 2 and result["epochs"] == 1
    # NumPy reference: PSNR = 10 log10(1 / MSE) of the held-out image.
    (_, _), (x_test, y_test) = datasets.load("text_deblur")
    mse = np.mean((y_test.astype("float64") - x_test) ** 2)
    assert result["test_psnr_input"] == round(10 * math.log10(1 / mse), 2)
    model = keras.models.load_model(tmp_path / "model.keras")
    predicted = model.predict(x_test, verbose=0).astype("float64")
    expected = 10 * math.log10(1 / np.mean((y_test - predicted) ** 2))
    assert result["test_psnr"] == pytest.approx(expected, abs=0.011)


def test_a_new_dataset_needs_only_its_description(tmp_path, monkeypatch):
    """A segmentation dataset added to DATASETS trains with the segmentation task:
    sigmoid output, binary cross-entropy, Dice and Jaccard."""
    rng = np.random.default_rng(0)
    images = rng.random((3, 32, 32, 3)).astype("float32")
    masks = (images[..., :1] > 0.5).astype("uint8")
    info = datasets.DatasetInfo(
        name="squares", task="toy", kind="segmentation", source="random", split="2 + 1",
        train_shape=(2, 32, 32, 3), test_shape=(1, 32, 32, 3), target_channels=1,
        builder=lambda: ((images[:2], masks[:2]), (images[2:], masks[2:])),
    )
    monkeypatch.setitem(datasets.DATASETS, "squares", info)
    result = training.train("squares", "plain_cnn", epochs=1, out=tmp_path,
                            **{**TINY, "crop_size": 16})
    assert {"test_dice", "test_jaccard"} <= set(result) and "test_psnr" not in result
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.loss == "binary_crossentropy"
    assert model.get_layer("output").activation.__name__ == "sigmoid"


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(ValueError) as error:
        training.train("nuclei", "unet", epochs=1, out=tmp_path, resume=True, **TINY)
    assert str(error.value) == (
        f"`resume=True` needs a checkpoint in {tmp_path}, but there is no "
        "checkpoint.keras there. Run once without --resume first."
    )
    assert list(tmp_path.iterdir()) == []


def test_a_new_run_removes_an_older_checkpoint(tmp_path):
    (tmp_path / "checkpoint.keras").write_text("an older run")
    (tmp_path / "checkpoint-partial.keras").write_text("an older crash")
    with pytest.raises(ValueError, match="holds no readable run record"):
        training.read_record(tmp_path)
    settings = training.TrainSettings(**{k: v for k, v in TINY.items() if k != "verbose"})
    checkpoint.open_run(tmp_path, settings, device.environment(), resume=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------- the atomic checkpoint

# Run in a child process: train 3 epochs and die (os._exit, no clean-up) in the
# middle of writing the checkpoint of epoch 2, at the step named in argv[2].
_CRASHING_RUN = textwrap.dedent(
    """
    import os, sys
    from fcnkit.training import checkpoint, train

    out, step = sys.argv[1], sys.argv[2]
    original, calls = getattr(checkpoint, step), []

    def crash_on_the_second_checkpoint(*args):
        calls.append(args)
        if len(calls) == 2:
            os._exit(17)
        return original(*args)

    setattr(checkpoint, step, crash_on_the_second_checkpoint)
    train("text_deblur", "plain_cnn", epochs=3, out=out, crop_size=32, batch_size=2,
          steps_per_epoch=2, depth=1, filters=4, verbose=0)
    """
)


@pytest.mark.parametrize("step", ["_add_record", "_publish"],
                         ids=["after the model, before the record",
                              "after the record, before the rename"])
def test_a_crash_between_the_writes_leaves_a_consistent_checkpoint(tmp_path, step):
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
    crashed = subprocess.run([sys.executable, "-c", _CRASHING_RUN, str(out), step],
                             capture_output=True, text=True, env=env, timeout=300)
    assert crashed.returncode == 17, crashed.stderr[-4000:]

    # The process died with epoch 2's model written to the partial file ...
    with zipfile.ZipFile(out / "checkpoint-partial.keras") as partial:
        names = partial.namelist()
        assert "model.weights.h5" in names
        if step == "_publish":  # ... and, here, its record too
            assert json.loads(partial.read("fcnkit-run.json"))["epochs_done"] == 2
        else:
            assert "fcnkit-run.json" not in names
    # ... and history.csv already had epoch 2's row.
    assert len(read_rows(out / "history.csv")) == 2
    # The checkpoint is epoch 1's, model and record together: 1 epoch of 2
    # steps, at the rate of step 2 of the 6 planned (cosine, by hand).
    assert training.read_record(out)["epochs_done"] == 1
    saved = keras.models.load_model(out / "checkpoint.keras")
    assert int(saved.optimizer.iterations) == 1 * 2
    cosine = 0.5 * (1 + math.cos(math.pi * 2 / 6))
    assert learning_rate(saved) == pytest.approx(0.002 * (0.9 * cosine + 0.1), rel=1e-6)

    result = training.train("text_deblur", "plain_cnn", epochs=3, out=out, resume=True, **TINY)
    assert result["resumed_from_epoch"] == 1
    assert not (out / "checkpoint-partial.keras").exists()
    assert [row["epoch"] for row in read_rows(out / "history.csv")] == ["0", "1", "2"]
    assert training.read_record(out)["epochs_done"] == 3
    resumed = keras.models.load_model(out / "checkpoint.keras")
    assert int(resumed.optimizer.iterations) == 3 * 2
    assert learning_rate(resumed) == pytest.approx(0.1 * 0.002, rel=1e-6)  # end of the plan


# Loading the final model below, outside the mixed policy, drops its optimizer
# state with this warning; only the layers' dtypes are checked there.
@pytest.mark.filterwarnings("ignore:Skipping variable loading")
def test_gpu_path_trains_in_mixed_precision_and_restores_the_policy(tmp_path, monkeypatch):
    # The GPU path runs on the CPU too: pretend a GPU is present.
    monkeypatch.setattr(device, "gpu_available", lambda: True)
    result = training.train("nuclei", "unet", epochs=1, out=tmp_path, **TINY)
    assert result["mixed_precision"] is True and result["device"] == "gpu"
    assert training.read_record(tmp_path)["environment"]["mixed_precision"] is True
    assert keras.mixed_precision.global_policy().name == "float32"
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.get_layer("encoder_block1_conv1").compute_dtype == "float16"
    assert model.get_layer("output_activation").compute_dtype == "float32"
    assert 0.0 <= result["test_dice"] <= 1.0

    # Resuming loads the checkpoint under the mixed policy, so its loss-scaling
    # optimizer and every optimizer variable come back (Keras warns and skips
    # them otherwise).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = training.train("nuclei", "unet", epochs=2, out=tmp_path, resume=True, **TINY)
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert resumed["resumed_from_epoch"] == 1
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow
def test_demo_reaches_the_held_out_dice_goal(tmp_path):
    """`make demo`'s run (the Makefile's DEMO_EPOCHS, default settings) on the CPU:
    held-out Dice of at least 0.85, the goal the README states."""
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    epochs = int(re.search(r"^DEMO_EPOCHS \?= (\d+)$", makefile, re.M).group(1))
    result = training.train("nuclei", "unet", epochs=epochs, out=tmp_path, verbose=0)
    dice = result["test_dice"]
    assert dice >= 0.85, result
    # One set per image, so the lecture's J = D / (2 - D) holds (to the rounding).
    assert result["test_jaccard"] == pytest.approx(dice / (2 - dice), abs=1e-4)
