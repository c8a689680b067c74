"""What a kind of dataset implies for training: losses, output, held-out scores.

A dataset's description (`fcnkit.datasets.DATASETS[name].kind`) says whether
its targets are masks (`"segmentation"`) or images (`"restoration"`). This
table says what follows: the losses a run may choose (`--loss`) and its
default, whether U-Net weight maps can be made from the targets
(`--weight-map`), the activation of the last layer, the held-out scores and
what the report shows. `train` asks the table and never tests a dataset's
name; a new kind of task is one new entry here.

Lesson: ``01_image_to_image``, ``07_losses``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fcnkit import losses, metrics
from fcnkit._validation import validate_option


@dataclass(frozen=True)
class Task:
    """How a run on one kind of dataset is trained, scored and shown.

    Attributes:
        kind: `"segmentation"` or `"restoration"`.
        losses: `{name: factory}`, the losses a run may choose (the names of
            `--loss`); each factory returns what `Model.compile` takes (a
            Keras loss name or a `keras.losses.Loss`).
        default_loss: the name of the loss used when none is chosen.
        output_activation: activation of the last layer (None: linear).
        evaluate: `(inputs, targets, predictions) -> dict` of held-out scores
            (rounded, JSON-ready), written to `metrics.json`.
        shown_prediction: `(prediction) -> image` that the report shows for
            one predicted image.
        summary: `(scores) -> str`, the scores in the report's title.
        weight_maps: `(targets) -> weights`, the U-Net weight map of every
            training target `(count, height, width)`, or None when the task
            has none.
        weighted_losses: `{name: factory}`, the losses that take those maps
            (as per-pixel `sample_weight`), used instead of `losses[name]`.
    """

    kind: str
    losses: dict[str, Callable[[], object]]
    default_loss: str
    output_activation: str | None
    evaluate: Callable[[np.ndarray, np.ndarray, np.ndarray], dict]
    shown_prediction: Callable[[np.ndarray], np.ndarray]
    summary: Callable[[dict], str]
    weight_maps: Callable[[np.ndarray], np.ndarray] | None = None
    weighted_losses: dict[str, Callable[[], object]] = field(default_factory=dict)

    @property
    def loss(self):
        """What the model is compiled with by default (a Keras loss name)."""
        return self.keras_loss(self.default_loss)

    def keras_loss(self, name: str, weight_map: bool = False):
        """The loss `name` (a key of `losses`) for `Model.compile`; with
        `weight_map`, the one that takes the weight maps as `sample_weight`.

        Raises:
            ValueError: for a name the task does not have, or a weight map
                with a loss that cannot take one.
        """
        table = self.weighted_losses if weight_map else self.losses
        if name not in table:
            allowed = ", ".join(f'"{key}"' for key in table) or "none"
            what = f"with weight maps ({allowed})" if weight_map else f"({allowed})"
            raise ValueError(
                f"A {self.kind} run has no loss {name!r} {what}. Received: loss={name!r}, "
                f"weight_map={weight_map}. Use one of those."
            )
        return table[name]()


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


# U-Net border weights (fcnkit.weight_map) with the paper's w0 = 10 and sigma = 5.
WEIGHT_MAP_W0 = 10.0
WEIGHT_MAP_SIGMA = 5.0


def unet_weight_maps(targets: np.ndarray) -> np.ndarray:
    """The U-Net weight map of each binary mask, its connected components as cells.

    Each mask is labelled into cells with `skimage.measure.label` (8-connected
    components: touching cells become one), then
    `fcnkit.weight_map.unet_weight_map` gives w_c ("balanced" per image) plus
    w0 = 10 times the border term (sigma = 5 pixels) on the background.

    Args:
        targets: binary masks `(count, height, width, 1)`.

    Returns:
        float32 weights `(count, height, width)`.

    Example:

    >>> masks = np.zeros((1, 1, 7, 1), "uint8"); masks[0, 0, :2] = 1; masks[0, 0, 5:] = 1
    >>> maps = unet_weight_maps(masks)  # w_c = 7 / (2·4) on cells, 7 / (2·3) + 10 exp(-16/50)
    >>> np.round(maps.astype("float64"), 3).tolist()
    [[[0.875, 0.875, 8.428, 8.428, 8.428, 0.875, 0.875]]]
    """
    from skimage import measure

    from fcnkit.weight_map import unet_weight_map

    return np.stack([
        unet_weight_map(measure.label(mask[..., 0] > 0), w0=WEIGHT_MAP_W0,
                        sigma=WEIGHT_MAP_SIGMA)
        for mask in np.asarray(targets)
    ])


TASKS = {
    # Binary masks: one sigmoid probability per pixel, binary cross-entropy by
    # default (or the lecture's Dice, j and j2 losses), Dice and Jaccard of the
    # mask thresholded at 0.5. Weight maps: the connected components of the
    # masks are the cells; the cross-entropy takes the maps as sample weights.
    "segmentation": Task(
        kind="segmentation",
        losses={
            "crossentropy": lambda: "binary_crossentropy",
            "dice": lambda: losses.DiceLoss(),
            "jaccard": lambda: losses.JaccardLoss(power=1),
            "jaccard2": lambda: losses.JaccardLoss(power=2),
        },
        default_loss="crossentropy",
        output_activation="sigmoid",
        evaluate=_segmentation_scores,
        shown_prediction=lambda prediction: prediction >= 0.5,
        summary=lambda s: f"Dice {s['test_dice']:.3f}, Jaccard {s['test_jaccard']:.3f}",
        weight_maps=unet_weight_maps,
        weighted_losses={"crossentropy": lambda: losses.WeightedBinaryCrossentropy()},
    ),
    # Images in [0, 1]: a linear output, mean absolute error (sharper than the
    # squared error), PSNR of the output next to the PSNR of the input.
    "restoration": Task(
        kind="restoration",
        losses={"mean_absolute_error": lambda: "mean_absolute_error"},
        default_loss="mean_absolute_error",
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
    >>> sorted(task_for("nuclei").losses)
    ['crossentropy', 'dice', 'jaccard', 'jaccard2']
    >>> sorted(task_for("nuclei").evaluate(None, np.array([1, 0]), np.array([0.9, 0.2])))
    ['test_dice', 'test_jaccard']
    """
    from fcnkit import datasets

    name = validate_option(dataset, "dataset", tuple(datasets.DATASETS))
    return TASKS[datasets.DATASETS[name].kind]
