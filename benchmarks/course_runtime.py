"""Runtime of every solution notebook, against the course's time budgets.

Executes each `solutions/<NN_topic>/<NN_topic>.ipynb` top to bottom with
nbclient (kernel `python3`), as the grader does: in a throw-away copy of its
folder (the working tree stays clean; nothing is written back), with
`NBGRADER_EXECUTION=autograde` so that the notebook takes its fast grading path.
`--full` leaves that variable out and sets `FCNKIT_FULL=1`, so the lecture
version runs even on a machine without a GPU.

Prints one row per notebook (seconds, budget, status) and the total against the
course budget. Budgets (design, section 7): 90 s per notebook and 10 minutes for
the whole course on 2 CPU cores. The time includes starting the kernel.

Exit code: 1 if a notebook raised an error or timed out, else 0. Running over a
budget prints a warning line but is not a failure: benchmarks report, they do
not assert.

Usage:
    .venv/bin/python benchmarks/course_runtime.py [--full] [NOTEBOOK_OR_NAME ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from fcnkit.course import KERNEL_ENV

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_BUDGET_S = 90.0
COURSE_BUDGET_S = 600.0


def find_notebooks(root: Path, selection: list[str]) -> list[Path]:
    """`solutions/*/*.ipynb` under `root`, optionally only those named in `selection`."""
    notebooks = sorted(
        path for path in (root / "solutions").glob("*/*.ipynb")
        if ".ipynb_checkpoints" not in path.parts
    )
    if not selection:
        return notebooks
    chosen = []
    for item in selection:
        matches = [
            path for path in notebooks
            if item in (path.stem, path.parent.name, path.name)
            or Path(item).resolve() == path.resolve()
        ]
        if not matches:
            names = ", ".join(path.stem for path in notebooks) or "none"
            raise SystemExit(
                f"course_runtime.py: no solution notebook matches {item!r}. "
                f"Available: {names}."
            )
        chosen += [path for path in matches if path not in chosen]
    return chosen


def first_error(notebook) -> str:
    """`cell N: Ename: value` of the first cell whose outputs hold an error."""
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                value = str(output.get("evalue", "")).strip().splitlines()
                return f"cell {index}: {output.get('ename')}: {value[0] if value else ''}"[:200]
    return ""


def execute(path: Path, cell_timeout: int) -> tuple[float, str]:
    """Runs one notebook in a copy of its folder; returns (seconds, error or '')."""
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="fcnkit-course-") as scratch:
        workdir = Path(scratch) / path.parent.name
        shutil.copytree(
            path.parent, workdir,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )
        client = NotebookClient(
            notebook,
            timeout=cell_timeout,
            startup_timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
        )
        kernel_log = Path(scratch) / "kernel.log"
        start = time.perf_counter()
        error = ""
        # The kernel's own stdout/stderr (TF start-up logs) go to a file, not the table.
        with kernel_log.open("wb") as log:
            try:
                client.execute(stdout=log, stderr=log)
            except CellTimeoutError:
                error = f"a cell ran over the {cell_timeout} s cell timeout"
            except DeadKernelError as exception:
                error = f"the kernel died ({exception})"[:200]
            except CellExecutionError as exception:
                error = first_error(notebook) or str(exception).strip().splitlines()[-1][:200]
            except Exception as exception:  # noqa: BLE001 (report anything, keep going)
                error = f"{type(exception).__name__}: {exception}"[:200]
        seconds = time.perf_counter() - start
    return seconds, error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Execute every solution notebook and compare its runtime with the budget."
    )
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK_OR_NAME",
                        help="only these notebooks (path, file name or NN_topic); default: all")
    parser.add_argument("--full", action="store_true",
                        help="run the lecture version (no NBGRADER_EXECUTION, FCNKIT_FULL=1)")
    parser.add_argument("--budget", type=float, default=NOTEBOOK_BUDGET_S,
                        help=f"seconds allowed per notebook ({NOTEBOOK_BUDGET_S:.0f})")
    parser.add_argument("--course-budget", type=float, default=COURSE_BUDGET_S,
                        help=f"seconds allowed for the whole course ({COURSE_BUDGET_S:.0f})")
    parser.add_argument("--cell-timeout", type=int, default=600,
                        help="seconds before a single cell counts as hung (600)")
    parser.add_argument("--root", type=Path, default=REPO,
                        help="course root holding solutions/ (the repository)")
    args = parser.parse_args(argv)

    # The kernel inherits this process's environment.
    os.environ.update(KERNEL_ENV)
    if args.full:
        os.environ.pop("NBGRADER_EXECUTION", None)
        os.environ["FCNKIT_FULL"] = "1"
        mode = "full lecture version (NBGRADER_EXECUTION unset, FCNKIT_FULL=1)"
    else:
        os.environ["NBGRADER_EXECUTION"] = "autograde"
        os.environ.pop("FCNKIT_FULL", None)
        mode = "fast grading path (NBGRADER_EXECUTION=autograde)"

    notebooks = find_notebooks(args.root.resolve(), args.notebooks)
    print(f"course runtime: {mode}, kernel python3, {os.cpu_count()} CPU cores")
    if not notebooks:
        print(f"no solution notebooks found under {args.root / 'solutions'} "
              "(solutions/<NN_topic>/<NN_topic>.ipynb): nothing to run.")
        return 0

    rows = []
    width = max(len("notebook"), *(len(path.stem) for path in notebooks))
    header = f"{'notebook':<{width}}  {'seconds':>8}  {'budget':>6}  status"
    print(header)
    print("-" * len(header))
    for path in notebooks:
        seconds, error = execute(path, args.cell_timeout)
        if error:
            status = "ERROR"
        elif seconds > args.budget:
            status = "OVER BUDGET"
        else:
            status = "ok"
        rows.append((path, seconds, status, error))
        print(f"{path.stem:<{width}}  {seconds:8.1f}  {args.budget:6.0f}  {status}", flush=True)
        if error:
            print(f"{'':<{width}}  -> {error}", flush=True)
    total = sum(seconds for _, seconds, _, _ in rows)
    total_status = "ok" if total <= args.course_budget else "OVER BUDGET"
    print("-" * len(header))
    print(f"{'total':<{width}}  {total:8.1f}  {args.course_budget:6.0f}  {total_status}")

    over = [path.stem for path, _, status, _ in rows if status == "OVER BUDGET"]
    if over:
        print(f"WARNING: over the {args.budget:.0f} s notebook budget: {', '.join(over)}")
    if total_status != "ok":
        print(f"WARNING: the course takes {total:.0f} s, over its "
              f"{args.course_budget:.0f} s budget")
    if args.full and (over or total_status != "ok"):
        print("(the budgets are for the fast grading path; --full runs the lecture version)")
    errors = [path.stem for path, _, status, _ in rows if status == "ERROR"]
    if errors:
        print(f"FAILED: {len(errors)} notebook(s) raised an error: {', '.join(errors)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
