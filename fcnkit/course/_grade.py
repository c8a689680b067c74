"""`grade`: headless autograding of a folder of submissions, scores table, CSV and feedback."""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import json
import math
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fcnkit._validation import check_positive_int
from fcnkit.course._nbgrader import make_course_copy, run_nbgrader, scripts_path, tail
from fcnkit.course._notebooks import (
    CourseError,
    is_ignored,
    nbgrader_meta,
    read_notebook,
    require_assignments,
)
from fcnkit.course._review import read_events, review
from fcnkit.course._sandbox import (
    INSTALL_HINT,
    RECORDS_DIR,
    SCRATCH_DIR,
    detect,
    events_file,
    exposed,
    grading_environment,
    inside_python_roots,
    install_kernelspec,
    nbgrader_arguments,
    records_folder,
)

SUBMITTED = "submitted"
AUTOGRADED = "autograded"
FEEDBACK = "feedback"
COURSE_ID = "fcnkit"
REFERENCE = "fcnkit-reference"  # the solutions, graded first to calibrate the time limits
REPORT = "grading_report.md"
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
    note: str = ""


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
        status: "ok"; "flagged: ..." with what deserves the instructor's look (see
            `flags`); "needs manual grading"; or "error: ..." when nbgrader could not
            grade the notebook (then every score is 0).
        notes: remarks, e.g. which of several copies was graded.
        feedback: the feedback HTML files of this submission (after `grade` copied them).
        flags: what deserves a look, each naming the cell by its grade_id: edited or
            deleted test cells (restored), extra cells, file access outside the
            student's folder, replaced module functions, IPython hooks, timeouts...
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
    flags: list[str] = field(default_factory=list)


@dataclass
class Limits:
    """The time limits of one assignment while grading (seconds)."""

    cell: int
    notebook: int
    how: str

    def describe(self) -> str:
        return f"{self.cell} s per cell, {self.notebook} s for the whole notebook"


@dataclass
class GradeReport:
    """What `grade` did: results, where it wrote them, what it skipped, how it ran.

    Attributes:
        sandbox: the sandbox student code ran in (`"bwrap"`, `"user"` or `"none"`).
        sandbox_notes: why a better sandbox was not used.
        limits: the time limits of each assignment.
        reference: the score of the solutions themselves under grading, per assignment.
        report_path: the instructor report (Markdown).
    """

    results: list[Result]
    csv_path: Path
    feedback_dir: Path
    skipped: list[str]
    workdir: Path | None
    columns: list[str]
    sandbox: str = "none"
    sandbox_notes: list[str] = field(default_factory=list)
    limits: dict[str, Limits] = field(default_factory=dict)
    reference: dict[str, tuple[float, float]] = field(default_factory=dict)
    report_path: Path | None = None

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
    if name == REFERENCE:
        return (
            f"{where}: the student id {name!r} is reserved for the grader's run of the "
            "solutions. Rename the folder."
        )
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
      copies named `<notebook> (1).ipynb` or `<notebook>-Copy1.ipynb` are accepted:
      of several copies, the most recently modified is graded, with a note);
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
        for key, options in list(candidates.items()):
            options[:] = [o for o in options if o[1].is_file()]  # not a folder, a dead link
            if not options:
                del candidates[key]
        for (assignment, notebook), options in candidates.items():
            _, path, timestamp = max(options, key=lambda o: (o[1].stat().st_mtime, o[0]))
            note = ""
            if len(options) > 1:
                others = ", ".join(repr(o[1].name) for o in options if o[1] != path)
                note = (f"graded {path.name!r}, the most recently modified of {len(options)} "
                        f"copies (not {others})")
            found[(student, assignment, notebook)] = Submission(
                student, assignment, notebook, path, timestamp, note
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


def _read_results(work: Path, students, wanted, order, names) -> list[Result]:
    """Results of `wanted` (student, assignment) pairs from the gradebook of `work`."""
    from nbgrader.api import Gradebook, MissingEntry

    results = []
    with _alembic_on_path(), Gradebook(f"sqlite:///{work / 'gradebook.db'}", COURSE_ID) as gb:
        for student, assignment in wanted:
            if student not in students:
                continue
            keys = list(order[assignment])
            scores = {names[(assignment, nb, gid)]: 0.0 for nb, gid in keys}
            max_scores = dict.fromkeys(scores, 0.0)
            needs_manual = False
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
            status = "ok"
            if submission is None or not (work / AUTOGRADED / student / assignment).is_dir():
                status = (
                    "error: nbgrader could not grade this submission "
                    "(rerun with --workdir DIR to keep nbgrader's log)"
                )
                scores = dict.fromkeys(scores, 0.0)
            elif needs_manual:
                status = "needs manual grading"
            results.append(Result(student, assignment, scores, max_scores,
                                  sum(scores.values()), sum(max_scores.values()), status))
    return results


def _review_result(result, submissions, work, lessons, notebooks) -> list[str]:
    """The flags of one result (all its notebooks)."""
    flags = []
    for path in notebooks:
        name = path.stem
        submission = submissions.get((result.student, result.assignment, name))
        try:
            submitted = read_notebook(submission.path) if submission else None
        except CourseError:
            submitted = None
        released = read_notebook(lessons / result.assignment / f"{name}.ipynb")
        graded_path = work / AUTOGRADED / result.student / result.assignment / f"{name}.ipynb"
        try:
            graded = read_notebook(graded_path) if graded_path.is_file() else None
        except CourseError:
            graded = None
        records = records_folder(work, result.student, result.assignment)
        record_path = records / f"{name}.json"
        try:
            record = json.loads(record_path.read_text("utf-8"))
        except (OSError, ValueError):
            record = None
        events = read_events(records / events_file(name))
        known = {nbgrader_meta(c).get("grade_id") for c in read_notebook(path)["cells"]}
        found = review(submitted, released, graded, record, events, known - {None})
        prefix = f"{name}: " if len(notebooks) > 1 else ""
        flags += [prefix + flag for flag in found]
    return flags


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
            writer.writerow([*row, _fmt(r.score), _fmt(r.max_score), _status_text(r)])
    return path


def _status_text(result: Result) -> str:
    return "; ".join([result.status, *result.notes])


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
            _status_text(r),
        ]
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_options(timeout, budget, jobs) -> tuple[int | None, int | None, int]:
    """`grade`'s counts, checked (ints or NumPy integers, 1 or more; None for a default).

    Raises:
        TypeError, ValueError: for a count that is not a positive integer.
    """
    timeout = None if timeout is None else check_positive_int(timeout, "timeout")
    budget = None if budget is None else check_positive_int(budget, "budget")
    return timeout, budget, check_positive_int(jobs, "jobs")


