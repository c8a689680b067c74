"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer, Darrell, 2015)."""

import keras

from fcnkit._validation import check_bool, check_positive_int, validate_option
from fcnkit.layers import BilinearUpsampling
from fcnkit.shapes import check_input_shape_multiple

VARIANTS = ("32s", "16s", "8s")
# VGG16's convolutions per block; five blocks, each ending with a 2×2 max-pooling.
VGG16_CONVS = (2, 2, 3, 3, 3)
TOTAL_STRIDE = 32
# Width of block n: filters * 2**(n - 1), at most filters * 8 (VGG16: 64, ..., 512, 512).
MAX_WIDTH_FACTOR = 8
# fc6/fc7 width: filters * 64 (VGG16: 4096).
HEAD_WIDTH_FACTOR = 64


def _convs_per_block(convs_per_block, count):
    """A tuple of `count` positive ints from an int or a sequence."""
    if isinstance(convs_per_block, (tuple, list)):
        if len(convs_per_block) != count:
            raise ValueError(
                f"`convs_per_block` must be an int or a sequence of {count} ints, one per "
                f"block. Received: convs_per_block={tuple(convs_per_block)} "
                f"({len(convs_per_block)} entries). Pass e.g. convs_per_block=2."
            )
        return tuple(
            check_positive_int(n, f"convs_per_block[{index}]")
            for index, n in enumerate(convs_per_block)
        )
    return (check_positive_int(convs_per_block, "convs_per_block"),) * count


def _check_dropout(dropout):
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not (
        0.0 <= dropout < 1.0
    ):
        raise ValueError(
            f"`dropout` must be a number in [0, 1). Received: dropout={dropout!r}"
        )
    return float(dropout)


def _upscore(x, num_classes, factor, trainable, name, dtype=None):
    """A transposed convolution of stride `factor` and kernel `2 * factor`, initialised to
    bilinear upsampling (no bias, as in Long et al.)."""
    return keras.layers.Conv2DTranspose(
        num_classes, 2 * factor, strides=factor, padding="same", use_bias=False,
        kernel_initializer=BilinearUpsampling(), trainable=trainable, dtype=dtype,
        name=name,
    )(x)


def _score(x, num_classes, name, zeros=False):
    return keras.layers.Conv2D(
        num_classes, 1, kernel_initializer="zeros" if zeros else "glorot_uniform",
        name=name,
    )(x)


