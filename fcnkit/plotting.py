"""Figures the lessons and the training command show."""

from __future__ import annotations

import numpy as np


def _as_display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0], "gray"
    return image, None if image.ndim == 3 else "gray"


def training_report(
    image, truth, prediction, history: dict[str, list[float]], path=None, title=""
):
    """Input / truth / prediction and the learning curves in one figure.

    Args:
        image: `(height, width, channels)` input image.
        truth: `(height, width, 1)` target (mask or image).
        prediction: `(height, width, 1)` network output.
        history: dict of per-epoch values, e.g. `History.history` or the
            columns of `history.csv`; keys with a `val_` twin are drawn together.
        path: where to save the PNG; None keeps the figure open.
        title: str, figure title.

    Returns:
        The matplotlib `Figure`.

    Example:

    >>> fig = training_report(np.zeros((8, 8, 3)), np.zeros((8, 8, 1)),
    ...                       np.zeros((8, 8, 1)), {"loss": [1.0, 0.5]})
    >>> len(fig.axes)
    4
    """
    if path is None:  # shown by the session's backend (inline in a notebook)
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(14, 7))
    else:  # drawn off screen, without touching the session's backend
        from matplotlib.figure import Figure

        fig = Figure(figsize=(14, 7))
    grid = fig.add_gridspec(3, 2, width_ratios=(1.4, 1))
    image_axes = [fig.add_subplot(grid[row, 0]) for row in range(3)]
    for axis, picture, label in zip(
        image_axes, (image, truth, prediction), ("input", "truth", "prediction")
    ):
        shown, cmap = _as_display(picture)
        axis.imshow(shown, cmap=cmap, vmin=None if cmap is None else 0.0,
                    vmax=None if cmap is None else 1.0)
        axis.set_title(label)
        axis.axis("off")
    curves = fig.add_subplot(grid[:, 1])
    for key, values in history.items():
        if key.startswith("val_") or key == "epoch":
            continue
        (line,) = curves.plot(range(1, len(values) + 1), values, label=key)
        if f"val_{key}" in history:
            curves.plot(range(1, len(values) + 1), history[f"val_{key}"], "--",
                        color=line.get_color(), label=f"val_{key}")
    curves.set_xlabel("epoch")
    curves.set_title("learning curves")
    curves.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig
