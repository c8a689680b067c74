"""fcnkit: a course kit on fully convolutional networks (Keras 3).

Modules: `shapes` (size arithmetic), `layers`, `models`, `datasets`,
`training`, `plotting`, `course` (nbgrader helpers). Import them directly,
e.g. `from fcnkit import models`.
"""

__version__ = "0.1.0"
