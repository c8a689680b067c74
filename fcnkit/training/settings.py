"""The settings of a training run: one frozen, validated object.

`TrainSettings` holds every option that shapes training. It checks them all
when it is made (before anything is written to disk), is what a checkpoint
records, and tells a resumed run what changed with `diff`.

Lesson: ``01_image_to_image``.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from fcnkit._validation import (
    check_bool,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
    validate_option,
)

MODELS = ("unet", "plain_cnn", "fcn", "segnet")

# The total stride of `fcnkit.models.fcn`: five 2×2 poolings.
FCN_STRIDE = 32

# The cosine schedule decays to this fraction of the learning rate.
FINAL_LEARNING_RATE_FRACTION = 0.1


@dataclass(frozen=True)
class TrainSettings:
    """Every option that shapes a training run, checked when it is made.

    Names are lower-cased, counts become Python ints and the learning rate a
    Python float, so two settings compare equal whatever types the caller
    used, and they are written to JSON as they are.

    The learning rate decays along a cosine from `learning_rate` to a tenth of
    it over `epochs * steps_per_epoch` steps: `epochs` is the run's plan. A
    resumed run keeps the schedule of the run it continues (it is saved with
    the optimizer in the checkpoint): asked for more epochs than planned, it
    trains the extra epochs at the final rate, a tenth of `learning_rate`.

    Args:
        dataset: `"nuclei"` (segmentation) or `"text_deblur"` (restoration),
            see `fcnkit.datasets.DATASETS`.
        model: `"unet"`, `"plain_cnn"`, `"fcn"` (FCN-8s) or `"segnet"`.
        epochs: int, planned number of epochs (the length of the schedule).
        crop_size: int, side of the random training crops; at most the
            smallest side of the training images; a multiple of
            `2**depth` for a U-Net, of 32 for an FCN, at least `2**depth`
            for a SegNet.
        batch_size: int, crops per batch.
        steps_per_epoch: int, batches per epoch.
        learning_rate: float > 0, initial Adam learning rate.
        depth: int, U-Net or SegNet depth (poolings), or number of hidden
            layers of `plain_cnn`; not used by the FCN (always 5 poolings).
        filters: int, filters of the first level (U-Net, FCN, SegNet) or of
            every layer (`plain_cnn`).
        batch_norm: bool, batch normalisation in the U-Net or the SegNet.
        loss: the loss, among those of the dataset's task
            (`fcnkit.training.TASKS[kind].losses`): `"crossentropy"` (the
            default), `"dice"`, `"jaccard"` (the lecture's j) or `"jaccard2"`
            (j2) for segmentation; `"mean_absolute_error"` for restoration.
            None means the task's default, and is stored as its name. From
            scratch on the nuclei data, `"dice"` and `"jaccard"` collapse to
            "foreground everywhere" (their best constant prediction is 1;
            lesson ``07_losses``); `"jaccard2"` and the cross-entropy learn.
        weight_map: bool, weight each training pixel's cross-entropy by the
            U-Net border weight map of its mask (segmentation with the
            cross-entropy only; see `tasks.unet_weight_maps`).
        seed: int >= 0, seed of the weights and of the crops.

    Raises:
        TypeError: for a count that is not an integer (Python or NumPy), a
            learning rate that is not a number, a `batch_norm` or
            `weight_map` that is not a bool, or a `loss` that is not a string.
        ValueError: for an unknown dataset, model or loss, a count below 1, a
            crop size that the dataset or the U-Net cannot take, or a weight
            map where the task or the loss cannot use one.

    Example:

    >>> settings = TrainSettings(dataset="Nuclei", epochs=np.int64(4), crop_size=64)
    >>> settings.dataset, settings.epochs, type(settings.epochs).__name__
    ('nuclei', 4, 'int')
    >>> settings.loss, TrainSettings(dataset="text_deblur").loss  # each task's default
    ('crossentropy', 'mean_absolute_error')
    >>> settings.diff(dataclasses.replace(settings, learning_rate=1e-3, seed=1))
    {'learning_rate': (0.002, 0.001), 'seed': (0, 1)}
    >>> TrainSettings(crop_size=100, depth=3)
    Traceback (most recent call last):
    ...
    ValueError: `crop_size` must be divisible by 8, the total stride of a U-Net of depth 3. ...
    """

    dataset: str = "nuclei"
    model: str = "unet"
    epochs: int = 10
    crop_size: int = 128
    batch_size: int = 8
    steps_per_epoch: int = 25
    learning_rate: float = 2e-3
    depth: int = 3
    filters: int = 16
    batch_norm: bool = False
    loss: str | None = None
    weight_map: bool = False
    seed: int = 0

    def __post_init__(self):
        from fcnkit import datasets

        checked = {
            "dataset": validate_option(self.dataset, "dataset", tuple(datasets.DATASETS)),
            "model": validate_option(self.model, "model", MODELS),
            **{
                name: check_positive_int(getattr(self, name), name)
                for name in ("epochs", "crop_size", "batch_size", "steps_per_epoch",
                             "depth", "filters")
            },
            "learning_rate": check_positive_float(self.learning_rate, "learning_rate"),
            "batch_norm": check_bool(self.batch_norm, "batch_norm"),
            "weight_map": check_bool(self.weight_map, "weight_map"),
            "seed": check_non_negative_int(self.seed, "seed"),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        info = datasets.DATASETS[self.dataset]
        object.__setattr__(self, "loss", self._check_loss(info))
        self._check_sizes(info)

    def _check_loss(self, info) -> str:
        """The loss's name among the task's; a weight map needs a task and a loss
        that take one."""
        from fcnkit.training import tasks

        task = tasks.TASKS[info.kind]
        if self.loss is None:
            loss = task.default_loss
        elif not isinstance(self.loss, str):
            raise TypeError(
                f"`loss` must be the name of a loss (a str) or None. Received: "
                f"loss={self.loss!r} of type {type(self.loss).__name__}. Pass e.g. "
                f'loss="{task.default_loss}".'
            )
        elif self.loss.lower() in task.losses:
            loss = self.loss.lower()
        else:
            choices = ", ".join(f'"{name}"' for name in task.losses)
            message = (
                f"`loss` must be one of {choices} for the {self.dataset} dataset "
                f"({info.kind}). Received: loss={self.loss!r}."
            )
            close = difflib.get_close_matches(self.loss.lower(), list(task.losses), n=1)
            raise ValueError(message + (f' Did you mean "{close[0]}"?' if close else ""))
        if not self.weight_map:
            return loss
        if task.weight_maps is None:
            raise ValueError(
                f"`weight_map=True` weights the pixels by the U-Net border weight map of "
                f"segmentation masks, but {self.dataset} is a {info.kind} dataset. "
                "Received: weight_map=True. Train without it."
            )
        if loss not in task.weighted_losses:
            allowed = ", ".join(f'"{name}"' for name in task.weighted_losses)
            raise ValueError(
                f"`weight_map=True` weights each pixel's loss, which only the {allowed} "
                f"loss can take (the Dice and Jaccard losses are ratios of sums over the "
                f'image). Received: loss="{loss}", weight_map=True. Use loss={allowed} '
                "with the weight map, or train without it."
            )
        return loss

    def _check_sizes(self, info):
        """The crop must fit the training images and the network."""
        from fcnkit import shapes

        smallest_side = min(info.train_shape[1:3])
        if self.crop_size > smallest_side:
            raise ValueError(
                f"`crop_size` must be at most the smallest side of the {self.dataset} "
                f"training images ({smallest_side} pixels). "
                f"Received: crop_size={self.crop_size}. Use {smallest_side} or less."
            )
        if self.model == "plain_cnn":
            return
        network = {"unet": "a U-Net", "fcn": "an FCN", "segnet": "a SegNet"}[self.model]
        if self.model == "segnet":
            if self.crop_size < self.smallest_side:
                raise ValueError(
                    f"`crop_size` must be at least 2**depth={self.smallest_side} for "
                    f"{network} of depth {self.depth}. Received: "
                    f"crop_size={self.crop_size}. Use {self.smallest_side} or more, or a "
                    "smaller depth."
                )
        elif self.crop_size % self.multiple:
            below, above = shapes.nearest_valid_unet_sizes(
                self.crop_size, self.multiple.bit_length() - 1, "same")
            nearest = f"{below} or {above}" if below else f"{above}"
            depth = f" of depth {self.depth}" if self.model == "unet" else ""
            raise ValueError(
                f"`crop_size` must be divisible by {self.multiple}, the total stride of "
                f"{network}{depth}. Received: crop_size={self.crop_size}. Use {nearest}."
            )
        test_side = min(info.test_shape[1:3])
        if self.smallest_side > test_side:
            raise ValueError(
                f"{self.model} with depth={self.depth} needs held-out images of at least "
                f"{self.smallest_side} pixels a side, but the {self.dataset} test images "
                f"have a side of {test_side}. Received: depth={self.depth}. Use "
                f"depth={test_side.bit_length() - 1} or less."
            )

    @property
    def smallest_side(self) -> int:
        """The smallest height and width the network takes (its total stride).

        Example:

        >>> TrainSettings(model="segnet", depth=4).smallest_side
        16
        """
        if self.model == "plain_cnn":
            return 1
        return FCN_STRIDE if self.model == "fcn" else 2**self.depth

    @property
    def multiple(self) -> int:
        """The number height and width must be multiples of (the total stride).

        A SegNet takes any size of at least `smallest_side`: its poolings
        round up and its unpoolings return to the sizes they came from.

        Example:

        >>> TrainSettings(depth=3).multiple, TrainSettings(model="plain_cnn").multiple
        (8, 1)
        >>> TrainSettings(model="fcn").multiple, TrainSettings(model="segnet").multiple
        (32, 1)
        """
        return self.smallest_side if self.model in ("unet", "fcn") else 1

    @property
    def schedule_steps(self) -> int:
        """Steps over which the learning rate decays: `epochs * steps_per_epoch`."""
        return self.epochs * self.steps_per_epoch

    def as_dict(self) -> dict:
        """The settings as a JSON-ready dict, in field order.

        Example:

        >>> list(TrainSettings().as_dict())[:3]
        ['dataset', 'model', 'epochs']
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainSettings:
        """Settings from a dict written by `as_dict` (checked again).

        Missing names take their defaults, so a record written before a
        setting existed reads as the default it was trained with.

        Raises:
            ValueError: for a name that is not a setting.

        Example:

        >>> TrainSettings.from_dict({"dataset": "text_deblur", "model": "plain_cnn"}).model
        'plain_cnn'
        """
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(
                f"Unknown training settings: {', '.join(unknown)}. Expected names among "
                f"{', '.join(names)}. Received: {values!r}. Was it written by a newer "
                "fcnkit? Use that version, or train into another folder."
            )
        return cls(**values)

    def diff(self, other: TrainSettings) -> dict[str, tuple]:
        """The settings that differ, as `{name: (value here, value in other)}`.

        Example:

        >>> TrainSettings().diff(TrainSettings(depth=2))
        {'depth': (3, 2)}
        >>> TrainSettings().diff(TrainSettings())
        {}
        """
        if not isinstance(other, TrainSettings):
            raise TypeError(
                "`other` must be a TrainSettings. Received: "
                f"other={other!r} of type {type(other).__name__}. "
                "Build one with TrainSettings.from_dict(...)."
            )
        return {
            field.name: (getattr(self, field.name), getattr(other, field.name))
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != getattr(other, field.name)
        }
