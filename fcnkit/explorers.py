"""Lecture demos: the receptive field and the effective receptive field, live or static.

Each explorer is a few sliders and a figure: in a live notebook (JupyterLab,
with ipywidgets) the figure follows the sliders; where no widget front end
runs (grading, a script, a notebook exported to HTML) the explorer draws one
static figure of a few chosen settings instead. All the logic lives in plain
functions (`explorer_network`, `receptive_field_view`, `erf_view`), tested
without a browser; the widgets only call them.

- `receptive_field_explorer`: depth, kernel size, stride, dilation and
  pooling of a stack of convolutions → the receptive-field size and the
  receptive fields of two neighbouring output pixels drawn on an image
  (lesson ``03_receptive_field``).
- `erf_explorer`: depth, activation and weights of Luo et al.'s networks, or
  a trained model → the ERF map, its σ and the share of the theoretical
  receptive field it fills (lesson ``04_effective_receptive_field``).
- `equivariance_explorer`: an operator of the lecture's table and a shift →
  F(T(x)), T'(F(x)) and their difference (lesson ``05_translation_equivariance``).
- `upsampling_explorer`: an upsampling method → a pooled image brought back
  to full size, checkerboard artefacts included (lesson ``02_upsampling``).
- `tiling_explorer`: tile size, overlap and blending → a prediction
  stitched from tiles and its seams against the whole-image prediction
  (lesson ``08_large_images``).

Example:

>>> view = receptive_field_view(np.zeros((32, 32)), depth=3)
>>> view.size, view.stride
((7, 7), (1, 1))
"""

from __future__ import annotations

import dataclasses
import functools
import os

import keras
import numpy as np

from fcnkit._validation import check_non_negative_int, check_positive_int, validate_option
from fcnkit.erf import conv_stack, effective_receptive_field
from fcnkit.layers import bilinear_kernel  # lesson 02 calls fcnkit.explorers.bilinear_kernel
from fcnkit.receptive_field import receptive_field, receptive_field_region
from fcnkit.shapes import conv_output_size

POOLINGS = ("none", "max", "average")
ACTIVATIONS = ("linear", "relu", "tanh")
STACK = "conv stack"


def use_widgets(static=None) -> bool:
    """Whether an explorer shows widgets (True) or a static figure (False).

    Args:
        static: True (static figure), False (widgets; ipywidgets must be
            installed) or None (widgets only in a Jupyter kernel with
            ipywidgets installed, and never while nbgrader executes the
            notebook).

    Returns:
        A bool.
    """
    if static is not None:
        if not isinstance(static, bool):
            raise TypeError(
                f"`static` must be True, False or None. Received: static={static!r}."
            )
        if not static:
            _ipywidgets()
        return not static
    if os.environ.get("NBGRADER_EXECUTION"):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as error:
        raise ImportError(
            "The live explorers need ipywidgets. Received: no module named "
            "'ipywidgets'. Install it (pip install ipywidgets) or pass static=True."
        ) from error
    return ipywidgets


