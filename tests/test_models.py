"""plain_cnn and unet: structure, sizes, parameter counts, errors, save/load."""

import keras
import numpy as np
import pytest

from fcnkit import models
from fcnkit.layers import CropToMatch2D

# ---------------------------------------------------------------- plain_cnn


def test_plain_cnn_relu_everywhere_but_the_last_layer():
    model = models.plain_cnn((None, None, 1), filters=(8, 8, 8))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.activation.__name__ for c in convs] == ["relu", "relu", "relu", "linear"]


@pytest.mark.parametrize("padding, expected", [("same", (1, 30, 41, 2)), ("valid", (1, 22, 33, 2))])
def test_plain_cnn_output_size(padding, expected):
    model = models.plain_cnn((None, None, 3), output_channels=2, filters=(4,),
                             kernel_size=5, padding=padding)
    assert model.predict(np.zeros((1, 30, 41, 3)), verbose=0).shape == expected


def test_plain_cnn_is_one_convolution_when_there_is_no_hidden_layer_activation():
    # A single hidden layer of one filter with an identity kernel: a check of the
    # wiring against a hand-computed output.
    model = models.plain_cnn((None, None, 1), filters=(1,), kernel_size=1)
    model.get_layer("conv1").set_weights([np.full((1, 1, 1, 1), 2.0), np.zeros(1)])
    model.get_layer("output").set_weights([np.full((1, 1, 1, 1), 3.0), np.full(1, 1.0)])
    image = np.array([[-1.0, 2.0]]).reshape(1, 1, 2, 1)
    # conv1: relu(2x) = [0, 4]; output: 3 * [0, 4] + 1 = [1, 13]
    np.testing.assert_allclose(model.predict(image, verbose=0).ravel(), [1.0, 13.0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": ()}, "`filters` must be a non-empty sequence of positive integers, "
         "one per hidden convolution. Received: filters=(). Pass e.g. filters=(32, 32)."),
        ({"kernel_size": 0}, "`kernel_size` must be a positive integer (1 or more). "
         "Received: kernel_size=0. Pass kernel_size=1 or more."),
        ({"filters": (4, 0)}, "`filters[1]` must be a positive integer (1 or more). "
         "Received: filters[1]=0. Pass filters[1]=1 or more."),
        ({"padding": "full"}, '`padding` must be one of "valid", "same". '
         "Received: padding='full'."),
    ],
)
def test_plain_cnn_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        models.plain_cnn(**kwargs)
    assert str(error.value) == message


# --------------------------------------------------------------------- unet


@pytest.fixture(scope="module")
def original_unet():
    return models.unet((572, 572, 1), num_classes=2, depth=4, filters=64, padding="valid")


