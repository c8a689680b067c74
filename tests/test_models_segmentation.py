"""fcn, segnet and the U-Net's options (downsampling, backbone encoders), and the bilinear
initializer of FCN's upsampling: structure, sizes, parameter counts (each one stated in a
docstring), errors (whole messages), receptive fields, total strides and .keras round trips.

Small widths and sizes throughout; the paper-sized networks are built only where a
docstring states their parameter count.
"""

import re

import keras
import numpy as np
import pytest

from fcnkit import explorers, layers, models
from fcnkit.equivariance import shift_equivariance_error, total_stride
from fcnkit.layers import (
    BilinearUpsampling,
    BlurPool2D,
    MaxPoolingWithArgmax2D,
    MaxUnpooling2D,
    bilinear_kernel,
)
from fcnkit.models.encoders import BACKBONES, feature_layers
from fcnkit.receptive_field import (
    gradient_receptive_field,
    receptive_field,
    receptive_field_region,
)
from fcnkit.shapes import check_input_shape_minimum, check_input_shape_multiple


def count(number):
    """12345678 -> '12,345,678', as the docstrings write counts."""
    return f"{number:,}"


def in_docstring(function, number):
    """The docstring states `number`, wrapped over lines or not."""
    return count(number) in " ".join(function.__doc__.split())


@pytest.fixture
def zero_kernels(monkeypatch):
    """He-normal kernels drawn as zeros: a parameter count does not depend on the values,
    and drawing the 100 M normal numbers of a paper-sized network takes seconds."""
    monkeypatch.setattr(keras.initializers.HeNormal, "__call__",
                        lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype=dtype))


def raises(error_type, build):
    with pytest.raises(error_type) as error:
        build()
    return str(error.value)


# ------------------------------------------------------- bilinear initialisation


def test_bilinear_kernel_lives_in_the_library_and_lesson_02_still_finds_it():
    assert explorers.bilinear_kernel is bilinear_kernel is layers.bilinear_kernel
    # Long et al.'s upsample_filt(4): [1/4, 3/4, 3/4, 1/4] per axis.
    np.testing.assert_allclose(bilinear_kernel(4), np.outer([0.25, 0.75, 0.75, 0.25],
                                                            [0.25, 0.75, 0.75, 0.25]))


@pytest.mark.parametrize("factor", [2, 4, 8, 32])
def test_bilinear_initialisation_is_bilinear_upsampling_inside(factor):
    # Conv2DTranspose(2s, stride s, "same") with the bilinear kernel on the channel
    # diagonal equals UpSampling2D(s, "bilinear") except on a border band of s // 2
    # pixels, and keeps the channels apart.
    x = np.random.default_rng(factor).random((2, 5, 4, 3)).astype("float32")
    transposed = keras.layers.Conv2DTranspose(
        3, 2 * factor, strides=factor, padding="same", use_bias=False,
        kernel_initializer=BilinearUpsampling())(x)
    interpolated = keras.layers.UpSampling2D(factor, interpolation="bilinear")(x)
    transposed, interpolated = (keras.ops.convert_to_numpy(y) for y in (transposed,
                                                                          interpolated))
    band = factor // 2
    inside = (slice(None), slice(band, -band), slice(band, -band))
    np.testing.assert_allclose(transposed[inside], interpolated[inside], atol=1e-6)
    assert np.abs(transposed - interpolated).max() > 1e-2  # the border does differ


def test_bilinear_initializer_kernel_and_errors():
    kernel = keras.ops.convert_to_numpy(BilinearUpsampling()((4, 6, 2, 2)))
    np.testing.assert_allclose(kernel[:, :, 0, 0], np.outer([0.25, 0.75, 0.75, 0.25],
                                                            [1, 3, 5, 5, 3, 1]) / 6)
    np.testing.assert_array_equal(kernel[:, :, 0, 1], 0.0)  # channels do not mix
    assert kernel.dtype == np.float32
    assert keras.ops.convert_to_numpy(BilinearUpsampling()((2, 2, 1, 1), "float16")).dtype \
        == np.float16
    assert raises(ValueError, lambda: BilinearUpsampling()((4, 4, 3, 2))) == (
        "`BilinearUpsampling` upsamples each channel on its own, so the transposed "
        "convolution needs as many filters as input channels. Received: shape=(4, 4, 3, 2) "
        "(3 filters, 2 input channels). Pass filters=2.")
    assert raises(ValueError, lambda: BilinearUpsampling()((4, 4))) == (
        "`BilinearUpsampling` initialises the 4D kernel (rows, columns, output_channels, "
        "input_channels) of a Conv2DTranspose. Received: shape=(4, 4). Use it as the "
        "kernel_initializer of a Conv2DTranspose.")
    restored = keras.initializers.deserialize(keras.initializers.serialize(BilinearUpsampling()))
    assert isinstance(restored, BilinearUpsampling)


