"""Input gradients on every Keras backend: the one place that needs autodiff.

The receptive-field probe (`fcnkit.receptive_field`) and the effective
receptive field need d(output)/d(input) of a model. Keras 3 has no
backend-neutral gradient function, so this module dispatches on
`keras.backend.backend()`.
"""

from __future__ import annotations

import warnings

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


def _unsupported(backend: str, what: str) -> ValueError:
    return ValueError(
        f"{what} computes gradients on the TensorFlow and JAX backends. "
        f"Received: KERAS_BACKEND={backend!r}. Set KERAS_BACKEND=\"tensorflow\" or "
        "\"jax\" before importing Keras."
    )


def compiled_input_gradient(model, objective, what="This function"):
    """`gradient(x)`: d objective(model(x)) / dx as NumPy, compiled once, reused.

    The model's variables are read at every call, so weights assigned between
    calls are used. `objective` maps the model's output to a scalar (e.g. the
    sum over the batch of one output pixel: then one pass gives every
    sample's gradient).

    Args:
        model: a Keras model with one input.
        objective: callable, output tensor -> scalar tensor (keras.ops).
        what: the caller's name, for the error message.

    Returns:
        A function of a NumPy batch returning a NumPy array of its shape.

    Raises:
        ValueError: on a backend other than TensorFlow and JAX.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def tf_gradient(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = objective(model(x, training=False))
            return tape.gradient(total, x)

        return lambda x: tf_gradient(tf.constant(x)).numpy()
    if backend == "jax":
        import jax

        def total(x, trainable, non_trainable):
            outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return objective(outputs)

        jax_gradient = jax.jit(jax.grad(total))

        def gradient(x):
            return np.asarray(jax_gradient(
                x, [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables]))

        return gradient
    raise _unsupported(backend, what)


def vectorized_input_gradient(model, objective, what="This function"):
    """`gradient(trainable, non_trainable, x)`: one input gradient per set of weights.

    Each list holds, per variable of `model` (in the order of
    `model.trainable_variables` / `model.non_trainable_variables`), the
    values for `k` sets of weights stacked on a first axis; `x` has shape
    `(k, batch, ...)`. Entry `i` of the result is d objective(model_i(x[i]))
    / dx[i] for the model with the i-th set of weights: all `k` models in
    one vectorised pass (`tf.vectorized_map`, `jax.vmap`), compiled once.

    Raises:
        ValueError: on a backend other than TensorFlow and JAX.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def one(arguments):
            trainable, non_trainable, x = arguments
            with tf.GradientTape() as tape:
                tape.watch(x)
                outputs, _ = model.stateless_call(list(trainable), list(non_trainable), x,
                                                  training=False)
                total = objective(outputs)
            return tape.gradient(total, x)

        @tf.function(reduce_retracing=True)
        def vectorised(trainable, non_trainable, x):
            return tf.vectorized_map(one, (trainable, non_trainable, x))

        @tf.function(reduce_retracing=True)
        def looped(trainable, non_trainable, x):
            return tf.map_fn(one, (trainable, non_trainable, x), fn_output_signature=x.dtype)

        chosen = [vectorised]

        def gradient(trainable, non_trainable, x):
            arguments = ([tf.constant(v) for v in trainable],
                         [tf.constant(v) for v in non_trainable], tf.constant(x))
            try:
                return chosen[0](*arguments).numpy()
            except (tf.errors.InvalidArgumentError, ValueError) as error:
                if chosen[0] is looped:
                    raise
                # TensorFlow's vectoriser (pfor) fails on some layers, batch
                # normalisation among them: same values, one set after another.
                warnings.warn(
                    f"{what}: TensorFlow could not vectorise the gradient over sets "
                    f"of weights ({str(error).splitlines()[0][:200]}); computing "
                    "them one after another instead, with the same result.",
                    RuntimeWarning, stacklevel=2,
                )
                chosen[0] = looped
                return looped(*arguments).numpy()

        return gradient
    if backend == "jax":
        import jax

        def total(x, trainable, non_trainable):
            outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return objective(outputs)

        jax_gradient = jax.jit(jax.vmap(jax.grad(total), in_axes=(0, 0, 0)))
        return lambda trainable, non_trainable, x: np.asarray(
            jax_gradient(x, list(trainable), list(non_trainable)))
    raise _unsupported(backend, what)
