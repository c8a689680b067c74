"""nbgrader preprocessors that make grading robust; `nbgrader_config.py` installs them.

Fixes over nbgrader 0.9.6's defaults (see `reference/nbgrader.md`, pitfalls 1, 3, 4, 5),
and what makes grading safe from hostile submissions:

- `RepairCellMetadata` runs first when sanitising a submission. A cell with old
  nbgrader metadata (say, pasted from an old notebook) raises `SchemaTooOldError`,
  which stops `nbgrader autograde` for *all* remaining students. Old metadata is
  upgraded, metadata nbgrader cannot read is removed (the cell stays).
- `DropDuplicateIds` replaces `DeduplicateIds`. When a student duplicates a graded
  cell, upstream empties the metadata of a copy (`metadata.nbgrader = {}`), which
  `CheckCellMetadata` then rejects, so the student gets no grade at all
  (nbgrader issue #1083). Here the *later* copy loses its `nbgrader` metadata and
  becomes an ordinary cell; the first copy is graded.
- `DropUnknownIds`: a cell of another release (a grade_id this one lacks) becomes
  an ordinary cell instead of failing the whole notebook.
- `RestoreMissingCells` replaces `OverwriteCells`. With `add_missing_cells = True`
  it puts back deleted test cells (and deleted read-only cells) from the gradebook,
  after the closest preceding cell that is still there. Upstream's version raises a
  `KeyError` when that preceding cell is itself missing or read-only.
- `GradingExecute` replaces `Execute`: a time budget per notebook on top of the
  per-cell timeout, outputs cut at a size, a dead kernel that fails its cell
  instead of the notebook, an integrity probe, and a record of the run.
- `FeedbackOnly` runs first in `generate_feedback`: feedback keeps the code and
  the scores, drops every output, and says for each failing test cell which
  visible check failed (from the instructor's source) or that a hidden one did.

Importing this module imports nbgrader (a few seconds); the rest of
`fcnkit.course` does not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from nbclient.client import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.nbgraderformat import MetadataValidator
from nbgrader.preprocessors import ClearHiddenTests, Execute, NbGraderPreprocessor, OverwriteCells
from traitlets import Bool, Integer, Unicode

from fcnkit.course._notebooks import split_regions
from fcnkit.course._review import failure_message, hidden_line_numbers
from fcnkit.course._sandbox import ENV_NOTEBOOK

__all__ = [
    "RepairCellMetadata",
    "DropDuplicateIds",
    "DropUnknownIds",
    "RestoreMissingCells",
    "GradingExecute",
    "FeedbackOnly",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Where the failing line of the cell is in an IPython traceback, newest format first.
_CELL_LINE = (
    re.compile(r"Cell In\s*\[\s*\d*\s*\],\s*line (\d+)"),
    re.compile(r"<ipython-input-[^>]*>.*?line (\d+)"),
    re.compile(r"^-*>\s*(\d+)\s", re.MULTILINE),
)


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


class DropUnknownIds(NbGraderPreprocessor):
    """Cells whose grade_id this release does not know become ordinary cells.

    A notebook from an older release may carry a renamed or removed cell;
    nbgrader would then fail the whole notebook. Here such a cell keeps its
    code (it still runs) and loses its nbgrader metadata; the grader reports it.
    """

    def preprocess(self, nb, resources):
        from nbgrader.api import Gradebook

        nbgrader = resources["nbgrader"]
        with Gradebook(nbgrader["db_url"]) as gradebook:
            notebook = gradebook.find_notebook(nbgrader["notebook"], nbgrader["assignment"])
            known = {cell.name for cell in notebook.source_cells}
        for cell in nb.cells:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if grade_id is not None and grade_id not in known:
                self.log.warning("Cell %s is not in this release; graded as ordinary code.",
                                 grade_id)
                del cell.metadata["nbgrader"]
                for flag in ("deletable", "editable"):
                    cell.metadata.pop(flag, None)
        return nb, resources


class GradingExecute(Execute):
    """nbgrader's `Execute` with a time budget per notebook, capped outputs and a record.

    - Each cell may run `timeout` seconds, and the whole notebook `budget`
      seconds (0: no budget): once the budget is spent, the kernel is stopped
      and the cells left are not run (they score 0), so a function that hangs
      in four cells costs one budget, not four timeouts.
    - A cell's printed output is cut after `max_output_chars` characters, its
      figures and other rich outputs after `max_display_chars`.
    - A kernel that dies (`os._exit`, a signal, `exit()`), or that ignores the
      interrupt after a timeout, fails its cell; the cells after it are not run,
      and the rest of the run goes on.
    - The kernel works in a copy of the notebook's folder (`scratch_dir`): the
      folder nbgrader grades and publishes from is out of its reach.
    - After the last cell, a probe checks that a failing check still fails
      (hooks or custom exception handlers can make every check pass) and
      lists IPython hooks left registered.
    - What happened is written as JSON to
      `records_dir/<student>/<assignment>/<notebook>.json`: per code cell its
      index, grade_id, seconds, timeout, characters of output and whether they
      were cut; why the run stopped;
      the probe's findings.
    """

    budget = Integer(0, help="Seconds for the whole notebook (0: no budget).").tag(config=True)
    max_output_chars = Integer(
        100_000, help="Characters of printed text kept per cell while grading."
    ).tag(config=True)
    max_display_chars = Integer(
        5_000_000, help="Characters of figures and other rich outputs kept per cell."
    ).tag(config=True)
    records_dir = Unicode("", help="Folder for the execution records (empty: none).").tag(
        config=True
    )
    scratch_dir = Unicode(
        "", help="Folder of the kernels' working copies (empty: the graded notebook's folder)."
    ).tag(config=True)
    # Widget state is runtime data that HTML exporters embed: never keep it.
    store_widget_state = Bool(False)

    def preprocess(self, nb, resources=None, km=None):
        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        per_cell = self.timeout
        self._output_chars = {}
        self._cut = set()
        record = {"timeout": per_cell, "budget": self.budget, "cells": [], "stopped": None,
                  "probe": None}
        stopped = None
        path = self.resources.get("metadata", {}).get("path")
        scratch = self._scratch_copy(path)
        try:
            with self.setup_kernel():
                info = self.wait_for_reply(self.kc.kernel_info())
                self.nb.metadata["language_info"] = info["content"]["language_info"]
                baseline = self._hooks()
                started = time.monotonic()  # the budget counts the cells, not the start-up
                for index, cell in enumerate(self.nb.cells):
                    if cell.cell_type != "code" or not cell.source.strip():
                        continue
                    if stopped is None and self.budget:
                        left = self.budget - (time.monotonic() - started)
                        if left < 1:
                            stopped = {"reason": "time budget spent", "index": index}
                        else:
                            self.timeout = max(1, min(per_cell or left, int(left)))
                    if stopped is not None:
                        cell.outputs = [_error_output("NotRun", _NOT_RUN[stopped["reason"]])]
                        continue
                    began = time.monotonic()
                    try:
                        self.preprocess_cell(cell, resources, index)
                    except DeadKernelError:
                        cell.outputs.append(_error_output(
                            "DeadKernelError", "The kernel died while running this cell."))
                        stopped = {"reason": "kernel died", "index": index}
                    except CellTimeoutError:  # interrupted, and still not idle
                        cell.outputs.append(NotebookNode(self.error_on_timeout,
                                                         output_type="error"))
                        stopped = {"reason": "kernel did not stop after a timeout",
                                   "index": index}
                    record["cells"].append({
                        "index": index,
                        "grade_id": cell.metadata.get("nbgrader", {}).get("grade_id"),
                        "seconds": round(time.monotonic() - began, 3),
                        "timed_out": any(o.get("ename") == "CellTimeoutError"
                                         for o in cell.outputs),
                        "output_chars": sum(self._output_chars.get((index, stream), 0)
                                            for stream in (True, False)),
                        "output_cut": index in self._cut,
                    })
                if stopped is None:
                    record["probe"] = self._probe(baseline)
        finally:
            self.timeout = per_cell
            if scratch is not None:
                self.resources["metadata"]["path"] = path
                shutil.rmtree(scratch, ignore_errors=True)
        record["stopped"] = stopped
        self._write_record(record)
        return self.nb, self.resources

    def _scratch_copy(self, path):
        """Point the kernel at a fresh copy of the notebook's folder, without notebooks.

        nbgrader runs the kernel in the folder of its graded notebook, which already
        holds the hidden tests, and later copies, chmods and publishes what is there:
        student code must never touch it. The copy has the instructor's data files
        only (regular files and folders); it is deleted after the run.
        """
        if not self.scratch_dir or not path:
            return None
        names = self.resources.get("nbgrader", {})
        scratch = Path(self.scratch_dir).joinpath(
            *(names.get(key, "unknown") for key in ("student", "assignment", "notebook")))
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        for item in Path(path).iterdir():
            if item.is_symlink() or item.suffix == ".ipynb":
                continue
            if item.is_dir():
                shutil.copytree(item, scratch / item.name, symlinks=True)
            elif item.is_file():
                shutil.copy2(item, scratch / item.name)
        self.resources["metadata"]["path"] = str(scratch)
        return scratch

    def start_new_kernel(self, **kwargs):
        # The kernel's launcher names the event log after the notebook.
        notebook = self.resources.get("nbgrader", {}).get("notebook", "notebook")
        kwargs["env"] = {**os.environ, ENV_NOTEBOOK: notebook}
        return super().start_new_kernel(**kwargs)

    def handle_comm_msg(self, outs, msg, cell_index):
        """Ignore comm messages: grading needs no widgets, and nbclient's widget code
        fails the whole notebook on a malformed one."""

    def output(self, outs, msg, display_id, cell_index):
        stream = msg["msg_type"] == "stream"
        limit = self.max_output_chars if stream else self.max_display_chars
        key = (cell_index, stream)
        size = _message_chars(msg)
        used = self._output_chars.get(key, 0)
        self._output_chars[key] = used + size
        if used + size <= limit:
            return super().output(outs, msg, display_id, cell_index)
        self._cut.add(cell_index)
        if used < limit and stream:
            msg["content"]["text"] = msg["content"]["text"][: limit - used] + (
                f"\n[output cut while grading: over {limit} characters]\n"
            )
            return super().output(outs, msg, display_id, cell_index)
        return None

    def _run_quietly(self, code):
        """Run `code` in the kernel outside the notebook; return (status, stdout)."""
        cell = NotebookNode(cell_type="code", source=code, metadata={}, outputs=[],
                            execution_count=None)
        self.nb.cells.append(cell)  # nbclient writes the executed cell back at its index
        try:
            self.execute_cell(cell, len(self.nb.cells) - 1, store_history=False)
        except Exception:  # a dead or stuck kernel: nothing to learn
            return None, ""
        finally:
            self.nb.cells.pop()
        status = "error" if any(o.output_type == "error" for o in cell.outputs) else "ok"
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        return status, text

    def _hooks(self):
        status, text = self._run_quietly(_HOOKS_PROBE)
        try:
            return json.loads(text.strip().splitlines()[-1]) if status == "ok" else None
        except (ValueError, IndexError):
            return None

    def _probe(self, baseline):
        status, _ = self._run_quietly("assert False, 'fcnkit grading canary'")
        probe = {"canary_failed": None if status is None else status == "error", "hooks": []}
        after = self._hooks()
        if baseline is not None and after is not None:
            probe["hooks"] = sorted(
                name for name, count in after.items() if count > baseline.get(name, 0)
            )
        return probe

    def _write_record(self, record):
        if not self.records_dir:
            return
        names = self.resources.get("nbgrader", {})
        folder = Path(self.records_dir) / names.get("student", "unknown") / names.get(
            "assignment", "unknown")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{names.get('notebook', 'notebook')}.json"
        path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


_NOT_RUN = {
    "time budget spent": "Not run: the notebook's time budget was spent.",
    "kernel died": "Not run: the kernel died in an earlier cell.",
    "kernel did not stop after a timeout": (
        "Not run: an earlier cell ran past its time limit and ignored the interrupt."
    ),
}
_HOOKS_PROBE = """\
def _fcnkit_hooks():
    import json, sys
    shell = get_ipython()
    def mine(hooks):  # defined in the notebook, not by a library (matplotlib's figures)
        return sum(getattr(h, "__module__", None) in (None, "__main__") for h in hooks)
    counts = {f"event {k}": mine(v) for k, v in shell.events.callbacks.items()}
    counts["input transformers"] = (mine(shell.input_transformers_cleanup)
                                    + mine(shell.input_transformers_post))
    counts["AST transformers"] = mine(shell.ast_transformers)
    counts["custom exception handlers"] = len(shell.custom_exceptions)
    counts["trace function"] = int(sys.gettrace() is not None)
    print(json.dumps(counts))