def fcn(
    input_shape,
    num_classes,
    variant="8s",
    filters=8,
    head_filters=None,
    convs_per_block=VGG16_CONVS,
    dropout=0.0,
    trainable_upsampling=False,
    output_activation="auto",
    name=None,
):
    """FCN-32s, FCN-16s or FCN-8s: a VGG-like encoder, 1×1 class scores, upsampling.

    The encoder is VGG16's layout: five blocks of 3×3 convolutions with ReLU, each ending
    with a 2×2 max-pooling, so `pool3`, `pool4` and `pool5` have 1/8, 1/16 and 1/32 of
    the input size. VGG16's classifier becomes convolutional: `fc6` is a 7×7 convolution,
    `fc7` a 1×1 one, both with ReLU, and `score_fr` a 1×1 convolution to one score per
    class. Then:

    - `"32s"`: the scores are upsampled ×32 in one step (`upscore32`).
    - `"16s"`: they are upsampled ×2 (`upscore2`) and summed with 1×1 scores of `pool4`
      (`score_pool4`, `fuse_pool4`), then upsampled ×16 (`upscore16`).
    - `"8s"`: the same, then that sum is upsampled ×2 (`upscore_pool4`) and summed with
      scores of `pool3` (`score_pool3`, `fuse_pool3`), then upsampled ×8 (`upscore8`).

    The variants differ only by this fusion: the encoder and `fc6`, `fc7`, `score_fr`
    are the same layers. Each upsampling is a `Conv2DTranspose` of kernel size twice its
    stride, without bias, initialised to bilinear interpolation (`BilinearUpsampling`),
    with "same" padding, so the output has the input's size with no crop (Long et al.
    pad the input by 100 pixels and crop instead). The skip scores start at zero, as in
    the paper, so at first the skips add nothing and only training brings the finer
    layers in (Long et al. start FCN-16s from a trained FCN-32s).

    Every convolution pads "same", so any height and width divisible by 32 works, and
    the output is `(height, width, num_classes)`.

    Parameter counts, with 3 input channels and 21 classes (PASCAL VOC):

    - the default, `filters=8`: 3,916,477 for `"32s"`, 2,570,146 for `"16s"` and
      2,239,207 for `"8s"`, of which the upsamplings take 1,806,336, 458,640 and
      127,008 (fixed by default). A transposed convolution maps every class to every
      class, `num_classes`² kernels of `2 * stride` squared, zero but on the diagonal:
      the one-step ×32 of FCN-32s is the largest;
    - `filters=64`, `"32s"`: VGG16's convolutions with `fc6` and `fc7` (134,260,544),
      `score_fr` (86,037) and the ×32 upsampling (1,806,336): 136,152,917, of which
      134,346,581 are learned.

    Args:
        input_shape: tuple `(height, width, channels)`; height and width divisible by
            32, or None (then not checked: a size that is not a multiple of 32 gives a
            smaller output or fails where the paths are summed).
        num_classes: int, number of classes (output channels).
        variant: `"32s"`, `"16s"` or `"8s"`. Defaults to `"8s"`.
        filters: int, filters of the first block; doubled at each block up to
            `8 * filters` (VGG16: `filters=64`, 64 to 512). Defaults to `8`.
        head_filters: int, filters of `fc6` and `fc7`; None for `64 * filters` (VGG16:
            4096). Defaults to None.
        convs_per_block: int or sequence of 5 ints, 3×3 convolutions in each block.
            Defaults to VGG16's `(2, 2, 3, 3, 3)`.
        dropout: float in [0, 1), dropout after `fc6` and `fc7` (the paper: 0.5).
            Defaults to `0.0`.
        trainable_upsampling: bool. False (the default, as in Long et al.'s released
            models): every upsampling keeps its bilinear kernel. True: all of them are
            learned from it (the paper learned the ×2 upsamplings).
        output_activation: `"auto"` (softmax over classes, or sigmoid when
            `num_classes=1`), a Keras activation name, or None for logits. Defaults to
            `"auto"`.
        name: str, model name; None for `"fcn8s"`, `"fcn16s"` or `"fcn32s"`.

    Returns:
        A functional `keras.Model` with stable layer names: `block{n}_conv{k}`,
        `block{n}_pool`, `fc6`, `fc7` (and `fc6_dropout`, `fc7_dropout`), `score_fr`,
        then the fusion layers above, `output_activation`.

    Raises:
        TypeError: for a count that is not an integer or a
            `trainable_upsampling` that is not a bool.
        ValueError: for a height or width that is not a multiple of 32 (the message
            names the nearest valid sizes), an unknown variant or any other invalid
            argument.

    Example:

    >>> model = fcn((64, 96, 3), num_classes=21, variant="8s")
    >>> model.output_shape
    (None, 64, 96, 21)
    >>> model.count_params()
    2239207
    >>> [layer.name for layer in model.layers if layer.name.startswith(("score", "fuse", "up"))]
    ['score_fr', 'upscore2', 'score_pool4', 'fuse_pool4', 'upscore_pool4', 'score_pool3',
     'fuse_pool3', 'upscore8']
    >>> fcn((None, None, 1), 1, variant="32s", filters=2).predict(
    ...     np.zeros((1, 32, 64, 1)), verbose=0).shape
    (1, 32, 64, 1)

    Reference:
        Long, Shelhamer, Darrell, Fully Convolutional Networks for Semantic
        Segmentation, CVPR 2015 (section 4.2, Figure 3; `voc-fcn*s/net.py` in their
        code). Lesson: ``06_segmentation``.
    """
    variant = validate_option(variant, "variant", VARIANTS)
    num_classes = check_positive_int(num_classes, "num_classes")
    filters = check_positive_int(filters, "filters")
    head_filters = (
        HEAD_WIDTH_FACTOR * filters if head_filters is None
        else check_positive_int(head_filters, "head_filters")
    )
    convs_per_block = _convs_per_block(convs_per_block, len(VGG16_CONVS))
    dropout = _check_dropout(dropout)
    trainable_upsampling = check_bool(trainable_upsampling, "trainable_upsampling")
    check_input_shape_multiple(
        input_shape, TOTAL_STRIDE, "fcn",
        "five 2×2 poolings, undone by upsampling ×32 in all",
    )
    if output_activation == "auto":
        output_activation = "sigmoid" if num_classes == 1 else "softmax"

    # === Encoder (VGG16's layout) ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    pools = {}
    for block, convs in enumerate(convs_per_block, start=1):
        width = filters * min(2 ** (block - 1), MAX_WIDTH_FACTOR)
        for index in range(1, convs + 1):
            x = keras.layers.Conv2D(
                width, 3, padding="same", activation="relu",
                kernel_initializer="he_normal", name=f"block{block}_conv{index}",
            )(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        pools[block] = x

    # === The classifier as convolutions ===
    for layer_name, kernel_size in (("fc6", 7), ("fc7", 1)):
        x = keras.layers.Conv2D(
            head_filters, kernel_size, padding="same", activation="relu",
            kernel_initializer="he_normal", name=layer_name,
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{layer_name}_dropout")(x)
    scores = _score(x, num_classes, "score_fr")

    # === Skip fusion (sums of class scores) and upsampling to the input size ===
    final_stride = TOTAL_STRIDE
    if variant in ("16s", "8s"):
        scores = _upscore(scores, num_classes, 2, trainable_upsampling, "upscore2")
        skip = _score(pools[4], num_classes, "score_pool4", zeros=True)
        scores = keras.layers.Add(name="fuse_pool4")([scores, skip])
        final_stride //= 2
    if variant == "8s":
        scores = _upscore(scores, num_classes, 2, trainable_upsampling, "upscore_pool4")
        skip = _score(pools[3], num_classes, "score_pool3", zeros=True)
        scores = keras.layers.Add(name="fuse_pool3")([scores, skip])
        final_stride //= 2
    # float32, so that mixed precision keeps exact probabilities
    scores = _upscore(scores, num_classes, final_stride, trainable_upsampling,
                      f"upscore{final_stride}", dtype="float32")
    outputs = keras.layers.Activation(
        output_activation or "linear", dtype="float32", name="output_activation"
    )(scores)
    return keras.Model(inputs, outputs, name=name or f"fcn{variant}")
