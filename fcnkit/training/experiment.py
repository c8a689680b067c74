"""`train`: one training run, from its settings to its report.

`train` reads as its steps: check the settings, open the run (new or
resumed), build or load the model, make the data, fit, evaluate, report. What
the dataset implies (loss, output, scores) comes from `tasks`, the checkpoints
from `checkpoint`, the device from `device`.

Lesson: ``01_image_to_image``.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import keras
import numpy as np

from fcnkit import datasets, models, plotting
from fcnkit._validation import check_bool, check_non_negative_int, check_path
from fcnkit.training import checkpoint, device, tasks
from fcnkit.training.data import held_out_region, predict_image, training_stream
from fcnkit.training.settings import FINAL_LEARNING_RATE_FRACTION, TrainSettings

VERBOSITIES = (0, 1, 2)


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
    loss=None,
    weight_map=False,
    mixed_precision=None,
    jit_compile=None,
    strategy=None,
):
    """Train a model on a bundled dataset and write the results to `out`.

    Writes `out/model.keras` (the final model), `out/history.csv` (one row per
    epoch), `out/metrics.json` (held-out scores: Dice and Jaccard for
    segmentation, PSNR for restoration, plus the settings and the device),
    `out/report.png`, and `out/checkpoint.keras` after every epoch (the model,
    its optimizer and the run's record in one file, see
    `fcnkit.training.checkpoint`). On a GPU it uses mixed precision (unless
    `mixed_precision=False`).

    With `resume=True` the run in `out` goes on from its last checkpoint (model,
    optimizer, epoch count) with the crops that follow those it has seen, up to
    `epochs` in total. Every other setting, and the backend and precision, must
    be the run's: a changed one is refused, and the message names it with both
    values. The learning-rate schedule is the run's, planned over the epochs
    it was started with: resuming an interrupted run continues it exactly;
    asking for more epochs than planned trains the extra epochs at the final
    rate, a tenth of `learning_rate` (`metrics.json` gives `schedule_epochs`).

    Args:
        dataset: `"nuclei"` (segmentation) or `"text_deblur"` (restoration).
        model: `"unet"`, `"plain_cnn"`, `"fcn"` (FCN-8s) or `"segnet"`.
        epochs: int, total number of epochs (with `resume`, including those
            already done).
        out: output folder.
        resume: bool, continue the run in `out` instead of starting again.
        crop_size: int, side of the random training crops.
        batch_size: int, crops per batch.
        steps_per_epoch: int, batches per epoch.
        learning_rate: float, initial Adam learning rate; it decays along a
            cosine to a tenth of its value at the last planned step.
        depth: int, U-Net depth, or number of hidden layers of `plain_cnn`.
        filters: int, filters of the first level (U-Net) or of every layer.
        batch_norm: bool, batch normalisation in the U-Net. Off by default:
            with few, small batches its moving statistics lag behind the
            weights and the held-out scores suffer.
        seed: int >= 0, seed of the weights and of the crops.
        verbose: 0, 1 (progress bars) or 2 (one line per epoch).
        loss: the loss, by name: for segmentation `"crossentropy"` (the
            default, binary), `"dice"`, `"jaccard"` (the lecture's j) or
            `"jaccard2"` (j2), see `fcnkit.losses`; for restoration
            `"mean_absolute_error"` (the default and only one). None: the
            task's default.
        weight_map: bool, weight each training pixel's cross-entropy by the
            U-Net border weight map of its mask (`tasks.unet_weight_maps`:
            the masks' connected components are the cells, w0 = 10,
            sigma = 5). The maps are computed on the whole training images,
            cropped with them, and reach the loss
            (`fcnkit.losses.WeightedBinaryCrossentropy`) as per-pixel
            `sample_weight`. The held-out loss stays unweighted.
        mixed_precision: None (the default: on when the backend sees a GPU),
            True or False to force it on or off (float16 compute with float32
            weights and loss scaling). It changes what is computed, so it is
            recorded with the checkpoint: a resumed run must keep it (a
            changed one is refused, naming both values).
        jit_compile: None (the default: Keras' `"auto"`, XLA on a GPU with
            TensorFlow, off on a CPU and under a distribution strategy), True
            or False: compile the training step with XLA (passed to
            `Model.compile`). It changes only how the same computation runs,
            so a resumed run may change it; `metrics.json` gives the value
            used.
        strategy: None or `"none"` (one device), `"mirrored"`
            (`tf.distribute.MirroredStrategy`: one replica per GPU of this
            machine, without a GPU one per logical CPU device), or a
            `tf.distribute.Strategy` you made, e.g. a
            `MultiWorkerMirroredStrategy` for several machines. `batch_size`
            is the global batch, split evenly across the replicas (it must
            be a multiple of their number), and the crops are the same as on
            one device: the same run on one device or several follows the
            same loss curve (to float rounding; with `batch_norm` each
            replica normalises by the statistics of its own share). The
            strategy is not a setting: a resumed run may use another one
            with the same global batch. `metrics.json` gives `strategy` and
            `replicas`. TensorFlow backend only.

    Several machines: on each, set `TF_CONFIG` (the cluster's addresses and
    this worker's index), then, first thing in the program,

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        train(..., strategy=strategy, out=f"runs/worker{index}")

    Every worker trains the same model and writes its own folder (worker 0's
    is the one to keep); `batch_size` is the batch over all workers' replicas.

    Returns:
        The metrics dict written to `metrics.json`.

    Raises:
        TypeError: for an option of the wrong type (a count that is not an
            integer, a flag that is not a bool), checked before anything is
            written.
        ValueError: for unknown names or invalid sizes (checked before anything
            is written), or `resume=True` without a checkpoint, with other
            settings than the run it continues, or with no epoch left to do;
            a `strategy` on another backend than TensorFlow, or a
            `batch_size` that the replicas cannot share evenly.

    Example (a whole run of the smallest model on the deblurring images, on
    one device without XLA):

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     result = train("text_deblur", "plain_cnn", epochs=1, out=folder, crop_size=32,
    ...                    batch_size=2, steps_per_epoch=2, depth=1, filters=4,
    ...                    verbose=0, jit_compile=False, strategy="none")
    >>> result["strategy"], result["replicas"], result["jit_compile"]
    ('none', 1, False)
    """
    settings = TrainSettings(
        dataset=dataset, model=model, epochs=epochs, crop_size=crop_size,
        batch_size=batch_size, steps_per_epoch=steps_per_epoch,
        learning_rate=learning_rate, depth=depth, filters=filters,
        batch_norm=batch_norm, loss=loss, weight_map=weight_map, seed=seed,
    )
    out = check_path(out, "out")
    resume = check_bool(resume, "resume")
    verbose = _check_verbose(verbose)
    environment = device.environment(mixed_precision)
    jit_compile = device.check_jit_compile(jit_compile)
    distribution = device.distribution(strategy)
    distribution.check_batch_size(settings.batch_size)
    task = tasks.task_for(settings.dataset)

    run = checkpoint.open_run(out, settings, environment, resume)
    with distribution.scope():
        network = _model(run, task, jit_compile)

    (x_train, y_train), (x_test, y_test) = datasets.load(settings.dataset)
    weight_maps = task.weight_maps(y_train) if settings.weight_map else None
    training_data = training_stream(x_train, y_train, settings, run.epochs_done, weight_maps)
    validation = held_out_region(x_test, y_test, settings.multiple)
    if distribution.replicas > 1:
        # Every replica needs a share of the held-out batch: the same images
        # repeated give the same mean loss.
        validation = tuple(np.repeat(part, distribution.replicas, axis=0)
                           for part in validation)
    seconds = _fit(network, run, settings, training_data, validation, verbose)
    network.save(run.directory / "model.keras")

    prediction = _predict(network, x_test, settings.multiple, distribution.replicas)
    scores = task.evaluate(x_test, y_test, prediction)
    result = _result(run, settings, network, seconds, scores, distribution)
    _report(run, settings, task, result, x_test[0], y_test[0], prediction[0])
    return result


def _check_verbose(verbose):
    verbose = check_non_negative_int(verbose, "verbose")
    if verbose not in VERBOSITIES:
        raise ValueError(
            "`verbose` must be 0 (silent), 1 (progress bars) or 2 (one line per "
            f"epoch). Received: verbose={verbose}. Pass one of 0, 1, 2."
        )
    return verbose


def _unet(settings, task, input_channels, output_channels):
    return models.unet(
        (None, None, input_channels), num_classes=output_channels, depth=settings.depth,
        filters=settings.filters, batch_norm=settings.batch_norm,
        output_activation=task.output_activation,
    )


def _plain_cnn(settings, task, input_channels, output_channels):
    return models.plain_cnn(
        (None, None, input_channels), output_channels=output_channels,
        filters=(settings.filters,) * settings.depth,
        output_activation=task.output_activation,
    )


def _fcn(settings, task, input_channels, output_channels):
    return models.fcn(
        (None, None, input_channels), num_classes=output_channels, variant="8s",
        filters=settings.filters, output_activation=task.output_activation,
    )


def _segnet(settings, task, input_channels, output_channels):
    return models.segnet(
        (None, None, input_channels), num_classes=output_channels, depth=settings.depth,
        filters=settings.filters, batch_norm=settings.batch_norm,
        output_activation=task.output_activation,
    )


# settings.model -> builder(settings, task, input_channels, output_channels)
BUILDERS = {"unet": _unet, "plain_cnn": _plain_cnn, "fcn": _fcn, "segnet": _segnet}


def build_model(settings: TrainSettings, task: tasks.Task, input_channels: int,
                output_channels: int, jit_compile="auto"):
    """The compiled model of a new run: architecture, loss and schedule.

    The loss is the task's loss named by `settings.loss` (with a weight map,
    the one that takes it as `sample_weight`). Adam with a cosine decay to a
    tenth of the learning rate over the planned steps: the last epochs settle
    instead of oscillating, so the final model is a good one. `jit_compile`
    goes to `Model.compile` (`"auto"`, True or False).

    Example:

    >>> settings = TrainSettings(dataset="text_deblur", model="plain_cnn", depth=1,
    ...                          filters=4, epochs=2, steps_per_epoch=5)
    >>> network = build_model(settings, tasks.task_for("text_deblur"), 1, 1)
    >>> network.loss, network.layers[-1].activation.__name__
    ('mean_absolute_error', 'linear')
    >>> float(keras.ops.convert_to_numpy(network.optimizer.learning_rate))
    0.002
    >>> settings = TrainSettings(model="plain_cnn", depth=1, filters=4, loss="jaccard2")
    >>> build_model(settings, tasks.task_for("nuclei"), 3, 1).loss.power
    2.0
    """
    network = BUILDERS[settings.model](settings, task, input_channels, output_channels)
    schedule = keras.optimizers.schedules.CosineDecay(
        settings.learning_rate, decay_steps=settings.schedule_steps,
        alpha=FINAL_LEARNING_RATE_FRACTION,
    )
    network.compile(optimizer=keras.optimizers.Adam(schedule),
                    loss=task.keras_loss(settings.loss, settings.weight_map),
                    jit_compile=jit_compile)
    return network


def _model(run: checkpoint.Run, task: tasks.Task, jit_compile=None):
    """Build the model of a new run, or load the checkpoint of a resumed one.

    Layers take their dtypes (mixed precision on a GPU) when they are created
    or loaded; the caller's policy is restored afterwards. A loaded model
    takes this call's `jit_compile` (None: Keras' automatic choice), not the
    one saved with it.
    """
    info = datasets.DATASETS[run.settings.dataset]
    keras.utils.set_random_seed(run.settings.seed)  # the initial weights
    with device.dtype_policy(run.environment["mixed_precision"]):
        if not run.resumed:
            return build_model(run.settings, task, info.train_shape[-1],
                               info.target_channels,
                               "auto" if jit_compile is None else jit_compile)
        network = run.load_model()
    # Keras' rule for "auto" (XLA on a GPU, not on a CPU nor under tf.distribute).
    network.jit_compile = (network._resolve_auto_jit_compile() if jit_compile is None
                           else jit_compile)
    return network


def _fit(network, run, settings, training_data, validation, verbose) -> float:
    """Fit from the run's epoch up to `settings.epochs`; the seconds it took."""
    started = time.perf_counter()
    network.fit(
        training_data,
        epochs=settings.epochs,
        initial_epoch=run.epochs_done,
        steps_per_epoch=settings.steps_per_epoch,
        validation_data=validation,
        callbacks=[
            keras.callbacks.CSVLogger(str(run.directory / checkpoint.HISTORY),
                                      append=run.resumed),
            run.callback(),
        ],
        shuffle=False,  # the crops are already random
        verbose=verbose,
    )
    return time.perf_counter() - started