# ---------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "check, message",
    [
        (lambda: check_input_shape_multiple((100, 20, 3), 32, "fcn", "why"),
         "`fcn` needs height and width divisible by 32 (why). Received: "
         "input_shape=(100, 20, 3). Pad or crop to (128, 32)."),
        (lambda: check_input_shape_multiple((None, 65, 3), 32, "fcn", "why"),
         "`fcn` needs height and width divisible by 32 (why). Received: "
         "input_shape=(None, 65, 3). Pad or crop to (None, 96) (or crop to (None, 64))."),
        (lambda: check_input_shape_minimum((None, 3, 1), 4, "segnet", "why"),
         "`segnet` needs height and width of at least 4 (why). Received: "
         "input_shape=(None, 3, 1). Pad to (None, 4)."),
    ],
)
def test_input_shape_checks(check, message):
    assert raises(ValueError, check) == message


# ------------------------------------------------------------------------- fcn


FCN_LAYERS = {  # the layers after score_fr, by variant
    "32s": ["upscore32"],
    "16s": ["upscore2", "score_pool4", "fuse_pool4", "upscore16"],
    "8s": ["upscore2", "score_pool4", "fuse_pool4", "upscore_pool4", "score_pool3",
           "fuse_pool3", "upscore8"],
}


@pytest.fixture(scope="module")
def fcn_variants():
    return {variant: models.fcn((64, 96, 3), 21, variant=variant) for variant in FCN_LAYERS}


def test_fcn_variants_differ_only_by_the_fusion(fcn_variants):
    names = {variant: [layer.name for layer in model.layers]
             for variant, model in fcn_variants.items()}
    shared = names["32s"][: names["32s"].index("score_fr") + 1]
    for variant, model in fcn_variants.items():
        assert names[variant] == shared + FCN_LAYERS[variant] + ["output_activation"]
        for name in shared[1:]:  # the same layers, configured alike
            config = model.get_layer(name).get_config()
            assert config == fcn_variants["32s"].get_layer(name).get_config(), name
        assert model.output_shape == (None, 64, 96, 21)
    # Fusion by sum of the upsampled scores and the (zero-initialised) skip scores.
    model = fcn_variants["8s"]
    for fuse, inputs in (("fuse_pool4", ["upscore2", "score_pool4"]),
                         ("fuse_pool3", ["upscore_pool4", "score_pool3"])):
        layer = model.get_layer(fuse)
        assert isinstance(layer, keras.layers.Add)
        assert [t._keras_history[0].name for t in layer.input] == inputs
    for skip, pool in (("score_pool4", "block4_pool"), ("score_pool3", "block3_pool")):
        assert model.get_layer(skip).input._keras_history[0].name == pool
        assert not np.any(model.get_layer(skip).get_weights()[0])


def test_fcn_parameter_counts(fcn_variants):
    expected = {"32s": (3_916_477, 1_806_336), "16s": (2_570_146, 458_640),
                "8s": (2_239_207, 127_008)}
    for variant, (total, upsampling) in expected.items():
        model = fcn_variants[variant]
        assert model.count_params() == total
        fixed = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
        assert fixed == upsampling  # every upsampling, fixed by default
        assert in_docstring(models.fcn, total) and in_docstring(models.fcn, upsampling)
    # The fusion adds two 1×1 score layers and one ×2 upsampling per step.
    assert expected["16s"][0] - expected["32s"][0] == (
        (8 * 8 * 21 + 21) + 4 * 4 * 21 * 21 + 32 * 32 * 21 * 21 - 64 * 64 * 21 * 21)


