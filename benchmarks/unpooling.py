"""Max-unpooling with pooling indices vs max-pooling + nearest upsampling (lesson 02).

SegNet's decoder puts every pooled maximum back where it was
(`MaxPoolingWithArgmax2D` + `MaxUnpooling2D`, written with keras.ops since
Keras has no argmax pooling); the plain alternative copies it to its whole
window (`MaxPooling2D` + `UpSampling2D`, Keras's own kernels). This script
times both on the same SegNet-sized tensor (`--batch` 4 of `--height` 360 x
`--width` 480 x `--channels` 64, SegNet's first encoder block on CamVid), the
forward pass alone and forward + backward (the gradient of
sum(output * random weights) with respect to the input), each compiled
(tf.function on TensorFlow, jax.jit on JAX). It checks the unpooling's
output and gradient against a NumPy reference (each window's first maximum
kept in place, zeros elsewhere; exit code 1 if they differ). In each of
`--rounds` rounds, which alternate the two methods so that both see the same
machine load, it takes the median time of each over `--repeats` runs after one
warm-up run; it prints the best and the median round of each, and the ratios
indices / plain. The goal is a ratio of at most 2.

Usage:
    .venv/bin/python benchmarks/unpooling.py [--batch 4] [--height 360] [--width 480]
        [--channels 64] [--repeats 5] [--rounds 3]

Reference:
    Badrinarayanan, Kendall, Cipolla, SegNet: A Deep Convolutional
    Encoder-Decoder Architecture for Image Segmentation, TPAMI 2017.
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

from fcnkit.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D  # noqa: E402

POOL = 2


def indices_model(shape) -> keras.Model:
    inputs = keras.Input(shape)
    pooled, indices = MaxPoolingWithArgmax2D(POOL)(inputs)
    return keras.Model(inputs, MaxUnpooling2D(POOL)([pooled, indices]), name="indices")


def plain_model(shape) -> keras.Model:
    inputs = keras.Input(shape)
    pooled = keras.layers.MaxPooling2D(POOL)(inputs)
    return keras.Model(inputs, keras.layers.UpSampling2D(POOL)(pooled), name="plain")


def compiled_steps(model, weights):
    """`(forward, forward_backward)`, compiled, on backend tensors; both return NumPy."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        weights = tf.constant(weights)

        @tf.function
        def forward(x):
            return model(x, training=False)

        @tf.function
        def forward_backward(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                outputs = model(x, training=False)
                total = tf.reduce_sum(outputs * weights)
            return outputs, tape.gradient(total, x)

        def to_numpy(values):
            return [np.asarray(value) for value in values]

        return (lambda x: to_numpy([forward(x)])[0],
                lambda x: to_numpy(forward_backward(x)))
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        weights = jnp.asarray(weights)
        state = [v.value for v in model.trainable_variables], [
            v.value for v in model.non_trainable_variables]

        def apply(x):
            outputs, _ = model.stateless_call(*state, x, training=False)
            return outputs

        def total(x):
            outputs = apply(x)
            return jnp.sum(outputs * weights), outputs

        forward = jax.jit(apply)
        gradient = jax.jit(jax.grad(total, has_aux=True))

        def forward_backward(x):
            grad, outputs = gradient(x)
            return [np.asarray(outputs), np.asarray(grad)]

        return (lambda x: np.asarray(forward(x)), forward_backward)
    raise SystemExit(f"benchmarks/unpooling.py runs on TensorFlow or JAX, not {backend}.")


def reference(x, weights):
    """Unpool(pool(x)) and its input gradient in NumPy: each window's first maximum (in
    row-major order) kept in place, zeros elsewhere; the gradient is `weights` there."""
    batch, height, width, channels = x.shape
    rows, columns = height // POOL, width // POOL
    windows = x[:, : rows * POOL, : columns * POOL].reshape(
        batch, rows, POOL, columns, POOL, channels
    ).transpose(0, 1, 3, 5, 2, 4).reshape(batch, rows, columns, channels, POOL * POOL)
    first = windows.argmax(axis=-1)
    mask = np.arange(POOL * POOL) == first[..., None]
    mask = mask.reshape(batch, rows, columns, channels, POOL, POOL).transpose(0, 1, 4, 2, 5, 3)
    mask = mask.reshape(batch, rows * POOL, columns * POOL, channels)
    cropped = x[:, : rows * POOL, : columns * POOL]
    return np.where(mask, cropped, 0), np.pad(
        np.where(mask, weights, 0), [(0, 0), (0, height - rows * POOL),
                                     (0, width - columns * POOL), (0, 0)]
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="images per batch (4)")
    parser.add_argument("--height", type=int, default=360, help="height (360, CamVid)")
    parser.add_argument("--width", type=int, default=480, help="width (480, CamVid)")
    parser.add_argument("--channels", type=int, default=64, help="channels (64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per round (5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (min(args.batch, args.channels, args.repeats, args.rounds) < 1
            or min(args.height, args.width) < POOL):
        parser.error("--batch, --channels, --repeats and --rounds must be positive, "
                     f"--height and --width at least {POOL}")

    shape = (args.height, args.width, args.channels)
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.batch, *shape)).astype("float32")
    output_shape = (args.batch, args.height // POOL * POOL, args.width // POOL * POOL,
                    args.channels)
    weights = rng.normal(size=output_shape).astype("float32")
    tensor = keras.ops.convert_to_tensor(x)

    steps = {}
    for model in (indices_model(shape), plain_model(shape)):
        steps[model.name] = compiled_steps(model, weights)
    # Rounds alternate the two methods, so both see the same machine load; each round
    # takes the median of --repeats runs of each (median_time).
    times = {(name, kind): [] for name in steps for kind in ("forward", "both")}
    for _ in range(args.rounds):
        for name, (forward, forward_backward) in steps.items():
            seconds, _ = median_time(lambda: forward(tensor), args.repeats)
            times[name, "forward"].append(seconds)
            seconds, result = median_time(lambda: forward_backward(tensor), args.repeats)
            times[name, "both"].append(seconds)
            if name == "indices":
                outputs, gradient = result
    expected_outputs, expected_gradient = reference(x, weights)
    correct = (np.array_equal(outputs, expected_outputs)
               and np.array_equal(gradient, expected_gradient))

    print(f"backend: {keras.backend.backend()}  input: {args.batch} x {args.height} x "
          f"{args.width} x {args.channels} (float32)  pool: {POOL}x{POOL}")
    print("unpooling output and gradient equal the NumPy reference: "
          f"{'yes' if correct else 'NO'}")
    rows = (
        ("MaxPoolingWithArgmax2D + MaxUnpooling2D", "indices"),
        ("MaxPooling2D + UpSampling2D", "plain"),
    )
    width = max(len(label) for label, _ in rows)
    print(f"  median of {args.repeats} runs after 1 warm-up, best and median of "
          f"{args.rounds} alternating rounds:")
    print(f"    {'':<{width}}  {'forward, best / median':>25}  "
          f"{'forward+backward, best / median':>34}")
    for label, name in rows:
        cells = []
        for kind in ("forward", "both"):
            best, median = min(times[name, kind]), statistics.median(times[name, kind])
            cells.append(f"{best * 1e3:8.1f} / {median * 1e3:8.1f} ms")
        print(f"    {label:<{width}}  {cells[0]:>25}  {cells[1]:>34}")
    # The best round is the least disturbed by other work on the machine; the median shows
    # how far the load moved things.
    for label, pick in (("best", min), ("median", statistics.median)):
        ratios = [pick(times["indices", kind]) / pick(times["plain", kind])
                  for kind in ("forward", "both")]
        print(f"    ratio indices / plain ({label}): forward {ratios[0]:.2f}x, "
              f"forward+backward {ratios[1]:.2f}x (goal: 2x or less)")
    if not correct:
        print("  FAIL: the unpooling differs from the NumPy reference")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
