"""`build`: regenerate `lessons/` from `solutions/` with nbgrader generate_assignment."""

from __future__ import annotations

import filecmp
import shutil
import tempfile
from pathlib import Path

from fcnkit.course._nbgrader import make_course_copy, run_nbgrader, tail
from fcnkit.course._notebooks import (
    RELEASE_DIR,
    CourseError,
    dumps_notebook,
    read_notebook,
    require_assignments,
    walk_files,
)


def _normalise_notebook(path: Path) -> None:
    """Rewrite a generated notebook canonically: stable cell ids, sorted keys, final newline."""
    nb = read_notebook(path)
    used = set()
    for index, cell in enumerate(nb["cells"]):
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not cell_id or cell_id in used:
            if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) >= (4, 5):
                cell_id = f"cell-{index}"
                cell["id"] = cell_id
        used.add(cell_id)
    path.write_text(dumps_notebook(nb), encoding="utf-8")


def generate_lessons(root: Path, destination: Path) -> dict[str, Path]:
    """Generate the student version of every assignment of `root` into `destination`.

    nbgrader runs in a temporary copy of the course, so `root` is left untouched
    (no gradebook.db). Each notebook is then rewritten in canonical form so that
    two runs give the same bytes.

    Args:
        root: the course root (holds nbgrader_config.py and solutions/).
        destination: a folder that receives `<assignment>/...` for each assignment.

    Returns:
        The generated folder of each assignment, by assignment name.

    Raises:
        CourseError: if there is no assignment or nbgrader fails.
    """
    root = Path(root).resolve()
    assignments = require_assignments(root)
    destination = Path(destination)
    with tempfile.TemporaryDirectory(prefix="fcnkit-generate-") as tmp:
        work = make_course_copy(root, Path(tmp) / "course")
        code, output = run_nbgrader(["generate_assignment", "*", "--force"], work)
        if code != 0:
            raise CourseError(
                f"nbgrader generate_assignment failed for the course at {root} (exit {code}). "
                "Expected every notebook under solutions/ to be a valid nbgrader source. "
                f"Fix the notebook named in nbgrader's output:\n{tail(output)}"
            )
        generated = {}
        for assignment in assignments:
            folder = work / RELEASE_DIR / assignment
            if not folder.is_dir():
                raise CourseError(
                    f"nbgrader wrote no lessons/{assignment}/ for solutions/{assignment}/. "
                    f"Expected one notebook per source notebook. nbgrader said:\n{tail(output)}"
                )
            for path in folder.rglob("*.ipynb"):
                _normalise_notebook(path)
            target = destination / assignment
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(folder, target)
            generated[assignment] = target
    return generated


def _same_tree(left: Path, right: Path) -> bool:
    left_files = [p.relative_to(left) for p in walk_files(left)]
    right_files = [p.relative_to(right) for p in walk_files(right)]
    if left_files != right_files:
        return False
    return all(filecmp.cmp(left / p, right / p, shallow=False) for p in left_files)


def build(root: Path | str = ".", *, verbose: bool = False) -> list[Path]:
    """Regenerate every `lessons/<assignment>/` of a course from `solutions/<assignment>/`.

    The output is deterministic (byte-identical across runs). Lesson folders
    whose solutions no longer exist are removed, since `lessons/` is generated.
    Nothing else in `root` is written: nbgrader runs in a temporary copy.

    Args:
        root: the course root, the folder holding `nbgrader_config.py`.
        verbose: print one line per assignment.

    Returns:
        The lesson folders that changed (written or removed).

    Raises:
        CourseError: if the course has no solutions or nbgrader fails.
    """
    root = Path(root).resolve()
    lessons = root / RELEASE_DIR
    changed = []
    with tempfile.TemporaryDirectory(prefix="fcnkit-build-") as tmp:
        generated = generate_lessons(root, Path(tmp))
        lessons.mkdir(exist_ok=True)
        for assignment, folder in generated.items():
            target = lessons / assignment
            if target.is_dir() and _same_tree(folder, target):
                status = "unchanged"
            else:
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(folder, target)
                changed.append(target)
                status = "written"
            if verbose:
                print(f"{RELEASE_DIR}/{assignment}/: {status}")
    for stale in sorted(p for p in lessons.iterdir() if p.is_dir() and p.name not in generated):
        if stale.name.startswith("."):
            continue
        shutil.rmtree(stale)
        changed.append(stale)
        if verbose:
            print(f"{RELEASE_DIR}/{stale.name}/: removed (no solutions/{stale.name}/)")
    return changed
