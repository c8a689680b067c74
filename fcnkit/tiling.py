"""Predicting on images of any size: tile-and-stitch, pad once, or resize.

A network trained on 512×512 crops meets a 1000×1000 image. Three answers,
side by side in lesson ``08_large_images``:

- `predict_resized`: resize the image to the network's size, predict, resize
  the prediction back. Simple, but every object changes scale and fine
  detail is lost.
- `predict_padded`: pad the whole image to the next size the network takes,
  predict once, crop. Exact, but memory grows with the image.
- `predict_tiled`: cut the image into tiles, predict them in batches and
  stitch the predictions into one preallocated output. Memory stays bounded
  by the batch of tiles (plus the output), and with `overlap="auto"` the
  result equals the whole-image prediction of `predict_padded`.

Why tiles can be seamless. An output pixel depends only on the input pixels
of its receptive field. If that field lies inside the tile, and the tile
sits on the same sampling grid as the whole image, the tile computes exactly
what the whole image computes there. `tile_layout` derives both from the
model:

- The grid: every layer with a stride samples its input at multiples of
  its stride, so tile origins must be multiples of the total stride S (16
  for a 4-level U-Net), and every strided layer must receive a size it
  divides (a "same" U-Net: tiles that are multiples of S).
- The margin: near a tile's border the receptive field of an output pixel
  reaches into the tile's padding (zeros of "same" convolutions, the
  tile's edge) instead of the neighbouring pixels of the image. With the
  exact receptive fields of `fcnkit.receptive_field.receptive_field`, the
  first `margin[0]` and the last `margin[1]` output pixels of a tile are
  the ones whose field does not fit in the tile: about half the receptive
  field on each side for a "same" network, none for a "valid" one.

`overlap="auto"` then makes neighbouring tiles overlap by at least the two
margins, with a step between tile origins that is a multiple of S, and keeps
from every tile only the pixels outside its margins (a tile's side that lies
on the image border keeps everything: there the whole image has the same
padding). A "valid" network (the U-Net paper's layout) needs no overlap of
its outputs at all; its input tiles overlap by the context the network
consumes, and that context is added around the image by mirroring: the
U-Net paper's overlap-tile strategy.

Models that read absolute positions (coordinate channels, `AddCoords2D`)
see the tile's coordinates, not the image's: they cannot be tiled exactly.

Lesson: ``08_large_images``.

Reference:
    Ronneberger, Fischer, Brox, U-Net: Convolutional Networks for Biomedical
    Image Segmentation, MICCAI 2015 (overlap-tile strategy, mirrored
    context). MONAI's `sliding_window_inference` (overlapping windows in
    batches, "constant" and "gaussian" blending, padding modes).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from fractions import Fraction

import keras
import numpy as np

from fcnkit._validation import (
    check_bool,
    check_non_negative_int,
    check_positive_int,
    validate_option,
)

BLENDS = ("none", "constant", "gaussian")
PAD_MODES = ("reflect", "symmetric", "constant")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")
AXES = ("rows", "columns")
# MONAI's Gaussian importance map: sigma = 0.125 * window size, clamped below at 1e-3.
SIGMA_SCALE = 0.125
MIN_WEIGHT = 1e-3
# `progress=None` shows a bar from this many batches on.
PROGRESS_BATCHES = 20


# === Argument checks ===


def _check_image(image):
    image = np.asarray(image)
    if image.ndim != 3:
        fix = (" Add a channel axis, e.g. image[..., np.newaxis]." if image.ndim == 2 else
               " Predict one image at a time (image[0] of a batch).")
        raise ValueError(
            "`image` must be a 3D array (rows, columns, channels). Received: "
            f"image.shape={image.shape}.{fix}"
        )
    if min(image.shape) < 1:
        raise ValueError(
            f"`image` must not be empty. Received: image.shape={image.shape}."
        )
    return image


def _check_pair(value, name: str, check=check_positive_int) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"`{name}` must be an int or a pair (rows, columns). Received: "
                f"{name}={value!r}."
            )
        return tuple(check(item, f"{name}[{axis}]") for axis, item in enumerate(value))
    value = check(value, name)
    return (value, value)


def _check_model(model, image):
    from fcnkit.receptive_field import _functional

    functional = _functional(model)
    (inputs,) = functional.inputs
    if len(inputs.shape) != 4:
        raise ValueError(
            "The model must take images (batch, rows, columns, channels). Received: "
            f"a model with input shape {tuple(inputs.shape)}."
        )
    channels = inputs.shape[-1]
    if image is not None and channels is not None and image.shape[-1] != channels:
        raise ValueError(
            f"The model takes {channels} channel(s), the image has {image.shape[-1]}. "
            f"Received: image.shape={image.shape}, model input shape "
            f"{tuple(inputs.shape)}. Convert the image to {channels} channel(s)."
        )
    return functional


# === The shapes a model takes ===


def _walk_sizes(model, hw, scale=(Fraction(1), Fraction(1))) -> tuple:
    """Forward shape walk: the output (rows, columns) of `model` for an input of
    size `hw`, and `(layer name, axis, stride, input size, alignment)` for every
    strided layer, nested models included, where `alignment` is the stride in
    input pixels of the model (the layer's input scale times its stride).
    Raises when a layer refuses the size."""
    from fcnkit.receptive_field import _graph, _is_model, _layer_windows

    functional, nodes = _graph(model)
    (inputs,) = functional.inputs
    shapes = {id(inputs): (None, *hw, *tuple(inputs.shape)[3:])}
    scales = {id(inputs): tuple(scale)}
    strided = []
    for node in nodes:
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        parents = node.arguments.keras_tensors
        in_shapes = [shapes.get(id(parent), tuple(parent.shape)) for parent in parents]
        in_sizes = [tuple(shape[1:3]) for shape in in_shapes]
        in_scales = [scales.get(id(parent), (Fraction(1), Fraction(1))) for parent in parents]
        if _is_model(layer):
            _, inner, out_scale = _walk_sizes(layer, in_sizes[0], in_scales[0])
            strided += inner
        else:
            candidates = []
            windows_list = _layer_windows(layer, in_sizes)
            for windows, size, in_scale in zip(windows_list, in_sizes, in_scales):
                if windows is None:
                    continue
                candidates.append(tuple(in_scale[axis] * windows[axis].scale
                                        for axis in (0, 1)))
                for axis in (0, 1):
                    if windows[axis].kind == "conv" and windows[axis].strides > 1:
                        strided.append((layer.name, axis, windows[axis].strides, size[axis],
                                        in_scale[axis] * windows[axis].strides))
            out_scale = tuple(max(c[axis] for c in candidates) if candidates
                              else Fraction(1) for axis in (0, 1))
        out = layer.compute_output_shape(in_shapes[0] if len(in_shapes) == 1 else in_shapes)
        outs = [tuple(out)] if not isinstance(out[0], (tuple, list)) else [tuple(o) for o in out]
        for tensor, shape in zip(node.outputs, outs):
            if any(n is not None and n < 1 for n in shape[1:3]):
                raise ValueError(f"layer '{layer.name}' would give an empty output {shape}")
            shapes[id(tensor)] = shape
            scales[id(tensor)] = out_scale
    output = functional.outputs[0]
    return tuple(shapes[id(output)][1:3]), strided, scales[id(output)]


@dataclasses.dataclass(frozen=True)
class _SizeCheck:
    """What a model does with an input size, per axis."""

    output: tuple  # (rows, columns) or None when the size is refused
    problems: tuple  # per axis: "" or why the size does not fit
    small: tuple  # per axis: True when the size is refused for being too small
    stride: tuple  # per axis: the total stride seen at this size (1 if unknown)

    def fits(self, axis) -> bool:
        return not self.problems[axis]


def _size_check(model, hw) -> _SizeCheck:
    try:
        output, strided, _ = _walk_sizes(model, hw)
    except Exception as error:  # a layer refuses the size: too small or mismatched
        text = str(error)
        small = "empty" in text or "zero or negative" in text
        reason = "the output of a layer would be empty" if small else (
            f"the model refuses it ({text.splitlines()[0] if text else type(error).__name__})")
        return _SizeCheck(None, (reason, reason), (small, small), (1, 1))
    problems, small, strides = ["", ""], [False, False], [1, 1]
    for name, axis, stride, size, alignment in strided:
        if size is None or size < stride:
            problems[axis] = problems[axis] or (
                f"layer '{name}' (stride {stride}) would receive {size} {AXES[axis]}")
            small[axis] = True
        elif size % stride:
            problems[axis] = problems[axis] or (
                f"layer '{name}' (stride {stride}) would receive {size} {AXES[axis]}, "
                f"not a multiple of {stride}")
        else:
            strides[axis] = math.lcm(strides[axis], alignment.numerator)
    for axis in (0, 1):
        if not problems[axis] and output[axis] is not None and output[axis] < 1:
            problems[axis] = f"the output would have {output[axis]} {AXES[axis]}"
            small[axis] = True
    return _SizeCheck(output, tuple(problems), tuple(small), tuple(strides))


def _next_fitting(model, axis, size, limit=4096):
    """The smallest size >= `size` that `model` takes whole along `axis` (square probes)."""
    for candidate in range(max(size, 1), size + limit):
        if _size_check(model, (candidate, candidate)).fits(axis):
            return candidate
    return None


def _previous_fitting(model, axis, size):
    for candidate in range(size, 0, -1):
        if _size_check(model, (candidate, candidate)).fits(axis):
            return candidate
    return None


def _total_stride(model, axis, fitting):
    """The total stride along `axis`, read at a size the model takes whole."""
    return _size_check(model, (fitting, fitting)).stride[axis]


# === Tile layout ===


@dataclasses.dataclass(frozen=True)
class TileLayout:
    """Where the tiles of `predict_tiled` go, per axis `(rows, columns)`.

    Coordinates are output pixels of the image; a tile whose output starts at
    `s` reads the input pixels `s - context[axis][0] ... s - context[axis][0]
    + tile_size[axis] - 1` of the image (mirrored or padded outside it).

    Attributes:
        image_shape: `(rows, columns)` of the image.
        tile_size: `(rows, columns)` of an input tile (shrunk to the padded
            image when the image is smaller than the requested tile).
        output_tile: `(rows, columns)` a tile's prediction has.
        context: per axis `(before, after)`, the input pixels a "valid"
            network consumes around its output (`(0, 0)` for "same").
        margin: per axis `(before, after)`, the output pixels at a tile's
            borders whose receptive field reaches beyond the tile.
        stride: per axis, the model's total stride S.
        overlap: per axis, output pixels two neighbouring tiles share.
        step: per axis, `output_tile - overlap`, the distance between origins.
        starts: per axis, the output origins of the tiles.
        padded_size: per axis, the input length the tiles cover (image plus
            context plus padding up to the last tile).
        aligned: True when every origin is a multiple of S and every
            overlap holds both margins: the stitched prediction then equals
            the whole-image prediction.
    """

    image_shape: tuple
    tile_size: tuple
    output_tile: tuple
    context: tuple
    margin: tuple
    stride: tuple
    overlap: tuple
    step: tuple
    starts: tuple
    padded_size: tuple
    aligned: bool

    @property
    def count(self) -> int:
        """The number of tiles."""
        return len(self.starts[0]) * len(self.starts[1])

    def kept(self, axis) -> list:
        """Per tile along `axis`, the output interval `(first, end)` (end
        excluded) it is trusted for: all of it, less the margins where a
        neighbour covers them (split evenly when the overlap is smaller than
        the margins). The intervals cover the image."""
        starts, size = self.starts[axis], self.output_tile[axis]
        before, after = self.margin[axis]
        limit = self.image_shape[axis]
        intervals = [[start, min(start + size, limit)] for start in starts]
        for index in range(len(starts) - 1):
            overlap = starts[index] + size - starts[index + 1]
            if overlap >= before + after:
                trim_next, trim_this = before, after
            else:
                trim_next = overlap * before // (before + after) if before + after else 0
                trim_this = overlap - trim_next
            intervals[index + 1][0] = starts[index + 1] + trim_next
            intervals[index][1] = min(intervals[index][1], starts[index] + size - trim_this)
        return [tuple(interval) for interval in intervals]

    def owned(self, axis) -> list:
        """Per tile along `axis`, the output interval `(first, end)` it alone
        fills with `blend="none"`: the kept intervals, with each overlap of
        two of them split in the middle. They partition the image."""
        kept = self.kept(axis)
        owned = [list(interval) for interval in kept]
        for index in range(len(kept) - 1):
            middle = (kept[index + 1][0] + kept[index][1]) // 2
            owned[index][1] = owned[index + 1][0] = middle
        return [tuple(interval) for interval in owned]


def _margins(rf, axis, tile, output):
    """Output pixels at each end of a tile whose receptive field leaves the tile."""
    period = len(rf.sizes[axis])
    positions = np.arange(output)
    cycles, phase = np.divmod(positions, period)
    starts = np.asarray(rf.starts[axis])[phase] + cycles * period * int(rf.stride[axis])
    ends = starts + np.asarray(rf.sizes[axis])[phase] - 1
    left = np.nonzero(starts < 0)[0]
    right = np.nonzero(ends > tile - 1)[0]
    return (int(left.max()) + 1 if left.size else 0,
            int(output - right.min()) if right.size else 0)


def _smallest_auto_tile(model, axis, size):
    """The smallest tile above `size` that keeps a total stride beyond its margins."""
    from fcnkit.receptive_field import receptive_field

    channels = _check_model(model, None).inputs[0].shape[-1]
    candidate = size
    for _ in range(256):
        candidate = _next_fitting(model, axis, candidate + 1)
        if candidate is None:
            return None
        check = _size_check(model, (candidate, candidate))
        rf = receptive_field(model, input_shape=(candidate, candidate, channels),
                             misaligned="union")
        before, after = _margins(rf, axis, candidate, check.output[axis])
        if check.output[axis] - before - after >= check.stride[axis]:
            return candidate
    return None


def _size_error(model, axis, requested, check, name="tile_size"):
    """The ValueError for a size the model does not take whole along `axis`."""
    lower = _previous_fitting(model, axis, requested - 1) if requested > 1 else None
    upper = _next_fitting(model, axis, requested + 1)
    fitting = _size_check(model, (upper, upper)) if upper else None
    stride = fitting.stride[axis] if fitting else 1
    options = " or ".join(str(n) for n in (lower, upper) if n)
    shrink = upper - fitting.output[axis] if fitting else 0
    if requested < stride and not (check.small[axis] and lower is None and shrink):
        return ValueError(
            f"`{name}` must be at least the model's total stride {stride} along the "
            f"{AXES[axis]}: its downsampling layers need whole pixels. Received: "
            f"{name}={requested}. Use {options}."
        )
    if check.small[axis] and lower is None:
        return ValueError(
            f"`{name}` must be at least {upper} along the {AXES[axis]} for this model: "
            f"its \"valid\" layers remove {shrink} pixels, and its downsampling layers "
            f"need whole pixels. Received: {name}={requested}, where "
            f"{check.problems[axis]}. Use {upper} or more."
        )
    rule = (f" (a multiple of the total stride {stride} for a \"same\" network)"
            if fitting and fitting.output[axis] == upper else "")
    return ValueError(
        f"`{name}` must be a size the model takes whole along the {AXES[axis]}: every "
        f"layer with a stride must receive a size it divides{rule}. "
        f"Received: {name}={requested}, where {check.problems[axis]}. Use {options}."
    )


def tile_layout(model, image_shape, tile_size=None, overlap="auto"):
    """Where `predict_tiled` puts its tiles, and why (see the module docstring).

    Args:
        model: a functional Keras model with one input whose output has the
            input's resolution (an effective stride of 1): a "same" or
            "valid" U-Net, FCN-8s, a stack of convolutions.
        image_shape: `(rows, columns)` or `(rows, columns, channels)`.
        tile_size: int or `(rows, columns)`, the input size of a tile; None
            uses the model's own input size when it is fixed. It must be a
            size the model takes whole (every strided layer receives a size
            it divides; for a "same" network, a multiple of the total stride).
        overlap: `"auto"`, or an int or `(rows, columns)` >= 0: output pixels
            shared by neighbouring tiles. `"auto"` takes the smallest overlap
            that holds both margins, with a step that is a multiple of the
            total stride, so that the stitched prediction equals the whole
            image's. Any other overlap is used as given (the last tile is
            moved back to end at the image's end, as in MONAI).

    Returns:
        A `TileLayout`.

    Raises:
        ValueError: for a tile the model does not take, a tile too small to
            keep anything beyond its margins with `"auto"`, an overlap that
            is not smaller than the tile's output, a model whose output does
            not have the input's resolution, or wrong ranks.

    Example:

    >>> inputs = keras.Input((None, None, 1))
    >>> x = inputs
    >>> for _ in range(3):  # receptive field 7: margins of 3
    ...     x = keras.layers.Conv2D(1, 3, padding="same")(x)
    >>> layout = tile_layout(keras.Model(inputs, x), (100, 70), tile_size=32)
    >>> layout.margin[0], layout.overlap[0], layout.starts[0]
    ((3, 3), 6, (0, 26, 52, 68))
    >>> layout.kept(0)
    [(0, 29), (29, 55), (55, 81), (71, 100)]

    Reference:
        Ronneberger et al., MICCAI 2015 (overlap-tile); MONAI
        `sliding_window_inference`. Lesson: ``08_large_images``.
    """
    from fcnkit.receptive_field import receptive_field

    functional = _check_model(model, None)
    image_shape = tuple(image_shape)
    if len(image_shape) not in (2, 3):
        raise ValueError(
            "`image_shape` must be (rows, columns) or (rows, columns, channels). "
            f"Received: image_shape={image_shape}."
        )
    image_hw = tuple(check_positive_int(n, f"image_shape[{axis}]")
                     for axis, n in enumerate(image_shape[:2]))
    fixed = tuple(functional.inputs[0].shape[1:3])
    if tile_size is None:
        if None in fixed:
            raise ValueError(
                "`tile_size` is needed: the model takes any size. Received: "
                "tile_size=None and a model with input shape "
                f"{tuple(functional.inputs[0].shape)}. Pass e.g. tile_size=256."
            )
        tile_size = fixed
    tile = _check_pair(tile_size, "tile_size")
    if any(size is not None and size != tile[axis] for axis, size in enumerate(fixed)):
        raise ValueError(
            f"The model takes only {fixed[0]}×{fixed[1]} inputs, so tiles must have that "
            f"size. Received: tile_size={tile_size}. Pass tile_size=None, or rebuild the "
            "model with the input shape (None, None, channels) and copy its weights."
        )
    automatic = isinstance(overlap, str)
    if automatic:
        validate_option(overlap, "overlap", ("auto",))
    else:
        overlap = _check_pair(overlap, "overlap", check_non_negative_int)

    check = _size_check(functional, tile)
    for axis in (0, 1):
        if not check.fits(axis):
            raise _size_error(functional, axis, tile[axis], check)
    stride = check.stride
    shrink = tuple(tile[axis] - check.output[axis] for axis in (0, 1))
    context = tuple((n // 2, n - n // 2) for n in shrink)
    # A tile larger than the (padded) image shrinks to the smallest size that covers it.
    tile = list(tile)
    for axis in (0, 1):
        needed = image_hw[axis] + shrink[axis]
        if needed <= tile[axis] and fixed[axis] is None:
            size = tile[axis] - (tile[axis] - needed) // stride[axis] * stride[axis]
            if _size_check(functional, (size, size)).fits(axis):
                tile[axis] = size
    tile = tuple(tile)
    output_tile = tuple(tile[axis] - shrink[axis] for axis in (0, 1))
    input_shape = (*tile, functional.inputs[0].shape[-1])
    rf = receptive_field(functional, input_shape=input_shape, misaligned="union")
    if any(rf.stride[axis] != 1 for axis in (0, 1)):
        raise ValueError(
            "Tiled prediction needs a model whose output has the resolution of its "
            f"input (an effective stride of 1). Received: a model with effective stride "
            f"{tuple(str(s) for s in rf.stride)}. Upsample its output to the input's "
            "resolution (e.g. keras.layers.UpSampling2D)."
        )
    margin = tuple(_margins(rf, axis, tile[axis], output_tile[axis]) for axis in (0, 1))

    steps, overlaps = [], []
    for axis in (0, 1):
        size = output_tile[axis]
        if automatic:
            kept = size - sum(margin[axis])
            step = kept // stride[axis] * stride[axis]
            if step < stride[axis] and image_hw[axis] > size:
                raise ValueError(
                    f"`tile_size` {tile[axis]} is too small for overlap=\"auto\" along "
                    f"the {AXES[axis]}: its output of {size} pixels less the margins "
                    f"{margin[axis]} where the receptive field ({rf.size[axis]} pixels) "
                    f"leaves the tile keeps {max(kept, 0)}, fewer than the total stride "
                    f"{stride[axis]}. "
                    f"Received: tile_size={tile_size}. Use tile_size="
                    f"{_smallest_auto_tile(functional, axis, tile[axis])} or more."
                )
            step = max(step, stride[axis])
            overlaps.append(size - step)
        else:
            if overlap[axis] >= size:
                raise ValueError(
                    f"`overlap` must be smaller than the tile along the {AXES[axis]}: "
                    f"its output has {size} pixels (tile {tile[axis]}). Received: "
                    f"overlap={overlap[axis]}. Use an overlap below {size}, or "
                    "overlap=\"auto\"."
                )
            step = size - overlap[axis]
            overlaps.append(overlap[axis])
        steps.append(step)

    starts, padded = [], []
    for axis in (0, 1):
        size, step, count = output_tile[axis], steps[axis], image_hw[axis]
        # The last origin is a multiple of S, so that the image padded to it keeps
        # the grid of the whole image.
        last = max(-(-(count - size) // stride[axis]) * stride[axis], 0)
        origins = list(range(0, last, step)) + [last]
        starts.append(tuple(origins))
        padded.append(last + tile[axis])
    aligned = all(
        all(start % stride[axis] == 0 for start in starts[axis])
        and all(later - earlier <= output_tile[axis] - sum(margin[axis])
                for earlier, later in zip(starts[axis], starts[axis][1:]))
        for axis in (0, 1)
    )
    return TileLayout(image_hw, tile, output_tile, context, margin, stride,
                      tuple(overlaps), tuple(steps), tuple(starts), tuple(padded), aligned)


# === Blending weights ===


def gaussian_window(size, sigma_scale=SIGMA_SCALE):
    """MONAI's 1-D Gaussian importance weights: exp(-x²/2σ²), σ = sigma_scale · size.

    `x` runs over the pixel centres `-(size-1)/2 ... (size-1)/2`; the centre
    weighs 1 (for an odd size) and the weights are not normalised.

    Example:

    >>> gaussian_window(5).round(5).tolist()
    [0.00598, 0.27804, 1.0, 0.27804, 0.00598]
    """
    size = check_positive_int(size, "size")
    x = np.arange(size, dtype="float64") - (size - 1) / 2
    sigma = sigma_scale * size
    return np.exp(-(x**2) / (2 * sigma**2))


def blend_weights(tile_shape, blend="gaussian"):
    """The weight of each output pixel of a tile when tiles are averaged.

    `"constant"`: all ones (a plain average). `"gaussian"`: the outer product
    of two `gaussian_window`s, clamped below at 1e-3 as in MONAI, so pixels
    near a tile's centre count more than those near its border. `"none"`
    (no averaging) has no weights: each pixel comes from one tile.

    Args:
        tile_shape: `(rows, columns)` of a tile's output.
        blend: `"constant"` or `"gaussian"`.

    Returns:
        A float32 array of `tile_shape`.

    Example:

    >>> float(blend_weights((3, 4), "constant").sum())
    12.0
    >>> float(blend_weights((8, 8), "gaussian").min())
    0.001
    """
    blend = validate_option(blend, "blend", BLENDS[1:])
    rows, columns = _check_pair(tuple(tile_shape), "tile_shape")
    if blend == "constant":
        return np.ones((rows, columns), dtype="float32")
    weights = np.outer(gaussian_window(rows), gaussian_window(columns))
    return np.maximum(weights, MIN_WEIGHT).astype("float32")


# === Reading tiles ===


def _source_indices(first, count, size, pad_mode):
    """Indices into an axis of `size` for positions `first ... first + count - 1`
    outside it mirrored as `numpy.pad` does; with "constant", -1 outside."""
    positions = np.arange(first, first + count)
    if pad_mode == "constant":
        return np.where((positions >= 0) & (positions < size), positions, -1)
    if pad_mode == "reflect":
        if size == 1:
            return np.zeros_like(positions)
        period = 2 * (size - 1)
        positions = np.abs(positions) % period
        return np.where(positions >= size, period - positions, positions)
    period = 2 * size  # symmetric: the edge pixel repeats
    positions = positions % period
    return np.where(positions >= size, period - 1 - positions, positions)


def _read(image, rows, columns):
    """`image` at index arrays `rows`, `columns` (-1: zero)."""
    tile = image[np.ix_(np.maximum(rows, 0), np.maximum(columns, 0))]
    if (rows < 0).any() or (columns < 0).any():
        tile = tile.copy()
        tile[rows < 0] = 0
        tile[:, columns < 0] = 0
    return tile


def _pad_to(image, before, total, pad_mode):
    """`image` placed at `before` in an array of `total` (rows, columns), padded."""
    rows = _source_indices(-before[0], total[0], image.shape[0], pad_mode)
    columns = _source_indices(-before[1], total[1], image.shape[1], pad_mode)
    return _read(image, rows, columns)


_TRACED = weakref.WeakKeyDictionary()  # model -> (predict function, batch shape)


def _prepare_predict_function(model, shape):
    """A predict function traced for `shape` first (reused while it is the model's)."""
    function = getattr(model, "predict_function", None)
    if function is None or _TRACED.get(model) != (id(function), shape):
        function = model.make_predict_function(force=True)
        _TRACED[model] = (id(model.predict_function), shape)


def _predict_batch(model, batch, batch_size=None):
    """Predictions for `batch`: a direct call, or with `batch_size` the model's compiled
    predict function on the batch padded to `batch_size` tiles, so that every call has
    the shape of the first (the function was reset and traced for that shape only:
    traced again for unknown sizes, some layers, bilinear UpSampling2D, fail)."""
    if batch_size is None:
        return np.asarray(keras.ops.convert_to_numpy(model(batch, training=False)))
    count = len(batch)
    if count < batch_size:
        filler = np.zeros((batch_size - count, *batch.shape[1:]), dtype=batch.dtype)
        batch = np.concatenate([batch, filler])
    return np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(batch)))[:count]


