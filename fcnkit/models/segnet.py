"""SegNet (Badrinarayanan, Kendall, Cipolla, 2017): upsampling with pooling indices."""

import keras

from fcnkit._validation import check_bool, check_positive_int
from fcnkit.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
from fcnkit.models.fcn import MAX_WIDTH_FACTOR, _convs_per_block
from fcnkit.shapes import check_input_shape_minimum


def _conv_bn_relu(x, filters, batch_norm, prefix, index):
    x = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=not batch_norm,
        kernel_initializer="he_normal", name=f"{prefix}_conv{index}",
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{prefix}_bn{index}")(x)
    return keras.layers.Activation("relu", name=f"{prefix}_relu{index}")(x)


def segnet(
    input_shape,
    num_classes,
    depth=4,
    filters=16,
    convs_per_block=2,
    batch_norm=True,
    output_activation="auto",
    name="segnet",
):
    """SegNet: an encoder that remembers where its maxima were, a decoder that puts them back.

    Each encoder block has 3×3 convolutions, each followed by batch normalisation and
    ReLU, then a 2×2 max-pooling that also returns its argmax indices
    (`MaxPoolingWithArgmax2D`). Each decoder block, from the deepest, unpools with the
    indices of the matching encoder block (`MaxUnpooling2D`: every value back where its
    maximum was, zeros elsewhere), then densifies the sparse map with as many 3×3
    convolutions as the encoder block has: all at the block's width but the last, which
    goes to the width of the next (shallower) block. The last convolution of the first
    block (3×3, no normalisation) gives one score per class. There are no skip
    connections: only the indices (2 bits per 2×2 window) cross from encoder to decoder.

    Pooling rounds up (padding "same", as the pooling of SegNet's Caffe code) and each
    unpooling returns to the exact size its pooling saw, so any height and width of at
    least `2**depth` works (360×480 with `depth=5`: 180×240, ..., 12×15, and back), and
    the output has the input's size.

    `depth=5`, `filters=64`, `convs_per_block=(2, 2, 3, 3, 3)` is the network of the
    paper: VGG16's 13 convolutions as the encoder and their mirror image as the decoder.
    With 3 input channels and the 11 classes of CamVid it has 29,457,291 parameters, of
    which 29,441,419 are trained (the batch-normalisation statistics are not; the paper
    counts 29.5 M, its convolutions have biases as well as batch normalisation).

    Parameter counts of the default (`depth=4`, `filters=16`, `convs_per_block=2`, batch
    normalisation), 3 input channels: 589,266 for 2 classes, 590,571 for 11.

    Args:
        input_shape: tuple `(height, width, channels)`; height and width at least
            `2**depth`, or None.
        num_classes: int, number of classes (output channels).
        depth: int, number of poolings (the paper: 5). Defaults to `4`.
        filters: int, filters of the first block; doubled at each block up to
            `8 * filters` (VGG16: 64 to 512). Defaults to `16`.
        convs_per_block: int or sequence of `depth` ints, 3×3 convolutions in each
            encoder block (and in its decoder block). Defaults to `2`.
        batch_norm: bool, batch normalisation after every convolution but the last
            (the paper's). Defaults to `True`.
        output_activation: `"auto"` (softmax over classes, or sigmoid when
            `num_classes=1`), a Keras activation name, or None for logits. Defaults to
            `"auto"`.
        name: str, model name.

    Returns:
        A functional `keras.Model` with stable layer names: `encoder_block{n}_conv{k}`
        (and `_bn{k}`, `_relu{k}`), `encoder_block{n}_pool`, `decoder_block{n}_unpool`,
        `decoder_block{n}_conv{k}`, `output_conv`, `output_activation`.

    Raises:
        TypeError: for a count that is not an integer, or a `batch_norm` that is not a
            bool.
        ValueError: for a height or width below `2**depth` or any invalid argument.

    Example:

    >>> model = segnet((None, None, 3), num_classes=2)
    >>> model.count_params()
    589266
    >>> model.predict(np.zeros((1, 45, 60, 3)), verbose=0).shape
    (1, 45, 60, 2)
    >>> [layer.name for layer in model.layers if "unpool" in layer.name]
    ['decoder_block4_unpool', 'decoder_block3_unpool', 'decoder_block2_unpool',
     'decoder_block1_unpool']

    Reference:
        Badrinarayanan, Kendall, Cipolla, SegNet: A Deep Convolutional Encoder-Decoder
        Architecture for Image Segmentation, TPAMI 2017 (Figures 2 and 3).
        Lesson: ``06_segmentation`` (and ``02_upsampling`` for max-unpooling).
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    depth = check_positive_int(depth, "depth")
    filters = check_positive_int(filters, "filters")
    convs_per_block = _convs_per_block(convs_per_block, depth)
    batch_norm = check_bool(batch_norm, "batch_norm")
    check_input_shape_minimum(
        input_shape, 2**depth, "segnet",
        f"{depth} 2×2 poolings, each with at least one full window",
    )
    if output_activation == "auto":
        output_activation = "sigmoid" if num_classes == 1 else "softmax"
    widths = [filters * min(2**level, MAX_WIDTH_FACTOR) for level in range(depth)]

    # === Encoder: poolings that record their argmax ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    pooled_from, indices = {}, {}
    for level in range(1, depth + 1):
        prefix = f"encoder_block{level}"
        for index in range(1, convs_per_block[level - 1] + 1):
            x = _conv_bn_relu(x, widths[level - 1], batch_norm, prefix, index)
        pooled_from[level] = x
        x, indices[level] = MaxPoolingWithArgmax2D(
            2, padding="same", name=f"{prefix}_pool"
        )(x)

    # === Decoder: unpool with the indices, then densify ===
    for level in range(depth, 0, -1):
        prefix = f"decoder_block{level}"
        x = MaxUnpooling2D(2, name=f"{prefix}_unpool")(
            [x, indices[level], pooled_from[level]]
        )
        convs = convs_per_block[level - 1]
        for index in range(1, convs + 1):
            if index < convs:
                x = _conv_bn_relu(x, widths[level - 1], batch_norm, prefix, index)
            elif level > 1:
                x = _conv_bn_relu(x, widths[level - 2], batch_norm, prefix, index)

    # === Output (float32 so that mixed precision keeps exact probabilities) ===
    x = keras.layers.Conv2D(
        num_classes, 3, padding="same", dtype="float32", name="output_conv"
    )(x)
    outputs = keras.layers.Activation(
        output_activation or "linear", dtype="float32", name="output_activation"
    )(x)
    return keras.Model(inputs, outputs, name=name)
