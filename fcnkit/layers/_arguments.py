"""Argument checks shared by the layers (window sizes and strides per axis)."""

from __future__ import annotations

from fcnkit._validation import check_positive_int


def positive_int_pair(value, name: str) -> tuple[int, int]:
    """`(rows, columns)` from an int or a tuple/list of 2 positive ints.

    Example:

    >>> positive_int_pair(2, "pool_size")
    (2, 2)
    >>> positive_int_pair([3, 2], "pool_size")
    (3, 2)
    >>> positive_int_pair((2, 2, 2), "pool_size")
    Traceback (most recent call last):
    ...
    ValueError: `pool_size` must be a positive integer or a tuple of 2 positive integers (rows, columns). Received: pool_size=(2, 2, 2). Pass e.g. pool_size=2 or pool_size=(2, 3).
    """  # noqa: E501
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"`{name}` must be a positive integer or a tuple of 2 positive "
                f"integers (rows, columns). Received: {name}={value!r}. Pass "
                f"e.g. {name}=2 or {name}=(2, 3)."
            )
        return tuple(
            check_positive_int(item, f"{name}[{axis}]") for axis, item in enumerate(value)
        )
    value = check_positive_int(value, name)
    return (value, value)


def check_rank_4(layer_name: str, input_shape, what: str = "input") -> None:
    """Refuse a shape that is not `(batch, height, width, channels)`."""
    if len(input_shape) != 4:
        raise ValueError(
            f"`{layer_name}` expects a 4D {what} (batch, height, width, channels) in "
            f"channels-last format. Received: {what} shape {tuple(input_shape)}."
        )
