"""Training fully convolutional networks on random crops.

The lecture's advice for large images: train on crops, as large as possible,
with small batches. `train` runs a whole experiment and writes the model,
`history.csv`, `metrics.json` and `report.png`, with a checkpoint every epoch
that `resume=True` (`--resume`) continues from. On a GPU it uses mixed
precision (`mixed_precision=` forces it on or off), with `strategy="mirrored"`
every GPU of the machine.

Modules:

- `settings`: `TrainSettings`, every option that shapes a run, validated
  when it is made, compared with `diff` when a run is resumed.
- `tasks`: what a kind of dataset implies (the losses a run may choose, U-Net
  weight maps, output activation, held-out scores, what the report shows).
- `data`: `crop_dataset` (tf.data), `CropSequence` (NumPy), `predict_image`.
- `checkpoint`: the atomic checkpoint (model and record in one file), `Run`,
  `open_run` (new or resumed run).
- `device`: GPU, backend, mixed precision, distribution strategies.
- `memory`: `activation_memory` (the memory of a training step, estimated),
  `largest_batch_size` and `largest_crop_size` (what fits in a budget).
- `experiment`: `train`.

Lesson: ``01_image_to_image``, ``08_large_images``.
"""

from fcnkit.training.checkpoint import read_record
from fcnkit.training.data import CropSequence, crop_dataset, predict_image
from fcnkit.training.device import gpu_available
from fcnkit.training.experiment import train
from fcnkit.training.memory import (
    MemoryEstimate,
    activation_memory,
    largest_batch_size,
    largest_crop_size,
)
from fcnkit.training.settings import MODELS, TrainSettings
from fcnkit.training.tasks import TASKS, Task, task_for

__all__ = [
    "MODELS",
    "TASKS",
    "CropSequence",
    "MemoryEstimate",
    "Task",
    "TrainSettings",
    "activation_memory",
    "crop_dataset",
    "gpu_available",
    "largest_batch_size",
    "largest_crop_size",
    "predict_image",
    "read_record",
    "task_for",
    "train",
]
