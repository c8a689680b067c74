"""The training report figure."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import image as mpimg  # noqa: E402

from fcnkit import plotting  # noqa: E402


def test_training_report_draws_images_and_paired_curves(tmp_path):
    history = {"epoch": [0, 1, 2], "loss": [0.9, 0.5, 0.3], "val_loss": [1.0, 0.6, 0.4]}
    truth = np.zeros((16, 32, 1))
    truth[4:8, 4:8] = 1
    path = tmp_path / "report.png"
    figure = plotting.training_report(np.random.rand(16, 32, 3), truth, truth, history,
                                      path=path, title="demo")
    curves = figure.axes[3]
    assert [line.get_label() for line in curves.get_lines()] == ["loss", "val_loss"]
    np.testing.assert_array_equal(curves.get_lines()[1].get_ydata(), history["val_loss"])
    # The truth panel shows the mask (grey scale 0..1), not a resampled version.
    np.testing.assert_array_equal(figure.axes[1].get_images()[0].get_array(), truth[..., 0])
    written = mpimg.imread(path)
    assert written.ndim == 3 and written.shape[0] > 100 and written.std() > 0


def test_saving_a_report_leaves_the_session_backend_alone(tmp_path):
    """A notebook's inline backend must survive `train()` writing its report."""
    matplotlib.use("svg")
    try:
        plotting.training_report(np.zeros((4, 4, 3)), np.zeros((4, 4, 1)), np.zeros((4, 4, 1)),
                                 {"loss": [1.0]}, path=tmp_path / "report.png")
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "report.png").stat().st_size > 0
    finally:
        matplotlib.use("Agg")


def test_receptive_field_overlay_solid_inside_dashed_into_the_padding():
    from fcnkit.plotting import receptive_field_overlay

    axis = receptive_field_overlay(np.zeros((10, 12)), [((2, 4), (3, 7)), ((-2, 2), (9, 13))],
                                   labels=["a", "b"], title="two")
    inside, clipped, padded = axis.patches
    assert inside.get_bbox().bounds == (2.5, 1.5, 5.0, 3.0)
    assert clipped.get_bbox().bounds == (8.5, -0.5, 3.0, 3.0)  # rows 0-2, columns 9-11
    assert padded.get_linestyle() == "--" and padded.get_bbox().bounds == (8.5, -2.5, 5.0, 5.0)
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["a", "b"]
    assert axis.get_xlim() == (-0.5, 14) and axis.get_ylim() == (9.5, -3)