def test_fcn_vgg16_size_parameter_count(zero_kernels):
    model = models.fcn((None, None, 3), 21, variant="32s", filters=64)
    learned = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert (model.count_params(), learned) == (136_152_917, 134_346_581)
    vgg_and_fc = sum(layer.count_params() for layer in model.layers
                     if layer.name.startswith(("block", "fc")))
    # VGG16 without its last classifier layer: 138,357,544 - (4096 * 1000 + 1000).
    assert vgg_and_fc == 134_260_544 == 138_357_544 - 4_097_000
    assert model.get_layer("fc6").kernel.shape == (7, 7, 512, 4096)
    for number in (136_152_917, 134_346_581, 134_260_544, 86_037, 1_806_336):
        assert in_docstring(models.fcn, number)


def test_fcn_upsampling_is_bilinear_and_fixed_unless_asked(fcn_variants):
    layer = fcn_variants["8s"].get_layer("upscore8")
    assert (layer.kernel_size, layer.strides, layer.use_bias, layer.trainable) == (
        (16, 16), (8, 8), False, False)
    scores = np.random.default_rng(1).random((1, 8, 12, 21)).astype("float32")
    upsampled = keras.ops.convert_to_numpy(layer(scores))
    interpolated = keras.ops.convert_to_numpy(
        keras.layers.UpSampling2D(8, interpolation="bilinear")(scores))
    np.testing.assert_allclose(upsampled[:, 4:-4, 4:-4], interpolated[:, 4:-4, 4:-4],
                               atol=1e-5)
    learned = models.fcn((32, 32, 1), 2, filters=1, head_filters=2, trainable_upsampling=True)
    upsamplings = [layer for layer in learned.layers if layer.name.startswith("upscore")]
    assert len(upsamplings) == 3 and all(layer.trainable for layer in upsamplings)
    assert not learned.non_trainable_weights


def test_fcn_outputs_any_multiple_of_32():
    model = models.fcn((None, None, 1), 3, filters=2, head_filters=4)
    output = model.predict(np.random.default_rng(0).random((2, 32, 96, 1)), verbose=0)
    assert output.shape == (2, 32, 96, 3)
    np.testing.assert_allclose(output.sum(axis=-1), 1.0, atol=1e-5)
    assert models.fcn((None, None, 1), 1, filters=1).get_layer(
        "output_activation").activation.__name__ == "sigmoid"
    logits = models.fcn((None, None, 1), 4, filters=1, output_activation=None)
    assert logits.get_layer("output_activation").activation.__name__ == "linear"
    assert logits.name == "fcn8s"


@pytest.mark.parametrize(
    "kwargs, error_type, message",
    [
        ({"input_shape": (100, 64, 3)}, ValueError,
         "`fcn` needs height and width divisible by 32 (five 2×2 poolings, undone by "
         "upsampling ×32 in all). Received: input_shape=(100, 64, 3). Pad or crop to "
         "(128, 64) (or crop to (96, 64))."),
        ({"input_shape": (20, 20, 3)}, ValueError,
         "`fcn` needs height and width divisible by 32 (five 2×2 poolings, undone by "
         "upsampling ×32 in all). Received: input_shape=(20, 20, 3). Pad or crop to "
         "(32, 32)."),
        ({"variant": "4s"}, ValueError,
         '`variant` must be one of "32s", "16s", "8s". Received: variant=\'4s\'.'),
        ({"convs_per_block": (2, 2, 3)}, ValueError,
         "`convs_per_block` must be an int or a sequence of 5 ints, one per block. "
         "Received: convs_per_block=(2, 2, 3) (3 entries). Pass e.g. convs_per_block=2."),
        ({"head_filters": 0}, ValueError,
         "`head_filters` must be a positive integer (1 or more). Received: head_filters=0. "
         "Pass head_filters=1 or more."),
        ({"dropout": 1.5}, ValueError,
         "`dropout` must be a number in [0, 1). Received: dropout=1.5"),
        ({"trainable_upsampling": 1}, TypeError,
         "`trainable_upsampling` must be True or False. Received: trainable_upsampling=1 "
         "of type int. Pass trainable_upsampling=True or trainable_upsampling=False."),
        ({"filters": 2.0}, TypeError,
         "`filters` must be a positive integer (a Python int or a NumPy integer). "
         "Received: filters=2.0 of type float. Pass filters=2 (an int, not a float)."),
    ],
)
def test_fcn_bad_arguments(kwargs, error_type, message):
    arguments = {"input_shape": (None, None, 3), "num_classes": 2, **kwargs}
    assert raises(error_type, lambda: models.fcn(**arguments)) == message


