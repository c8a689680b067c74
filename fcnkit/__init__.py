"""fcnkit: a course kit on fully convolutional networks (Keras 3).

Modules: `shapes` (size arithmetic), `layers`, `models`, `datasets`,
`losses`, `metrics`, `weight_map`, `training`, `receptive_field`, `erf`,
`equivariance`, `tiling` (large images), `predict` (the predict command),
`plotting`, `explorers` (lecture demos, `pip install fcnkit[widgets]`), and
`course` (nbgrader helpers, which need `pip install fcnkit[course]`). Import them
directly, e.g. `from fcnkit import models`; importing `fcnkit` itself loads
nothing else.
"""

__version__ = "0.1.0"
