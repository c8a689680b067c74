"""`check`: lint the course sources, scan `lessons/` for leaks, compare it with a fresh build.

Rules (each problem is one line of the returned list):

- `solutions/<a>/<a>.ipynb` layout; notebooks are readable JSON.
- Notebooks in `solutions/` and `lessons/` are stored without outputs and
  execution counts, with kernelspec `python3`; sources have nbformat >= 4.5 with
  unique cell ids (stable diffs).
- nbgrader metadata: `schema_version` 3, a `grade_id`, unique grade_ids, points on
  graded cells, balanced region markers, hidden tests only in test cells and
  solution regions only in answer cells.
- Every test cell has a visible `assert` line outside its hidden region (hidden-only
  test cells pass on a blank notebook).
- No non-notebook file in `solutions/<a>/` that would leak (nbgrader copies them
  verbatim into `lessons/<a>/`): files containing region markers, and jupytext
  twins (`<notebook>.py`, `.md`, ...).
- Leak scan of **every file** under `lessons/` (notebooks are scanned string by
  string, other files line by line): no region marker, and no *secret line*. A
  secret line is a stripped line of a solution region (or of a whole answer cell
  without markers), a hidden-test region or a mark-scheme region, that has at
  least 6 characters, is not only punctuation, and does not also appear outside
  those regions in any source notebook, as a line or inside one (what students see
  anyway is not a leak: this removes `pass`, `)`, `return model`, code quoted as a
  hint in the text, and the like). A lesson line leaks
  if, stripped, it equals a secret line, or if it contains a secret line of 20
  characters or more. Files and folders that nbgrader ignores
  (`.ipynb_checkpoints`, `__pycache__`, `*.pyc`, `feedback`) are skipped.
- `lessons/` is in sync: a fresh `generate_assignment` in a temporary copy gives
  the same files, byte for byte, and no lesson folder lacks its solutions folder.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from fcnkit.course._build import generate_lessons
from fcnkit.course._notebooks import (
    ALL_MARKERS,
    CONFIG_FILE,
    HIDDEN_MARKERS,
    RELEASE_DIR,
    SOLUTION_MARKERS,
    SOURCE_DIR,
    CourseError,
    cell_source,
    find_assignments,
    is_solution,
    is_test_cell,
    nbgrader_meta,
    read_notebook,
    secret_line_numbers,
    split_regions,
    walk_files,
)

MIN_SECRET_LENGTH = 6
MIN_SUBSTRING_LENGTH = 20
MAX_LEAKS_PER_FILE = 5
JUPYTEXT_SUFFIXES = (".py", ".md", ".Rmd", ".qmd", ".R", ".jl", ".myst")
STUB_LINES = {"# YOUR CODE HERE", "raise NotImplementedError()", "YOUR ANSWER HERE"}
_ASSERT = re.compile(r"\bassert")
_PUNCTUATION_ONLY = re.compile(r"^[\W_]*$")

_REBUILD = "run `python -m fcnkit course build` (make lessons)"


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _lint_storage(nb: dict, name: str) -> list[str]:
    """Outputs, execution counts and kernelspec of any course notebook."""
    problems = []
    with_outputs = [
        index
        for index, cell in enumerate(nb["cells"])
        if cell.get("outputs") or cell.get("execution_count") is not None
    ]
    if with_outputs:
        cells = ", ".join(str(i) for i in with_outputs[:10])
        problems.append(
            f"{name}: stored with outputs or execution counts (cells {cells}). Expected "
            "notebooks without outputs. Fix: clear all outputs (JupyterLab: Edit > Clear "
            "Outputs of All Cells) and save."
        )
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(
            f"{name}: kernelspec name is {kernel!r}. Expected 'python3' (nbgrader runs "
            "the kernel named in the source notebook). Fix: set "
            'metadata.kernelspec to {"name": "python3", "display_name": "Python 3", '
            '"language": "python"}.'
        )
    return problems


def _lint_source(nb: dict, name: str) -> list[str]:
    """nbgrader metadata, regions, visible asserts and cell ids of a source notebook."""
    problems = []
    if (nb.get("nbformat", 0), nb.get("nbformat_minor", 0)) < (4, 5):
        problems.append(
            f"{name}: nbformat {nb.get('nbformat')}.{nb.get('nbformat_minor')}. Expected 4.5 "
            "or later with cell ids (stable lessons/ diffs). Fix: open and save it in "
            "JupyterLab 4."
        )
    cell_ids = [cell.get("id") for cell in nb["cells"]]
    duplicates_ids = sorted({i for i in cell_ids if i and cell_ids.count(i) > 1})
    if (nb.get("nbformat", 0), nb.get("nbformat_minor", 0)) >= (4, 5) and (
        None in cell_ids or duplicates_ids
    ):
        problems.append(
            f"{name}: cell ids missing or repeated ({', '.join(duplicates_ids) or 'missing'}). "
            "Expected one unique id per cell. Fix: give each cell its own id."
        )
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb["cells"]):
        where = f"{name} cell {index}"
        meta = nbgrader_meta(cell)
        source = cell_source(cell)
        if meta:
            grade_id = meta.get("grade_id")
            where = f"{name} cell {index} ({grade_id})"
            if meta.get("schema_version") != 3:
                problems.append(
                    f"{where}: nbgrader metadata has schema_version "
                    f"{meta.get('schema_version')!r}. Expected 3 (nbgrader 0.9). Fix: "
                    f"`nbgrader update {SOURCE_DIR}/` or add \"schema_version\": 3."
                )
            if not grade_id:
                problems.append(
                    f"{where}: nbgrader metadata without grade_id. Expected a unique "
                    "grade_id on every nbgrader cell. Fix: add one."
                )
            elif grade_id in seen:
                problems.append(
                    f"{where}: duplicate grade_id {grade_id!r}, also used by cell "
                    f"{seen[grade_id]}. Expected unique grade_ids (nbgrader keys grades on "
                    "them). Fix: rename one of them."
                )
            else:
                seen[grade_id] = index
            if meta.get("grade") and not isinstance(meta.get("points"), (int, float)):
                problems.append(
                    f"{where}: graded cell without numeric points (got "
                    f"{meta.get('points')!r}). Expected e.g. \"points\": 1. Fix: add points."
                )
        for markers in (SOLUTION_MARKERS, HIDDEN_MARKERS):
            regions = split_regions(source, markers)
            if regions.error:
                problems.append(
                    f"{where}: unbalanced region markers: {regions.error}. Expected "
                    f"'### {markers[0]}' ... '### {markers[1]}'. Fix the markers."
                )
            if regions.found and markers is SOLUTION_MARKERS and not is_solution(cell):
                problems.append(
                    f"{where}: solution region in a cell that is not an answer cell. Expected "
                    "nbgrader metadata solution=true. Fix: mark the cell "
                    "'Autograded answer' or remove the markers."
                )
            if regions.found and markers is HIDDEN_MARKERS and not is_test_cell(cell):
                problems.append(
                    f"{where}: hidden tests in a cell that is not a test cell. Expected "
                    "nbgrader metadata grade=true, solution=false on a code cell. Fix: "
                    "mark the cell 'Autograder tests'."
                )
        if is_test_cell(cell):
            visible = split_regions(source, HIDDEN_MARKERS).outside
            if not any(
                _ASSERT.search(line) and not line.strip().startswith("#") for _, line in visible
            ):
                problems.append(
                    f"{where}: test cell without a visible assert outside the hidden tests. "
                    "Expected at least one visible assertion (a hidden-only test cell passes "
                    "on a blank notebook). Fix: add e.g. a format check such as "
                    "`assert isinstance(q1, str)` above '### BEGIN HIDDEN TESTS'."
                )
    return problems


def _collect_lines(nb: dict, name: str, secret: dict, visible: set) -> None:
    """Add a source notebook's secret lines (with their origin) and visible lines."""
    for index, cell in enumerate(nb["cells"]):
        numbers, _ = secret_line_numbers(cell)
        grade_id = nbgrader_meta(cell).get("grade_id", f"cell {index}")
        for number, line in enumerate(cell_source(cell).split("\n"), start=1):
            text = line.strip()
            if not text:
                continue
            if number in numbers:
                secret.setdefault(text, f"{name} ({grade_id})")
            else:
                visible.add(text)


