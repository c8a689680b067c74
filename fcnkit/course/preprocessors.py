"""nbgrader preprocessors that make grading robust; `nbgrader_config.py` installs them.

Four fixes over nbgrader 0.9.6's defaults (see `reference/nbgrader.md`, pitfalls 1, 3, 4):

- `RepairCellMetadata` runs first when sanitising a submission. A cell with old
  nbgrader metadata (say, pasted from an old notebook) raises `SchemaTooOldError`,
  which stops `nbgrader autograde` for *all* remaining students. Old metadata is
  upgraded, metadata nbgrader cannot read is removed (the cell stays).
- `DropDuplicateIds` replaces `DeduplicateIds`. When a student duplicates a graded
  cell, upstream empties the metadata of a copy (`metadata.nbgrader = {}`), which
  `CheckCellMetadata` then rejects, so the student gets no grade at all
  (nbgrader issue #1083). Here the *later* copy loses its `nbgrader` metadata and
  becomes an ordinary cell; the first copy is graded.
- `RestoreMissingCells` replaces `OverwriteCells`. With `add_missing_cells = True`
  it puts back deleted test cells (and deleted read-only cells) from the gradebook,
  after the closest preceding cell that is still there. Upstream's version raises a
  `KeyError` when that preceding cell is itself missing or read-only.
- `HideHiddenTestsInFeedback` runs first in `generate_feedback`: it removes the
  `### BEGIN HIDDEN TESTS` regions from every cell and rewrites error outputs, so
  feedback never quotes a hidden test. A failure inside a hidden region becomes
  one line, e.g. `AssertionError: a hidden test failed`; other tracebacks lose
  every line that quotes hidden text (IPython shows neighbouring lines).

Importing this module imports nbgrader (a few seconds); the rest of
`fcnkit.course` does not.
"""

from __future__ import annotations

import re

from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.nbgraderformat import MetadataValidator
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor, OverwriteCells
from traitlets import Bool, Unicode

from fcnkit.course._notebooks import HIDDEN_MARKERS, split_regions

