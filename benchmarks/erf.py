"""Effective receptive field: one batched backward pass vs one pass per sample.

`fcnkit.erf.effective_receptive_field` averages |dy_centre/dx| over random
inputs. The samples do not interact, so the gradient of the *sum* over a batch
of the centre outputs with respect to the batch of inputs holds every
per-sample gradient: one backward pass for all samples (with weights re-drawn
per sample, one vectorised pass over the sets of weights). This script measures
that against a loop of one backward pass per sample (`batch_size=1`), on the
same model and the same inputs, checks that the two maps agree (max abs
difference <= 1e-6 of a map that sums to 1, else exit code 1), and prints the
median time of each over `--repeats` runs after one warm-up run, and the ratio.

The model is Luo et al.'s deep network: `--depth` (40) 3x3 convolutions with
ReLU and random weights, `--filters` (8) channels, on a `--size` (128) square
grey input, averaged over `--samples` (32) inputs, twice: with the model's
weights (`init="model"`: one batch of inputs) and with weights re-drawn per
sample (`init="random"`: the sets of weights are stacked and differentiated
in one vectorised pass, `tf.vectorized_map` or `jax.vmap`).

Usage:
    .venv/bin/python benchmarks/erf.py [--depth 40] [--size 128] [--samples 32]

Reference:
    Luo, Li, Urtasun, Zemel, Understanding the Effective Receptive Field in
    Deep Convolutional Neural Networks, NIPS 2016.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_time, print_timings  # noqa: E402  (benchmarks/_timing.py)

from fcnkit.erf import conv_stack, effective_receptive_field  # noqa: E402

TOLERANCE = 1e-6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=40, help="3x3 convolutions (40)")
    parser.add_argument("--size", type=int, default=128, help="input height and width (128)")
    parser.add_argument("--samples", type=int, default=32, help="random inputs averaged (32)")
    parser.add_argument("--filters", type=int, default=8, help="channels per layer (8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.depth, args.size, args.samples, args.filters, args.repeats) < 1:
        parser.error("--depth, --size, --samples, --filters and --repeats must be positive")

    model = conv_stack(args.depth, activation="relu", weights="random",
                       filters=args.filters, seed=args.seed)
    shape = (args.size, args.size, 1)
    print(f"backend: {keras.backend.backend()}  network: {args.depth} x conv3x3 "
          f"({args.filters} filters, ReLU)  input: {args.size}x{args.size}  "
          f"samples: {args.samples}")
    failed = False
    for init, what in (("model", "the model's weights, random inputs"),
                       ("random", "weights re-drawn per sample")):
        def run(batch_size, init=init):
            return effective_receptive_field(model, shape, samples=args.samples,
                                             seed=args.seed, init=init, batch_size=batch_size)

        batched_time, batched_erf = median_time(lambda: run(None), args.repeats)
        loop_time, loop_erf = median_time(lambda: run(1), args.repeats)
        difference = float(np.max(np.abs(batched_erf.map - loop_erf.map)))
        print(f"\ninit={init!r} ({what}): ERF sigma {batched_erf.sigma[0]:.2f}, "
              f"{batched_erf.sigma[1]:.2f} pixels; 95 % square / theoretical RF "
              f"{batched_erf.fraction_of(2 * args.depth + 1):.2f}")
        print(f"  max |batched - per sample| = {difference:.2e} (tolerance {TOLERANCE:.0e})")
        rows = (
            (f"batched (1 backward pass of {args.samples})", batched_time),
            (f"per sample ({args.samples} backward passes of 1)", loop_time),
        )
        print_timings(rows, args.repeats, "per sample / batched", loop_time / batched_time,
                      indent="  ")
        if difference > TOLERANCE:
            print(f"  FAIL: the two maps disagree by {difference:.2e} > {TOLERANCE:.0e}")
            failed = True
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