class _Progress:
    """A progress bar over the notebooks being graded, shared by the parallel jobs."""

    def __init__(self, total: int, say: Callable[[str], None]):
        self.total, self.done, self.say = total, 0, say
        self.lock = threading.Lock()

    def step(self, what: str) -> None:
        with self.lock:
            self.done += 1
            filled = round(20 * self.done / max(self.total, 1))
            self.say(f"  [{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} {what}")


class _Job:
    """One nbgrader course copy that grades a share of the students."""

    def __init__(self, folder: Path, mode: str, runtime: Path, protected: list[Path]):
        self.folder = folder
        install_kernelspec(folder, mode, runtime, protected)
        self.env = grading_environment(folder, runtime)
        self.kernel_args = nbgrader_arguments(mode, runtime)
        self.log = folder / "grading.log"

    def run(self, args, on_line=None):
        return run_nbgrader(args, self.folder, log_file=self.log, on_line=on_line, env=self.env)

    def autograde(self, assignment, students, limits, progress):
        args = ["autograde", assignment, "--force", *self.kernel_args,
                f"--GradingExecute.timeout={limits.cell}",
                f"--GradingExecute.budget={limits.notebook}",
                f"--GradingExecute.records_dir={self.folder / RECORDS_DIR}",
                f"--GradingExecute.scratch_dir={self.folder / SCRATCH_DIR}"]
        attempted = set()

        def follow(line: str) -> None:
            if "Sanitizing " in line:
                path = Path(line.split("Sanitizing ", 1)[1].strip())
                with contextlib.suppress(ValueError):
                    relative = path.relative_to(self.folder / SUBMITTED)
                    attempted.add(relative.parts[0])
                    if progress is not None:
                        progress.step(relative.parent.as_posix())

        code, _ = self.run(args, follow)
        if code != 0:
            # nbgrader skips a submission it cannot grade, but a few errors (an old
            # metadata format, say) stop the whole run: grade the rest one by one.
            for student in [s for s in students if s not in attempted]:
                # nbgrader reads a number as a number: quote ids made of digits only
                quoted = json.dumps(student) if student.isdigit() else student
                self.run([*args, f"--student={quoted}"], follow)

    def feedback(self, assignment, limits):
        code, output = self.run(["generate_feedback", assignment, "--force",
                                 f"--FeedbackOnly.limits={limits.describe()}"])
        return "" if code == 0 else tail(output, 12)