def _is_distinctive(text: str) -> bool:
    return (
        len(text) >= MIN_SECRET_LENGTH
        and not _PUNCTUATION_ONLY.match(text)
        and text not in STUB_LINES
        and not any(marker in text for marker in ALL_MARKERS)
    )


def _strings(value):
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def _file_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    if path.suffix == ".ipynb":
        try:
            nb = read_notebook(path)
        except CourseError:
            return text.split("\n")
        # notebook sources are lists of lines: join each string list first
        lines = []
        for cell in nb.get("cells", []):
            lines.extend(cell_source(cell).split("\n"))
            for output in cell.get("outputs", []):
                for string in _strings(output):
                    lines.extend(string.split("\n"))
            for string in _strings(cell.get("metadata", {})):
                lines.extend(string.split("\n"))
        for string in _strings(nb.get("metadata", {})):
            lines.extend(string.split("\n"))
        return lines
    return text.split("\n")


def _scan_leaks(lessons: Path, root: Path, secret: dict) -> list[str]:
    long_secrets = [s for s in secret if len(s) >= MIN_SUBSTRING_LENGTH]
    problems = []
    for path in walk_files(lessons):
        leaks = []
        for number, line in enumerate(_file_lines(path), start=1):
            text = line.strip()
            if not text:
                continue
            marker = next((m for m in ALL_MARKERS if m in text), None)
            if marker:
                leaks.append(f"marker '{marker}' in line {text!r}")
                continue
            if text in secret:
                leaks.append(f"line {text!r} from {secret[text]}")
                continue
            hit = next((s for s in long_secrets if s in text), None)
            if hit:
                leaks.append(f"line {text!r} contains {hit!r} from {secret[hit]}")
        if leaks:
            shown = "; ".join(leaks[:MAX_LEAKS_PER_FILE])
            hidden = len(leaks) - MAX_LEAKS_PER_FILE
            more = f" (and {hidden} more)" if hidden > 0 else ""
            problems.append(
                f"{_rel(path, root)}: contains solution or hidden-test text: {shown}{more}. "
                "Expected no solution, hidden test or marker anywhere under lessons/. "
                f"Fix: remove the file if it is not generated, then {_REBUILD}."
            )
    return problems


