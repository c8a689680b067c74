"""The code follows the project's lint rules (pyproject.toml: ruff, line length 100)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ruff_passes():
    result = subprocess.run(
        # What to lint (and to leave out: notebooks, .venv) is pyproject.toml's to say.
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
