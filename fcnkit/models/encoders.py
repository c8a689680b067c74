"""Classification networks as U-Net encoders: keras.applications backbones or your own model.

A U-Net encoder gives one feature map per resolution: the deepest one feeds the decoder, the
others its skip connections. For a backbone this module picks, at each stride 1, 2, 4, ...
(input pixels per feature pixel), the *last* layer whose output has that resolution: the
most processed features before the next downsampling (VGG16's `block3_conv3` at stride 4,
ResNet50's `conv2_block3_out`). The named backbones list their layers in `BACKBONES`, and
`feature_layers` finds them in any functional model.

Nothing is downloaded: a named backbone starts from random weights, or from a weights file
you supply (`weights="path/to/..._notop.h5"`, the file keras.applications would download
for `include_top=False`). `weights="imagenet"` is refused with that advice.

Lesson: ``06_segmentation`` (U-Net improvements: a classification backbone as encoder).
"""

from __future__ import annotations

import dataclasses
import os

import keras

from fcnkit._validation import check_positive_int, validate_option
from fcnkit.shapes import check_input_shape_minimum


@dataclasses.dataclass(frozen=True)
class Backbone:
    """What a backbone name means.

    Attributes:
        constructor: the `keras.applications` function (`"VGG16"`).
        features: names of the layers at strides 1, 2, 4, 8, 16 and 32 (the last layer of
            each resolution); None where only the input has that resolution.
        preprocessing: the `keras.applications` module whose `preprocess_input` scales
            images as the backbone's ImageNet weights expect.
    """

    constructor: str
    features: tuple
    preprocessing: str

    @property
    def max_depth(self) -> int:
        """The deepest U-Net level the backbone has features for (5: stride 32)."""
        return len(self.features) - 1


BACKBONES = {
    "vgg16": Backbone(
        "VGG16",
        ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3",
         "block5_pool"),
        "vgg16",
    ),
    "vgg19": Backbone(
        "VGG19",
        ("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4",
         "block5_pool"),
        "vgg19",
    ),
    "resnet50": Backbone(
        "ResNet50",
        (None, "conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
         "conv5_block3_out"),
        "resnet",
    ),
    "mobilenetv2": Backbone(
        "MobileNetV2",
        (None, "block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
         "block_13_expand_relu", "out_relu"),
        "mobilenet_v2",
    ),
}

# keras.applications refuses smaller inputs.
MIN_BACKBONE_SIZE = 32


def _probe_size(size, period):
    """A size for shape inference: the model's own, or 224 (a multiple of 32) rounded up."""
    if size is not None:
        return size
    return max(224, 2 * period) // period * period


def feature_layers(model, depth):
    """The layer names of a model's feature maps at strides 1, 2, ..., `2**depth`.

    For each stride, the last layer (in the model's order) whose output has that
    resolution, found by shape inference on a probe input (the model's input size, or
    224×224 when it is None); None at stride 1 when only the input has full resolution.

    Args:
        model: a functional Keras model with one image input `(height, width, channels)`.
        depth: int, the number of downsamplings to find (stride `2**depth`).

    Returns:
        A tuple of `depth + 1` layer names (or None), from stride 1 to `2**depth`.

    Raises:
        ValueError: for a model with another number of inputs, or with no layer at one of
            the strides.

    Example:

    >>> vgg = keras.applications.VGG16(include_top=False, weights=None)
    >>> feature_layers(vgg, depth=3)
    ('block1_conv2', 'block2_conv2', 'block3_conv3', 'block4_conv3')
    """
    depth = check_positive_int(depth, "depth")
    if not isinstance(model, keras.Model) or len(getattr(model, "inputs", None) or []) != 1:
        raise ValueError(
            "`encoder` must be a functional Keras model with one image input "
            f"(height, width, channels). Received: encoder={model!r}. Build it with "
            "keras.Input, or pass a name such as encoder=\"vgg16\"."
        )
    (image,) = model.inputs
    if len(image.shape) != 4:
        raise ValueError(
            "`encoder` must take images (batch, height, width, channels). Received: a "
            f"model with input shape {tuple(image.shape)}."
        )
    period = 2**depth
    height, width = (_probe_size(n, period) for n in image.shape[1:3])
    candidates = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output = layer.output  # refused for a layer called more than once
        except (AttributeError, ValueError):
            continue
        if isinstance(output, keras.KerasTensor) and len(output.shape) == 4:
            candidates.append((layer.name, output))
    probe = keras.Model(model.inputs, [output for _, output in candidates])
    specs = probe.compute_output_spec(keras.KerasTensor((1, height, width, image.shape[3])))
    sizes = [tuple(spec.shape[1:3]) for spec in specs]
    names = []
    for level in range(depth + 1):
        target = (height // 2**level, width // 2**level)
        found = [name for (name, _), size in zip(candidates, sizes) if size == target]
        if not found and level > 0:
            raise ValueError(
                f"`encoder` model '{model.name}' has no layer whose output is 1/{2**level} "
                f"of the input size ({target[0]}×{target[1]} for a {height}×{width} "
                f"input), which a U-Net of depth={depth} needs for its level {level}. "
                f"Received: encoder={model.name!r}, depth={depth}. Pass a smaller depth."
            )
        names.append(found[-1] if found else None)
    return tuple(names)


def _check_weights(weights, encoder):
    if weights is None:
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        name = encoder if isinstance(encoder, str) else "vgg16"
        constructor = BACKBONES[name].constructor if name in BACKBONES else "VGG16"
        raise ValueError(
            "`unet` never downloads weights. Received: weights='imagenet'. Pass "
            "weights=None (random initialisation) or the path of a weights file you "
            f"supply: the weights of keras.applications.{constructor} with "
            "include_top=False (a '..._notop.h5' file)."
        )
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            "`weights` must be None or the path of a weights file (str or pathlib.Path). "
            f"Received: weights={weights!r} of type {type(weights).__name__}."
        )
    if not isinstance(encoder, str):
        raise ValueError(
            "`weights` loads the weights of a named backbone; a model passed as `encoder` "
            f"keeps its own. Received: weights={os.fspath(weights)!r} with an encoder "
            "model. Load the weights into your model first, then pass weights=None."
        )
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            f"`weights` must be the path of an existing weights file. Received: "
            f"weights={os.fspath(weights)!r}, which is not a file. Check the path."
        )
    return os.fspath(weights)