def _check_source_files(folder: Path, notebooks: list[Path], root: Path) -> list[str]:
    """Non-notebook files in solutions/<a>/ are copied to lessons/<a>/: flag leaky ones."""
    problems = []
    stems = {nb.stem for nb in notebooks}
    for path in walk_files(folder):
        if path.suffix == ".ipynb":
            continue
        name = _rel(path, root)
        if path.parent == folder and path.stem in stems and path.suffix in JUPYTEXT_SUFFIXES:
            problems.append(
                f"{name}: a text twin of a solution notebook (jupytext?). nbgrader copies every "
                f"non-notebook file of {SOURCE_DIR}/<assignment>/ verbatim into "
                f"{RELEASE_DIR}/<assignment>/, solutions included. Expected twins outside "
                f'{SOURCE_DIR}/ (jupytext.toml: formats = "solutions///ipynb,src///py:percent"). '
                "Fix: move or delete it."
            )
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        marker = next((m for m in ALL_MARKERS if m in text), None)
        if marker:
            problems.append(
                f"{name}: contains '{marker}'. nbgrader copies non-notebook files of "
                f"{SOURCE_DIR}/<assignment>/ verbatim into {RELEASE_DIR}/<assignment>/, so "
                "this would leak. Expected region markers only inside notebooks. "
                "Fix: move the file out of solutions/."
            )
    return problems


def _compare_trees(expected: Path, actual: Path, root: Path, assignment: str) -> list[str]:
    expected_files = {p.relative_to(expected) for p in walk_files(expected)}
    actual_files = {p.relative_to(actual) for p in walk_files(actual)} if actual.is_dir() else set()
    problems = []
    base = f"{RELEASE_DIR}/{assignment}"
    if not actual.is_dir():
        return [
            f"{base}/: missing. Expected the lesson generated from {SOURCE_DIR}/{assignment}/. "
            f"Fix: {_REBUILD} and commit lessons/."
        ]
    for path in sorted(expected_files - actual_files):
        problems.append(
            f"{base}/{path.as_posix()}: missing (out of sync with {SOURCE_DIR}/{assignment}/). "
            f"Fix: {_REBUILD}."
        )
    for path in sorted(actual_files - expected_files):
        problems.append(
            f"{base}/{path.as_posix()}: not generated from {SOURCE_DIR}/{assignment}/ (lessons/ "
            f"is generated, never edited by hand). Fix: {_REBUILD}; it removes this file."
        )
    for path in sorted(expected_files & actual_files):
        if (expected / path).read_bytes() != (actual / path).read_bytes():
            problems.append(
                f"{base}/{path.as_posix()}: out of sync with {SOURCE_DIR}/{assignment}/ (a fresh "
                f"build differs byte for byte). Expected lessons/ to be regenerated after every "
                f"change to solutions/. Fix: {_REBUILD} and commit lessons/."
            )
    return problems