def test_original_unet_is_the_paper_network(original_unet):
    assert original_unet.output_shape == (None, 388, 388, 2)
    assert original_unet.count_params() == 31_030_658
    convs = [layer for layer in original_unet.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    assert len(convs) == 23  # "In total the network has 23 convolutional layers."
    assert sum(isinstance(layer, CropToMatch2D) for layer in original_unet.layers) == 4


def test_lecture_28_million_leaves_out_the_up_convolutions(original_unet):
    upconvs = [layer for layer in original_unet.layers
               if isinstance(layer, keras.layers.Conv2DTranspose)]
    upconv_params = sum(layer.count_params() for layer in upconvs)
    # 2·2·1024·512+512, 2·2·512·256+256, 2·2·256·128+128, 2·2·128·64+64
    assert upconv_params == 2_097_664 + 524_544 + 131_200 + 32_832
    assert original_unet.count_params() - upconv_params == 28_244_418


@pytest.mark.parametrize(
    "in_channels, classes, expected",
    [(1, 1, 31_030_593), (3, 2, 31_031_810)],
)
def test_original_unet_parameter_counts_by_hand(in_channels, classes, expected):
    model = models.unet((None, None, in_channels), num_classes=classes, padding="valid")
    assert model.count_params() == expected


@pytest.mark.parametrize("size", [188, 204, 236])
def test_valid_unet_output_loses_92_pixels_per_side(size):
    model = models.unet((None, None, 1), depth=4, filters=2, padding="valid")
    output = model.predict(np.zeros((1, size, size, 1)), verbose=0)
    assert output.shape == (1, size - 184, size - 184, 2)


@pytest.mark.parametrize("upsampling", ["transpose", "nearest", "bilinear"])
def test_modern_unet_keeps_the_size_and_outputs_probabilities(upsampling):
    model = models.unet((None, None, 3), num_classes=3, depth=2, filters=4,
                        batch_norm=True, upsampling=upsampling)
    output = model.predict(np.random.default_rng(0).random((2, 16, 24, 3)), verbose=0)
    assert output.shape == (2, 16, 24, 3)
    np.testing.assert_allclose(output.sum(axis=-1), 1.0, atol=1e-5)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_single_class_unet_uses_sigmoid_and_none_gives_logits():
    assert models.unet(num_classes=1, depth=1, filters=2).get_layer(
        "output_activation").activation.__name__ == "sigmoid"
    assert models.unet(num_classes=2, depth=1, filters=2, output_activation=None).get_layer(
        "output_activation").activation.__name__ == "linear"


def test_stable_layer_names():
    names = {layer.name for layer in models.unet(depth=2, filters=2, padding="valid").layers}
    assert {"encoder_block1_conv1", "encoder_block2_pool", "bottleneck_conv2",
            "decoder_block2_upconv", "decoder_block1_crop", "decoder_block1_concat",
            "output_conv", "output_activation"} <= names


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (250, 256, 1)},
         '`unet` with depth=4 and padding="same" needs height and width n divisible '
         "by 16. Received: input_shape=(250, 256, 1). Pad or crop to (256, 256) "
         "(or crop to (240, 256))."),
        ({"input_shape": (570, 570, 1), "padding": "valid"},
         '`unet` with depth=4 and padding="valid" needs height and width n ≡ 12 '
         "(mod 16) and n ≥ 188. Received: input_shape=(570, 570, 1). Pad or crop "
         "to (572, 572) (or crop to (556, 556))."),
        ({"depth": 0}, "`depth` must be a positive integer (1 or more). Received: depth=0. "
         "Pass depth=1 or more."),
        ({"dropout": 1.0}, "`dropout` must be a number in [0, 1). Received: dropout=1.0"),
        ({"dropout": "0.5"}, "`dropout` must be a number in [0, 1). Received: dropout='0.5'"),
        ({"upsampling": "transposed"},
         '`upsampling` must be one of "transpose", "nearest", "bilinear". '
         "Received: upsampling='transposed'. Did you mean \"transpose\"?"),
    ],
)
def test_unet_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        models.unet(**kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: models.unet(batch_norm="yes"),
         "`batch_norm` must be True or False. Received: batch_norm='yes' of type str. "
         "Pass batch_norm=True or batch_norm=False."),
        (lambda: models.unet(depth=True),
         "`depth` must be a positive integer (a Python int or a NumPy integer). "
         "Received: depth=True of type bool. Pass a number such as depth=1, not True or False."),
        (lambda: models.unet(num_classes=2.0),
         "`num_classes` must be a positive integer (a Python int or a NumPy integer). "
         "Received: num_classes=2.0 of type float. Pass num_classes=2 (an int, not a float)."),
        (lambda: models.plain_cnn(filters=(True, 4)),
         "`filters[0]` must be a positive integer (a Python int or a NumPy integer). "
         "Received: filters[0]=True of type bool. Pass a number such as filters[0]=1, "
         "not True or False."),
        (lambda: models.plain_cnn(output_channels=1.5),
         "`output_channels` must be a positive integer (a Python int or a NumPy integer). "
         "Received: output_channels=1.5 of type float. Pass a whole number, "
         "e.g. output_channels=int(...)."),
    ],
)
def test_wrong_types_are_type_errors(build, message):
    with pytest.raises(TypeError) as error:
        build()
    assert str(error.value) == message


def test_numpy_integer_arguments_build_the_same_models():
    unet = models.unet((None, None, 1), num_classes=np.int64(2), depth=np.int32(2),
                       filters=np.int64(4))
    assert unet.count_params() == models.unet((None, None, 1), 2, depth=2,
                                              filters=4).count_params()
    assert unet.get_layer("encoder_block2_conv1").filters == 8
    cnn = models.plain_cnn(filters=(np.int64(4), np.uint8(3)), kernel_size=np.int64(3),
                           output_channels=np.int16(2))
    assert [cnn.get_layer(name).filters for name in ("conv1", "conv2", "output")] == [4, 3, 2]
    assert type(cnn.get_layer("conv1").filters) is int


# ------------------------------------------------------------ save and load


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: models.plain_cnn((None, None, 1), filters=(4, 4)), (1, 12, 12, 1)),
        (lambda: models.unet((None, None, 3), 2, depth=2, filters=4, batch_norm=True),
         (1, 16, 16, 3)),
        (lambda: models.unet((None, None, 1), 2, depth=2, filters=4, padding="valid",
                             dropout=0.5), (1, 44, 44, 1)),
    ],
    ids=["plain_cnn", "unet_same_bn", "unet_valid"],
)
def test_keras_file_round_trip(keras_round_trip, build, shape):
    # Random weights and batch-norm statistics: the round trip must restore every one.
    keras_round_trip(build(), shape)
