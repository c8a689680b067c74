"""What deserves the instructor's look in a submission, and what feedback may say.

Pure Python (no nbgrader): used by the grading preprocessors and by `grade`.

- `failure_message(source, line, hidden)`: the message shown to a student for a
  failing test cell, derived from the instructor's source only (never from
  what the kernel printed), so that student code cannot write into feedback.
- `review(...)`: the flags of one graded notebook: test cells edited or
  deleted (and restored), extra cells, cells of another release, code that
  reads or writes outside its folder, replaces functions of imported modules,
  registers IPython hooks or ends the kernel, plus what happened while it ran
  (timeouts, a dead kernel, the time budget, huge outputs, a tampered kernel).
  Each flag names the cell by its grade_id ("extra cell after answer_rf" for a
  cell without one).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from fcnkit.course._notebooks import (
    HIDDEN_MARKERS,
    cell_source,
    is_solution,
    is_test_cell,
    nbgrader_meta,
    split_regions,
)

# ----------------------------------------------------------------------------- feedback


def failure_message(
    source: str, line: int | None, hidden: set[int], assertion: bool = True
) -> str:
    """The feedback for a failing test cell, from the instructor's source alone.

    Args:
        source: the test cell's source, hidden tests included.
        line: the line of the cell where the error was raised (from the
            traceback; None if unknown).
        hidden: line numbers of the hidden region (markers included).
        assertion: whether the error was an `AssertionError` (else, say, a
            `NameError` while the check ran: then the check's message would mislead).

    Returns:
        For an `assert` on a visible line: its message as written (an f-string
        keeps its `{expression}`s, not their values) and the check itself;
        for a hidden line: "A hidden test failed."

    Example:

    >>> print(failure_message('x = f()\\nassert x == 2, f"got {x}, expected 2"', 2, set()))
    AssertionError: got {x}, expected 2
    Check: assert x == 2, f"got {x}, expected 2"
    >>> failure_message("assert ok\\n### BEGIN HIDDEN TESTS\\nassert secret\\n### END HIDDEN TESTS",
    ...                 3, {2, 3, 4})
    'A hidden test failed.'
    """
    if line is None:
        return "A check in this cell failed."
    if line in hidden:
        return "A hidden test failed."
    lines = source.split("\n")
    statement = _statement_at(source, line)
    if statement is None:
        text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        return f"The check on line {line} failed: {text}" if text else "A check failed."
    numbers = set(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    if numbers & hidden:
        return "A hidden test failed."
    text = ast.get_source_segment(source, statement) or lines[line - 1].strip()
    if isinstance(statement, ast.Assert) and assertion:
        if statement.msg is None:
            return f"AssertionError\nCheck: {text}"
        return f"AssertionError: {_as_written(source, statement.msg)}\nCheck: {text}"
    return (
        f"Error while running: {text}\n(The error was raised by code this line calls. "
        "Run the notebook yourself to see it.)"
    )


def _statement_at(source: str, line: int) -> ast.stmt | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    best = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.lineno <= line <= (node.end_lineno or node.lineno):
            # the shortest, and of equal ones the innermost (`if x: assert y` -> the assert)
            if best is None or (node.end_lineno - node.lineno) <= (best.end_lineno - best.lineno):
                best = node
    return best


def _as_written(source: str, node: ast.expr) -> str:
    """A message expression as the test's author wrote it, with no runtime value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                parts.append("{" + (ast.get_source_segment(source, value.value) or "...") + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # "a " + f"b {x}"
        return _as_written(source, node.left) + _as_written(source, node.right)
    return ast.get_source_segment(source, node) or "..."


# ----------------------------------------------------------------------------- code review

_HOOK_ATTRIBUTES = {
    "events": "registers IPython event hooks",
    "input_transformers_cleanup": "changes how IPython reads cells",
    "input_transformers_post": "changes how IPython reads cells",
    "ast_transformers": "changes how IPython runs cells",
    "set_custom_exc": "replaces IPython's error handling",
    "showtraceback": "replaces IPython's error handling",
    "run_cell": "replaces how IPython runs cells",
    "register_magic_function": "defines IPython magics",
}
_CALLS = {
    "sys.settrace": "installs a tracing hook",
    "sys.setprofile": "installs a tracing hook",
    "threading.settrace": "installs a tracing hook",
    "sys.addaudithook": "installs an audit hook",
    "sys.exit": "ends the kernel (sys.exit)",
    "exit": "ends the kernel (exit)",
    "quit": "ends the kernel (quit)",
    "os._exit": "ends the kernel (os._exit)",
    "os.kill": "signals a process",
    "os.abort": "ends the kernel (os.abort)",
    "exec": "runs code built at run time (exec)",
    "eval": "runs code built at run time (eval)",
    "compile": "runs code built at run time (compile)",
    "__import__": "imports modules by name at run time",
    "importlib.import_module": "imports modules by name at run time",
    "setattr": None,  # judged by its first argument below
    "subprocess.run": "starts programs",
    "subprocess.Popen": "starts programs",
    "subprocess.call": "starts programs",
    "subprocess.check_output": "starts programs",
    "os.system": "starts programs",
    "os.popen": "starts programs",
}
_FILE_FUNCTIONS = {
    "open", "os.open", "os.listdir", "os.scandir", "os.walk", "os.remove", "os.unlink",
    "os.rename", "os.replace", "shutil.copy", "shutil.copyfile", "shutil.copytree",
    "shutil.rmtree", "shutil.move", "glob.glob", "pathlib.Path", "Path", "np.load", "np.save",
    "numpy.load", "numpy.save", "np.loadtxt", "np.savetxt",
}
_OUTSIDE = re.compile(r"(^|[/\\])\.\.([/\\]|$)|^[/\\~]")


@dataclass
class CodeFindings:
    """What static analysis found in one cell's code."""

    what: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text not in self.what:
            self.what.append(text)


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    if isinstance(node, ast.Call):  # get_ipython().events...
        inner = _dotted(node.func)
        if inner is not None:
            parts.append(inner + "()")
            return ".".join(reversed(parts))
    return None


def _python_only(source: str) -> str:
    """The cell with IPython's `%magic` and `!shell` lines blanked (they are not Python)."""
    return "\n".join("" if line.lstrip()[:1] in ("%", "!") else line for line in source.split("\n"))


def analyse_code(source: str, modules: set[str]) -> CodeFindings:
    """Static findings in the code of one cell.

    Args:
        source: the cell's code.
        modules: names bound to imported modules anywhere in the notebook
            (`np`, `numpy`, `fcnkit`...).
    """
    findings = CodeFindings()
    for line in source.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith("!") or stripped.startswith("%%bash") or stripped.startswith("%sx"):
            findings.add("starts programs (shell escape)")
    try:
        tree = ast.parse(_python_only(source))
    except SyntaxError:
        return findings
    file_arguments = set()  # paths already reported as read or written
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                name = _dotted(target) if isinstance(target, ast.Attribute) else None
                if name is None:
                    continue
                root = name.split(".")[0]
                if root in modules or root in ("builtins", "__builtins__"):
                    findings.add(f"replaces {name}")
                if any(part in _HOOK_ATTRIBUTES for part in name.split(".")[1:]):
                    findings.add(_HOOK_ATTRIBUTES[next(
                        p for p in name.split(".")[1:] if p in _HOOK_ATTRIBUTES)])
        if isinstance(node, ast.Call):
            name = _dotted(node.func) or ""
            parts = name.split(".")
            # calling run_cell or showtraceback is harmless; replacing them is not
            hooks = [p for p in parts if p in _HOOK_ATTRIBUTES
                     and p not in ("run_cell", "showtraceback")]
            if "get_ipython()" in parts[0] or parts[0] in ("ip", "shell") and hooks:
                if hooks:
                    findings.add(_HOOK_ATTRIBUTES[hooks[0]])
            if name in ("setattr", "delattr") and node.args:
                target = _dotted(node.args[0]) or ""
                if target.split(".")[0] in modules or target in ("builtins", "__builtins__"):
                    findings.add(f"replaces attributes of {target}")
            elif name.endswith("mock.patch") or name.endswith("patch.object"):
                findings.add("replaces functions with mock.patch")
            elif _CALLS.get(name):
                findings.add(_CALLS[name])
            if name in _FILE_FUNCTIONS or name.endswith(".open") or name.endswith(".read_text"):
                for argument in node.args[:1]:
                    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                        if _OUTSIDE.search(argument.value):
                            findings.add(f"reads or writes {argument.value!r} outside its folder")
                            file_arguments.add(id(argument))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in file_arguments and re.search(
                    r"(^|/)(\.\./)+|gradebook\.db|/solutions/", node.value):
                findings.add(f"names the path {node.value[:80]!r}")
    return findings


def imported_names(sources: list[str]) -> set[str]:
    """Names bound by `import` statements in any of `sources`."""
    names = set()
    for source in sources:
        try:
            tree = ast.parse(_python_only(source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    # `from numpy import testing` binds a module; `from x import f` a function:
                    # either way, replacing its attributes deserves a look.
                    names.add(alias.asname or alias.name)
    return names


# ----------------------------------------------------------------------------- review


def _grade_id(cell: dict) -> str | None:
    """A cell's grade_id, or None (also for one that is not a string)."""
    grade_id = nbgrader_meta(cell).get("grade_id")
    return grade_id if isinstance(grade_id, str) else None


def _cell_id(cell: dict) -> str | None:
    cell_id = cell.get("id")
    return cell_id if isinstance(cell_id, str) else None


def cell_labels(cells: list, known_ids: set[str] | None = None) -> list[str | None]:
    """A name for each cell: its grade_id, or "code cell 2 after answer_rf".

    A grade_id that is unknown (`known_ids`) or already seen (a duplicate) does not
    name a cell: the grader treats such a cell as ordinary code. Markdown cells
    without a grade_id get None.
    """
    labels: list[str | None] = []
    previous, count, seen = None, 0, set()
    for cell in cells:
        cell = cell if isinstance(cell, dict) else {}
        grade_id = _grade_id(cell)
        if grade_id in seen or (known_ids is not None and grade_id not in known_ids):
            grade_id = None
        if grade_id:
            seen.add(grade_id)
            labels.append(grade_id)
            previous, count = grade_id, 0
        elif cell.get("cell_type") == "code":
            count += 1
            where = f"after {previous}" if previous else "at the top"
            labels.append(f"code cell {count} {where}")
        else:
            labels.append(None)
    return labels


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


def review(
    submitted: dict | None,
    released: dict,
    graded: dict | None,
    record: dict | None,
    events: list[dict],
    known_ids: set[str],
) -> list[str]:
    """Flags of one notebook (an empty list when nothing deserves a look).

    Args:
        submitted: the notebook as the student handed it in (None if unreadable).
        released: the lesson as released to students.
        graded: the notebook as graded (restored cells, outputs), if any.
        record: what the grading kernel runner recorded (`GradingExecute`).
        events: the events the kernel's audit hook recorded.
        known_ids: the grade_ids of this notebook in the course.
    """
    flags: list[str] = []

    def flag(text: str) -> None:
        text = " ".join(str(text).split())[:300]  # paths and details come from student code
        if text not in flags:
            flags.append(text)

    if submitted is not None:
        _review_cells(submitted, released, known_ids, flag)
    if graded is not None:
        _review_run(graded, record, events, flag)
    return flags


def _review_cells(submitted, released, known_ids, flag) -> None:
    released_cells = released["cells"]
    released_ids = {_cell_id(c) for c in released_cells} - {None}
    released_sources = {_normal(cell_source(c)) for c in released_cells}
    released_by_grade_id = {
        nbgrader_meta(c)["grade_id"]: c for c in released_cells if nbgrader_meta(c).get("grade_id")
    }
    cells = [c for c in submitted["cells"] if isinstance(c, dict)]
    labels = cell_labels(cells, known_ids)
    seen = {label for label in labels if label in known_ids}
    other_release = []
    student_code = []  # (label, source)
    for cell, label in zip(cells, labels):
        grade_id = _grade_id(cell)
        source = cell_source(cell)
        if grade_id and grade_id not in known_ids:
            other_release.append(grade_id)
        elif grade_id and label != grade_id:
            flag(f"duplicated cell {grade_id} (the first copy was graded)")
        if label in known_ids:
            original = released_by_grade_id.get(label)
            if original is not None and (is_test_cell(original) or nbgrader_meta(original).get(
                    "locked")):
                if _normal(source) != _normal(cell_source(original)):
                    kind = "test cell" if is_test_cell(original) else "read-only cell"
                    flag(f"{kind} {label} edited (restored)")
            elif is_solution(cell) or is_solution(original or {}):
                student_code.append((label, source))
            continue
        if cell.get("cell_type") != "code" or _normal(source) in released_sources:
            continue  # as released
        if _cell_id(cell) in released_ids and not grade_id:
            student_code.append((f"edited {label}", source))  # a lesson cell, changed
            continue
        if not grade_id:  # a duplicate or another release's cell is flagged as such
            flag(f"extra {label}")
        student_code.append((label, source))
    for grade_id, original in released_by_grade_id.items():
        locked = nbgrader_meta(original).get("locked")
        if grade_id not in seen and (is_test_cell(original) or locked):
            kind = "test cell" if is_test_cell(original) else "read-only cell"
            flag(f"{kind} {grade_id} deleted (restored)")
    if other_release:
        flag("cells of another release, run as ordinary code: " + ", ".join(other_release))
        missing = [g for g, c in released_by_grade_id.items()
                   if g not in seen and is_solution(c) and not is_test_cell(c)]
        if missing:
            flag("answer cells missing: " + ", ".join(missing))
    modules = imported_names([cell_source(c) for c in cells])
    for label, source in student_code:
        for finding in analyse_code(source, modules).what:
            flag(f"{finding} in {label}")


def _review_run(graded, record, events, flag) -> None:
    cells = [cell if isinstance(cell, dict) else {} for cell in graded["cells"]]
    labels = cell_labels(cells)
    by_count = {
        cell.get("execution_count"): label
        for cell, label in zip(cells, labels)
        if isinstance(cell.get("execution_count"), int)
    }
    by_index = dict(enumerate(labels))
    for event in events:
        where = by_count.get(event.get("cell"), f"the cell run as number {event.get('cell')}")
        detail = f" {event['detail']}" if event.get("detail") else ""
        if event.get("kind") == "file":
            flag(f"{event['what']}{detail} (outside its folder) in {where}")
        else:
            flag(f"{event['what']}{detail} in {where}")
    if record is None:
        return
    for cell in record.get("cells", []):
        where = by_index.get(cell["index"], f"cell {cell['index']}")
        if cell.get("timed_out"):
            flag(f"timeout in {where}")
        if cell.get("output_cut"):
            flag(f"output of {cell['output_chars']} characters cut in {where}")
    stopped = record.get("stopped")
    if stopped:
        where = by_index.get(stopped["index"], f"cell {stopped['index']}")
        flag(f"{stopped['reason']} in {where}; later cells not run")
    probe = record.get("probe") or {}
    if probe.get("canary_failed") is False:
        flag("the kernel hid a failing check: scores of this notebook cannot be trusted")
    for hook in probe.get("hooks", []):
        flag(f"IPython hooks left registered: {hook}")


def read_events(path: Path) -> list[dict]:
    """The events an audit hook wrote (one JSON object per line; bad lines skipped)."""
    events = []
    if not path.is_file():
        return events
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            # student code can write to the log too: keep well-formed events only
            if (isinstance(event, dict) and event.get("kind") in ("file", "process")
                    and isinstance(event.get("what"), str)
                    and isinstance(event.get("detail", ""), str)
                    and isinstance(event.get("cell"), int)):
                events.append(event)
    return events


def hidden_line_numbers(source: str) -> set[int]:
    """Line numbers (from 1) of the hidden-test regions of a cell, markers included."""
    regions = split_regions(source, HIDDEN_MARKERS)
    return {number for number, _ in regions.inside} | set(regions.markers)
