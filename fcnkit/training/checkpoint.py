"""Checkpoints of a training run, and resuming from them.

After every epoch the model (with its optimizer) and the run's record (epochs
done, settings, environment) are written as ONE file, `checkpoint.keras`:

1. the model is saved to `checkpoint-partial.keras` (a `.keras` file is a zip
   archive);
2. the record is added to that archive as `fcnkit-run.json`, and the file is
   flushed to disk;
3. `os.replace` renames it to `checkpoint.keras`, atomically.

A crash at any point leaves either the previous checkpoint or the new one,
never a model of one epoch with the record of another. Resuming reads the
record from the very file it loads the model from, removes a partial file
left by a crash, and drops the `history.csv` rows logged after the checkpoint.

`read_record(out)` returns the record of the run in `out`.

Lesson: ``01_image_to_image``.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras

from fcnkit.training.settings import TrainSettings

CHECKPOINT = "checkpoint.keras"
PARTIAL = "checkpoint-partial.keras"  # Keras saves only to names ending in .keras
RECORD = "fcnkit-run.json"  # the record's name inside the archive
RECORD_FORMAT = 1
HISTORY = "history.csv"

# The settings a resumed run may change: `epochs` is how far to go. The
# schedule stays the recorded run's (it is saved with the optimizer).
RESUMABLE = ("epochs",)


def write_checkpoint(model, directory, record: dict) -> Path:
    """Write `model` and `record` into `directory/checkpoint.keras`, atomically.

    Args:
        model: a compiled Keras model (its optimizer state is saved too).
        directory: the run's folder.
        record: JSON-ready dict (epochs done, settings, environment).

    Returns:
        The checkpoint's path.

    Example:

    >>> import tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_checkpoint(model, folder, {"epochs_done": 1})
    ...     print(path.name, read_record(folder))
    checkpoint.keras {'epochs_done': 1}
    """
    directory = Path(directory)
    partial = directory / PARTIAL
    model.save(partial)
    _add_record(partial, record)
    return _publish(partial, directory / CHECKPOINT)


def _add_record(path: Path, record: dict) -> None:
    """Add the record to the model's archive and flush the file to disk."""
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(RECORD, json.dumps(record, indent=2) + "\n")
    with open(path, "r+b") as handle:
        os.fsync(handle.fileno())


def _publish(partial: Path, final: Path) -> Path:
    """Rename the complete file into place (atomic), then flush the folder."""
    os.replace(partial, final)
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        folder = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return final


def read_record(directory) -> dict:
    """The record stored in `directory/checkpoint.keras`.

    Raises:
        ValueError: if there is no checkpoint, or it holds no record.
    """
    directory = Path(directory)
    path = directory / CHECKPOINT
    if not path.is_file():
        raise ValueError(
            f"`resume=True` needs a checkpoint in {directory}, but there is no "
            f"{CHECKPOINT} there. Run once without --resume first."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(RECORD))
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} holds no readable run record ({RECORD}): it was not written by "
            f"`fcnkit.training.train`, or by an older version. Received: {error!r}. "
            "Train into another folder, or start this run again without --resume."
        ) from None


@dataclass(frozen=True)
class Run:
    """A run's folder and what its checkpoints record.

    Attributes:
        directory: the run's folder.
        settings: the run's settings. For a resumed run, those it was started
            with: its `epochs` is the plan the learning-rate schedule follows.
        environment: backend and precision (see `device.environment`).
        epochs_done: epochs done before this call (0 for a new run).
    """

    directory: Path
    settings: TrainSettings
    environment: dict
    epochs_done: int = 0

    @property
    def resumed(self) -> bool:
        return self.epochs_done > 0

    def record(self, epochs_done: int) -> dict:
        """The record a checkpoint after `epochs_done` epochs holds."""
        return {
            "format": RECORD_FORMAT,
            "epochs_done": epochs_done,
            "settings": self.settings.as_dict(),
            "environment": dict(self.environment),
        }

    def callback(self) -> EpochCheckpoint:
        """The Keras callback that checkpoints this run after every epoch."""
        return EpochCheckpoint(self)

    def load_model(self):
        """The checkpointed model, with its optimizer and schedule."""
        return keras.models.load_model(self.directory / CHECKPOINT)


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes the model and the run's record after every epoch (`write_checkpoint`)."""

    def __init__(self, run: Run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        write_checkpoint(self.model, self.run.directory, self.run.record(epoch + 1))


def _changes(recorded: TrainSettings, settings: TrainSettings, record: dict,
             environment: dict) -> dict:
    changed = {
        name: values for name, values in recorded.diff(settings).items()
        if name not in RESUMABLE
    }
    saved_environment = record.get("environment", {})
    for name, value in environment.items():
        if name in saved_environment and saved_environment[name] != value:
            changed[name] = (saved_environment[name], value)
    return changed


def open_run(out, settings: TrainSettings, environment: dict, resume: bool) -> Run:
    """Open the run in `out`: a new one, or the one `resume` continues.

    A new run creates the folder and removes an older run's checkpoint (it
    must never be resumed with this run's history). A resumed run is checked
    first, then its leftovers are cleaned: nothing is written when it is
    refused.

    Args:
        out: the run's folder.
        settings: the settings of this call.
        environment: backend and precision of this call.
        resume: bool, continue the run in `out`.

    Returns:
        A `Run`.

    Raises:
        ValueError: with `resume`, if there is no checkpoint, if a setting
            other than `epochs` (or the backend, or the precision) differs from
            the recorded run (the message names each one with both values), or
            if the run has already done `settings.epochs` epochs.
    """
    out = Path(out)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        for name in (CHECKPOINT, PARTIAL):
            (out / name).unlink(missing_ok=True)
        return Run(out, settings, dict(environment))

    record = read_record(out)
    recorded = TrainSettings.from_dict(record["settings"])
    changed = _changes(recorded, settings, record, environment)
    if changed:
        listed = "; ".join(
            f"{name}={before!r} in the run, {now!r} in this call"
            for name, (before, now) in changed.items()
        )
        raise ValueError(
            f"`resume=True` continues the run in {out}, which was trained with other "
            f"settings: {listed}. Resume with the run's settings, or train into "
            "another folder."
        )
    epochs_done = int(record["epochs_done"])
    if epochs_done >= settings.epochs:
        raise ValueError(
            f"The run in {out} has already done {epochs_done} epochs. "
            f"Received: epochs={settings.epochs}. Ask for more epochs to continue it."
        )
    (out / PARTIAL).unlink(missing_ok=True)  # an interrupted write
    _trim_history(out / HISTORY, epochs_done)
    return Run(out, recorded, dict(environment), epochs_done)


def _trim_history(path: Path, epochs_done: int) -> None:
    """Keep the header and the first `epochs_done` rows of history.csv (an
    interrupted epoch may have logged a row after the last checkpoint)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: 1 + epochs_done]))
