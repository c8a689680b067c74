"""The plain image-to-image CNN (Pang et al., 2010)."""

import keras

from fcnkit._validation import check_positive_int, validate_option
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
        TypeError: for a count or size that is not an integer (a `bool`, a
            float).
        ValueError: for an empty `filters`, a count or size below 1, or an
            unknown `padding`.

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
    if not filters:
        raise ValueError(
            "`filters` must be a non-empty sequence of positive integers, one "
            f"per hidden convolution. Received: filters={filters}. Pass e.g. "
            "filters=(32, 32)."
        )
    filters = tuple(
        check_positive_int(count, f"filters[{index}]") for index, count in enumerate(filters)
    )
    output_channels = check_positive_int(output_channels, "output_channels")
    kernel_size = check_positive_int(kernel_size, "kernel_size")
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
