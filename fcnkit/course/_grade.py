"""`grade`: headless autograding of a folder of submissions, scores table, CSV and feedback."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fcnkit.course._nbgrader import make_course_copy, run_nbgrader, scripts_path, tail
from fcnkit.course._notebooks import (
    CourseError,
    is_ignored,
    nbgrader_meta,
    read_notebook,
    require_assignments,
)

SUBMITTED = "submitted"
AUTOGRADED = "autograded"
FEEDBACK = "feedback"
COURSE_ID = "fcnkit"
# "lesson (1).ipynb", "lesson-Copy1.ipynb": names that browsers and Jupyter give to copies.
_COPY_SUFFIX = re.compile(r"(?:\s*\(\d+\)|-Copy\d+)+$")
_BAD_STUDENT = re.compile(r"[*?\[\]/\\]")


@dataclass
class Submission:
    """One submitted notebook, found in the folder given to `grade`."""

    student: str
    assignment: str
    notebook: str
    path: Path
    timestamp: Path | None = None


@dataclass
class Result:
    """The grade of one student on one assignment.

    Attributes:
        student: student id (the folder name).
        assignment: assignment name.
        scores: score of each graded cell, in notebook order (key: question column).
        max_scores: the maximum of each graded cell (same keys).
        score: total score.
        max_score: total maximum.
        status: "ok", "needs manual grading", or "error: ..." when nbgrader could not
            grade the notebook (then every score is 0).
        notes: remarks such as cells that timed out.
        feedback: the feedback HTML files of this submission (after `grade` copied them).
    """

    student: str
    assignment: str
    scores: dict[str, float]
    max_scores: dict[str, float]
    score: float
    max_score: float
    status: str = "ok"
    notes: list[str] = field(default_factory=list)
    feedback: list[Path] = field(default_factory=list)


@dataclass
class GradeReport:
    """What `grade` did: results, where it wrote them, what it skipped."""

    results: list[Result]
    csv_path: Path
    feedback_dir: Path
    skipped: list[str]
    workdir: Path | None
    columns: list[str]

    def result(self, student: str, assignment: str | None = None) -> Result:
        """The result of one student (on `assignment` if they have several)."""
        for result in self.results:
            if result.student == student and assignment in (None, result.assignment):
                return result
        raise KeyError(
            f"No result for student {student!r}"
            + (f" on {assignment!r}" if assignment else "")
            + f". Graded: {sorted({r.student for r in self.results})}."
        )


def _notebook_index(assignments: dict[str, list[Path]]) -> dict[str, tuple[str, str]]:
    """Map each notebook name to (assignment, notebook)."""
    index = {}
    for assignment, notebooks in assignments.items():
        for path in notebooks:
            index.setdefault(path.stem, (assignment, path.stem))
    return index


def _check_student(name: str, where: Path) -> str | None:
    if _BAD_STUDENT.search(name) or name.startswith("."):
        return (
            f"{where}: student folder name {name!r} contains characters nbgrader cannot use "
            "(* ? [ ] / \\ or a leading dot). Expected a plain student id. Rename the folder."
        )
    return None


def collect_submissions(
    folder: Path, assignments: dict[str, list[Path]]
) -> tuple[list[Submission], list[str]]:
    """Find submitted notebooks in `folder`, in either supported layout.

    Layouts (both may be mixed; a folder holding `submitted/` means that one):

    - `<student>/<notebook>.ipynb` (e.g. downloads from a learning platform;
      copies named `<notebook> (1).ipynb` or `<notebook>-Copy1.ipynb` are accepted);
    - nbgrader's `<student>/<assignment>/<notebook>.ipynb`, with an optional
      `timestamp.txt` beside it.

    Returns:
        The submissions found, and a message for each file that was skipped.

    Raises:
        CourseError: if `folder` does not exist or holds no usable submission.
    """
    folder = Path(folder)
    if (folder / SUBMITTED).is_dir():
        folder = folder / SUBMITTED
    if not folder.is_dir():
        raise CourseError(
            f"Submissions folder {folder} does not exist. Expected a folder with "
            "<student>/<assignment>.ipynb or <student>/<assignment>/<assignment>.ipynb."
        )
    index = _notebook_index(assignments)
    known = ", ".join(sorted(index))
    found: dict[tuple[str, str, str], Submission] = {}
    skipped = []
    for student_dir in sorted(p for p in folder.iterdir() if not is_ignored(p.name)):
        if not student_dir.is_dir():
            if student_dir.suffix == ".ipynb":
                skipped.append(
                    f"{student_dir}: notebook outside a student folder. Expected "
                    f"{folder}/<student>/{student_dir.name}. Move it into a folder named after "
                    "the student."
                )
            continue
        problem = _check_student(student_dir.name, student_dir)
        if problem:
            skipped.append(problem)
            continue
        student = student_dir.name
        candidates: dict[tuple[str, str], list[tuple[bool, Path, Path | None]]] = {}
        for path in sorted(student_dir.glob("*.ipynb")):
            stem = _COPY_SUFFIX.sub("", path.stem)
            if stem not in index:
                skipped.append(
                    f"{path}: no notebook named {stem!r} in the course. Expected one of: {known}. "
                    "Rename the file."
                )
                continue
            candidates.setdefault(index[stem], []).append((stem == path.stem, path, None))
        folders = sorted(p for p in student_dir.iterdir() if p.is_dir() and not is_ignored(p.name))
        for sub in folders:
            if sub.name not in assignments:
                skipped.append(
                    f"{sub}: no assignment named {sub.name!r} in the course. Expected one of: "
                    f"{', '.join(assignments)}."
                )
                continue
            timestamp = sub / "timestamp.txt"
            for path in sorted(sub.glob("*.ipynb")):
                stem = _COPY_SUFFIX.sub("", path.stem)
                if stem not in index or index[stem][0] != sub.name:
                    skipped.append(
                        f"{path}: no notebook named {stem!r} in assignment {sub.name!r}. Expected "
                        f"one of: {', '.join(p.stem for p in assignments[sub.name])}."
                    )
                    continue
                candidates.setdefault(index[stem], []).append(
                    (stem == path.stem, path, timestamp if timestamp.is_file() else None)
                )
        for (assignment, notebook), options in candidates.items():
            exact = [option for option in options if option[0]]
            chosen = exact if exact else options
            if len(chosen) > 1:
                skipped.append(
                    f"{student_dir}: {len(chosen)} files for notebook {notebook!r} "
                    f"({', '.join(str(o[1]) for o in chosen)}). Expected one. Keep only the "
                    "one to grade."
                )
                continue
            _, path, timestamp = chosen[0]
            found[(student, assignment, notebook)] = Submission(
                student, assignment, notebook, path, timestamp
            )
    if not found:
        raise CourseError(
            f"No submissions found in {folder}. Expected <student>/<notebook>.ipynb or "
            f"nbgrader's <student>/<assignment>/<notebook>.ipynb, with notebooks named like "
            f"the course's: {known}."
            + ("\nSkipped:\n  " + "\n  ".join(skipped) if skipped else "")
        )
    return list(found.values()), skipped


@contextlib.contextmanager
def _alembic_on_path():
    """nbgrader's Gradebook runs `alembic` from $PATH: make the venv's one visible."""
    old = os.environ.get("PATH")
    os.environ["PATH"] = scripts_path(old)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = old


def _grade_order(assignments: dict[str, list[Path]]) -> dict[str, list[tuple[str, str]]]:
    """(notebook, grade_id) of every graded cell of each assignment, in notebook order."""
    order = {}
    for assignment, notebooks in assignments.items():
        cells = []
        for path in notebooks:
            for cell in read_notebook(path)["cells"]:
                meta = nbgrader_meta(cell)
                if meta.get("grade") and meta.get("grade_id"):
                    cells.append((path.stem, meta["grade_id"]))
        order[assignment] = cells
    return order


def _columns(order: dict[str, list[tuple[str, str]]]) -> dict[tuple[str, str, str], str]:
    """A CSV column name for each (assignment, notebook, grade_id): the grade_id if unique."""
    keys = [(a, nb, gid) for a, cells in order.items() for nb, gid in cells]
    names = {}
    for assignment, notebook, grade_id in keys:
        same = [k for k in keys if k[2] == grade_id]
        if len(same) == 1:
            name = grade_id
        elif len({k[0] for k in same}) == len(same):
            name = f"{assignment}:{grade_id}"
        else:
            name = f"{assignment}/{notebook}:{grade_id}"
        names[(assignment, notebook, grade_id)] = name
    return names


def _timeouts(notebook_path: Path) -> list[str]:
    """Cells of an autograded notebook that hit the execution timeout."""
    try:
        nb = read_notebook(notebook_path)
    except CourseError:
        return []
    found = []
    for index, cell in enumerate(nb["cells"]):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") == "CellTimeoutError":
                found.append(nbgrader_meta(cell).get("grade_id") or f"cell {index}")
    return found


def _read_results(workdir, submissions, order, names) -> list[Result]:
    from nbgrader.api import Gradebook, MissingEntry

    results = []
    wanted = sorted({(s.student, s.assignment) for s in submissions})
    with _alembic_on_path(), Gradebook(f"sqlite:///{workdir / 'gradebook.db'}", COURSE_ID) as gb:
        for student, assignment in wanted:
            keys = [(nb, gid) for nb, gid in order[assignment]]
            scores = {names[(assignment, nb, gid)]: 0.0 for nb, gid in keys}
            max_scores = dict.fromkeys(scores, 0.0)
            needs_manual = False
            graded_dir = workdir / AUTOGRADED / student / assignment
            status = "ok"
            notes = []
            try:
                submission = gb.find_submission(assignment, student)
            except MissingEntry:
                submission = None
            if submission is not None:
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        key = names.get((assignment, notebook.name, grade.name))
                        if key is None:
                            continue
                        scores[key] = float(grade.score or 0.0)
                        max_scores[key] = float(grade.max_score or 0.0)
                        needs_manual |= bool(grade.needs_manual_grade)
            else:
                for nb, gid in keys:
                    cell = gb.find_graded_cell(gid, nb, assignment)
                    max_scores[names[(assignment, nb, gid)]] = float(cell.max_score)
            if submission is None or not graded_dir.is_dir():
                status = (
                    "error: nbgrader could not grade this submission "
                    "(rerun with --workdir DIR to keep nbgrader's log)"
                )
                scores = dict.fromkeys(scores, 0.0)
            elif needs_manual:
                status = "needs manual grading"
            for path in sorted(graded_dir.glob("*.ipynb")) if graded_dir.is_dir() else []:
                for cell in _timeouts(path):
                    notes.append(f"timeout in {path.stem}:{cell}")
            results.append(
                Result(
                    student,
                    assignment,
                    scores,
                    max_scores,
                    sum(scores.values()),
                    sum(max_scores.values()),
                    status,
                    notes,
                )
            )
    return results


def _fmt(value: float) -> str:
    return f"{value:g}"


def write_csv(results: list[Result], columns: list[str], path: Path) -> Path:
    """Write one row per (student, assignment): per-question scores, total, maximum, status."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "assignment", *columns, "score", "max_score", "status"])
        for r in results:
            row = [r.student, r.assignment]
            row += [_fmt(r.scores[c]) if c in r.scores else "" for c in columns]
            status = "; ".join([r.status, *r.notes])
            writer.writerow([*row, _fmt(r.score), _fmt(r.max_score), status])
    return path