__all__ = [
    "RepairCellMetadata",
    "DropDuplicateIds",
    "RestoreMissingCells",
    "HideHiddenTestsInFeedback",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Where the failing line of the cell is in an IPython traceback, newest format first.
_CELL_LINE = (
    re.compile(r"Cell In\s*\[\s*\d*\s*\],\s*line (\d+)"),
    re.compile(r"<ipython-input-[^>]*>.*?line (\d+)"),
    re.compile(r"^-*>\s*(\d+)\s", re.MULTILINE),
)
_LINE_PREFIX = re.compile(r"^\s*(?:-*>)?\s*\d*\s?")


class RepairCellMetadata(NbGraderPreprocessor):
    """Upgrade old nbgrader cell metadata; drop what cannot be upgraded."""

    def preprocess(self, nb, resources):
        validator = MetadataValidator()
        for index, cell in enumerate(nb.cells):
            meta = cell.get("metadata", {}).get("nbgrader")
            if meta is None:
                continue
            version = meta.get("schema_version", 0) if isinstance(meta, dict) else None
            if version == 3:
                continue
            try:
                if not isinstance(version, int) or version > 3:
                    raise ValueError(f"unknown schema_version {version!r}")
                validator.upgrade_cell_metadata(cell)
            except Exception as error:  # anything a student's notebook may hold
                self.log.warning("Cell %d: drops unreadable nbgrader metadata (%s)", index, error)
                cell.metadata.pop("nbgrader", None)
        return nb, resources


class DropDuplicateIds(NbGraderPreprocessor):
    """Keep the first cell of each `grade_id`; later copies become plain cells."""

    def preprocess(self, nb, resources):
        seen = set()
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader")
            if not meta or "grade_id" not in meta:
                continue
            grade_id = meta["grade_id"]
            if grade_id in seen:
                self.log.warning(
                    "Cell with id '%s' appears more than once; grading the first one and "
                    "treating the later copy as an ordinary cell.",
                    grade_id,
                )
                del cell.metadata["nbgrader"]
                for flag in ("deletable", "editable"):
                    cell.metadata.pop(flag, None)
            else:
                seen.add(grade_id)
        return nb, resources


class RestoreMissingCells(OverwriteCells):
    """`OverwriteCells` that also restores deleted test and read-only cells robustly.

    Missing cells are taken from the gradebook (which holds hidden tests) and
    inserted after the nearest earlier nbgrader cell still in the notebook (or at
    the top). Configure it with the usual `OverwriteCells.add_missing_cells = True`.
    """

    def add_missing_grade_cells(self, nb, resources):
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_cells = list(source_nb.source_cells)
        grade_cells = {cell.name: cell for cell in source_nb.grade_cells}
        solution_ids = {cell.name for cell in source_nb.solution_cells}
        task_ids = {cell.name for cell in source_nb.task_cells}

        for position, source_cell in enumerate(source_cells):
            name = source_cell.name
            present = self._positions(nb)
            if name in present or name in task_ids:
                continue
            if name in grade_cells:
                new_cell = self.missing_cell_transform(
                    source_cell, grade_cells[name].max_score, is_solution=name in solution_ids
                )
            elif source_cell.locked and name not in solution_ids:
                new_cell = self._read_only_cell(source_cell)
            else:
                continue  # a deleted answer cell: the student's loss, as upstream
            self.log.warning("Cell %s was missing from the submission; restored it.", name)
            if (nb.nbformat, nb.nbformat_minor) >= (4, 5):
                new_cell["id"] = re.sub(r"[^A-Za-z0-9_-]", "-", f"restored-{name}")[:64]
            index = 0
            for earlier in reversed(source_cells[:position]):
                if earlier.name in present:
                    index = present[earlier.name] + 1
                    break
            nb.cells.insert(index, new_cell)
        return nb, resources

    @staticmethod
    def _positions(nb):
        positions = {}
        for index, cell in enumerate(nb.cells):
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if grade_id is not None and grade_id not in positions:
                positions[grade_id] = index
        return positions

    def _read_only_cell(self, source_cell):
        cell = {
            "cell_type": source_cell.cell_type,
            "metadata": {
                "deletable": False,
                "editable": False,
                "nbgrader": {
                    "grade": False,
                    "grade_id": source_cell.name,
                    "locked": True,
                    "checksum": source_cell.checksum,
                    "cell_type": source_cell.cell_type,
                    "schema_version": 3,
                    "solution": False,
                },
            },
            "source": source_cell.source,
        }
        if source_cell.cell_type == "code":
            cell["execution_count"] = None
            cell["outputs"] = []
        return NotebookNode(cell)


class HideHiddenTestsInFeedback(ClearHiddenTests):
    """Strip hidden tests from feedback, including from tracebacks and outputs.

    Use it as the first of `GenerateFeedback.preprocessors`. Unlike
    `ClearHiddenTests` it accepts hidden regions in any cell and unbalanced
    markers (a student's notebook may contain anything).
    """

    enforce_metadata = Bool(False).tag(config=True)
    hidden_failure_message = Unicode(
        "a hidden test failed",
        help="What replaces the traceback of an error raised inside a hidden test region.",
    ).tag(config=True)

    def preprocess_cell(self, cell, resources, cell_index):
        regions = split_regions(cell.source, (self.begin_test_delimeter, self.end_test_delimeter))
        if not regions.found:
            return cell, resources
        hidden_numbers = {number for number, _ in regions.inside} | set(regions.markers)
        hidden_texts = {line.strip() for _, line in regions.inside if line.strip()}
        hidden_texts.update(self._marker_texts())
        if cell.cell_type == "code":
            cell.outputs = [
                self._sanitize(output, hidden_numbers, hidden_texts) for output in cell.outputs
            ]
        cell.source = "\n".join(line for _, line in regions.outside)
        if utils.is_grade(cell) is False and self.enforce_metadata:
            raise RuntimeError(
                "Hidden test region detected in a non-grade cell; put hidden tests only in "
                "'Autograder tests' cells."
            )
        return cell, resources

    def _marker_texts(self):
        return {self.begin_test_delimeter, self.end_test_delimeter, *HIDDEN_MARKERS}

    def _sanitize(self, output, hidden_numbers, hidden_texts):
        if output.get("output_type") == "error":
            traceback_text = _ANSI.sub("", "\n".join(output.get("traceback", [])))
            line = _failing_line(traceback_text)
            if line is not None and line in hidden_numbers:
                message = f"{output.get('ename', 'Error')}: {self.hidden_failure_message}"
                output.evalue = self.hidden_failure_message
                output.traceback = [message]
                return output
            output.traceback = _without_hidden(output.get("traceback", []), hidden_texts)
            if _quotes_hidden(output.get("evalue", ""), hidden_texts):
                output.evalue = self.hidden_failure_message
            return output
        if output.get("output_type") == "stream":
            lines = output.get("text", "").split("\n")
            output.text = "\n".join(_without_hidden(lines, hidden_texts))
        for mime, value in dict(output.get("data", {})).items():
            if isinstance(value, str) and _quotes_hidden(value, hidden_texts):
                del output.data[mime]
        return output


def _failing_line(traceback_text):
    """Line number of the failing line in the cell itself, or None if unknown."""
    for pattern in _CELL_LINE:
        match = pattern.search(traceback_text)
        if match:
            return int(match.group(1))
    return None


def _quotes_hidden(text, hidden_texts):
    plain = _ANSI.sub("", text)
    for line in plain.split("\n"):
        stripped = _LINE_PREFIX.sub("", line).strip()
        if not stripped:
            continue
        for hidden in hidden_texts:
            if stripped == hidden or (len(hidden) >= 4 and hidden in line):
                return True
    return False


def _without_hidden(chunks, hidden_texts):
    """Drop every line of `chunks` (strings, possibly multi-line) that quotes hidden text."""
    kept = []
    for chunk in chunks:
        lines = [line for line in chunk.split("\n") if not _quotes_hidden(line, hidden_texts)]
        if lines:
            kept.append("\n".join(lines))
    return kept