def _static_figure(rows, columns, figsize):
    """A figure outside pyplot: a notebook shows it once, as the cell's value."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, squeeze=False)


def _new_figure(columns, size=3.6):
    figure, axes = _static_figure(1, columns, (size * columns, size + 0.4))
    return figure, list(axes[0])


# ------------------------------------------------------- receptive field


def explorer_network(depth, kernel_size=3, stride=1, dilation=1, pooling="none"):
    """A stack of `depth` convolutions, for the receptive-field explorer.

    Every convolution is `kernel_size` x `kernel_size`, with `stride` and
    `dilation`, "valid" padding and one filter; with `pooling` "max" or
    "average", a 2x2 pooling of stride 2 follows every convolution but the
    last. Keras does not combine a stride above 1 with a dilation above 1 in
    one convolution, and neither does this network.

    Args:
        depth: int >= 1, number of convolutions.
        kernel_size: int >= 1.
        stride: int >= 1, stride of every convolution.
        dilation: int >= 1, dilation rate of every convolution.
        pooling: `"none"`, `"max"` or `"average"`.

    Returns:
        A functional `keras.Model` with input `(None, None, 1)`.

    Raises:
        TypeError, ValueError: for bad counts, an unknown pooling, or both a
            stride and a dilation above 1.

    Example:

    >>> receptive_field(explorer_network(2, pooling="max")).size  # 3, pool, 3
    (8, 8)
    """
    depth = check_positive_int(depth, "depth")
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    stride = check_positive_int(stride, "stride")
    dilation = check_positive_int(dilation, "dilation")
    pooling = validate_option(pooling, "pooling", POOLINGS)
    if stride > 1 and dilation > 1:
        raise ValueError(
            "Keras' Conv2D does not combine a stride above 1 with a dilation above 1. "
            f"Received: stride={stride}, dilation={dilation}. Set one of them to 1."
        )
    inputs = keras.Input((None, None, 1))
    x = inputs
    for index in range(1, depth + 1):
        x = keras.layers.Conv2D(1, kernel_size, strides=stride, dilation_rate=dilation,
                                name=f"conv{index}")(x)
        if pooling != "none" and index < depth:
            pool = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
            x = pool(2, name=f"pool{index}")(x)
    return keras.Model(inputs, x, name="explorer_network")


@dataclasses.dataclass(frozen=True)
class ReceptiveFieldView:
    """What the receptive-field explorer shows for one setting.

    Attributes:
        size: `(r_rows, r_columns)`, the receptive-field size.
        stride: `(S_rows, S_columns)`, the effective stride.
        positions: the two output pixels drawn: the centre one and its
            right-hand neighbour (`None` entries when the output is empty).
        intervals: their input intervals `((top, bottom), (left, right))`.
        output_shape: `(rows, columns)` of the output for the image (0 when
            the image is too small).
        text: one line describing the setting and its receptive field.
    """

    size: tuple
    stride: tuple
    positions: tuple
    intervals: tuple
    output_shape: tuple
    text: str


def receptive_field_view(image, depth=3, kernel_size=3, stride=1, dilation=1,
                         pooling="none"):
    """The receptive field of `explorer_network(...)` applied to `image`.

    Args:
        image: `(rows, columns)` or `(rows, columns, channels)` array; only
            its size matters.
        depth, kernel_size, stride, dilation, pooling: as `explorer_network`.

    Returns:
        A `ReceptiveFieldView`. When the image is too small for the network,
        `positions` and `intervals` are empty and `text` says so.

    Example:

    >>> view = receptive_field_view(np.zeros((20, 20)), depth=2, dilation=2)
    >>> view.size, view.output_shape, view.intervals[0]
    ((9, 9), (12, 12), ((6, 14), (6, 14)))
    """
    rows, columns = np.shape(image)[:2]
    network = explorer_network(depth, kernel_size, stride, dilation, pooling)
    rf = receptive_field(network)
    output_shape = tuple(_output_size(size, depth, kernel_size, stride, dilation, pooling)
                         for size in (rows, columns))
    setting = (f"{depth} conv {kernel_size}×{kernel_size}, stride {stride}, "
               f"dilation {dilation}, pooling {pooling}")
    if min(output_shape) < 1:
        return ReceptiveFieldView(
            rf.size, rf.stride, (), (), output_shape,
            f"{setting}: RF {rf.size[0]}, but a {rows}×{columns} image is too small "
            "for this network (empty output).")
    centre = (output_shape[0] // 2, output_shape[1] // 2)
    positions = (centre,)
    if centre[1] + 1 < output_shape[1]:
        positions += ((centre[0], centre[1] + 1),)
    intervals = tuple(rf.interval(position) for position in positions)
    text = (f"{setting}: receptive field {rf.size[0]}×{rf.size[1]}, effective stride "
            f"{rf.stride[0]}, output {output_shape[0]}×{output_shape[1]}")
    return ReceptiveFieldView(rf.size, rf.stride, positions, intervals, output_shape, text)


def _output_size(size, depth, kernel_size, stride, dilation, pooling):
    """Output length of `explorer_network(...)` for an input length (0: empty)."""
    for index in range(1, depth + 1):
        size = conv_output_size(size, kernel_size, stride, dilation_rate=dilation)
        if pooling != "none" and index < depth and size:
            size = conv_output_size(size, 2, 2)
        if not size:
            return 0
    return size


RF_PRESETS = (
    {"depth": 3},
    {"depth": 3, "dilation": 2},
    {"depth": 3, "stride": 2},
    {"depth": 3, "pooling": "max"},
)


def _draw_receptive_field(axis, image, view):
    from fcnkit.plotting import receptive_field_overlay

    labels = [f"output {position}" for position in view.positions]
    if view.intervals:
        receptive_field_overlay(image, list(view.intervals), axis=axis, labels=labels,
                                title=f"RF {view.size[0]}×{view.size[1]}, "
                                      f"stride {view.stride[0]}")
    else:
        axis.imshow(image, cmap="gray")
        axis.set_title("output empty: image too small", fontsize=10)
        axis.axis("off")


def receptive_field_explorer(image=None, *, static=None):
    """Sliders for a stack of convolutions → its receptive field on an image.

    Controls: depth (1–8), kernel size (1, 3, 5, 7), stride (1, 2),
    dilation (1, 2, 4) and pooling (none, max, average). The figure shows the
    receptive fields of the centre output pixel and of its right-hand
    neighbour on the image (dashed where they reach into the padding), and a
    line gives the size, the effective stride and the output size. Without a
    widget front end it draws `RF_PRESETS` side by side.

    Args:
        image: `(rows, columns)` or `(rows, columns, channels)` array; defaults
            to a 48x48 crop of the bundled nuclei test image.
        static: see `use_widgets`.

    Returns:
        An ipywidgets `VBox` (live), or the matplotlib `Figure` (static; kept
        out of pyplot, so a notebook shows it once, as the cell's value).

    Reference:
        Araujo, Norris, Sim, Distill 2019. Lesson: ``03_receptive_field``.
    """
    if image is None:
        from fcnkit.datasets import load

        image = load("nuclei")[1][0][0, 16:64, 100:148]
    image = np.asarray(image)
    if not use_widgets(static):
        figure, axes = _new_figure(len(RF_PRESETS))
        for axis, preset in zip(axes, RF_PRESETS):
            view = receptive_field_view(image, **preset)
            _draw_receptive_field(axis, image, view)
            axis.set_xlabel(", ".join(f"{k} {v}" for k, v in preset.items()), fontsize=9)
        figure.tight_layout()
        return figure
    widgets = _ipywidgets()
    controls = {
        "depth": widgets.IntSlider(3, min=1, max=8, description="depth"),
        "kernel_size": widgets.Dropdown(options=[1, 3, 5, 7], value=3, description="kernel"),
        "stride": widgets.Dropdown(options=[1, 2], value=1, description="stride"),
        "dilation": widgets.Dropdown(options=[1, 2, 4], value=1, description="dilation"),
        "pooling": widgets.Dropdown(options=list(POOLINGS), value="none",
                                    description="pooling"),
    }

    def draw(axis, **settings):
        try:
            view = receptive_field_view(image, **settings)
        except ValueError as error:  # stride and dilation together
            axis.axis("off")
            return str(error)
        _draw_receptive_field(axis, image, view)
        return view.text

    return _live(widgets, controls, draw, figsize=(6, 6))


def _live(widgets, controls, draw, figsize, whole_figure=False):
    """A VBox of `controls`, a status line and a figure that `draw` redraws.

    `draw(target, **values)` draws on one axis (or, with `whole_figure`, on
    the figure) and returns the status line.
    """
    import matplotlib.pyplot as plt

    status = widgets.HTML()
    output = widgets.Output()

    def update(_change=None):
        with output:
            output.clear_output(wait=True)
            figure = plt.figure(figsize=figsize)
            target = figure if whole_figure else figure.add_subplot()
            status.value = draw(target, **{k: c.value for k, c in controls.items()})
            plt.show()
            plt.close(figure)

    for control in controls.values():
        control.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox(list(controls.values())[:3]),
                        widgets.HBox(list(controls.values())[3:]), status, output])
    box.controls, box.status = controls, status  # for tests and scripting
    return box


# ----------------------------------------------------- effective receptive field


@functools.lru_cache(maxsize=64)
def _stack_erf(depth, activation, weights, input_size, samples, seed):
    model = conv_stack(depth, activation=None if activation == "linear" else activation,
                       weights=weights, filters=1 if weights == "uniform" else 4, seed=seed)
    if weights == "uniform" and activation == "linear":
        samples = 1  # a linear network's gradient does not depend on its input
    init = "model" if weights == "uniform" else "random"
    return effective_receptive_field(model, (input_size, input_size, 1), samples=samples,
                                     seed=seed, init=init)


@dataclasses.dataclass(frozen=True)
class ErfView:
    """What the ERF explorer shows for one setting.

    Attributes:
        erf: the `EffectiveReceptiveField`.
        theoretical_size: side of the theoretical receptive field, or None
            (a given model whose receptive field is not computed).
        theoretical_region: `((top, bottom), (left, right))`, the input pixels
            the output pixel depends on (inside the image), or None.
        text: one line with σ and the share of the theoretical RF.
    """

    erf: object
    theoretical_size: int | None
    theoretical_region: tuple | None
    text: str


def erf_view(depth=5, activation="linear", weights="uniform", model=STACK, models=None,
             input_size=64, samples=8, seed=0):
    """The ERF the explorer shows: of `conv_stack(depth, ...)` or of a given model.

    Args:
        depth: int >= 1, convolutions of the stack (Luo et al.'s 3x3 networks).
        activation: `"linear"`, `"relu"` or `"tanh"`, after every convolution
            but the last.
        weights: `"uniform"` (every weight equal: one exact map) or
            `"random"` (4 channels, weights redrawn for each of `samples`).
        model: `"conv stack"`, or a key of `models`.
        models: optional dict of trained (or untrained) single-input Keras
            models; their own weights are used, on `samples` random inputs
            of their number of channels.
        input_size: int, side of the square input.
        samples: int, maps averaged.
        seed: int >= 0.

    Returns:
        An `ErfView`. Stack results are cached: moving a slider back is free.

    Example:

    >>> view = erf_view(depth=4, input_size=21)
    >>> round(view.erf.sigma[0] ** 2, 4), view.theoretical_size  # 2n/3, 2n + 1
    (2.6667, 9)
    """
    models = dict(models or {})
    choices = (STACK,) + tuple(models)
    model = validate_option(model, "model", choices)
    input_size = check_positive_int(input_size, "input_size")
    samples = check_positive_int(samples, "samples")
    seed = check_non_negative_int(seed, "seed")
    if model == STACK:
        depth = check_positive_int(depth, "depth")
        activation = validate_option(activation, "activation", ACTIVATIONS)
        weights = validate_option(weights, "weights", ("uniform", "random"))
        erf = _stack_erf(depth, activation, weights, input_size, samples, seed)
        theoretical = 2 * depth + 1
        region = tuple((max(c - depth, 0), min(c + depth, input_size - 1))
                       for c in erf.output_position)
        name = f"{depth} conv 3×3, {activation}, {weights} weights"
    else:
        chosen = models[model]
        channels = chosen.inputs[0].shape[-1]
        erf = effective_receptive_field(chosen, (input_size, input_size, channels),
                                        samples=samples, seed=seed, init="model")
        try:
            shape = (input_size, input_size, channels)
            theoretical = receptive_field(chosen, input_shape=shape).size[0]
            region = receptive_field_region(chosen, erf.output_position, shape)
        except ValueError:  # a layer without a receptive-field rule
            theoretical = region = None
        name = model
    text = f"{name}: σ = {erf.sigma[0]:.2f} px"
    if theoretical is not None:
        text += (f", theoretical RF {theoretical}, 95 % of the mass in "
                 f"{erf.fraction_of(theoretical):.2f} of its side")
    return ErfView(erf, theoretical, region, text)


ERF_PRESETS = (
    {"depth": 2}, {"depth": 5}, {"depth": 10}, {"depth": 5, "activation": "relu",
                                                "weights": "random"},
)


def erf_explorer(models=None, *, input_size=64, static=None):
    """Sliders for a deep network → its effective receptive field.

    Controls: depth (1–24 convolutions 3x3), activation (linear, ReLU, tanh),
    weights (uniform, random) and, when `models` are given, a choice between
    the stack and each model (e.g. before and after training). The figure
    shows the ERF map with its 2σ ellipse and the theoretical receptive field;
    a line gives σ and the share of the theoretical RF that holds 95 % of the
    map. Without a widget front end it draws `ERF_PRESETS` and each model.

    Args:
        models: optional dict `{label: keras.Model}` of single-input models.
        input_size: int, side of the square input (larger than 2 * 24 + 1 for
            the deepest stack to fit).
        static: see `use_widgets`.

    Returns:
        An ipywidgets `VBox` (live), or the matplotlib `Figure` (static).

    Reference:
        Luo et al., NIPS 2016. Lesson: ``04_effective_receptive_field``.
    """
    models = dict(models or {})
    input_size = check_positive_int(input_size, "input_size")

    def draw(axis, **settings):
        from fcnkit.plotting import erf_heatmap

        view = erf_view(models=models, input_size=input_size, **settings)
        erf_heatmap(view.erf, axis=axis, theoretical_region=view.theoretical_region)
        return view.text

    if not use_widgets(static):
        settings = list(ERF_PRESETS) + [{"model": name} for name in models]
        figure, axes = _new_figure(len(settings), size=3.2)
        for axis, setting in zip(axes, settings):
            draw(axis, **setting)
            axis.set_xlabel(setting.get("model") or ", ".join(
                f"{k} {v}" for k, v in setting.items()), fontsize=9)
        figure.tight_layout()
        return figure
    widgets = _ipywidgets()
    controls = {
        "depth": widgets.IntSlider(5, min=1, max=24, description="depth"),
        "activation": widgets.Dropdown(options=list(ACTIVATIONS), value="linear",
                                       description="activation"),
        "weights": widgets.Dropdown(options=["uniform", "random"], value="uniform",
                                    description="weights"),
        "model": widgets.Dropdown(options=[STACK] + list(models), value=STACK,
                                  description="network"),
    }
    return _live(widgets, controls, draw, figsize=(5, 5))


# ------------------------------------------------------- translation equivariance


@functools.lru_cache(maxsize=16)
def _table_operator(name, channels, seed):
    from fcnkit.equivariance import _seeded, table_operators

    for index, (operator, _, build) in enumerate(table_operators(channels)):
        if operator == name:
            return _seeded(build(), seed + index)
    names = [operator for operator, _, _ in table_operators(channels)]
    raise ValueError(f"`operator` must be one of {names}. Received: operator={name!r}.")


def _default_image():
    from skimage import data

    return (data.camera()[::2, ::2] / 255.0).astype("float32")[..., np.newaxis]


@dataclasses.dataclass(frozen=True)
class EquivarianceView:
    """What the equivariance explorer shows for one operator and shift.

    Attributes:
        result: the `EquivarianceError`.
        shifted_output: F(T(x)), channel 0, `(rows, columns)`.
        moved_output: T'(F(x)), channel 0 (NaN where nothing moved in).
        stride: the operator's total stride S.
        text: one line: the error, whether it is exact, and the rule.
    """

    result: object
    shifted_output: np.ndarray
    moved_output: np.ndarray
    stride: int
    text: str


def equivariance_view(image, operator="max-pooling 2×2, stride 2", shift=1,
                      comparison="interior", seed=0):
    """One operator of the lecture's table, applied to `image` and to `image` shifted.

    Args:
        image: `(rows, columns, channels)` array.
        operator: a name from `fcnkit.equivariance.table_operators`.
        shift: int >= 0, input pixels along both axes.
        comparison: `"interior"` or `"circular"`.
        seed: int >= 0, seed of the operator's weights.

    Returns:
        An `EquivarianceView`.

    Example:

    >>> view = equivariance_view(np.zeros((32, 32, 1)), "upsampling ×2 (nearest)", 3)
    >>> view.result.exact, view.result.output_shift, view.stride
    (True, (6, 6), 1)
    """
    from fcnkit.equivariance import _translated, shift_equivariance_error, total_stride

    image = np.asarray(image, dtype="float32")
    shift = check_non_negative_int(shift, "shift")
    model = _table_operator(operator, image.shape[-1], check_non_negative_int(seed, "seed"))
    result = shift_equivariance_error(model, image, shift, comparison=comparison)
    output = keras.ops.convert_to_numpy(model(image[np.newaxis]))
    shifted = keras.ops.convert_to_numpy(model(np.roll(image, shift, axis=(0, 1))[np.newaxis]))
    if comparison == "circular":
        moved = np.roll(output, result.output_shift, axis=(1, 2))
    else:
        moved = _translated(output.astype("float64"), result.output_shift)
    stride = total_stride(model, image.shape)
    rule = "a multiple of" if shift % stride == 0 else "not a multiple of"
    verdict = "exact" if result.exact else f"relative error {result.relative:.3f}"
    text = (f"{operator}, shift {shift} ({rule} the total stride {stride}) → output shift "
            f"{result.output_shift[0]}: {verdict}")
    return EquivarianceView(result, shifted[0, ..., 0], moved[0, ..., 0], stride, text)


EQUIVARIANCE_PRESETS = (
    {"operator": "convolution 3×3, stride 1", "shift": 1},
    {"operator": "max-pooling 2×2, stride 2", "shift": 1},
    {"operator": "max-pooling 2×2, stride 2", "shift": 2},
    {"operator": "U-Net, 4 levels", "shift": 16},
)


def _draw_equivariance(axes, view, operator=""):
    shift = view.result.shift[0]
    panels = ((view.shifted_output, f"{operator}\nF(T(x)), shift {shift}"),
              (view.moved_output, f"T'(F(x)), output shift {view.result.output_shift[0]}"))
    for axis, (picture, title) in zip(axes, panels):
        axis.imshow(picture, cmap="gray")
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    shown = np.where(view.result.mask, view.result.map, np.nan)
    axes[2].imshow(shown, cmap="magma", vmin=0)
    verdict = "exact" if view.result.exact else f"relative error {view.result.relative:.3f}"
    axes[2].set_title(f"|difference| where compared\n{verdict} (total stride {view.stride})",
                      fontsize=10)
    axes[2].axis("off")


def equivariance_explorer(image=None, *, static=None):
    """An operator and a shift → F(T(x)), T'(F(x)) and the map of their difference.

    Controls: the operator (the lecture's table and the added rows of
    `fcnkit.equivariance.equivariance_table`), the shift (0–16 pixels along
    both axes) and the comparison (interior or circular: the latter shows
    the border effects of the padding). Without a widget front end it draws
    `EQUIVARIANCE_PRESETS`, one row each.

    Args:
        image: `(rows, columns, channels)`; defaults to scikit-image's camera
            at 256 x 256 (large enough for the U-Net's receptive field).
        static: see `use_widgets`.

    Returns:
        An ipywidgets `VBox` (live), or the matplotlib `Figure` (static).

    Reference:
        Zhang, ICML 2019. Lesson: ``05_translation_equivariance``.
    """
    from fcnkit.equivariance import table_operators

    image = _default_image() if image is None else np.asarray(image, dtype="float32")
    if not use_widgets(static):
        figure, axes = _static_figure(len(EQUIVARIANCE_PRESETS), 3,
                                      (10, 3.4 * len(EQUIVARIANCE_PRESETS)))
        for row, preset in zip(axes, EQUIVARIANCE_PRESETS):
            _draw_equivariance(row, equivariance_view(image, **preset), preset["operator"])
        figure.tight_layout()
        return figure
    widgets = _ipywidgets()
    controls = {
        "operator": widgets.Dropdown(options=[name for name, _, _ in table_operators()],
                                     value="max-pooling 2×2, stride 2", description="operator"),
        "shift": widgets.IntSlider(1, min=0, max=16, description="shift"),
        "comparison": widgets.Dropdown(options=["interior", "circular"], value="interior",
                                       description="compare"),
    }

    def draw(figure, **settings):
        view = equivariance_view(image, **settings)
        _draw_equivariance(figure.subplots(1, 3), view, settings["operator"])
        return view.text

    return _live(widgets, controls, draw, figsize=(12, 4), whole_figure=True)


# ------------------------------------------------------------------ upsampling


UPSAMPLING_METHODS = ("nearest", "bilinear", "transposed 3×3, constant kernel",
                      "transposed 4×4, bilinear kernel", "max-unpooling")


def _upsample(method, x, indices):
    """`x` (batch, rows, columns, channels) upsampled by 2 with `method`."""
    from fcnkit.layers import MaxUnpooling2D

    channels = x.shape[-1]
    if method in ("nearest", "bilinear"):
        return keras.layers.UpSampling2D(2, interpolation=method)(x)
    if method == "max-unpooling":
        return MaxUnpooling2D(2)([x, indices])
    size = 3 if method.startswith("transposed 3×3") else 4
    kernel = np.full((3, 3), 1 / 2.25) if size == 3 else bilinear_kernel(4)
    layer = keras.layers.Conv2DTranspose(channels, size, strides=2, padding="same",
                                         use_bias=False)
    layer.build(x.shape)
    weights = np.zeros((size, size, channels, channels), dtype="float32")
    for channel in range(channels):  # each channel on its own
        weights[:, :, channel, channel] = kernel
    layer.set_weights([weights])
    return layer(x)


@dataclasses.dataclass(frozen=True)
class UpsamplingView:
    """What the upsampling explorer shows for one method.

    Attributes:
        small: the image after `levels` 2x2 max-poolings, `(rows, columns, channels)`.
        output: `small` upsampled back by `2**levels` with the method.
        psnr: Python float, PSNR (dB) of `output` against the image.
        text: one line with the method and the PSNR.
    """

    small: np.ndarray
    output: np.ndarray
    psnr: float
    text: str


def upsampling_view(image, method="nearest", levels=1):
    """Max-pool `image` `levels` times by 2, then get back to full size with `method`.

    Every method starts from the same low-resolution image (max-pooling, so
    that max-unpooling can use its indices): replication (`"nearest"`),
    bilinear interpolation, a transposed convolution of stride 2 with a
    constant 3x3 kernel (the checkerboard artefact: output pixels receive 1,
    2 or 4 contributions), one with a 4x4 bilinear kernel (no artefact) and
    SegNet's max-unpooling (each value back where its maximum was, zeros
    elsewhere).

    Args:
        image: `(rows, columns, channels)` in [0, 1], sides divisible by
            `2**levels`.
        method: one of `UPSAMPLING_METHODS`.
        levels: int >= 1, poolings (the factor is `2**levels`).

    Returns:
        An `UpsamplingView`.

    Example:

    >>> image = np.kron(np.eye(2), np.ones((4, 4)))[..., np.newaxis]  # 8x8 blocks
    >>> round(upsampling_view(image, "nearest").psnr, 1)
    inf
    """
    from fcnkit.layers import MaxPoolingWithArgmax2D
    from fcnkit.metrics import psnr

    method = validate_option(method, "method", UPSAMPLING_METHODS)
    levels = check_positive_int(levels, "levels")
    image = np.asarray(image, dtype="float32")
    if image.ndim != 3 or any(side % 2**levels for side in image.shape[:2]):
        raise ValueError(
            "`image` must be (rows, columns, channels) with sides divisible by "
            f"2**levels = {2**levels}. Received: shape {image.shape}, levels={levels}. "
            "Crop the image."
        )
    x = image[np.newaxis]
    saved = []
    for _ in range(levels):
        x, indices = MaxPoolingWithArgmax2D(2)(x)
        saved.append(indices)
    small = keras.ops.convert_to_numpy(x)[0]
    for indices in reversed(saved):
        x = _upsample(method, x, indices)
    output = keras.ops.convert_to_numpy(x)[0]
    error = float(np.mean((output.astype("float64") - image) ** 2))
    quality = float("inf") if error == 0 else psnr(output, image)
    text = f"{method}, ×{2**levels}: PSNR {quality:.2f} dB against the full-resolution image"
    return UpsamplingView(small, output, quality, text)


def _show_image(axis, picture, title):
    from fcnkit.plotting import _as_display

    shown, cmap = _as_display(np.clip(picture, 0, 1))
    axis.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    axis.set_title(title, fontsize=9)
    axis.axis("off")


def _draw_upsampling(axes, image, view, method):
    _show_image(axes[0], view.small, f"max-pooled, {view.small.shape[0]}×{view.small.shape[1]}")
    _show_image(axes[1], view.output, f"{method}\nPSNR {view.psnr:.2f} dB")
    _show_image(axes[2], image, "original")


def upsampling_explorer(image=None, *, static=None):
    """An upsampling method and a factor → the image brought back to full size.

    Controls: the method (`UPSAMPLING_METHODS`) and the number of 2x2
    poolings undone (1–3). The figure shows the pooled image, its
    upsampling and the original, with the PSNR. Without a widget front end
    it draws every method side by side, for a factor 4.

    Args:
        image: `(rows, columns, channels)` in [0, 1], sides divisible by 8;
            defaults to a 64 x 64 crop of scikit-image's camera.
        static: see `use_widgets`.

    Returns:
        An ipywidgets `VBox` (live), or the matplotlib `Figure` (static).

    Reference:
        Odena, Dumoulin, Olah, Deconvolution and Checkerboard Artifacts,
        Distill 2016; Long et al., CVPR 2015; Badrinarayanan et al., TPAMI
        2017. Lesson: ``02_upsampling``.
    """
    if image is None:
        image = _default_image()[32:96, 96:160]
    image = np.asarray(image, dtype="float32")
    if not use_widgets(static):
        figure, axes = _new_figure(len(UPSAMPLING_METHODS) + 1, size=3.0)
        for axis, method in zip(axes, UPSAMPLING_METHODS):
            view = upsampling_view(image, method, levels=2)
            _show_image(axis, view.output, f"{method}\nPSNR {view.psnr:.2f} dB")
        _show_image(axes[-1], image, "original")
        figure.tight_layout()
        return figure
    widgets = _ipywidgets()
    controls = {
        "method": widgets.Dropdown(options=list(UPSAMPLING_METHODS), value="nearest",
                                   description="method"),
        "levels": widgets.IntSlider(2, min=1, max=3, description="poolings"),
    }

    def draw(figure, method, levels):
        view = upsampling_view(image, method, levels)
        _draw_upsampling(figure.subplots(1, 3), image, view, method)
        return view.text

    return _live(widgets, controls, draw, figsize=(12, 4), whole_figure=True)


# ---------------------------------------------------------------- tiled prediction


TILING_BLENDS = ("none", "constant", "gaussian")


@functools.lru_cache(maxsize=4)
def _tiling_model(channels, seed):
    """A small "same" U-Net (depth 2, 4 filters) with random weights: its seams show."""
    from fcnkit.models import unet

    keras.utils.set_random_seed(seed)
    return unet((None, None, channels), num_classes=1, depth=2, filters=4,
                output_activation="linear")


@dataclasses.dataclass(frozen=True)
class TilingView:
    """What the tiling explorer shows for one tile size, overlap and blending.

    Attributes:
        stitched: the tiled prediction, channel 0, `(rows, columns)`.
        whole: the whole-image prediction (`predict_padded`), channel 0.
        difference: `|stitched - whole|`, `(rows, columns)`.
        layout: the `fcnkit.tiling.TileLayout`.
        error: Python float, the largest difference.
        text: one line: the setting, the number of tiles and the error.
    """

    stitched: np.ndarray
    whole: np.ndarray
    difference: np.ndarray
    layout: object
    error: float
    text: str


def tiling_view(image, model=None, tile_size=64, overlap=0, blend="none", seed=0):
    """`image` predicted tile by tile and in one pass, and where they differ.

    Args:
        image: `(rows, columns, channels)` array.
        model: a Keras model whose output has the input's resolution; None
            takes a small random "same" U-Net (depth 2), whose seams show.
        tile_size: int, the tile size (a multiple of 4 for the default model).
        overlap: `"auto"` or output pixels shared by neighbouring tiles.
        blend: `"none"`, `"constant"` or `"gaussian"`.
        seed: int >= 0, seed of the default model's weights.

    Returns:
        A `TilingView`.

    Example:

    >>> image = np.random.default_rng(0).random((100, 90, 1)).astype("float32")
    >>> tiling_view(image, tile_size=48, overlap=0).error > 1e-3  # seams
    True
    >>> view = tiling_view(image, tile_size=64, overlap="auto")
    >>> view.error < 1e-5, view.layout.overlap
    (True, (44, 44))
    """
    from fcnkit import tiling

    image = np.asarray(image, dtype="float32")
    if model is None:
        model = _tiling_model(image.shape[-1] if image.ndim == 3 else 1,
                              check_non_negative_int(seed, "seed"))
    stitched = tiling.predict_tiled(model, image, tile_size, overlap=overlap, blend=blend,
                                    progress=False)
    whole = tiling.predict_padded(model, image)
    layout = tiling.tile_layout(model, image.shape, tile_size, overlap)
    difference = np.abs(stitched - whole).max(axis=-1)
    error = float(difference.max())
    verdict = "seamless" if error < 1e-5 else "seams"
    automatic = f"auto = {layout.overlap[0]}" if overlap == "auto" else str(overlap)
    text = (f"tile {tile_size}, overlap {automatic}, blend {blend}: {layout.count} tiles, "
            f"max |stitched - whole| = {error:.2e} ({verdict}; margins {layout.margin[0]}, "
            f"total stride {layout.stride[0]})")
    return TilingView(stitched[..., 0], whole[..., 0], difference, layout, error, text)


TILING_PRESETS = (
    {"tile_size": 64, "overlap": 0, "blend": "none"},
    {"tile_size": 64, "overlap": 16, "blend": "none"},  # blending needs overlap > margins
    {"tile_size": 64, "overlap": "auto", "blend": "none"},
)


def _draw_tiling(axes, view):
    layout = view.layout
    axes[0].imshow(view.stitched, cmap="gray")
    axes[0].set_title(f"stitched, {layout.count} tiles", fontsize=10)
    shown = axes[1].imshow(view.difference, cmap="magma", vmin=0)
    verdict = "seamless" if view.error < 1e-5 else f"max {view.error:.2e}"
    axes[1].set_title(f"|stitched - whole image|\n{verdict}", fontsize=10)
    for axis in axes[:2]:
        for start in layout.starts[0][1:]:  # where each tile's output begins
            axis.axhline(start - 0.5, color="tab:cyan", linewidth=0.6, alpha=0.7)
        for start in layout.starts[1][1:]:
            axis.axvline(start - 0.5, color="tab:cyan", linewidth=0.6, alpha=0.7)
        axis.axis("off")
    axes[1].figure.colorbar(shown, ax=axes[1], fraction=0.046)


def tiling_explorer(image=None, model=None, *, static=None):
    """Tile size, overlap and blending → the stitched prediction and its seams.

    Controls: the tile size (48–128), the overlap (0–32 pixels, or "auto":
    the margins of the receptive field on a grid of the total stride) and the
    blending (none, constant, gaussian). The figure shows the stitched
    prediction and its difference to the whole-image prediction, with the
    tile origins drawn; "auto" makes the difference vanish. Without a widget
    front end it draws `TILING_PRESETS`, one row each.

    Args:
        image: `(rows, columns, channels)`; defaults to scikit-image's camera
            at 256 x 256.
        model: a Keras model whose output has the input's resolution; None
            takes a small random U-Net (see `tiling_view`).
        static: see `use_widgets`.

    Returns:
        An ipywidgets `VBox` (live), or the matplotlib `Figure` (static).

    Reference:
        Ronneberger et al., MICCAI 2015 (overlap-tile); MONAI
        `sliding_window_inference` (blending). Lesson: ``08_large_images``.
    """
    image = _default_image() if image is None else np.asarray(image, dtype="float32")
    if not use_widgets(static):
        figure, axes = _static_figure(len(TILING_PRESETS), 2, (8, 3.8 * len(TILING_PRESETS)))
        for row, preset in zip(axes, TILING_PRESETS):
            view = tiling_view(image, model, **preset)
            _draw_tiling(row, view)
            row[0].set_ylabel(", ".join(f"{k} {v}" for k, v in preset.items()), fontsize=9)
            row[0].axis("on")
            row[0].set_xticks([])
            row[0].set_yticks([])
        figure.tight_layout()
        return figure
    widgets = _ipywidgets()
    controls = {
        "tile_size": widgets.Dropdown(options=[48, 64, 96, 128], value=64, description="tile"),
        "overlap": widgets.Dropdown(options=["auto", 0, 4, 8, 16, 32], value=0,
                                    description="overlap"),
        "blend": widgets.Dropdown(options=list(TILING_BLENDS), value="none",
                                  description="blend"),
    }

    def draw(figure, **settings):
        try:
            view = tiling_view(image, model, **settings)
        except ValueError as error:  # e.g. a tile too small for overlap="auto"
            return str(error)
        _draw_tiling(figure.subplots(1, 2), view)
        return view.text

    return _live(widgets, controls, draw, figsize=(10, 4.5), whole_figure=True)
