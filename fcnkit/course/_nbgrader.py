"""Running the nbgrader command line in a throw-away copy of a course."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from fcnkit.course._notebooks import (
    CONFIG_FILE,
    SOURCE_DIR,
    CourseError,
    is_ignored,
)

# Environment of nbgrader and of the kernels it starts (kernels inherit it).
KERNEL_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "KERAS_BACKEND": "tensorflow",
}


def scripts_path(path: str | None = None) -> str:
    """`path` (default: $PATH) with this interpreter's scripts folder first.

    nbgrader's Gradebook runs the `alembic` command, which lives beside the
    interpreter in a virtual environment that is not activated.
    """
    path = os.environ.get("PATH", "") if path is None else path
    scripts = str(Path(sys.executable).parent)
    parts = path.split(os.pathsep) if path else []
    return os.pathsep.join([scripts, *[p for p in parts if p != scripts]])


def nbgrader_env() -> dict[str, str]:
    """The environment for nbgrader subprocesses: ours plus `KERNEL_ENV`."""
    env = dict(os.environ)
    env.update(KERNEL_ENV)
    env["PATH"] = scripts_path(env.get("PATH"))
    env["JUPYTER_PLATFORM_DIRS"] = "1"  # no "Jupyter is migrating its paths" warning
    env["PYTHONWARNINGS"] = env.get("PYTHONWARNINGS") or "ignore::DeprecationWarning"
    # Grading is always the fast path of the lessons, whatever the caller has set.
    env.pop("NBGRADER_EXECUTION", None)
    return env


def _copy_ignore(_folder, names):
    return [name for name in names if is_ignored(name)]


def make_course_copy(root: Path, workdir: Path) -> Path:
    """Copy what nbgrader needs from course `root` into `workdir` and return it.

    Copies `nbgrader_config.py` (which computes the course root from its own
    location, so the copy is a course of its own) and `solutions/`.

    Raises:
        CourseError: if `root` has no `nbgrader_config.py`.
    """
    root, workdir = Path(root).resolve(), Path(workdir).resolve()
    config = root / CONFIG_FILE
    if not config.is_file():
        raise CourseError(
            f"No {CONFIG_FILE} in {root}. Expected the course root (the folder holding "
            f"{CONFIG_FILE}, {SOURCE_DIR}/ and lessons/). Pass --root with that folder."
        )
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(config, workdir / CONFIG_FILE)
    if (workdir / SOURCE_DIR).exists():
        shutil.rmtree(workdir / SOURCE_DIR)
    shutil.copytree(root / SOURCE_DIR, workdir / SOURCE_DIR, ignore=_copy_ignore)
    return workdir


def run_nbgrader(
    args: Sequence[str],
    course_dir: Path,
    *,
    log_file: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Run `python -m nbgrader ARGS` in `course_dir`; return (exit code, output).

    Args:
        args: nbgrader arguments, e.g. `["generate_assignment", "*", "--force"]`.
        course_dir: the course root to run in (holds nbgrader_config.py).
        log_file: if given, the full output is appended to it.
        on_line: called with each line of output as it comes (progress reports).
        env: more environment entries for nbgrader (and the kernels it starts).
    """
    command = [sys.executable, "-m", "nbgrader", *args]
    process = subprocess.Popen(
        command,
        cwd=course_dir,
        env={**nbgrader_env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if on_line is not None:
            on_line(line.rstrip("\n"))
    returncode = process.wait()
    output = "".join(lines)
    if log_file is not None:
        with open(log_file, "a", encoding="utf-8") as handle:
            handle.write(f"$ nbgrader {' '.join(args)}  (exit {returncode})\n{output}\n")
    return returncode, output


def tail(text: str, lines: int = 30) -> str:
    """The last `lines` lines of `text`, indented, for error messages."""
    return "\n".join("    " + line for line in text.rstrip().split("\n")[-lines:])
