"""Argument checks shared by the whole package (no Keras needed).

Every public function of `fcnkit` checks its counts and sizes with
`check_positive_int` (or `check_non_negative_int` for seeds and offsets), so
the same argument gets the same answer everywhere: Python ints and NumPy
integers are accepted and returned as Python ints; a `bool`, a float or
anything else is a `TypeError`; zero or a negative value is a `ValueError`.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from typing import Sequence

import numpy as np


def validate_option(value, name: str, allowed: Sequence[str]) -> str:
    """Return `value` lower-cased if it is one of `allowed`, else raise.

    Example:

    >>> validate_option("Same", "padding", ("valid", "same"))
    'same'
    >>> validate_option("vald", "padding", ("valid", "same"))
    Traceback (most recent call last):
    ...
    ValueError: `padding` must be one of "valid", "same". ... Did you mean "valid"?
    """
    if isinstance(value, str) and value.lower() in allowed:
        return value.lower()
    choices = ", ".join(f'"{a}"' for a in allowed)
    message = f"`{name}` must be one of {choices}. Received: {name}={value!r}."
    if isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), allowed, n=1)
        if close:
            message += f' Did you mean "{close[0]}"?'
    raise ValueError(message)


def _is_integer(value) -> bool:
    # numbers.Integral covers int and every NumPy integer type; bool is an int
    # subclass but never a count.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _integer_type_error(value, name: str, expected: str) -> TypeError:
    if isinstance(value, bool):
        fix = f"Pass a number such as {name}=1, not True or False."
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        fix = f"Pass {name}={int(value)} (an int, not a {type(value).__name__})."
    else:
        fix = f"Pass a whole number, e.g. {name}=int(...)."
    return TypeError(
        f"`{name}` must be {expected} (a Python int or a NumPy integer). "
        f"Received: {name}={value!r} of type {type(value).__name__}. {fix}"
    )


def check_positive_int(value, name: str) -> int:
    """Return `value` as a Python int if it is an integer >= 1, else raise.

    Args:
        value: the argument to check: a Python int or a NumPy integer.
        name: the argument's name, used in the message.

    Returns:
        `int(value)`.

    Raises:
        TypeError: for a `bool`, a float (even `2.0`) or a non-number.
        ValueError: for zero or a negative integer.

    Example:

    >>> check_positive_int(np.int64(3), "depth")
    3
    >>> check_positive_int(0, "depth")
    Traceback (most recent call last):
    ...
    ValueError: `depth` must be a positive integer (1 or more). Received: depth=0. Pass depth=1 or more.
    >>> check_positive_int(2.0, "depth")
    Traceback (most recent call last):
    ...
    TypeError: `depth` must be a positive integer (a Python int or a NumPy integer). Received: depth=2.0 of type float. Pass depth=2 (an int, not a float).
    """  # noqa: E501
    return _check_int(value, name, 1, "a positive integer", "a positive integer (1 or more)")


def check_non_negative_int(value, name: str) -> int:
    """Return `value` as a Python int if it is an integer >= 0, else raise.

    For seeds and offsets, where 0 is a valid value. Same types as
    `check_positive_int`.

    Example:

    >>> check_non_negative_int(0, "seed")
    0
    >>> check_non_negative_int(-1, "seed")
    Traceback (most recent call last):
    ...
    ValueError: `seed` must be an integer >= 0. Received: seed=-1. Pass seed=0 or more.
    """
    return _check_int(value, name, 0, "an integer >= 0", "an integer >= 0")


def _check_int(value, name: str, minimum: int, kind: str, described: str) -> int:
    if not _is_integer(value):
        raise _integer_type_error(value, name, kind)
    if value < minimum:
        raise ValueError(
            f"`{name}` must be {described}. Received: {name}={value!r}. "
            f"Pass {name}={minimum} or more."
        )
    return int(value)


def check_positive_float(value, name: str) -> float:
    """Return `value` as a Python float if it is a finite number > 0, else raise.

    Ints, floats and NumPy numbers are accepted; a `bool` is a `TypeError`.

    Example:

    >>> check_positive_float(np.float32(0.5), "learning_rate")
    0.5
    >>> check_positive_float(0.0, "learning_rate")
    Traceback (most recent call last):
    ...
    ValueError: `learning_rate` must be a finite number > 0. Received: learning_rate=0.0. ...
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a number (int or float). Received: {name}={value!r} "
            f"of type {type(value).__name__}. Pass a number such as {name}=0.001."
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"`{name}` must be a finite number > 0. Received: {name}={value!r}. "
            f"Pass a positive number such as {name}=0.001."
        )
    return float(value)


def check_non_negative_float(value, name: str) -> float:
    """Return `value` as a Python float if it is a finite number >= 0, else raise.

    For smoothing constants and tolerances, where 0 is a valid value. Same
    types as `check_positive_float`.

    Example:

    >>> check_non_negative_float(0, "epsilon")
    0.0
    >>> check_non_negative_float(-1e-7, "epsilon")
    Traceback (most recent call last):
    ...
    ValueError: `epsilon` must be a finite number >= 0. Received: epsilon=-1e-07. ...
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a number (int or float). Received: {name}={value!r} "
            f"of type {type(value).__name__}. Pass a number such as {name}=0.0."
        )
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"`{name}` must be a finite number >= 0. Received: {name}={value!r}. "
            f"Pass 0 or a positive number such as {name}=1e-07."
        )
    return float(value)


def check_bool(value, name: str) -> bool:
    """Return `value` if it is `True` or `False` (or a NumPy bool), else raise `TypeError`.

    Example:

    >>> check_bool(True, "batch_norm")
    True
    >>> check_bool("yes", "batch_norm")
    Traceback (most recent call last):
    ...
    TypeError: `batch_norm` must be True or False. Received: batch_norm='yes' of type str. ...
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(
        f"`{name}` must be True or False. Received: {name}={value!r} of type "
        f"{type(value).__name__}. Pass {name}=True or {name}=False."
    )


def check_path(value, name: str) -> str:
    """Return `value` as a string if it is a non-empty `str` or path, else raise.

    Example:

    >>> import pathlib
    >>> check_path(pathlib.Path("runs") / "a", "out")
    'runs/a'
    """
    if isinstance(value, (str, os.PathLike)) and os.fspath(value):
        return os.fspath(value)
    raise TypeError(
        f"`{name}` must be a folder path (a non-empty str or pathlib.Path). "
        f"Received: {name}={value!r}. Pass e.g. {name}=\"runs/train\"."
    )
