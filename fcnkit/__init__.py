"""fcnkit: a course kit on fully convolutional networks (Keras 3).

Modules: `shapes` (size arithmetic), `layers`, `models`, `datasets`,
`losses`, `metrics`, `weight_map`, `training`, `plotting`, and `course`
(nbgrader helpers, which need `pip install fcnkit[course]`). Import them
directly, e.g. `from fcnkit import models`; importing `fcnkit` itself loads
nothing else.
"""

__version__ = "0.1.0"
