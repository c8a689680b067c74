"""Training fully convolutional networks on random crops.

The lecture's advice for large images: train on crops, as large as possible,
with small batches. `crop_dataset` draws random crops and applies the same
random flips to an image and its target (the target is never interpolated);
`train` runs a whole experiment and writes the model, `history.csv`,
`metrics.json` and `report.png`, with a checkpoint every epoch that `--resume`
continues from. On a GPU it uses mixed precision.

Lesson: ``01_image_to_image``.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from fcnkit._validation import validate_option

MODELS = ("unet", "plain_cnn")
CHECKPOINT = "checkpoint.keras"
CHECKPOINT_STATE = "checkpoint.json"


def gpu_available() -> bool:
    """Whether the current Keras backend sees a GPU.

    Example:

    >>> isinstance(gpu_available(), bool)
    True
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def _check_positive_ints(**values):
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive integer. Received: {name}={value!r}"
            )


def _check_pairs(images, targets, crop_size):
    images, targets = np.asarray(images), np.asarray(targets)
    if images.ndim != 4 or targets.ndim != 4:
        raise ValueError(
            "`images` and `targets` must be 4D arrays (count, height, width, "
            f"channels). Received: images.shape={images.shape}, "
            f"targets.shape={targets.shape}"
        )
    if images.shape[:3] != targets.shape[:3]:
        raise ValueError(
            "Each target must have the count, height and width of its image. "
            f"Received: images.shape={images.shape}, targets.shape={targets.shape}"
        )
    height, width = images.shape[1:3]
    if not 1 <= crop_size <= min(height, width):
        raise ValueError(
            f"`crop_size` must be between 1 and the smallest image side "
            f"({min(height, width)}). Received: crop_size={crop_size}. "
            "Use a smaller crop or larger images."
        )
    return images, targets


def crop_dataset(images, targets, crop_size, batch_size, seed=0, flips=True, start=0):
    """An endless `tf.data.Dataset` of random crops with paired random flips.

    Each example picks an image, a crop position and (if `flips`) a horizontal
    and a vertical flip, all from a stateless random stream, so the dataset is
    the same for the same `seed`, whatever else the program does. Image and
    target are stacked along the channels before cropping and flipping, so they
    always get exactly the same geometric transform; targets keep their values
    and dtype (a mask stays a mask: no interpolation ever happens).

    Args:
        images: array `(count, height, width, channels)`.
        targets: array `(count, height, width, target_channels)`.
        crop_size: int, side of the square crops.
        batch_size: int, crops per batch.
        seed: int, seed of the random stream.
        flips: bool, apply random horizontal and vertical flips.
        start: int, index of the first example of the stream. A run resumed
            after `k` examples passes `start=k` to go on with new crops
            instead of replaying the first ones.

    Returns:
        A `tf.data.Dataset` of `(image_batch, target_batch)`.

    Example:

    >>> images = np.random.rand(2, 32, 32, 3).astype("float32")
    >>> masks = (images[..., :1] > 0.5).astype("uint8")
    >>> x, y = next(iter(crop_dataset(images, masks, 16, batch_size=4)))
    >>> tuple(x.shape), tuple(y.shape), y.dtype.name
    ((4, 16, 16, 3), (4, 16, 16, 1), 'uint8')
    """
    import tensorflow as tf

    images, targets = _check_pairs(images, targets, crop_size)
    _check_positive_ints(batch_size=batch_size)
    if not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"`start` must be an integer >= 0. Received: start={start!r}")
    channels = images.shape[-1]
    # Stack in a type that holds both exactly (uint8 images with float masks
    # must not round the masks), then give each part its own type back.
    stack_dtype = np.result_type(images.dtype, targets.dtype, np.float32)
    stacked = tf.constant(
        np.concatenate([images.astype(stack_dtype), targets.astype(stack_dtype)], axis=-1)
    )
    count, height, width = stacked.shape[:3]

    def uniform(seed, upper):
        return tf.random.stateless_uniform((), seed, maxval=upper, dtype=tf.int32)

    def transform(example_seed):
        seeds = tf.random.experimental.stateless_split(example_seed, 5)
        # Slice the window out of the stack directly: no copy of a whole image.
        corner = [uniform(seeds[0], count), uniform(seeds[1], height - crop_size + 1),
                  uniform(seeds[2], width - crop_size + 1), 0]
        crop = tf.slice(stacked, corner, [1, crop_size, crop_size, -1])[0]
        if flips:
            crop = tf.image.stateless_random_flip_left_right(crop, seeds[3])
            crop = tf.image.stateless_random_flip_up_down(crop, seeds[4])
        return (tf.cast(crop[..., :channels], images.dtype),
                tf.cast(crop[..., channels:], targets.dtype))

    # Example i uses the stateless seed (seed, i): the stream depends on `seed`
    # only, not on TensorFlow's global seed or on what ran before.
    return (
        tf.data.Dataset.range(start, 2**62)
        .map(lambda index: tf.stack([tf.constant(seed, tf.int64), index]))
        .map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


class CropSequence(keras.utils.PyDataset):
    """The same random crops and paired flips as `crop_dataset`, in NumPy.

    For backends without TensorFlow (JAX or PyTorch on a GPU machine). Every
    batch index maps to a fixed batch for a given `seed`.

    `first_epoch` is the number of epochs already done by a resumed run.

    Example:

    >>> images = np.random.rand(1, 20, 20, 1).astype("float32")
    >>> sequence = CropSequence(images, images > 0.5, 8, batch_size=2,
    ...                         steps_per_epoch=3)
    >>> len(sequence), sequence[0][0].shape
    (3, (2, 8, 8, 1))
    """

    def __init__(self, images, targets, crop_size, batch_size, steps_per_epoch,
                 seed=0, flips=True, first_epoch=0, **kwargs):
        super().__init__(**kwargs)
        self.images, self.targets = _check_pairs(images, targets, crop_size)
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.flips = flips
        _check_positive_ints(batch_size=batch_size, steps_per_epoch=steps_per_epoch)
        self.epoch = first_epoch  # a resumed run goes on with the next epochs' crops

    def __len__(self):
        return self.steps_per_epoch

    def on_epoch_end(self):
        self.epoch += 1

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, self.epoch, index))
        count, height, width = self.images.shape[:3]
        size = self.crop_size
        xs, ys = [], []
        for _ in range(self.batch_size):
            which = rng.integers(count)
            top = rng.integers(height - size + 1)
            left = rng.integers(width - size + 1)
            window = (which, slice(top, top + size), slice(left, left + size))
            image, target = self.images[window], self.targets[window]
            if self.flips and rng.random() < 0.5:
                image, target = image[:, ::-1], target[:, ::-1]
            if self.flips and rng.random() < 0.5:
                image, target = image[::-1], target[::-1]
            xs.append(image)
            ys.append(target)
        return np.stack(xs), np.stack(ys)


