"""Input gradients on every Keras backend: the one place that needs autodiff.

The receptive-field probe (`fcnkit.receptive_field`) and the effective
receptive field need d(output)/d(input) of a model. Keras 3 has no
backend-neutral gradient function, so this module dispatches on
`keras.backend.backend()`.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _quiet_tracing():
    """TensorFlow warns when many fresh tf.functions trace; each model here has its own."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def gradient_function(model, objective, vectorised=False, what="This function"):
    """A compiled `gradient(x, trainable=None, non_trainable=None)`, built once, reused.

    It returns d objective(model(x)) / dx as NumPy, where `objective` maps the
    model's output to a scalar (e.g. the sum over the batch of one output
    pixel: one pass then gives every sample's gradient). The weights are the
    model's current values (read at every call), or the given lists of values
    in the order of `model.trainable_variables` and
    `model.non_trainable_variables` (a stateless call: the model is never
    changed).

    With `vectorised=True`, the weights are `k` sets stacked on a first axis
    and `x` has shape `(k, batch, ...)`: entry `i` of the result is the
    gradient of the model with the i-th set of weights at `x[i]`, all in one
    vectorised pass (`jax.vmap`, or `tf.vectorized_map`; where TensorFlow
    cannot vectorise a layer, batch normalisation among them, it warns once
    and computes the sets one after another, with the same result).

    Args:
        model: a Keras model with one input.
        objective: callable, output tensor -> scalar tensor (keras.ops).
        vectorised: bool, see above.
        what: the caller's name, for messages.

    Returns:
        The function.

    Raises:
        ValueError: on a backend other than TensorFlow and JAX.
    """
    backend = keras.backend.backend()

    def current(trainable, non_trainable):
        if trainable is None:
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
        return list(trainable), list(non_trainable)

    if backend == "jax":
        import jax

        def total(x, trainable, non_trainable):
            outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return objective(outputs)

        step = jax.grad(total)
        compiled = jax.jit(jax.vmap(step) if vectorised else step)

        def jax_gradient(x, trainable=None, non_trainable=None):
            return np.asarray(compiled(x, *current(trainable, non_trainable)))

        return jax_gradient
    if backend != "tensorflow":
        raise _unsupported(backend, what)
    import tensorflow as tf

    def one(arguments):
        x, trainable, non_trainable = arguments
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs, _ = model.stateless_call(list(trainable), list(non_trainable), x,
                                              training=False)
            total = objective(outputs)
        return tape.gradient(total, x)

    def looped(arguments):
        return tf.map_fn(one, arguments, fn_output_signature=arguments[0].dtype)

    functions = [tf.function(one, reduce_retracing=True)]
    if vectorised:
        functions = [tf.function(lambda arguments: tf.vectorized_map(one, arguments),
                                 reduce_retracing=True),
                     tf.function(looped, reduce_retracing=True)]

    def tf_gradient(x, trainable=None, non_trainable=None):
        trainable, non_trainable = current(trainable, non_trainable)
        arguments = (tf.constant(x), [tf.convert_to_tensor(v) for v in trainable],
                     [tf.convert_to_tensor(v) for v in non_trainable])
        with _quiet_tracing():
            try:
                return functions[0](arguments).numpy()
            except (tf.errors.InvalidArgumentError, ValueError) as error:
                if len(functions) == 1:
                    raise
                warnings.warn(
                    f"{what}: TensorFlow could not vectorise the gradient over sets "
                    f"of weights ({str(error).splitlines()[0][:200]}); computing "
                    "them one after another instead, with the same result.",
                    RuntimeWarning, stacklevel=2,
                )
                functions.pop(0)
                return functions[0](arguments).numpy()

    return tf_gradient