def encoder_model(encoder, input_shape, depth, weights=None):
    """The encoder of a U-Net: one output per level, deepest first.

    Args:
        encoder: a name of `BACKBONES` (`"vgg16"`, `"vgg19"`, `"resnet50"`,
            `"mobilenetv2"`) or a functional Keras model with one image input.
        input_shape: `(height, width, channels)` of the U-Net.
        depth: int, the number of downsamplings used (the deepest feature map has stride
            `2**depth`).
        weights: None (random initialisation) or, for a named backbone, the path of a
            weights file for it (`include_top=False`). `"imagenet"` is refused: nothing
            is downloaded.

    Returns:
        `(model, strides)`: a functional model named `"encoder"` whose outputs are the
        feature maps at strides `2**depth, 2**(depth - 1), ...` (deepest first), and
        those strides (stride 1 is left out when only the input has full resolution).

    Raises:
        ValueError, TypeError, FileNotFoundError: for an unknown name, a depth beyond the
            backbone, an input too small for keras.applications, an encoder model whose
            input does not match `input_shape`, or weights that cannot be used.
    """
    depth = check_positive_int(depth, "depth")
    weights = _check_weights(weights, encoder)
    if isinstance(encoder, str):
        name = validate_option(encoder, "encoder", tuple(BACKBONES))
        backbone = BACKBONES[name]
        if depth > backbone.max_depth:
            raise ValueError(
                f"`depth` with encoder=\"{name}\" must be at most {backbone.max_depth}: "
                f"the backbone downsamples {backbone.max_depth} times (stride "
                f"{2**backbone.max_depth}). Received: depth={depth}. Pass "
                f"depth={backbone.max_depth} or less."
            )
        check_input_shape_minimum(
            input_shape, MIN_BACKBONE_SIZE, "unet",
            f"encoder=\"{name}\": the smallest input keras.applications accepts",
        )
        constructor = getattr(keras.applications, backbone.constructor)
        model = constructor(include_top=False, weights=None, input_shape=tuple(input_shape))
        if weights is not None:
            try:
                model.load_weights(weights)
            except Exception as error:  # Keras says why; add what was being loaded
                raise ValueError(
                    f"`unet` could not load weights={weights!r} into the {name} backbone "
                    f"built for input_shape={tuple(input_shape)}: {error} Pass the "
                    f"weights of keras.applications.{backbone.constructor} with "
                    "include_top=False, saved for the same number of input channels "
                    "(3 for ImageNet weights)."
                ) from error
        names = backbone.features[: depth + 1]
    else:
        names = feature_layers(encoder, depth)
        model = encoder
        expected = tuple(model.inputs[0].shape[1:])
        if any(a is not None and a != b for a, b in zip(expected, tuple(input_shape))):
            raise ValueError(
                f"`input_shape` must match the input of the encoder model '{model.name}'. "
                f"Received: input_shape={tuple(input_shape)}, encoder input shape "
                f"{expected}. Pass input_shape={expected}."
            )
    levels = [level for level in range(depth, -1, -1) if names[level] is not None]
    outputs = [model.get_layer(names[level]).output for level in levels]
    return keras.Model(model.inputs, outputs, name="encoder"), tuple(2**n for n in levels)
