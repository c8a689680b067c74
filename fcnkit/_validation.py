"""Argument checks shared by the whole package (no Keras needed)."""

from __future__ import annotations

import difflib
from typing import Sequence


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