def test_fcn_receptive_field_by_hand():
    # FCN-32s: VGG16's pool5 sees 212 pixels (stride 32); fc6 (7×7) adds 6 · 32; the
    # ×32 upsampling (kernel 64) reads 2 neighbouring scores, + 32: 436. With the ×2
    # fusion steps an output reads up to 3 neighbouring score_fr pixels: 468. The
    # paths are aligned, and the total stride is 32.
    for variant, size in (("32s", 436), ("16s", 468), ("8s", 468)):
        model = models.fcn((None, None, 3), 21, variant=variant, filters=1, head_filters=1)
        rf = receptive_field(model)
        assert (rf.size, rf.stride, rf.period) == ((size, size), (1, 1), (32, 32)), variant
        assert total_stride(model) == 32


# ---------------------------------------------------------------------- segnet


def test_segnet_structure_pools_and_unpools_with_the_same_indices():
    model = models.segnet((None, None, 3), 2, depth=3, filters=4)
    assert not any(isinstance(layer, keras.layers.Concatenate) for layer in model.layers)
    pools = [layer for layer in model.layers if isinstance(layer, MaxPoolingWithArgmax2D)]
    unpools = [layer for layer in model.layers if isinstance(layer, MaxUnpooling2D)]
    assert len(pools) == len(unpools) == 3
    for level in (1, 2, 3):
        pooled_values, indices, reference = model.get_layer(f"decoder_block{level}_unpool").input
        assert indices._keras_history[0].name == f"encoder_block{level}_pool"
        assert reference._keras_history[0].name == f"encoder_block{level}_relu2"
    # The last convolution of each decoder block goes to the next block's width.
    assert [model.get_layer(f"decoder_block{level}_conv2").filters for level in (3, 2)] == [8, 4]
    assert model.get_layer("output_conv").kernel_size == (3, 3)
    # Unpooled maps are sparse: at most one nonzero per 2×2 window.
    probe = keras.Model(model.input, model.get_layer("decoder_block1_unpool").output)
    sparse = probe.predict(np.random.default_rng(0).random((1, 16, 16, 3)), verbose=0)
    windows = (sparse != 0).reshape(1, 8, 2, 8, 2, -1).sum(axis=(2, 4))
    assert windows.max() == 1


def test_segnet_keeps_any_size_of_at_least_two_to_the_depth():
    model = models.segnet((None, None, 1), 3, depth=4, filters=2)
    for size in ((16, 16), (17, 23), (45, 60)):  # 45: 23, 12, 6, 3 and back
        output = model(np.random.default_rng(0).random((1, *size, 1)))
        assert output.shape == (1, *size, 3)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(output).sum(axis=-1), 1.0,
                                   atol=1e-5)


