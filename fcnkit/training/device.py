"""Where a run trains: the backend, the GPU, mixed precision, and the replicas.

A run uses mixed precision (float16 compute, float32 weights) when the backend
sees a GPU, unless it is asked for explicitly (on or off). `environment` is what
a checkpoint records about the machine, since a run resumed under another
backend or precision would not train the same way. `distribution` gives the
`tf.distribute` strategy a run trains under: one device, or one replica per
GPU (`"mirrored"`), each replica taking its share of the global batch.

Lesson: ``01_image_to_image``, ``08_large_images``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import keras

from fcnkit._validation import check_bool

# `strategy` names: one device, or MirroredStrategy over this machine's devices.
STRATEGIES = ("none", "mirrored")


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


def environment(mixed_precision=None) -> dict:
    """What shapes training besides the settings: backend and precision.

    The backend picks the crop stream (`crop_dataset` on TensorFlow,
    `CropSequence` elsewhere); mixed precision changes the model's dtypes and
    wraps the optimizer in loss scaling.

    Args:
        mixed_precision: None (automatic: on when the backend sees a GPU),
            True or False (forced on or off, on any device).

    Raises:
        TypeError: for a `mixed_precision` that is neither None nor a bool.

    Example:

    >>> sorted(environment())
    ['backend', 'mixed_precision']
    >>> environment(mixed_precision=True)["mixed_precision"]
    True
    """
    if mixed_precision is None:
        mixed_precision = gpu_available()
    else:
        mixed_precision = _check_optional_bool(mixed_precision, "mixed_precision")
    return {"backend": keras.backend.backend(), "mixed_precision": mixed_precision}


def _check_optional_bool(value, name):
    if value is None:
        return None
    try:
        return check_bool(value, name)
    except TypeError:
        raise TypeError(
            f"`{name}` must be None (automatic), True or False. Received: "
            f"{name}={value!r} of type {type(value).__name__}. Pass {name}=None, "
            f"{name}=True or {name}=False."
        ) from None


def check_jit_compile(jit_compile):
    """`jit_compile` checked: None (Keras' "auto"), True or False.

    Example:

    >>> check_jit_compile(None), check_jit_compile(False)
    (None, False)
    """
    return _check_optional_bool(jit_compile, "jit_compile")


@dataclass(frozen=True)
class Distribution:
    """The devices a run trains on.

    Attributes:
        name: `"none"` (one device), `"mirrored"`, or the class name of a
            strategy passed in (e.g. `"MultiWorkerMirroredStrategy"`).
        strategy: the `tf.distribute.Strategy`, or None for one device.
    """

    name: str
    strategy: object = None

    @property
    def replicas(self) -> int:
        """Replicas the global batch is split across (1 without a strategy)."""
        return 1 if self.strategy is None else int(self.strategy.num_replicas_in_sync)

    def scope(self):
        """The context models must be built (or loaded) in."""
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def check_batch_size(self, batch_size: int) -> None:
        """The global batch must split evenly across the replicas.

        Raises:
            ValueError: if `batch_size` is not a multiple of the replicas.
        """
        if batch_size % self.replicas:
            below = batch_size - batch_size % self.replicas
            nearest = f"{below} or {below + self.replicas}" if below else f"{self.replicas}"
            raise ValueError(
                f"`batch_size` is the global batch, split evenly across the "
                f"{self.replicas} replicas of strategy={self.name!r}: it must be a "
                f"multiple of {self.replicas}. Received: batch_size={batch_size}. "
                f"Use {nearest}."
            )


def _mirrored_devices() -> list[str]:
    """One replica per GPU; without a GPU, one per logical CPU device (usually
    one; tests split the CPU in two with `tf.config.set_logical_device_configuration`)."""
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [device.name for device in devices]


def distribution(strategy=None) -> Distribution:
    """The distribution strategy a run trains under.

    Args:
        strategy: None or `"none"`: one device (the default). `"mirrored"`:
            `tf.distribute.MirroredStrategy`, one replica per GPU of this
            machine (without a GPU, one per logical CPU device); variables
            are mirrored, each replica computes the gradient of its share of
            the global batch and the gradients are summed across replicas,
            so the same global batch trains the same way as on one device.
            Or a `tf.distribute.Strategy` you made, e.g. a
            `tf.distribute.MultiWorkerMirroredStrategy` for several machines
            (create it first thing in the program, with `TF_CONFIG` set).
            Only the TensorFlow backend has `tf.distribute`.

    Returns:
        A `Distribution`.

    Raises:
        ValueError: for an unknown name, or a strategy on another backend
            than TensorFlow.
        TypeError: for anything else than a name, None or a strategy.

    Example:

    >>> distribution().replicas, distribution("none").name
    (1, 'none')
    >>> distribution("mirored")
    Traceback (most recent call last):
    ...
    ValueError: `strategy` must be one of "none", "mirrored". Received: strategy='mirored'. Did you mean "mirrored"?
    """  # noqa: E501
    from fcnkit._validation import validate_option

    if strategy is None:
        return Distribution("none")
    if isinstance(strategy, str):
        name = validate_option(strategy, "strategy", STRATEGIES)
        if name == "none":
            return Distribution("none")
    else:
        name = type(strategy).__name__
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"`strategy={strategy if isinstance(strategy, str) else name!r}` uses "
            f"tf.distribute, which only the TensorFlow backend has. Received: the "
            f"{backend} backend (KERAS_BACKEND={backend}). Train with "
            "KERAS_BACKEND=tensorflow, or without a strategy (on JAX, "
            "keras.distribution.DataParallel spreads a batch over devices)."
        )
    import tensorflow as tf

    if isinstance(strategy, str):
        return Distribution(name, tf.distribute.MirroredStrategy(_mirrored_devices()))
    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            '`strategy` must be None, "none", "mirrored" or a tf.distribute.Strategy. '
            f"Received: strategy={strategy!r} of type {name}. Pass e.g. "
            'strategy="mirrored".'
        )
    return Distribution(name, strategy)


@contextlib.contextmanager
def dtype_policy(mixed_precision: bool):
    """Build or load models under mixed precision, then restore the caller's policy.

    Layers take the global dtype policy when they are created (or loaded), so
    the policy is set only around that, and later models are unaffected.

    Example:

    >>> with dtype_policy(True):
    ...     keras.mixed_precision.global_policy().name
    'mixed_float16'
    >>> keras.mixed_precision.global_policy().name
    'float32'
    """
    caller_policy = keras.mixed_precision.global_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(caller_policy)
