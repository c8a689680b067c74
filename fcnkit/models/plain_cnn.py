"""The plain image-to-image CNN (Pang et al., 2010)."""

import keras

from fcnkit._validation import validate_option
from fcnkit.shapes import PADDINGS


def plain_cnn(
    input_shape=(None, None, 1),
    output_channels=1,
    filters=(32, 32),
    kernel_size=5,
    padding="same",
    output_activation=None,
    name="plain_cnn",
):
    """A plain stack of convolutions that maps an image to an image.

    Every hidden convolution is followed by a ReLU; the last convolution has no
    activation (or `output_activation`), as the lecture recommends today. There
    is no pooling, so with `padding="same"` the output has the size of the input
    and any input size works.

    Args:
        input_shape: tuple `(height, width, channels)`; height and width may be
            None. Defaults to `(None, None, 1)`.
        output_channels: int, channels of the output image (`d2` in
            `F: I^d1 -> I^d2`). Defaults to `1`.
        filters: sequence of int, filters of each hidden convolution. Defaults
            to `(32, 32)`.
        kernel_size: int, size of every (square) kernel. Defaults to `5`.
        padding: `"same"` (output as large as the input) or `"valid"` (each
            convolution removes `kernel_size - 1` pixels). Defaults to `"same"`.
        output_activation: None or the name of a Keras activation for the last
            layer (`"sigmoid"` for a probability map). Defaults to None.
        name: str, model name.

    Returns:
        A functional `keras.Model`. Layers are named `conv1`, `conv2`, ... and
        `output`.

    Raises:
        ValueError: for an empty `filters`, a non-positive size, or an unknown
            `padding`.

    Example:

    >>> model = plain_cnn(input_shape=(None, None, 1), filters=(8, 8))
    >>> [layer.name for layer in model.layers[1:]]
    ['conv1', 'conv2', 'output']
    >>> model.predict(np.zeros((1, 30, 40, 1)), verbose=0).shape
    (1, 30, 40, 1)

    Reference:
        Pang et al., Cell Nucleus Segmentation in Color Histopathological
        Imagery Using Convolutional Networks, CCPR 2010.
        Lesson: ``01_image_to_image``.
    """
    padding = validate_option(padding, "padding", PADDINGS)
    filters = tuple(filters)
    if not filters or any(
        not isinstance(f, int) or isinstance(f, bool) or f < 1 for f in filters
    ):
        raise ValueError(
            "`filters` must be a non-empty sequence of positive integers, one "
            f"per hidden convolution. Received: filters={filters}"
        )
    for arg_name, value in (
        ("output_channels", output_channels),
        ("kernel_size", kernel_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"`{arg_name}` must be a positive integer. "
                f"Received: {arg_name}={value!r}"
            )
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for index, count in enumerate(filters, start=1):
        x = keras.layers.Conv2D(
            count, kernel_size, padding=padding, activation="relu",
            name=f"conv{index}",
        )(x)
    outputs = keras.layers.Conv2D(
        output_channels, kernel_size, padding=padding,
        activation=output_activation, dtype="float32", name="output",
    )(x)
    return keras.Model(inputs, outputs, name=name)
