"""Reading course notebooks as plain JSON, and finding their nbgrader regions.

Nothing here imports nbformat or nbgrader (each takes seconds to import on a
small machine), so `python -m fcnkit course check` stays fast.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = "solutions"
RELEASE_DIR = "lessons"
CONFIG_FILE = "nbgrader_config.py"

# nbgrader's default `CourseDirectory.ignore`: never copied from solutions/<a>/.
IGNORED_NAMES = (".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback")

# (begin marker, end marker) of the regions that generate_assignment removes.
SOLUTION_MARKERS = ("BEGIN SOLUTION", "END SOLUTION")
HIDDEN_MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
MARK_SCHEME_MARKERS = ("BEGIN MARK SCHEME", "END MARK SCHEME")
ALL_MARKERS = SOLUTION_MARKERS + HIDDEN_MARKERS + MARK_SCHEME_MARKERS


class CourseError(Exception):
    """A course folder, notebook or submission that the pipeline cannot use."""


def is_ignored(name: str) -> bool:
    """Whether a file or folder name is one nbgrader skips when copying."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in IGNORED_NAMES)


def walk_files(folder: Path) -> list[Path]:
    """All files under `folder` (sorted), skipping the names of `IGNORED_NAMES`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if not is_ignored(f))
    return found


def read_notebook(path: Path) -> dict:
    """Read a notebook as a JSON dict.

    Raises:
        CourseError: if the file is not valid notebook JSON.
    """
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CourseError(
            f"Cannot read notebook {path}: {error}. Expected a Jupyter notebook "
            "(JSON, nbformat 4). Re-save it from JupyterLab."
        ) from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise CourseError(
            f"Cannot read notebook {path}: no list of cells. Expected a Jupyter notebook "
            "(JSON, nbformat 4). Re-save it from JupyterLab."
        )
    return nb


def dumps_notebook(nb: dict) -> str:
    """Serialise a notebook the way nbformat does, with one trailing newline."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def cell_source(cell: dict) -> str:
    """The source of a cell as one string (notebooks store a list of lines)."""
    source = cell.get("source", "")
    return "".join(map(str, source)) if isinstance(source, list) else str(source)


def nbgrader_meta(cell: dict) -> dict:
    """The `metadata.nbgrader` dict of a cell ({} if absent)."""
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    meta = metadata.get("nbgrader", {}) if isinstance(metadata, dict) else {}
    return meta if isinstance(meta, dict) else {}


def is_grade(cell: dict) -> bool:
    return bool(nbgrader_meta(cell).get("grade", False))


def is_solution(cell: dict) -> bool:
    return bool(nbgrader_meta(cell).get("solution", False))


def is_test_cell(cell: dict) -> bool:
    """An autograder test cell: graded, not an answer, code."""
    return cell.get("cell_type") == "code" and is_grade(cell) and not is_solution(cell)


@dataclass
class Regions:
    """Lines of a cell source split by one kind of region marker.

    Attributes:
        inside: (line number from 1, text) of lines strictly inside a region.
        outside: (line number, text) of lines outside every region; marker lines excluded.
        markers: line numbers of the marker lines themselves.
        error: a description if the markers are nested or unbalanced, else "".
    """

    inside: list[tuple[int, str]]
    outside: list[tuple[int, str]]
    markers: list[int]
    error: str = ""

    @property
    def found(self) -> bool:
        return bool(self.markers)


def split_regions(source: str, markers: tuple[str, str]) -> Regions:
    """Split `source` into lines inside and outside `markers` regions.

    A line that contains the begin (end) marker text opens (closes) a region,
    as in nbgrader's ClearSolutions and ClearHiddenTests.

    Example:

    >>> regions = split_regions("a = 1\\n### BEGIN HIDDEN TESTS\\nb = 2\\n### END HIDDEN TESTS",
    ...                         HIDDEN_MARKERS)
    >>> regions.inside, regions.outside, regions.markers
    ([(3, 'b = 2')], [(1, 'a = 1')], [2, 4])
    """
    begin, end = markers
    inside, outside, marker_lines = [], [], []
    error = ""
    in_region = False
    for number, line in enumerate(source.split("\n"), start=1):
        if begin in line:
            marker_lines.append(number)
            if in_region and not error:
                error = f"nested '{begin}' at line {number}"
            in_region = True
        elif end in line:
            marker_lines.append(number)
            if not in_region and not error:
                error = f"'{end}' without '{begin}' at line {number}"
            in_region = False
        elif in_region:
            inside.append((number, line))
        else:
            outside.append((number, line))
    if in_region and not error:
        error = f"'{begin}' without '{end}'"
    return Regions(inside, outside, marker_lines, error)


def secret_line_numbers(cell: dict) -> tuple[set[int], str]:
    """Line numbers (from 1) of a cell's source that students must never see.

    Those are the lines of solution regions (the whole cell for an answer cell
    without markers), hidden-test regions and mark-scheme regions, marker lines
    included. Returns the set and an error description ("" if well formed).
    """
    source = cell_source(cell)
    numbers: set[int] = set()
    errors = []
    solution = split_regions(source, SOLUTION_MARKERS)
    if is_solution(cell) and not solution.found:
        numbers.update(range(1, len(source.split("\n")) + 1))
    for markers in (SOLUTION_MARKERS, HIDDEN_MARKERS, MARK_SCHEME_MARKERS):
        regions = solution if markers is SOLUTION_MARKERS else split_regions(source, markers)
        numbers.update(number for number, _ in regions.inside)
        numbers.update(regions.markers)
        if regions.error:
            errors.append(regions.error)
    return numbers, "; ".join(errors)


def find_assignments(root: Path) -> dict[str, list[Path]]:
    """Map each assignment of `root/solutions/` to its notebooks (sorted).

    An assignment is a folder `solutions/<assignment>/` holding at least one
    `.ipynb` file directly inside it (nbgrader's layout).
    """
    source = Path(root) / SOURCE_DIR
    assignments = {}
    if not source.is_dir():
        return assignments
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and not is_ignored(p.name)):
        notebooks = sorted(folder.glob("*.ipynb"))
        if notebooks:
            assignments[folder.name] = notebooks
    return assignments


def require_assignments(root: Path) -> dict[str, list[Path]]:
    """Like `find_assignments`, but raise a helpful error if there are none.

    Raises:
        CourseError: if `root/solutions/` holds no assignment notebook.
    """
    assignments = find_assignments(root)
    if not assignments:
        raise CourseError(
            f"No solutions found under {Path(root) / SOURCE_DIR}. Expected "
            f"{SOURCE_DIR}/<assignment>/<assignment>.ipynb (nbgrader source notebooks). "
            "Pass --root with the course root (the folder holding nbgrader_config.py)."
        )
    return assignments
