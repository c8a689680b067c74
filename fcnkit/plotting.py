"""Figures the lessons, the explorers and the training command show."""

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


def _new_axis(axis, figsize):
    if axis is not None:
        return axis
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


def receptive_field_overlay(image, intervals, axis=None, title="", labels=None):
    """An image with receptive fields drawn on it as rectangles.

    Args:
        image: `(rows, columns)` or `(rows, columns, channels)` array.
        intervals: a list of `((top, bottom), (left, right))` input intervals,
            ends included, as `ReceptiveField.interval(position)` returns
            them; parts beyond the image (padding) are drawn dashed.
        axis: a matplotlib axis, or None for a new figure.
        title: str.
        labels: optional list of legend labels, one per interval.

    Returns:
        The matplotlib axis.

    Example:

    >>> axis = receptive_field_overlay(np.zeros((9, 9)), [((2, 6), (-1, 3))])
    >>> [float(v) for v in axis.patches[0].get_bbox().bounds]  # inside: x, y, w, h
    [-0.5, 1.5, 4.0, 5.0]
    >>> axis.patches[1].get_linestyle(), float(axis.patches[1].get_x())  # into the padding
    ('--', -1.5)

    Reference:
        Lesson: ``03_receptive_field``.
    """
    from matplotlib.patches import Rectangle

    axis = _new_axis(axis, (5, 5))
    shown, cmap = _as_display(image)
    axis.imshow(shown, cmap=cmap)
    rows, columns = shown.shape[:2]
    colours = ("tab:red", "tab:cyan", "tab:orange", "tab:green", "tab:purple")
    for index, ((top, bottom), (left, right)) in enumerate(intervals):
        colour = colours[index % len(colours)]
        label = None if labels is None else labels[index]
        inside = (max(top, 0), min(bottom, rows - 1), max(left, 0), min(right, columns - 1))
        if inside[0] <= inside[1] and inside[2] <= inside[3]:
            axis.add_patch(Rectangle(
                (inside[2] - 0.5, inside[0] - 0.5), inside[3] - inside[2] + 1,
                inside[1] - inside[0] + 1, fill=False, edgecolor=colour, linewidth=2,
                label=label))
            label = None
        if inside != (top, bottom, left, right):  # the padded part, beyond the image
            axis.add_patch(Rectangle(
                (left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                edgecolor=colour, linewidth=1, linestyle="--", label=label))
    axis.set_xlim(min(-0.5, *(i[1][0] - 1 for i in intervals)),
                  max(columns - 0.5, *(i[1][1] + 1 for i in intervals)))
    axis.set_ylim(max(rows - 0.5, *(i[0][1] + 1 for i in intervals)),
                  min(-0.5, *(i[0][0] - 1 for i in intervals)))
    if labels is not None:
        axis.legend(fontsize="small", loc="upper right")
    axis.set_title(title, fontsize=10)
    axis.set_xticks([])
    axis.set_yticks([])
    return axis


def erf_heatmap(erf, axis=None, theoretical_size=None, title=None, theoretical_region=None):
    """The map of an `EffectiveReceptiveField`, with its 2σ ellipse and the theoretical RF.

    Args:
        erf: a `fcnkit.erf.EffectiveReceptiveField`.
        axis: a matplotlib axis, or None for a new figure.
        theoretical_size: optional int, the side of the theoretical receptive
            field, drawn as a dashed square centred on the pixel nearest to
            the ERF's centre (right for networks whose field is centred).
        title: str, or None for one giving σ.
        theoretical_region: optional `((top, bottom), (left, right))` in input
            pixels, ends included (e.g. `receptive_field_region(model,
            erf.output_position, input_shape)`): the theoretical receptive
            field drawn exactly, for any network.

    Returns:
        The matplotlib axis.

    Example:

    >>> from fcnkit.erf import conv_stack, effective_receptive_field
    >>> erf = effective_receptive_field(conv_stack(2), (9, 9, 1), samples=1)
    >>> axis = erf_heatmap(erf, theoretical_size=5)
    >>> axis.get_title()  # sigma**2 = 2n/3
    'σ = 1.15 × 1.15 px'
    >>> [float(v) for v in axis.patches[1].get_bbox().bounds]  # pixels 2..6
    [1.5, 1.5, 5.0, 5.0]

    Reference:
        Luo et al., NIPS 2016, Figure 1. Lesson: ``04_effective_receptive_field``.
    """
    from matplotlib.patches import Ellipse, Rectangle

    axis = _new_axis(axis, (4, 4))
    axis.imshow(erf.map, cmap="magma")
    row, column = erf.centre
    axis.add_patch(Ellipse((column, row), 4 * erf.sigma[1], 4 * erf.sigma[0], fill=False,
                           edgecolor="tab:cyan", linewidth=1.5, label="2σ"))
    if theoretical_region is None and theoretical_size is not None:
        half = theoretical_size // 2
        centre_row, centre_column = (int(round(value)) for value in erf.centre)
        theoretical_region = ((centre_row - half, centre_row - half + theoretical_size - 1),
                              (centre_column - half,
                               centre_column - half + theoretical_size - 1))
    if theoretical_region is not None:
        (top, bottom), (left, right) = theoretical_region
        axis.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1,
                                 fill=False, edgecolor="white", linestyle="--", linewidth=1,
                                 label="theoretical RF"))
    if title is None:
        title = f"σ = {erf.sigma[0]:.2f} × {erf.sigma[1]:.2f} px"
    axis.set_title(title, fontsize=10)
    axis.set_xticks([])
    axis.set_yticks([])
    return axis
