"""What grading flags and what feedback says, without running nbgrader (`fcnkit.course._review`),
and how the sandbox is chosen (`fcnkit.course._sandbox`)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fcnkit.course import _sandbox
from fcnkit.course._review import (
    analyse_code,
    cell_labels,
    failure_message,
    hidden_line_numbers,
    imported_names,
    read_events,
    review,
)

TEST_CELL = (
    'value = psnr(a, b)\n'
    'assert type(value) is float, (\n'
    '    f"Expected a Python float, got {type(value).__name__}"\n'
    ')\n'
    'assert value > 0\n'
    '### BEGIN HIDDEN TESTS\n'
    'assert value == 20.0, f"secret {value}"\n'
    '### END HIDDEN TESTS'
)


@pytest.mark.parametrize("line, assertion, expected", [
    (2, True, 'AssertionError: Expected a Python float, got {type(value).__name__}\n'
              'Check: assert type(value) is float, (\n'
              '    f"Expected a Python float, got {type(value).__name__}"\n)'),
    (3, True, 'AssertionError: Expected a Python float, got {type(value).__name__}\n'
              'Check: assert type(value) is float, (\n'
              '    f"Expected a Python float, got {type(value).__name__}"\n)'),
    (5, True, "AssertionError\nCheck: assert value > 0"),
    (5, False, "Error while running: assert value > 0\n(The error was raised by code this "
               "line calls. Run the notebook yourself to see it.)"),
    (1, False, "Error while running: value = psnr(a, b)\n(The error was raised by code this "
               "line calls. Run the notebook yourself to see it.)"),
    (7, True, "A hidden test failed."),
    (6, False, "A hidden test failed."),
    (None, True, "A check in this cell failed."),
])
def test_failure_message_comes_from_the_source_only(line, assertion, expected):
    hidden = hidden_line_numbers(TEST_CELL)
    assert hidden == {6, 7, 8}
    assert failure_message(TEST_CELL, line, hidden, assertion) == expected


@pytest.mark.parametrize("source, expected", [
    ("if True: assert x == 1, 'x must be 1'", "AssertionError: x must be 1\nCheck: assert x == 1, "
                                               "'x must be 1'"),
    ("assert x, 'got ' + f'{x!r} of ' + 'x'", "AssertionError: got {x} of x\nCheck: assert x, "
                                              "'got ' + f'{x!r} of ' + 'x'"),
    ("assert x, 'got %s' % x", "AssertionError: 'got %s' % x\nCheck: assert x, 'got %s' % x"),
])
def test_failure_message_keeps_the_message_as_written(source, expected):
    assert failure_message(source, 1, set()) == expected


def test_failure_message_of_a_cell_python_cannot_parse():
    source = "%time x = 1\nassert x == 2"
    assert failure_message(source, 2, set()) == "The check on line 2 failed: assert x == 2"


@pytest.mark.parametrize("code, expected", [
    ("import numpy as np\nnp.allclose = lambda *a, **k: True", ["replaces np.allclose"]),
    ("import numpy\nnumpy.testing.assert_allclose = print",
     ["replaces numpy.testing.assert_allclose"]),
    ("import numpy as np\nsetattr(np, 'allclose', print)", ["replaces attributes of np"]),
    ("import builtins\nbuiltins.print = len", ["replaces builtins.print"]),
    ("get_ipython().events.register('pre_run_cell', f)", ["registers IPython event hooks"]),
    ("ip = get_ipython()\nip.events.register('post_run_cell', f)",
     ["registers IPython event hooks"]),
    ("get_ipython().input_transformers_cleanup.append(f)",
     ["changes how IPython reads cells"]),
    ("get_ipython().set_custom_exc((Exception,), f)", ["replaces IPython's error handling"]),
    ("import sys\nsys.settrace(f)", ["installs a tracing hook"]),
    ("import sys\nsys.exit()", ["ends the kernel (sys.exit)"]),
    ("import os\nos._exit(0)", ["ends the kernel (os._exit)"]),
    ("exec(base64.b64decode(payload))", ["runs code built at run time (exec)"]),
    ("open('../../../solutions/a/a.ipynb').read()",
     ["reads or writes '../../../solutions/a/a.ipynb' outside its folder"]),
    ("path = '../../../gradebook.db'\nopen(path)", ["names the path '../../../gradebook.db'"]),
    ("open('/etc/passwd')", ["reads or writes '/etc/passwd' outside its folder"]),
    ("!cat ../../../gradebook.db", ["starts programs (shell escape)"]),
    ("import subprocess\nsubprocess.run(['ls'])", ["starts programs"]),
    # ordinary code
    ("import numpy as np\nx = np.zeros(3)\nx.shape = (3, 1)\nopen('data.csv')", []),
    ("def f(model):\n    model.trainable = False\n    return model", []),
])
def test_static_review_of_student_code(code, expected):
    assert analyse_code(code, imported_names([code])).what == expected


def test_imported_names():
    assert imported_names(["import numpy as np, os\nfrom keras import ops\n%matplotlib inline",
                           "import fcnkit.models"]) == {"np", "os", "ops", "fcnkit"}


def _nb(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(source, grade_id=None, cell_id=None, **meta):
    cell = {"cell_type": "code", "source": source, "metadata": {}, "outputs": [],
            "execution_count": None}
    if cell_id:
        cell["id"] = cell_id
    if grade_id:
        cell["metadata"]["nbgrader"] = {"grade_id": grade_id, "schema_version": 3, **meta}
    return cell


RELEASED = _nb(
    _code("import numpy as np", cell_id="setup"),
    _code("# YOUR CODE HERE", "answer_a", "a", solution=True, grade=False),
    _code("assert f(1) == 2", "test_a", "t", grade=True, solution=False, locked=True, points=1),
    {"cell_type": "markdown", "source": "Next", "metadata": {}, "id": "m"},
    _code("# YOUR CODE HERE", "answer_b", "b", solution=True, grade=False),
)
KNOWN = {"answer_a", "test_a", "answer_b"}


def test_cell_labels_name_cells_by_grade_id():
    labels = cell_labels(RELEASED["cells"], KNOWN)
    assert labels == ["code cell 1 at the top", "answer_a", "test_a", None, "answer_b"]


def test_review_of_an_honest_submission_finds_nothing():
    submitted = json.loads(json.dumps(RELEASED))
    submitted["cells"][1]["source"] = "def f(x):\n    return 2 * x"
    assert review(submitted, RELEASED, None, None, [], KNOWN) == []


def test_review_names_edited_deleted_extra_and_foreign_cells():
    cells = json.loads(json.dumps(RELEASED))["cells"]
    cells[1]["source"] = "import numpy as np\nnp.allclose = max\ndef f(x):\n    return 2"
    cells[2]["source"] = "pass"  # the test cell, edited
    extra = _code("get_ipython().events.register('pre_run_cell', print)", cell_id="new")
    older = _code("q = 1", "answer_old", "o", solution=True, grade=False)
    submitted = _nb(cells[0], cells[1], cells[2], extra, cells[3], older)  # answer_b deleted
    flags = review(submitted, RELEASED, None, None, [], KNOWN)
    assert flags == [
        "test cell test_a edited (restored)",
        "extra code cell 1 after test_a",
        "cells of another release, run as ordinary code: answer_old",
        "answer cells missing: answer_b",
        "replaces np.allclose in answer_a",
        "registers IPython event hooks in code cell 1 after test_a",
    ]
    del submitted["cells"][2]  # the test cell, deleted
    assert "test cell test_a deleted (restored)" in review(
        submitted, RELEASED, None, None, [], KNOWN)


def test_review_of_the_run_names_cells_by_execution_count():
    graded = json.loads(json.dumps(RELEASED))
    for count, cell in enumerate(graded["cells"][:3], start=1):
        cell["execution_count"] = count
    graded["cells"][4]["execution_count"] = 4
    record = {"cells": [{"index": 1, "timed_out": True, "output_cut": True,
                         "output_chars": 123}],
              "stopped": {"reason": "kernel died", "index": 4},
              "probe": {"canary_failed": False, "hooks": ["event pre_run_cell"]}}
    events = [{"kind": "file", "what": "opens", "detail": "/work/gradebook.db", "cell": 2},
              {"kind": "process", "what": "starts a program", "detail": "'ls'", "cell": 3}]
    assert review(None, RELEASED, graded, record, events, KNOWN) == [
        "opens /work/gradebook.db (outside its folder) in answer_a",
        "starts a program 'ls' in test_a",
        "timeout in answer_a",
        "output of 123 characters cut in answer_a",
        "kernel died in answer_b; later cells not run",
        "the kernel hid a failing check: scores of this notebook cannot be trusted",
        "IPython hooks left registered: event pre_run_cell",
    ]


def test_unknown_sandbox_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown sandbox 'docker'\. Expected one of: auto, "
                       r"bwrap, user, none\."):
        _sandbox.detect("docker")


def test_detect_falls_back_and_says_why(monkeypatch):
    monkeypatch.setattr(_sandbox, "_bwrap_works", lambda: "bubblewrap is not installed")
    monkeypatch.setattr(_sandbox, "_user_works", lambda: "grading does not run as root")
    assert _sandbox.detect() == ("none", ["bwrap: bubblewrap is not installed",
                                          "user: grading does not run as root"])
    with pytest.raises(ValueError, match=r"The 'bwrap' sandbox does not work here: bubblewrap "
                       r"is not installed\. Install bubblewrap"):
        _sandbox.detect("bwrap")
    assert _sandbox.detect("none") == ("none", [])


def test_python_roots_hold_the_interpreter_and_fcnkit_but_not_the_course():
    roots = _sandbox.python_roots()
    assert any(os.path.realpath(sys.executable).startswith(root + os.sep) for root in roots)
    import fcnkit

    package = os.path.dirname(fcnkit.__file__)
    assert any(package == root or package.startswith(root + os.sep) for root in roots)
    repository = os.path.dirname(package)
    assert repository not in roots  # the course root (solutions/) is never given to the kernel


@pytest.mark.skipif(shutil.which("bwrap") is None,
                    reason=f"bubblewrap is not installed. {_sandbox.INSTALL_HINT}.")
def test_bubblewrap_shows_python_and_the_working_copy_only(tmp_path):
    secret = tmp_path / "gradebook.db"
    secret.write_text("hidden tests")
    cwd = tmp_path / "autograded" / "alice"
    cwd.mkdir(parents=True)
    code = ("import os, fcnkit, numpy; open('mine.txt', 'w').write('ok'); "
            f"print(os.path.exists({str(secret)!r}), os.listdir('.'))")
    command = _sandbox._bwrap_command(str(cwd), str(cwd), [sys.executable, "-c", code])
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False ['mine.txt']"
    assert (cwd / "mine.txt").read_text() == "ok"


def test_the_user_sandbox_warns_about_a_course_others_can_read(tmp_path):
    solutions = tmp_path / "course" / "solutions"
    solutions.mkdir(parents=True)
    solutions.chmod(0o755)
    assert _sandbox.exposed(solutions) == (
        f"{solutions} is open to other users, so the unprivileged kernel may read what it "
        f"holds: make the course private (chmod -R go-rwx {solutions})"
    )
    solutions.chmod(0o701)  # others may not list it, but may open files they can name
    assert _sandbox.exposed(solutions)
    solutions.chmod(0o700)
    assert _sandbox.exposed(solutions) == ""


def run_in_grading_kernel(mode: str, tmp_path, monkeypatch, code: str) -> str:
    """Start the grading kernel of `mode` in a student's folder of a private grading
    folder, run `code`, and return what it printed."""
    import tempfile

    from jupyter_client.manager import KernelManager

    work = Path(tempfile.mkdtemp(prefix="fcnkit-work-", dir=tmp_path))  # private, as grade's
    (work / "gradebook.db").write_text("hidden tests")
    cwd = work / "scratch" / "alice" / "lab" / "lab"  # student, assignment, notebook
    cwd.mkdir(parents=True)
    runtime = Path(tempfile.mkdtemp(prefix="fcnkit-"))
    _sandbox.install_kernelspec(work, mode, runtime)
    for name, value in _sandbox.grading_environment(work, runtime).items():
        monkeypatch.setenv(name, value)
    settings = {"transport": "ipc", "ip": str(runtime / "kernel")} if mode == "bwrap" else {}
    manager = KernelManager(kernel_name=_sandbox.KERNEL_NAME, **settings)
    manager.start_kernel(cwd=str(cwd))
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=60)
        printed = []
        client.execute_interactive(code, timeout=60, output_hook=lambda msg: printed.append(
            msg["content"].get("text", "")))
        return "".join(printed)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        shutil.rmtree(runtime, ignore_errors=True)


PROBE = ("import os\nprint(os.getuid(), os.path.basename(os.getcwd()))\n"
         "try:\n    open('../../../../gradebook.db').read()\nexcept OSError as error:\n"
         "    print(type(error).__name__)\nopen('mine.txt', 'w').write('ok')\n")


@pytest.mark.parametrize("mode, error", [("bwrap", "FileNotFoundError"),
                                         ("user", "PermissionError")])
def test_grading_kernel_cannot_read_the_grading_folder(mode, error, tmp_path, monkeypatch):
    """bubblewrap: the gradebook is not in the kernel's file system; the unprivileged user:
    it is there, but private to root. Either way the kernel writes in its own folder."""
    problem = (_sandbox._bwrap_works if mode == "bwrap" else _sandbox._user_works)()
    if problem:
        pytest.skip(f"the {mode!r} sandbox does not work here: {problem}")
    uid = os.getuid() if mode == "bwrap" else pwd.getpwnam(_sandbox.UNPRIVILEGED_USER).pw_uid
    printed = run_in_grading_kernel(mode, tmp_path, monkeypatch, PROBE)
    assert printed.split() == [str(uid), "lab", error]


def test_review_survives_odd_notebooks_and_forged_events(tmp_path):
    odd = _nb(
        {"cell_type": "code", "source": [1, 2], "metadata": [], "outputs": []},
        {"cell_type": "code", "source": "x = 1", "id": ["not", "a", "string"],
         "metadata": {"nbgrader": {"grade_id": ["answer_a"]}}, "outputs": []},
        "not a cell",
        _code("get_ipython().events.register('pre_run_cell', f)", "answer_a", "a",
              solution=True),
    )
    assert review(odd, RELEASED, odd, None, [], KNOWN) == [
        "extra code cell 1 at the top",
        "extra code cell 2 at the top",
        "test cell test_a deleted (restored)",
        "registers IPython event hooks in answer_a",
    ]
    log = tmp_path / "lab.events.jsonl"
    log.write_text("\n".join([
        json.dumps({"kind": "file", "what": "opens", "detail": "/x", "cell": 1}),
        json.dumps({"kind": "file", "what": "opens", "cell": [1]}),
        json.dumps({"kind": "shell", "what": "opens", "cell": 1}),
        json.dumps(["not", "an", "event"]),
        "{broken json",
        json.dumps({"kind": "process", "what": "starts a program\n# injected heading",
                    "cell": 2}),
    ]))
    events = read_events(log)
    assert [e["what"] for e in events] == ["opens", "starts a program\n# injected heading"]
    graded = json.loads(json.dumps(RELEASED))
    graded["cells"][1]["execution_count"] = 1
    assert review(None, RELEASED, graded, None, events, KNOWN) == [
        "opens /x (outside its folder) in answer_a",
        "starts a program # injected heading in the cell run as number 2",
    ]
