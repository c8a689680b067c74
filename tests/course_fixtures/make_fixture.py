"""Write the tiny nbgrader course used by `tests/test_course.py`.

The fixture notebook `00_fixture/00_fixture.ipynb` imports no Keras, so a
student is graded in about a second. It holds 5 points in 4 graded test cells:

| grade_id     | points | what the student must do                         |
|--------------|--------|--------------------------------------------------|
| `test_q1`    | 1      | quiz: `q1 = "b"`                                 |
| `test_rf`    | 2      | code: `receptive_field(n_layers, kernel_size=3)` |
| `test_count` | 1      | code: `count_positive(values)` (a loop)          |
| `test_q2`    | 1      | quiz, multiple select: `q2 = {"a", "c"}`         |

Cell ids are fixed, so running this script again writes the same bytes.
Run it after editing: `python tests/course_fixtures/make_fixture.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "00_fixture" / "00_fixture.ipynb"


def _nbgrader(grade_id, *, grade=False, solution=False, locked=False, points=None):
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
    }
    if points is not None:
        meta["points"] = points
    return meta


def _cell(cell_id, cell_type, source, nbgrader=None):
    cell = {"cell_type": cell_type, "id": cell_id, "metadata": {}, "source": source}
    if nbgrader is not None:
        cell["metadata"]["nbgrader"] = nbgrader
    if cell_type == "code":
        cell["execution_count"] = None
        cell["outputs"] = []
    return cell


def fixture_notebook() -> dict:
    """Return the fixture notebook as a JSON-ready dict (nbformat 4.5)."""
    cells = [
        _cell(
            "intro",
            "markdown",
            "# Fixture lesson\n\nA tiny lesson that exercises the grading pipeline.",
        ),
        _cell(
            "setup",
            "code",
            'import os\n\nFAST = bool(os.environ.get("NBGRADER_EXECUTION"))',
        ),
        _cell(
            "data",
            "code",
            "SAMPLE_VALUES = [3, -1, 0, 7, -5, 2]",
            _nbgrader("data", locked=True),
        ),
        _cell(
            "q1-text",
            "markdown",
            "**Question 1.** Which operator keeps translation equivariance?\n\n"
            "a) max pooling with stride 2, b) convolution with stride 1, c) a dense layer.\n\n"
            'Set `q1` to `"a"`, `"b"` or `"c"`.',
        ),
        _cell(
            "answer-q1",
            "code",
            '### BEGIN SOLUTION\nq1 = "b"\n### END SOLUTION',
            _nbgrader("answer_q1", solution=True),
        ),
        _cell(
            "test-q1",
            "code",
            'assert isinstance(q1, str), "q1 must be a string"\n'
            'assert q1.strip().lower() in {"a", "b", "c"}, "q1 must be a, b or c"\n'
            "### BEGIN HIDDEN TESTS\n"
            'assert q1.strip().lower() == "b", "quiz 1 answer is wrong"\n'
            "### END HIDDEN TESTS",
            _nbgrader("test_q1", grade=True, locked=True, points=1),
        ),
        _cell(
            "rf-text",
            "markdown",
            "**Exercise.** Write `receptive_field(n_layers, kernel_size=3)`: the receptive field "
            "of `n_layers` stacked convolutions with stride 1.",
        ),
        _cell(
            "answer-rf",
            "code",
            "def receptive_field(n_layers, kernel_size=3):\n"
            "    ### BEGIN SOLUTION\n"
            "    return 1 + n_layers * (kernel_size - 1)\n"
            "    ### END SOLUTION",
            _nbgrader("answer_rf", solution=True),
        ),
        _cell(
            "test-rf",
            "code",
            "assert receptive_field(1) == 3\n"
            "### BEGIN HIDDEN TESTS\n"
            "assert receptive_field(5) == 11\n"
            "assert receptive_field(2, kernel_size=5) == 9\n"
            "### END HIDDEN TESTS",
            _nbgrader("test_rf", grade=True, locked=True, points=2),
        ),
        _cell(
            "count-text",
            "markdown",
            "**Exercise.** Write `count_positive(values)`, the number of values above 0, "
            "with a loop.",
        ),
        _cell(
            "answer-count",
            "code",
            "def count_positive(values):\n"
            "    ### BEGIN SOLUTION\n"
            "    total_positive = 0\n"
            "    for value in values:\n"
            "        total_positive += value > 0\n"
            "    return total_positive\n"
            "    ### END SOLUTION",
            _nbgrader("answer_count", solution=True),
        ),
        _cell(
            "test-count",
            "code",
            "assert count_positive([]) == 0\n"
            "### BEGIN HIDDEN TESTS\n"
            "assert count_positive(SAMPLE_VALUES) == 3\n"
            "### END HIDDEN TESTS",
            _nbgrader("test_count", grade=True, locked=True, points=1),
        ),
        _cell(
            "q2-text",
            "markdown",
            "**Question 2.** Which are image-to-image tasks? a) segmentation, b) image "
            "classification, c) deblurring. Set `q2` to a set of letters.",
        ),
        _cell(
            "answer-q2",
            "code",
            '### BEGIN SOLUTION\nq2 = {"a", "c"}\n### END SOLUTION',
            _nbgrader("answer_q2", solution=True),
        ),
        _cell(
            "test-q2",
            "code",
            'assert isinstance(q2, set), "q2 must be a set of letters"\n'
            'assert q2 <= {"a", "b", "c"}, "q2 may only hold the letters a, b and c"\n'
            "### BEGIN HIDDEN TESTS\n"
            'assert q2 == {"a", "c"}, "quiz 2 answer is wrong"\n'
            "### END HIDDEN TESTS",
            _nbgrader("test_q2", grade=True, locked=True, points=1),
        ),
        _cell("summary", "markdown", "## Summary\n\nThat is all."),
    ]
    for cell in cells:
        cell["source"] = cell["source"].splitlines(keepends=True)
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_fixture(path: Path = FIXTURE) -> Path:
    """Write the fixture notebook to `path` (byte-stable) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture_notebook(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_fixture())
