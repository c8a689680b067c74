"""The lecture explorers (`fcnkit.explorers`): their logic, static figures and widgets.

No browser is needed: the logic is plain functions, the static figures are
matplotlib figures, and ipywidgets' widgets work without a front end (their
values can be set and observed).
"""

from __future__ import annotations

import re
import sys

import keras
import matplotlib
import numpy as np
import pytest

from fcnkit import explorers
from fcnkit.erf import conv_stack, effective_receptive_field
from fcnkit.receptive_field import gradient_receptive_field, receptive_field

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def hand_receptive_field(depth, kernel_size, stride, dilation, pooling):
    """Araujo's single-path recurrence, from the output back to the input."""
    layers = []
    for index in range(depth):
        layers.append((dilation * (kernel_size - 1) + 1, stride))
        if pooling != "none" and index < depth - 1:
            layers.append((2, 2))
    size, total_stride = 1, 1
    for kernel, layer_stride in layers:
        size += (kernel - 1) * total_stride
        total_stride *= layer_stride
    return size, total_stride


SETTINGS = [
    (1, 3, 1, 1, "none"),
    (3, 3, 1, 1, "none"),
    (5, 5, 1, 1, "none"),
    (3, 3, 2, 1, "none"),
    (2, 7, 2, 1, "average"),
    (3, 3, 1, 2, "none"),
    (4, 3, 1, 4, "max"),
    (3, 1, 1, 1, "max"),
]


@pytest.mark.parametrize("depth, kernel_size, stride, dilation, pooling", SETTINGS)
def test_explorer_network_receptive_field_matches_the_recurrence(
        depth, kernel_size, stride, dilation, pooling):
    network = explorers.explorer_network(depth, kernel_size, stride, dilation, pooling)
    rf = receptive_field(network)
    size, total_stride = hand_receptive_field(depth, kernel_size, stride, dilation, pooling)
    assert rf.size == (size, size)
    assert rf.stride == (total_stride, total_stride)


@pytest.mark.parametrize("settings", [SETTINGS[3], SETTINGS[4], SETTINGS[6]])
def test_receptive_field_view_draws_what_the_gradient_sees(settings):
    image = np.zeros((150, 160))
    view = explorers.receptive_field_view(image, *settings)
    network = explorers.explorer_network(*settings)
    assert len(view.positions) == 2
    assert view.positions[1] == (view.positions[0][0], view.positions[0][1] + 1)
    for position, interval in zip(view.positions, view.intervals):
        _, box = gradient_receptive_field(network, position, input_shape=(150, 160, 1))
        assert interval == box
    # Neighbours are one effective stride apart.
    (_, (left0, _)), (_, (left1, _)) = view.intervals
    assert left1 - left0 == view.stride[1]
    assert f"receptive field {view.size[0]}×{view.size[1]}" in view.text


def test_receptive_field_view_of_an_image_too_small():
    view = explorers.receptive_field_view(np.zeros((6, 6)), depth=4)
    assert view.positions == () and view.intervals == ()
    assert view.output_shape == (0, 0)
    assert view.text.endswith("RF 9, but a 6×6 image is too small for this network "
                              "(empty output).")


def test_stride_and_dilation_together_are_refused():
    message = ("Keras' Conv2D does not combine a stride above 1 with a dilation above 1. "
               "Received: stride=2, dilation=2. Set one of them to 1.")
    with pytest.raises(ValueError, match=re.escape(message)):
        explorers.explorer_network(3, stride=2, dilation=2)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"pooling"):
        explorers.explorer_network(2, pooling="min")
    with pytest.raises(TypeError, match=r"depth"):
        explorers.explorer_network(2.0)
    with pytest.raises(ValueError, match=r"model"):
        explorers.erf_view(model="trained")