_fcnkit_hooks()
del _fcnkit_hooks
"""


def _error_output(name, text):
    return NotebookNode(output_type="error", ename=name, evalue=text, traceback=[f"{name}: {text}"])


def _message_chars(msg):
    content = msg.get("content", {})
    if "text" in content:
        return len(content["text"])
    return sum(len(v) if isinstance(v, str) else len(json.dumps(v))
               for v in content.get("data", {}).values())


class FeedbackOnly(ClearHiddenTests):
    """Feedback shows the student's code and the results of the checks, nothing printed.

    Use it as the first of `GenerateFeedback.preprocessors`. Every output is
    removed (student code ran during grading and could print anything, even a
    hidden test it captured, in any encoding). A failing test cell gets one
    message written from the instructor's source (`_review.failure_message`):
    the visible check that failed and its message as written, or "A hidden
    test failed". Hidden regions are removed from every cell (markers may be
    unbalanced: a student's notebook may contain anything). A first cell
    states the time limits (`limits`) and that printed output is not shown.
    """

    enforce_metadata = Bool(False).tag(config=True)
    limits = Unicode("", help="The grading time limits, stated at the top of the feedback.").tag(
        config=True
    )

    def preprocess(self, nb, resources):
        nb, resources = super().preprocess(nb, resources)
        # Notebook metadata may hold runtime data (widget state) that HTML embeds.
        nb.metadata = NotebookNode(
            {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")})
        note = (
            "**About this feedback.** It shows your code, your scores and the checks that "
            "failed. What your code printed while it was graded is not shown: run the "
            "notebook yourself to see it."
        )
        if self.limits:
            note += f" Time limits while grading: {self.limits}."
        nb.cells.insert(0, NotebookNode(cell_type="markdown", metadata={}, source=note))
        return nb, resources

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code":
            return cell, resources
        source = cell.source
        hidden = hidden_line_numbers(source)
        errors = any(o.get("output_type") == "error" for o in cell.outputs)
        stderr = any(o.get("output_type") == "stream" and o.get("name") == "stderr"
                     for o in cell.outputs)
        line, assertion = None, True
        for output in cell.outputs:
            if output.get("output_type") == "error":
                line = _failing_line(_ANSI.sub("", "\n".join(output.get("traceback", []))))
                assertion = output.get("ename") == "AssertionError"
                break
        cell.outputs = []
        cell.execution_count = None
        cell.metadata = NotebookNode(
            {k: v for k, v in cell.metadata.items() if k == "nbgrader"})
        if utils.is_grade(cell) and not utils.is_solution(cell) and (errors or stderr):
            message = (failure_message(source, line, hidden, assertion) if errors else
                       "This test cell wrote to stderr while it ran (a warning, say), which "
                       "counts as a failure.")
            cell.outputs = [NotebookNode(output_type="stream", name="stderr", text=message + "\n")]
        regions = split_regions(source, (self.begin_test_delimeter, self.end_test_delimeter))
        if regions.found:
            cell.source = "\n".join(line for _, line in regions.outside)
        return cell, resources


def _failing_line(traceback_text):
    """Line number of the failing line in the cell itself, or None if unknown."""
    for pattern in _CELL_LINE:
        match = pattern.search(traceback_text)
        if match:
            return int(match.group(1))
    return None
