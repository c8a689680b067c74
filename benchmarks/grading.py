"""Grading time per student: one job vs several (`python -m fcnkit course grade --jobs N`).

Hands in `--students` copies of each real lesson answered with its solutions, then grades
them twice in one run of this script: with one job, then with `--jobs` jobs (each job a
course copy of its own, its students graded in their own nbgrader process). Both runs use
the sandbox `grade` picks by itself and the limits it calibrates on the solutions.

Prints, for each run, the seconds spent on the students (after the shared start: generating
the assignment and timing the solutions) per student, the whole run, and the ratio one job /
N jobs. Exit code 1 if a student does not get full marks or the two runs disagree on a
score: benchmarks report times, they fail only on wrong results.

Usage:
    .venv/bin/python benchmarks/grading.py [--students 4] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from fcnkit import course  # noqa: E402
from fcnkit.course._notebooks import cell_source, dumps_notebook, nbgrader_meta  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def answered(lesson: dict, source: dict) -> dict:
    """The lesson with every answer cell taken from the instructor notebook."""
    answers = {
        nbgrader_meta(c)["grade_id"]: cell_source(c)
        for c in source["cells"]
        if nbgrader_meta(c).get("solution") and not nbgrader_meta(c).get("grade")
    }
    for cell in lesson["cells"]:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    return lesson


def timed_grade(incoming: Path, jobs: int, folder: Path):
    marks = {}

    def echo(line: str) -> None:
        if line.startswith("Grading ") and "start" not in marks:
            marks["start"] = time.perf_counter()

    began = time.perf_counter()
    report = course.grade(incoming, REPO, out_csv=folder / "grades.csv", jobs=jobs, echo=echo)
    ended = time.perf_counter()
    return report, ended - began, ended - marks.get("start", began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    assignments = course.find_assignments(REPO)
    with tempfile.TemporaryDirectory(prefix="fcnkit-bench-") as tmp:
        incoming = Path(tmp) / "incoming"
        for assignment, notebooks in assignments.items():
            for path in notebooks:
                lesson = json.loads((REPO / "lessons" / assignment / path.name).read_text())
                source = json.loads(path.read_text())
                text = dumps_notebook(answered(lesson, source))
                for number in range(args.students):
                    target = incoming / f"student{number + 1}" / path.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(text, encoding="utf-8")
        rows, scores = [], []
        for jobs in (1, args.jobs):
            report, whole, students = timed_grade(incoming, jobs, Path(tmp) / f"jobs{jobs}")
            rows.append((jobs, whole, students, report.sandbox))
            scores.append({(r.student, r.assignment): r.scores for r in report.results})
            wrong = [r for r in report.results if r.score != r.max_score]
            if wrong:
                print(f"ERROR: not full marks with {jobs} job(s): {wrong}")
                return 1
    print(f"{args.students} students x {len(assignments)} lesson(s): "
          f"{', '.join(assignments)}; sandbox: {rows[0][3]}; {os.cpu_count()} CPU cores")
    print(f"{'jobs':>4}  {'s per student':>13}  {'students (s)':>12}  {'whole run (s)':>13}")
    for jobs, whole, students, _ in rows:
        print(f"{jobs:>4}  {students / args.students:>13.1f}  {students:>12.1f}  {whole:>13.1f}")
    print(f"ratio 1 job / {args.jobs} jobs, students' part: {rows[0][2] / rows[1][2]:.2f}; "
          f"whole run: {rows[0][1] / rows[1][1]:.2f}")
    if scores[0] != scores[1]:
        print("ERROR: the two runs gave different scores")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
