"""Receptive fields: hand values, the reference tables, and analytic == gradient probe.

Hand values come from the formulas of Araujo et al. (2019) worked by hand; the
VGG16 and google-research/receptive_field values are the published tables
(technical-facts §1.7); the U-Net phases are those derived in technical-facts
§5. Everything else is checked against `gradient_receptive_field`, which reads
the dependence off the model's own gradient.
"""

import re

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnkit import receptive_field as rf_module
from fcnkit import shapes
from fcnkit._gradients import input_gradient
from fcnkit.layers import (
    AddCoords2D,
    BlurPool2D,
    CropToMatch2D,
    MaxPoolingWithArgmax2D,
    MaxUnpooling2D,
)
from fcnkit.models import unet
from fcnkit.receptive_field import (
    AxisWindow,
    ReceptiveField,
    gradient_receptive_field,
    receptive_field,
    receptive_field_region,
    receptive_field_table,
)

layers = keras.layers


def sequential(input_shape, *stack):
    return keras.Sequential([keras.Input(input_shape), *stack])


def inside(interval, size):
    return all(0 <= start and end < n for (start, end), n in zip(interval, size))


def assert_matches_probe(model, positions, input_shape=None, misaligned="error"):
    """The exact in-image region equals the probe's bounding box everywhere;
    the Araujo interval equals it wherever it lies inside the image."""
    rf = receptive_field(model, input_shape=input_shape, misaligned=misaligned)
    size = (input_shape or model.inputs[0].shape[1:])[:2]
    for position in positions:
        mask, box = gradient_receptive_field(model, position, input_shape=input_shape)
        assert receptive_field_region(model, position, input_shape=input_shape) == box, position
        interval = rf.interval(position)
        if inside(interval, size):
            assert interval == box, position
        # No input pixel outside the interval is ever seen.
        (top, bottom), (left, right) = interval
        outside = mask.copy()
        outside[max(top, 0) : bottom + 1, max(left, 0) : right + 1] = False
        assert not outside.any(), position


# === Hand values ===


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_stacked_3x3_convolutions_give_1_plus_2n(count):
    model = sequential((None, None, 1), *[layers.Conv2D(1, 3) for _ in range(count)])
    rf = receptive_field(model)
    assert rf.size == (1 + 2 * count,) * 2
    assert rf.stride == (1, 1) and rf.padding == (0, 0)
    assert rf.sizes == ((1 + 2 * count,),) * 2


# (layers, input_shape) -> (r, S, P), by hand with r_{l-1} = s r_l + (k - s),
# S_{l-1} = s S_l, P_{l-1} = s P_l + p_l.
HAND_CASES = [
    # conv3 s2 then conv3: r = 2*3 + 1 = 7, S = 2.
    ([layers.Conv2D(1, 3, strides=2), layers.Conv2D(1, 3)], None, (7, 2, 0)),
    # pool 2 then conv3: r = 2*3 + 0 = 6.
    ([layers.MaxPooling2D(2), layers.Conv2D(1, 3)], None, (6, 2, 0)),
    # conv3 'same', pool 2, conv3 'same': r = 1 + 2 + 1 + 2*2 = 8, P = 1 + 1*2 = 3.
    ([layers.Conv2D(1, 3, padding="same"), layers.MaxPooling2D(2),
      layers.Conv2D(1, 3, padding="same")], None, (8, 2, 3)),
    # dilation 2 turns k = 3 into 5; then dilation 4: 9. r = 1 + 4 + 8 = 13.
    ([layers.Conv2D(1, 3, dilation_rate=2, padding="same"),
      layers.Conv2D(1, 3, dilation_rate=4, padding="same")], None, (13, 1, 6)),
    # Araujo's worked example: k=3, p=q=1, s=3, then k=2: u0 = -1, v0 = 4.
    ([layers.ZeroPadding2D(1), layers.Conv2D(1, 3, strides=3), layers.Conv2D(1, 2)],
     None, (6, 3, 1)),
    # 'same' with stride 2 on an even size pads 0 on the left (technical-facts §1.6).
    ([layers.Conv2D(1, 3, strides=2, padding="same")], (8, 8, 1), (3, 2, 0)),
    # ... and 1 on an odd size.
    ([layers.Conv2D(1, 3, strides=2, padding="same")], (9, 9, 1), (3, 2, 1)),
    # 'same' with stride 2 and an even kernel does not depend on the size.
    ([layers.Conv2D(1, 4, strides=2, padding="same")], None, (4, 2, 1)),
    # Cropping moves the field without changing its size: P = -2.
    ([layers.Cropping2D(2), layers.Conv2D(1, 3)], None, (3, 1, -2)),
    # Nearest upsampling ×2 then conv3: outputs 0, 1 see inputs {0,1} or {-1,0,1}...
    ([layers.UpSampling2D(2), layers.Conv2D(1, 3)], None, (2, 0.5, 0)),
]


