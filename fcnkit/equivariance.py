"""Translation (shift) equivariance, measured: per operator, per shift, away from borders.

An operator F is translation equivariant when F(T(x)) = T'(F(x)) for every
translation T, where T' is the same translation seen at the output's scale:
an operator of stride s maps an input shift of s·t to an output shift of t,
an upsampling by u maps t to u·t. The lecture's table says which layers are
equivariant; `equivariance_table` measures it, and shows the rule behind it:
a network is exactly equivariant for shifts that are multiples of its total
stride, and only for those. Images are bounded, so the property holds only
"far enough" from the borders: `shift_equivariance_error` compares the
pixels whose receptive field avoids the border and the shifted-in band
(`"interior"`, the default) or, with circular shifts, every pixel
(`"circular"`, which shows the border effects), and `border_effect_width`
measures how far the padding reaches into the output.

Reference:
    Zhang, Making Convolutional Networks Shift-Invariant Again, ICML 2019;
    Azulay and Weiss, Why do deep convolutional networks generalize so poorly
    to small image transformations?, JMLR 2019.
    Lesson: ``05_translation_equivariance``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from fractions import Fraction

import keras
import numpy as np

from fcnkit._validation import check_non_negative_int, check_positive_float, validate_option

COMPARISONS = ("interior", "circular")


@dataclasses.dataclass(frozen=True, eq=False)
class EquivarianceError:
    """How far F(T(x)) is from T'(F(x)) for one shift.

    Attributes:
        error: Python float, the mean absolute difference over the compared
            pixels (and the batch and the channels).
        relative: Python float, the L2 norm of the difference over the
            compared pixels divided by that of T'(F(x)) there.
        map: float64 array `(rows, columns)` of the output: the mean absolute
            difference per pixel (over the batch and the channels), NaN where
            T'(F(x)) is not defined (pixels shifted in from outside).
        mask: bool array of the map's shape, True for the compared pixels.
        shift: `(rows, columns)`, the input shift.
        output_shift: `(rows, columns)`, the output shift compared with. When
            `shift * scale` is not an integer (a shift that is not a multiple
            of the stride), the closer of the two neighbouring integers per
            axis, the one with the smaller error.
        scale: `(rows, columns)`, output pixels per input pixel (a
            `fractions.Fraction`; `1/s` after a stride `s`, `u` after an
            upsampling by `u`).
        comparison: `"interior"` or `"circular"`.
    """

    error: float
    relative: float
    map: np.ndarray
    mask: np.ndarray
    shift: tuple
    output_shift: tuple
    scale: tuple
    comparison: str

    @property
    def exact(self) -> bool:
        """True when the relative error is at float32 round-off (below 1e-5)."""
        return self.relative < 1e-5


def _as_batch(x) -> np.ndarray:
    x = np.asarray(x, dtype="float32")
    if x.ndim == 3:
        x = x[np.newaxis]
    if x.ndim != 4:
        raise ValueError(
            "`x` must be an image (rows, columns, channels) or a batch (n, rows, "
            f"columns, channels). Received: an array of shape {x.shape}. Add the "
            "channel axis of a grey image with x[..., np.newaxis]."
        )
    return x


def _as_shift(shift) -> tuple:
    if isinstance(shift, (int, np.integer)) and not isinstance(shift, bool):
        return (int(shift), int(shift))
    if (isinstance(shift, (tuple, list)) and len(shift) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                    for v in shift)):
        return tuple(int(v) for v in shift)
    raise TypeError(
        "`shift` must be an int (the same shift along rows and columns) or a pair "
        f"of ints (rows, columns), in input pixels. Received: shift={shift!r}."
    )


def _as_model(fn, x):
    """A Keras model for a layer; the model itself; None for another callable."""
    if isinstance(fn, keras.Model):
        return fn
    if isinstance(fn, keras.layers.Layer):
        inputs = keras.Input(x.shape[1:])
        return keras.Model(inputs, fn(inputs))
    return None


def _output(fn, x) -> np.ndarray:
    y = keras.ops.convert_to_numpy(fn(x))
    if y.ndim != 4:
        raise ValueError(
            "`fn` must return a batch of images (n, rows, columns, channels). "
            f"Received: an output of shape {y.shape}. For a layer with several "
            "outputs, pass a function returning one, e.g. lambda x: layer(x)[0]."
        )
    return y.astype("float64")


def _field(model, x):
    """The receptive field of a Keras model on `x` (exact union for misaligned paths)."""
    if model is None:
        return None
    from fcnkit.receptive_field import receptive_field

    return receptive_field(model, input_shape=x.shape[1:], misaligned="union")


def _scales(rf, x, y, scale):
    if scale is not None:
        scale = scale if isinstance(scale, (tuple, list)) else (scale, scale)
        return tuple(Fraction(value).limit_denominator(1024) for value in scale)
    if rf is not None:
        return tuple(1 / Fraction(stride) for stride in rf.stride)
    return tuple(Fraction(y.shape[axis], x.shape[axis]).limit_denominator(64)
                 for axis in (1, 2))


def _interior(rf, x, y_shape, scale, shift, margin):
    """Per axis: which output indices of F(T x) and of F(x) see only real pixels.

    Returns two lists of boolean vectors: `shifted_ok[axis][p]` (the receptive
    field of p in F(T x) avoids the borders and the wrapped-in band) and
    `plain_ok[axis][q]` (that of q in F(x) avoids the borders).
    """
    shifted_ok, plain_ok = [], []
    for axis in (0, 1):
        size, count, step = x.shape[axis + 1], y_shape[axis + 1], shift[axis]
        positions = np.arange(count)
        if rf is not None:
            bounds = np.array([rf.interval((p, 0) if axis == 0 else (0, p))[axis]
                               for p in positions])
            first, last = bounds[:, 0], bounds[:, 1]
        else:
            centre = np.floor(positions / float(scale[axis])).astype(int)
            first, last = centre - margin, centre + margin
        inside = (first >= 0) & (last < size)
        band = (0, step) if step >= 0 else (size + step, size)  # wrapped-in rows
        avoids_band = (last < band[0]) | (first >= band[1])
        shifted_ok.append(inside & avoids_band)
        plain_ok.append(inside)
    return shifted_ok, plain_ok


def _translated(y, shift):
    """y moved by `shift` pixels (rows, columns), NaN where nothing moved in."""
    moved = np.full_like(y, np.nan)
    target, source = [], []
    for n, t in zip(y.shape[1:3], shift):
        t = max(-n, min(n, t))
        target.append(slice(max(t, 0), n + min(t, 0)))
        source.append(slice(max(-t, 0), n - max(t, 0)))
    moved[:, target[0], target[1]] = y[:, source[0], source[1]]
    return moved


def _translated_vector(flags, shift):
    """A boolean vector moved by `shift`, False where nothing moved in."""
    moved = np.zeros_like(flags)
    n = len(flags)
    if abs(shift) < n:
        if shift >= 0:
            moved[shift:] = flags[:n - shift]
        else:
            moved[:n + shift] = flags[-shift:]
    return moved


def shift_equivariance_error(fn, x, shift, comparison="interior", scale=None, margin=None):
    """Compares F(T(x)) with T'(F(x)) for one translation T of the input.

    T shifts `x` by `shift` input pixels (down and right for positive
    values) circularly; T' shifts F(x) by `shift * scale` output pixels. With
    `comparison="interior"` (the default) only output pixels are compared
    whose receptive field lies inside the image in both F(T(x)) and F(x) and
    avoids the band that the circular shift wrapped in: there, an operator
    that is equivariant gives equal values up to round-off, whatever its
    padding. With `"circular"` every pixel is compared with T' circular too:
    the differences then show the border effects of the padding. A model with
    misaligned paths (`receptive_field`'s term) is compared on the exact union
    of their receptive fields.

    Args:
        fn: a Keras model or layer with one image input and one image output,
            or any callable mapping a batch (n, rows, columns, channels) to a
            batch of images.
        x: image `(rows, columns, channels)` or batch `(n, rows, columns,
            channels)`.
        shift: int (the same along rows and columns) or `(rows, columns)`, in
            input pixels; negative values shift up or left.
        comparison: `"interior"` or `"circular"`. Defaults to `"interior"`.
        scale: output pixels per input pixel, a number or a pair (e.g. 0.5
            after a stride 2). Defaults to the receptive field's effective
            stride for Keras models and layers, else the ratio of the output
            and input sizes.
        margin: int, for a callable that is not a Keras model or layer with
            `comparison="interior"`: the receptive field's half-width in input
            pixels. Ignored for Keras models and layers (computed exactly).

    Returns:
        An `EquivarianceError`.

    Raises:
        TypeError, ValueError: for a bad shape, shift, option or output; a
            plain callable without `margin` in an interior comparison; an
            image too small to leave a compared pixel.

    Example:

    >>> image = np.random.default_rng(0).random((24, 24, 1))
    >>> conv = keras.layers.Conv2D(2, 3, padding="same")
    >>> shift_equivariance_error(conv, image, 1).exact
    True
    >>> pool = keras.layers.MaxPooling2D(2)
    >>> [shift_equivariance_error(pool, image, shift).exact for shift in (2, 1)]
    [True, False]

    Reference:
        Zhang, ICML 2019 (circular shifts). Lesson: ``05_translation_equivariance``.
    """
    comparison = validate_option(comparison, "comparison", COMPARISONS)
    x = _as_batch(x)
    shift = _as_shift(shift)
    model = _as_model(fn, x)
    call = model if model is not None else fn
    y = _output(call, x)
    y_shifted = _output(call, np.roll(x, shift, axis=(1, 2)))
    if y_shifted.shape != y.shape:
        raise ValueError(
            "`fn` must give outputs of one shape for inputs of one shape. Received: "
            f"{y.shape} for x and {y_shifted.shape} for the shifted x."
        )
    rf = _field(model, x)
    scale = _scales(rf, x, y, scale)
    if comparison == "interior":
        if model is None:
            if margin is None:
                raise ValueError(
                    "An interior comparison needs the receptive field of `fn`, which "
                    "is computed for Keras models and layers only. Received: fn of "
                    f"type {type(fn).__name__} and margin=None. Pass margin=<half-width "
                    "of its receptive field, in input pixels>, or comparison=\"circular\"."
                )
            margin = check_non_negative_int(margin, "margin")
        shifted_ok, plain_ok = _interior(rf, x, y.shape, scale, shift, margin)
    candidates = []
    for axis in (0, 1):
        exact = Fraction(shift[axis]) * scale[axis]
        candidates.append(sorted({math.floor(exact), math.ceil(exact)}))
    best = None
    for output_shift in itertools.product(*candidates):
        if comparison == "circular":
            reference = np.roll(y, output_shift, axis=(1, 2))
            mask = np.ones(y.shape[1:3], dtype=bool)
        else:
            reference = _translated(y, output_shift)
            ok = [shifted & _translated_vector(plain, t)
                  for shifted, plain, t in zip(shifted_ok, plain_ok, output_shift)]
            mask = np.outer(ok[0], ok[1])
        if not mask.any():
            raise ValueError(
                "No output pixel has a receptive field inside the image in both "
                "F(T(x)) and F(x), away from the shifted-in band, so there is nothing "
                f"to compare. Received: x of shape {x.shape[1:3]}, shift={shift}. "
                "Use a larger image or a smaller shift, or comparison=\"circular\"."
            )
        difference = np.abs(y_shifted - reference).mean(axis=(0, 3))
        error = float(difference[mask].mean())
        if best is None or error < best[0]:
            compared_reference = reference[:, mask]
            relative = math.sqrt(float(((y_shifted[:, mask] - compared_reference) ** 2).sum()))
            relative /= max(math.sqrt(float((compared_reference**2).sum())), 1e-30)
            best = (error, relative, difference, mask, output_shift)
    error, relative, difference, mask, output_shift = best
    difference.setflags(write=False)
    mask = mask.copy()
    mask.setflags(write=False)
    return EquivarianceError(
        error=error, relative=float(relative), map=difference, mask=mask, shift=shift,
        output_shift=tuple(int(t) for t in output_shift), scale=scale,
        comparison=comparison,
    )


def border_effect_width(fn, x, tolerance=1e-5):
    """How far the padding reaches into the output, in output pixels, per axis.

    F(x) is compared with the same pixels of F applied to `x` extended on
    every side by reflection (a stand-in for the image's true surroundings):
    where the two differ, the output depends on the padding. The width along
    the rows is read on the central column, and the width along the columns
    on the central row, as the largest distance to the nearer border of an
    output pixel that differs (by more than `tolerance` times the output's
    largest absolute value), plus one. Only output pixels whose receptive
    field reaches past the border can differ, so the width is at most the
    effective padding P (for n stacked "same" 3x3 convolutions n = (r - 1) /
    2, r being the receptive field; for a U-Net, whose field is not centred
    on its pixel, P itself). It can be a pixel or so less in a deep network,
    where the outermost pixels depend on the padding too weakly to pass the
    tolerance. "Valid" networks have no padding and give 0. Equivariance holds, up to the shifted-in
    band, outside this band only.

    Args:
        fn: a Keras model or layer, or a callable on image batches.
        x: image `(rows, columns, channels)` or batch.
        tolerance: float > 0, relative to the largest output value.
            Defaults to `1e-5`.

    Returns:
        `(rows, columns)`, ints.

    Example:

    >>> inputs = keras.Input((None, None, 1))
    >>> x = inputs
    >>> for _ in range(3):
    ...     x = keras.layers.Conv2D(2, 3, padding="same")(x)
    >>> image = np.random.default_rng(0).random((32, 32, 1))
    >>> border_effect_width(keras.Model(inputs, x), image)
    (3, 3)

    Reference:
        Lesson: ``05_translation_equivariance``.
    """
    tolerance = check_positive_float(tolerance, "tolerance")
    x = _as_batch(x)
    model = _as_model(fn, x)
    call = model if model is not None else fn
    y = _output(call, x)
    scale = _scales(_field(model, x), x, y, None)
    period = math.lcm(*(value.denominator for value in scale))
    margin = math.ceil(max(x.shape[1:3]) / period) * period
    extended = np.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)), mode="reflect")
    y_extended = _output(call, extended)
    offsets = [int(margin * value) for value in scale]
    surrounded = y_extended[:, offsets[0]:offsets[0] + y.shape[1],
                            offsets[1]:offsets[1] + y.shape[2]]
    level = tolerance * max(float(np.abs(y_extended).max()), 1e-30)
    differs = (np.abs(y - surrounded) > level).any(axis=(0, 3))
    widths = []
    for profile in (differs[:, differs.shape[1] // 2], differs[differs.shape[0] // 2, :]):
        indices = np.flatnonzero(profile)
        distances = np.minimum(indices, len(profile) - 1 - indices)
        widths.append(int(distances.max()) + 1 if len(indices) else 0)
    return tuple(widths)


# ------------------------------------------------------------- the lecture's table


def _seeded(model, seed):
    """The model with every weight re-drawn from its initialiser, seeded."""
    from fcnkit.erf import _draw_function

    trainable, non_trainable = _draw_function(model)(seed)
    for variable, value in zip(model.trainable_variables + model.non_trainable_variables,
                               trainable + non_trainable):
        variable.assign(value)
    return model


def table_operators(channels=1):
    """The operators of `equivariance_table`: (name, lecture's answer, builder).

    The lecture's four (convolution with stride 1, max-pooling with stride
    above 1, transposed convolution, upsampling), then a strided convolution,
    Zhang's anti-aliased max-pooling (max-pooling of stride 1, then
    `BlurPool2D`) and a 4-level U-Net. Each builder takes no argument and
    returns a Keras model on `(None, None, channels)` inputs.
    """
    from fcnkit.layers import BlurPool2D
    from fcnkit.models import unet

    def wrap(*stack):
        inputs = keras.Input((None, None, channels))
        x = inputs
        for layer in stack:
            x = layer(x)
        return keras.Model(inputs, x)

    layers = keras.layers
    return [
        ("convolution 3×3, stride 1", "yes", lambda: wrap(layers.Conv2D(4, 3, padding="same"))),
        ("max-pooling 2×2, stride 2", "no", lambda: wrap(layers.MaxPooling2D(2))),
        ("transposed convolution 2×2, stride 2", "yes",
         lambda: wrap(layers.Conv2DTranspose(4, 2, strides=2))),
        ("upsampling ×2 (nearest)", "yes", lambda: wrap(layers.UpSampling2D(2))),
        ("convolution 3×3, stride 2", "", lambda: wrap(layers.Conv2D(4, 3, strides=2,
                                                                     padding="same"))),
        ("max-pooling stride 1 + BlurPool stride 2", "",
         lambda: wrap(layers.MaxPooling2D(2, strides=1, padding="same"), BlurPool2D(4))),
        ("U-Net, 4 levels", "", lambda: unet((None, None, channels), num_classes=1, depth=4,
                                             filters=4, output_activation=None)),
    ]


def total_stride(model, input_shape=None) -> int:
    """The total stride S of a model: the largest downsampling anywhere inside it.

    The least common multiple of the effective strides (their numerators) of
    every layer's output, so 16 for a 4-level U-Net even though its output
    has the input's resolution, and 1 for an upsampling. A network is exactly
    translation equivariant (away from its borders) for the shifts that are
    multiples of S. Paths whose receptive fields are centred differently
    (`receptive_field`'s misaligned paths: a U-Net with BlurPool, say) are
    fine here: only the strides count.

    Example:

    >>> from fcnkit.models import unet
    >>> total_stride(unet((None, None, 1), depth=3, filters=2))
    8
    """
    from fcnkit.receptive_field import receptive_field_table

    strides = [Fraction(row["S"].split("×")[0])
               for row in receptive_field_table(model, input_shape=input_shape,
                                                misaligned="union")]
    return math.lcm(*(stride.numerator for stride in strides))


class EquivarianceTable(list):
    """A list of dict records, one per operator, that prints as a table.

    Keys: `operator`, `lecture` (the lecture's answer, "" for the added
    rows), `stride` (the total stride S of `total_stride`, a string),
    and one key per shift, `shift <t>`, holding the `EquivarianceError`.
    """

    def __init__(self, records, shifts):
        super().__init__(records)
        self.shifts = tuple(shifts)

    def __str__(self) -> str:
        columns = ["operator", "lecture", "S"] + [f"shift {t}" for t in self.shifts]
        cells = [columns]
        for row in self:
            cells.append([row["operator"], row["lecture"], row["stride"]] + [
                "exact" if row[f"shift {t}"].exact else f"{row[f'shift {t}'].relative:.2f}"
                for t in self.shifts])
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        lines = []
        for index, line in enumerate(cells):
            lines.append("  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                                   for i, (cell, width) in enumerate(zip(line, widths))).rstrip())
            if index == 0:
                lines.append("  ".join("-" * width for width in widths))
        return "\n".join(lines)


def equivariance_table(x=None, shifts=(1, 2, 3, 4, 8, 16), seed=0):
    """The lecture's table of translation-equivariant operators, measured.

    Every operator of `table_operators` (random weights drawn from their
    initialisers with `seed`) is applied to `x` and to `x` shifted by each
    of `shifts` (along both axes), and compared in the interior. A cell is
    "exact" when the relative error is at round-off (below 1e-5), else it
    gives the relative error. The data show the rule: an operator is exactly
    equivariant for the shifts that are multiples of its total stride S
    (every integer shift when S <= 1), and only for those.

    Args:
        x: image `(rows, columns, channels)`; defaults to standard normal
            noise of 256 x 256 x 1 (seeded), large enough for the U-Net's
            receptive field to leave an interior.
        shifts: ints, in input pixels.
        seed: int >= 0.

    Returns:
        An `EquivarianceTable` (print it, or read its records).

    Reference:
        The lecture's table; Zhang, ICML 2019 (BlurPool).
        Lesson: ``05_translation_equivariance``.
    """
    seed = check_non_negative_int(seed, "seed")
    if x is None:
        x = np.random.default_rng(seed).standard_normal((256, 256, 1))
    x = _as_batch(x)
    shifts = [_as_shift(t)[0] for t in shifts]
    records = []
    for index, (name, lecture, build) in enumerate(table_operators(x.shape[3])):
        model = _seeded(build(), seed + index)
        record = {"operator": name, "lecture": lecture,
                  "stride": str(total_stride(model, x.shape[1:]))}
        for shift in shifts:
            record[f"shift {shift}"] = shift_equivariance_error(model, x, shift)
        records.append(record)
    return EquivarianceTable(records, shifts)
