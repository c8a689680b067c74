"""How much memory training a model takes, and the largest batch or crop that fits.

The lecture's advice for large images: train on crops as large as memory
allows, with small batches. `activation_memory` estimates the memory of one
training step for a crop size and a batch size, without running the model
(the layers' output shapes are computed symbolically); `largest_batch_size`
and `largest_crop_size` turn a memory budget into a batch size or a crop size.

What the estimate counts (`MemoryEstimate`):

- `inputs`: the input batch;
- `activations`: every layer's output tensors for the batch, each in its own
  dtype (float16 under mixed precision, float32 for the layers kept in
  float32). The backward pass needs the layers' outputs, so they all stay
  in memory until it reaches them: this term grows with the batch size and
  with the number of pixels of a crop, and it is the one that limits the
  crop;
- `weights`: every variable of the model (trainable or not), in its dtype;
- `gradients`: one per trainable weight, in the weight's dtype;
- `optimizer_slots`: `optimizer_slots` values per trainable weight (Adam,
  what `train` uses, keeps two: the first and second moments).

What it does not count: the targets and the loss's temporaries, the
gradients with respect to the activations (at most a few live at a time
during the backward pass), the convolutions' scratch space (cuDNN or oneDNN
workspaces, Eigen's packed patches), the framework's own memory and the
allocator's fragmentation. It also counts tensors that the framework may free
early: the output of a convolution followed by a ReLU layer is not needed by
the backward pass (a ReLU's gradient needs only its own output). Measured on
a CPU for a U-Net (depth 3, 16 filters), the peak of a training step as
TensorFlow's allocator reports it was about 0.7 times the estimate with
TensorFlow's default oneDNN kernels, and 1.0 to 1.9 times it with the Eigen
kernels (`TF_ENABLE_ONEDNN_OPTS=0`) for estimates above 150 MiB (their
convolution scratch space, 17 to 170 MiB, is not counted):
`benchmarks/training_scale.py` prints the estimate next to the measured peak
for each cell, on a GPU too. Leave headroom in the budget (a quarter, say).

Lesson: ``08_large_images``.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from fcnkit._validation import (
    check_non_negative_int,
    check_positive_int,
    validate_option,
)

# Names `dtype` takes: a float type, or a mixed policy (counted as its compute type).
DTYPES = ("float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16")

MIB = 2**20


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """The memory of one training step, in bytes, by what holds it.

    Attributes:
        batch_size: int, crops per batch.
        crop_size: `(height, width)` of the crops.
        inputs: bytes of the input batch.
        activations: bytes of every layer's outputs for the batch.
        weights: bytes of the model's variables.
        gradients: bytes of one gradient per trainable weight.
        optimizer_slots: bytes of the optimizer's values per trainable weight.
    """

    batch_size: int
    crop_size: tuple
    inputs: int
    activations: int
    weights: int
    gradients: int
    optimizer_slots: int

    @property
    def per_batch(self) -> int:
        """Bytes that grow with the batch: inputs and activations."""
        return self.inputs + self.activations

    @property
    def fixed(self) -> int:
        """Bytes that do not depend on the batch: weights, gradients, optimizer."""
        return self.weights + self.gradients + self.optimizer_slots

    @property
    def total(self) -> int:
        """Everything counted: `per_batch + fixed`."""
        return self.per_batch + self.fixed

    def __str__(self) -> str:
        height, width = self.crop_size
        return (
            f"{self.batch_size} × {height}×{width}: {self.total / MIB:.1f} MiB "
            f"(activations {self.activations / MIB:.1f}, inputs {self.inputs / MIB:.1f}, "
            f"weights {self.weights / MIB:.1f}, gradients {self.gradients / MIB:.1f}, "
            f"optimizer {self.optimizer_slots / MIB:.1f})"
        )


def _check_crop(crop_size) -> tuple:
    if isinstance(crop_size, (tuple, list)):
        if len(crop_size) != 2:
            raise ValueError(
                "`crop_size` must be an int (a square crop) or a pair (height, width). "
                f"Received: crop_size={crop_size!r}. Pass e.g. crop_size=128 or "
                "crop_size=(128, 256)."
            )
        return tuple(check_positive_int(side, "crop_size") for side in crop_size)
    side = check_positive_int(crop_size, "crop_size")
    return side, side


def _functional(model):
    """The functional graph of `model` (a Sequential keeps one once built)."""
    if isinstance(model, keras.Sequential) and getattr(model, "_functional", None):
        model = model._functional
    if not isinstance(model, keras.Model) or not hasattr(model, "_run_through_graph"):
        raise TypeError(
            "`model` must be a functional or Sequential Keras model built with "
            f"keras.Input (its layers' output shapes are computed from its graph). "
            f"Received: model={model!r} of type {type(model).__name__}. Build it with "
            "keras.Input, e.g. one of fcnkit.models."
        )
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        shapes = [tuple(tensor.shape) for tensor in model.inputs]
        raise ValueError(
            "`model` must take one batch of images (batch, height, width, channels). "
            f"Received: a model with inputs of shapes {shapes}."
        )
    return model


# Layers that need inputs of one size (Keras' symbolic shapes do not check it).
MERGES = (keras.layers.Concatenate, keras.layers.Add, keras.layers.Subtract,
          keras.layers.Multiply, keras.layers.Average, keras.layers.Maximum,
          keras.layers.Minimum)


def _check_merge(operation, args, crop):
    sizes = {tuple(spec.shape[1:3]) for spec in keras.tree.flatten(args)
             if isinstance(spec, keras.KerasTensor) and len(spec.shape) == 4}
    if len(sizes) > 1:
        listed = " and ".join(f"{height}×{width}" for height, width in sorted(sizes))
        raise ValueError(
            f"The model cannot take crops of {crop[0]}×{crop[1]}: its layer "
            f"'{operation.name}' ({type(operation).__name__}) would merge tensors of "
            f"sizes {listed}. Received: crop_size={crop}. Use a size the model takes "
            "(for a U-Net, a multiple of 2**depth)."
        )


def _layer_outputs(model, input_spec, crop) -> list:
    """The output specs of every layer call of `model` for `input_spec`, nested
    models entered (their own layers are counted, not their output twice)."""
    outputs = []

    def operation_fn(operation):
        def call(*args, **kwargs):
            if isinstance(operation, MERGES):
                _check_merge(operation, args, crop)
            if isinstance(operation, keras.Model):
                inner = _functional(operation)
                inner_outputs = _layer_outputs(inner, args[0], crop)
                outputs.extend(inner_outputs)
                return inner.compute_output_spec(args[0])
            result = operation.compute_output_spec(*args, **kwargs)
            outputs.extend(
                spec for spec in keras.tree.flatten(result) if isinstance(spec, keras.KerasTensor)
            )
            return result

        return call

    # The same walk through the graph as `Functional.compute_output_spec`,
    # each layer's outputs recorded on the way.
    model._run_through_graph(input_spec, operation_fn=operation_fn)
    return outputs


def _bytes(spec, dtype=None) -> int:
    kind = spec.dtype
    if dtype is not None and keras.backend.is_float_dtype(kind):
        kind = dtype
    return math.prod(spec.shape) * np.dtype(keras.backend.standardize_dtype(kind)).itemsize


def activation_memory(model, crop_size, batch_size=1, dtype=None, optimizer_slots=2):
    """Estimate the memory of one training step of `model` on crops of `crop_size`.

    Sums the sizes of the input batch, of every layer's output tensors for
    that batch (what the backward pass keeps), of the weights, of their
    gradients and of the optimizer's slots. See the module's docstring for
    what it leaves out and how it compares with measured peaks (0.7 to 1.9
    times it on a CPU, depending on the convolution kernels).

    Args:
        model: a functional or Sequential Keras model taking images `(batch,
            height, width, channels)`, of any height and width or of
            `crop_size`. Nested models (a U-Net's encoder) are entered.
        crop_size: int (square crops) or `(height, width)`.
        batch_size: int, crops per batch.
        dtype: None: each output in its own dtype (float16 under mixed
            precision, as the model was built); else every floating output is
            counted in this type: `"float32"`, `"float16"`, `"bfloat16"`,
            `"float64"`, or a mixed policy (`"mixed_float16"`,
            `"mixed_bfloat16"`: its compute type), to see what mixed precision
            would save without building the model again. Weights keep their
            own dtype (float32 under mixed precision).
        optimizer_slots: int >= 0, values the optimizer keeps per trainable
            weight: 2 for Adam (`train`'s optimizer), 1 for SGD with momentum
            or RMSprop, 0 for plain SGD.

    Returns:
        A `MemoryEstimate` (bytes; `.total`, `.per_batch`, `.fixed`).

    Raises:
        TypeError: for a model that is not functional or Sequential, or sizes
            that are not integers.
        ValueError: for a model that does not take images, a crop size the
            model cannot take (a layer's own message, or one naming the merge
            layer whose inputs would differ in size), or an unknown `dtype`.

    Example:

    >>> model = keras.Sequential([keras.Input((None, None, 3)),
    ...                           keras.layers.Conv2D(8, 3, padding="same"),
    ...                           keras.layers.Conv2D(1, 1)])
    >>> estimate = activation_memory(model, 64, batch_size=4)
    >>> estimate.inputs, estimate.activations  # 4·64·64·(3) and 4·64·64·(8 + 1) floats
    (196608, 589824)
    >>> estimate.weights, estimate.gradients, estimate.optimizer_slots  # 233 weights
    (932, 932, 1864)
    >>> activation_memory(model, 64, 4, dtype="mixed_float16").activations
    294912
    >>> print(activation_memory(model, (64, 128), batch_size=2))
    2 × 64×128: 0.8 MiB (activations 0.6, inputs 0.2, weights 0.0, gradients 0.0, optimizer 0.0)

    Reference:
        Lesson ``08_large_images``: train on crops as large as memory allows.
    """
    graph = _functional(model)
    height, width = _check_crop(crop_size)
    batch_size = check_positive_int(batch_size, "batch_size")
    optimizer_slots = check_non_negative_int(optimizer_slots, "optimizer_slots")
    if dtype is not None:
        dtype = validate_option(dtype, "dtype", DTYPES).removeprefix("mixed_")
    (image,) = graph.inputs
    input_spec = keras.KerasTensor((batch_size, height, width, image.shape[-1]),
                                   dtype=image.dtype)
    outputs = _layer_outputs(graph, input_spec, (height, width))
    trainable = sum(_bytes(variable) for variable in model.trainable_weights)
    trainable_count = sum(math.prod(variable.shape) for variable in model.trainable_weights)
    return MemoryEstimate(
        batch_size=batch_size,
        crop_size=(height, width),
        inputs=_bytes(input_spec),
        activations=sum(_bytes(spec, dtype) for spec in outputs),
        weights=sum(_bytes(variable) for variable in model.weights),
        gradients=trainable,
        optimizer_slots=optimizer_slots * trainable_count * 4,  # float32 slots
    )


def _check_budget(budget) -> int:
    return check_positive_int(budget, "budget")


def largest_batch_size(model, crop_size, budget, dtype=None, optimizer_slots=2):
    """The largest batch of crops of `crop_size` whose estimate fits in `budget` bytes.

    The estimate grows linearly with the batch (`MemoryEstimate.per_batch`
    per batch of one, plus the fixed weights, gradients and optimizer), so
    the answer is `(budget - fixed) // per_image`.

    Args:
        model, crop_size, dtype, optimizer_slots: as `activation_memory`.
        budget: int, bytes available for training (leave headroom: see the
            module's docstring for what the estimate leaves out).

    Returns:
        The batch size, an int >= 1.

    Raises:
        ValueError: if not even one crop fits; the message gives the memory
            it needs and the largest crop that would fit.

    Example:

    >>> model = keras.Sequential([keras.Input((None, None, 3)),
    ...                           keras.layers.Conv2D(8, 3, padding="same"),
    ...                           keras.layers.Conv2D(1, 1)])
    >>> largest_batch_size(model, 64, budget=2**20)  # 196,608 bytes per crop + 3,728
    5
    """
    budget = _check_budget(budget)
    one = activation_memory(model, crop_size, 1, dtype, optimizer_slots)
    fitting = (budget - one.fixed) // one.per_batch
    if fitting < 1:
        height, width = one.crop_size
        raise ValueError(
            f"A batch of one {height}×{width} crop needs about {one.total / MIB:.1f} MiB, "
            f"more than the budget of {budget / MIB:.1f} MiB. Received: crop_size="
            f"{crop_size!r}, budget={budget}. Use a smaller crop (largest_crop_size gives "
            "the largest that fits), mixed precision, or more memory."
        )
    return int(fitting)


def largest_crop_size(model, batch_size, budget, multiple=1, maximum=None, dtype=None,
                      optimizer_slots=2):
    """The largest square crop, a multiple of `multiple`, whose estimate fits in `budget`.

    Args:
        model, batch_size, dtype, optimizer_slots: as `activation_memory`.
        budget: int, bytes available for training.
        multiple: int, the crop must be a multiple of it (the total stride:
            `2**depth` for a U-Net, 32 for an FCN).
        maximum: None or int, the largest crop to consider (the smallest
            side of the training images); None: up to 2**16 pixels.

    Returns:
        The crop size, a multiple of `multiple`.

    Raises:
        ValueError: if not even a crop of `multiple` pixels fits.

    Example:

    >>> model = keras.Sequential([keras.Input((None, None, 3)),
    ...                           keras.layers.Conv2D(8, 3, padding="same"),
    ...                           keras.layers.Conv2D(1, 1)])
    >>> largest_crop_size(model, batch_size=4, budget=2**20, multiple=8)  # 192 bytes a pixel
    72
    >>> largest_crop_size(model, batch_size=4, budget=2**20)  # any size: 73² · 192 fits
    73
    >>> largest_crop_size(model, batch_size=4, budget=2**20, maximum=64)
    64
    """
    budget = _check_budget(budget)
    multiple = check_positive_int(multiple, "multiple")
    maximum = 2**16 if maximum is None else check_positive_int(maximum, "maximum")
    if maximum < multiple:
        raise ValueError(
            f"`maximum` must be at least `multiple` ({multiple}). Received: "
            f"maximum={maximum}, multiple={multiple}. Pass a larger maximum."
        )

    def fits(steps):
        return activation_memory(model, steps * multiple, batch_size, dtype,
                                 optimizer_slots).total <= budget

    if not fits(1):
        needed = activation_memory(model, multiple, batch_size, dtype, optimizer_slots)
        raise ValueError(
            f"Even a batch of {batch_size} crops of {multiple}×{multiple} (the smallest "
            f"multiple of {multiple}) needs about {needed.total / MIB:.1f} MiB, more than "
            f"the budget of {budget / MIB:.1f} MiB. Received: batch_size={batch_size}, "
            f"budget={budget}. Use a smaller batch, mixed precision, or more memory."
        )
    low, high = 1, maximum // multiple  # fits(low) holds; find the largest that fits
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low * multiple