def format_table(results: list[Result], columns: list[str]) -> str:
    """The scores as a plain-text table (one row per student and assignment)."""
    header = ["student", "assignment", *columns, "total", "status"]
    rows = [
        [
            r.student,
            r.assignment,
            *[
                f"{_fmt(r.scores[c])}/{_fmt(r.max_scores[c])}" if c in r.scores else ""
                for c in columns
            ],
            f"{_fmt(r.score)}/{_fmt(r.max_score)}",
            "; ".join([r.status, *r.notes]),
        ]
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def grade(
    submissions_dir: Path | str,
    root: Path | str = ".",
    *,
    out_csv: Path | str = "grades.csv",
    timeout: int | None = None,
    workdir: Path | str | None = None,
    echo: Callable[[str], None] | None = print,
) -> GradeReport:
    """Autograde every submission in a folder with nbgrader, headless.

    nbgrader runs in a temporary copy of the course (or in `workdir`):
    `generate_assignment` (it fills the gradebook from `solutions/`, hidden tests
    included), `autograde` (sequential; deleted, duplicated and edited test cells are
    restored, foreign kernels replaced, cells that run past `timeout` interrupted),
    then `generate_feedback` (hidden tests and their tracebacks removed).

    Args:
        submissions_dir: `<student>/<notebook>.ipynb` or nbgrader's
            `submitted/<student>/<assignment>/<notebook>.ipynb` layout.
        root: the course root (holds `nbgrader_config.py` and `solutions/`).
        out_csv: where to write the scores; feedback goes to `feedback/` beside it,
            as `feedback/<student>/<assignment>/<notebook>.html`.
        timeout: seconds per cell (default: `ExecutePreprocessor.timeout` of the config).
        workdir: keep nbgrader's course folder there (gradebook.db, autograded/, logs)
            instead of a temporary folder; its previous results are removed first.
        echo: where progress and the table go (`None` for silence).

    Returns:
        A `GradeReport` with one `Result` per student and assignment.

    Raises:
        CourseError: if the course or the submissions cannot be used, or nbgrader
            cannot even start grading.
    """
    say = echo or (lambda _line: None)
    root = Path(root).resolve()
    assignments = require_assignments(root)
    submissions, skipped = collect_submissions(Path(submissions_dir), assignments)
    for message in skipped:
        say(f"skipped: {message}")
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise CourseError(
            f"timeout must be a positive whole number of seconds. Received: timeout={timeout!r}."
        )
    out_csv = Path(out_csv).resolve()
    feedback_dir = out_csv.parent / FEEDBACK

    with contextlib.ExitStack() as stack:
        if workdir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fcnkit-grade-")))
        else:
            work = Path(workdir).resolve()
            if work.exists() and any(work.iterdir()) and not (work / "grading.log").is_file():
                raise CourseError(
                    f"--workdir {work} is not empty and was not made by a previous grade run "
                    "(no grading.log). Expected a new or empty folder, since grading removes "
                    "its submitted/, autograded/, feedback/ and lessons/. Choose another folder."
                )
            for name in (SUBMITTED, AUTOGRADED, FEEDBACK, "lessons"):
                if (work / name).exists():
                    shutil.rmtree(work / name)
            for name in ("gradebook.db", "grading.log"):
                (work / name).unlink(missing_ok=True)
        make_course_copy(root, work)
        log = work / "grading.log"
        for s in submissions:
            target = work / SUBMITTED / s.student / s.assignment / f"{s.notebook}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.path, target)
            if s.timestamp is not None:
                shutil.copyfile(s.timestamp, target.parent / "timestamp.txt")
        students = sorted({s.student for s in submissions})
        say(f"Grading {len(submissions)} notebook(s) of {len(students)} student(s) in {work}")

        code, output = run_nbgrader(["generate_assignment", "*", "--force"], work, log_file=log)
        if code != 0:
            raise CourseError(
                f"nbgrader generate_assignment failed (exit {code}), so nothing was graded. "
                f"Expected valid source notebooks. Run `python -m fcnkit course check`. "
                f"nbgrader said:\n{tail(output)}"
            )
        args = ["autograde", "*", "--force"]
        if timeout is not None:
            args.append(f"--ExecutePreprocessor.timeout={timeout}")

        graded_root = work / AUTOGRADED
        attempted = set()

        def progress(line: str) -> None:
            if "Sanitizing " in line:
                path = Path(line.split("Sanitizing ", 1)[1].strip())
                with contextlib.suppress(ValueError):
                    attempted.add(path.relative_to(work / SUBMITTED).parts[0])
            elif "Autograding " in line:
                path = Path(line.split("Autograding ", 1)[1].strip())
                with contextlib.suppress(ValueError):
                    say(f"  grading {path.relative_to(graded_root).as_posix()}")
            elif "| ERROR]" in line:
                say(f"  {line.strip()}")

        code, _ = run_nbgrader(args, work, log_file=log, on_line=progress)
        if code != 0:
            # nbgrader skips a submission it cannot grade, but a few errors (an old
            # metadata format, say) stop the whole run: grade the rest one by one.
            missing = [student for student in students if student not in attempted]
            say(f"nbgrader autograde reported errors (exit {code}).")
            if missing:
                say(f"Grading the {len(missing)} student(s) it did not reach one at a time.")
            for student in missing:
                run_nbgrader([*args, f"--student={json.dumps(student)}"], work, log_file=log,
                             on_line=progress)
        code_feedback, output_feedback = run_nbgrader(
            ["generate_feedback", "*", "--force"], work, log_file=log
        )
        if code_feedback != 0:
            say(f"nbgrader generate_feedback reported errors:\n{tail(output_feedback, 12)}")

        order = _grade_order(assignments)
        names = _columns(order)
        results = _read_results(work, submissions, order, names)
        graded = {r.assignment for r in results}
        columns = [names[(a, nb, gid)] for a in assignments if a in graded for nb, gid in order[a]]

        for result in results:
            source = work / FEEDBACK / result.student / result.assignment
            target = feedback_dir / result.student / result.assignment
            if target.exists():
                shutil.rmtree(target)
            if source.is_dir():
                shutil.copytree(source, target)
                result.feedback = sorted(target.glob("*.html"))
            if not result.feedback:
                result.notes.append("no feedback")
        write_csv(results, columns, out_csv)
        kept = work if workdir is not None else None

    say("")
    say(format_table(results, columns))
    say("")
    say(f"Scores: {out_csv}")
    say(f"Feedback for students: {feedback_dir}/<student>/<assignment>/<notebook>.html")
    if kept is not None:
        say(f"nbgrader course folder (gradebook, autograded notebooks, grading.log): {kept}")
    return GradeReport(results, out_csv, feedback_dir, skipped, kept, columns)
