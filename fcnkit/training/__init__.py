"""Training fully convolutional networks on random crops.

The lecture's advice for large images: train on crops, as large as possible,
with small batches. `train` runs a whole experiment and writes the model,
`history.csv`, `metrics.json` and `report.png`, with a checkpoint every epoch
that `resume=True` (`--resume`) continues from. On a GPU it uses mixed
precision.

Modules:

- `settings`: `TrainSettings`, every option that shapes a run, validated
  when it is made, compared with `diff` when a run is resumed.
- `tasks`: what a kind of dataset implies (the losses a run may choose, U-Net
  weight maps, output activation, held-out scores, what the report shows).
- `data`: `crop_dataset` (tf.data), `CropSequence` (NumPy), `predict_image`.
- `checkpoint`: the atomic checkpoint (model and record in one file), `Run`,
  `open_run` (new or resumed run).
- `device`: GPU, backend and mixed precision.
- `experiment`: `train`.

Lesson: ``01_image_to_image``.
"""

from fcnkit.training.checkpoint import read_record
from fcnkit.training.data import CropSequence, crop_dataset, predict_image
from fcnkit.training.device import gpu_available
from fcnkit.training.experiment import train
from fcnkit.training.settings import MODELS, TrainSettings
from fcnkit.training.tasks import TASKS, Task, task_for

__all__ = [
    "MODELS",
    "TASKS",
    "CropSequence",
    "Task",
    "TrainSettings",
    "crop_dataset",
    "gpu_available",
    "predict_image",
    "read_record",
    "task_for",
    "train",
]