def _calibrate(job, assignments, timeout, budget, say) -> tuple[dict, dict]:
    """Grade the solutions once; derive each assignment's limits from their run times.

    The limit per cell is ten times the slowest cell of the solutions (at least
    30 s); the budget per notebook is ten times their total run time, and at
    least two cell limits. `timeout` and `budget` override them.
    """
    for assignment, notebooks in assignments.items():
        for path in notebooks:
            target = job.folder / SUBMITTED / REFERENCE / assignment / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    limits, reference = {}, {}
    first = Limits(timeout or 600, 0, "for the reference run")
    for assignment in assignments:
        say(f"Timing the solutions of {assignment} (the reference run)")
        job.autograde(assignment, [REFERENCE], first, None)
        slowest, total = 0.0, 0.0
        records = list(records_folder(job.folder, REFERENCE, assignment).glob("*.json"))
        if not records:
            raise CourseError(
                f"The solutions of {assignment} could not be run under grading, so nothing "
                "was graded. Expected the solution notebooks to run top to bottom. Rerun with "
                "--workdir DIR and read DIR/job-1/grading.log."
            )
        for record_path in records:
            cells = json.loads(record_path.read_text("utf-8")).get("cells", [])
            slowest = max([slowest, *(c["seconds"] for c in cells)])
            total = max(total, sum(c["seconds"] for c in cells))
        cell = timeout or max(30, math.ceil(10 * slowest))
        notebook = budget or max(2 * cell, math.ceil(10 * total))
        how = {(True, True): "as given", (False, False): "calibrated on the solutions",
               (True, False): "per cell as given, per notebook calibrated on the solutions",
               (False, True): "per cell calibrated on the solutions, per notebook as given"}
        limits[assignment] = Limits(cell, notebook, how[timeout is not None, budget is not None])
    order = _grade_order(assignments)
    names = _columns(order)
    wanted = [(REFERENCE, a) for a in assignments]
    for result in _read_results(job.folder, {REFERENCE}, wanted, order, names):
        reference[result.assignment] = (result.score, result.max_score)
    shutil.rmtree(job.folder / SUBMITTED / REFERENCE)
    if (job.folder / AUTOGRADED / REFERENCE).is_dir():  # kept for the instructor, not graded
        shutil.move(str(job.folder / AUTOGRADED / REFERENCE), str(job.folder.parent / REFERENCE))
    return limits, reference


