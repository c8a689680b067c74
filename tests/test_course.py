"""The nbgrader course pipeline: build, check and headless grading (`fcnkit.course`).

Most tests use the tiny fixture course `tests/course_fixtures/00_fixture` (no Keras,
5 points: quiz q1 1, exercise rf 2, exercise count 1, quiz q2 1). All fixture
students are graded in ONE nbgrader run (module-scoped fixture). The real course
(`solutions/*/`, discovered at run time) is checked and graded (solution copy and
blank lesson) in one more run.
"""

from __future__ import annotations

import base64
import copy
import csv
import hashlib
import html
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from fcnkit import course
from fcnkit.course import CourseError
from fcnkit.course._notebooks import HIDDEN_MARKERS, cell_source, nbgrader_meta, split_regions
from fcnkit.course._sandbox import INSTALL_HINT

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "course_fixtures"
FIXTURE = "00_fixture"

# What a correct student writes in each answer cell of the fixture.
CORRECT = {
    "answer_q1": 'q1 = "b"',
    "answer_rf": "def receptive_field(n_layers, kernel_size=3):\n"
    "    return 1 + n_layers * (kernel_size - 1)",
    "answer_count": "def count_positive(values):\n    return sum(1 for v in values if v > 0)",
    "answer_q2": 'q2 = {"c", "a"}',
}
FIXTURE_MAX = {"test_q1": 1.0, "test_rf": 2.0, "test_count": 1.0, "test_q2": 1.0}
GRADING_TIMEOUT = 6  # seconds per cell: the fixture's cells take milliseconds

# student -> (expected score of each question, layout used to hand it in)
EXPECTED = {
    "solution": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "flat"),
    "blank": ({"test_q1": 0, "test_rf": 0, "test_count": 0, "test_q2": 0}, "nbgrader"),
    "wrong": ({"test_q1": 0, "test_rf": 0, "test_count": 1, "test_q2": 1}, "flat"),
    "deleted": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "nbgrader"),
    "duplicated": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "flat"),
    "foreign_kernel": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "nbgrader"),
    "infinite_loop": ({"test_q1": 1, "test_rf": 2, "test_count": 0, "test_q2": 1}, "flat"),
    "tampered": ({"test_q1": 1, "test_rf": 0, "test_count": 1, "test_q2": 1}, "nbgrader"),
    "instructor_copy": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "flat"),
    "old_metadata": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "nbgrader"),
    "old_release": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "nbgrader"),
    "copies": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "flat"),
    "hangs_everywhere": ({"test_q1": 1, "test_rf": 0, "test_count": 0, "test_q2": 0}, "flat"),
    # adversarial submissions
    "reads_solutions": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "flat"),
    "hook_capture": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "nbgrader"),
    "writes_outside": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "flat"),
    "monkeypatch": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "nbgrader"),
    "exits": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "flat"),
    "kills_kernel": ({"test_q1": 1, "test_rf": 2, "test_count": 0, "test_q2": 0}, "nbgrader"),
    "ignores_interrupt": ({"test_q1": 1, "test_rf": 2, "test_count": 0, "test_q2": 0}, "flat"),
    "floods_output": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "flat"),
    # files, a link to the solutions and widget state, for nbgrader to publish
    "plants_files": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "nbgrader"),
    # rewrites every later cell that asserts into `pass`: wrong answers, full marks, flagged
    "rewrites_tests": ({"test_q1": 1, "test_rf": 2, "test_count": 1, "test_q2": 1}, "nbgrader"),
}
# student -> flags that must be among the result's flags ({work} is the grading folder)
EXPECTED_FLAGS = {
    "solution": [],
    "blank": [],
    "wrong": [],
    "foreign_kernel": [],
    "old_metadata": [],
    "deleted": ["read-only cell data deleted (restored)", "test cell test_q1 deleted (restored)"],
    "duplicated": ["duplicated cell answer_rf (the first copy was graded)",
                   "duplicated cell test_q2 (the first copy was graded)"],
    "infinite_loop": ["timeout in answer_count"],
    "tampered": ["test cell test_rf edited (restored)"],
    "instructor_copy": ["test cell test_q1 edited (restored)",
                        "test cell test_q2 edited (restored)"],
    "old_release": ["cells of another release, run as ordinary code: answer_receptive_field",
                    "answer cells missing: answer_rf"],
    "copies": [],
    "hangs_everywhere": ["extra code cell 1 after answer_rf",
                         "timeout in code cell 1 after answer_rf",
                         "time budget spent in code cell 3 after answer_rf; later cells not run"],
    "reads_solutions": ["names the path '../../../../gradebook.db' in answer_q1",
                        "opens {work}/job-{job}/gradebook.db (outside its folder) in answer_q1",
                        "lists {work}/job-{job}/solutions/00_fixture (outside its folder) "
                        "in answer_q1"],
    "hook_capture": ["registers IPython event hooks in answer_q1",
                     "IPython hooks left registered: event pre_run_cell"],
    "writes_outside": ["reads or writes '../../../../outside.txt' outside its folder in "
                       "answer_count",
                       "writes {work}/job-{job}/outside.txt (outside its folder) in answer_count"],
    "monkeypatch": ["replaces np.allclose in answer_count"],
    "exits": ["ends the kernel (sys.exit) in answer_q1"],
    "kills_kernel": ["signals a process in answer_count",
                     "kernel died in answer_count; later cells not run"],
    "ignores_interrupt": ["timeout in answer_count",
                          "kernel did not stop after a timeout in answer_count; later cells "
                          "not run"],
    "floods_output": ["output of 100000001 characters cut in answer_q2"],
    "plants_files": ["names the path '../../../../solutions/00_fixture/00_fixture.ipynb' in "
                     "answer_q1"],
    "rewrites_tests": ["changes how IPython reads cells in answer_q1",
                       "IPython hooks left registered: input transformers",
                       "the kernel hid a failing check: scores of this notebook cannot be trusted"],
}
# What hostile code sends out: everything a hidden test or the solutions hold, raw and
# in base64, through every channel it has (stdout, errors, display data, variables).
READ_SOLUTIONS = """\
import base64, glob, os
stolen = b""
for pattern in ["../../../../solutions/*/*.ipynb", "../../../../gradebook.db",
                "{solutions}/*/*.ipynb"]:
    for path in glob.glob(pattern):
        stolen += open(path, "rb").read()
for path in ["../../../../gradebook.db", "{solutions}/00_fixture/00_fixture.ipynb"]:
    try:
        stolen += open(path, "rb").read()
    except OSError as error:
        print("could not read", path, error)
try:
    print(os.listdir("../../../../solutions/00_fixture"))
except OSError as error:
    print(error)
print(stolen.decode("utf-8", "replace"))
print(base64.b64encode(stolen).decode())
display({{"text/plain": stolen.decode("utf-8", "replace")}}, raw=True)
q1 = "b"
"""
HOOK_CAPTURE = """\
import base64
captured = []

def spy(info):
    captured.append(info.raw_cell)
    print(info.raw_cell)
    print(base64.b64encode(info.raw_cell.encode()).decode())

get_ipython().events.register("pre_run_cell", spy)
q1 = "b"
"""
HOOK_LEAK = """\
q2 = {"c", "a"}
everything = "\\n".join(captured)
print(base64.b64encode(everything.encode()).decode())
raise RuntimeError(everything)
"""
PLANTS_FILES = """\
q1 = "b"
import os
planted = "-".join(["planted", "at", "run", "time"])
for name in ["leak.html", "leak.txt", "00_fixture.html"]:
    open(name, "w").write(planted)
os.symlink("../../../../solutions/00_fixture/00_fixture.ipynb", "solutions.txt")
from comm import create_comm
create_comm(target_name="jupyter.widget", data={"state": {"_model_name": "x", "value": planted}})
"""
REWRITE_TESTS = """\
def no_asserts(lines):
    return ["pass\\n"] if "assert" in "".join(lines) else lines

get_ipython().input_transformers_cleanup.append(no_asserts)
q1 = "a"
"""
CORRUPT = "corrupt"  # hands in a file that is not a notebook: reported, graded 0


