"""What a kind of dataset implies for training: loss, output, held-out scores.

A dataset's description (`fcnkit.datasets.DATASETS[name].kind`) says whether
its targets are masks (`"segmentation"`) or images (`"restoration"`). This
table says what follows: the loss, the activation of the last layer, the
held-out scores and what the report shows. `train` asks the table and never
tests a dataset's name; a new kind of task is one new entry here.

Lesson: ``01_image_to_image``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fcnkit import metrics
from fcnkit._validation import validate_option


@dataclass(frozen=True)
class Task:
    """How a run on one kind of dataset is trained, scored and shown.

    Attributes:
        kind: `"segmentation"` or `"restoration"`.
        loss: the Keras loss name the model is compiled with.
        output_activation: activation of the last layer (None: linear).
        evaluate: `(inputs, targets, predictions) -> dict` of held-out scores
            (rounded, JSON-ready), written to `metrics.json`.
        shown_prediction: `(prediction) -> image` that the report shows for
            one predicted image.
        summary: `(scores) -> str`, the scores in the report's title.
    """

    kind: str
    loss: str
    output_activation: str | None
    evaluate: Callable[[np.ndarray, np.ndarray, np.ndarray], dict]
    shown_prediction: Callable[[np.ndarray], np.ndarray]
    summary: Callable[[dict], str]


def _segmentation_scores(inputs, targets, predictions):
    return {
        "test_dice": round(metrics.dice_coefficient(targets, predictions), 4),
        "test_jaccard": round(metrics.jaccard_index(targets, predictions), 4),
    }


def _restoration_scores(inputs, targets, predictions):
    return {
        "test_psnr_input": round(metrics.psnr(targets, inputs), 2),
        "test_psnr": round(metrics.psnr(targets, predictions), 2),
    }


TASKS = {
    # Binary masks: one sigmoid probability per pixel, binary cross-entropy,
    # Dice and Jaccard of the mask thresholded at 0.5.
    "segmentation": Task(
        kind="segmentation",
        loss="binary_crossentropy",
        output_activation="sigmoid",
        evaluate=_segmentation_scores,
        shown_prediction=lambda prediction: prediction >= 0.5,
        summary=lambda s: f"Dice {s['test_dice']:.3f}, Jaccard {s['test_jaccard']:.3f}",
    ),
    # Images in [0, 1]: a linear output, mean absolute error (sharper than the
    # squared error), PSNR of the output next to the PSNR of the input.
    "restoration": Task(
        kind="restoration",
        loss="mean_absolute_error",
        output_activation=None,
        evaluate=_restoration_scores,
        shown_prediction=lambda prediction: np.clip(prediction, 0.0, 1.0),
        summary=lambda s: (
            f"PSNR {s['test_psnr']:.2f} dB (input {s['test_psnr_input']:.2f} dB)"
        ),
    ),
}


def task_for(dataset: str) -> Task:
    """The task of a bundled dataset, from its description.

    Example:

    >>> task_for("nuclei").loss, task_for("text_deblur").output_activation
    ('binary_crossentropy', None)
    >>> sorted(task_for("nuclei").evaluate(None, np.array([1, 0]), np.array([0.9, 0.2])))
    ['test_dice', 'test_jaccard']
    """
    from fcnkit import datasets

    name = validate_option(dataset, "dataset", tuple(datasets.DATASETS))
    return TASKS[datasets.DATASETS[name].kind]
