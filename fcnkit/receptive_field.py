"""Receptive fields of Keras models: analytic, per layer and per output position.

The receptive field (RF) of an output pixel is the set of input pixels it
depends on. Araujo et al. (2019) describe a single-path network along each axis
by three numbers: the size `r`, the effective stride `S` (input pixels between
two neighbouring outputs) and the effective padding `P` (output 0 sees the
input interval that starts at `-P`).

This module computes them exactly for any functional Keras model, including
multi-path graphs and upsampling paths, by propagating 1-D index sets
backwards through the graph, one axis at a time: for every tensor, a boolean
matrix says which of its indices each output position depends on. Strides,
dilation, padding, cropping, transposed convolutions and interpolation are all
exact, and where the receptive field depends on the output position (the
U-Net: 188 or 204 pixels by phase) the phases fall out of the same matrices.
`gradient_receptive_field` checks all of this against the gradient of the
model itself.

Lesson: ``03_receptive_field``.

Reference:
    Araujo, Norris, Sim, Computing Receptive Fields of Convolutional Neural
    Networks, Distill 2019 (doi 10.23915/distill.00021).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Callable

import keras
import numpy as np

from fcnkit._validation import check_non_negative_int, check_positive_int, validate_option
from fcnkit.layers import (
    AddCoords2D,
    BlurPool2D,
    CropToMatch2D,
    MaxPoolingWithArgmax2D,
    MaxUnpooling2D,
)
from fcnkit.layers.blur_pool import padding_widths
from fcnkit.layers.max_unpooling import INDEX_DTYPE, _windows

AXES = ("rows", "columns")


# === Layers as 1-D windows ===


@dataclasses.dataclass(frozen=True)
class AxisWindow:
    """Which input indices an output index of a layer reads, along one axis.

    `kind="conv"` (convolutions, pooling, cropping, padding, pointwise
    layers): output index `t` reads input indices
    `t * strides - padding + dilation_rate * m` for `m` in
    `range(kernel_size)`. A negative `padding` crops.

    `kind="transposed"` (transposed convolution, nearest upsampling): output
    index `t` reads the input indices `i` with
    `t = i * strides - padding + dilation_rate * m`, `m` in
    `range(kernel_size)`. Nearest upsampling by `u` is `kernel_size=u,
    strides=u`.

    `kind="bilinear"` (bilinear upsampling by `strides`, half-pixel centres):
    output index `t` reads the one or two input pixels around
    `(t + 0.5) / strides - 0.5`.

    `boundary` says what a `"conv"` window reads outside the input: `"zero"`
    (zero padding: nothing), `"reflect"` (index `-1` reads `1`, as
    `numpy.pad(mode="reflect")`) or `"symmetric"` (index `-1` reads `0`).
    `receptive_field` and its intervals treat every boundary like zero padding
    (Araujo's convention: the interval continues beyond the image);
    `receptive_field_region`, which stays inside the image, folds reflected
    indices back in, so a border pixel of `BlurPool2D` also depends on the
    pixels its padding mirrors.

    Example:

    >>> AxisWindow(kernel_size=3, strides=2).indices(5).tolist()
    [10, 11, 12]
    >>> AxisWindow(kernel_size=2, strides=2, kind="transposed").indices(5).tolist()
    [2]
    >>> AxisWindow(strides=2, kind="bilinear").indices(4).tolist()
    [1, 2]
    """

    kernel_size: int = 1
    strides: int = 1
    dilation_rate: int = 1
    padding: int = 0
    kind: str = "conv"
    boundary: str = "zero"

    @property
    def scale(self) -> Fraction:
        """Input indices per output index."""
        if self.kind == "conv":
            return Fraction(self.strides)
        return Fraction(1, self.strides)

    def pairs(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(output, input)` index pairs for the output indices `outputs`."""
        outputs = np.asarray(outputs, dtype=np.int64)
        taps = np.arange(self.kernel_size, dtype=np.int64) * self.dilation_rate
        if self.kind == "conv":
            inputs = outputs[:, None] * self.strides - self.padding + taps[None, :]
            return np.repeat(outputs, len(taps)), inputs.ravel()
        if self.kind == "transposed":
            numerator = outputs[:, None] + self.padding - taps[None, :]
            keep = numerator % self.strides == 0
            rows = np.broadcast_to(outputs[:, None], numerator.shape)
            return rows[keep], numerator[keep] // self.strides
        # Bilinear, half-pixel centres: source x = (2t + 1 - u) / (2u).
        numerator = 2 * outputs + 1 - self.strides
        left = numerator // (2 * self.strides)
        exact = numerator % (2 * self.strides) == 0
        return (
            np.concatenate([outputs, outputs[~exact]]),
            np.concatenate([left, left[~exact] + 1]),
        )

    def indices(self, output: int) -> np.ndarray:
        """The input indices that output index `output` reads, sorted."""
        return np.unique(self.pairs(np.array([output]))[1])


_POINTWISE = tuple(
    getattr(keras.layers, name)
    for name in (
        "InputLayer", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU",
        "Softmax", "BatchNormalization", "LayerNormalization", "Normalization",
        "Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise",
        "AlphaDropout", "Rescaling", "Dense", "Identity", "Add", "Subtract",
        "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    )
    if hasattr(keras.layers, name)
)

# Layers whose `axis` argument must not be a spatial one.
_CHANNEL_AXIS_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in ("Softmax", "BatchNormalization", "LayerNormalization",
                 "Normalization", "Concatenate")
    if hasattr(keras.layers, name)
)

_RULES: dict[type, Callable] = {}


def register_layer(layer_class: type, rule: Callable) -> None:
    """Teach `receptive_field` a layer type it does not know.

    Args:
        layer_class: the layer's class (subclasses match too).
        rule: a function `rule(layer, input_sizes)` returning one pair
            `(rows_window, columns_window)` of `AxisWindow` per input of the
            layer (in call order), or None for an input the output does not
            depend on. `input_sizes` lists `(height, width)` of each input,
            None where unknown.

    Example:

    >>> class Shift(keras.layers.Layer):
    ...     def call(self, x):
    ...         return x
    >>> register_layer(Shift, lambda layer, sizes: [(AxisWindow(padding=-1),) * 2])
    >>> inputs = keras.Input((8, 8, 1))
    >>> rf = receptive_field(keras.Model(inputs, Shift()(inputs)))
    >>> rf.interval((0, 0))
    ((1, 1), (1, 1))
    """
    if not isinstance(layer_class, type):
        raise TypeError(
            "`layer_class` must be a class, such as a keras.layers.Layer "
            f"subclass. Received: layer_class={layer_class!r}."
        )
    if not callable(rule):
        raise TypeError(
            "`rule` must be a function `rule(layer, input_sizes)` returning "
            f"one pair of AxisWindow per input. Received: rule={rule!r}."
        )
    _RULES[layer_class] = rule


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _same_left_padding(layer, kernel: int, stride: int, size: int | None, axis: int) -> int:
    """Left padding of Keras/TensorFlow "same" (the extra pixel goes right)."""

    def left(n: int) -> int:
        remainder = n % stride
        total = max(kernel - (stride if remainder == 0 else remainder), 0)
        return total // 2

    if size is not None:
        return left(size)
    candidates = {left(n) for n in range(stride)}
    if len(candidates) == 1:
        return candidates.pop()
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) uses padding=\"same\" "
        f"with strides={stride} along the {AXES[axis]}, where the padding "
        "depends on the input size, which is unknown here. Received: an "
        "input size of None. Pass `input_shape=(height, width, channels)` "
        "to `receptive_field`."
    )


