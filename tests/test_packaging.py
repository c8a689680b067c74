"""Packaging: `pip install fcnkit` is the library, `fcnkit[course]` adds the course tools."""

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPOSITORY = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
COURSE_PACKAGES = ("nbgrader", "nbformat", "nbclient", "ipykernel")
LIBRARY_MODULES = ("fcnkit", "fcnkit.shapes", "fcnkit.layers", "fcnkit.models",
                   "fcnkit.metrics", "fcnkit.losses", "fcnkit.weight_map", "fcnkit.datasets",
                   "fcnkit.training", "fcnkit.plotting", "fcnkit.receptive_field",
                   "fcnkit.erf", "fcnkit.equivariance", "fcnkit.tiling", "fcnkit.predict",
                   "fcnkit.__main__")
# Imported only when Keras runs on that backend (fcnkit.training.device).
OPTIONAL_BACKENDS = {"jax", "torch"}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def distribution_name(requirement):
    """`"nbformat>=5.9,<6"` -> `"nbformat"` (normalised as in PEP 503)."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(paths):
    """Top-level names of the modules imported anywhere in `paths`, stdlib and fcnkit aside."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"fcnkit", "__future__"}


def declared_distributions_of(module_names):
    """module name -> the installed distributions that provide it."""
    provided = importlib.metadata.packages_distributions()
    return {name: {distribution_name(d) for d in provided.get(name, [])}
            for name in module_names}


def test_course_extra_declares_the_course_tools():
    course = {distribution_name(r) for r in PROJECT["optional-dependencies"]["course"]}
    core = {distribution_name(r) for r in PROJECT["dependencies"]}
    assert set(COURSE_PACKAGES) <= course
    assert not core & set(COURSE_PACKAGES), "the library must not need the course tools"


def test_every_import_is_declared():
    """The library imports only core dependencies; the explorers only those plus the
    `widgets` extra; the course tools only those plus the `course` extra (which holds
    the widgets too: the lessons show the explorers)."""
    extras = PROJECT["optional-dependencies"]
    core = {distribution_name(r) for r in PROJECT["dependencies"]}
    course = {distribution_name(r) for r in extras["course"]}
    widgets = {distribution_name(r) for r in extras["widgets"]}
    assert widgets <= course
    package = REPOSITORY / "fcnkit"
    explorers = [package / "explorers.py"]
    library_files = [p for p in package.rglob("*.py") if "course" not in p.relative_to(
        package).parts and p not in explorers]
    course_files = list((package / "course").rglob("*.py"))
    for files, allowed in ((library_files, core), (explorers, core | widgets),
                           (course_files, core | course)):
        imports = third_party_imports(files) - OPTIONAL_BACKENDS
        undeclared = {name: sorted(dists) for name, dists in
                      declared_distributions_of(imports).items() if not dists & allowed}
        assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


# Imports the library in a fresh process where the course packages cannot be
# imported at all (as after `pip install fcnkit`), uses it a little, and
# reports which modules got loaded.
_WITHOUT_COURSE_TOOLS = textwrap.dedent(
    """
    import importlib, json, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Uninstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Uninstalled())
    for module in sys.argv[2].split(","):
        importlib.import_module(module)

    from fcnkit import models, training
    models.unet((None, None, 1), num_classes=1, depth=1, filters=2)
    training.TrainSettings(dataset="text_deblur", model="plain_cnn")
    try:
        sys.modules["fcnkit.__main__"].main(["train", "--help"])
    except SystemExit as exit:
        assert exit.code == 0, exit.code
    try:
        sys.modules["fcnkit.__main__"].main(["predict", "--help"])
    except SystemExit as exit:
        assert exit.code == 0, exit.code
    print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)))
    """
)


def test_library_works_without_the_course_tools():
    completed = subprocess.run(
        [sys.executable, "-c", _WITHOUT_COURSE_TOOLS, ",".join(COURSE_PACKAGES),
         ",".join(LIBRARY_MODULES)],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=REPOSITORY,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "usage: python -m fcnkit train" in completed.stdout
    assert "usage: python -m fcnkit predict" in completed.stdout
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []


def _build_backend_available():
    """Whether the build backend pyproject.toml asks for is installed (no download)."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return int(version.split(".")[0]) >= 77


@pytest.mark.skipif(not _build_backend_available(),
                    reason="needs setuptools>=77 installed (build-system.requires); "
                    "the wheel is built offline, without build isolation")
def test_wheel_metadata_lists_the_course_extra(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPOSITORY / name, source)
    shutil.copytree(REPOSITORY / "fcnkit", source / "fcnkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True, text=True, timeout=120,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    (wheel,) = (tmp_path / "wheel").glob("fcnkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(metadata_name).decode()
        names = archive.namelist()
    assert "Provides-Extra: course" in metadata.splitlines()
    for package in COURSE_PACKAGES:
        assert re.search(rf"^Requires-Dist: {package}\b.*; extra == \"course\"$", metadata,
                         re.M), package
    assert not re.search(r"^Requires-Dist: nbgrader\b[^;]*$", metadata, re.M)
    assert "fcnkit/training/experiment.py" in names
