"""Every instructor notebook executes top to bottom, as the grader runs it.

Each `solutions/<assignment>/*.ipynb` (found at run time) runs in a fresh
`python3` kernel with `NBGRADER_EXECUTION=autograde` (so the lessons take their
FAST path) and the grading environment (`fcnkit.course.KERNEL_ENV`), from its own
folder, with 300 s per cell. Any error fails the test and names the cell.
`make test` runs each real lesson once only, in `tests/test_course.py`, whose
grading of the real course first runs the solutions (and checks their full
marks) then grades the blank lessons (0); these per-lesson runs are for lesson
authors: `FCNKIT_TEST_LESSONS=1 pytest tests/test_notebooks.py -k 03`.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from fcnkit.course import KERNEL_ENV

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "course_fixtures" / "00_fixture" / "00_fixture.ipynb"
CELL_TIMEOUT = 300
SOLUTIONS = sorted((REPO / "solutions").glob("*/*.ipynb"))


def execute(path: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run a notebook like nbgrader autograde does; return it with its outputs."""
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    for name, value in KERNEL_ENV.items():
        monkeypatch.setenv(name, value)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{path.relative_to(REPO)} failed while executing:\n{error}", pytrace=False)
    return nb


def test_fixture_solution_notebook_executes(monkeypatch):
    nb = execute(FIXTURE, monkeypatch)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors == []
    assert sum(c.cell_type == "code" and c.execution_count is not None for c in nb.cells) == 10


@pytest.mark.slow
@pytest.mark.skipif(not SOLUTIONS, reason="no solutions/<assignment>/*.ipynb in the repository yet")
@pytest.mark.skipif(
    os.environ.get("FCNKIT_TEST_LESSONS") != "1",
    reason="make test runs each lesson once, in the grading of the real course "
    "(tests/test_course.py: the reference run of the solutions). Set FCNKIT_TEST_LESSONS=1 "
    "to run them here, with the failing cell named.",
)
@pytest.mark.parametrize(
    "path", SOLUTIONS, ids=[p.relative_to(REPO / "solutions").as_posix() for p in SOLUTIONS]
)
def test_solution_notebook_executes(path, monkeypatch):
    nb = execute(path, monkeypatch)
    code_cells = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count is not None for c in code_cells)