# === Public API ===


def predict_tiled(model, image, tile_size=None, overlap="auto", blend="none",
                  pad_mode="reflect", batch_size=4, progress=None):
    """Predict an image of any size tile by tile, stitched into one output.

    The tiles (laid out by `tile_layout`) are read from the image (mirrored
    or zero-padded beyond it), predicted `batch_size` at a time, and written
    into one preallocated output: memory grows with the output, never with
    the number of tiles. Each tile contributes only where it is trusted
    (`TileLayout.kept`). How overlapping contributions combine:

    - `"none"`: each pixel comes from one tile; overlaps are split in the
      middle (the U-Net paper's overlap-tile).
    - `"constant"`: the average of the tiles that cover the pixel (MONAI's
      default).
    - `"gaussian"`: a weighted average, each tile's weights a Gaussian
      centred on it (σ = tile / 8, MONAI's), so tile borders count less.

    With `overlap="auto"` every tile computes exactly what the whole image
    computes where it is kept, so all three give the whole-image prediction
    of `predict_padded` (up to float round-off). With a smaller overlap the
    seams show. Blending acts only where the kept parts of two tiles
    overlap, that is where the overlap exceeds the two margins (the output
    pixels whose receptive field leaves the tile, `TileLayout.margin`):
    below that, the kept parts abut and the three blends give the same
    result, unlike MONAI, which blends whole tiles, margins included.

    Args:
        model: a Keras model whose output has the input's resolution ("same"
            or "valid" padding; see `tile_layout`).
        image: array `(rows, columns, channels)` of any size; the channels
            must be the model's.
        tile_size: int or `(rows, columns)`, the input size of one tile; None
            takes the model's fixed input size. A tile larger than the image
            shrinks to it.
        overlap: `"auto"` (whole-image result) or output pixels >= 0 shared by
            neighbouring tiles (an int or a pair).
        blend: `"none"`, `"constant"` or `"gaussian"`.
        pad_mode: how the image continues beyond its border, for the context
            of a "valid" network and the padding up to whole tiles:
            `"reflect"` (mirror without repeating the edge pixel, as
            `numpy.pad`), `"symmetric"` (mirror repeating it) or `"constant"`
            (zeros).
        batch_size: int, tiles per prediction batch.
        progress: None (a `keras.utils.Progbar` when there are more than 20
            batches), True or False.

    Returns:
        A float32 array `(rows, columns, output_channels)`.

    Raises:
        ValueError: for an image that is not 3D or whose channels differ from
            the model's, an unknown `blend` or `pad_mode`, and the bad tiles
            and overlaps of `tile_layout`.
        TypeError: for counts that are not integers.

    Example:

    >>> from fcnkit.models import unet
    >>> model = unet((None, None, 1), num_classes=1, depth=2, filters=4)
    >>> image = np.random.default_rng(0).random((150, 70, 1)).astype("float32")
    >>> tiled = predict_tiled(model, image, tile_size=64)
    >>> tiled.shape
    (150, 70, 1)
    >>> tile_layout(model, image.shape, tile_size=64).starts  # margins 22: step 20
    ((0, 20, 40, 60, 80, 88), (0, 8))
    >>> bool(np.abs(tiled - predict_padded(model, image)).max() < 1e-5)
    True

    Reference:
        Ronneberger, Fischer, Brox, MICCAI 2015 (overlap-tile with mirrored
        context); MONAI `sliding_window_inference` (batches of windows,
        constant and Gaussian blending). Lesson: ``08_large_images``.
    """
    image = _check_image(image)
    functional = _check_model(model, image)
    blend = validate_option(blend, "blend", BLENDS)
    pad_mode = validate_option(pad_mode, "pad_mode", PAD_MODES)
    batch_size = check_positive_int(batch_size, "batch_size")
    if progress is not None:
        progress = check_bool(progress, "progress")
    layout = tile_layout(functional, image.shape, tile_size, overlap)
    kept = [layout.kept(axis) for axis in (0, 1)]
    owned = [layout.owned(axis) for axis in (0, 1)]
    weights = None
    if blend != "none":
        weights = blend_weights(layout.output_tile, blend)
    tiles = [(row, column) for row in range(len(layout.starts[0]))
             for column in range(len(layout.starts[1]))]
    batches = -(-len(tiles) // batch_size)
    if progress is None:
        progress = batches > PROGRESS_BATCHES
    bar = keras.utils.Progbar(len(tiles), unit_name="tile") if progress else None
    # Many batches: the compiled predict function, traced once for this tile shape
    # (three times faster than direct calls on a CPU, and flat in memory).
    compiled = batches > 2
    if compiled:
        _prepare_predict_function(functional, (batch_size, *layout.tile_size,
                                               image.shape[-1]))
    dtype = functional.inputs[0].dtype or "float32"
    indices = [
        [_source_indices(start - layout.context[axis][0], layout.tile_size[axis],
                         image.shape[axis], pad_mode) for start in layout.starts[axis]]
        for axis in (0, 1)
    ]
    output = total = None
    height, width = layout.image_shape
    for first in range(0, len(tiles), batch_size):
        chosen = tiles[first:first + batch_size]
        batch = np.stack([_read(image, indices[0][row], indices[1][column])
                          for row, column in chosen]).astype(dtype, copy=False)
        predictions = _predict_batch(functional, batch, batch_size if compiled else None)
        if output is None:
            output = np.zeros((height, width, predictions.shape[-1]), dtype="float32")
            if weights is not None:
                total = np.zeros((height, width), dtype="float32")
        for prediction, (row, column) in zip(predictions, chosen):
            origin = (layout.starts[0][row], layout.starts[1][column])
            if weights is None:
                (top, bottom), (left, right) = owned[0][row], owned[1][column]
            else:
                (top, bottom), (left, right) = kept[0][row], kept[1][column]
            if bottom <= top or right <= left:
                continue
            inside = (slice(top - origin[0], bottom - origin[0]),
                      slice(left - origin[1], right - origin[1]))
            if weights is None:
                output[top:bottom, left:right] = prediction[inside]
            else:
                weight = weights[inside]
                output[top:bottom, left:right] += weight[..., np.newaxis] * prediction[inside]
                total[top:bottom, left:right] += weight
        if bar is not None:
            bar.add(len(chosen))
    if total is not None:
        output /= total[..., np.newaxis]
    return output


def padded_size(model, image_shape):
    """The input size `predict_padded` gives the model for an image.

    The image plus the context a "valid" network consumes, rounded up to the
    next size the model takes whole (for a "same" U-Net of depth d, the next
    multiple of 2**d).

    Args:
        model: a Keras model whose output has the input's resolution.
        image_shape: `(rows, columns)` or `(rows, columns, channels)`.

    Returns:
        `((rows, columns), context)`: the padded input size and, per axis,
        the `(before, after)` pixels of context around the image.

    Example:

    >>> from fcnkit.models import unet
    >>> padded_size(unet((None, None, 1), depth=4, filters=2), (1000, 1000, 1))
    ((1008, 1008), ((0, 0), (0, 0)))
    >>> padded_size(unet((None, None, 1), depth=4, filters=2, padding="valid"), (1000, 600))
    ((1196, 796), ((92, 92), (92, 92)))
    """
    functional = _check_model(model, None)
    image_hw = tuple(check_positive_int(n, f"image_shape[{axis}]")
                     for axis, n in enumerate(tuple(image_shape)[:2]))
    sizes, contexts = [], []
    for axis in (0, 1):
        fitting = _next_fitting(functional, axis, image_hw[axis])
        if fitting is None:
            raise ValueError(
                f"No input size from {image_hw[axis]} to {image_hw[axis] + 4095} "
                f"{AXES[axis]} fits the model. Received: image_shape={tuple(image_shape)}."
            )
        check = _size_check(functional, (fitting, fitting))
        shrink = fitting - check.output[axis]
        stride = check.stride[axis]
        needed = image_hw[axis] + shrink
        size = fitting + max(-(-(needed - fitting) // stride), 0) * stride
        if not _size_check(functional, (size, size)).fits(axis):
            size = _next_fitting(functional, axis, needed)
        sizes.append(size)
        contexts.append((shrink // 2, shrink - shrink // 2))
    return tuple(sizes), tuple(contexts)


def predict_padded(model, image, pad_mode="reflect"):
    """Pad the image to the next size the model takes, predict once, crop.

    The whole-image prediction: a "valid" network gets its context around the
    image by mirroring (`pad_mode`), and every network gets padding after
    the image (below and to the right) up to the next size it takes whole
    (`padded_size`). Memory grows with the padded image.

    Args:
        model: a Keras model whose output has the input's resolution.
        image: array `(rows, columns, channels)`.
        pad_mode: `"reflect"`, `"symmetric"` or `"constant"` (see
            `predict_tiled`).

    Returns:
        A float32 array `(rows, columns, output_channels)`.

    Example:

    >>> from fcnkit.models import unet
    >>> model = unet((None, None, 1), num_classes=3, depth=3, filters=2)
    >>> predict_padded(model, np.zeros((45, 61, 1))).shape
    (45, 61, 3)

    Reference:
        Ronneberger et al., MICCAI 2015 (mirrored context). Lesson:
        ``08_large_images``.
    """
    image = _check_image(image)
    functional = _check_model(model, image)
    pad_mode = validate_option(pad_mode, "pad_mode", PAD_MODES)
    size, context = padded_size(functional, image.shape)
    fixed = tuple(functional.inputs[0].shape[1:3])
    if any(n is not None and n != size[axis] for axis, n in enumerate(fixed)):
        raise ValueError(
            f"The model takes only {fixed[0]}×{fixed[1]} inputs; this image needs "
            f"{size[0]}×{size[1]}. Received: image.shape={image.shape}. Rebuild the model "
            "with the input shape (None, None, channels) and copy its weights, or use "
            "predict_tiled."
        )
    padded = _pad_to(image, (context[0][0], context[1][0]), size, pad_mode)
    dtype = functional.inputs[0].dtype or "float32"
    prediction = _predict_batch(functional, padded[np.newaxis].astype(dtype, copy=False))[0]
    return prediction[:image.shape[0], :image.shape[1]].astype("float32", copy=False)


def predict_resized(model, image, size, interpolation="bilinear"):
    """Resize the image to `size`, predict, resize the prediction back.

    The naive answer to "my network was trained on 512×512": squeeze the
    image to that size. Objects change scale (the network has learnt one),
    and the prediction is interpolated back, so thin structures blur. Both
    resizes use `keras.ops.image.resize` with `interpolation` (antialiased
    when shrinking); threshold or argmax the returned scores afterwards,
    never interpolate labels. The resized image is predicted with
    `predict_padded`, so any `size` works.

    Args:
        model: a Keras model whose output has the input's resolution.
        image: array `(rows, columns, channels)`.
        size: int or `(rows, columns)`, the size the network sees.
        interpolation: `"bilinear"` (default), `"nearest"`, `"bicubic"` or
            `"area"`.

    Returns:
        A float32 array `(rows, columns, output_channels)`.

    Example:

    >>> from fcnkit.models import unet
    >>> model = unet((None, None, 1), num_classes=1, depth=2, filters=2)
    >>> predict_resized(model, np.zeros((100, 60, 1)), 32).shape
    (100, 60, 1)

    Reference:
        Lesson: ``08_large_images`` (resize vs tile vs pad).
    """
    image = _check_image(image)
    functional = _check_model(model, image)
    size = _check_pair(size, "size")
    interpolation = validate_option(interpolation, "interpolation", INTERPOLATIONS)

    def resize(array, shape):
        resized = keras.ops.image.resize(
            keras.ops.convert_to_tensor(array.astype("float32", copy=False)), shape,
            interpolation=interpolation, antialias=interpolation != "nearest",
            data_format="channels_last")
        return np.asarray(keras.ops.convert_to_numpy(resized))

    small = resize(image, size)
    prediction = predict_padded(functional, small)
    return resize(prediction, image.shape[:2]).astype("float32", copy=False)
