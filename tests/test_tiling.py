"""Tiled prediction (`fcnkit.tiling`): seamless with overlap="auto", blending that sums
to one, padding as NumPy pads, and every refused argument with its full message.

The whole-image references are computed here with `numpy.pad` and one call of the
model on the padded image; only the padded size comes from `padded_size`, which is
itself checked against the hand-computed U-Net sizes.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnkit import tiling
from fcnkit.models import unet

NUMPY_MODES = {"reflect": "reflect", "symmetric": "symmetric", "constant": "constant"}


def whole_image(model, image, pad_mode="reflect"):
    """The reference: `numpy.pad` to `padded_size`, one model call, crop."""
    (rows, columns), context = tiling.padded_size(model, image.shape)
    widths = ((context[0][0], rows - image.shape[0] - context[0][0]),
              (context[1][0], columns - image.shape[1] - context[1][0]), (0, 0))
    padded = np.pad(image, widths, mode=NUMPY_MODES[pad_mode])
    output = keras.ops.convert_to_numpy(model(padded[np.newaxis], training=False))[0]
    return output[:image.shape[0], :image.shape[1]]


def assert_equal_to_round_off(actual, expected):
    scale = max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


def identity_model(channels, kind):
    inputs = keras.Input((None, None, channels))
    if kind == "identity":
        outputs = keras.layers.Identity()(inputs)
    elif kind == "plus one":  # MONAI's invariance test: the predictor adds 1
        outputs = keras.layers.Rescaling(1.0, offset=1.0)(inputs)
    else:  # a 1x1 convolution with the identity kernel
        layer = keras.layers.Conv2D(channels, 1, use_bias=False)
        outputs = layer(inputs)
        layer.set_weights([np.eye(channels, dtype="float32")[np.newaxis, np.newaxis]])
    return keras.Model(inputs, outputs)


# ---------------------------------------------------------------- building blocks


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "constant"])
@pytest.mark.parametrize("size, before, total", [(5, 3, 14), (1, 2, 5), (2, 7, 20), (6, 0, 6)])
def test_tiles_are_read_as_numpy_pads(mode, size, before, total):
    image = np.arange(size * 3 * 2, dtype="float32").reshape(size, 3 * 2 // 2, 2) + 1
    expected = np.pad(image, ((before, total - size - before), (1, 2), (0, 0)), mode=mode)
    actual = tiling._pad_to(image, (before, 1), (total, image.shape[1] + 3), mode)
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("size, expected", [
    (5, [0.00598, 0.27804, 1.0, 0.27804, 0.00598]),
    (8, [0.00219, 0.04394, 0.32465, 0.8825, 0.8825, 0.32465, 0.04394, 0.00219]),
])
def test_gaussian_window_is_monais(size, expected):
    np.testing.assert_allclose(tiling.gaussian_window(size), expected, atol=5e-6)


def test_gaussian_weights_are_clamped_as_monais():
    weights = tiling.blend_weights((64, 64), "gaussian")
    assert float(weights.min()) == pytest.approx(1e-3)
    assert float(weights.max()) == pytest.approx(np.exp(-0.25 / (2 * 8**2)) ** 2, rel=1e-6)


@settings(deadline=None, max_examples=40)
@given(size=st.integers(1, 200), output=st.integers(4, 40), before=st.integers(0, 6),
       after=st.integers(0, 6), overlap=st.integers(0, 39))
def test_kept_intervals_cover_and_owned_intervals_partition(size, output, before, after,
                                                            overlap):
    overlap = min(overlap, output - 1)
    step = output - overlap
    last = max(size - output, 0)
    starts = tuple(range(0, last, step)) + (last,)
    layout = tiling.TileLayout((size, size), (output, output), (output, output),
                               ((0, 0),) * 2, ((before, after),) * 2, (1, 1),
                               (overlap,) * 2, (step,) * 2, (starts,) * 2, (last + output,) * 2,
                               True)
    covered = np.zeros(size, dtype=int)
    for first, end in layout.kept(0):
        covered[first:end] += 1
    assert covered.min() >= 1
    owned = layout.owned(0)
    assert owned[0][0] == 0 and owned[-1][1] == size
    for (first, end), (next_first, _) in zip(owned, owned[1:]):
        assert end == next_first
    for (first, end), (kept_first, kept_end) in zip(owned, layout.kept(0)):
        assert kept_first <= first and end <= kept_end


# ------------------------------------------------------ blending sums to one (MONAI)


@pytest.mark.parametrize("blend", tiling.BLENDS)
@pytest.mark.parametrize("kind, shape, tile, overlap, batch_size", [
    ("identity", (37, 53, 1), 16, 5, 3),
    ("plus one", (64, 20, 3), (24, 7), (23, 0), 2),  # large overlap, uneven tiles
    ("1x1 conv", (17, 19, 2), 32, "auto", 100),  # tile larger than the image, big batch
    ("identity", (50, 50, 1), 50, 0, 1),  # one tile, exactly the image
])
def test_identity_like_predictors_give_back_their_input(blend, kind, shape, tile, overlap,
                                                        batch_size):
    image = np.random.default_rng(0).random(shape).astype("float32")
    model = identity_model(shape[-1], kind)
    output = tiling.predict_tiled(model, image, tile, overlap=overlap, blend=blend,
                                  batch_size=batch_size)
    expected = image + 1 if kind == "plus one" else image
    assert output.shape == shape and output.dtype == np.float32
    np.testing.assert_allclose(output, expected, rtol=1e-6, atol=1e-6)


# --------------------------------------------- overlap="auto" equals the whole image


@pytest.fixture(scope="module")
def unets():
    keras.utils.set_random_seed(0)
    return {
        "same, transpose, depth 3": unet((None, None, 2), 3, depth=3, filters=4),
        "same, nearest, depth 2": unet((None, None, 1), 2, depth=2, filters=4,
                                        upsampling="nearest"),
        "same, bilinear, depth 2": unet((None, None, 1), 1, depth=2, filters=4,
                                         upsampling="bilinear", batch_norm=True),
        "valid, transpose, depth 2": unet((None, None, 2), 2, depth=2, filters=4,
                                          padding="valid"),
    }


@pytest.mark.parametrize("name, tile, shape, blend", [
    ("same, transpose, depth 3", 128, (171, 77, 2), "none"),
    ("same, transpose, depth 3", (112, 136), (131, 200, 2), "gaussian"),
    ("same, nearest, depth 2", 64, (101, 99, 1), "constant"),
    ("same, bilinear, depth 2", 60, (97, 143, 1), "none"),
    ("valid, transpose, depth 2", 60, (93, 71, 2), "none"),
    ("valid, transpose, depth 2", 76, (93, 71, 2), "gaussian"),
])
def test_auto_overlap_equals_the_whole_image_on_unets(unets, name, tile, shape, blend):
    model = unets[name]
    image = np.random.default_rng(1).random(shape).astype("float32")
    layout = tiling.tile_layout(model, shape, tile)
    assert layout.aligned and layout.count > 1
    tiled = tiling.predict_tiled(model, image, tile, blend=blend, batch_size=3)
    assert_equal_to_round_off(tiled, whole_image(model, image))
    np.testing.assert_array_equal(tiling.predict_padded(model, image),
                                  whole_image(model, image))


def test_a_small_overlap_shows_the_seams(unets):
    model = unets["same, transpose, depth 3"]
    image = np.random.default_rng(2).random((131, 77, 2)).astype("float32")
    reference = whole_image(model, image)
    seams = tiling.predict_tiled(model, image, 48, overlap=0)
    assert not tiling.tile_layout(model, image.shape, 48, overlap=0).aligned
    assert np.abs(seams - reference).max() > 1e-3 * np.abs(reference).max()


def test_padded_size_follows_the_unet_rules():
    valid = unet((None, None, 1), depth=4, filters=2, padding="valid")
    # Valid input sizes n = 12 (mod 16), n >= 188; each side loses 92 pixels.
    assert tiling.padded_size(valid, (1000, 1)) == ((1196, 188), ((92, 92), (92, 92)))
    same = unet((None, None, 1), depth=4, filters=2)
    assert tiling.padded_size(same, (1000, 17, 1)) == ((1008, 32), ((0, 0), (0, 0)))


def test_the_original_valid_unet_tiles_at_its_own_size():
    keras.utils.set_random_seed(3)
    fixed = unet((204, 204, 1), num_classes=2, depth=4, filters=2, padding="valid")
    layout = tiling.tile_layout(fixed, (30, 9))
    assert layout.tile_size == (204, 204) and layout.output_tile == (20, 20)
    assert layout.context == ((92, 92), (92, 92)) and layout.starts == ((0, 16), (0,))
    # 188 -> 4 output pixels: fewer than the total stride, so tiles cannot stay on its grid.
    small = unet((188, 188, 1), num_classes=2, depth=4, filters=2, padding="valid")
    assert message_of(lambda: tiling.tile_layout(small, (30, 9))) == (
        "`tile_size` 188 is too small for overlap=\"auto\" along the rows: its output of 4 "
        "pixels less the margins (0, 0) where the receptive field (204 pixels) leaves the "
        "tile keeps 4, fewer than the total stride 16. Received: tile_size=(188, 188). Use "
        "tile_size=204 or more.")
    image = np.random.default_rng(3).random((30, 9, 1)).astype("float32")
    free = unet((None, None, 1), num_classes=2, depth=4, filters=2, padding="valid")
    free.set_weights(fixed.get_weights())
    assert_equal_to_round_off(tiling.predict_tiled(fixed, image), whole_image(free, image))


LEVEL = st.tuples(
    st.integers(1, 5),  # kernel size
    st.integers(1, 3),  # dilation
    st.sampled_from(["none", "max", "average", "strided"]),  # downsampling
    st.sampled_from(["nearest", "bilinear", "transpose2", "transpose3"]),  # its upsampling
)


def random_network(levels, padding, channels, seed):
    """Convolutions (random kernel sizes and dilations) and downsamplings, then the
    matching upsamplings back to the input's resolution."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, channels))
    x = inputs
    upsamplings = []
    for kernel, dilation, downsampling, upsampling in levels:
        x = keras.layers.Conv2D(3, kernel, dilation_rate=dilation, padding=padding,
                                activation="tanh", bias_initializer="random_normal")(x)
        if downsampling == "max":
            x = keras.layers.MaxPooling2D(2, padding=padding)(x)
        elif downsampling == "average":
            x = keras.layers.AveragePooling2D(2, padding=padding)(x)
        elif downsampling == "strided":
            x = keras.layers.Conv2D(3, 3, strides=2, padding=padding)(x)
        if downsampling != "none":
            upsamplings.append(upsampling)
    for upsampling in reversed(upsamplings):
        if upsampling in ("nearest", "bilinear"):
            x = keras.layers.UpSampling2D(2, interpolation=upsampling)(x)
        else:
            x = keras.layers.Conv2DTranspose(3, int(upsampling[-1]), strides=2,
                                             padding="same")(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


@settings(deadline=None, max_examples=8)
@given(levels=st.lists(LEVEL, min_size=1, max_size=3),
       padding=st.sampled_from(["same", "valid"]), channels=st.integers(1, 3),
       extra=st.integers(0, 40), rows=st.integers(0, 60), columns=st.integers(0, 60),
       blend=st.sampled_from(tiling.BLENDS), seed=st.integers(0, 100))
def test_auto_overlap_equals_the_whole_image_on_random_networks(
        levels, padding, channels, extra, rows, columns, blend, seed):
    model = random_network(levels, padding, channels, seed)
    # The smallest tile that keeps at least one total stride beyond its margins, plus extra.
    tile = tiling._next_fitting(model, 0, 1)
    while True:
        try:
            layout = tiling.tile_layout(model, (10_000, 10_000), tile)
            break
        except ValueError as error:
            assert "too small for overlap=\"auto\"" in str(error)
            tile = tiling._next_fitting(model, 0, tile + 1)
    tile = tiling._next_fitting(model, 0, tile + extra)
    shape = (layout.output_tile[0] + rows + 1, layout.output_tile[1] // 2 + columns + 1,
             channels)
    image = np.random.default_rng(seed).random(shape).astype("float32")
    tiled = tiling.predict_tiled(model, image, tile, blend=blend, batch_size=4)
    assert tiling.tile_layout(model, shape, tile).aligned
    assert_equal_to_round_off(tiled, whole_image(model, image))


# ----------------------------------------------------------------- memory, progress


def test_tiles_are_predicted_batch_by_batch(unets, monkeypatch):
    model = unets["same, nearest, depth 2"]
    seen = []
    predict = tiling._predict_batch

    def spy(model, batch, *args):
        seen.append(batch.shape)
        return predict(model, batch, *args)

    monkeypatch.setattr(tiling, "_predict_batch", spy)
    image = np.zeros((150, 90, 1), dtype="float32")
    tiling.predict_tiled(model, image, 32, overlap=4, batch_size=5)
    layout = tiling.tile_layout(model, image.shape, 32, overlap=4)
    assert [shape[0] for shape in seen] == [5] * (layout.count // 5) + (
        [layout.count % 5] if layout.count % 5 else [])
    assert all(shape[1:] == (32, 32, 1) for shape in seen)


def test_progress_bar_on_request_only(capsys):
    model = identity_model(1, "identity")
    image = np.zeros((40, 40, 1), dtype="float32")
    tiling.predict_tiled(model, image, 8, overlap=0)  # 25 tiles, 7 batches: quiet
    assert capsys.readouterr().out == ""
    tiling.predict_tiled(model, image, 8, overlap=0, progress=True)
    assert "25/25" in capsys.readouterr().out


# ---------------------------------------------------------------- resize and pad


def test_predict_resized_resizes_both_ways():
    blocks = np.kron(np.arange(12, dtype="float32").reshape(3, 4), np.ones((2, 2)))
    image = blocks[..., np.newaxis].astype("float32")  # 6x8, constant 2x2 blocks
    model = identity_model(1, "identity")
    back = tiling.predict_resized(model, image, (3, 4), interpolation="nearest")
    np.testing.assert_array_equal(back, image)
    same = tiling.predict_resized(model, image, image.shape[:2])
    np.testing.assert_allclose(same, image, atol=1e-5)


# ------------------------------------------------------------------------- errors


def message_of(call):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    return str(info.value)


def test_bad_tiles_are_refused_with_the_sizes_to_use(unets):
    same = unets["same, transpose, depth 3"]
    image = np.zeros((100, 100, 2), dtype="float32")
    assert message_of(lambda: tiling.predict_tiled(same, image, 4)) == (
        "`tile_size` must be at least the model's total stride 8 along the rows: its "
        "downsampling layers need whole pixels. Received: tile_size=4. Use 8.")
    assert message_of(lambda: tiling.predict_tiled(same, image, (64, 60))) == (
        "`tile_size` must be a size the model takes whole along the columns: every layer "
        "with a stride must receive a size it divides (a multiple of the total stride 8 "
        "for a \"same\" network). Received: tile_size=60, where layer 'encoder_block3_pool' "
        "(stride 2) would receive 15 columns, not a multiple of 2. Use 56 or 64.")
    assert message_of(lambda: tiling.predict_tiled(same, image, 32)) == (
        "`tile_size` 32 is too small for overlap=\"auto\" along the rows: its output of 32 "
        "pixels less the margins (32, 32) where the receptive field (100 pixels) leaves the "
        "tile keeps 0, fewer than the total stride 8. Received: tile_size=32. Use "
        "tile_size=104 or more.")
    valid = unets["valid, transpose, depth 2"]
    assert message_of(lambda: tiling.predict_tiled(valid, image, 24)) == (
        "`tile_size` must be at least 44 along the rows for this model: its \"valid\" layers "
        "remove 40 pixels, and its downsampling layers need whole pixels. Received: "
        "tile_size=24, where the output of a layer would be empty. Use 44 or more.")
    assert message_of(lambda: tiling.predict_tiled(valid, image, 50)) == (
        "`tile_size` must be a size the model takes whole along the rows: every layer with "
        "a stride must receive a size it divides. Received: tile_size=50, where layer "
        "'encoder_block2_pool' (stride 2) would receive 19 rows, not a multiple of 2. "
        "Use 48 or 52.")
    assert message_of(lambda: tiling.predict_tiled(same, image, 2.0)) == (
        "`tile_size` must be a positive integer (a Python int or a NumPy integer). "
        "Received: tile_size=2.0 of type float. Pass tile_size=2 (an int, not a float).")


def test_bad_overlaps_and_options_are_refused(unets):
    same = unets["same, transpose, depth 3"]
    image = np.zeros((100, 100, 2), dtype="float32")
    assert message_of(lambda: tiling.predict_tiled(same, image, 64, overlap=64)) == (
        "`overlap` must be smaller than the tile along the rows: its output has 64 pixels "
        "(tile 64). Received: overlap=64. Use an overlap below 64, or overlap=\"auto\".")
    assert message_of(lambda: tiling.predict_tiled(same, image, 64, overlap="full")) == (
        "`overlap` must be one of \"auto\". Received: overlap='full'.")
    assert message_of(lambda: tiling.predict_tiled(same, image, 64, blend="linear")) == (
        "`blend` must be one of \"none\", \"constant\", \"gaussian\". Received: "
        "blend='linear'.")
    assert message_of(lambda: tiling.predict_tiled(same, image, 64, pad_mode="edge")) == (
        "`pad_mode` must be one of \"reflect\", \"symmetric\", \"constant\". Received: "
        "pad_mode='edge'.")
    assert message_of(lambda: tiling.predict_tiled(same, image, 64, pad_mode="Reflekt")) \
        .endswith('Did you mean "reflect"?')


def test_wrong_ranks_and_channels_are_refused(unets):
    same = unets["same, transpose, depth 3"]
    assert message_of(lambda: tiling.predict_tiled(same, np.zeros((64, 64)), 64)) == (
        "`image` must be a 3D array (rows, columns, channels). Received: "
        "image.shape=(64, 64). Add a channel axis, e.g. image[..., np.newaxis].")
    assert message_of(lambda: tiling.predict_padded(same, np.zeros((2, 64, 64, 2)))) == (
        "`image` must be a 3D array (rows, columns, channels). Received: "
        "image.shape=(2, 64, 64, 2). Predict one image at a time (image[0] of a batch).")
    assert message_of(lambda: tiling.predict_tiled(same, np.zeros((64, 64, 3)), 64)) == (
        "The model takes 2 channel(s), the image has 3. Received: image.shape=(64, 64, 3), "
        "model input shape (None, None, None, 2). Convert the image to 2 channel(s).")
    assert message_of(lambda: tiling.predict_tiled(same, np.zeros((64, 64, 2)))) == (
        "`tile_size` is needed: the model takes any size. Received: tile_size=None and a "
        "model with input shape (None, None, None, 2). Pass e.g. tile_size=256.")


def test_a_model_without_full_resolution_output_is_refused():
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.MaxPooling2D(2)(inputs))
    assert message_of(lambda: tiling.predict_tiled(model, np.zeros((20, 20, 1)), 8)) == (
        "Tiled prediction needs a model whose output has the resolution of its input (an "
        "effective stride of 1). Received: a model with effective stride ('2', '2'). "
        "Upsample its output to the input's resolution (e.g. keras.layers.UpSampling2D).")
