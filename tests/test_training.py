"""Training on crops: paired augmentation, determinism, checkpoints and resume."""

import csv
import json
import re
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from fcnkit import training


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


def test_psnr_by_hand():
    assert training.psnr(np.ones(10), np.ones(10)) == float("inf")
    expected = 10 * np.log10(1 / 0.02)  # MSE = (0² + 0.2²) / 2 = 0.02
    assert training.psnr(np.zeros(2), np.array([0.0, 0.2])) == pytest.approx(expected)


TINY = dict(crop_size=32, batch_size=2, steps_per_epoch=2, depth=1, filters=4, verbose=0)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_writes_everything_and_resumes(tmp_path):
    out = tmp_path / "run"
    first = training.train("nuclei", "unet", epochs=1, out=out, **TINY)
    for name in ("model.keras", "history.csv", "metrics.json", "report.png",
                 "checkpoint.keras", "checkpoint.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == first
    assert 0.0 <= first["test_jaccard"] <= first["test_dice"] <= 1.0
    assert len(read_rows(out / "history.csv")) == 1

    checkpoint_weights = keras.models.load_model(out / "checkpoint.keras").get_weights()
    second = training.train("nuclei", "unet", epochs=3, out=out, resume=True, **TINY)
    assert second["resumed_from_epoch"] == 1
    rows = read_rows(out / "history.csv")
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    state = json.loads((out / "checkpoint.json").read_text())
    assert state == {"epochs_done": 3, "settings": {
        "dataset": "nuclei", "model": "unet", "depth": 1, "filters": 4, "batch_norm": False}}
    resumed = keras.models.load_model(out / "checkpoint.keras")
    # The optimizer went on counting from the checkpoint: 3 epochs of 2 steps.
    assert int(resumed.optimizer.iterations) == 3 * TINY["steps_per_epoch"]
    assert any(not np.array_equal(a, b)
               for a, b in zip(checkpoint_weights, resumed.get_weights()))


def test_resume_trims_a_history_row_logged_after_the_checkpoint(tmp_path):
    training.train("text_deblur", "plain_cnn", epochs=1, out=tmp_path, **TINY)
    history = tmp_path / "history.csv"
    history.write_text(history.read_text() + "1,0.5,0.5\n")  # an epoch cut short
    training.train("text_deblur", "plain_cnn", epochs=2, out=tmp_path, resume=True, **TINY)
    assert [row["epoch"] for row in read_rows(history)] == ["0", "1"]


def test_resume_with_other_settings_is_refused(tmp_path):
    training.train("text_deblur", "plain_cnn", epochs=1, out=tmp_path, **TINY)
    with pytest.raises(ValueError) as error:
        training.train("text_deblur", "unet", epochs=2, out=tmp_path, resume=True, **TINY)
    assert str(error.value) == (
        f"`resume=True` continues the run in {tmp_path}, which has other settings: "
        "model='plain_cnn' (this call: 'unet'). Resume with the run's settings, or "
        "train into another folder."
    )
    with pytest.raises(ValueError) as error:
        training.train("text_deblur", "plain_cnn", epochs=1, out=tmp_path, resume=True, **TINY)
    assert str(error.value) == (
        f"The run in {tmp_path} has already done 1 epochs. Received: epochs=1. "
        "Ask for more epochs to continue it."
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"crop_size": 36, "depth": 3},
         "`crop_size` must be divisible by 2**depth=8 for a U-Net of depth 3. "
         "Received: crop_size=36. Use 32 or 40."),
        ({"epochs": 0}, "`epochs` must be a positive integer. Received: epochs=0"),
        ({"batch_norm": "yes"}, "`batch_norm` must be True or False. Received: batch_norm='yes'"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    settings = {**TINY, **kwargs}
    with pytest.raises(ValueError) as error:
        training.train("nuclei", "unet", out=tmp_path / "run",
                       epochs=settings.pop("epochs", 1), **settings)
    assert str(error.value) == message
    assert not (tmp_path / "run").exists()


def test_restoration_run_reports_psnr(tmp_path):
    result = training.train("text_deblur", "plain_cnn", epochs=1, out=tmp_path, **TINY)
    assert {"test_psnr_input", "test_psnr"} <= set(result)
    assert "test_dice" not in result


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(ValueError) as error:
        training.train("nuclei", "unet", epochs=1, out=tmp_path, resume=True, **TINY)
    assert str(error.value) == (
        f"`resume=True` needs a checkpoint in {tmp_path}, but there is no "
        "checkpoint.json there. Run once without --resume first."
    )


# Loading the final model below, outside the mixed policy, drops its optimizer
# state with this warning; only the layers' dtypes are checked there.
@pytest.mark.filterwarnings("ignore:Skipping variable loading")
def test_gpu_path_trains_in_mixed_precision_and_restores_the_policy(tmp_path, monkeypatch):
    # The GPU path runs on the CPU too: pretend a GPU is present.
    monkeypatch.setattr(training, "gpu_available", lambda: True)
    result = training.train("nuclei", "unet", epochs=1, out=tmp_path, **TINY)
    assert result["mixed_precision"] is True and result["device"] == "gpu"
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