@pytest.mark.parametrize("stack, input_shape, expected", HAND_CASES)
def test_hand_computed_cases(stack, input_shape, expected):
    model = sequential(input_shape or (None, None, 1), *stack)
    rf = receptive_field(model)
    assert (rf.size[0], rf.stride[0], rf.padding[0]) == expected
    assert rf.size[0] == rf.size[1]


def test_araujo_worked_example_interval():
    model = sequential((None, None, 1), layers.ZeroPadding2D(1),
                       layers.Conv2D(1, 3, strides=3), layers.Conv2D(1, 2))
    assert receptive_field(model).interval((0, 0)) == ((-1, 4), (-1, 4))


def test_upsampling_sizes_by_phase():
    # Output 2t and 2t+1 read upsampled 2t..2t+2 and 2t+1..2t+3, i.e. inputs
    # {t, t+1} (2 pixels) and {t, t+1} (2 pixels): stride 1/2, one size.
    model = sequential((None, None, 1), layers.UpSampling2D(2), layers.Conv2D(1, 2))
    rf = receptive_field(model)
    assert rf.sizes == ((1, 2), (1, 2))
    assert rf.interval((4, 5)) == ((2, 2), (2, 3))


def test_rectangular_kernels_per_axis():
    # google-research net 5: conv[3,5] s2 VALID -> conv[3,1] s2: r = (7, 5), S = 4.
    model = sequential((None, None, 1), layers.Conv2D(1, (3, 5), strides=2),
                       layers.Conv2D(1, (3, 1), strides=2))
    rf = receptive_field(model)
    assert (rf.size, rf.stride, rf.padding) == ((7, 5), (4, 4), (0, 0))


def test_fornaxai_readme_example_at_an_intermediate_layer():
    inputs = keras.Input((64, 64, 1))
    x = layers.Conv2D(1, 7)(inputs)
    x = layers.Conv2D(1, 5)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(1, 5, name="feature_grid")(x)
    x = layers.AveragePooling2D(2)(x)
    model = keras.Model(inputs, x)
    rf = receptive_field(model, layer="feature_grid")
    assert (rf.size, rf.stride) == ((20, 20), (2, 2))
    assert receptive_field(model, layer=model.get_layer("feature_grid")) == rf


def google_net1(inputs):
    left = layers.Conv2D(1, 1, strides=4, name="left")(inputs)
    right = layers.ZeroPadding2D(((1, 0), (1, 0)))(inputs)
    right = layers.Conv2D(1, 3, strides=2)(right)
    right = layers.Conv2D(1, 1, strides=2)(right)
    return layers.Add()([left, right])


def test_google_reference_net1_and_net8():
    inputs = keras.Input((None, None, 1))
    net1 = google_net1(inputs)
    rf = receptive_field(keras.Model(inputs, net1))
    assert (rf.size, rf.stride, rf.padding) == ((3, 3), (4, 4), (1, 1))
    left = layers.Conv2D(1, 1, strides=2)(net1)
    right = layers.ZeroPadding2D(((1, 0), (1, 0)))(net1)
    right = layers.Conv2D(1, 3, strides=2)(right)
    rf = receptive_field(keras.Model(inputs, layers.Add()([left, right])))
    assert (rf.size, rf.stride, rf.padding) == ((11, 11), (8, 8), (5, 5))


# === Published tables ===

VGG16_TABLE = {  # technical-facts §1.7, (r, S, P)
    "block1_conv1": (3, 1, 1), "block1_conv2": (5, 1, 2), "block1_pool": (6, 2, 2),
    "block2_conv1": (10, 2, 4), "block2_conv2": (14, 2, 6), "block2_pool": (16, 4, 6),
    "block3_conv1": (24, 4, 10), "block3_conv2": (32, 4, 14),
    "block3_conv3": (40, 4, 18), "block3_pool": (44, 8, 18),
    "block4_conv1": (60, 8, 26), "block4_conv2": (76, 8, 34),
    "block4_conv3": (92, 8, 42), "block4_pool": (100, 16, 42),
    "block5_conv1": (132, 16, 58), "block5_conv2": (164, 16, 74),
    "block5_conv3": (196, 16, 90), "block5_pool": (212, 32, 90),
}


@pytest.fixture(scope="module")
def vgg16():
    return keras.applications.VGG16(
        weights=None, include_top=False, input_shape=(224, 224, 3)
    )