def test_use_widgets(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert explorers.use_widgets(True) is False
    assert explorers.use_widgets(False) is True
    assert explorers.use_widgets(None) is False  # no Jupyter kernel in pytest
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert explorers.use_widgets(None) is False
    with pytest.raises(TypeError, match=re.escape(
            "`static` must be True, False or None. Received: static='yes'.")):
        explorers.use_widgets("yes")


def test_live_explorer_without_ipywidgets_says_how_to_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    assert explorers.use_widgets(None) is False
    with pytest.raises(ImportError, match=re.escape(
            "The live explorers need ipywidgets. Received: no module named 'ipywidgets'. "
            "Install it (pip install ipywidgets) or pass static=True.")):
        explorers.receptive_field_explorer(np.zeros((32, 32)), static=False)


def test_static_receptive_field_figure_shows_the_presets():
    image = np.zeros((48, 48))
    figure = explorers.receptive_field_explorer(image, static=True)
    assert isinstance(figure, matplotlib.figure.Figure)
    assert len(figure.axes) == len(explorers.RF_PRESETS)
    for axis, preset in zip(figure.axes, explorers.RF_PRESETS):
        view = explorers.receptive_field_view(image, **preset)
        assert axis.get_title() == f"RF {view.size[0]}×{view.size[1]}, stride {view.stride[0]}"
        assert len(axis.patches) == 2  # two neighbouring output pixels, inside the image


def test_live_receptive_field_explorer_follows_its_controls():
    box = explorers.receptive_field_explorer(np.zeros((100, 100)), static=False)
    assert set(box.controls) == {"depth", "kernel_size", "stride", "dilation", "pooling"}
    assert "receptive field 7×7" in box.status.value
    box.controls["depth"].value = 5
    assert "receptive field 11×11" in box.status.value
    box.controls["pooling"].value = "max"
    size, stride = hand_receptive_field(5, 3, 1, 1, "max")
    assert f"receptive field {size}×{size}, effective stride {stride}" in box.status.value
    box.controls["pooling"].value = "none"
    box.controls["stride"].value = 2
    box.controls["dilation"].value = 2
    assert box.status.value.startswith("Keras' Conv2D does not combine a stride")


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_erf_view_of_the_uniform_linear_stack_is_exact(depth):
    view = explorers.erf_view(depth=depth, input_size=2 * depth + 9)
    assert view.theoretical_size == 2 * depth + 1
    for sigma in view.erf.sigma:
        assert sigma**2 == pytest.approx(2 * depth / 3, rel=1e-5)
    assert view.text.startswith(f"{depth} conv 3×3, linear, uniform weights: σ = ")


def test_erf_view_results_are_cached():
    first = explorers.erf_view(depth=3, activation="relu", weights="random", input_size=15,
                               samples=2)
    again = explorers.erf_view(depth=3, activation="relu", weights="random", input_size=15,
                               samples=2)
    assert again.erf is first.erf
    assert first.erf.init == "random" and first.erf.samples == 2


def test_erf_view_of_a_given_model_uses_its_weights():
    model = conv_stack(2, activation="relu", weights="random", filters=2, input_channels=3,
                       seed=4)
    view = explorers.erf_view(model="trained", models={"trained": model}, input_size=15,
                              samples=3, seed=1)
    expected = effective_receptive_field(model, (15, 15, 3), samples=3, seed=1, init="model")
    np.testing.assert_allclose(view.erf.map, expected.map, atol=1e-12)
    assert view.theoretical_size == 5
    assert view.text.startswith("trained: σ = ")


def test_erf_view_of_a_model_without_a_receptive_field_rule():
    class Twice(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, Twice()(keras.layers.Conv2D(1, 3, padding="same")(inputs)))
    view = explorers.erf_view(model="odd", models={"odd": model}, input_size=9, samples=1)
    assert view.theoretical_size is None
    assert "theoretical RF" not in view.text


def test_static_erf_figure_shows_the_presets_and_the_models():
    model = conv_stack(3, weights="uniform")
    figure = explorers.erf_explorer({"mine": model}, input_size=25, static=True)
    assert len(figure.axes) == len(explorers.ERF_PRESETS) + 1
    assert figure.axes[-1].get_xlabel() == "mine"
    assert figure.axes[-1].get_title() == "σ = 1.41 × 1.41 px"  # 2n/3 = 2


def test_live_erf_explorer_follows_its_controls():
    model = conv_stack(2, weights="uniform")
    box = explorers.erf_explorer({"two layers": model}, input_size=21, static=False)
    assert list(box.controls["model"].options) == [explorers.STACK, "two layers"]
    assert box.status.value.startswith("5 conv 3×3, linear, uniform weights")
    box.controls["depth"].value = 3
    assert box.status.value.startswith("3 conv 3×3, linear, uniform weights: σ = 1.41 px")
    box.controls["model"].value = "two layers"
    assert box.status.value.startswith("two layers: σ = 1.15 px, theoretical RF 5")


def test_equivariance_view_follows_the_rule_of_the_total_stride():
    image = np.random.default_rng(1).random((40, 40, 1)).astype("float32")
    odd = explorers.equivariance_view(image, "max-pooling 2×2, stride 2", 1)
    even = explorers.equivariance_view(image, "max-pooling 2×2, stride 2", 2)
    assert (odd.stride, odd.result.exact, even.result.exact) == (2, False, True)
    assert odd.text.startswith("max-pooling 2×2, stride 2, shift 1 (not a multiple of the "
                               "total stride 2) → output shift ")
    assert even.text.endswith("(a multiple of the total stride 2) → output shift 1: exact")
    # What is drawn is what is compared: F(T(x)) and T'(F(x)) agree on the mask.
    np.testing.assert_allclose(even.shifted_output[even.result.mask],
                               even.moved_output[even.result.mask], atol=1e-6)
    assert np.isnan(even.moved_output[0]).all()  # nothing moved into the first row
    circular = explorers.equivariance_view(image, "convolution 3×3, stride 1", 3,
                                           comparison="circular")
    assert not circular.result.exact and not np.isnan(circular.moved_output).any()


def test_equivariance_view_refuses_an_unknown_operator():
    with pytest.raises(ValueError, match=re.escape("Received: operator='rotation'.")):
        explorers.equivariance_view(np.zeros((16, 16, 1)), "rotation", 1)


def test_static_and_live_equivariance_explorers():
    image = np.random.default_rng(2).random((256, 256, 1)).astype("float32")
    figure = explorers.equivariance_explorer(image, static=True)
    assert len(figure.axes) == 3 * len(explorers.EQUIVARIANCE_PRESETS)
    verdicts = [figure.axes[3 * row + 2].get_title().splitlines()[1]
                for row in range(len(explorers.EQUIVARIANCE_PRESETS))]
    assert verdicts[0] == "exact (total stride 1)" and verdicts[3] == "exact (total stride 16)"
    assert verdicts[1].startswith("relative error") and verdicts[2].startswith("exact")
    box = explorers.equivariance_explorer(image, static=False)
    assert "shift 1 (not a multiple of the total stride 2)" in box.status.value
    box.controls["shift"].value = 4
    assert box.status.value.endswith("output shift 2: exact")
    box.controls["operator"].value = "upsampling ×2 (nearest)"
    assert box.status.value.endswith("output shift 8: exact")


def test_bilinear_kernel_interpolates():
    kernel = explorers.bilinear_kernel(4)
    np.testing.assert_allclose(kernel[0], [0.0625, 0.1875, 0.1875, 0.0625])
    # Stride 2: every output pixel gets the weights of one phase, summing to 1.
    for row in (0, 1):
        for column in (0, 1):
            assert kernel[row::2, column::2].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(explorers.bilinear_kernel(3)[1], [0.5, 1.0, 0.5])


def test_upsampling_views():
    constant = np.full((16, 16, 1), 0.5, dtype="float32")
    nearest = explorers.upsampling_view(constant, "nearest", levels=2)
    assert nearest.psnr == float("inf") and nearest.small.shape == (4, 4, 1)
    # A constant kernel of stride 2 gives 1, 2 or 4 contributions: a checkerboard.
    checkerboard = explorers.upsampling_view(constant, "transposed 3×3, constant kernel").output
    interior = checkerboard[2:-2, 2:-2, 0]
    np.testing.assert_allclose(sorted(set(np.round(interior.ravel() * 2.25 / 0.5, 5))),
                               [1.0, 2.0, 4.0])
    smooth = explorers.upsampling_view(constant, "transposed 4×4, bilinear kernel").output
    np.testing.assert_allclose(smooth[2:-2, 2:-2], 0.5, rtol=1e-6)
    image = np.random.default_rng(3).random((8, 8, 1)).astype("float32")
    unpooled = explorers.upsampling_view(image, "max-unpooling").output[..., 0]
    windows = image[..., 0].reshape(4, 2, 4, 2)
    assert np.count_nonzero(unpooled) == 16
    np.testing.assert_array_equal(unpooled.reshape(4, 2, 4, 2).max(axis=(1, 3)),
                                  windows.max(axis=(1, 3)))
    assert explorers.upsampling_view(image, "bilinear").text.startswith("bilinear, ×2: PSNR ")


def test_upsampling_view_refuses_odd_sizes():
    with pytest.raises(ValueError, match=re.escape(
            "`image` must be (rows, columns, channels) with sides divisible by 2**levels = 4. "
            "Received: shape (6, 8, 1), levels=2. Crop the image.")):
        explorers.upsampling_view(np.zeros((6, 8, 1)), levels=2)


def test_static_and_live_upsampling_explorers():
    image = np.random.default_rng(4).random((32, 32, 1)).astype("float32")
    figure = explorers.upsampling_explorer(image, static=True)
    titles = [axis.get_title().splitlines()[0] for axis in figure.axes]
    assert titles == list(explorers.UPSAMPLING_METHODS) + ["original"]
    box = explorers.upsampling_explorer(image, static=False)
    assert box.status.value.startswith("nearest, ×4: PSNR")
    box.controls["method"].value = "max-unpooling"
    box.controls["levels"].value = 1
    assert box.status.value.startswith("max-unpooling, ×2: PSNR")


def test_static_figures_stay_out_of_pyplot():
    # A notebook shows a pyplot figure by itself AND as the cell's value: twice.
    import matplotlib.pyplot as plt

    plt.close("all")
    figure = explorers.receptive_field_explorer(np.zeros((48, 48)), static=True)
    assert plt.get_fignums() == [] and isinstance(figure, matplotlib.figure.Figure)


def test_erf_view_draws_the_theoretical_field_where_it_lies():
    # A stride-2 model: the output pixel (8, 8) sees input pixels 14..20.
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(x))
    view = explorers.erf_view(model="strided", models={"strided": model}, input_size=32,
                              samples=2)
    assert view.erf.output_position == (8, 8)
    assert view.theoretical_region == ((14, 20), (14, 20)) and view.theoretical_size == 7
    from fcnkit.plotting import erf_heatmap

    axis = erf_heatmap(view.erf, theoretical_region=view.theoretical_region)
    assert [float(v) for v in axis.patches[1].get_bbox().bounds] == [13.5, 13.5, 7.0, 7.0]
    stack = explorers.erf_view(depth=3, input_size=15)
    assert stack.theoretical_region == ((4, 10), (4, 10))


