"""Where a run trains: the backend, the GPU, and mixed precision.

A run uses mixed precision (float16 compute, float32 weights) when the backend
sees a GPU. `environment` is what a checkpoint records about the machine, since
a run resumed under another backend or precision would not train the same way.

Lesson: ``01_image_to_image``.
"""

from __future__ import annotations

import contextlib

import keras


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


def environment() -> dict:
    """What shapes training besides the settings: backend and precision.

    The backend picks the crop stream (`crop_dataset` on TensorFlow,
    `CropSequence` elsewhere); mixed precision changes the model's dtypes and
    wraps the optimizer in loss scaling.

    Example:

    >>> sorted(environment())
    ['backend', 'mixed_precision']
    """
    return {"backend": keras.backend.backend(), "mixed_precision": gpu_available()}


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