def test_vgg16_pool5_and_table(vgg16):
    rf = receptive_field(vgg16)
    assert (rf.size, rf.stride, rf.padding) == ((212, 212), (32, 32), (90, 90))
    table = receptive_field_table(vgg16)
    assert {row["name"]: (int(row["r"]), int(row["S"]), int(row["P"]))
            for row in table} == VGG16_TABLE
    assert str(table).splitlines()[-1].split() == [
        "block5_pool", "MaxPooling2D", "2", "2", "1", "212", "32", "90"
    ]


def test_vgg16_probe_at_an_interior_pixel(vgg16):
    # Output (3, 3) sees -90 + 3*32 = 6 .. 6 + 211 = 217.
    mask, box = gradient_receptive_field(vgg16, (3, 3))
    assert box == receptive_field(vgg16).interval((3, 3)) == ((6, 217), (6, 217))
    assert mask.sum() == 212 * 212


# === The U-Net ===

UNET_PHASES = (188,) * 4 + (204,) * 12  # technical-facts §5: j mod 16 in 0..3 -> 188


def test_original_unet_sizes_by_phase():
    rf = receptive_field(unet((572, 572, 1), num_classes=2, padding="valid"))
    assert rf.size == (204, 204) and rf.stride == (1, 1) and rf.padding == (0, 0)
    assert rf.sizes == (UNET_PHASES, UNET_PHASES)
    for j in (0, 3, 4, 15, 16, 100, 387):
        expected = (16 * (j // 16), 16 * (j // 16) + UNET_PHASES[j % 16] - 1)
        assert rf.interval((j, j)) == (expected, expected)


def test_original_unet_probe():
    # Same layout with 2 filters: the receptive field does not depend on them.
    model = unet((572, 572, 1), num_classes=2, filters=2, padding="valid")
    assert_matches_probe(model, [(0, 0), (3, 4), (20, 35), (387, 387)])


def test_unet_table_shows_the_phases():
    table = receptive_field_table(unet((572, 572, 1), filters=2, padding="valid"))
    rows = {row["name"]: row for row in table}
    assert rows["bottleneck_relu2"]["r"] == "140" and rows["bottleneck_relu2"]["S"] == "16"
    assert rows["decoder_block4_upconv"]["S"] == "8"
    assert rows["output_activation"]["r"] == "188-204"


# === Analytic == probe on other architectures ===


def test_two_branches_of_different_depths_add_and_concatenate():
    inputs = keras.Input((20, 20, 1))
    short = layers.Conv2D(2, 3, padding="same")(inputs)
    deep = layers.Conv2D(2, 3, padding="same")(inputs)
    deep = layers.Conv2D(2, 3, padding="same", activation="relu")(deep)
    added = layers.Add()([short, deep])
    coarse = layers.MaxPooling2D(2)(inputs)
    coarse = layers.Conv2D(2, 5, padding="same")(coarse)
    coarse = layers.UpSampling2D(2)(coarse)
    x = layers.Concatenate()([added, coarse])
    model = keras.Model(inputs, layers.Conv2D(1, 1)(x))
    rf = receptive_field(model)
    # The coarse path wins: even outputs see o-4..o+5, odd ones o-5..o+4.
    assert rf.sizes == ((10, 10), (10, 10)) and rf.size == (10, 10)
    assert rf.interval((6, 7)) == ((2, 11), (2, 11))
    assert_matches_probe(model, [(0, 0), (6, 7), (9, 10), (19, 19)])


def test_segnet_like_encoder_decoder():
    stack = [
        layers.Conv2D(2, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(2, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(2, 3, padding="same", activation="relu"),
        layers.UpSampling2D(2), layers.Conv2D(2, 3, padding="same"),
        layers.UpSampling2D(2, interpolation="bilinear"),
        layers.Conv2D(1, 3, padding="same"),
    ]
    model = sequential((24, 24, 1), *stack)
    rf = receptive_field(model)
    assert rf.stride == (1, 1) and len(rf.sizes[0]) == 4
    assert_matches_probe(model, [(0, 0), (9, 10), (11, 12), (13, 14), (23, 22)])


def test_dilated_network_has_holes():
    stack = [layers.Conv2D(1, 3, dilation_rate=d, padding="same") for d in (2, 4, 8)]
    model = sequential((40, 40, 1), *stack)
    rf = receptive_field(model)
    assert rf.size == (29, 29)
    assert_matches_probe(model, [(0, 0), (20, 20), (39, 5)])
    mask, _ = gradient_receptive_field(model, (20, 20))
    # Offsets 2a + 4b + 8c with a, b, c in {-1, 0, 1}: the even ones, 15 per axis.
    assert mask.sum() == 15 * 15 and mask[6:35:2, 6:35:2].all()


def test_deep_dilated_stack_doubling_its_dilation():
    # Yu and Koltun's context module, 14 layers deep: r = 1 + 2 (1 + 2 + ... + 2^13).
    # The index sets are 32767 wide (a dense link matrix would take minutes).
    inputs = keras.Input((None, None, 1))
    x = inputs
    for index in range(14):
        x = layers.Conv2D(1, 3, dilation_rate=2**index, padding="same")(x)
    model = keras.Model(inputs, x)
    assert receptive_field(model).size == (32767, 32767)
    assert [row["r"] for row in receptive_field_table(model)][-3:] == ["8191", "16383", "32767"]


def test_transposed_convolution_network():
    stack = [
        layers.Conv2D(2, 3, strides=2), layers.Conv2DTranspose(2, 3, strides=2),
        layers.Conv2DTranspose(2, 2, strides=2, padding="same"),
        layers.Conv2D(1, 3, padding="same"),
    ]
    model = sequential((15, 15, 1), *stack)
    rf = receptive_field(model)
    assert rf.stride == (0.5, 0.5)
    assert_matches_probe(model, [(0, 0), (13, 14), (15, 16), (17, 17), (29, 29)])


def test_nested_model():
    inner = sequential((None, None, 2), layers.Conv2D(2, 3), layers.Conv2D(2, 3))
    inputs = keras.Input((16, 16, 1))
    x = layers.Conv2D(2, 3)(inputs)
    x = inner(x)
    model = keras.Model(inputs, layers.MaxPooling2D(2)(x))
    rf = receptive_field(model)
    assert (rf.size, rf.stride) == ((8, 8), (2, 2))
    assert_matches_probe(model, [(0, 0), (2, 3), (4, 4)])


def test_nested_model_with_several_outputs():
    # An encoder with one output per resolution (as `unet(encoder=...)` nests one):
    # each output goes back through the inner graph from its own inner tensor.
    image = keras.Input((None, None, 1))
    shallow = layers.Conv2D(1, 3, padding="same", name="shallow")(image)
    deep = layers.Conv2D(1, 5, padding="same", name="deep")(
        layers.MaxPooling2D(2, name="pool")(shallow))
    encoder = keras.Model(image, [deep, shallow], name="encoder")
    inputs = keras.Input((None, None, 1))
    deep_out, shallow_out = encoder(inputs)
    assert receptive_field(keras.Model(inputs, shallow_out)).size == (3, 3)
    deep_rf = receptive_field(keras.Model(inputs, deep_out))
    assert (deep_rf.size, deep_rf.stride) == ((12, 12), (2, 2))  # 3, pooled 4, + 4 * 2
    both = keras.Model(inputs, layers.Concatenate()(
        [layers.UpSampling2D(2)(deep_out), shallow_out]))
    assert_matches_probe(both, [(0, 0), (5, 6), (15, 15)], input_shape=(16, 16, 1))
    # The table gives the nested model's row the field of its first output.
    table = receptive_field_table(keras.Model(inputs, deep_out))
    assert [(row["name"], row["r"], row["S"]) for row in table] == [("encoder", "12", "2")]


def test_a_pixel_that_reads_only_padding_has_no_region():
    # A 2×2 kernel of dilation 2, "same" on one pixel: its taps fall at -1 and +1, both
    # padding (a case test_random_stacks_match_the_probe found).
    model = sequential((1, 1, 1), layers.Conv2D(1, 2, dilation_rate=2, padding="same"))
    assert receptive_field_region(model, (0, 0)) is None
    assert gradient_receptive_field(model, (0, 0))[1] is None


def test_crop_to_match_centres_the_field():
    inputs = keras.Input((12, 12, 1))
    small = layers.Conv2D(1, 5)(inputs)
    cropped = CropToMatch2D()([inputs, small])
    model = keras.Model(inputs, layers.Add()([cropped, small]))
    assert receptive_field(model).interval((0, 0)) == ((0, 4), (0, 4))
    assert_matches_probe(model, [(0, 0), (7, 3)])


# === fcnkit's own layers ===


@pytest.mark.parametrize("pool_size, padding, size", [(2, "valid", 11), (3, "same", 13),
                                                      ((2, 3), "same", 10)])
def test_pooling_with_argmax_has_the_field_of_max_pooling(pool_size, padding, size):
    inputs = keras.Input((size, size, 1))
    x = layers.Conv2D(1, 3, padding="same")(inputs)
    ours = keras.Model(inputs, MaxPoolingWithArgmax2D(pool_size, padding=padding)(x)[0])
    keras_pooling = sequential((size, size, 1), layers.Conv2D(1, 3, padding="same"),
                               layers.MaxPooling2D(pool_size, padding=padding))
    assert receptive_field(ours) == receptive_field(keras_pooling)
    rows, columns = ours.outputs[0].shape[1:3]
    assert_matches_probe(ours, [(0, 0), (rows // 2, columns // 2), (rows - 1, columns - 1)])


def test_unpooling_reads_the_pooled_pixel_of_its_window():
    inputs = keras.Input((6, 8, 1))
    pooled, indices = MaxPoolingWithArgmax2D(2)(inputs)
    model = keras.Model(inputs, MaxUnpooling2D(2)([pooled, indices]))
    rf = receptive_field(model)
    # Output t sees the window 2 * (t // 2) .. 2 * (t // 2) + 1: two phases, stride 1.
    assert rf.sizes == ((2, 2), (2, 2)) and rf.starts == ((0, 0), (0, 0))
    assert rf.stride == (1, 1) and rf.interval((3, 4)) == ((2, 3), (4, 5))
    assert_matches_probe(model, [(0, 0), (3, 4), (5, 7)])
    # The model's own gradient reaches one pixel per window, the maximum; the probe's copy
    # (a window sum, then nearest upsampling) finds the whole window.
    x = np.random.default_rng(0).normal(size=(1, 6, 8, 1)).astype("float32")
    weights = np.zeros((1, 6, 8, 1), "float32")
    weights[0, 2:4, 4:6] = 1.0
    assert np.count_nonzero(input_gradient(model, x, weights)) == 1
    mask, box = gradient_receptive_field(model, (3, 4))
    assert mask.sum() == 4 and box == ((2, 3), (4, 5))


def segnet_with_indices(input_shape):
    """Two levels of SegNet: the decoder unpools with the encoder's indices, to the size
    of the encoder's maps (odd sizes: "valid" pooling drops the last row)."""
    inputs = keras.Input(input_shape)
    level1 = layers.Conv2D(2, 3, padding="same", activation="relu")(inputs)
    pooled1, indices1 = MaxPoolingWithArgmax2D(2)(level1)
    level2 = layers.Conv2D(2, 3, padding="same", activation="relu")(pooled1)
    pooled2, indices2 = MaxPoolingWithArgmax2D(2)(level2)
    x = layers.Conv2D(2, 3, padding="same", activation="relu")(pooled2)
    x = MaxUnpooling2D(2)([x, indices2, level2])
    x = layers.Conv2D(2, 3, padding="same", activation="relu")(x)
    x = MaxUnpooling2D(2)([x, indices1, level1])
    return keras.Model(inputs, layers.Conv2D(1, 3, padding="same")(x))


def test_segnet_with_pooling_indices_matches_the_probe():
    model = segnet_with_indices((15, 17, 1))
    rf = receptive_field(model)
    assert rf.stride == (1, 1) and len(rf.sizes[0]) == 4
    # Row 5, backwards: last conv 4..6; unpool1 reads pooled rows 2..3; conv 1..4; unpool2
    # reads 0..2; deepest conv -1..3; pool2 -2..7; conv -3..8; pool1 -6..17; conv -7..18.
    # (The indices reach pool1's rows 2..3 and pool2's rows 0..2, inside those.)
    assert rf.interval((5, 5)) == ((-7, 18), (-7, 18))
    assert_matches_probe(model, [(0, 0), (5, 5), (7, 9), (11, 12), (14, 16), (13, 0)])


def test_blur_pool_field_and_its_reflected_border():
    model = sequential((7, 7, 1), BlurPool2D(4))
    rf = receptive_field(model)
    assert (rf.size, rf.stride, rf.padding) == ((4, 4), (2, 2), (1, 1))
    # The last output reads rows 5..8 of the padded image: 7 and 8 mirror 5 and 4, so it
    # depends on rows 4..6. Araujo's interval treats the padding like zeros (5..8); the
    # exact region and the probe see the mirrored row 4.
    assert rf.interval((3, 3)) == ((5, 8), (5, 8))
    assert receptive_field_region(model, (3, 3)) == ((4, 6), (4, 6))
    for position in [(0, 0), (1, 2), (3, 3), (3, 0)]:
        _, box = gradient_receptive_field(model, position)
        assert receptive_field_region(model, position) == box, position
    symmetric = sequential((7, 7, 1), BlurPool2D(4, padding="symmetric"))
    zero = sequential((7, 7, 1), BlurPool2D(4, padding="zero"))
    for other in (symmetric, zero):  # 7 and 8 mirror 6 and 5, or read zeros
        assert receptive_field_region(other, (3, 3)) == ((5, 6), (5, 6))
        assert gradient_receptive_field(other, (3, 3))[1] == ((5, 6), (5, 6))


@settings(deadline=None, max_examples=15)
@given(filter_size=st.integers(1, 7), strides=st.integers(1, 3), size=st.integers(8, 14),
       padding=st.sampled_from(["reflect", "symmetric", "zero"]), data=st.data())
def test_blur_pool_regions_match_the_probe(filter_size, strides, size, padding, data):
    model = sequential((size, size, 1), layers.Conv2D(1, 3, padding="same"),
                       BlurPool2D(filter_size, strides=strides, padding=padding))
    rows = model.output_shape[1]
    position = data.draw(st.tuples(st.integers(0, rows - 1), st.integers(0, rows - 1)))
    for where in (position, (rows - 1, 0)):
        _, box = gradient_receptive_field(model, where)
        assert receptive_field_region(model, where) == box, where


def test_add_coords_is_pointwise():
    model = sequential((10, 9, 1), layers.Conv2D(2, 3), AddCoords2D(with_r=True),
                       layers.Conv2D(1, 3))
    assert receptive_field(model).size == (5, 5)
    assert_matches_probe(model, [(0, 0), (3, 2), (5, 4)])


def test_table_with_fcnkit_layers():
    table = receptive_field_table(segnet_with_indices((16, 16, 1)))
    rows = {row["type"]: row for row in table}
    assert rows["MaxPoolingWithArgmax2D"]["kernel"] == "2"
    assert [row["r"] for row in table if row["type"] == "MaxPoolingWithArgmax2D"] == ["4", "10"]
    assert rows["MaxUnpooling2D"]["S"] == "1"


def test_unpooling_to_an_unknown_size_needs_the_input_shape():
    inputs = keras.Input((None, None, 1), name="image")
    pooled, indices = MaxPoolingWithArgmax2D(3, padding="same", name="pool")(inputs)
    model = keras.Model(inputs, MaxUnpooling2D(3, name="unpool")([pooled, indices, inputs]))
    message = (
        "Layer 'unpool' (MaxUnpooling2D) fits its output to a size that may be smaller "
        "than pool_size 3 times the pooled size along the rows; how much it crops above "
        "depends on sizes unknown here. Received: input sizes [(None, None), (None, None), "
        "(None, None)]. Pass `input_shape=(height, width, channels)` to `receptive_field`."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        receptive_field(model)
    rf = receptive_field(model, input_shape=(7, 7, 1))  # 7 -> 3 windows, 1 row on top
    assert rf.interval((0, 0)) == ((-1, 1), (-1, 1))
    assert_matches_probe(model, [(0, 0), (3, 4), (6, 6)], input_shape=(7, 7, 1))


LAYER_KINDS = st.one_of(
    st.tuples(st.just("conv"), st.integers(1, 5), st.integers(1, 2),
              st.integers(1, 2), st.sampled_from(["valid", "same"])),
    st.tuples(st.sampled_from(["max", "average"]), st.integers(1, 3),
              st.integers(1, 2), st.just(1), st.sampled_from(["valid", "same"])),
)


def build_stack(specs, size):
    """The layers of `specs`, up to the first that would not fit."""
    stack = []
    for kind, kernel, strides, dilation, padding in specs:
        if kind != "conv" or strides > 1:  # Keras refuses strides with dilation.
            dilation = 1
        after = shapes.conv_output_size(size, kernel, strides, padding, dilation)
        if after == 0:
            break
        size = after
        if kind == "conv":
            stack.append(layers.Conv2D(1, kernel, strides=strides, dilation_rate=dilation,
                                       padding=padding, activation="relu"))
        else:
            pooling = layers.MaxPooling2D if kind == "max" else layers.AveragePooling2D
            stack.append(pooling(kernel, strides=strides, padding=padding))
    return stack


@settings(deadline=None, max_examples=40)
@given(specs=st.lists(LAYER_KINDS, min_size=1, max_size=5),
       size=st.integers(12, 30), data=st.data())
def test_random_stacks_match_the_probe(specs, size, data):
    stack = build_stack(specs, size)
    if not stack:
        return
    model = sequential((size, size, 1), *stack)
    rows, columns = model.output_shape[1:3]
    position = data.draw(st.tuples(st.integers(0, rows - 1), st.integers(0, columns - 1)))
    assert_matches_probe(model, [position, (rows // 2, columns // 2)])


BRANCH_LAYERS = st.lists(
    st.tuples(st.integers(1, 5), st.integers(1, 3), st.sampled_from(["valid", "same"])),
    min_size=0, max_size=3)


def branch(x, specs, size):
    """Stride-1 convolutions (kernel, dilation, padding) and the length they leave."""
    for kernel, dilation, padding in specs:
        after = shapes.conv_output_size(size, kernel, 1, padding, dilation)
        if after < 3:
            break
        x = layers.Conv2D(1, kernel, dilation_rate=dilation, padding=padding)(x)
        size = after
    return x, size


@settings(deadline=None, max_examples=30)
@given(trunk=st.lists(LAYER_KINDS, min_size=0, max_size=2), left=BRANCH_LAYERS,
       right=BRANCH_LAYERS, merge=st.sampled_from(["add", "concatenate", "multiply"]),
       data=st.data())
def test_random_two_branch_graphs_match_the_probe_or_are_refused(trunk, left, right, merge,
                                                                  data):
    """Random graphs: a trunk, two branches, a merge. Branches of different depths with
    valid padding are cropped to a common size (CropToMatch2D); where the centres of the
    two paths do not line up the analytic computation must refuse, never be wrong."""
    size = 24
    inputs = keras.Input((size, size, 1))
    x = inputs
    for layer in build_stack(trunk, size):
        x = layer(x)
    trunk_size = x.shape[1]
    a, a_size = branch(x, left, trunk_size)
    b, b_size = branch(x, right, trunk_size)
    a, b = (CropToMatch2D()([a, b]), b) if a_size > b_size else (a, CropToMatch2D()([b, a]))
    merged = {"add": layers.Add, "concatenate": layers.Concatenate,
              "multiply": layers.Multiply}[merge]()([a, b])
    model = keras.Model(inputs, layers.Conv2D(1, 1)(merged))
    rows, columns = model.output_shape[1:3]
    position = data.draw(st.tuples(st.integers(0, rows - 1), st.integers(0, columns - 1)))
    try:
        receptive_field(model)
    except ValueError as error:
        assert "do not line up" in str(error) or "misaligned" in str(error), error
        return
    assert_matches_probe(model, [position, (rows // 2, columns // 2)])


# === Errors ===


def test_misaligned_strides_are_refused():
    # google-research net 3: a stride-2 path added to a stride-1 path.
    inputs = keras.Input((8, 8, 1), name="image")
    left = layers.ZeroPadding2D(((2, 1), (2, 1)), name="pad_left")(inputs)
    left = layers.Conv2D(1, 5, strides=2, name="conv_left")(left)
    right = layers.Conv2D(1, 3, name="conv_right1")(inputs)
    right = layers.Conv2D(1, 3, name="conv_right2")(right)
    model = keras.Model(inputs, layers.Add(name="add")([left, right]))
    message = (
        "The paths from the output of 'image' through 'pad_left' and "
        "'conv_right1' meet again on output grids that do not line up along "
        "the rows: effective strides differ ('pad_left': stride 2, "
        "'conv_right1': stride 1). Received: a misaligned multi-path model, "
        "whose receptive field would depend on the position in a way no "
        "(size, stride, padding) describes. Expected: paths with equal "
        "effective strides and equal receptive-field centres (Araujo et al. "
        "2019, §multi-path). Fix the padding or cropping of one path (a "
        "'same' convolution with stride 2 on an even size pads only on the "
        "right, for instance)."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        receptive_field(model)


def test_misaligned_centres_are_refused():
    inputs = keras.Input((10, 10, 1), name="image")
    shifted = layers.Cropping2D(((1, 0), (1, 0)), name="crop")(inputs)
    shifted = layers.Cropping2D(((0, 3), (0, 3)), name="crop_end")(shifted)
    convolved = layers.Conv2D(1, 5, name="conv")(inputs)
    model = keras.Model(inputs, layers.Add()([shifted, convolved]))
    message = (
        "The paths from the output of 'image' through 'crop' and 'conv' meet "
        "again on output grids that do not line up along the rows: the "
        "centres of their receptive fields differ ('crop': centre 1, 'conv': "
        "centre 2). Received: a misaligned multi-path model, whose receptive "
        "field would depend on the position in a way no (size, stride, "
        "padding) describes. Expected: paths with equal effective strides and "
        "equal receptive-field centres (Araujo et al. 2019, §multi-path). Fix "
        "the padding or cropping of one path (a 'same' convolution with "
        "stride 2 on an even size pads only on the right, for instance), or pass "
        "misaligned=\"union\" for the exact union of the paths' fields, by output phase."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        receptive_field(model)


def test_misaligned_paths_as_an_exact_union():
    # Replication then a 2x2 "same" convolution puts the decoder half a pixel off
    # its skip connection: refused by default, the exact union on request.
    model = unet((204, 204, 1), padding="valid", upsampling="nearest", filters=2)
    with pytest.raises(ValueError, match=re.escape(
            "or pass misaligned=\"union\" for the exact union of the paths' fields, by "
            "output phase.")):
        receptive_field(model)
    rf = receptive_field(model, misaligned="union")
    assert rf.misaligned and all("do not line up" in line for line in rf.misaligned)
    assert rf.stride == (1, 1) and len(rf.sizes[0]) == 16
    wider = unet((236, 236, 1), padding="valid", upsampling="nearest", filters=2)
    rows = wider.output_shape[1]
    positions = [(0, 0), (17, 23), (rows // 2, rows // 2 + 5), (rows - 1, 9), (20, 21)]
    union = receptive_field(wider, misaligned="union")
    assert sum(inside(union.interval(p), (236, 236)) for p in positions) >= 3
    assert_matches_probe(wider, positions, misaligned="union")
    aligned = receptive_field(unet((204, 204, 1), padding="valid", filters=2),
                              misaligned="union")
    assert aligned.misaligned == ()
    with pytest.raises(ValueError, match="misaligned"):
        receptive_field(model, misaligned="ignore")


def test_same_padding_with_stride_needs_the_input_size():
    model = sequential((None, None, 1), layers.Conv2D(1, 3, strides=2, padding="same",
                                                      name="down"))
    message = (
        "Layer 'down' (Conv2D) uses padding=\"same\" with strides=2 along the "
        "rows, where the padding depends on the input size, which is unknown "
        "here. Received: an input size of None. Pass `input_shape=(height, "
        "width, channels)` to `receptive_field`."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        receptive_field(model)
    assert receptive_field(model, input_shape=(9, 9, 1)).padding == (1, 1)


class Mystery(keras.layers.Layer):
    def call(self, x):
        return x


def test_unknown_layer_names_the_layer_and_the_fix():
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, Mystery(name="mystery")(inputs))
    message = (
        "Layer 'mystery' of class Mystery has no known receptive-field rule: "
        "fcnkit knows convolutions, pooling, transposed convolutions, "
        "upsampling, cropping, padding, pointwise and merge layers. Received: "
        "Mystery. Register its receptive-field parameters with "
        "`fcnkit.receptive_field.register_layer(Mystery, rule)`, where "
        "`rule(layer, input_sizes)` returns one (rows, columns) pair of "
        "`AxisWindow` per input."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        receptive_field(model)


def test_registered_layer_is_used():
    class Blur(keras.layers.Layer):
        def call(self, x):
            return keras.ops.average_pool(x, 3, 1, padding="same")

    rf_module.register_layer(
        Blur, lambda layer, sizes: [(AxisWindow(3, padding=1), AxisWindow(3, padding=1))]
    )
    try:
        model = sequential((12, 12, 1), Blur(), Blur())
        assert receptive_field(model).size == (5, 5)
        assert_matches_probe(model, [(0, 0), (6, 6)])
    finally:
        rf_module._RULES.pop(Blur)


def test_bad_arguments():
    model = sequential((8, 8, 1), layers.Conv2D(1, 3, name="conv"))
    with pytest.raises(ValueError, match=re.escape(
        "`layer` must name a layer of model '")):
        receptive_field(model, layer="nope")
    with pytest.raises(ValueError, match=re.escape(
        "`position` must be an output pixel `(row, column)`. Received: position=3.")):
        gradient_receptive_field(model, 3)
    with pytest.raises(ValueError, match=re.escape(
        "`position` must lie inside the output, of size (6, 6). "
        "Received: position=(6, 0).")):
        gradient_receptive_field(model, (6, 0))


def test_receptive_field_is_frozen():
    rf = receptive_field(sequential((None, None, 1), layers.Conv2D(1, 3)))
    assert isinstance(rf, ReceptiveField)
    with pytest.raises(AttributeError):
        rf.size = (1, 1)


def test_probe_finds_every_pixel_despite_cancelling_weights():
    # A kernel [1, -1] cancels on a constant image; the probe's positive copy does not.
    conv = layers.Conv2D(1, (1, 2), use_bias=False)
    model = sequential((4, 4, 1), conv)
    conv.set_weights([np.array([1.0, -1.0]).reshape(1, 2, 1, 1)])
    mask, box = gradient_receptive_field(model, (1, 1))
    assert box == ((1, 1), (1, 2)) and mask.sum() == 2