def test_segnet_parameter_counts(zero_kernels):
    for classes, expected in ((2, 589_266), (11, 590_571)):
        assert models.segnet((None, None, 3), classes).count_params() == expected
        assert in_docstring(models.segnet, expected)
    paper = models.segnet((None, None, 3), 11, depth=5, filters=64,
                          convs_per_block=(2, 2, 3, 3, 3))
    trained = sum(int(np.prod(w.shape)) for w in paper.trainable_weights)
    assert (paper.count_params(), trained) == (29_457_291, 29_441_419)
    assert in_docstring(models.segnet, 29_457_291) and in_docstring(models.segnet, 29_441_419)
    convs = [layer for layer in paper.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 26  # VGG16's 13 and their mirror image


@pytest.mark.parametrize(
    "kwargs, error_type, message",
    [
        ({"input_shape": (8, 40, 3)}, ValueError,
         "`segnet` needs height and width of at least 16 (4 2×2 poolings, each with at "
         "least one full window). Received: input_shape=(8, 40, 3). Pad to (16, 40)."),
        ({"depth": 2, "convs_per_block": (1, 2, 3)}, ValueError,
         "`convs_per_block` must be an int or a sequence of 2 ints, one per block. "
         "Received: convs_per_block=(1, 2, 3) (3 entries). Pass e.g. convs_per_block=2."),
        ({"convs_per_block": 0}, ValueError,
         "`convs_per_block` must be a positive integer (1 or more). Received: "
         "convs_per_block=0. Pass convs_per_block=1 or more."),
        ({"batch_norm": "no"}, TypeError,
         "`batch_norm` must be True or False. Received: batch_norm='no' of type str. "
         "Pass batch_norm=True or batch_norm=False."),
    ],
)
def test_segnet_bad_arguments(kwargs, error_type, message):
    arguments = {"input_shape": (None, None, 3), "num_classes": 2, **kwargs}
    assert raises(error_type, lambda: models.segnet(**arguments)) == message


def test_segnet_receptive_field_matches_the_probe():
    default = models.segnet((None, None, 3), 2)
    rf = receptive_field(default)  # aligned paths: no union needed
    assert (rf.stride, rf.period) == ((1, 1), (16, 16))
    assert total_stride(default) == 16
    small = models.segnet((None, None, 1), 2, depth=2, filters=1, output_activation=None)
    for shape in ((20, 20, 1), (21, 27, 1)):  # odd sizes: pooling rounds up
        for position in ((0, 0), (7, 9), (shape[0] - 1, shape[1] - 1)):
            _, box = gradient_receptive_field(small, position, input_shape=shape)
            assert receptive_field_region(small, position, input_shape=shape) == box


# ----------------------------------------------------------- unet: downsampling


def test_unet_downsampling_layers_and_sizes():
    for downsampling, expected in (("max", ["MaxPooling2D"]),
                                   ("strided", ["Conv2D", "Activation"]),
                                   ("blur", ["MaxPooling2D", "BlurPool2D"])):
        model = models.unet((None, None, 1), 2, depth=2, filters=2, downsampling=downsampling)
        pooling_names = [layer for layer in model.layers
                         if re.fullmatch(r"encoder_block1_(pool|down\w+|maxpool|blurpool)",
                                         layer.name)]
        assert [type(layer).__name__ for layer in pooling_names] == expected, downsampling
        assert model.compute_output_shape((1, 16, 24, 1)) == (1, 16, 24, 2)
        valid = models.unet((None, None, 1), 2, depth=2, filters=2, padding="valid",
                            downsampling=downsampling)
        assert valid.compute_output_shape((1, 44, 60, 1)) == (1, 4, 20, 2)
    blur = models.unet((None, None, 1), 2, depth=2, filters=2, downsampling="blur")
    assert blur.get_layer("encoder_block1_maxpool").strides == (1, 1)
    assert isinstance(blur.get_layer("encoder_block1_blurpool"), BlurPool2D)
    assert blur.get_layer("encoder_block1_blurpool").filter_size == 4
    strided_bn = models.unet((None, None, 1), 2, depth=1, filters=2, batch_norm=True,
                             downsampling="strided")
    assert strided_bn.get_layer("encoder_block1_downconv").use_bias is False
    assert isinstance(strided_bn.get_layer("encoder_block1_downbn"),
                      keras.layers.BatchNormalization)


def test_unet_downsampling_parameter_counts(zero_kernels):
    strided = models.unet((572, 572, 1), 2, padding="valid", downsampling="strided")
    assert strided.count_params() == 32_424_258 == 31_030_658 + sum(
        4 * c * c + c for c in (64, 128, 256, 512))
    blur = models.unet((572, 572, 1), 2, padding="valid", downsampling="blur")
    assert blur.count_params() == 31_030_658 and blur.output_shape == (None, 388, 388, 2)
    for number in (32_424_258, 1_393_600, 31_030_658):
        assert in_docstring(models.unet, number)
    small = models.unet((None, None, 3), 2, depth=2, filters=4, downsampling="strided")
    assert small.count_params() == 7806  # the docstring's example


@pytest.mark.parametrize("downsampling", ["max", "strided", "blur"])
def test_unet_downsampling_keeps_the_total_stride(downsampling):
    # The period of exact equivariance stays 2**depth: strided convolutions subsample
    # as pooling does, and BlurPool still keeps every second pixel (it makes other
    # shifts less harmful, not exact).
    keras.utils.set_random_seed(0)
    model = models.unet((None, None, 1), 1, depth=2, filters=2, downsampling=downsampling,
                        output_activation=None)
    assert total_stride(model) == 4
    image = np.random.default_rng(0).random((64, 64, 1))
    errors = {shift: shift_equivariance_error(model, image, shift) for shift in (1, 2, 4, 8)}
    assert [errors[shift].exact for shift in (1, 2, 4, 8)] == [False, False, True, True]


def test_unet_blur_paths_are_misaligned_and_their_union_is_exact():
    model = models.unet((None, None, 1), 2, depth=2, filters=1, downsampling="blur",
                        output_activation=None)
    message = raises(ValueError, lambda: receptive_field(model))
    assert "'encoder_block2_maxpool'" in message and "misaligned=\"union\"" in message
    rf = receptive_field(model, misaligned="union")
    assert rf.misaligned and rf.stride == (1, 1)
    for position in ((0, 0), (9, 14), (31, 31)):
        _, box = gradient_receptive_field(model, position, input_shape=(32, 32, 1))
        assert receptive_field_region(model, position, input_shape=(32, 32, 1)) == box
    for downsampling in ("max", "strided"):  # aligned, as the paper's U-Net
        assert not receptive_field(models.unet(
            depth=2, filters=1, downsampling=downsampling)).misaligned


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (16, 16, 1), "depth": 4, "downsampling": "blur"},
         '`unet` with downsampling="blur" needs at least 4 pixels at the input of every '
         "pooling: its stride-1 max-pooling removes one, and BlurPool2D's reflect padding "
         "needs the other 3. Received: input_shape=(16, 16, 1), whose deepest pooling "
         "sees 2. Pad to (32, 32), or use fewer levels (depth)."),
        ({"input_shape": (64, 16, 1), "depth": 4, "downsampling": "blur"},
         '`unet` with downsampling="blur" needs at least 4 pixels at the input of every '
         "pooling: its stride-1 max-pooling removes one, and BlurPool2D's reflect padding "
         "needs the other 3. Received: input_shape=(64, 16, 1), whose deepest pooling "
         "sees 2. Pad to (64, 32), or use fewer levels (depth)."),
        ({"downsampling": "average"},
         '`downsampling` must be one of "max", "strided", "blur". Received: '
         "downsampling='average'."),
    ],
)
def test_unet_downsampling_errors(kwargs, message):
    assert raises(ValueError, lambda: models.unet(**kwargs)) == message