def predict_image(model, images, multiple=1, batch_size=1):
    """Predict whole images whose size need not be a multiple of `multiple`.

    Images are padded by reflection up to the next multiple (a U-Net with
    depth d needs multiples of 2**d), predicted, and cropped back.

    Example:

    >>> model = keras.Sequential([keras.Input((None, None, 1)),
    ...                           keras.layers.MaxPooling2D(2),
    ...                           keras.layers.UpSampling2D(2)])
    >>> predict_image(model, np.ones((1, 5, 7, 1)), multiple=2).shape
    (1, 5, 7, 1)
    """
    _check_positive_ints(multiple=multiple)
    images = np.asarray(images)
    height, width = images.shape[1:3]
    pad_h = -height % multiple
    pad_w = -width % multiple
    padded = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    prediction = model.predict(padded, batch_size=batch_size, verbose=0)
    return np.asarray(prediction)[:, :height, :width]


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the model (with its optimizer) and the run's state after every epoch.

    Both files are written under a temporary name, then renamed, so an
    interrupted run always leaves a complete pair.
    """

    def __init__(self, directory, settings):
        super().__init__()
        self.directory = Path(directory)
        self.settings = settings

    def on_epoch_end(self, epoch, logs=None):
        temporary = self.directory / f"tmp-{CHECKPOINT}"
        self.model.save(temporary)
        os.replace(temporary, self.directory / CHECKPOINT)
        state = {"epochs_done": epoch + 1, "settings": self.settings}
        temporary = self.directory / f"tmp-{CHECKPOINT_STATE}"
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(temporary, self.directory / CHECKPOINT_STATE)


def _resume_state(out, settings):
    """The epochs done by the run in `out`, after checking it has `settings`."""
    state = json.loads((out / CHECKPOINT_STATE).read_text())
    saved = state.get("settings", {})
    different = [
        f"{key}={saved.get(key)!r} (this call: {value!r})"
        for key, value in settings.items() if saved.get(key) != value
    ]
    if different:
        raise ValueError(
            f"`resume=True` continues the run in {out}, which has other settings: "
            f"{', '.join(different)}. Resume with the run's settings, or train "
            "into another folder."
        )
    return state["epochs_done"]


def _trim_history(path, epochs_done):
    """Keep the first `epochs_done` rows of history.csv (an interrupted epoch
    may have logged a row after its checkpoint)."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    path.write_text("".join(lines[: 1 + epochs_done]))