def test_tiling_view_shows_seams_unless_the_overlap_is_auto():
    image = np.random.default_rng(5).random((150, 130, 1)).astype("float32")
    seams = explorers.tiling_view(image, tile_size=64, overlap=0)
    assert seams.error > 1e-3 and seams.stitched.shape == (150, 130)
    # The differences sit within the receptive-field margins of the tile borders
    # inside the image: elsewhere a tile computes what the whole image computes.
    layout = seams.layout
    trusted = []
    for axis, size in enumerate(image.shape[:2]):
        inside = np.zeros(size, dtype=bool)
        starts, owned = layout.starts[axis], layout.owned(axis)
        for index, (start, (first, end)) in enumerate(zip(starts, owned)):
            low = start + layout.margin[axis][0] if index > 0 else 0
            high = start + layout.output_tile[axis] - layout.margin[axis][1]
            high = size if index == len(starts) - 1 else high
            inside[max(first, low):min(end, high)] = True
        trusted.append(inside)
    mask = trusted[0][:, None] & trusted[1][None, :]
    assert mask.any() and (~mask).any()
    assert seams.difference[mask].max() < 1e-5
    assert seams.text.startswith("tile 64, overlap 0, blend none: ")
    seamless = explorers.tiling_view(image, tile_size=64, overlap="auto", blend="gaussian")
    assert seamless.error < 1e-5
    np.testing.assert_allclose(seamless.stitched, seamless.whole, atol=1e-5)
    assert "overlap auto = 44, blend gaussian" in seamless.text
    assert seamless.text.endswith("(seamless; margins (22, 22), total stride 4)")


def test_static_and_live_tiling_explorers():
    image = np.random.default_rng(6).random((96, 96, 1)).astype("float32")
    figure = explorers.tiling_explorer(image, static=True)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    differences = [title for title in titles if title.startswith("|stitched")]
    assert len(differences) == len(explorers.TILING_PRESETS)
    assert differences[0].endswith("max") is False and "max" in differences[0]
    assert differences[-1] == "|stitched - whole image|\nseamless"
    box = explorers.tiling_explorer(image, static=False)
    assert set(box.controls) == {"tile_size", "overlap", "blend"}
    assert box.status.value.startswith("tile 64, overlap 0, blend none: ")
    box.controls["overlap"].value = "auto"
    assert "(seamless;" in box.status.value
    box.controls["tile_size"].value = 48
    box.controls["overlap"].value = 32
    box.controls["blend"].value = "gaussian"
    assert box.status.value.startswith("tile 48, overlap 32, blend gaussian: ")