def check(root: Path | str = ".", *, sync: bool = True) -> list[str]:
    """List the problems of a course: leaks, stale lessons, malformed sources.

    See the module docstring for every rule. Runs nbgrader once (in a temporary
    copy) to compare `lessons/` with a fresh build; executes no notebook.

    Args:
        root: the course root, the folder holding `nbgrader_config.py`.
        sync: also regenerate the lessons and compare them byte for byte.

    Returns:
        One message per problem (empty if the course is clean). Each says what
        is wrong, what was expected and how to fix it.
    """
    root = Path(root).resolve()
    problems = []
    if not (root / CONFIG_FILE).is_file():
        return [
            f"{root}: no {CONFIG_FILE}. Expected the course root (the folder holding "
            f"{CONFIG_FILE}, {SOURCE_DIR}/ and {RELEASE_DIR}/). Fix: pass --root with that folder."
        ]
    source = root / SOURCE_DIR
    for stray in sorted(source.glob("*.ipynb")) if source.is_dir() else []:
        problems.append(
            f"{_rel(stray, root)}: notebook directly in {SOURCE_DIR}/. Expected "
            f"{SOURCE_DIR}/<assignment>/<assignment>.ipynb (nbgrader needs the assignment "
            f"folder). Fix: move it to {SOURCE_DIR}/{stray.stem}/{stray.name}."
        )
    assignments = find_assignments(root)
    if not assignments:
        problems.append(
            f"{_rel(source, root)}/: no solutions found. Expected "
            f"{SOURCE_DIR}/<assignment>/<assignment>.ipynb (nbgrader source notebooks)."
        )
        return problems

    secret: dict[str, str] = {}
    visible: set[str] = set()
    for assignment, notebooks in assignments.items():
        for path in notebooks:
            name = _rel(path, root)
            try:
                nb = read_notebook(path)
            except CourseError as error:
                problems.append(str(error))
                continue
            problems += _lint_storage(nb, name)
            problems += _lint_source(nb, name)
            _collect_lines(nb, name, secret, visible)
        problems += _check_source_files(source / assignment, notebooks, root)
    # A line that the students see anyway (alone or quoted in a visible line) is no secret.
    secret = {text: where for text, where in secret.items()
              if _is_distinctive(text) and text not in visible}
    secret = {text: where for text, where in secret.items()
              if not any(text in line for line in visible)}

    lessons = root / RELEASE_DIR
    if lessons.is_dir():
        for path in walk_files(lessons):
            if path.suffix == ".ipynb":
                try:
                    problems += _lint_storage(read_notebook(path), _rel(path, root))
                except CourseError as error:
                    problems.append(str(error))
        problems += _scan_leaks(lessons, root, secret)
        for stale in sorted(p for p in lessons.iterdir() if p.is_dir()):
            if stale.name not in assignments and not stale.name.startswith("."):
                problems.append(
                    f"{RELEASE_DIR}/{stale.name}/: no {SOURCE_DIR}/{stale.name}/ to generate it "
                    f"from. Expected each lesson folder to come from a solutions folder. Fix: "
                    f"{_REBUILD}; it removes stale lesson folders."
                )

    if sync:
        with tempfile.TemporaryDirectory(prefix="fcnkit-check-") as tmp:
            try:
                generated = generate_lessons(root, Path(tmp))
            except CourseError as error:
                problems.append(str(error))
            else:
                for assignment, folder in generated.items():
                    problems += _compare_trees(folder, lessons / assignment, root, assignment)
    return problems