# --------------------------------------------------------------- unet: encoders


def test_backbone_table_is_what_feature_layers_finds():
    for name, backbone in BACKBONES.items():
        constructor = getattr(keras.applications, backbone.constructor)
        model = constructor(include_top=False, weights=None, input_shape=(None, None, 3))
        assert feature_layers(model, 5) == backbone.features, name


@pytest.mark.parametrize(
    "encoder, expected",
    [("vgg16", 25_854_722), ("resnet50", 20_667_202), ("mobilenetv2", 10_081_026)],
)
def test_unet_encoder_parameter_counts(encoder, expected, zero_kernels):
    model = models.unet((None, None, 3), 2, encoder=encoder)
    assert model.count_params() == expected
    assert in_docstring(models.unet, expected)
    backbone = model.get_layer("encoder")
    assert isinstance(backbone, keras.Model)
    # Its outputs, deepest first, feed the bottleneck and the skips.
    strides = [16, 8, 4, 2] + ([1] if encoder == "vgg16" else [])
    shapes = backbone.compute_output_shape((1, 64, 64, 3))
    assert [tuple(shape[1:3]) for shape in shapes] == [(64 // s, 64 // s) for s in strides]
    assert ("decoder_block1_concat" in [layer.name for layer in model.layers]) == (
        encoder == "vgg16")  # ResNet50, MobileNetV2: no full-resolution map to skip
    # VGG16 pads symmetrically; the stride-2 layers of the others pad on one side, so
    # their paths are misaligned (as the docstring says) and need the union.
    if encoder == "vgg16":
        assert receptive_field(model).misaligned == ()
    else:
        message = raises(ValueError, lambda: receptive_field(model, input_shape=(64, 64, 3)))
        assert "do not line up" in message and "'encoder/" in message
        assert receptive_field(model, input_shape=(64, 64, 3), misaligned="union").misaligned


def test_unet_with_an_encoder_predicts_freezes_and_round_trips(keras_round_trip):
    model = models.unet((None, None, 3), 3, depth=3, filters=4, encoder="mobilenetv2")
    assert model.predict(np.zeros((1, 32, 64, 3)), verbose=0).shape == (1, 32, 64, 3)
    # MobileNetV2's "same" stride-2 convolutions pad by the parity of the size: the
    # receptive-field tools need it.
    assert total_stride(model, input_shape=(32, 64, 3)) == 8
    model.get_layer("encoder").trainable = False
    assert all(not w.trainable for w in model.get_layer("encoder").weights)
    assert model.trainable_weights
    loaded = keras_round_trip(model, (1, 32, 32, 3))
    assert [w.shape for w in loaded.get_layer("encoder").weights] == [
        w.shape for w in model.get_layer("encoder").weights]


def test_unet_with_a_vgg16_encoder_has_aligned_paths():
    model = models.unet((None, None, 3), 2, depth=2, filters=2, encoder="vgg16")
    rf = receptive_field(model)
    # depth=2: the bottleneck is block3_conv3 (stride 4), which sees 40 pixels (VGG16's
    # table); the decoder adds 2 · 2 · 2 (two 3×3 at stride 2) + 2 · 2 (two at stride 1):
    # the 2×2 transposed convolutions of stride 2 read one pixel each.
    assert (rf.size, rf.stride) == ((52, 52), (1, 1))
    assert total_stride(model) == 4


def test_unet_with_your_own_encoder():
    image = keras.Input((None, None, 2))
    x = image
    for level in range(1, 4):
        x = keras.layers.Conv2D(4 * level, 3, padding="same", name=f"conv{level}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    own = keras.Model(image, x, name="tiny")
    assert feature_layers(own, 3) == ("conv1", "conv2", "conv3", "pool3")
    model = models.unet((None, None, 2), 2, depth=3, filters=2, encoder=own)
    assert model.predict(np.zeros((1, 24, 16, 2)), verbose=0).shape == (1, 24, 16, 2)
    assert model.get_layer("encoder").get_layer("conv1") is own.get_layer("conv1")
    assert raises(ValueError, lambda: models.unet((None, None, 2), depth=4, encoder=own)) == (
        "`encoder` model 'tiny' has no layer whose output is 1/16 of the input size "
        "(14×14 for a 224×224 input), which a U-Net of depth=4 needs for its level 4. "
        "Received: encoder='tiny', depth=4. Pass a smaller depth.")
    assert raises(ValueError, lambda: models.unet((None, None, 3), depth=3, encoder=own)) == (
        "`input_shape` must match the input of the encoder model 'tiny'. Received: "
        "input_shape=(None, None, 3), encoder input shape (None, None, 2). Pass "
        "input_shape=(None, None, 2).")


def test_unet_loads_backbone_weights_from_a_file(tmp_path):
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None,
                                              input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    backbone.set_weights([rng.normal(size=w.shape) for w in backbone.get_weights()])
    path = tmp_path / "mobilenetv2_notop.weights.h5"
    backbone.save_weights(path)
    model = models.unet((None, None, 3), 2, depth=2, filters=2, encoder="mobilenetv2",
                        weights=path)
    for layer_name in ("Conv1", "block_3_expand"):
        np.testing.assert_array_equal(model.get_layer("encoder").get_layer(layer_name).kernel,
                                      backbone.get_layer(layer_name).kernel)
    wrong = tmp_path / "notes.weights.h5"
    wrong.write_text("not a weights file")
    message = raises(ValueError, lambda: models.unet((None, None, 3), depth=2,
                                                     encoder="mobilenetv2", weights=wrong))
    assert message.startswith(f"`unet` could not load weights={str(wrong)!r} into the "
                              "mobilenetv2 backbone built for input_shape=(None, None, 3): ")
    assert message.endswith("Pass the weights of keras.applications.MobileNetV2 with "
                            "include_top=False, saved for the same number of input channels "
                            "(3 for ImageNet weights).")


@pytest.mark.parametrize(
    "kwargs, error_type, message",
    [
        ({"encoder": "resnet50", "weights": "imagenet"}, ValueError,
         "`unet` never downloads weights. Received: weights='imagenet'. Pass weights=None "
         "(random initialisation) or the path of a weights file you supply: the weights of "
         "keras.applications.ResNet50 with include_top=False (a '..._notop.h5' file)."),
        ({"encoder": "vgg16", "weights": "missing_notop.h5"}, FileNotFoundError,
         "`weights` must be the path of an existing weights file. Received: "
         "weights='missing_notop.h5', which is not a file. Check the path."),
        ({"weights": "vgg16_notop.h5"}, ValueError,
         "`weights` loads the weights of a backbone given as `encoder`. Received: "
         "weights='vgg16_notop.h5' with encoder=None. Pass encoder=\"vgg16\" (or another "
         "backbone) with its weights file, or weights=None."),
        ({"encoder": "vgg16", "weights": 3}, TypeError,
         "`weights` must be None or the path of a weights file (str or pathlib.Path). "
         "Received: weights=3 of type int."),
        ({"encoder": "resnet", "depth": 2}, ValueError,
         '`encoder` must be one of "vgg16", "vgg19", "resnet50", "mobilenetv2". '
         "Received: encoder='resnet'. Did you mean \"resnet50\"?"),
        ({"encoder": "vgg16", "depth": 6}, ValueError,
         '`depth` with encoder="vgg16" must be at most 5: the backbone downsamples 5 times '
         "(stride 32). Received: depth=6. Pass depth=5 or less."),
        ({"encoder": "vgg16", "input_shape": (16, 16, 3)}, ValueError,
         '`unet` needs height and width of at least 32 (encoder="vgg16": the smallest '
         "input keras.applications accepts). Received: input_shape=(16, 16, 3). "
         "Pad to (32, 32)."),
        ({"encoder": "vgg16", "padding": "valid"}, ValueError,
         "`padding` cannot be changed with an `encoder`: the backbone pads and downsamples "
         'as it was built to. Received: padding="valid" with encoder="vgg16". Leave '
         'padding="same".'),
        ({"encoder": "vgg16", "downsampling": "blur"}, ValueError,
         "`downsampling` cannot be changed with an `encoder`: the backbone pads and "
         'downsamples as it was built to. Received: downsampling="blur" with '
         'encoder="vgg16". Leave downsampling="max".'),
    ],
)
def test_unet_encoder_errors(kwargs, error_type, message):
    arguments = {"input_shape": (None, None, 3), **kwargs}
    assert raises(error_type, lambda: models.unet(**arguments)) == message


def test_unet_weights_with_an_encoder_model_are_refused(tmp_path):
    image = keras.Input((None, None, 3))
    own = keras.Model(image, keras.layers.MaxPooling2D(2)(image), name="own")
    path = tmp_path / "own.weights.h5"
    path.write_text("")
    assert raises(ValueError, lambda: models.unet(
        (None, None, 3), depth=1, encoder=own, weights=path)) == (
        "`weights` loads the weights of a named backbone; a model passed as `encoder` "
        f"keeps its own. Received: weights={str(path)!r} with an encoder model. Load the "
        "weights into your model first, then pass weights=None.")


# ------------------------------------------------------------- save and load


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: models.fcn((None, None, 3), 4, filters=2, head_filters=4), (1, 64, 32, 3)),
        (lambda: models.fcn((None, None, 1), 1, variant="16s", filters=1, head_filters=2,
                            trainable_upsampling=True, dropout=0.5), (1, 32, 32, 1)),
        (lambda: models.segnet((None, None, 3), 3, depth=3, filters=2), (1, 21, 27, 3)),
        (lambda: models.unet((None, None, 1), 2, depth=2, filters=2, batch_norm=True,
                             downsampling="strided"), (1, 16, 16, 1)),
        (lambda: models.unet((None, None, 1), 2, depth=2, filters=2, downsampling="blur"),
         (1, 16, 24, 1)),
    ],
    ids=["fcn8s", "fcn16s_learned", "segnet", "unet_strided_bn", "unet_blur"],
)
def test_keras_file_round_trip(keras_round_trip, build, shape):
    model = build()
    loaded = keras_round_trip(model, shape)
    for layer in model.layers:
        assert loaded.get_layer(layer.name).trainable == layer.trainable