def _build_model(model_name, dataset_name, channels, outputs, depth, filters,
                 batch_norm):
    from fcnkit import models

    if model_name == "unet":
        return models.unet(
            (None, None, channels), num_classes=outputs, depth=depth,
            filters=filters, batch_norm=batch_norm,
            output_activation="sigmoid" if dataset_name == "nuclei" else None,
        )
    return models.plain_cnn(
        (None, None, channels), output_channels=outputs,
        filters=(filters,) * depth,
        output_activation="sigmoid" if dataset_name == "nuclei" else None,
    )


def _read_history(path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def psnr(target, prediction, data_range=1.0):
    """Peak signal-to-noise ratio in dB: 10 log10(range² / MSE).

    Example:

    >>> round(psnr(np.zeros(4), np.full(4, 0.1)), 2)
    20.0
    """
    mse = float(np.mean((np.asarray(target, "float64") - np.asarray(prediction)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def train(
    dataset="nuclei",
    model="unet",
    epochs=10,
    out="runs/train",
    resume=False,
    crop_size=128,
    batch_size=8,
    steps_per_epoch=25,
    learning_rate=2e-3,
    depth=3,
    filters=16,
    batch_norm=False,
    seed=0,
    verbose=1,
):
    """Train a model on a bundled dataset and write the results to `out`.

    Writes `out/model.keras` (the final model), `out/history.csv` (one row per
    epoch), `out/metrics.json` (held-out scores: Dice and Jaccard for
    segmentation, PSNR for restoration, plus the settings and the device),
    `out/report.png`, and `out/checkpoint.keras` after every epoch.

    Args:
        dataset: `"nuclei"` (segmentation) or `"text_deblur"` (restoration).
        model: `"unet"` or `"plain_cnn"`.
        epochs: int, total number of epochs (with `resume`, including those
            already done).
        out: output folder.
        resume: bool, continue from `out/checkpoint.keras` (model, optimizer
            and epoch count) instead of starting again.
        crop_size: int, side of the random training crops.
        batch_size: int, crops per batch.
        steps_per_epoch: int, batches per epoch.
        learning_rate: float, initial Adam learning rate; it decays along a
            cosine to a tenth of its value at the last planned step (a resumed
            run keeps the schedule of the run it continues).
        depth: int, U-Net depth, or number of hidden layers of `plain_cnn`.
        filters: int, filters of the first level (U-Net) or of every layer.
        batch_norm: bool, batch normalisation in the U-Net. Off by default:
            with few, small batches its moving statistics lag behind the
            weights and the held-out scores suffer.
        seed: int, seed of the weights and of the crops.
        verbose: 0, 1 (progress bars) or 2 (one line per epoch).

    Returns:
        The metrics dict written to `metrics.json`.

    Raises:
        ValueError: for unknown names or invalid sizes (checked before anything
            is written), or `resume=True` without a checkpoint, with other
            settings than the run it continues, or with no epoch left to do.
    """
    from fcnkit import datasets, metrics, plotting, shapes

    dataset = validate_option(dataset, "dataset", tuple(datasets.DATASETS))
    model_name = validate_option(model, "model", MODELS)
    _check_positive_ints(epochs=epochs, crop_size=crop_size, batch_size=batch_size,
                         steps_per_epoch=steps_per_epoch, depth=depth, filters=filters)
    if not isinstance(batch_norm, bool):
        raise ValueError(f"`batch_norm` must be True or False. Received: batch_norm={batch_norm!r}")
    if model_name == "unet" and crop_size % 2**depth:
        below, above = shapes.nearest_valid_unet_sizes(crop_size, depth, "same")
        nearest = f"{below} or {above}" if below else f"{above}"
        raise ValueError(
            f"`crop_size` must be divisible by 2**depth={2**depth} for a U-Net of "
            f"depth {depth}. Received: crop_size={crop_size}. Use {nearest}."
        )
    settings = {"dataset": dataset, "model": model_name, "depth": depth,
                "filters": filters, "batch_norm": batch_norm}
    out = Path(out)
    state_path = out / CHECKPOINT_STATE
    if resume and not state_path.exists():
        raise ValueError(
            f"`resume=True` needs a checkpoint in {out}, but there is no "
            f"{CHECKPOINT_STATE} there. Run once without --resume first."
        )
    initial_epoch = _resume_state(out, settings) if resume else 0
    if initial_epoch >= epochs:
        raise ValueError(
            f"The run in {out} has already done {initial_epoch} epochs. "
            f"Received: epochs={epochs}. Ask for more epochs to continue it."
        )
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    on_gpu = gpu_available()

    (x_train, y_train), (x_test, y_test) = datasets.load(dataset)
    segmentation = dataset == "nuclei"
    if resume:
        _trim_history(out / "history.csv", initial_epoch)
    # Layers take the global dtype policy when they are created: mixed precision
    # on a GPU, then the caller's policy again, so later models are unaffected.
    caller_policy = keras.mixed_precision.global_policy()
    if on_gpu:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        if resume:
            network = keras.models.load_model(out / CHECKPOINT)
        else:
            network = _build_model(
                model_name, dataset, x_train.shape[-1], y_train.shape[-1], depth,
                filters, batch_norm,
            )
            # Cosine decay to a tenth of the rate: the last epochs settle
            # instead of oscillating, so the final model is a good one.
            schedule = keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=epochs * steps_per_epoch, alpha=0.1
            )
            network.compile(
                optimizer=keras.optimizers.Adam(schedule),
                loss="binary_crossentropy" if segmentation else "mean_absolute_error",
            )
    finally:
        keras.mixed_precision.set_global_policy(caller_policy)
    multiple = 2**depth if model_name == "unet" else 1

    if keras.backend.backend() == "tensorflow":
        done = initial_epoch * steps_per_epoch * batch_size  # examples already seen
        training_data = crop_dataset(x_train, y_train, crop_size, batch_size, seed,
                                     start=done)
    else:
        training_data = CropSequence(
            x_train, y_train, crop_size, batch_size, steps_per_epoch, seed,
            first_epoch=initial_epoch,
        )
    # The held-out region is cropped to a multiple of the network's total
    # stride so that Keras can evaluate it as it is.
    val_h = x_test.shape[1] - x_test.shape[1] % multiple
    val_w = x_test.shape[2] - x_test.shape[2] % multiple
    validation = (x_test[:, :val_h, :val_w], y_test[:, :val_h, :val_w])

    started = time.perf_counter()
    network.fit(
        training_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation,
        callbacks=[
            keras.callbacks.CSVLogger(str(out / "history.csv"), append=resume),
            EpochCheckpoint(out, settings),
        ],
        shuffle=False,  # the crops are already random
        verbose=verbose,
    )
    seconds = time.perf_counter() - started
    network.save(out / "model.keras")

    prediction = predict_image(network, x_test, multiple)
    result = {
        "dataset": dataset,
        "model": model_name,
        "epochs": epochs,
        "resumed_from_epoch": initial_epoch,
        "parameters": int(network.count_params()),
        "train_seconds": round(seconds, 1),
        "device": "gpu" if on_gpu else "cpu",
        "backend": keras.backend.backend(),
        "mixed_precision": on_gpu,
    }
    if segmentation:
        result["test_dice"] = round(metrics.dice_coefficient(y_test, prediction), 4)
        result["test_jaccard"] = round(metrics.jaccard_index(y_test, prediction), 4)
        shown_prediction = prediction[0] >= 0.5
        scores = f"Dice {result['test_dice']:.3f}, Jaccard {result['test_jaccard']:.3f}"
    else:
        result["test_psnr_input"] = round(psnr(y_test, x_test), 2)
        result["test_psnr"] = round(psnr(y_test, prediction), 2)
        shown_prediction = np.clip(prediction[0], 0.0, 1.0)
        scores = f"PSNR {result['test_psnr']:.2f} dB (input {result['test_psnr_input']:.2f} dB)"
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    plotting.training_report(
        x_test[0], y_test[0], shown_prediction, _read_history(out / "history.csv"),
        path=out / "report.png",
        title=f"{model_name} on {dataset}, held-out data: {scores}",
    )
    return result
