"""nbgrader configuration of the fcnkit course. The course root is this folder.

`solutions/<assignment>/<assignment>.ipynb` (instructor notebooks: solutions and
hidden tests) are released as `lessons/<assignment>/<assignment>.ipynb`.
Use `python -m fcnkit course build | check | grade` rather than calling nbgrader
yourself: those commands run nbgrader in a temporary copy of the course, so the
gradebook (which holds the hidden tests) never lands in the repository.
Plain `nbgrader ...` commands run from this folder use the same settings.

Why each setting is here: see `reference/nbgrader.md` in the design notes and
the docstrings of `fcnkit.course.preprocessors`.
"""

import os
from pathlib import Path

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    OverwriteKernelspec,
    SaveAutoGrades,
)

from fcnkit.course import KERNEL_ENV
from fcnkit.course.preprocessors import (
    DropDuplicateIds,
    DropUnknownIds,
    FeedbackOnly,
    GradingExecute,
    RepairCellMetadata,
    RestoreMissingCells,
)

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
ROOT = Path(__file__).resolve().parent

# Kernels inherit this environment: quiet TensorFlow, no oneDNN notice, Keras on TensorFlow.
for _name, _value in KERNEL_ENV.items():
    os.environ.setdefault(_name, _value)

# Course layout: the folder of this file is the course root, wherever nbgrader is started.
c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.course_id = "fcnkit"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "lessons"
c.CourseDirectory.db_url = f"sqlite:///{ROOT / 'gradebook.db'}"  # git-ignored: holds hidden tests

# Student notebooks: what replaces a solution region.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Execution while grading. One spelling of the timeout only, so that
# `--ExecutePreprocessor.timeout=S` on the command line overrides it (seconds per cell).
# `python -m fcnkit course grade` sets its own limits (calibrated on the solutions),
# a time budget per notebook, and the sandboxed kernel; plain `nbgrader autograde`
# runs student code unconfined.
c.ExecutePreprocessor.timeout = 120
c.ExecutePreprocessor.kernel_name = "python3"
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = (
    r"oneDNN custom operations|absl::InitializeLog|cuda drivers|cudart_stub|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning|computation_placer"
    r"|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate compiler"
)

# Sanitising submissions: survive old metadata, duplicated cells, cells of another
# release, foreign kernels, deleted test cells (put back from the gradebook) and
# edited test cells (restored).
c.OverwriteCells.add_missing_cells = True
c.Autograde.sanitize_preprocessors = [
    RepairCellMetadata,
    ClearOutput,
    DropDuplicateIds,
    DropUnknownIds,
    OverwriteKernelspec,
    RestoreMissingCells,
    CheckCellMetadata,
]
# nbgrader's autograde steps, with GradingExecute for Execute (time budget, capped
# output, a dead kernel fails its cell only, a working copy out of the graded folder,
# integrity probe, execution record). nbgrader's ClearMetadataPreprocessor is left
# out: it is disabled by default, and FeedbackOnly keeps only what feedback needs.
c.Autograde.autograde_preprocessors = [
    GradingExecute,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Feedback shows code, scores and the failing checks' messages: no output that
# student code produced, no hidden test.
c.GenerateFeedback.preprocessors = [
    FeedbackOnly,
    GetGrades,
    CSSHTMLHeaderPreprocessor,
]