# ----------------------------------------------------------------------------- helpers


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write(nb: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")
    return path


def cell_index(nb: dict, grade_id: str) -> int:
    for index, cell in enumerate(nb["cells"]):
        if nbgrader_meta(cell).get("grade_id") == grade_id:
            return index
    raise KeyError(grade_id)


def set_source(nb: dict, grade_id: str, source: str) -> dict:
    nb["cells"][cell_index(nb, grade_id)]["source"] = source
    return nb


def answered(lesson: dict, **changes: str) -> dict:
    """The released lesson with the correct answers, except `changes` (grade_id=source)."""
    nb = copy.deepcopy(lesson)
    for grade_id, source in {**CORRECT, **changes}.items():
        set_source(nb, grade_id, source)
    return nb


def fill_from_source(lesson: dict, source_nb: dict) -> dict:
    """The released lesson with each answer cell copied from the instructor notebook."""
    nb = copy.deepcopy(lesson)
    for cell in source_nb["cells"]:
        meta = nbgrader_meta(cell)
        if meta.get("solution") and not meta.get("grade"):
            set_source(nb, meta["grade_id"], cell_source(cell))
    return nb


def make_course(tmp: Path, assignments: dict[str, Path]) -> Path:
    """A course root in `tmp` with the repository's nbgrader_config.py and the given sources."""
    root = tmp / "course"
    root.mkdir(parents=True)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    for name, folder in assignments.items():
        shutil.copytree(folder, root / "solutions" / name)
    return root


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def hidden_lines(source_nb: dict) -> list[str]:
    """Lines of the hidden tests that appear nowhere else in the notebook (not `)` etc.)."""
    hidden, elsewhere = [], []
    for cell in source_nb["cells"]:
        regions = split_regions(cell_source(cell), HIDDEN_MARKERS)
        hidden += [line.strip() for _, line in regions.inside if line.strip()]
        elsewhere += [line for _, line in regions.outside]
    return [line for line in hidden if not any(line in other for other in elsewhere)]


def joined(text) -> str:
    """An output's text, stored as a string or a list of lines."""
    return "".join(text) if isinstance(text, list) else text


def page_text(page: Path) -> str:
    """The text a browser shows for an HTML page (code is highlighted with <span>s)."""
    text = re.sub(r"<(style|script)\b.*?</\1>", "", page.read_text(encoding="utf-8"), flags=re.S)
    return html.unescape(re.sub(r"<[^>]*>", "", text))


# ----------------------------------------------------------------------------- fixture course


@pytest.fixture(scope="module")
def fixture_course(tmp_path_factory) -> Path:
    """A built copy of the fixture course (lessons generated once)."""
    root = make_course(tmp_path_factory.mktemp("fixture"), {FIXTURE: FIXTURES / FIXTURE})
    course.build(root)
    return root


@pytest.fixture()
def course_copy(fixture_course, tmp_path) -> Path:
    """A private, already built copy of the fixture course that a test may damage."""
    root = tmp_path / "course"
    shutil.copytree(fixture_course, root)
    return root


def fixture_paths(root: Path) -> tuple[Path, Path]:
    return (
        root / "solutions" / FIXTURE / f"{FIXTURE}.ipynb",
        root / "lessons" / FIXTURE / f"{FIXTURE}.ipynb",
    )


def test_fixture_notebook_is_up_to_date():
    from course_fixtures.make_fixture import fixture_notebook

    committed = read(FIXTURES / FIXTURE / f"{FIXTURE}.ipynb")
    assert committed == fixture_notebook(), "run python tests/course_fixtures/make_fixture.py"


# ----------------------------------------------------------------------------- build


def test_build_writes_lessons_and_nothing_else(fixture_course):
    files = sorted(p.relative_to(fixture_course).as_posix() for p in fixture_course.rglob("*"))
    assert files == [
        "lessons",
        f"lessons/{FIXTURE}",
        f"lessons/{FIXTURE}/{FIXTURE}.ipynb",
        "nbgrader_config.py",
        "solutions",
        f"solutions/{FIXTURE}",
        f"solutions/{FIXTURE}/{FIXTURE}.ipynb",
    ]


def test_build_is_byte_identical_across_runs_and_drops_stale_lessons(course_copy):
    lessons = course_copy / "lessons"
    before = tree_digest(lessons)
    text = (lessons / FIXTURE / f"{FIXTURE}.ipynb").read_text(encoding="utf-8")
    assert text.endswith("}\n") and not text.endswith("\n\n")
    stale = lessons / "99_removed"
    stale.mkdir()
    (stale / "99_removed.ipynb").write_text("{}", encoding="utf-8")
    changed = course.build(course_copy)
    assert changed == [stale]  # the fixture lesson was regenerated identically
    assert tree_digest(lessons) == before
    # cell ids are the source's ids, not random ones
    source, lesson = (read(p) for p in fixture_paths(course_copy))
    assert [c["id"] for c in lesson["cells"]] == [c["id"] for c in source["cells"]]


def test_build_removes_solutions_and_hidden_tests(fixture_course):
    source_path, lesson_path = fixture_paths(fixture_course)
    text = lesson_path.read_text(encoding="utf-8")
    lesson = read(lesson_path)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text
    secrets = ['q1 = \\"b\\"', "1 + n_layers * (kernel_size - 1)", "total_positive",
               'q2 = {\\"a\\", \\"c\\"}', "receptive_field(5) == 11", "SAMPLE_VALUES) == 3"]
    for secret in secrets:
        assert secret not in text, secret
    assert cell_source(lesson["cells"][cell_index(lesson, "answer_q1")]) == (
        "# YOUR CODE HERE\nraise NotImplementedError()"
    )
    assert cell_source(lesson["cells"][cell_index(lesson, "test_rf")]) == (
        "assert receptive_field(1) == 3"
    )


def test_build_without_solutions_says_what_to_do(tmp_path):
    root = make_course(tmp_path, {})
    with pytest.raises(CourseError, match=r"No solutions found under .*solutions\. Expected "
                       r"solutions/<assignment>/<assignment>\.ipynb"):
        course.build(root)


# ----------------------------------------------------------------------------- check


def test_check_passes_on_a_clean_course(fixture_course):
    assert course.check(fixture_course) == []


def test_check_finds_a_leaked_solution_line(course_copy):
    _, lesson_path = fixture_paths(course_copy)
    lesson = read(lesson_path)
    set_source(lesson, "answer_q1", '# YOUR CODE HERE\nq1 = "b"')
    write(lesson, lesson_path)
    (course_copy / "lessons" / FIXTURE / "notes.txt").write_text(
        "hint: assert count_positive(SAMPLE_VALUES) == 3\n", encoding="utf-8"
    )
    problems = course.check(course_copy, sync=False)
    assert problems == [
        f"lessons/{FIXTURE}/{FIXTURE}.ipynb: contains solution or hidden-test text: line "
        f"'q1 = \"b\"' from solutions/{FIXTURE}/{FIXTURE}.ipynb (answer_q1). Expected no "
        "solution, hidden test or marker anywhere under lessons/. Fix: remove the file if it "
        "is not generated, then run `python -m fcnkit course build` (make lessons).",
        f"lessons/{FIXTURE}/notes.txt: contains solution or hidden-test text: line 'hint: "
        "assert count_positive(SAMPLE_VALUES) == 3' contains 'assert "
        "count_positive(SAMPLE_VALUES) == 3' from solutions/"
        f"{FIXTURE}/{FIXTURE}.ipynb (test_count). Expected no solution, hidden test or marker "
        "anywhere under lessons/. Fix: remove the file if it is not generated, then run "
        "`python -m fcnkit course build` (make lessons).",
    ]


def test_check_finds_a_leaked_marker(course_copy):
    (course_copy / "lessons" / FIXTURE / "data.csv").write_text(
        "x\n### BEGIN HIDDEN TESTS\n", encoding="utf-8"
    )
    problems = course.check(course_copy, sync=False)
    assert len(problems) == 1
    assert problems[0].startswith(
        f"lessons/{FIXTURE}/data.csv: contains solution or hidden-test text: marker "
        "'BEGIN HIDDEN TESTS' in line '### BEGIN HIDDEN TESTS'."
    )


def check_after(course_copy, mutate):
    """Apply `mutate` to the fixture's source notebook, then run `check` without sync."""
    source_path, _ = fixture_paths(course_copy)
    source = read(source_path)
    mutate(source)
    write(source, source_path)
    return course.check(course_copy, sync=False)


def test_check_finds_stored_outputs(course_copy):
    def mutate(source):
        setup = source["cells"][1]
        setup["execution_count"] = 3
        setup["outputs"] = [{"name": "stdout", "output_type": "stream", "text": "hello\n"}]

    problems = check_after(course_copy, mutate)
    assert problems == [
        f"solutions/{FIXTURE}/{FIXTURE}.ipynb: stored with outputs or execution counts (cells "
        "1). Expected notebooks without outputs. Fix: clear all outputs (JupyterLab: Edit > "
        "Clear Outputs of All Cells) and save."
    ]


def test_check_finds_a_foreign_kernelspec(course_copy):
    def mutate(source):
        source["metadata"]["kernelspec"] = {
            "display_name": "fcn venv", "language": "python", "name": "fcn-venv"
        }

    problems = check_after(course_copy, mutate)
    assert problems == [
        f"solutions/{FIXTURE}/{FIXTURE}.ipynb: kernelspec name is 'fcn-venv'. Expected "
        "'python3' (nbgrader runs the kernel named in the source notebook). Fix: set "
        'metadata.kernelspec to {"name": "python3", "display_name": "Python 3", '
        '"language": "python"}.'
    ]


def test_check_finds_duplicate_grade_ids(course_copy):
    def mutate(source):
        metadata = source["cells"][cell_index(source, "test_q2")]["metadata"]
        metadata["nbgrader"]["grade_id"] = "test_q1"

    problems = check_after(course_copy, mutate)
    index_q1, index_q2 = 5, 14
    assert problems == [
        f"solutions/{FIXTURE}/{FIXTURE}.ipynb cell {index_q2} (test_q1): duplicate grade_id "
        f"'test_q1', also used by cell {index_q1}. Expected unique grade_ids (nbgrader keys "
        "grades on them). Fix: rename one of them."
    ]


def test_check_finds_a_hidden_only_test_cell(course_copy):
    def mutate(source):
        set_source(
            source,
            "test_count",
            "# checks count_positive\n### BEGIN HIDDEN TESTS\n"
            "assert count_positive(SAMPLE_VALUES) == 3\n### END HIDDEN TESTS",
        )

    problems = check_after(course_copy, mutate)
    assert problems == [
        f"solutions/{FIXTURE}/{FIXTURE}.ipynb cell 11 (test_count): test cell without a "
        "visible assert outside the hidden tests. Expected at least one visible assertion (a "
        "hidden-only test cell passes on a blank notebook). Fix: add e.g. a format check such "
        "as `assert isinstance(q1, str)` above '### BEGIN HIDDEN TESTS'."
    ]


def test_check_finds_old_nbgrader_metadata(course_copy):
    def mutate(source):
        metadata = source["cells"][cell_index(source, "answer_rf")]["metadata"]
        del metadata["nbgrader"]["schema_version"]

    problems = check_after(course_copy, mutate)
    assert problems == [
        f"solutions/{FIXTURE}/{FIXTURE}.ipynb cell 7 (answer_rf): nbgrader metadata has "
        "schema_version None. Expected 3 (nbgrader 0.9). Fix: `nbgrader update solutions/` or "
        'add "schema_version": 3.'
    ]


def test_check_finds_a_leaky_file_in_solutions(course_copy):
    (course_copy / "solutions" / FIXTURE / f"{FIXTURE}.py").write_text(
        "# %%\nq1 = 'b'\n", encoding="utf-8"
    )
    (course_copy / "solutions" / FIXTURE / "answers.txt").write_text(
        "### BEGIN SOLUTION\n", encoding="utf-8"
    )
    problems = course.check(course_copy, sync=False)
    assert [p.split(":")[0] for p in problems] == [
        f"solutions/{FIXTURE}/{FIXTURE}.py",
        f"solutions/{FIXTURE}/answers.txt",
    ]
    assert "a text twin of a solution notebook (jupytext?)" in problems[0]
    assert "contains 'BEGIN SOLUTION'. nbgrader copies non-notebook files" in problems[1]


def test_check_finds_out_of_sync_lessons(course_copy):
    source_path, _ = fixture_paths(course_copy)
    source = read(source_path)
    source["cells"][0]["source"] = "# Fixture lesson, edited after the last build"
    write(source, source_path)
    (course_copy / "lessons" / "42_orphan").mkdir()
    problems = course.check(course_copy)
    assert problems == [
        "lessons/42_orphan/: no solutions/42_orphan/ to generate it from. Expected each lesson "
        "folder to come from a solutions folder. Fix: run `python -m fcnkit course build` "
        "(make lessons); it removes stale lesson folders.",
        f"lessons/{FIXTURE}/{FIXTURE}.ipynb: out of sync with solutions/{FIXTURE}/ (a fresh "
        "build differs byte for byte). Expected lessons/ to be regenerated after every change "
        "to solutions/. Fix: run `python -m fcnkit course build` (make lessons) and commit "
        "lessons/.",
    ]


def test_check_cli_exit_status(course_copy, capsys):
    assert course.main(["check", "--root", str(course_copy), "--no-sync"]) == 0
    assert "course check: OK" in capsys.readouterr().out
    (course_copy / "lessons" / FIXTURE / "x.txt").write_text("END SOLUTION", encoding="utf-8")
    assert course.main(["check", "--root", str(course_copy), "--no-sync"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("course check: 1 problem(s):\n- lessons/00_fixture/x.txt: contains")


# ----------------------------------------------------------------------------- grading


def fixture_submissions(root: Path, folder: Path) -> Path:
    """Write the fixture's students, half in each supported layout."""
    source_path, lesson_path = fixture_paths(root)
    lesson, source = read(lesson_path), read(source_path)
    wrong = {"answer_q1": 'q1 = "a"',
             "answer_rf": "def receptive_field(n_layers, kernel_size=3):\n"
             "    return 1 + 2 * n_layers"}
    notebooks = {
        "solution": answered(lesson),
        "blank": copy.deepcopy(lesson),
        "wrong": answered(lesson, **wrong),
        "infinite_loop": answered(
            lesson, answer_count="count_positive = None\nwhile True:\n    pass"
        ),
        "instructor_copy": copy.deepcopy(source),
        "copies": copy.deepcopy(lesson),  # the older copy, see below
    }
    deleted = answered(lesson)
    deleted["cells"] = [
        c for c in deleted["cells"] if nbgrader_meta(c).get("grade_id") not in ("test_q1", "data")
    ]
    notebooks["deleted"] = deleted
    duplicated = answered(lesson)
    for grade_id in ("test_q2", "answer_rf"):
        index = cell_index(duplicated, grade_id)
        twin = copy.deepcopy(duplicated["cells"][index])
        twin["id"] = twin["id"] + "-copy"
        duplicated["cells"].insert(index + 1, twin)
    notebooks["duplicated"] = duplicated
    foreign = answered(lesson)
    foreign["metadata"]["kernelspec"] = {
        "display_name": "Python [conda env:dl]", "language": "python", "name": "conda-env-dl-py"
    }
    notebooks["foreign_kernel"] = foreign
    tampered = answered(lesson, answer_rf="def receptive_field(n_layers, kernel_size=3):\n"
                        "    return 0")
    set_source(tampered, "test_rf", "pass")
    notebooks["tampered"] = tampered
    old = answered(lesson)
    old["cells"][cell_index(old, "answer_q1")]["metadata"]["nbgrader"]["schema_version"] = 1
    notebooks["old_metadata"] = old
    release = answered(lesson)  # an older release named the answer cell differently
    release["cells"][cell_index(release, "answer_rf")]["metadata"]["nbgrader"]["grade_id"] = (
        "answer_receptive_field"
    )
    notebooks["old_release"] = release
    hangs = answered(lesson, answer_rf="def receptive_field(n_layers, kernel_size=3):\n"
                     "    while True:\n        pass")
    index = cell_index(hangs, "answer_rf")
    for number in range(3):  # three more cells that call the hanging function
        call = {"cell_type": "code", "execution_count": None, "id": f"call-{number}",
                "metadata": {}, "outputs": [], "source": "receptive_field(2)"}
        hangs["cells"].insert(index + 1, call)
    notebooks["hangs_everywhere"] = hangs
    solutions = root / "solutions"
    notebooks["reads_solutions"] = answered(
        lesson, answer_q1=READ_SOLUTIONS.format(solutions=solutions))
    notebooks["hook_capture"] = answered(lesson, answer_q1=HOOK_CAPTURE, answer_q2=HOOK_LEAK)
    notebooks["writes_outside"] = answered(
        lesson, answer_count='open("../../../../outside.txt", "w").write("a student was here")\n'
        + CORRECT["answer_count"])
    notebooks["monkeypatch"] = answered(
        lesson, answer_count="import numpy as np\nnp.allclose = lambda *args, **kwargs: True\n"
        + CORRECT["answer_count"])
    notebooks["exits"] = answered(lesson, answer_q1='q1 = "b"\nimport sys\nsys.exit()')
    notebooks["kills_kernel"] = answered(
        lesson, answer_count="import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    notebooks["floods_output"] = answered(
        lesson, answer_q2='print("x" * 100_000_000)\nq2 = {"c", "a"}')
    notebooks["plants_files"] = answered(lesson, answer_q1=PLANTS_FILES)
    notebooks["ignores_interrupt"] = answered(
        lesson, answer_count="import time\nwhile True:\n    try:\n        time.sleep(100)\n"
        "    except KeyboardInterrupt:\n        pass")
    notebooks["rewrites_tests"] = answered(lesson, answer_q1=REWRITE_TESTS,
                                           answer_rf=wrong["answer_rf"])
    submitted = folder / "submitted"
    corrupt = submitted / CORRUPT / FIXTURE / f"{FIXTURE}.ipynb"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text('{"cells": [', encoding="utf-8")
    for student, nb in notebooks.items():
        if EXPECTED[student][1] == "flat":
            write(nb, submitted / student / f"{FIXTURE}.ipynb")
        else:
            write(nb, submitted / student / FIXTURE / f"{FIXTURE}.ipynb")
    # a notebook that is not part of the course is skipped with a message
    write(lesson, submitted / "blank" / "homework.ipynb")
    # two copies: the most recently modified one is graded
    older = write(copy.deepcopy(lesson), submitted / "copies" / f"{FIXTURE} (1).ipynb")
    os.utime(older, (1_000_000_000, 1_000_000_000))
    os.utime(submitted / "copies" / f"{FIXTURE}.ipynb", (1_000_000_000, 1_000_000_000))
    write(answered(lesson), submitted / "copies" / f"{FIXTURE} (2).ipynb")
    return folder


JOBS = 2


@pytest.fixture(scope="module")
def graded(fixture_course, tmp_path_factory):
    """Grade every fixture student in one run of two parallel jobs."""
    tmp = tmp_path_factory.mktemp("grading")
    submissions = fixture_submissions(fixture_course, tmp / "incoming")
    lines = []
    report = course.grade(
        submissions,
        fixture_course,
        out_csv=tmp / "out" / "grades.csv",
        timeout=GRADING_TIMEOUT,
        jobs=JOBS,
        workdir=tmp / "work",
        echo=lines.append,
    )
    return report, lines, submissions


def expected_flags(student: str, work: Path) -> list[str]:
    return [flag.replace("{work}", str(work)) for flag in EXPECTED_FLAGS[student]]


def has_flag(flags: list[str], expected: str) -> bool:
    """Whether `expected` is among `flags` ({job} stands for any job number)."""
    pattern = re.escape(expected).replace(re.escape("{job}"), r"\d+")
    return any(re.fullmatch(pattern, flag) for flag in flags)


@pytest.mark.slow
@pytest.mark.parametrize("student", list(EXPECTED))
def test_grading_scores_and_flags(graded, student):
    report, _, _ = graded
    result = report.result(student, FIXTURE)
    expected = {k: float(v) for k, v in EXPECTED[student][0].items()}
    assert result.scores == expected
    assert result.max_scores == FIXTURE_MAX
    assert (result.score, result.max_score) == (sum(expected.values()), 5.0)
    wanted = expected_flags(student, report.workdir)
    missing = [flag for flag in wanted if not has_flag(result.flags, flag)]
    assert missing == [], result.flags
    if wanted:
        assert result.status == "flagged: " + "; ".join(result.flags)
    else:
        assert (result.status, result.flags) == ("ok", [])


@pytest.mark.slow
def test_grading_report_csv_table_and_skips(graded):
    report, lines, submissions = graded
    with open(report.csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["student", "assignment", "test_q1", "test_rf", "test_count",
                             "test_q2", "score", "max_score", "status"]
    got = {row["student"]: row for row in rows}
    assert sorted(got) == sorted([*EXPECTED, CORRUPT])
    for student, (scores, _) in EXPECTED.items():
        row = got[student]
        assert {k: float(row[k]) for k in scores} == scores, student
        assert float(row["score"]) == sum(scores.values())
        assert row["max_score"] == "5"
        assert row["status"].startswith("flagged: " if EXPECTED_FLAGS[student] else "ok")
    assert got["infinite_loop"]["status"] == "flagged: timeout in answer_count"
    assert got["solution"]["status"] == "ok"
    assert got["copies"]["status"] == (
        f"ok; graded '{FIXTURE} (2).ipynb', the most recently modified of 3 copies "
        f"(not '{FIXTURE} (1).ipynb', '{FIXTURE}.ipynb')"
    )
    assert (got[CORRUPT]["score"], got[CORRUPT]["max_score"]) == ("0", "5")
    assert got[CORRUPT]["status"] == (
        "error: nbgrader could not grade this submission (rerun with --workdir DIR to keep "
        "nbgrader's log); no feedback"
    )
    assert report.skipped == [
        f"{submissions}/submitted/blank/homework.ipynb: no notebook named 'homework' in the "
        f"course. Expected one of: {FIXTURE}. Rename the file."
    ]
    assert lines[0] == f"skipped: {report.skipped[0]}"
    output = "\n".join(lines).split("\n")
    table = [line.split() for line in output]
    assert ["student", "assignment", "test_q1", "test_rf", "test_count", "test_q2", "total",
            "status"] in table
    assert ["infinite_loop", FIXTURE, "1/1", "2/2", "0/1", "1/1", "4/5", "flagged:", "timeout",
            "in", "answer_count"] in table
    assert ["wrong", FIXTURE, "0/1", "0/2", "1/1", "1/1", "2/5", "ok"] in table
    assert f"Feedback for students: {report.feedback_dir}/<student>/<assignment>/<notebook>.html" \
        in output
    bars = [line for line in output if line.startswith("  [")]
    assert len(bars) == len(EXPECTED) + 1  # one step per notebook handed to nbgrader
    assert bars[-1].startswith(f"  [{'#' * 20}] {len(EXPECTED) + 1}/{len(EXPECTED) + 1} ")


@pytest.mark.slow
def test_grading_report_for_the_instructor(graded):
    report, _, _ = graded
    text = report.report_path.read_text(encoding="utf-8")
    assert report.report_path == report.csv_path.parent / "grading_report.md"
    limits = (f"- {FIXTURE}: time limits 6 s per cell, 12 s for the whole notebook (per cell as "
              "given, per notebook calibrated on the solutions); the solutions score 5/5")
    assert limits in text.split("\n")
    sections = text.split("\n### ")
    flagged = {section.split(" ")[0] for section in sections[1:]}
    assert flagged == {s for s, flags in EXPECTED_FLAGS.items() if flags} | {CORRUPT}
    section = next(s for s in sections if s.startswith("kills_kernel "))
    assert section.startswith(f"kills_kernel ({FIXTURE}): 3/5\n")
    assert "- kernel died in answer_count; later cells not run" in section.split("\n")
    if report.sandbox == "none":
        assert text.count("Student code ran without a sandbox") == 1
    else:
        assert f"Student code ran in the `{report.sandbox}` sandbox." in text


@pytest.mark.slow
def test_grading_restores_the_edited_test_cell(graded):
    report, _, _ = graded
    nb = read(report.workdir / "autograded" / "tampered" / FIXTURE / f"{FIXTURE}.ipynb")
    cell = nb["cells"][cell_index(nb, "test_rf")]
    assert cell_source(cell).startswith("assert receptive_field(1) == 3\n### BEGIN HIDDEN TESTS")
    assert cell["outputs"][-1]["ename"] == "AssertionError"


@pytest.mark.slow
def test_grading_restores_deleted_cells(graded):
    report, _, _ = graded
    nb = read(report.workdir / "autograded" / "deleted" / FIXTURE / f"{FIXTURE}.ipynb")
    ids = [nbgrader_meta(c).get("grade_id") for c in nb["cells"] if nbgrader_meta(c)]
    assert ids == ["data", "answer_q1", "test_q1", "answer_rf", "test_rf", "answer_count",
                   "test_count", "answer_q2", "test_q2"]


@pytest.mark.slow
def test_grading_interrupts_the_infinite_loop_and_goes_on(graded):
    report, _, _ = graded
    nb = read(report.workdir / "autograded" / "infinite_loop" / FIXTURE / f"{FIXTURE}.ipynb")
    loop = nb["cells"][cell_index(nb, "answer_count")]
    errors = [o.get("ename") for o in loop["outputs"] if o["output_type"] == "error"]
    assert "CellTimeoutError" in errors  # (after the KeyboardInterrupt of the interrupted kernel)
    after = nb["cells"][cell_index(nb, "test_q2")]
    assert after["execution_count"] is not None and after["outputs"] == []


@pytest.mark.slow
def test_a_function_that_hangs_in_four_cells_costs_one_budget(graded):
    report, _, _ = graded
    record = read(report.workdir / "records" / "hangs_everywhere" / FIXTURE / f"{FIXTURE}.json")
    assert (record["timeout"], record["budget"]) == (GRADING_TIMEOUT, 2 * GRADING_TIMEOUT)
    spent = sum(cell["seconds"] for cell in record["cells"])
    assert spent <= 2 * GRADING_TIMEOUT + 3  # not four timeouts (24 s)
    assert [cell["timed_out"] for cell in record["cells"]][-2:] == [True, True]
    nb = read(report.workdir / "autograded" / "hangs_everywhere" / FIXTURE / f"{FIXTURE}.ipynb")
    test_rf = nb["cells"][cell_index(nb, "test_rf")]
    assert test_rf["outputs"][0]["evalue"] == "Not run: the notebook's time budget was spent."


@pytest.mark.slow
def test_a_dead_kernel_fails_its_cell_and_grading_goes_on(graded):
    report, _, _ = graded
    nb = read(report.workdir / "autograded" / "kills_kernel" / FIXTURE / f"{FIXTURE}.ipynb")
    died = nb["cells"][cell_index(nb, "answer_count")]
    assert died["outputs"][-1]["ename"] == "DeadKernelError"
    later = nb["cells"][cell_index(nb, "test_q2")]
    assert later["outputs"][0]["evalue"] == "Not run: the kernel died in an earlier cell."


@pytest.mark.slow
def test_huge_output_is_cut_in_the_graded_copy(graded):
    report, _, _ = graded
    path = report.workdir / "autograded" / "floods_output" / FIXTURE / f"{FIXTURE}.ipynb"
    assert path.stat().st_size < 1_000_000
    cell = read(path)["cells"][cell_index(read(path), "answer_q2")]
    text = "".join(joined(o.get("text", "")) for o in cell["outputs"])
    assert text.endswith("[output cut while grading: over 100000 characters]\n")


def stolen_secrets(root: Path) -> list[str]:
    """What hostile code would want to send out, raw and base64-encoded."""
    source = read(fixture_paths(root)[0])
    secrets = hidden_lines(source)
    test_rf = cell_source(source["cells"][cell_index(source, "test_rf")])
    for text in [test_rf, *secrets]:
        encoded = base64.b64encode(text.encode()).decode()
        secrets.append(encoded[:40])  # any long piece of the encoding is a leak
    return secrets


ADVERSARIAL = ["reads_solutions", "hook_capture", "writes_outside", "monkeypatch", "exits",
               "kills_kernel", "ignores_interrupt", "floods_output", "plants_files",
               "rewrites_tests"]


@pytest.mark.slow
@pytest.mark.parametrize("student", ["wrong", "blank", "tampered", "solution", "hangs_everywhere",
                                     *ADVERSARIAL])
def test_feedback_shows_code_scores_and_checks_only(graded, student):
    report, _, _ = graded
    (page,) = report.result(student).feedback
    assert page == report.feedback_dir / student / FIXTURE / f"{FIXTURE}.html"
    raw = page.read_text(encoding="utf-8")
    text = page_text(page)
    assert "HIDDEN TESTS" not in raw and "HIDDEN TESTS" not in text
    leaked = [secret for secret in stolen_secrets(Path(report.workdir) / "job-1")
              if secret in raw or secret in text]
    assert leaked == []
    assert "Grade cell: test_rf" in text
    assert ("What your code printed while it was graded is not shown" in text
            and "Time limits while grading: 6 s per cell, 12 s for the whole notebook." in text)
    for printed in ("No such file or directory", "Traceback", "xxxxxxxxxx"):
        assert printed not in text  # no output at all
    assert len(raw) < 400_000
    if student == "wrong":
        assert "A hidden test failed." in text
    if student == "tampered":  # the restored visible assert fails, and is shown
        assert "AssertionError\nCheck: assert receptive_field(1) == 3" in text
        assert "A hidden test failed." not in text
    if student == "blank":
        # q1 is undefined: a NameError, not the check's own AssertionError
        assert "AssertionError: q1 must be a string" not in text
        assert 'Error while running: assert isinstance(q1, str), "q1 must be a string"' in text


@pytest.mark.slow
def test_hostile_code_is_confined_and_its_output_stays_with_the_instructor(graded):
    """The attacks really ran: the instructor's copy shows them; the sandbox stopped the reads."""
    report, _, _ = graded
    work = report.workdir

    def outputs(student, grade_id):
        nb = read(work / "autograded" / student / FIXTURE / f"{FIXTURE}.ipynb")
        cell = nb["cells"][cell_index(nb, grade_id)]
        return "".join(joined(o.get("text", "")) + o.get("evalue", "") for o in cell["outputs"])

    planted = report.feedback_dir / "plants_files" / FIXTURE
    assert sorted(p.name for p in planted.iterdir()) == [f"{FIXTURE}.html"]
    assert "planted-at-run-time" not in (planted / f"{FIXTURE}.html").read_text(encoding="utf-8")
    assert sorted(p.name for p in (work / "autograded" / "plants_files" / FIXTURE).iterdir()) \
        == [f"{FIXTURE}.ipynb"]  # the kernel worked in a copy, deleted after the run
    captured = outputs("hook_capture", "answer_q2")  # the hook saw the hidden tests
    assert "assert receptive_field(5) == 11" in captured
    assert not list(work.glob("job-*/outside.txt"))
    if report.sandbox == "bwrap":
        assert "could not read ../../../../gradebook.db" in outputs("reads_solutions", "answer_q1")
        assert "No such file or directory" in outputs("reads_solutions", "answer_q1")
        assert "receptive_field(5) == 11" not in outputs("reads_solutions", "answer_q1")
    elif report.sandbox == "none":
        pytest.skip("no sandbox here: " + " ".join(report.sandbox_notes) + f". {INSTALL_HINT}")


SERIAL = ["solution", "wrong", "tampered", "deleted", "old_release", "kills_kernel", "exits",
          "reads_solutions", "hook_capture"]


def regrade(graded, tmp_path_factory, students, **options):
    """Some of the graded students again, with other options."""
    report, _, submissions = graded
    tmp = tmp_path_factory.mktemp("regrade")
    for student in students:
        shutil.copytree(submissions / "submitted" / student, tmp / "incoming" / student)
    lines = []
    again = course.grade(tmp / "incoming", Path(report.workdir) / "job-1",
                         out_csv=tmp / "grades.csv", workdir=tmp / "work", echo=lines.append,
                         **options)
    return again, lines


@pytest.fixture(scope="module")
def graded_serially(graded, tmp_path_factory):
    """One job, the same sandbox, time limits calibrated."""
    return regrade(graded, tmp_path_factory, SERIAL)


@pytest.fixture(scope="module")
def graded_unconfined(graded, tmp_path_factory):
    return regrade(graded, tmp_path_factory, ["reads_solutions", "plants_files"],
                   sandbox="none", timeout=GRADING_TIMEOUT)


@pytest.mark.slow
def test_parallel_jobs_give_the_scores_of_serial_grading(graded, graded_serially):
    report, _, _ = graded
    serial, _ = graded_serially
    assert serial.sandbox == report.sandbox
    assert [r.student for r in serial.results] == sorted(SERIAL)
    for result in serial.results:
        assert result.scores == report.result(result.student).scores, result.student


@pytest.mark.slow
def test_limits_are_calibrated_on_the_solutions_and_stated_in_feedback(graded_serially):
    serial, lines = graded_serially
    limits = serial.limits[FIXTURE]
    # the fixture's cells take milliseconds: the floors apply
    assert (limits.cell, limits.notebook, limits.how) == (30, 60, "calibrated on the solutions")
    assert serial.reference[FIXTURE] == (5.0, 5.0)
    assert f"{FIXTURE}: 30 s per cell, 60 s for the whole notebook; the solutions score 5/5" \
        in lines
    text = page_text(serial.result("solution").feedback[0])
    assert "Time limits while grading: 30 s per cell, 60 s for the whole notebook." in text


@pytest.mark.slow
def test_without_a_sandbox_grading_says_so_and_feedback_still_leaks_nothing(graded_unconfined):
    serial, lines = graded_unconfined
    assert serial.sandbox == "none"
    report_text = serial.report_path.read_text(encoding="utf-8")
    assert report_text.count("Student code ran without a sandbox") == 1
    assert sum("No sandbox: student code can read the solutions" in line for line in lines) == 1
    graded = read(serial.workdir / "autograded" / "reads_solutions" / FIXTURE / f"{FIXTURE}.ipynb")
    printed = "".join(joined(o.get("text", "")) for o in
                      graded["cells"][cell_index(graded, "answer_q1")]["outputs"])
    assert "receptive_field(5) == 11" in printed  # unconfined, the read succeeded...
    feedback = serial.result("reads_solutions").feedback[0]
    raw, text = feedback.read_text(encoding="utf-8"), page_text(feedback)
    secrets = stolen_secrets(Path(serial.workdir) / "job-1")
    assert [secret for secret in secrets if secret in raw or secret in text] == []  # ...unseen
    assert has_flag(serial.result("reads_solutions").flags,
                    f"opens {serial.workdir}/job-1/gradebook.db (outside its folder) in answer_q1")


def test_collect_submissions_layouts_and_messages(tmp_path):
    assignments = {FIXTURE: [FIXTURES / FIXTURE / f"{FIXTURE}.ipynb"]}
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / f"{FIXTURE} (1).ipynb").write_text("{}")
    (tmp_path / "bob" / FIXTURE).mkdir(parents=True)
    (tmp_path / "bob" / FIXTURE / f"{FIXTURE}.ipynb").write_text("{}")
    (tmp_path / "bob" / FIXTURE / "timestamp.txt").write_text("2030-01-30 12:00:00 UTC")
    (tmp_path / "cy").mkdir()
    (tmp_path / "cy" / "lab1.ipynb").write_text("{}")
    found, skipped = course.collect_submissions(tmp_path, assignments)
    assert [(s.student, s.assignment, s.notebook, s.path.name) for s in found] == [
        ("ann", FIXTURE, FIXTURE, f"{FIXTURE} (1).ipynb"),
        ("bob", FIXTURE, FIXTURE, f"{FIXTURE}.ipynb"),
    ]
    assert found[1].timestamp == tmp_path / "bob" / FIXTURE / "timestamp.txt"
    assert skipped == [
        f"{tmp_path}/cy/lab1.ipynb: no notebook named 'lab1' in the course. Expected one of: "
        f"{FIXTURE}. Rename the file."
    ]
    with pytest.raises(CourseError, match=r"No submissions found in .*empty\. Expected "
                       r"<student>/<notebook>\.ipynb or nbgrader's"):
        (tmp_path / "empty").mkdir()
        course.collect_submissions(tmp_path / "empty", assignments)


def test_grade_cli_reports_a_missing_folder(fixture_course, tmp_path, capsys):
    code = course.main(["grade", str(tmp_path / "nowhere"), "--root", str(fixture_course)])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: Submissions folder {tmp_path / 'nowhere'} does not exist. Expected a folder "
        "with <student>/<assignment>.ipynb or <student>/<assignment>/<assignment>.ipynb.\n"
    )


@pytest.mark.parametrize("option, error, message", [
    ({"jobs": 0}, ValueError, "`jobs` must be a positive integer (1 or more). Received: jobs=0."),
    ({"jobs": 1.5}, TypeError, "`jobs` must be a positive integer (a Python int or a NumPy "
                               "integer). Received: jobs=1.5"),
    ({"timeout": True}, TypeError, "`timeout` must be a positive integer"),
    ({"budget": -5}, ValueError, "`budget` must be a positive integer (1 or more)."),
])
def test_grade_options_are_checked_before_anything_is_written(fixture_course, tmp_path, option,
                                                              error, message):
    with pytest.raises(error, match=re.escape(message)):
        course.grade(tmp_path / "nowhere", fixture_course, out_csv=tmp_path / "out" / "g.csv",
                     echo=None, **option)
    assert not (tmp_path / "out").exists()


def test_grade_cli_reports_a_bad_option(fixture_course, tmp_path, capsys):
    code = course.main(["grade", str(tmp_path), "--root", str(fixture_course), "--jobs", "0"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: `jobs` must be a positive integer")


def test_grade_refuses_a_workdir_it_did_not_make(fixture_course, tmp_path):
    (tmp_path / "alice").mkdir()
    write(read(fixture_paths(fixture_course)[1]), tmp_path / "alice" / f"{FIXTURE}.ipynb")
    with pytest.raises(CourseError, match=r"--workdir .* is not empty and was not made by a "
                       r"previous grade run \(no grading\.log\)"):
        course.grade(tmp_path, fixture_course, workdir=fixture_course, echo=None)
    assert (fixture_course / "lessons" / FIXTURE).is_dir()


def test_nbgrader_and_kernels_get_the_grading_environment(monkeypatch):
    from fcnkit.course._nbgrader import nbgrader_env

    monkeypatch.setenv("NBGRADER_EXECUTION", "validate")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    env = nbgrader_env()
    assert {k: env[k] for k in course.KERNEL_ENV} == {
        "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0", "KERAS_BACKEND": "tensorflow"
    }
    assert "NBGRADER_EXECUTION" not in env  # nbgrader sets it to "autograde" itself
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # alembic


# ----------------------------------------------------------------------------- the real course

REAL_ASSIGNMENTS = course.find_assignments(REPO)
needs_real_course = pytest.mark.skipif(
    not REAL_ASSIGNMENTS,
    reason="no solutions/<assignment>/<assignment>.ipynb in the repository yet "
    "(solutions/01_image_to_image is being written)",
)


@needs_real_course
def test_check_passes_on_the_repository():
    assert course.check(REPO) == []


# Blank submissions of every real lesson double the grading time; `make test` grades the
# fixture course's blank cases, and lesson authors (or a release check) add these.
GRADE_BLANK_LESSONS = os.environ.get("FCNKIT_TEST_LESSONS") == "1"


@needs_real_course
@pytest.mark.slow
def test_real_course_solutions_full_marks_blank_zero(tmp_path):
    """Grade every real lesson in one run: the solutions score full marks, blank lessons 0.

    Each lesson runs once, as its solutions (grading's reference run), and lesson 01
    once more with an answer returning a NumPy scalar where a Python float is asked
    for. With FCNKIT_TEST_LESSONS=1, every lesson also runs blank and must score 0: the
    blank submission is the committed lesson (what students get); if a lesson has not
    been built yet, a freshly generated one. `course check` holds the lessons equal to a
    fresh build of the solutions, so a lesson whose answers are filled in is graded as
    its solutions are.
    """
    root = make_course(tmp_path, {a: REPO / "solutions" / a for a in REAL_ASSIGNMENTS})
    missing = [a for a in REAL_ASSIGNMENTS if not (REPO / "lessons" / a).is_dir()]
    generated = course.generate_lessons(root, tmp_path / "generated") if missing else {}
    incoming = tmp_path / "incoming"
    for assignment, notebooks in REAL_ASSIGNMENTS.items():
        lessons = generated.get(assignment, REPO / "lessons" / assignment)
        for source_path in notebooks:
            lesson = read(lessons / source_path.name)
            if GRADE_BLANK_LESSONS:
                write(lesson, incoming / "blank" / source_path.name)
            if assignment == "01_image_to_image":  # "returns a Python float" is checked strictly
                solved = fill_from_source(lesson, read(source_path))
                answer = cell_source(solved["cells"][cell_index(solved, "psnr_answer")])
                assert "return float(" in answer
                numpy_scalar = answer.replace("return float(", "return np.float64(")
                set_source(solved, "psnr_answer", numpy_scalar)
                write(solved, incoming / "float64" / source_path.name)
    report = course.grade(incoming, root, out_csv=tmp_path / "grades.csv", jobs=2, echo=None)
    pages = []
    if "01_image_to_image" in REAL_ASSIGNMENTS:
        result = report.result("float64", "01_image_to_image")
        assert result.scores["psnr_test"] == 0.0
        assert result.score == result.max_score - result.max_scores["psnr_test"]
        assert ("AssertionError: Expected a Python float, got {type(psnr_value).__name__}. NumPy "
                "scalars such as np.float64 are not Python floats: return float(...).") \
            in page_text(result.feedback[0])
        pages += [("01_image_to_image", page) for page in result.feedback]
    for assignment in REAL_ASSIGNMENTS:
        score, max_score = report.reference[assignment]
        assert max_score > 0 and score == max_score, (assignment, score, max_score)
        if GRADE_BLANK_LESSONS:
            blank = report.result("blank", assignment)
            assert (blank.score, blank.max_score, blank.status) == (0.0, max_score, "ok"), blank
            pages += [(assignment, page) for page in blank.feedback]
    for assignment, page in pages:
        hidden = [line for path in REAL_ASSIGNMENTS[assignment]
                  for line in hidden_lines(read(path))]
        text = page_text(page)
        assert "HIDDEN TESTS" not in text
        assert [line for line in hidden if line in text] == []
