"""Training throughput of a small U-Net over a grid of batch sizes × crop sizes.

The lecture's advice for large images: train on crops as large as memory
allows, with small batches. This script trains the same U-Net (depth 3, 16
filters, Adam, binary cross-entropy) one step at a time on random batches of
every (batch size, crop size) of the grid and prints, for each cell, the
median time of a training step, images per second and megapixels per second,
their ratios to a baseline cell, and the memory: `activation_memory`'s
estimate next to the peak that the device's allocator measured during a step
(`tf.config.experimental.get_memory_info`: on a GPU, and on the CPU through
TensorFlow's BFC allocator, which this script switches on). Each cell is
measured after one warm-up step (tracing, memory allocation), `--steps`
steps; the cells run one after another, so a busy machine moves them
differently: compare ratios measured in one run.

Usage:
    .venv/bin/python benchmarks/training_scale.py --quick     # 2 × 2 cells, 3 steps
    .venv/bin/python benchmarks/training_scale.py             # 5 batch sizes × 3 crops
    .venv/bin/python benchmarks/training_scale.py --batch-sizes 1 4 16 --crop-sizes 256 512
    .venv/bin/python benchmarks/training_scale.py --mixed-precision --jit-compile  # on a GPU
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# TensorFlow's BFC allocator on the CPU keeps the statistics measured here.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fcnkit import models, training  # noqa: E402
from fcnkit.training import device  # noqa: E402

MIB = 2**20


def peak_memory(name):
    """The allocator's peak since the last reset, in bytes, or None."""
    try:
        return tf.config.experimental.get_memory_info(name)["peak"]
    except (ValueError, tf.errors.OpError):
        return None


def reset_memory(name):
    try:
        tf.config.experimental.reset_memory_stats(name)
        return True
    except (ValueError, tf.errors.OpError):
        return False


def measure(model, batch, crop, steps, memory_device, rng):
    """Median seconds of a training step and the allocator's peak (or None)."""
    x = tf.constant(rng.random((batch, crop, crop, 3), dtype=np.float32))
    y = tf.constant((rng.random((batch, crop, crop, 1)) > 0.5).astype("float32"))
    model.train_on_batch(x, y)  # warm-up: tracing for this shape
    measured = reset_memory(memory_device)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        model.train_on_batch(x, y)  # returns the loss: the step has finished
        times.append(time.perf_counter() - started)
    return statistics.median(times), peak_memory(memory_device) if measured else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="batch sizes 1 and 4, crops 64 and 128, 3 steps")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--crop-sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per cell")
    parser.add_argument("--baseline", type=int, nargs=2, metavar=("BATCH", "CROP"),
                        help="the cell the ratios divide by (default: the first)")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction,
                        default=None, help="default: on when there is a GPU")
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction,
                        default=None, help="default: Keras' auto (on a GPU)")
    args = parser.parse_args()
    if args.quick:
        args.batch_sizes, args.crop_sizes, args.steps = [1, 4], [64, 128], 3
    cells = [(batch, crop) for crop in args.crop_sizes for batch in args.batch_sizes]
    baseline = tuple(args.baseline) if args.baseline else cells[0]
    if baseline not in cells:
        sys.exit(f"--baseline {baseline[0]} {baseline[1]} is not a cell of the grid")

    gpu = device.gpu_available()
    mixed = device.environment(args.mixed_precision)["mixed_precision"]
    memory_device = "GPU:0" if gpu else "CPU:0"
    keras.utils.set_random_seed(0)
    with device.dtype_policy(mixed):
        model = models.unet((None, None, 3), num_classes=1, depth=args.depth,
                            filters=args.filters, output_activation="sigmoid")
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy",
                  jit_compile="auto" if args.jit_compile is None else args.jit_compile)
    print(f"U-Net depth {args.depth}, {args.filters} filters "
          f"({model.count_params():,} parameters), Adam; {'GPU' if gpu else 'CPU'}, "
          f"mixed precision {'on' if mixed else 'off'}, XLA "
          f"{'on' if model.jit_compile else 'off'}; median of {args.steps} steps per "
          "cell after 1 warm-up step")

    rng = np.random.default_rng(0)
    rows = {}
    for batch, crop in cells:
        estimate = training.activation_memory(model, crop, batch)
        try:
            seconds, peak = measure(model, batch, crop, args.steps, memory_device, rng)
        except tf.errors.ResourceExhaustedError:
            seconds, peak = None, None
        rows[(batch, crop)] = (seconds, peak, estimate.total)

    base_seconds = rows[baseline][0]
    header = (f"{'batch':>5} {'crop':>5} {'ms/step':>9} {'images/s':>9} {'Mpx/s':>7} "
              f"{'images/s ratio':>14} {'px/s ratio':>10} {'estimate MiB':>12} "
              f"{'measured MiB':>12} {'measured/est.':>13}")
    print(header)
    for (batch, crop), (seconds, peak, estimate) in rows.items():
        memory = (f"{estimate / MIB:12.1f} "
                  + (f"{peak / MIB:12.1f} {peak / estimate:13.2f}" if peak
                     else f"{'n/a':>12} {'':>13}"))
        if seconds is None:
            print(f"{batch:5d} {crop:5d} {'out of memory':>55} {memory}")
            continue
        images = batch / seconds
        pixels = batch * crop * crop / seconds
        image_ratio = images / (baseline[0] / base_seconds)
        pixel_ratio = pixels / (baseline[0] * baseline[1] ** 2 / base_seconds)
        print(f"{batch:5d} {crop:5d} {seconds * 1e3:9.1f} {images:9.1f} {pixels / 1e6:7.2f} "
              f"{image_ratio:13.2f}x {pixel_ratio:9.2f}x {memory}")
    print(f"ratios: against batch {baseline[0]} × crop {baseline[1]} (px/s ratio > 1: "
          "more pixels per second than the baseline cell)")


if __name__ == "__main__":
    main()
