"""U-Net (Ronneberger et al., 2015): the original valid layout and a modern one."""

import keras

from fcnkit._validation import check_bool, check_positive_int, validate_option
from fcnkit.layers import BlurPool2D, CropToMatch2D
from fcnkit.models.encoders import encoder_model
from fcnkit.shapes import (
    PADDINGS,
    check_unet_input_shape,
    is_valid_unet_size,
    unet_size_trace,
)

UPSAMPLINGS = ("transpose", "nearest", "bilinear")
DOWNSAMPLINGS = ("max", "strided", "blur")
# The stride-1 max-pooling of "blur" leaves size - 1 pixels; BlurPool2D's reflect padding
# of 2 (filter size 4) needs 3 of them.
BLUR_MIN_POOLING_INPUT = 4


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


def _downsample(x, filters, downsampling, batch_norm, prefix):
    if downsampling == "max":
        return keras.layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)
    if downsampling == "strided":  # a learned 2×2 pooling: sizes as with MaxPooling2D(2)
        x = keras.layers.Conv2D(
            filters, 2, strides=2, use_bias=not batch_norm, kernel_initializer="he_normal",
            name=f"{prefix}_downconv",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{prefix}_downbn")(x)
        return keras.layers.Activation("relu", name=f"{prefix}_downrelu")(x)
    # Zhang (2019): MaxPool(2, stride 1), then BlurPool(stride 2): n -> n - 1 -> n / 2.
    x = keras.layers.MaxPooling2D(2, strides=1, name=f"{prefix}_maxpool")(x)
    return BlurPool2D(name=f"{prefix}_blurpool")(x)


def _check_blur_sizes(input_shape, depth, padding):
    """Every stride-1 max-pooling of "blur" must leave enough pixels for BlurPool2D."""

    def smallest_pooling_input(size):
        return min(unet_size_trace(size, depth, padding)[1 : 2 * depth : 2])

    def fits(size):
        return (is_valid_unet_size(size, depth, padding)
                and smallest_pooling_input(size) >= BLUR_MIN_POOLING_INPUT)

    spatial = tuple(input_shape[:2])
    if all(n is None or fits(n) for n in spatial):
        return
    fixed = tuple(
        n if n is None or fits(n) else next(m for m in range(n + 1, 8 * n + 2**(depth + 4))
                                            if fits(m))
        for n in spatial
    )
    smallest = min(smallest_pooling_input(n) for n in spatial if n is not None)
    raise ValueError(
        f"`unet` with downsampling=\"blur\" needs at least {BLUR_MIN_POOLING_INPUT} pixels "
        "at the input of every pooling: its stride-1 max-pooling removes one, and "
        "BlurPool2D's reflect padding needs the other 3. Received: "
        f"input_shape={tuple(input_shape)}, whose deepest pooling sees {smallest}. "
        f"Pad to {fixed}, or use fewer levels (depth)."
    )


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
    downsampling="max",
    encoder=None,
    weights=None,
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

    The lecture's improvements are options:

    - `downsampling="strided"`: a learned 2×2 convolution of stride 2 with ReLU
      replaces each max-pooling (32,424,258 parameters for the paper's network:
      4 · (4c² + c) more for c = 64, 128, 256, 512, that is 1,393,600).
    - `downsampling="blur"`: Zhang's anti-aliased pooling, a 2×2 max-pooling of
      stride 1 then `BlurPool2D` (binomial filter of size 4, stride 2), which
      has no weights (31,030,658). Strided and blurred downsampling keep the
      sizes of max-pooling and the total stride `2**depth`, so the network is
      still exactly equivariant only for shifts that are multiples of it
      (`fcnkit.equivariance.total_stride`); blurring makes the other shifts
      less harmful, not exact. The filter of size 4 is centred half a pixel off
      the max-pooling's window, so the paths of a blurred U-Net are misaligned:
      `receptive_field(model, misaligned="union")` gives its exact field.
    - `upsampling="nearest"` or `"bilinear"`: interpolation, then a 2×2
      convolution, instead of the transposed convolution.
    - `encoder=`: a classification network as the encoder, a `keras.applications`
      backbone named `"vgg16"`, `"vgg19"`, `"resnet50"` or `"mobilenetv2"`, or
      your own functional model (see `fcnkit.models.encoders`). Its feature maps
      at strides `2**depth, ..., 2, 1` replace the encoder blocks and the
      bottleneck (ResNet50 and MobileNetV2 have no full-resolution map: the last
      decoder block then has no skip connection). It is one nested layer named
      `"encoder"`, so `model.get_layer("encoder").trainable = False` freezes it.
      Nothing is downloaded: `weights` is None (random initialisation) or the
      path of a weights file you supply; scale the images as the backbone's
      `preprocess_input` does when you use ImageNet weights. With 3 input
      channels, 2 classes, `depth=4` and `filters=64`: 25,854,722 parameters
      with `"vgg16"`, 20,667,202 with `"resnet50"`, 10,081,026 with
      `"mobilenetv2"`. ResNet50's and MobileNetV2's paths are misaligned (their
      stride-2 layers pad on one side), as above.

    Args:
        input_shape: tuple `(height, width, channels)`. Height and width may be
            None: any valid size is then accepted at call time, and an invalid
            one fails inside Keras. With
            `padding="same"` they must be divisible by `2**depth`; with
            `padding="valid"` and `depth=4` they must be ≡ 12 (mod 16) and at
            least 188. Defaults to `(None, None, 1)`.
        num_classes: int, number of output channels (classes). Defaults to `2`.
        depth: int, number of poolings (the paper uses 4); with an `encoder`,
            the number of its downsamplings used, at most 5 for the named
            backbones. Defaults to `4`.
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
        downsampling: `"max"` (2×2 max-pooling, the paper), `"strided"` or
            `"blur"`, as above. Defaults to `"max"`.
        encoder: None (the U-Net's own encoder), a backbone name or a
            functional Keras model with one image input. Needs
            `padding="same"` and `downsampling="max"`. Defaults to None.
        weights: None or, with a named `encoder`, the path of a weights file
            for it (`include_top=False`, e.g. a `..._notop.h5` file).
            `"imagenet"` is refused: nothing is downloaded. Defaults to None.
        name: str, model name.

    Returns:
        A functional `keras.Model`. Layers have stable names:
        `encoder_block{n}_conv{k}`, `encoder_block{n}_pool` (or
        `encoder_block{n}_downconv`, or `encoder_block{n}_maxpool` and
        `encoder_block{n}_blurpool`), `bottleneck_conv{k}` (or `encoder`),
        `decoder_block{n}_upconv`, `decoder_block{n}_concat`,
        `decoder_block{n}_conv{k}`, `output_conv`, `output_activation`.

    Raises:
        TypeError: for a count that is not an integer, or a `batch_norm` that
            is not a bool.
        ValueError: for an invalid input size (the message names the nearest
            valid sizes), an input too small for the blurred pooling or the
            backbone, `weights="imagenet"`, or any invalid argument.
        FileNotFoundError: for a `weights` path that is not a file.

    Example:

    >>> model = unet((572, 572, 1), num_classes=2, padding="valid")
    >>> model.output_shape
    (None, 388, 388, 2)
    >>> model.count_params()
    31030658
    >>> small = unet((None, None, 3), num_classes=1, depth=2, filters=4)
    >>> small.predict(np.zeros((1, 20, 28, 3)), verbose=0).shape
    (1, 20, 28, 1)
    >>> unet((None, None, 3), 2, depth=2, filters=4, downsampling="strided").count_params()
    7806
    >>> backbone = unet((None, None, 3), 2, filters=8, encoder="mobilenetv2")
    >>> backbone.count_params()
    1038650
    >>> unet((None, None, 3), encoder="resnet50", weights="imagenet")
    Traceback (most recent call last):
    ...
    ValueError: `unet` never downloads weights. Received: weights='imagenet'. ...

    Reference:
        Ronneberger, Fischer, Brox, U-Net: Convolutional Networks for
        Biomedical Image Segmentation, MICCAI 2015. Zhang, Making Convolutional
        Networks Shift-Invariant Again, ICML 2019 (`downsampling="blur"`).
        Lessons: ``01_image_to_image`` (the demo model of the kit),
        ``05_translation_equivariance``, ``06_segmentation``.
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
    downsampling = validate_option(downsampling, "downsampling", DOWNSAMPLINGS)
    check_unet_input_shape(input_shape, depth=depth, padding=padding)
    if encoder is None and weights is not None:
        raise ValueError(
            "`weights` loads the weights of a backbone given as `encoder`. Received: "
            f"weights={weights!r} with encoder=None. Pass encoder=\"vgg16\" (or another "
            "backbone) with its weights file, or weights=None."
        )
    if encoder is not None:
        for argument, value, default in (("padding", padding, "same"),
                                         ("downsampling", downsampling, "max")):
            if value != default:
                raise ValueError(
                    f"`{argument}` cannot be changed with an `encoder`: the backbone pads "
                    f"and downsamples as it was built to. Received: {argument}="
                    f"\"{value}\" with encoder={_describe(encoder)}. Leave "
                    f"{argument}=\"{default}\"."
                )
    if downsampling == "blur":
        _check_blur_sizes(tuple(input_shape), depth, padding)
    if output_activation == "auto":
        output_activation = "sigmoid" if num_classes == 1 else "softmax"

    # === Encoder ===
    inputs = keras.Input(shape=input_shape, name="image")
    skips = {}
    if encoder is None:
        x = inputs
        for level in range(1, depth + 1):
            prefix = f"encoder_block{level}"
            level_filters = filters * 2 ** (level - 1)
            x = _conv_block(x, level_filters, padding, batch_norm, prefix)
            skips[level] = x
            x = _downsample(x, level_filters, downsampling, batch_norm, prefix)
        x = _conv_block(x, filters * 2**depth, padding, batch_norm, "bottleneck")
    else:  # a backbone: its deepest features are the bottleneck
        backbone, strides = encoder_model(encoder, input_shape, depth, weights)
        features = backbone(inputs)
        features = features if isinstance(features, (list, tuple)) else [features]
        x = features[0]
        for stride, feature in zip(strides[1:], features[1:]):
            skips[stride.bit_length()] = feature  # stride 2**(level - 1)
    if dropout:
        x = keras.layers.Dropout(dropout, name="bottleneck_dropout")(x)

    # === Decoder ===
    for level in range(depth, 0, -1):
        prefix = f"decoder_block{level}"
        level_filters = filters * 2 ** (level - 1)
        x = _upsample(x, level_filters, upsampling, prefix)
        if level in skips:
            skip = skips[level]
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


def _describe(encoder):
    return f"\"{encoder}\"" if isinstance(encoder, str) else f"a model ('{encoder.name}')"