def _write_report(path: Path, report: GradeReport) -> Path:
    """The instructor report: how grading ran, and per student what deserves a look."""
    lines = ["# Grading report", ""]
    if report.sandbox == "none":
        lines += [
            "**Student code ran without a sandbox**: it could read the solutions and the "
            "gradebook, and write outside its folder. " + " ".join(report.sandbox_notes)
            + f". {INSTALL_HINT}, then grade again.", ""]
    else:
        lines += [(f"Student code ran in the `{report.sandbox}` sandbox. "
                   + " ".join(report.sandbox_notes)).rstrip(), ""]
    for assignment, limits in report.limits.items():
        score = report.reference.get(assignment)
        lines.append(f"- {assignment}: time limits {limits.describe()} ({limits.how})"
                     + (f"; the solutions score {_fmt(score[0])}/{_fmt(score[1])}"
                        if score else ""))
        if score and score[0] < score[1]:
            lines.append(f"  **The solutions of {assignment} do not score full marks under "
                         "grading**: check the lesson before trusting these grades.")
    lines += ["", "## Submissions that deserve a look", ""]
    flagged = [r for r in report.results if r.flags or r.status.startswith("error")]
    for result in flagged:
        lines.append(f"### {result.student} ({result.assignment}): "
                     f"{_fmt(result.score)}/{_fmt(result.max_score)}")
        lines += [f"- {text}" for text in result.flags]
        if result.status.startswith("error"):
            lines.append(f"- {result.status}")
        lines.append("")
    if not flagged:
        lines += ["None.", ""]
    if report.skipped:
        lines += ["## Files not graded", "", *[f"- {message}" for message in report.skipped], ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def grade(
    submissions_dir: Path | str,
    root: Path | str = ".",
    *,
    out_csv: Path | str = "grades.csv",
    timeout: int | None = None,
    budget: int | None = None,
    jobs: int = 1,
    sandbox: str = "auto",
    workdir: Path | str | None = None,
    echo: Callable[[str], None] | None = print,
) -> GradeReport:
    """Autograde every submission in a folder with nbgrader, headless and sandboxed.

    nbgrader runs in a temporary copy of the course (or in `workdir`):
    `generate_assignment` (it fills the gradebook from `solutions/`, hidden tests
    included); a reference run of the solutions, which times their cells to set
    the limits and checks that they score full marks; `autograde` (deleted,
    duplicated and edited test cells are restored, foreign kernels replaced,
    student code runs in a sandbox, cells that run past the limits interrupted);
    then `generate_feedback` (code, scores and the failing checks' messages; no
    output of student code, no hidden test). Each result is reviewed for what
    deserves the instructor's look (`Result.flags`), written to the CSV's status
    column and to `grading_report.md` beside it.

    Args:
        submissions_dir: `<student>/<notebook>.ipynb` or nbgrader's
            `submitted/<student>/<assignment>/<notebook>.ipynb` layout.
        root: the course root (holds `nbgrader_config.py` and `solutions/`).
        out_csv: where to write the scores; feedback goes to `feedback/` beside it,
            as `feedback/<student>/<assignment>/<notebook>.html`.
        timeout: seconds per cell (default: ten times the slowest cell of the
            solutions, at least 30).
        budget: seconds per notebook (default: ten times the solutions' run time,
            at least twice the cell limit).
        jobs: how many students are graded at once, each job in a course copy of
            its own (same scores as one at a time).
        sandbox: `"auto"` (the best that works here), `"bwrap"`, `"user"` or `"none"`.
        workdir: keep nbgrader's course folders there (gradebook.db, autograded/, logs)
            instead of a temporary folder; its previous results are removed first.
        echo: where progress and the table go (`None` for silence).

    Returns:
        A `GradeReport` with one `Result` per student and assignment.

    Raises:
        TypeError, ValueError: for a count that is not a positive integer.
        CourseError: if the course, the sandbox or the submissions cannot be used,
            or nbgrader cannot even start grading.
    """
    say = echo or (lambda _line: None)
    timeout, budget, jobs = check_options(timeout, budget, jobs)
    root = Path(root).resolve()
    assignments = require_assignments(root)
    try:
        mode, sandbox_notes = detect(sandbox)
    except ValueError as error:
        raise CourseError(str(error)) from None
    if mode == "user":
        sandbox_notes += [w for w in (exposed(root / "solutions"), exposed(root)) if w]
    if mode == "bwrap" and inside_python_roots(root):
        raise CourseError(
            f"The course {root} lies inside {inside_python_roots(root)}, which the sandbox "
            "shows to student code. Expected a course folder outside the Python installation. "
            "Move the course, or grade from a copy elsewhere."
        )
    submissions, skipped = collect_submissions(Path(submissions_dir), assignments)
    for message in skipped:
        say(f"skipped: {message}")
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
                    "its previous results. Choose another folder."
                )
            if work.exists():
                shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        work.chmod(0o700)  # the solutions and gradebooks inside are the grader's alone
        (work / "grading.log").write_text("fcnkit course grade: logs are in job-*/\n", "utf-8")
        runtime_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fcnkit-")))
        runtime_root.chmod(0o711)  # traversable: the user sandbox's kernels have homes inside
        if mode == "none":
            say("No sandbox: student code can read the solutions and the gradebook. "
                + " ".join(sandbox_notes) + f". {INSTALL_HINT}.")
        else:
            say(f"Student code runs in the {mode!r} sandbox.")

        students = sorted({s.student for s in submissions})
        groups = [students[k::jobs] for k in range(min(jobs, len(students)))]
        first = work / "job-1"
        make_course_copy(root, first)
        protected = [root / "solutions"]
        job = _Job(first, mode, runtime_root / "1", protected)
        code, output = job.run(["generate_assignment", "*", "--force"])
        if code != 0:
            raise CourseError(
                f"nbgrader generate_assignment failed (exit {code}), so nothing was graded. "
                f"Expected valid source notebooks. Run `python -m fcnkit course check`. "
                f"nbgrader said:\n{tail(output)}"
            )
        job_list = [job]
        for number in range(2, len(groups) + 1):
            folder = work / f"job-{number}"
            shutil.copytree(first, folder, ignore=shutil.ignore_patterns(
                "grading.log", AUTOGRADED, SUBMITTED, FEEDBACK, RECORDS_DIR))
            job_list.append(_Job(folder, mode, runtime_root / str(number), protected))

        limits, reference = _calibrate(job, assignments, timeout, budget, say)
        for assignment, limit in limits.items():
            say(f"{assignment}: {limit.describe()}; the solutions score "
                f"{_fmt(reference[assignment][0])}/{_fmt(reference[assignment][1])}")

        by_key = {(s.student, s.assignment, s.notebook): s for s in submissions}
        for group, each in zip(groups, job_list):
            for s in submissions:
                if s.student in group:
                    folder = each.folder / SUBMITTED / s.student / s.assignment
                    target = folder / f"{s.notebook}.ipynb"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(s.path, target)
                    if s.timestamp is not None:
                        shutil.copyfile(s.timestamp, target.parent / "timestamp.txt")
        pairs = sorted({(s.student, s.assignment) for s in submissions})
        progress = _Progress(len(submissions), say)
        say(f"Grading {len(submissions)} notebook(s) of {len(students)} student(s) "
            f"in {len(job_list)} job(s), in {work}")
        problems = []

        def run_job(group, each):
            for assignment in assignments:
                mine = [s for s, a in pairs if a == assignment and s in group]
                if mine:
                    each.autograde(assignment, mine, limits[assignment], progress)
                    problem = each.feedback(assignment, limits[assignment])
                    if problem:
                        problems.append(f"nbgrader generate_feedback reported errors:\n{problem}")

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(job_list)) as pool:
            for future in [pool.submit(run_job, g, j) for g, j in zip(groups, job_list)]:
                future.result()
        for problem in problems:
            say(problem)

        order = _grade_order(assignments)
        names = _columns(order)
        results = []
        for group, each in zip(groups, job_list):
            results += _read_results(each.folder, set(group), pairs, order, names)
            for name in (AUTOGRADED, FEEDBACK, RECORDS_DIR):
                for student in group:
                    if (each.folder / name / student).is_dir():
                        (work / name).mkdir(exist_ok=True)
                        shutil.move(str(each.folder / name / student), str(work / name / student))
        results.sort(key=lambda r: (r.student, list(assignments).index(r.assignment)))
        graded = {r.assignment for r in results}
        columns = [names[(a, nb, gid)] for a in assignments if a in graded for nb, gid in order[a]]

        lessons = first / "lessons"
        for result in results:
            result.notes += [s.note for s in submissions
                             if (s.student, s.assignment) == (result.student, result.assignment)
                             and s.note]
            try:
                result.flags = _review_result(result, by_key, work, lessons,
                                              assignments[result.assignment])
            except Exception as error:  # a hostile notebook must not stop the run
                result.flags = [f"could not be reviewed ({type(error).__name__}): look at it"]
            if result.flags and result.status == "ok":
                result.status = "flagged: " + "; ".join(result.flags)
            source = work / FEEDBACK / result.student / result.assignment
            target = feedback_dir / result.student / result.assignment
            if target.exists():
                shutil.rmtree(target)
            for notebook in assignments[result.assignment]:  # the pages, nothing else
                page = source / f"{notebook.stem}.html"
                if page.is_file() and not page.is_symlink():
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(page, target / page.name)
                    result.feedback.append(target / page.name)
            if not result.feedback:
                result.notes.append("no feedback")
        write_csv(results, columns, out_csv)
        kept = work if workdir is not None else None
        report = GradeReport(results, out_csv, feedback_dir, skipped, kept, columns, mode,
                             sandbox_notes, limits, reference)
        report.report_path = _write_report(out_csv.parent / REPORT, report)

    say("")
    say(format_table(results, columns))
    say("")
    say(f"Scores: {out_csv}")
    say(f"Instructor report (what deserves a look): {report.report_path}")
    say(f"Feedback for students: {feedback_dir}/<student>/<assignment>/<notebook>.html")
    if kept is not None:
        say(f"nbgrader course folders (gradebooks, autograded notebooks, logs): {kept}")
    return report
