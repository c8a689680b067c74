"""SegNet's pooling-index memorisation: max-pooling that records where each maximum was, and
the unpooling that puts each maximum back there.

Keras 3 has no backend-neutral argmax pooling (keras issue 14994), so both layers are written
with `keras.ops` only and run on TensorFlow, JAX and PyTorch.

Index convention (the one both layers share): for every window, image and channel, the index is
the position of the maximum *inside its window*, in row-major order: `row * pool_columns +
column`, so 0, 1, 2, 3 for the top-left, top-right, bottom-left and bottom-right pixel of a 2×2
window. This is what SegNet stores ("2 bits per 2×2 window"). Unlike a flat index into the whole
image (`tf.nn.max_pool_with_argmax`), it does not depend on the size of the image, so the same
indices unpool to any output size that the pooled size can come from.
"""

from __future__ import annotations

import keras
from keras import ops

from fcnkit._validation import validate_option
from fcnkit.layers._arguments import check_rank_4, positive_int_pair
from fcnkit.shapes import conv_output_size

PADDINGS = ("valid", "same")
INDEX_DTYPE = "int32"


def _maximum(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return ops.maximum(a, b)


def _minimum(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return ops.minimum(a, b)


def _windows(inputs, pool_size, padding, pad_value):
    """The input cut into non-overlapping windows.

    Returns `(windows, padded, inside)`: `windows` of shape `(batch, rows, pool_rows, columns,
    pool_columns, channels)`; `padded`, the same values as a 4D tensor (cropped for "valid",
    padded with `pad_value` for "same"); `inside`, a boolean tensor that broadcasts against
    `windows` and is False on padding (None when there can be none).
    """
    pool_rows, pool_columns = pool_size
    shape = ops.shape(inputs)
    height, width, channels = shape[1], shape[2], shape[3]
    inside = None
    if padding == "valid":
        rows, columns = height // pool_rows, width // pool_columns
        exact = all(isinstance(size, int) and size % window == 0
                    for size, window in ((height, pool_rows), (width, pool_columns)))
        padded = inputs if exact else inputs[:, : rows * pool_rows, : columns * pool_columns, :]
    else:  # "same", as MaxPooling2D: the extra pixel of an odd padding goes below / right
        rows = (height + pool_rows - 1) // pool_rows
        columns = (width + pool_columns - 1) // pool_columns
        top = (rows * pool_rows - height) // 2
        left = (columns * pool_columns - width) // 2
        padded = ops.pad(
            inputs,
            [[0, 0], [top, rows * pool_rows - height - top],
             [left, columns * pool_columns - width - left], [0, 0]],
            constant_values=pad_value,
        )
        row_index = ops.reshape(ops.arange(rows * pool_rows), (1, rows, pool_rows, 1, 1, 1))
        column_index = ops.reshape(
            ops.arange(columns * pool_columns), (1, 1, 1, columns, pool_columns, 1)
        )
        inside = ops.logical_and(
            ops.logical_and(row_index >= top, row_index < top + height),
            ops.logical_and(column_index >= left, column_index < left + width),
        )
    windows = ops.reshape(padded, (-1, rows, pool_rows, columns, pool_columns, channels))
    return windows, padded, inside


def _first_inside(inputs, pool_size, padding):
    """Index of the first pixel of each window that is inside the image, shaped
    `(1, rows, columns, 1)` (0 for "valid", where there is no padding)."""
    if padding == "valid":
        return 0
    pool_rows, pool_columns = pool_size
    shape = ops.shape(inputs)
    height, width = shape[1], shape[2]
    rows = (height + pool_rows - 1) // pool_rows
    columns = (width + pool_columns - 1) // pool_columns
    top = (rows * pool_rows - height) // 2
    left = (columns * pool_columns - width) // 2
    row = ops.maximum(top - ops.arange(rows) * pool_rows, 0)
    column = ops.maximum(left - ops.arange(columns) * pool_columns, 0)
    first = row[:, None] * pool_columns + column[None, :]
    return ops.cast(ops.reshape(first, (1, rows, columns, 1)), INDEX_DTYPE)


def _window_positions(pool_size, dtype):
    """`row * pool_columns + column` for every pixel of a window, shaped to broadcast against
    `(batch, rows, pool_rows, columns, pool_columns, channels)`."""
    pool_rows, pool_columns = pool_size
    positions = ops.arange(pool_rows * pool_columns, dtype="int32")  # TF has no int8 range
    return ops.reshape(ops.cast(positions, dtype), (1, 1, pool_rows, 1, pool_columns, 1))


def _fit_to_size(outputs, target_height, target_width):
    """Crop (as "same" pooling padded: centred, the extra pixel below / right) or zero-pad
    (as "valid" pooling dropped: below / right) `outputs` to the target size."""
    shape = ops.shape(outputs)
    for axis, target in ((1, target_height), (2, target_width)):
        if target is None:
            continue
        full = shape[axis]
        if isinstance(full, int) and isinstance(target, int) and full == target:
            continue
        start = _maximum(full - target, 0) // 2
        stop = start + _minimum(full, target)
        extra = _maximum(target - full, 0)
        if axis == 1:
            outputs = outputs[:, start:stop]
            outputs = ops.pad(outputs, [[0, 0], [0, extra], [0, 0], [0, 0]])
        else:
            outputs = outputs[:, :, start:stop]
            outputs = ops.pad(outputs, [[0, 0], [0, 0], [0, extra], [0, 0]])
    return outputs


@keras.saving.register_keras_serializable(package="fcnkit")
class MaxPoolingWithArgmax2D(keras.layers.Layer):
    """Max-pooling that also returns where each maximum was (SegNet's encoder pooling).

    The pooled values are those of `keras.layers.MaxPooling2D` with the same arguments, and
    so are their gradients. The indices give, for every window, image and channel, the
    position of the maximum inside its window in row-major order (`row * pool_size[1] +
    column`: 0, 1, 2, 3 for the top-left, top-right, bottom-left and bottom-right pixel of a
    2×2 window), as int32. `MaxUnpooling2D` puts each maximum back at that position.

    Windows never overlap (`strides` equals `pool_size`), so every input pixel belongs to at
    most one window and unpooling is well defined. Any pool size works, square or not;
    SegNet uses 2×2.

    Ties: the index is the first maximum in row-major order (the smallest index), on every
    backend (`-0.0` and `0.0` are equal). On TensorFlow and JAX the gradient of the pooled
    value goes to that same pixel.

    To convert to the flat index of `tf.nn.max_pool_with_argmax` (`include_batch_in_index=
    False`, "valid" padding), with `(y, x) = (i * pool_size[0] + index // pool_size[1],
    j * pool_size[1] + index % pool_size[1])` the input pixel of window `(i, j)`:
    `flat = (y * width + x) * channels + c`.

    Args:
        pool_size: int or tuple of 2 ints, the window `(rows, columns)`. Defaults to 2.
        strides: None (the default) or equal to `pool_size`; other values (overlapping
            windows or gaps) are refused.
        padding: `"valid"` (the default; as `MaxPooling2D`, the last rows and columns that do
            not fill a window are dropped: 5 → 2 for a pool size of 2) or `"same"` (the last
            windows are partial: 5 → 3; padding never wins a window).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a 4D tensor in channels-last format. It must not contain NaN.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        A list `[pooled, indices]` of two tensors of shape
        `(batch, pooled_height, pooled_width, channels)`: `floor(height / pool_size[0])` for
        `"valid"`, `ceil(height / pool_size[0])` for `"same"` (the same for the width).

    Raises:
        ValueError: for strides other than the pool size, an unknown padding, an input that
            is not 4D, or (with `"valid"`) an input smaller than one window.
        TypeError: for a pool size that is not an integer.

    Example:

    >>> x = np.array([[1, 5, 0, 2],
    ...               [3, 4, 6, 1]], dtype="float32").reshape(1, 2, 4, 1)
    >>> pooled, indices = MaxPoolingWithArgmax2D(2)(x)
    >>> keras.ops.convert_to_numpy(pooled)[0, :, :, 0].tolist()
    [[5.0, 6.0]]
    >>> keras.ops.convert_to_numpy(indices)[0, :, :, 0].tolist()
    [[1, 2]]

    Reference:
        Badrinarayanan, Kendall, Cipolla, SegNet: A Deep Convolutional Encoder-Decoder
        Architecture for Image Segmentation, TPAMI 2017 (Fig. 3, "pooling indices").
        Lesson: ``02_upsampling``.
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = positive_int_pair(pool_size, "pool_size")
        if strides is not None and positive_int_pair(strides, "strides") != self.pool_size:
            raise ValueError(
                "`MaxPoolingWithArgmax2D` supports non-overlapping windows only: `strides` "
                "must equal `pool_size`, so that every input pixel belongs to at most one "
                f"window and unpooling puts it back in one place. Received: strides={strides!r}, "
                f"pool_size={pool_size!r}. Leave strides=None."
            )
        self.strides = self.pool_size
        self.padding = validate_option(padding, "padding", PADDINGS)

    def compute_output_shape(self, input_shape):
        check_rank_4("MaxPoolingWithArgmax2D", input_shape)
        sizes = []
        for axis, name in ((1, "height"), (2, "width")):
            window = self.pool_size[axis - 1]
            size = conv_output_size(input_shape[axis], window, window, self.padding)
            if size == 0:
                raise ValueError(
                    f"`MaxPoolingWithArgmax2D` with pool_size={self.pool_size} and "
                    f"padding=\"valid\" needs a {name} of at least {window}. Received: "
                    f"input_shape={tuple(input_shape)}. Use a larger input or "
                    "padding=\"same\"."
                )
            sizes.append(size)
        shape = (input_shape[0], *sizes, input_shape[3])
        return [shape, shape]

    def compute_output_spec(self, inputs):
        shape, _ = self.compute_output_shape(inputs.shape)
        return [
            keras.KerasTensor(shape, dtype=self.compute_dtype),
            keras.KerasTensor(shape, dtype=INDEX_DTYPE),
        ]

    def build(self, input_shape):
        self.compute_output_shape(input_shape)

    def call(self, inputs):
        windows, padded, inside = _windows(inputs, self.pool_size, self.padding, float("-inf"))
        pooled = ops.max_pool(padded, self.pool_size, self.pool_size, padding="valid")
        # Which pixels equal their window's maximum; each gets the rank
        # pool_rows * pool_columns - position (0 for the others), so that the largest rank
        # of a window, found by max-pooling again, is its first maximum. (A reduction over
        # the two window axes took TensorFlow 15 times as long as this max-pooling.)
        is_max = ops.equal(windows, ops.stop_gradient(pooled)[:, :, None, :, None, :])
        if inside is not None:  # the padding never wins, not even against -inf
            is_max = ops.logical_and(is_max, inside)
        count = self.pool_size[0] * self.pool_size[1]
        ranks = count - _window_positions(self.pool_size, "float32")
        ranks = ops.reshape(ops.cast(is_max, "float32") * ranks, ops.shape(padded))
        best = ops.cast(
            ops.max_pool(ranks, self.pool_size, self.pool_size, padding="valid"), INDEX_DTYPE
        )
        # best == 0: no pixel equals the maximum, where all are -inf (TensorFlow's max_pool
        # then returns the lowest float): they all tie, so the first pixel in the image wins.
        if self.padding == "valid":
            return [pooled, (count - best) % count]
        first = _first_inside(inputs, self.pool_size, self.padding)
        return [pooled, ops.where(best == 0, first, count - best)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}
        )
        return config


@keras.saving.register_keras_serializable(package="fcnkit")
class MaxUnpooling2D(keras.layers.Layer):
    """Puts every pooled value back where its maximum was, zeros elsewhere (SegNet's decoder).

    Called on `[pooled, indices]` from `MaxPoolingWithArgmax2D` (the values may have been
    processed in between, the indices not): each value `pooled[b, i, j, c]` goes to pixel
    `(i * pool_size[0] + indices // pool_size[1], j * pool_size[1] + indices % pool_size[1])`
    of channel `c`, every other pixel is zero. So `MaxUnpooling2D` after
    `MaxPoolingWithArgmax2D` keeps each window's maximum at its position. The gradient with
    respect to the values is the output gradient at those positions; the indices are
    integers and have none.

    Output size: `pooled_size * pool_size` by default; with a third input `[pooled, indices,
    reference]` (the tensor that was pooled, say), the height and width of `reference`
    (its values are not used; this works for sizes unknown until run time); or a fixed
    `output_size`. A larger size than `pooled_size * pool_size` (after "valid" pooling of an
    odd size) adds zero rows and columns below and on the right; a smaller one (after
    "same" pooling) removes the padding as "same" pooling added it (centred, the extra row
    below). The size must be one that pooling can shrink to the pooled size: between
    `pooled_size * pool_size - pool_size + 1` and `pooled_size * pool_size + pool_size - 1`.

    Args:
        pool_size: int or tuple of 2 ints, the pool size of the `MaxPoolingWithArgmax2D`
            that made the indices. Defaults to 2.
        output_size: None (the default) or a tuple `(height, width)` of ints.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list `[pooled, indices]` or `[pooled, indices, reference]` of 4D
            channels-last tensors; `indices` as made by `MaxPoolingWithArgmax2D` (an
            integer dtype, the shape of `pooled`).

    Input shape:
        `[(batch, rows, columns, channels), (batch, rows, columns, channels)]`, plus
        `(batch, height, width, any)` for the reference.

    Output shape:
        `(batch, height, width, channels)`.

    Raises:
        ValueError: for a call on something else than 2 or 3 tensors, indices of another
            shape than the values, a reference together with `output_size`, or an output
            size that pooling cannot shrink to the pooled size.
        TypeError: for a pool size or output size that is not an integer.

    Example:

    >>> x = np.array([[1, 5, 0, 2],
    ...               [3, 4, 6, 1]], dtype="float32").reshape(1, 2, 4, 1)
    >>> pooled, indices = MaxPoolingWithArgmax2D(2)(x)
    >>> restored = MaxUnpooling2D(2)([pooled, indices])
    >>> keras.ops.convert_to_numpy(restored)[0, :, :, 0].tolist()
    [[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 6.0, 0.0]]
    >>> odd = np.arange(15, dtype="float32").reshape(1, 3, 5, 1)
    >>> pooled, indices = MaxPoolingWithArgmax2D(2)(odd)
    >>> restored = MaxUnpooling2D(2)([pooled, indices, odd])
    >>> keras.ops.convert_to_numpy(restored)[0, :, :, 0].tolist()
    [[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 6.0, 0.0, 8.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]

    Reference:
        Badrinarayanan, Kendall, Cipolla, SegNet: A Deep Convolutional Encoder-Decoder
        Architecture for Image Segmentation, TPAMI 2017 (Fig. 3).
        Lesson: ``02_upsampling``.
    """

    def __init__(self, pool_size=2, output_size=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = positive_int_pair(pool_size, "pool_size")
        if output_size is not None:
            if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
                raise ValueError(
                    "`output_size` must be None or a tuple (height, width) of 2 positive "
                    f"integers. Received: output_size={output_size!r}. Pass e.g. "
                    "output_size=(361, 481)."
                )
            output_size = positive_int_pair(output_size, "output_size")
        self.output_size = output_size

    def _split_shapes(self, input_shape):
        if not (
            isinstance(input_shape, (tuple, list))
            and len(input_shape) in (2, 3)
            and all(isinstance(shape, (tuple, list)) for shape in input_shape)
        ):
            count = (
                len(input_shape)
                if isinstance(input_shape, (tuple, list))
                and all(isinstance(shape, (tuple, list)) for shape in input_shape)
                else 1
            )
            raise ValueError(
                "`MaxUnpooling2D` must be called on a list [pooled, indices] or [pooled, "
                "indices, reference]. Received: "
                f"{count} input{'s' if count != 1 else ''} of shape {input_shape}."
            )
        pooled, indices = input_shape[0], input_shape[1]
        check_rank_4("MaxUnpooling2D", pooled, "pooled input")
        check_rank_4("MaxUnpooling2D", indices, "indices")
        if any(a is not None and b is not None and a != b for a, b in zip(pooled, indices)):
            raise ValueError(
                "`MaxUnpooling2D` needs indices of the same shape as the pooled values, "
                "both from one MaxPoolingWithArgmax2D. Received: pooled shape "
                f"{tuple(pooled)}, indices shape {tuple(indices)}."
            )
        reference = input_shape[2] if len(input_shape) == 3 else None
        if reference is not None:
            check_rank_4("MaxUnpooling2D", reference, "reference")
            if self.output_size is not None:
                raise ValueError(
                    "`MaxUnpooling2D` takes its output size either from `output_size` or "
                    "from a reference tensor, not both. Received: output_size="
                    f"{self.output_size} and a reference of shape {tuple(reference)}. "
                    "Remove one of them."
                )
        return pooled, reference

    def _target_size(self, pooled, reference):
        if reference is not None:
            return reference[1], reference[2]
        if self.output_size is not None:
            return self.output_size
        return tuple(
            None if pooled[axis] is None else pooled[axis] * self.pool_size[axis - 1]
            for axis in (1, 2)
        )

    def compute_output_shape(self, input_shape):
        pooled, reference = self._split_shapes(input_shape)
        target = self._target_size(pooled, reference)
        for axis, name in ((1, "height"), (2, "width")):
            window = self.pool_size[axis - 1]
            size, goal = pooled[axis], target[axis - 1]
            if size is None or goal is None:
                continue
            low, high = size * window - window + 1, size * window + window - 1
            if not low <= goal <= high:
                raise ValueError(
                    f"`MaxUnpooling2D` with pool_size={self.pool_size} cannot unpool a "
                    f"{name} of {size} to {goal}: pooling by {window} gives {size} from a "
                    f"{name} between {low} and {high}. Received: input_shape={input_shape}"
                    f"{'' if reference is not None else f', output_size={self.output_size}'}"
                    ". Unpool to the size of the tensor that was pooled: call the layer on "
                    "[pooled, indices, that_tensor]."
                )
        return (pooled[0], target[0], target[1], pooled[3])

    def build(self, input_shape):
        self.compute_output_shape(input_shape)

    def _scatter(self, pooled, indices):
        """Each value at its index in its window, zeros elsewhere, as a 4D tensor of
        `pool_size` times the size of `pooled`. (The receptive-field probe overrides this.)"""
        pool_rows, pool_columns = self.pool_size
        shape = ops.shape(pooled)
        # The mask from int8 indices where they fit (a quarter of the memory traffic).
        dtype = "int8" if pool_rows * pool_columns <= 127 else INDEX_DTYPE
        is_max = ops.equal(
            ops.cast(indices, dtype)[:, :, None, :, None, :],
            _window_positions(self.pool_size, dtype),
        )
        is_max = ops.reshape(
            is_max, (-1, shape[1] * pool_rows, shape[2] * pool_columns, shape[3])
        )
        # Nearest upsampling with ops.repeat, as UpSampling2D: its gradient is cheap, unlike
        # that of a broadcast over the two window axes.
        values = ops.repeat(ops.repeat(pooled, pool_rows, axis=1), pool_columns, axis=2)
        return ops.where(is_max, values, ops.zeros((), pooled.dtype))

    def call(self, inputs):
        outputs = self._scatter(inputs[0], inputs[1])
        if len(inputs) == 3:
            reference_shape = ops.shape(inputs[2])
            return _fit_to_size(outputs, reference_shape[1], reference_shape[2])
        if self.output_size is not None:
            return _fit_to_size(outputs, *self.output_size)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "output_size": self.output_size})
        return config
