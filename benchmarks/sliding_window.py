"""Sliding-window patch classifier vs one fully convolutional pass (lesson 01).

Cireşan et al. (2012) segment an image by classifying the patch around every
pixel with a CNN. That is correct but recomputes the same convolutions for
overlapping patches again and again. Turning the classifier's Dense layers into
convolutions (the first one with a kernel as large as the feature map it reads,
the others 1x1), with the same weights, gives a fully convolutional network
that produces all the per-pixel outputs in one pass over the padded image.

This script builds a small patch classifier (valid 3x3 convolutions, Flatten,
Dense, Dense), converts it, runs both on the same reflect-padded image, checks
that the outputs agree (max abs diff <= 1e-5, else exit code 1), and prints the
median time of each over `--repeats` runs after one warm-up run, and the ratio.
The times include padding and (for the patch classifier) cutting the patches.

`--full` runs the lecture's real setting instead: Cireşan's 65x65 patches on a
512x512 image, with a network of Cireşan's layout (valid convolutions 4, 5, 4, 4,
each followed by a 2x2 max-pooling, then Dense(200), Dense(2); `--filters` maps
per convolution, 8 by default where the paper has 48, so that the patch-by-patch
run takes minutes on a CPU, not hours). Its fully convolutional version keeps
every pooling at stride 1 and dilates what follows by the strides skipped so far
(Long et al.'s "filter rarefaction", the a trous trick): a 2x2 pooling after a
stride of d becomes the maximum of the map and its copies shifted by d, and the
next convolution gets dilation_rate 2d. One pass then gives the score of every
pixel's patch, exactly.

Usage:
    .venv/bin/python benchmarks/sliding_window.py [--size 64] [--patch 15] [--repeats 5]
    .venv/bin/python benchmarks/sliding_window.py --full [--filters 8]

Reference:
    Cireşan, Giusti, Gambardella, Schmidhuber, Deep Neural Networks Segment
    Neuronal Membranes in Electron Microscopy Images, NIPS 2012.
    Long, Shelhamer, Darrell, Fully Convolutional Networks for Semantic
    Segmentation, CVPR 2015 (Sec. 3.1, "convolutionalization").
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_time, print_timings  # noqa: E402  (benchmarks/_timing.py)

TOLERANCE = 1e-5
CONV_FILTERS = (16, 16)
DENSE_UNITS = 32
NUM_CLASSES = 2


def patch_classifier(patch: int) -> keras.Model:
    """Classifies one `patch`x`patch` grey patch: valid convs, Flatten, Dense."""
    inputs = keras.Input((patch, patch, 1), name="patch")
    x = inputs
    for index, filters in enumerate(CONV_FILTERS, start=1):
        x = keras.layers.Conv2D(filters, 3, activation="relu", name=f"conv{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(DENSE_UNITS, activation="relu", name="dense1")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="dense2")(x)
    return keras.Model(inputs, outputs, name="patch_classifier")


def convolutionalize(classifier: keras.Model) -> keras.Model:
    """The same network, fully convolutional, with the same weights.

    `dense1` reads the flattened (h, w, c) feature map, so its kernel of shape
    (h*w*c, units) reshapes (row-major, as Flatten orders it) into a convolution
    kernel (h, w, c, units); `dense2` becomes a 1x1 convolution.
    """
    feature_height, feature_width = classifier.get_layer("flatten").input.shape[1:3]
    inputs = keras.Input((None, None, 1), name="image")
    x = inputs
    for index, filters in enumerate(CONV_FILTERS, start=1):
        x = keras.layers.Conv2D(filters, 3, activation="relu", name=f"conv{index}")(x)
    x = keras.layers.Conv2D(
        DENSE_UNITS, (feature_height, feature_width), activation="relu", name="dense1"
    )(x)
    outputs = keras.layers.Conv2D(NUM_CLASSES, 1, activation="softmax", name="dense2")(x)
    return copy_weights(classifier, keras.Model(inputs, outputs, name="fully_convolutional"))


def copy_weights(classifier: keras.Model, model: keras.Model) -> keras.Model:
    """Gives `model` the weights of `classifier`, layer by layer (same names).

    The convolutions are copied as they are; a Dense kernel of shape
    (inputs, units) is reshaped into the kernel of the convolution that
    replaces it: (h, w, c, units) for `dense1`, which reads the flattened
    (h, w, c) feature map (row-major, as Flatten orders it), (1, 1, c, units)
    for the Dense layers after it.
    """
    for layer in classifier.layers:
        if not layer.weights:
            continue
        weights = layer.get_weights()
        target = model.get_layer(layer.name)
        if isinstance(layer, keras.layers.Dense):
            weights[0] = weights[0].reshape(target.kernel.shape)
        target.set_weights(weights)
    return model


# Cireşan et al. (2012), 65x65 patches: (kernel size) of each valid convolution, each
# followed by a 2x2 max-pooling, then two dense layers.
CIRESAN_KERNELS = (4, 5, 4, 4)
CIRESAN_DENSE = 200
CIRESAN_PATCH = 65


def ciresan_classifier(patch: int, filters: int) -> keras.Model:
    """Cireşan's layout: (valid conv, 2x2 max-pool) x 4, Dense(200), Dense(2)."""
    inputs = keras.Input((patch, patch, 1), name="patch")
    x = inputs
    for index, kernel in enumerate(CIRESAN_KERNELS, start=1):
        x = keras.layers.Conv2D(filters, kernel, activation="relu", name=f"conv{index}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(CIRESAN_DENSE, activation="relu", name="dense1")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="dense2")(x)
    return keras.Model(inputs, outputs, name="ciresan_classifier")


def _dilated_max_pool(x, dilation: int, name: str):
    """max over x and its copies shifted by `dilation` along rows, columns and both:
    a 2x2 max-pooling of stride 1 whose taps are `dilation` apart."""
    shifted = [
        keras.layers.Cropping2D(((top, dilation - top), (left, dilation - left)),
                                name=f"{name}_shift{top}{left}")(x)
        for top in (0, dilation) for left in (0, dilation)
    ]
    return keras.layers.Maximum(name=name)(shifted)


def convolutionalize_ciresan(classifier: keras.Model, filters: int) -> keras.Model:
    """Every patch's scores in one pass: poolings at stride 1, later layers dilated."""
    inputs = keras.Input((None, None, 1), name="image")
    x = inputs
    dilation = 1
    for index, kernel in enumerate(CIRESAN_KERNELS, start=1):
        x = keras.layers.Conv2D(filters, kernel, dilation_rate=dilation, activation="relu",
                                name=f"conv{index}")(x)
        x = _dilated_max_pool(x, dilation, f"pool{index}")
        dilation *= 2
    feature_height, feature_width = classifier.get_layer("flatten").input.shape[1:3]
    x = keras.layers.Conv2D(CIRESAN_DENSE, (feature_height, feature_width),
                            dilation_rate=dilation, activation="relu", name="dense1")(x)
    outputs = keras.layers.Conv2D(NUM_CLASSES, 1, activation="softmax", name="dense2")(x)
    return copy_weights(classifier,
                        keras.Model(inputs, outputs, name="ciresan_fully_convolutional"))


def pad(image: np.ndarray, patch: int) -> np.ndarray:
    """Reflect-pads so that every pixel has a full patch centred on it."""
    half = patch // 2
    return np.pad(image, ((half, patch - 1 - half), (half, patch - 1 - half)), mode="reflect")


def predict_patch_by_patch(classifier, image, patch, batch_size):
    """Classifies the patch around every pixel, `batch_size` patches at a time."""
    padded = pad(image, patch)
    patches = np.lib.stride_tricks.sliding_window_view(padded, (patch, patch))
    height, width = image.shape
    patches = patches.reshape(height * width, patch, patch, 1)
    scores = [
        keras.ops.convert_to_numpy(classifier(patches[start : start + batch_size]))
        for start in range(0, len(patches), batch_size)
    ]
    return np.concatenate(scores).reshape(height, width, NUM_CLASSES)


def predict_fully_convolutional(model, image, patch):
    """One pass of the fully convolutional network over the padded image (cropped to
    the image: a network whose receptive field is smaller than the patch gives a few
    more outputs)."""
    padded = pad(image, patch)[None, :, :, None]
    return keras.ops.convert_to_numpy(model(padded))[0, :image.shape[0], :image.shape[1]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="image height and width (64)")
    parser.add_argument("--patch", type=int, default=15, help="patch size, odd, >= 7 (15)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (5)")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="patches per batch for the patch classifier (1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true",
                        help="the lecture's setting: Cireşan's network on 65x65 patches of a "
                             "512x512 image; the patch-by-patch run is timed once (minutes "
                             "on a 2-core CPU), the one pass max(3, --repeats) times")
    parser.add_argument("--filters", type=int, default=8,
                        help="maps per convolution of the --full network (8; Cireşan: 48)")
    args = parser.parse_args(argv)
    if args.full:
        args.size, args.patch = 512, CIRESAN_PATCH
    if args.patch < 2 * len(CONV_FILTERS) + 1 + 2 or args.patch % 2 == 0:
        parser.error(f"--patch must be odd and at least {2 * len(CONV_FILTERS) + 3}. "
                     f"Received: --patch {args.patch}")
    if args.size < args.patch // 2 + 1:
        parser.error(f"--size must be larger than half the patch (reflect padding). "
                     f"Received: --size {args.size} --patch {args.patch}")
    if args.repeats < 1 or args.batch_size < 1:
        parser.error("--repeats and --batch-size must be positive")

    keras.utils.set_random_seed(args.seed)
    image = np.random.default_rng(args.seed).random((args.size, args.size)).astype("float32")
    if args.full:
        classifier = ciresan_classifier(args.patch, args.filters)
        fully_convolutional = convolutionalize_ciresan(classifier, args.filters)
    else:
        classifier = patch_classifier(args.patch)
        fully_convolutional = convolutionalize(classifier)

    def by_patch():
        return predict_patch_by_patch(classifier, image, args.patch, args.batch_size)

    def in_one_pass():
        return predict_fully_convolutional(fully_convolutional, image, args.patch)

    if args.full:
        # Minutes per patch-by-patch run: the run that is checked is the one timed, after
        # a warm-up (tracing) on a corner of the image; the one pass is timed as usual.
        predict_patch_by_patch(classifier, image[:16, :16], args.patch, args.batch_size)
        start = time.perf_counter()
        patch_scores = by_patch()
        patch_time = time.perf_counter() - start
        fcn_time, fcn_scores = median_time(in_one_pass, max(args.repeats, 3))
    else:
        patch_scores, fcn_scores = by_patch(), in_one_pass()
    if patch_scores.shape != fcn_scores.shape:
        print(f"FAIL: output shapes differ: {patch_scores.shape} vs {fcn_scores.shape}")
        return 1
    difference = float(np.max(np.abs(patch_scores - fcn_scores)))

    if not args.full:
        patch_time, _ = median_time(by_patch, args.repeats)
        fcn_time, _ = median_time(in_one_pass, args.repeats)

    pixels = args.size * args.size
    print(f"backend: {keras.backend.backend()}  image: {args.size}x{args.size} "
          f"({pixels} pixels)  patch: {args.patch}x{args.patch}  "
          f"classifier: {classifier.count_params()} parameters")
    print(f"max |patch-by-patch - fully convolutional| = {difference:.2e} "
          f"(tolerance {TOLERANCE:.0e})")
    rows = (
        (f"patch by patch ({pixels} patches, batches of {args.batch_size})", patch_time),
        ("fully convolutional (one pass)", fcn_time),
    )
    if args.full:
        width = max(len(label) for label, _ in rows)
        print("patch by patch timed once (after a warm-up on a 16x16 corner), the one pass "
              f"as the median of {max(args.repeats, 3)} runs after 1 warm-up:")
        for label, seconds in rows:
            print(f"  {label:<{width}}  {seconds:9.2f} s")
        print(f"  ratio patch-by-patch / fully convolutional: {patch_time / fcn_time:.1f}x "
              "(goal > 50x)")
    else:
        print_timings(rows, args.repeats, "patch-by-patch / fully convolutional",
                      patch_time / fcn_time)
    if difference > TOLERANCE:
        print(f"FAIL: the two methods disagree by {difference:.2e} > {TOLERANCE:.0e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
