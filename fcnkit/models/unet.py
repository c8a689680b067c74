"""U-Net (Ronneberger et al., 2015): the original valid layout and a modern one."""

import keras

from fcnkit._validation import check_bool, check_positive_int, validate_option
from fcnkit.layers import CropToMatch2D
from fcnkit.shapes import PADDINGS, check_unet_input_shape

UPSAMPLINGS = ("transpose", "nearest", "bilinear")


def _conv_block(x, filters, padding, batch_norm, prefix):
    for index in (1, 2):
        x = keras.layers.Conv2D(
            filters, 3, padding=padding, use_bias=not batch_norm,
            kernel_initializer="he_normal", name=f"{prefix}_conv{index}",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{prefix}_bn{index}")(x)
        x = keras.layers.Activation("relu", name=f"{prefix}_relu{index}")(x)
    return x


def _upsample(x, filters, upsampling, prefix):
    if upsampling == "transpose":
        return keras.layers.Conv2DTranspose(
            filters, 2, strides=2, kernel_initializer="he_normal",
            name=f"{prefix}_upconv",
        )(x)
    x = keras.layers.UpSampling2D(
        2, interpolation=upsampling, name=f"{prefix}_upsampling"
    )(x)
    return keras.layers.Conv2D(
        filters, 2, padding="same", kernel_initializer="he_normal",
        name=f"{prefix}_upconv",
    )(x)


def unet(
    input_shape=(None, None, 1),
    num_classes=2,
    depth=4,
    filters=64,
    padding="same",
    batch_norm=False,
    upsampling="transpose",
    dropout=0.0,
    output_activation="auto",
    name="unet",
):
    """U-Net: an encoder, a symmetric decoder and skip connections.

    Each encoder block has two 3×3 convolutions with ReLU, then a 2×2
    max-pooling that halves the size while the next block doubles the filters.
    Each decoder block upsamples ×2 with a 2×2 "up-convolution" that halves the
    filters, concatenates the encoder map of the same level (cropped around its
    centre when `padding="valid"`), then applies two 3×3 convolutions. A 1×1
    convolution gives one score per class.

    `padding="valid"`, `filters=64`, `depth=4`, `input_shape=(572, 572, 1)` and
    `num_classes=2` is the network of the paper: it maps 572×572 to 388×388 and
    has 31,030,658 parameters. `padding="same"` (optionally with batch norm) is
    the usual modern variant whose output is as large as its input.

    Args:
        input_shape: tuple `(height, width, channels)`. Height and width may be
            None: any valid size is then accepted at call time, and an invalid
            one fails inside Keras. With
            `padding="same"` they must be divisible by `2**depth`; with
            `padding="valid"` and `depth=4` they must be ≡ 12 (mod 16) and at
            least 188. Defaults to `(None, None, 1)`.
        num_classes: int, number of output channels (classes). Defaults to `2`.
        depth: int, number of poolings (the paper uses 4). Defaults to `4`.
        filters: int, filters of the first block; doubled at each level.
            Defaults to `64`.
        padding: `"same"` or `"valid"` (the paper). Defaults to `"same"`.
        batch_norm: bool, add batch normalisation after every 3×3 convolution.
            Defaults to `False`.
        upsampling: `"transpose"` (2×2 transposed convolution, stride 2, as in
            the paper), `"nearest"` or `"bilinear"` (replication or
            interpolation, then a 2×2 convolution). Defaults to `"transpose"`.
        dropout: float in [0, 1), dropout rate at the end of the contracting
            path (the paper uses dropout there). Defaults to `0.0`.
        output_activation: `"auto"` (softmax over classes, or sigmoid when
            `num_classes=1`), a Keras activation name, or None for logits.
            Defaults to `"auto"`.
        name: str, model name.

    Returns:
        A functional `keras.Model`. Layers have stable names:
        `encoder_block{n}_conv{k}`, `encoder_block{n}_pool`,
        `bottleneck_conv{k}`, `decoder_block{n}_upconv`,
        `decoder_block{n}_concat`, `decoder_block{n}_conv{k}`, `output_conv`,
        `output_activation`.

    Raises:
        TypeError: for a count that is not an integer, or a `batch_norm` that
            is not a bool.
        ValueError: for an invalid input size (the message names the nearest
            valid sizes) or any invalid argument.

    Example:

    >>> model = unet((572, 572, 1), num_classes=2, padding="valid")
    >>> model.output_shape
    (None, 388, 388, 2)
    >>> model.count_params()
    31030658
    >>> small = unet((None, None, 3), num_classes=1, depth=2, filters=4)
    >>> small.predict(np.zeros((1, 20, 28, 3)), verbose=0).shape
    (1, 20, 28, 1)

    Reference:
        Ronneberger, Fischer, Brox, U-Net: Convolutional Networks for
        Biomedical Image Segmentation, MICCAI 2015.
        Lesson: ``01_image_to_image`` (the demo model of the kit).
    """
    padding = validate_option(padding, "padding", PADDINGS)
    upsampling = validate_option(upsampling, "upsampling", UPSAMPLINGS)
    num_classes = check_positive_int(num_classes, "num_classes")
    depth = check_positive_int(depth, "depth")
    filters = check_positive_int(filters, "filters")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not (
        0.0 <= dropout < 1.0
    ):
        raise ValueError(
            f"`dropout` must be a number in [0, 1). Received: dropout={dropout!r}"
        )
    batch_norm = check_bool(batch_norm, "batch_norm")
    check_unet_input_shape(input_shape, depth=depth, padding=padding)
    if output_activation == "auto":
        output_activation = "sigmoid" if num_classes == 1 else "softmax"

    # === Encoder ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level in range(1, depth + 1):
        x = _conv_block(
            x, filters * 2 ** (level - 1), padding, batch_norm,
            f"encoder_block{level}",
        )
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"encoder_block{level}_pool")(x)
    x = _conv_block(x, filters * 2**depth, padding, batch_norm, "bottleneck")
    if dropout:
        x = keras.layers.Dropout(dropout, name="bottleneck_dropout")(x)

    # === Decoder ===
    for level in range(depth, 0, -1):
        prefix = f"decoder_block{level}"
        level_filters = filters * 2 ** (level - 1)
        x = _upsample(x, level_filters, upsampling, prefix)
        skip = skips[level - 1]
        if padding == "valid":
            skip = CropToMatch2D(name=f"{prefix}_crop")([skip, x])
        x = keras.layers.Concatenate(name=f"{prefix}_concat")([skip, x])
        x = _conv_block(x, level_filters, padding, batch_norm, prefix)

    # === Output (float32 so that mixed precision keeps exact probabilities) ===
    x = keras.layers.Conv2D(
        num_classes, 1, dtype="float32", name="output_conv"
    )(x)
    outputs = keras.layers.Activation(
        output_activation or "linear", dtype="float32", name="output_activation"
    )(x)
    return keras.Model(inputs, outputs, name=name)