def _predict(network, images, multiple, replicas):
    """`predict_image`; under a strategy each replica needs an image of every
    batch, so each image is repeated once per replica and one copy kept."""
    if replicas == 1:
        return predict_image(network, images, multiple)
    repeated = np.repeat(images, replicas, axis=0)
    return predict_image(network, repeated, multiple, batch_size=replicas)[::replicas]


def _result(run, settings, network, seconds, scores, distribution) -> dict:
    return {
        "dataset": settings.dataset,
        "model": settings.model,
        "epochs": settings.epochs,
        "resumed_from_epoch": run.epochs_done,
        "schedule_epochs": run.settings.epochs,
        "parameters": int(network.count_params()),
        "train_seconds": round(seconds, 1),
        "device": "gpu" if device.gpu_available() else "cpu",
        "backend": run.environment["backend"],
        "mixed_precision": run.environment["mixed_precision"],
        "jit_compile": bool(network.jit_compile),
        "strategy": distribution.name,
        "replicas": distribution.replicas,
        "settings": settings.as_dict(),
        **scores,
    }


def _report(run, settings, task, result, image, truth, prediction) -> None:
    """Write metrics.json and report.png."""
    (run.directory / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    plotting.training_report(
        image, truth, task.shown_prediction(prediction),
        _read_history(run.directory / checkpoint.HISTORY),
        path=run.directory / "report.png",
        title=f"{settings.model} on {settings.dataset}, held-out data: "
        f"{task.summary(result)}",
    )


def _read_history(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}
