"""Input gradients on every Keras backend: the one place that needs autodiff.

The receptive-field probe (`fcnkit.receptive_field`) and the effective
receptive field need d(output)/d(input) of a model. Keras 3 has no
backend-neutral gradient function, so this module dispatches on
`keras.backend.backend()`.
"""

from __future__ import annotations

import keras
import numpy as np

BACKENDS = ("tensorflow", "jax", "torch")


def input_gradient(model, inputs, output_weights) -> np.ndarray:
    """Gradient of `sum(model(inputs) * output_weights)` with respect to `inputs`.

    With `output_weights` zero everywhere except a one at an output pixel, this
    is the derivative of that pixel with respect to every input pixel
    (Luo et al., 2017): the tool behind the receptive-field probe and the
    effective receptive field.

    Args:
        model: a Keras model (or any callable on tensors) with one input.
        inputs: NumPy array of the model's input shape, batch axis included.
        output_weights: NumPy array of the model's output shape.

    Returns:
        A NumPy array of the shape of `inputs`.

    Raises:
        ValueError: on a backend other than TensorFlow, JAX and PyTorch.

    Example:

    >>> model = keras.Sequential([keras.Input((5, 5, 1)),
    ...                           keras.layers.AveragePooling2D(5)])
    >>> weights = np.ones((1, 1, 1, 1), dtype="float32")
    >>> gradient = input_gradient(model, np.zeros((1, 5, 5, 1), "float32"), weights)
    >>> float(gradient.sum())
    1.0
    """
    backend = keras.backend.backend()
    inputs = np.asarray(inputs)
    output_weights = np.asarray(output_weights)
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(inputs)
        weights = tf.convert_to_tensor(output_weights)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x, training=False)
            total = tf.reduce_sum(tf.cast(y, weights.dtype) * weights)
        return tape.gradient(total, x).numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        weights = jnp.asarray(output_weights)

        def total(x):
            y = model(x, training=False)
            return jnp.sum(y.astype(weights.dtype) * weights)

        return np.asarray(jax.grad(total)(jnp.asarray(inputs)))
    if backend == "torch":
        import torch

        x = torch.tensor(inputs, requires_grad=True)
        weights = torch.tensor(output_weights)
        y = model(x, training=False)
        torch.sum(y.to(weights.dtype) * weights).backward()
        return x.grad.detach().cpu().numpy()
    choices = ", ".join(f'"{name}"' for name in BACKENDS)
    raise ValueError(
        f"`input_gradient` supports the backends {choices}. "
        f"Received: backend={backend!r}. Set KERAS_BACKEND to one of them."
    )
