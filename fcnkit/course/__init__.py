"""nbgrader course pipeline: build the lessons, check them, grade submissions.

The course root is the folder holding `nbgrader_config.py` (the repository root).
`solutions/<assignment>/<assignment>.ipynb` are the instructor notebooks
(solutions and hidden tests); `lessons/<assignment>/<assignment>.ipynb` are the
student notebooks, generated from them and committed.

- `build(root)`: regenerate `lessons/` (deterministic, byte-identical reruns).
- `check(root) -> list[str]`: problems such as a stale or leaking `lessons/`,
  stored outputs, a foreign kernelspec, duplicate grade_ids, hidden-only tests.
- `grade(submissions_dir, root, out_csv=..., jobs=...)`: headless nbgrader
  autograding of a folder of submissions with student code in a sandbox
  (`_sandbox`), time limits calibrated on the solutions, a scores table and CSV,
  an instructor report of what deserves a look (`_review`), and feedback HTML
  that shows code, scores and failing checks but no output of student code.
- `main(argv)`: the `python -m fcnkit course build | check | grade` command line.

nbgrader always runs in a temporary copy of the course, so the gradebook (which
holds the hidden tests) is never written into the repository. The nbgrader
preprocessors that make grading robust are in `fcnkit.course.preprocessors`
(imported by `nbgrader_config.py`; importing them loads nbgrader).

Example (shell):

    python -m fcnkit course build
    python -m fcnkit course check
    python -m fcnkit course grade submissions/ --out grades.csv --jobs 2

Reference: nbgrader 0.9 documentation, https://nbgrader.readthedocs.io.
Lesson: instructor guide in README.md.
"""

from fcnkit.course._build import build, generate_lessons
from fcnkit.course._check import check
from fcnkit.course._cli import main
from fcnkit.course._grade import (
    GradeReport,
    Result,
    Submission,
    collect_submissions,
    format_table,
    grade,
    write_csv,
)
from fcnkit.course._nbgrader import KERNEL_ENV
from fcnkit.course._notebooks import CourseError, find_assignments

__all__ = [
    "KERNEL_ENV",
    "CourseError",
    "GradeReport",
    "Result",
    "Submission",
    "build",
    "check",
    "collect_submissions",
    "find_assignments",
    "format_table",
    "generate_lessons",
    "grade",
    "main",
    "write_csv",
]
