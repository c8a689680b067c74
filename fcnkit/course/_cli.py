"""`python -m fcnkit course build | check | grade`."""

from __future__ import annotations

import argparse
import sys
import time

from fcnkit.course._grade import check_options
from fcnkit.course._notebooks import CourseError

DESCRIPTION = """\
The nbgrader course pipeline of fcnkit (course root = the folder with nbgrader_config.py).

  build   regenerate lessons/ from solutions/ (deterministic; commit the result)
  check   fail if lessons/ is stale, leaks a solution or hidden test, or a notebook is malformed
  grade   autograde DIR/<student>/<notebook>.ipynb (or nbgrader's submitted/ layout) in
          a sandbox, print the scores, write a CSV, an instructor report of what
          deserves a look, and feedback HTML (code, scores, failing checks; no output)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fcnkit course",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="{build,check,grade}")
    commands.required = True
    root_help = "course root holding nbgrader_config.py (default: current folder)"

    build = commands.add_parser("build", help="regenerate lessons/ from solutions/")
    build.add_argument("--root", default=".", help=root_help)

    check = commands.add_parser("check", help="lint solutions/, scan lessons/ for leaks")
    check.add_argument("--root", default=".", help=root_help)
    check.add_argument(
        "--no-sync",
        action="store_true",
        help="skip the comparison of lessons/ with a fresh build (no nbgrader run)",
    )

    grade = commands.add_parser("grade", help="autograde a folder of submissions")
    grade.add_argument(
        "submissions",
        metavar="DIR",
        help="<student>/<notebook>.ipynb or nbgrader's submitted/<student>/<assignment>/ layout",
    )
    grade.add_argument("--root", default=".", help=root_help)
    grade.add_argument(
        "--out",
        default="grades.csv",
        help="scores CSV (default: grades.csv); feedback goes to feedback/ beside it",
    )
    grade.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="seconds per cell before the kernel is interrupted (default: ten times the "
        "slowest cell of the solutions, at least 30)",
    )
    grade.add_argument(
        "--budget",
        type=int,
        default=None,
        help="seconds for a whole notebook; cells left when it is spent are not run "
        "(default: ten times the solutions' run time, at least twice the cell timeout)",
    )
    grade.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="students graded at once, in separate processes (default: 1)",
    )
    grade.add_argument(
        "--sandbox",
        default="auto",
        choices=("auto", "bwrap", "user", "none"),
        help="where student code runs (default: auto, the best that works here: bubblewrap, "
        "then an unprivileged user when grading as root, else none)",
    )
    grade.add_argument(
        "--workdir",
        default=None,
        help="keep nbgrader's working course (gradebook.db, autograded/, grading.log) here",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a course command; return the exit status (0 on success).

    Args:
        argv: the arguments after `course`, e.g. `["grade", "submissions/"]`.
    """
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from fcnkit import course

    start = time.perf_counter()
    try:
        if args.command == "build":
            changed = course.build(args.root, verbose=True)
            print(f"lessons/ built in {time.perf_counter() - start:.1f} s "
                  f"({len(changed)} folder(s) changed).")
            return 0
        if args.command == "check":
            problems = course.check(args.root, sync=not args.no_sync)
            if problems:
                print(f"course check: {len(problems)} problem(s):", file=sys.stderr)
                for problem in problems:
                    print(f"- {problem}", file=sys.stderr)
                return 1
            print(f"course check: OK ({time.perf_counter() - start:.1f} s).")
            return 0
        try:
            check_options(args.timeout, args.budget, args.jobs)
        except (TypeError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        report = course.grade(
            args.submissions,
            args.root,
            out_csv=args.out,
            timeout=args.timeout,
            budget=args.budget,
            jobs=args.jobs,
            sandbox=args.sandbox,
            workdir=args.workdir,
        )
        return 1 if any(r.status.startswith("error") for r in report.results) else 0
    except CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
