"""Training with a chosen loss and with U-Net weight maps: settings, the crop stream with
its weights, `train` end to end (the map reaching the loss, resume), and the command line."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from fcnkit import datasets, losses, training
from fcnkit.training import tasks
from fcnkit.weight_map import unet_weight_map

TINY = dict(crop_size=32, batch_size=2, steps_per_epoch=2, depth=1, filters=4, verbose=0)


# ---------------------------------------------------------------- settings


def test_each_task_has_its_default_loss_and_names_are_normalised():
    assert training.TrainSettings().loss == "crossentropy"
    assert training.TrainSettings(dataset="text_deblur").loss == "mean_absolute_error"
    assert training.TrainSettings(loss="Jaccard2").loss == "jaccard2"
    assert training.TrainSettings(weight_map=np.bool_(True)).weight_map is True
    # A record written before these settings existed reads as what it was trained with.
    old = training.TrainSettings.from_dict({"dataset": "nuclei", "model": "unet"})
    assert (old.loss, old.weight_map) == ("crossentropy", False)
    settings = training.TrainSettings(loss="dice")
    again = training.TrainSettings.from_dict(json.loads(json.dumps(settings.as_dict())))
    assert again == settings
    assert settings.diff(dataclasses.replace(settings, loss="jaccard")) == {
        "loss": ("dice", "jaccard")}


@pytest.mark.parametrize("kwargs, error_type, message", [
    ({"loss": "jacard"}, ValueError,
     '`loss` must be one of "crossentropy", "dice", "jaccard", "jaccard2" for the nuclei '
     "dataset (segmentation). Received: loss='jacard'. Did you mean \"jaccard\"?"),
    ({"dataset": "text_deblur", "model": "plain_cnn", "loss": "dice"}, ValueError,
     '`loss` must be one of "mean_absolute_error" for the text_deblur dataset '
     "(restoration). Received: loss='dice'."),
    ({"loss": 2}, TypeError,
     "`loss` must be the name of a loss (a str) or None. Received: loss=2 of type int. "
     'Pass e.g. loss="crossentropy".'),
    ({"weight_map": "yes"}, TypeError,
     "`weight_map` must be True or False. Received: weight_map='yes' of type str. "
     "Pass weight_map=True or weight_map=False."),
    ({"loss": "dice", "weight_map": True}, ValueError,
     '`weight_map=True` weights each pixel\'s loss, which only the "crossentropy" loss can '
     "take (the Dice and Jaccard losses are ratios of sums over the image). Received: "
     'loss="dice", weight_map=True. Use loss="crossentropy" with the weight map, or train '
     "without it."),
    ({"dataset": "text_deblur", "model": "plain_cnn", "weight_map": True}, ValueError,
     "`weight_map=True` weights the pixels by the U-Net border weight map of segmentation "
     "masks, but text_deblur is a restoration dataset. Received: weight_map=True. Train "
     "without it."),
])
def test_bad_loss_settings(tmp_path, kwargs, error_type, message):
    with pytest.raises(error_type) as error:
        training.TrainSettings(**kwargs)
    assert str(error.value) == message
    arguments = {"dataset": "nuclei", "model": "unet", "epochs": 1, **TINY, **kwargs}
    with pytest.raises(error_type):
        training.train(out=tmp_path / "run", **arguments)
    assert not (tmp_path / "run").exists()


def test_the_task_gives_each_loss():
    task = training.task_for("nuclei")
    assert task.keras_loss("crossentropy") == "binary_crossentropy"
    assert isinstance(task.keras_loss("crossentropy", weight_map=True),
                      losses.WeightedBinaryCrossentropy)
    assert isinstance(task.keras_loss("dice"), losses.DiceLoss)
    assert [task.keras_loss(name).power for name in ("jaccard", "jaccard2")] == [1.0, 2.0]
    with pytest.raises(ValueError) as error:
        task.keras_loss("dice", weight_map=True)
    assert str(error.value) == (
        "A segmentation run has no loss 'dice' with weight maps (\"crossentropy\"). "
        "Received: loss='dice', weight_map=True. Use one of those."
    )


def test_weight_maps_of_the_nuclei_masks():
    (_, y_train), _ = datasets.load("nuclei")
    maps = tasks.unet_weight_maps(y_train[:, :96, :128])
    assert maps.shape == (1, 96, 128) and maps.dtype == np.float32
    from skimage import measure

    labels = measure.label(y_train[0, :96, :128, 0])
    np.testing.assert_array_equal(maps[0], unet_weight_map(labels))
    # Background between nuclei weighs more than background far from them.
    background = maps[0][labels == 0]
    assert background.max() > 5 * np.median(background)


# ------------------------------------------------------------ crop stream


def coordinate_images(count=2, height=24, width=20):
    index, rows, cols = np.meshgrid(np.arange(count), np.arange(height), np.arange(width),
                                    indexing="ij")
    images = np.stack([index, rows, cols], axis=-1).astype("float32")
    masks = ((rows * 7 + cols * 3 + index) % 5 == 0).astype("uint8")[..., None]
    weights = (index * 1000 + rows * 50 + cols + 0.5).astype("float32")  # encodes the pixel
    return images, masks, weights


def check_weights_follow_their_pixels(x_batch, weight_batch, weights):
    for image, weight in zip(x_batch, weight_batch):
        which = image[..., 0].astype(int)
        rows, cols = image[..., 1].astype(int), image[..., 2].astype(int)
        np.testing.assert_array_equal(weight, weights[which, rows, cols])


def test_tf_data_crops_carry_their_weight_maps():
    images, masks, weights = coordinate_images()
    plain = training.crop_dataset(images, masks, 8, 16, seed=3)
    weighted = training.crop_dataset(images, masks, 8, 16, seed=3, weight_maps=weights[..., None])
    for (x, y), (xw, yw, w) in zip(plain.take(3), weighted.take(3)):
        np.testing.assert_array_equal(x.numpy(), xw.numpy())  # the same crops and flips
        np.testing.assert_array_equal(y.numpy(), yw.numpy())
        assert yw.dtype.name == "uint8" and w.dtype.name == "float32" and w.shape == (16, 8, 8)
        check_weights_follow_their_pixels(xw.numpy(), w.numpy(), weights)


def test_numpy_sequence_crops_carry_their_weight_maps():
    images, masks, weights = coordinate_images()
    plain = training.CropSequence(images, masks, 8, 16, steps_per_epoch=2, seed=3)
    weighted = training.CropSequence(images, masks, 8, 16, steps_per_epoch=2, seed=3,
                                     weight_maps=weights)
    for step in range(2):
        x, y = plain[step]
        xw, yw, w = weighted[step]
        np.testing.assert_array_equal(x, xw)
        np.testing.assert_array_equal(y, yw)
        check_weights_follow_their_pixels(xw, w, weights)


def test_weight_maps_of_the_wrong_shape():
    images, masks, weights = coordinate_images()
    with pytest.raises(ValueError) as error:
        training.crop_dataset(images, masks, 8, 2, weight_maps=weights[:, :-1])
    assert str(error.value) == (
        "`weight_maps` must hold one weight per pixel of each image, shape (count, height, "
        "width) = (2, 24, 20). Received: weight_maps.shape=(2, 23, 20). Compute one map per "
        "image, e.g. with fcnkit.weight_map.unet_weight_map."
    )


# ---------------------------------------------------------------- train


def test_train_with_a_jaccard_loss_and_resume(tmp_path):
    first = training.train("nuclei", "unet", epochs=1, out=tmp_path, loss="jaccard2", **TINY)
    assert first["settings"]["loss"] == "jaccard2" and first["settings"]["weight_map"] is False
    model = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(model.loss, losses.JaccardLoss) and model.loss.power == 2.0
    second = training.train("nuclei", "unet", epochs=2, out=tmp_path, loss="jaccard2",
                            resume=True, **TINY)
    assert second["resumed_from_epoch"] == 1
    assert training.read_record(tmp_path)["settings"]["loss"] == "jaccard2"
    with pytest.raises(ValueError, match="settings: loss='jaccard2' in the run, 'dice' in"):
        training.train("nuclei", "unet", epochs=3, out=tmp_path, loss="dice", resume=True,
                       **TINY)


def test_train_with_weight_maps(tmp_path, monkeypatch):
    result = training.train("nuclei", "unet", epochs=1, out=tmp_path / "map", weight_map=True,
                            **TINY)
    assert result["settings"]["weight_map"] is True
    model = keras.models.load_model(tmp_path / "map" / "model.keras")
    assert isinstance(model.loss, losses.WeightedBinaryCrossentropy)

    # The maps reach the loss: with maps of zeros the training loss is 0 and the
    # weights never move.
    segmentation = training.TASKS["segmentation"]
    zero_maps = dataclasses.replace(
        segmentation, weight_maps=lambda targets: np.zeros(targets.shape[:3], "float32"))
    monkeypatch.setitem(training.TASKS, "segmentation", zero_maps)
    keras.utils.set_random_seed(0)
    training.train("nuclei", "unet", epochs=1, out=tmp_path / "zeros", weight_map=True, **TINY)
    history = (tmp_path / "zeros" / "history.csv").read_text().splitlines()
    header, row = history[0].split(","), history[1].split(",")
    assert float(row[header.index("loss")]) == 0.0
    assert float(row[header.index("val_loss")]) > 0.0  # the held-out loss is not weighted
    trained = keras.models.load_model(tmp_path / "zeros" / "model.keras")
    keras.utils.set_random_seed(0)
    settings = training.TrainSettings(**{k: v for k, v in TINY.items() if k != "verbose"},
                                      weight_map=True)
    from fcnkit.training.experiment import build_model

    initial = build_model(settings, zero_maps, 3, 1)
    for before, after in zip(initial.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(before, after)


# ------------------------------------------------------------ command line

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fcnkit", *args], capture_output=True,
                          text=True, env=ENV, timeout=300)


def test_cli_loss_and_weight_map(tmp_path, capsys):
    common = ["--dataset", "nuclei", "--model", "unet", "--crop-size", "32", "--batch-size",
              "2", "--steps-per-epoch", "2", "--depth", "1", "--filters", "4", "--out",
              str(tmp_path), "--verbose", "0"]
    first = run_cli("train", "--epochs", "1", "--loss", "crossentropy", "--weight-map", *common)
    assert first.returncode == 0, first.stderr
    settings = json.loads((tmp_path / "metrics.json").read_text())["settings"]
    assert (settings["loss"], settings["weight_map"]) == ("crossentropy", True)

    # The refusals, in this process (the same `main` as `python -m fcnkit`).
    from fcnkit.__main__ import main

    assert main(["train", "--epochs", "2", "--resume", *common]) == 2  # no --weight-map
    assert capsys.readouterr().err.strip() == (
        f"error: `resume=True` continues the run in {tmp_path}, which was trained with other "
        "settings: weight_map=True in the run, False in this call. Resume with the run's "
        "settings, or train into another folder."
    )
    assert main(["train", "--loss", "dice", "--weight-map", "--out", str(tmp_path / "x")]) == 2
    assert 'Received: loss="dice", weight_map=True.' in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