def _channels_last(layer) -> None:
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format != "channels_last":
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has "
            f"data_format=\"{data_format}\"; the receptive-field tools "
            "expect channels-last tensors. Received: "
            f"data_format={data_format!r}. Build the model with "
            "data_format=\"channels_last\"."
        )


def _layer_windows(layer, input_sizes: list) -> list:
    """One `(rows, columns)` pair of AxisWindow (or None) per input."""
    for layer_class, rule in _RULES.items():
        if isinstance(layer, layer_class):
            return list(rule(layer, input_sizes))
    size = input_sizes[0] if input_sizes else (None, None)
    name = type(layer).__name__
    conv_like = (
        keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
        keras.layers.SeparableConv2D,
    )
    if isinstance(layer, keras.layers.Conv2DTranspose):
        _channels_last(layer)
        if layer.output_padding is not None:
            raise ValueError(
                f"Layer '{layer.name}' (Conv2DTranspose) sets output_padding="
                f"{layer.output_padding}; its receptive field is not "
                "implemented. Received: output_padding="
                f"{layer.output_padding}. Use output_padding=None."
            )
        windows = []
        for axis in (0, 1):
            kernel = _pair(layer.kernel_size)[axis]
            stride = _pair(layer.strides)[axis]
            dilation = _pair(layer.dilation_rate)[axis]
            effective = dilation * (kernel - 1) + 1
            if kernel * dilation < stride and dilation == 1:
                raise ValueError(
                    f"Layer '{layer.name}' (Conv2DTranspose) has kernel_size "
                    f"{kernel} < strides {stride} along the {AXES[axis]}: some "
                    "output pixels see no input at all. Received: "
                    f"kernel_size={layer.kernel_size}, strides={layer.strides}. "
                    "Use kernel_size >= strides."
                )
            crop = max(effective - stride, 0) // 2 if layer.padding == "same" else 0
            windows.append(AxisWindow(kernel, stride, dilation, crop, "transposed"))
        return [tuple(windows)]
    if isinstance(layer, conv_like) or isinstance(
        layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
    ):
        _channels_last(layer)
        pooling = not isinstance(layer, conv_like)
        kernels = _pair(layer.pool_size if pooling else layer.kernel_size)
        strides = _pair(layer.strides)
        dilations = (1, 1) if pooling else _pair(layer.dilation_rate)
        windows = []
        for axis in (0, 1):
            effective = dilations[axis] * (kernels[axis] - 1) + 1
            padding = 0
            if layer.padding == "same":
                padding = _same_left_padding(
                    layer, effective, strides[axis], size[axis], axis
                )
            windows.append(
                AxisWindow(kernels[axis], strides[axis], dilations[axis], padding)
            )
        return [tuple(windows)]
    if isinstance(layer, keras.layers.UpSampling2D):
        _channels_last(layer)
        factors = _pair(layer.size)
        if layer.interpolation == "nearest":
            return [tuple(AxisWindow(u, u, kind="transposed") for u in factors)]
        if layer.interpolation == "bilinear":
            return [tuple(AxisWindow(strides=u, kind="bilinear") for u in factors)]
        raise ValueError(
            f"Layer '{layer.name}' (UpSampling2D) uses interpolation="
            f"\"{layer.interpolation}\"; only \"nearest\" and \"bilinear\" "
            f"are supported. Received: interpolation={layer.interpolation!r}. "
            "Use one of those, or register the layer with "
            "`fcnkit.receptive_field.register_layer`."
        )
    if isinstance(layer, keras.layers.Cropping2D):
        _channels_last(layer)
        return [tuple(AxisWindow(padding=-layer.cropping[axis][0]) for axis in (0, 1))]
    if isinstance(layer, keras.layers.ZeroPadding2D):
        _channels_last(layer)
        return [tuple(AxisWindow(padding=layer.padding[axis][0]) for axis in (0, 1))]
    if isinstance(layer, CropToMatch2D):
        reference = input_sizes[1]
        offsets = []
        for axis in (0, 1):
            if size[axis] is None or reference[axis] is None:
                raise ValueError(
                    f"Layer '{layer.name}' (CropToMatch2D) crops by an amount "
                    "that depends on the sizes of its inputs, which are "
                    f"unknown here. Received: input sizes {input_sizes}. Pass "
                    "`input_shape=(height, width, channels)`."
                )
            offsets.append((size[axis] - reference[axis]) // 2)
        return [tuple(AxisWindow(padding=-offset) for offset in offsets), None]
    windows = _fcnkit_layer_windows(layer, input_sizes)
    if windows is not None:
        return windows
    if isinstance(layer, _POINTWISE):
        if isinstance(layer, _CHANNEL_AXIS_LAYERS):
            axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
            if any(axis in (1, 2, -3, -2) for axis in axes):
                raise ValueError(
                    f"Layer '{layer.name}' ({name}) works along axis "
                    f"{layer.axis}, a spatial axis, so its output pixels mix "
                    "whole rows or columns. Received: axis="
                    f"{layer.axis}. The receptive-field tools support "
                    "channel-wise (axis=-1) layers only."
                )
        return [(AxisWindow(), AxisWindow())] * max(len(input_sizes), 1)
    raise ValueError(
        f"Layer '{layer.name}' of class {name} has no known receptive-field "
        "rule: fcnkit knows convolutions, pooling, transposed convolutions, "
        "upsampling, cropping, padding, pointwise and merge layers. Received: "
        f"{name}. Register its receptive-field parameters with "
        "`fcnkit.receptive_field.register_layer("
        f"{name}, rule)`, where `rule(layer, input_sizes)` returns one "
        "(rows, columns) pair of `AxisWindow` per input."
    )


def _fcnkit_layer_windows(layer, input_sizes: list):
    """The windows of fcnkit's own layers (None for any other layer)."""
    size = input_sizes[0] if input_sizes else (None, None)
    if isinstance(layer, AddCoords2D):  # coordinates depend on the size only
        return [(AxisWindow(), AxisWindow())]
    if isinstance(layer, BlurPool2D):
        before, _ = padding_widths(layer.filter_size)
        return [tuple(
            AxisWindow(layer.filter_size, layer.strides[axis], padding=before,
                       boundary=layer.padding)
            for axis in (0, 1)
        )]
    if isinstance(layer, MaxPoolingWithArgmax2D):  # as MaxPooling2D
        windows = []
        for axis in (0, 1):
            pool = layer.pool_size[axis]
            padding = 0
            if layer.padding == "same":
                padding = _same_left_padding(layer, pool, pool, size[axis], axis)
            windows.append(AxisWindow(pool, pool, padding=padding))
        return [tuple(windows)]
    if isinstance(layer, MaxUnpooling2D):
        # As nearest upsampling, for the values and for the indices (which pixel of the
        # window gets the value depends on them); a reference gives only its size.
        reference = input_sizes[2] if len(input_sizes) == 3 else None
        windows = []
        for axis in (0, 1):
            pool = layer.pool_size[axis]
            pooled = size[axis]
            target = None
            if reference is not None:
                target = reference[axis]
            elif layer.output_size is not None:
                target = layer.output_size[axis]
            if reference is None and layer.output_size is None:
                crop = 0
            elif pooled is not None and target is not None:
                crop = max(pooled * pool - target, 0) // 2
            elif pool <= 2:  # a crop of at most 1 pixel, all of it below / right
                crop = 0
            else:
                raise ValueError(
                    f"Layer '{layer.name}' (MaxUnpooling2D) fits its output to a size "
                    f"that may be smaller than pool_size {pool} times the pooled size along "
                    f"the {AXES[axis]}; how much it crops above depends on sizes unknown "
                    f"here. Received: input sizes {input_sizes}. Pass "
                    "`input_shape=(height, width, channels)` to `receptive_field`."
                )
            windows.append(AxisWindow(pool, pool, padding=crop, kind="transposed"))
        windows = tuple(windows)
        return [windows, windows] + ([None] if reference is not None else [])
    return None


# === The graph ===


def _is_model(operation) -> bool:
    return isinstance(operation, keras.Model)


def _functional(model):
    # A Sequential model keeps its graph in a functional model once built.
    if isinstance(model, keras.Sequential):
        inner = getattr(model, "_functional", None)
        if inner is None:
            raise ValueError(
                f"The Sequential model '{model.name}' has no input yet. "
                "Received: an unbuilt model. Start it with keras.Input(shape)."
            )
        return inner
    if not hasattr(model, "inputs") or not hasattr(model, "outputs") or not _is_model(model):
        raise TypeError(
            "`model` must be a functional Keras model (built with "
            f"keras.Input). Received: model={model!r}."
        )
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs or len(inputs) != 1:
        raise ValueError(
            f"The receptive-field tools need a functional model with exactly "
            f"one input. Received: model '{model.name}' with "
            f"{len(inputs) if inputs else 0} inputs."
        )
    return model


def _node_of(tensor):
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def _graph(model):
    """The nodes of a functional model in forward topological order."""
    model = _functional(model)
    order, seen = [], set()

    def visit(tensor):
        node = _node_of(tensor)
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.arguments.keras_tensors:
            visit(parent)
        order.append(node)

    for output in model.outputs:
        visit(output)
    return model, order


def _shapes(model, nodes, input_hw) -> dict:
    """Height and width of every tensor, id -> (h, w), from the input size."""
    shapes = {}
    (inp,) = model.inputs
    static = tuple(inp.shape)
    shapes[id(inp)] = (
        tuple(input_hw) if input_hw is not None else tuple(static[1:3])
    )
    full = {id(inp): (None, *shapes[id(inp)], *static[3:])}
    for node in nodes:
        operation = node.operation
        if isinstance(operation, keras.layers.InputLayer):
            continue
        parents = node.arguments.keras_tensors
        in_shapes = [full.get(id(p), tuple(p.shape)) for p in parents]
        try:
            if len(in_shapes) == 1:
                out = operation.compute_output_shape(in_shapes[0])
            else:
                out = operation.compute_output_shape(in_shapes)
            outs = [tuple(out)] if not isinstance(out[0], (tuple, list)) else [
                tuple(o) for o in out
            ]
        except Exception:  # a layer without compute_output_shape: static shapes
            outs = [tuple(o.shape) for o in node.outputs]
        for tensor, shape in zip(node.outputs, outs):
            full[id(tensor)] = shape
            shapes[id(tensor)] = tuple(shape[1:3])
    return shapes


# === Backward propagation of 1-D index sets ===


@dataclasses.dataclass
class _AxisState:
    """Along one axis: which indices of a tensor each output position reads.

    `matrix[j, c]` is True when output position `j` depends on index
    `offset + c` of the tensor. `scale` is the tensor's indices per output
    index (a Fraction).
    """

    offset: int
    matrix: np.ndarray
    scale: Fraction
    via: str = ""

    def bounds(self):
        any_row = self.matrix.any(axis=1)
        first = np.argmax(self.matrix, axis=1) + self.offset
        last = self.matrix.shape[1] - 1 - np.argmax(self.matrix[:, ::-1], axis=1) + self.offset
        return first, last, any_row


def _fold(indices: np.ndarray, size: int, boundary: str) -> np.ndarray:
    """Where indices outside `[0, size)` read from under reflect or symmetric padding
    (a padding narrower than the input, as the layers require)."""
    shift = 0 if boundary == "reflect" else 1
    indices = np.where(indices < 0, -indices - shift, indices)
    return np.where(indices > size - 1, 2 * (size - 1) + shift - indices, indices)


def _apply(window: AxisWindow, state: _AxisState, size: int | None, clip: bool) -> _AxisState:
    """Index sets of a layer's input, from those of its output."""
    outputs = np.arange(state.offset, state.offset + state.matrix.shape[1])
    rows, cols = window.pairs(outputs)
    if clip:
        if window.boundary != "zero":
            cols = _fold(cols, size, window.boundary)
        keep = (cols >= 0) & (cols < size)
        rows, cols = rows[keep], cols[keep]
    if len(cols) == 0:
        return _AxisState(0, np.zeros((state.matrix.shape[0], 0), bool), state.scale * window.scale)
    # Input index c is read by output position j when j reads some output index
    # r linked to c: an OR over the pairs (r, c), grouped by c (sparse: a dense
    # link matrix costs the square of the width, minutes for deep dilated stacks).
    low = int(cols.min())
    order = np.argsort(cols, kind="stable")
    rows, cols = rows[order], cols[order]
    starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
    matrix = np.zeros((state.matrix.shape[0], int(cols[-1]) - low + 1), dtype=bool)
    matrix[:, cols[starts] - low] = np.logical_or.reduceat(
        state.matrix[:, rows - state.offset], starts, axis=1)
    return _AxisState(low, matrix, state.scale * window.scale)


def _union(states: list[_AxisState]) -> _AxisState:
    low = min(s.offset for s in states)
    high = max(s.offset + s.matrix.shape[1] for s in states)
    matrix = np.zeros((states[0].matrix.shape[0], high - low), dtype=bool)
    for s in states:
        matrix[:, s.offset - low : s.offset - low + s.matrix.shape[1]] |= s.matrix
    return _AxisState(low, matrix, states[0].scale)


class _Walk:
    """One backward pass; collects the scales it meets (for the period)."""

    def __init__(self, clip: bool, check: bool, misaligned: str = "error"):
        self.clip = clip
        self.check = check
        self.misaligned = misaligned
        self.reports = []
        self.scales = [set(), set()]

    def merge(self, tensor_name: str, contributions: list) -> tuple:
        merged = []
        for axis in (0, 1):
            states = [c[axis] for c in contributions]
            scales = {s.scale for s in states}
            if len(scales) > 1:
                raise ValueError(self._misaligned(tensor_name, states, axis, "stride"))
            if self.check and len(states) > 1:
                centres = set()
                for s in states:
                    first, last, _ = s.bounds()
                    centres.add(int((first + last).sum()))
                if len(centres) > 1:
                    message = self._misaligned(tensor_name, states, axis, "centre")
                    if self.misaligned == "error":
                        raise ValueError(message)
                    self.reports.append(message.split(" Received:")[0])
            merged.append(_union(states) if len(states) > 1 else states[0])
            self.scales[axis].add(merged[-1].scale)
        return tuple(merged)

    @staticmethod
    def _misaligned(tensor_name, states, axis, what) -> str:
        states = states[::-1]  # collected backwards: name the paths in graph order
        paths = " and ".join(f"'{s.via}'" for s in states)
        if what == "stride":
            detail = ", ".join(
                f"'{s.via}': stride {_number(s.scale)}" for s in states
            )
            found = f"effective strides differ ({detail})"
        else:
            detail = []
            for s in states:
                first, last, _ = s.bounds()
                centre = Fraction(int((first + last).sum()), 2 * len(first))
                detail.append(f"'{s.via}': centre {_number(centre)}")
            found = "the centres of their receptive fields differ (" + ", ".join(detail) + ")"
        return (
            f"The paths from the output of '{tensor_name}' through {paths} "
            f"meet again on output grids that do not line up along the "
            f"{AXES[axis]}: {found}. Received: a misaligned multi-path model, "
            "whose receptive field would depend on the position in a way no "
            "(size, stride, padding) describes. Expected: paths with equal "
            "effective strides and equal receptive-field centres (Araujo et "
            "al. 2019, §multi-path). Fix the padding or cropping of one path "
            "(a 'same' convolution with stride 2 on an even size pads only "
            "on the right, for instance)"
            + ("." if what == "stride" else
               ", or pass misaligned=\"union\" for the exact union of the "
               "paths' fields, by output phase.")
        )

    def backward(self, model, target, start: tuple, input_hw) -> tuple:
        """Index sets of the model's input, from those of tensor `target`."""
        model, nodes = _graph(model)
        shapes = _shapes(model, nodes, input_hw)
        pending = {id(target): [start]}
        (model_input,) = model.inputs
        for node in reversed(nodes):
            outputs = [t for t in node.outputs if id(t) in pending]
            if not outputs:
                continue
            layer = node.operation
            if isinstance(layer, keras.layers.InputLayer):
                continue
            parents = node.arguments.keras_tensors
            sizes = [shapes.get(id(p), (None, None)) for p in parents]
            if _is_model(layer):
                # A nested model: each of its outputs that is read goes back through the
                # inner graph from its own inner output (an encoder with one output per
                # resolution, say); each result is one path to the nested model's input.
                inner = _functional(layer)
                contributions, vias = [], []
                for inner_output, tensor in zip(inner.outputs, node.outputs):
                    if id(tensor) in pending:
                        state = self.merge(layer.name, pending.pop(id(tensor)))
                        contributions.append(
                            self.backward(layer, inner_output, state, sizes[0]))
                        vias.append(f"{layer.name}/{inner_output._keras_history[0].name}")
                parents = [parents[0]] * len(contributions)
            else:
                state = self.merge(
                    layer.name, [c for t in outputs for c in pending.pop(id(t))]
                )
                windows = _layer_windows(layer, sizes)
                contributions = []
                vias = [layer.name] * len(windows)
                for parent_windows, size in zip(windows, sizes):
                    if parent_windows is None:
                        contributions.append(None)
                        continue
                    contributions.append(tuple(
                        _apply(parent_windows[axis], state[axis], size[axis], self.clip)
                        for axis in (0, 1)
                    ))
            for parent, contribution, via in zip(parents, contributions, vias):
                if contribution is None:
                    continue
                for axis_state in contribution:
                    axis_state.via = via
                pending.setdefault(id(parent), []).append(contribution)
        contributions = pending.pop(id(model_input), None)
        if contributions is None:
            raise ValueError(
                "The output does not depend on the model's input. Received: "
                f"model '{model.name}'."
            )
        return self.merge(model_input._keras_history.operation.name, contributions)


def _number(value: Fraction):
    return int(value) if value.denominator == 1 else value


# === Public API ===


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of a layer's output, per axis `(rows, columns)`.

    Attributes:
        size: `(r_rows, r_columns)`, the largest receptive field over output
            positions (Araujo's `r`).
        stride: `(S_rows, S_columns)`, input pixels between two neighbouring
            output pixels; an int, or a `fractions.Fraction` below 1 after
            upsampling.
        padding: `(P_rows, P_columns)`: output position 0 sees the input
            interval that starts at `-P` (Araujo's effective padding).
        sizes: per axis, the receptive-field sizes by output phase: for output
            position `j`, `sizes[axis][j % len(sizes[axis])]`. One entry when
            neither the size nor the offset depends on the phase.
        starts: per axis, the first input index seen by output positions
            `0 .. len(sizes[axis]) - 1`.
        misaligned: with `receptive_field(..., misaligned="union")`, one line
            per merge of paths whose receptive fields are not centred alike
            (empty when all paths line up).

    Example:

    >>> rf = ReceptiveField(size=(5, 5), stride=(2, 2), padding=(2, 2),
    ...                     sizes=((5,), (5,)), starts=((-2,), (-2,)))
    >>> rf.interval((3, 0))
    ((4, 8), (-2, 2))
    """

    size: tuple
    stride: tuple
    padding: tuple
    sizes: tuple
    starts: tuple
    misaligned: tuple = ()

    @property
    def period(self) -> tuple:
        """Number of output phases per axis (`len(sizes[axis])`)."""
        return tuple(len(sizes) for sizes in self.sizes)

    def interval(self, position) -> tuple:
        """The input interval `((top, bottom), (left, right))`, ends included,
        seen by output pixel `position = (row, column)`. It may reach beyond
        the image: that part is padding."""
        position = _check_position(position)
        bounds = []
        for axis in (0, 1):
            period = len(self.sizes[axis])
            cycles, phase = divmod(position[axis], period)
            shift = Fraction(self.stride[axis]) * period * cycles
            start = self.starts[axis][phase] + int(shift)
            bounds.append((start, start + self.sizes[axis][phase] - 1))
        return tuple(bounds)


def _check_position(position) -> tuple:
    if not isinstance(position, (tuple, list)) or len(position) != 2:
        raise ValueError(
            "`position` must be an output pixel `(row, column)`. Received: "
            f"position={position!r}."
        )
    return tuple(
        check_non_negative_int(value, f"position[{axis}]")
        for axis, value in enumerate(position)
    )


def _input_hw(model, input_shape):
    if input_shape is None:
        return None
    input_shape = tuple(input_shape)
    (inp,) = _functional(model).inputs
    if len(input_shape) != len(inp.shape) - 1:
        raise ValueError(
            "`input_shape` must be (height, width, channels), without the "
            f"batch axis. Received: input_shape={input_shape}."
        )
    return tuple(
        check_positive_int(n, f"input_shape[{axis}]")
        for axis, n in enumerate(input_shape[:2])
    )


def _target(model, layer):
    model = _functional(model)
    if layer is None:
        if len(model.outputs) != 1:
            raise ValueError(
                "The model has several outputs; pick one with `layer=`. "
                f"Received: {len(model.outputs)} outputs."
            )
        return model.outputs[0]
    if isinstance(layer, str):
        names = [item.name for item in model.layers]
        if layer not in names:
            raise ValueError(
                f"`layer` must name a layer of model '{model.name}'. Received: "
                f"layer={layer!r}. Layers: {', '.join(names)}."
            )
        layer = model.get_layer(layer)
    if not any(layer is item for item in model.layers):
        raise ValueError(
            f"`layer` must be a layer of model '{model.name}' or its name. "
            f"Received: layer={layer!r}."
        )
    # The layer's output in this model's graph (for a nested model, `layer.output` is
    # the output of its own inner graph).
    _, nodes = _graph(model)
    outputs = next((node.outputs for node in nodes if node.operation is layer), None)
    output = layer.output if outputs is None else outputs
    if isinstance(output, (list, tuple)) and len(output) == 1:
        output = output[0]
    if isinstance(output, (list, tuple)):  # MaxPoolingWithArgmax2D: values and indices
        output = output[0]  # share one receptive field
    return output


def _identity_state(positions: np.ndarray) -> tuple:
    return tuple(
        _AxisState(int(positions[0]), np.eye(len(positions), dtype=bool), Fraction(1))
        for _ in (0, 1)
    )


def receptive_field(model, layer=None, input_shape=None, misaligned="error") -> ReceptiveField:
    """The receptive field of a model's output, or of one of its layers.

    Works on any functional Keras model with one input, including multi-path
    graphs (the largest path wins), nested models and upsampling paths, where
    the size depends on the output position: `size` is then the maximum and
    `sizes` lists the size by output phase.

    Args:
        model: a functional (or Sequential) Keras model with one input.
        layer: None (the model's output), a layer name or a layer object:
            the receptive field of that layer's output.
        input_shape: optional `(height, width, channels)`. Needed where the
            padding depends on the input size ("same" with a stride above 1,
            `CropToMatch2D`) and the model's input size is None.
        misaligned: `"error"` (the default): paths that meet with receptive
            fields centred differently (Araujo's misaligned paths, e.g. a
            U-Net whose decoder upsamples by replication, then convolves with
            a 2x2 "same" kernel, half a pixel off its skip connection) are
            refused, naming the paths. `"union"`: the receptive field is the
            exact union of the paths' fields, by output phase, and
            `ReceptiveField.misaligned` says where the paths disagree. Paths
            with different effective strides are always refused.

    Returns:
        A `ReceptiveField`.

    Raises:
        ValueError: for a layer type without a receptive-field rule (register
            one with `register_layer`), for a size that is needed but unknown,
            and for paths whose output grids do not line up (different
            effective strides or centres).

    Example:

    >>> inputs = keras.Input((None, None, 1))
    >>> x = inputs
    >>> for _ in range(3):
    ...     x = keras.layers.Conv2D(1, 3, padding="same")(x)
    >>> receptive_field(keras.Model(inputs, x)).size
    (7, 7)
    >>> vgg_like = keras.Sequential([keras.Input((None, None, 3)),
    ...     keras.layers.Conv2D(4, 3, padding="same"),
    ...     keras.layers.Conv2D(4, 3, padding="same"),
    ...     keras.layers.MaxPooling2D(2)])
    >>> rf = receptive_field(vgg_like)
    >>> rf.size, rf.stride, rf.padding
    ((6, 6), (2, 2), (2, 2))
    >>> from fcnkit.models import unet
    >>> rf = receptive_field(unet((572, 572, 1), padding="valid"))
    >>> rf.size, rf.sizes[0]
    ((204, 204), (188, 188, 188, 188, 204, 204, 204, 204, 204, 204, 204, 204, 204, 204, 204, 204))

    Reference:
        Araujo, Norris, Sim, Computing Receptive Fields of Convolutional
        Neural Networks, Distill 2019.
        Lesson: ``03_receptive_field``.
    """
    misaligned = validate_option(misaligned, "misaligned", ("error", "union"))
    input_hw = _input_hw(model, input_shape)
    target = _target(model, layer)
    # First pass: the strides of every tensor give the period of the phases.
    probe = _Walk(clip=False, check=False)
    probe.backward(model, target, _identity_state(np.arange(1)), input_hw)
    periods = [
        math.lcm(*(scale.denominator for scale in scales)) for scales in probe.scales
    ]
    count = max(periods)
    walk = _Walk(clip=False, check=True, misaligned=misaligned)
    state = walk.backward(model, target, _identity_state(np.arange(count)), input_hw)
    sizes, starts, strides, paddings = [], [], [], []
    for axis in (0, 1):
        first, last, _ = state[axis].bounds()
        period = periods[axis]
        sizes.append(tuple(int(n) for n in (last - first + 1)[:period]))
        starts.append(tuple(int(n) for n in first[:period]))
        strides.append(_number(state[axis].scale))
        paddings.append(-starts[-1][0])
    # One phase per axis where neither the size nor the offset varies.
    for axis in (0, 1):
        linear = all(
            start == starts[axis][0] + strides[axis] * j
            for j, start in enumerate(starts[axis])
        )
        if linear and len(set(sizes[axis])) == 1:
            sizes[axis], starts[axis] = sizes[axis][:1], starts[axis][:1]
    sizes = tuple(sizes)
    return ReceptiveField(
        size=tuple(max(s) for s in sizes),
        stride=tuple(strides),
        padding=tuple(paddings),
        sizes=sizes,
        starts=tuple(starts),
        misaligned=tuple(dict.fromkeys(walk.reports)),
    )


def receptive_field_region(model, position, input_shape=None) -> tuple:
    """The input pixels an output pixel depends on, inside the image.

    Unlike `ReceptiveField.interval`, which continues the image beyond its
    borders (Araujo's convention), this accounts for every padding and
    cropping of a model applied to an image of a given size: the result is
    the bounding box of the pixels with a nonzero gradient, exactly what
    `gradient_receptive_field` measures.

    Args:
        model: a functional Keras model with one input.
        position: `(row, column)` of the output pixel.
        input_shape: `(height, width, channels)`, needed when the model's
            input size is None.

    Returns:
        `((top, bottom), (left, right))`, ends included, or None when the
        pixel depends on no input pixel.

    Example:

    >>> inputs = keras.Input((8, 8, 1))
    >>> outputs = keras.layers.Conv2D(1, 3, padding="same")(inputs)
    >>> model = keras.Model(inputs, outputs)
    >>> receptive_field_region(model, (0, 4))
    ((0, 1), (3, 5))
    >>> receptive_field(model).interval((0, 4))
    ((-1, 1), (3, 5))
    """
    position = _check_position(position)
    input_hw = _input_hw(model, input_shape)
    functional = _functional(model)
    sizes = input_hw or tuple(functional.inputs[0].shape[1:3])
    if None in sizes:
        raise ValueError(
            "`receptive_field_region` needs the input size. Received: model "
            f"input shape {tuple(functional.inputs[0].shape)}. Pass "
            "`input_shape=(height, width, channels)`."
        )
    target = _target(model, None)
    start = tuple(
        _AxisState(position[axis], np.ones((1, 1), dtype=bool), Fraction(1))
        for axis in (0, 1)
    )
    state = _Walk(clip=True, check=False).backward(model, target, start, sizes)
    bounds = []
    for axis in (0, 1):
        if state[axis].matrix.shape[1] == 0:  # every tap fell in the padding
            return None
        first, last, nonempty = state[axis].bounds()
        if not nonempty[0]:
            return None
        bounds.append((int(first[0]), int(last[0])))
    return tuple(bounds)


def _window_text(values) -> str:
    values = tuple(values)
    if len(set(values)) == 1:
        return str(values[0])
    return "×".join(str(v) for v in values)


class ReceptiveFieldTable(list):
    """A list of dict records, one per layer, that prints as a table."""

    COLUMNS = ("name", "type", "kernel", "stride", "dilation", "r", "S", "P")

    def __str__(self) -> str:
        cells = [list(self.COLUMNS)] + [
            [str(row[column]) for column in self.COLUMNS] for row in self
        ]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.COLUMNS))]
        lines = []
        for index, line in enumerate(cells):
            text = "  ".join(
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths))
            )
            lines.append(text.rstrip())
            if index == 0:
                lines.append("  ".join("-" * width for width in widths))
        return "\n".join(lines)


def receptive_field_table(model, input_shape=None, misaligned="error") -> ReceptiveFieldTable:
    """The receptive field after every layer, as the lecture's tables show it.

    One record per layer, in the order of the graph: `name`, `type` (class),
    `kernel`, `stride` and `dilation` of the layer itself ("-" for layers
    without a window), then `r`, `S` and `P`, the receptive field of that
    layer's output with respect to the model's input. A value that differs
    between rows and columns reads "3×5"; a size that depends on the output
    position reads "188-204" (its minimum and maximum).

    Args:
        model: a functional Keras model with one input.
        input_shape: optional `(height, width, channels)`, as for
            `receptive_field`.
        misaligned: `"error"` (the default) or `"union"`, as for
            `receptive_field`.

    Returns:
        A `ReceptiveFieldTable`: a list of dicts; `print(table)` shows it.

    Example:

    >>> inputs = keras.Input((None, None, 1))
    >>> x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    >>> x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    >>> x = keras.layers.Conv2D(4, 3, dilation_rate=2, name="conv2")(x)
    >>> print(receptive_field_table(keras.Model(inputs, x)))
    name   type          kernel  stride  dilation   r  S  P
    -----  ------------  ------  ------  --------  --  -  -
    conv1  Conv2D             3       1         1   3  1  0
    pool1  MaxPooling2D       2       2         1   4  2  0
    conv2  Conv2D             3       1         2  12  2  0
    """
    input_hw = _input_hw(model, input_shape)
    functional, nodes = _graph(model)
    shapes = _shapes(functional, nodes, input_hw)
    table = ReceptiveFieldTable()
    for node in nodes:
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        kernel = stride = dilation = "-"
        if not _is_model(layer):
            sizes = [shapes.get(id(p), (None, None)) for p in node.arguments.keras_tensors]
            windows = _layer_windows(layer, sizes)
            first = windows[0] if windows else None
            if first is not None and len(windows) == 1:
                kernel = _window_text(w.kernel_size for w in first)
                stride = _window_text(
                    _number(1 / w.scale) if w.kind != "conv" else w.strides for w in first
                )
                dilation = _window_text(w.dilation_rate for w in first)
        rf = receptive_field(
            functional, layer=layer, input_shape=input_shape, misaligned=misaligned
        )
        size = _window_text(
            f"{min(s)}-{max(s)}" if len(set(s)) > 1 else s[0] for s in rf.sizes
        )
        table.append({
            "name": layer.name,
            "type": type(layer).__name__,
            "kernel": kernel,
            "stride": stride,
            "dilation": dilation,
            "r": size,
            "S": _window_text(rf.stride),
            "P": _window_text(rf.padding),
        })
    return table


# === The gradient probe ===


def _probe_dtype() -> str:
    """float64 where the backend has it (JAX only with x64 enabled)."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


class _ProbePoolingWithArgmax2D(MaxPoolingWithArgmax2D):
    """The probe's copy of `MaxPoolingWithArgmax2D`: each window's sum (linear, so every
    pixel of the window gets a gradient, as average pooling replaces max-pooling), and
    indices all 0 (they carry no gradient anyway)."""

    def call(self, inputs):
        windows, _, _ = _windows(inputs, self.pool_size, self.padding, 0.0)
        pooled = keras.ops.sum(windows, axis=(2, 4))
        return [pooled, keras.ops.zeros(keras.ops.shape(pooled), INDEX_DTYPE)]


class _ProbeMaxUnpooling2D(MaxUnpooling2D):
    """The probe's copy of `MaxUnpooling2D`: every value goes to every pixel of its window
    (nearest upsampling), whatever the indices say, as any of them could be the maximum."""

    def _scatter(self, pooled, indices):
        pool_rows, pool_columns = self.pool_size
        return keras.ops.repeat(
            keras.ops.repeat(pooled, pool_rows, axis=1), pool_columns, axis=2
        )


def _probe_layer(layer):
    """A copy of `layer` with no nonlinearity, computing in the probe's dtype."""
    config = layer.get_config()
    config["dtype"] = _probe_dtype()
    if isinstance(layer, keras.layers.MaxPooling2D):
        return keras.layers.AveragePooling2D.from_config(config)
    if isinstance(layer, MaxPoolingWithArgmax2D):
        return _ProbePoolingWithArgmax2D.from_config(config)
    if isinstance(layer, MaxUnpooling2D):
        return _ProbeMaxUnpooling2D.from_config(config)
    nonlinear = tuple(
        getattr(keras.layers, name)
        for name in ("ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax")
        if hasattr(keras.layers, name)
    )
    if isinstance(layer, nonlinear):
        return keras.layers.Activation("linear", name=layer.name, dtype=_probe_dtype())
    if "activation" in config:
        config["activation"] = "linear"
    return type(layer).from_config(config)


def _positive_weights(model) -> None:
    for variable in model.weights:
        shape = tuple(variable.shape)
        name = variable.path.split("/")[-1]
        if len(shape) >= 2:
            fan_in = max(int(np.prod(shape[:-1])), 1)
            value = np.full(shape, 1.0 / fan_in)
        elif name in ("bias", "beta", "moving_mean", "mean"):
            value = np.zeros(shape)
        else:
            value = np.ones(shape)
        variable.assign(value.astype(variable.dtype))


def gradient_receptive_field(model, position, input_shape=None) -> tuple:
    """Measure the receptive field of an output pixel with the gradient.

    The probe differentiates the output pixel (summed over channels) with
    respect to the input. So that no cancellation hides a dependence, it runs
    on a copy of the model with all kernels positive, biases zero,
    activations linear, max-pooling replaced by average pooling, in float64
    (float32 on JAX without x64), on an input of ones: every input pixel the
    output pixel depends on then has a strictly positive gradient.
    `MaxPoolingWithArgmax2D` becomes a sum over each window and
    `MaxUnpooling2D` copies each value to its whole window, as nearest
    upsampling does. The pooling indices are integers without a gradient, so
    the probe does not see what the output depends on through them; the
    analytic receptive field counts it (the window of the pooled value, which
    the path through the values covers in SegNet-like networks).

    Args:
        model: a functional Keras model with one input.
        position: `(row, column)` of the output pixel.
        input_shape: `(height, width, channels)`, needed when the model's
            input size is None.

    Returns:
        `(mask, box)`: `mask` a boolean NumPy array `(height, width)`, True
        where the gradient is nonzero; `box` its bounding box
        `((top, bottom), (left, right))`, ends included (None if empty).

    Example:

    >>> inputs = keras.Input((9, 9, 1))
    >>> x = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    >>> x = keras.layers.MaxPooling2D(2)(x)
    >>> mask, box = gradient_receptive_field(keras.Model(inputs, x), (1, 2))
    >>> box
    ((2, 5), (4, 7))
    >>> box == receptive_field(keras.Model(inputs, x)).interval((1, 2))
    True

    Reference:
        Luo, Li, Urtasun, Zemel, Understanding the Effective Receptive Field
        in Deep Convolutional Neural Networks, NIPS 2016 (the gradient as the
        measure); fornaxai/receptivefield (positive weights, linear probe).
        Lesson: ``03_receptive_field``.
    """
    from fcnkit._gradients import input_gradient

    position = _check_position(position)
    functional = _functional(model)
    input_hw = _input_hw(model, input_shape)
    (inp,) = functional.inputs
    shape = tuple(input_shape) if input_shape is not None else tuple(inp.shape[1:])
    if None in shape:
        raise ValueError(
            "`gradient_receptive_field` needs the input size. Received: model "
            f"input shape {tuple(inp.shape)}. Pass "
            "`input_shape=(height, width, channels)`."
        )
    del input_hw
    probe = keras.models.clone_model(
        functional,
        input_tensors=keras.Input(shape=shape, dtype=_probe_dtype()),
        clone_function=_probe_layer,
        recursive=True,
    )
    _positive_weights(probe)
    output_shape = tuple(probe.outputs[0].shape[1:])
    if position[0] >= output_shape[0] or position[1] >= output_shape[1]:
        raise ValueError(
            f"`position` must lie inside the output, of size "
            f"{output_shape[:2]}. Received: position={position}."
        )
    weights = np.zeros((1, *output_shape), dtype=_probe_dtype())
    weights[0, position[0], position[1], ...] = 1.0
    gradient = input_gradient(probe, np.ones((1, *shape), dtype=_probe_dtype()), weights)
    mask = np.abs(gradient[0]).sum(axis=-1) > 0
    rows, columns = np.nonzero(mask)
    if len(rows) == 0:
        return mask, None
    box = ((int(rows.min()), int(rows.max())), (int(columns.min()), int(columns.max())))
    return mask, box
