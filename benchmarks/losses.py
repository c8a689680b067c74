"""fcnkit's Dice and Jaccard losses vs Keras's own Dice and Tversky (lesson 07).

`fcnkit.losses.DiceLoss` and `JaccardLoss` (the lecture's j) compute the same
values as `keras.losses.Dice` and `keras.losses.Tversky(alpha=1, beta=1)`
(I + fp + fn = G + P - I), plus what Keras lacks (per-class macro averages,
powers, empty masks defined as a perfect score). This script times them side by
side on a segmentation batch (`--batch` 16 x `--size` 256 x 256 x `--classes` 4,
binary targets and probabilities), over the whole batch and per image, the loss
alone (forward) and the loss with its gradient with respect to the prediction
(forward + backward), compiled (tf.function; jax.jit on JAX). The values and
gradients of each pair must agree (relative 1e-4; otherwise exit code 1). In each
of `--rounds` rounds, which alternate the methods so that all see the same
machine load, it takes the median time of each over `--repeats` runs after one
warm-up run (`median_time`); it prints the best and the median round of each, and
the ratios fcnkit / Keras. The goal is a ratio of at most 1.2. j2 (`power=2`)
has no Keras counterpart: its time is shown next to Tversky's for scale.

Usage:
    .venv/bin/python benchmarks/losses.py [--batch 16] [--size 256] [--classes 4]
        [--repeats 10] [--rounds 3]

Reference:
    Duque-Arias et al., On power Jaccard losses for semantic segmentation,
    VISAPP 2021.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_time  # noqa: E402  (benchmarks/_timing.py)

from fcnkit import losses  # noqa: E402

# (label, fcnkit loss, the Keras loss it is timed against)
PAIRS = [
    ("Dice, whole batch", losses.DiceLoss(), keras.losses.Dice()),
    ("Dice, per image", losses.DiceLoss(per_image=True),
     keras.losses.Dice(axis=(1, 2, 3))),
    ("Jaccard j, whole batch", losses.JaccardLoss(),
     keras.losses.Tversky(alpha=1.0, beta=1.0)),
    ("Jaccard j, per image", losses.JaccardLoss(per_image=True),
     keras.losses.Tversky(alpha=1.0, beta=1.0, axis=(1, 2, 3))),
    ("Jaccard j2 (vs Tversky)", losses.JaccardLoss(power=2),
     keras.losses.Tversky(alpha=1.0, beta=1.0)),
]
# The pairs whose values must agree (j2 is another formula).
SAME_VALUES = 4
TOLERANCE = 1e-4


def compiled_steps(loss, y_true):
    """`(forward, forward_backward)` of `loss(y_true, y_pred)`, compiled; NumPy out."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        y_true = tf.constant(y_true)

        @tf.function
        def forward(y_pred):
            return loss(y_true, y_pred)

        @tf.function
        def forward_backward(y_pred):
            with tf.GradientTape() as tape:
                tape.watch(y_pred)
                value = loss(y_true, y_pred)
            return value, tape.gradient(value, y_pred)

        return (lambda y: np.asarray(forward(y)),
                lambda y: [np.asarray(v) for v in forward_backward(y)])
    if backend == "jax":
        import jax

        y_true = jax.numpy.asarray(y_true)
        forward = jax.jit(lambda y_pred: loss(y_true, y_pred))
        both = jax.jit(jax.value_and_grad(lambda y_pred: loss(y_true, y_pred)))
        return (lambda y: np.asarray(forward(y)),
                lambda y: [np.asarray(v) for v in both(y)])
    raise SystemExit(f"benchmarks/losses.py runs on TensorFlow or JAX, not {backend}.")


def agree(a, b) -> bool:
    scale = max(float(np.max(np.abs(b))), 1e-12)
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) <= TOLERANCE * scale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="images per batch (16)")
    parser.add_argument("--size", type=int, default=256, help="height and width (256)")
    parser.add_argument("--classes", type=int, default=4, help="channels (4)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per round (10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.batch, args.size, args.classes, args.repeats, args.rounds) < 1:
        parser.error("every count must be positive")

    shape = (args.batch, args.size, args.size, args.classes)
    rng = np.random.default_rng(args.seed)
    y_true = (rng.random(shape) > 0.7).astype("float32")
    y_pred = keras.ops.convert_to_tensor(rng.random(shape).astype("float32"))

    steps = {}
    for index, (label, ours, theirs) in enumerate(PAIRS):
        steps[index, "fcnkit"] = compiled_steps(ours, y_true)
        steps[index, "keras"] = compiled_steps(theirs, y_true)
    # Rounds alternate the methods, so all see the same machine load; each round takes
    # the median of --repeats runs of each (median_time).
    times = {(key, kind): [] for key in steps for kind in ("forward", "both")}
    results = {}
    for _ in range(args.rounds):
        for key, (forward, forward_backward) in steps.items():
            seconds, _ = median_time(lambda: forward(y_pred), args.repeats)
            times[key, "forward"].append(seconds)
            seconds, results[key] = median_time(lambda: forward_backward(y_pred),
                                                args.repeats)
            times[key, "both"].append(seconds)

    print(f"backend: {keras.backend.backend()}  batch: {' x '.join(map(str, shape))} "
          "(float32)")
    correct = True
    for index in range(SAME_VALUES):
        (value, gradient), (expected, expected_gradient) = (
            results[index, "fcnkit"], results[index, "keras"])
        same = agree(value, expected) and agree(gradient, expected_gradient)
        correct &= same
        print(f"  {PAIRS[index][0]}: fcnkit and Keras agree (values and gradients): "
              f"{'yes' if same else 'NO'}")
    width = max(len(label) for label, _, _ in PAIRS) + len(" (Keras)")
    print(f"  median of {args.repeats} runs after 1 warm-up, best and median of "
          f"{args.rounds} alternating rounds:")
    print(f"    {'':<{width}}  {'forward, best / median':>25}  "
          f"{'forward+backward, best / median':>34}")
    for index, (label, _, _) in enumerate(PAIRS):
        for source in ("fcnkit", "keras"):
            cells = []
            for kind in ("forward", "both"):
                values = times[(index, source), kind]
                cells.append(f"{min(values) * 1e3:8.2f} / "
                             f"{statistics.median(values) * 1e3:8.2f} ms")
            name = f"{label} ({'fcnkit' if source == 'fcnkit' else 'Keras'})"
            print(f"    {name:<{width}}  {cells[0]:>25}  {cells[1]:>34}")
    # The best round is the least disturbed by other work on the machine; the median shows
    # how far the load moved things.
    for index, (label, _, _) in enumerate(PAIRS):
        parts = []
        for pick_name, pick in (("best", min), ("median", statistics.median)):
            ratios = [pick(times[(index, "fcnkit"), kind]) / pick(times[(index, "keras"), kind])
                      for kind in ("forward", "both")]
            parts.append(f"{pick_name} {ratios[0]:.2f}x / {ratios[1]:.2f}x")
        print(f"    ratio fcnkit / Keras, forward / forward+backward, {label}: "
              f"{', '.join(parts)}" + (" (goal: 1.2x or less)" if index < SAME_VALUES else ""))
    if not correct:
        print("  FAIL: fcnkit and Keras disagree")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
