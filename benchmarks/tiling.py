"""Tiled prediction vs one whole-image pass vs a naive per-tile loop (lesson 08).

A small "same" U-Net (depth 2, 8 filters, random weights) predicts a random
`--size`x`--size` image three ways:

- whole image: `fcnkit.tiling.predict_padded`, one pass (memory grows with the image);
- tiled: `fcnkit.tiling.predict_tiled` with `overlap="auto"`, tiles of `--tile`
  pixels, `--batch-size` tiles per call, stitched into a preallocated output;
- naive: what a first attempt does: tiles of the training crop size
  (`--naive-tile`, same auto-overlap layout so that the result is seamless), one
  `model.predict` call per tile, pasted into the output.

The three results must agree (max abs difference <= 1e-4, else exit code 1). It
prints the median time of each over `--repeats` runs after one warm-up run and
the ratios tiled / whole (goal <= 1.3) and naive / tiled (goal >= 3).

Then, for each of `--memory-sizes`, a fresh process runs `predict_tiled` (tiles
of `--memory-tile`, 512, so that every size has several) once after a warm-up on
a crop of a few tiles (same tile shape: the compiled predict
function is traced there) and prints its peak memory: the peak of Python
allocations traced by `tracemalloc` (NumPy's buffers: the output, the weights,
the batch of tiles) and the growth of the peak resident set size (VmHWM, reset
before the run through /proc/self/clear_refs; TensorFlow's own buffers are only
in this one). The output array grows with the image; what tiling adds on top of
it (peak minus output) should stay flat. For comparison, another fresh process
prints the growth of the peak RSS of one whole-image pass (`predict_padded`).

Usage:
    .venv/bin/python benchmarks/tiling.py            # 4096x4096, memory at 1024/2048/4096
    .venv/bin/python benchmarks/tiling.py --quick    # 1024x1024, for a smoke run in CI

Reference:
    Ronneberger, Fischer, Brox, MICCAI 2015 (overlap-tile); MONAI
    sliding_window_inference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_time  # noqa: E402  (benchmarks/_timing.py)

from fcnkit import tiling  # noqa: E402
from fcnkit.models import unet  # noqa: E402

TOLERANCE = 1e-4


def small_unet(seed):
    keras.utils.set_random_seed(seed)
    return unet((None, None, 1), num_classes=2, depth=2, filters=8)


def predict_naively(model, image, tile):
    """One `model.predict` per tile, pasted where the tile owns the output."""
    layout = tiling.tile_layout(model, image.shape, tile)
    output = np.zeros((*image.shape[:2], 2), dtype="float32")
    padded = np.pad(image, ((0, layout.padded_size[0] - image.shape[0]),
                            (0, layout.padded_size[1] - image.shape[1]), (0, 0)),
                    mode="reflect")
    rows, columns = layout.owned(0), layout.owned(1)
    for row, top in enumerate(layout.starts[0]):
        for column, left in enumerate(layout.starts[1]):
            piece = padded[top:top + layout.tile_size[0], left:left + layout.tile_size[1]]
            prediction = model.predict(piece[np.newaxis], verbose=0)[0]
            (first_row, end_row), (first_column, end_column) = rows[row], columns[column]
            output[first_row:end_row, first_column:end_column] = prediction[
                first_row - top:end_row - top, first_column - left:end_column - left]
    return output


def _rss_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_child(size, tile, batch_size, seed, whole=False):
    """Runs in a fresh process: peak memory of one predict_tiled call (or, with
    `whole`, the growth of the peak RSS of one predict_padded call)."""
    import tracemalloc

    model = small_unet(seed)
    image = np.random.default_rng(seed).random((size, size, 1)).astype("float32")
    if whole:
        tiling.predict_padded(model, image[:64, :64])  # warm-up
        baseline = _rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        tiling.predict_padded(model, image)
        print(json.dumps({"rss_growth_mib": (_rss_kib("VmHWM") - baseline) / 1024}))
        return
    # Warm-up with the same tile shape on a crop of up to 5 tiles (the predict function is
    # traced there), so that the run measured below is a steady-state call.
    layout = tiling.tile_layout(model, image.shape, tile)
    crop = image[:layout.tile_size[0] + 4 * layout.step[0], :layout.tile_size[1]]
    tiling.predict_tiled(model, crop, tile, batch_size=batch_size)
    baseline = _rss_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS
        resettable = True
    except OSError:
        resettable = False
    tracemalloc.start()
    start = time.perf_counter()
    output = tiling.predict_tiled(model, image, tile, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _rss_kib("VmHWM")
    print(json.dumps({
        "size": size, "seconds": seconds, "output_mib": output.nbytes / 2**20,
        "traced_peak_mib": traced_peak / 2**20,
        "rss_growth_mib": (peak - baseline) / 1024 if resettable else None,
        "tiles": tiling.tile_layout(model, image.shape, tile).count,
    }))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="image side (4096)")
    parser.add_argument("--tile", type=int, default=1072,
                        help="tile of predict_tiled (1072: 4 tiles per side at 4096)")
    parser.add_argument("--naive-tile", type=int, default=256,
                        help="tile of the naive loop, a training crop size (256)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[1024, 2048, 4096])
    parser.add_argument("--memory-tile", type=int, default=512,
                        help="tile of the memory runs (512: several tiles at every size)")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: --size 1024 --tile 272 --repeats 1 "
                             "--memory-sizes 512 1024 --memory-tile 144")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--whole-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.tile, args.repeats = 1024, 272, 1
        args.memory_sizes, args.memory_tile = [512, 1024], 144
    if args.memory_child:
        memory_child(args.memory_child, args.tile, args.batch_size, args.seed,
                     args.whole_child)
        return 0

    model = small_unet(args.seed)
    image = np.random.default_rng(args.seed).random((args.size, args.size, 1)).astype(
        "float32")
    layout = tiling.tile_layout(model, image.shape, args.tile)
    naive_layout = tiling.tile_layout(model, image.shape, args.naive_tile)
    print(f"backend: {keras.backend.backend()}  image: {args.size}x{args.size}  model: "
          f"U-Net depth 2, 8 filters ({model.count_params()} parameters)")
    print(f"tiled: tile {args.tile}, margins {layout.margin[0]}, overlap {layout.overlap[0]}, "
          f"{layout.count} tiles, batches of {args.batch_size}; naive: tile {args.naive_tile}, "
          f"overlap {naive_layout.overlap[0]}, {naive_layout.count} tiles, one predict each")

    def whole():
        return tiling.predict_padded(model, image)

    def tiled():
        return tiling.predict_tiled(model, image, args.tile, batch_size=args.batch_size,
                                    progress=False)

    def naive():
        return predict_naively(model, image, args.naive_tile)

    whole_time, whole_result = median_time(whole, args.repeats)
    tiled_time, tiled_result = median_time(tiled, args.repeats)
    naive_time, naive_result = median_time(naive, args.repeats)
    differences = (float(np.abs(tiled_result - whole_result).max()),
                   float(np.abs(naive_result - whole_result).max()))
    print(f"max |tiled - whole| = {differences[0]:.2e}, max |naive - whole| = "
          f"{differences[1]:.2e} (tolerance {TOLERANCE:.0e})")
    print(f"median of {args.repeats} runs after 1 warm-up:")
    for label, seconds in (("whole image (one pass)", whole_time),
                           (f"predict_tiled (tile {args.tile}, auto overlap)", tiled_time),
                           (f"naive loop (tile {args.naive_tile}, model.predict per tile)",
                            naive_time)):
        print(f"  {label:<52} {seconds:8.2f} s")
    print(f"  ratio tiled / whole: {tiled_time / whole_time:.2f}x (goal <= 1.3x)")
    print(f"  ratio naive / tiled: {naive_time / tiled_time:.1f}x (goal >= 3x)")

    if args.memory_sizes:
        print(f"peak memory of predict_tiled (tile {args.memory_tile}, batches of "
              f"{args.batch_size}) and of one whole-image pass, each in a fresh process:")
        print(f"  {'image':>11}  {'tiles':>5}  {'output':>9}  {'traced peak':>11}  "
              f"{'traced - output':>15}  {'RSS growth':>10}  {'whole: RSS growth':>17}")

        def child(size, *extra):
            result = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(size), "--tile",
                 str(args.memory_tile), "--batch-size", str(args.batch_size), "--seed",
                 str(args.seed), *extra], capture_output=True, text=True, check=True)
            return json.loads(result.stdout.strip().splitlines()[-1])

        for size in args.memory_sizes:
            record, whole_record = child(size), child(size, "--whole-child")
            rss = ("n/a" if record["rss_growth_mib"] is None
                   else f"{record['rss_growth_mib']:.0f} MiB")
            print(f"  {size:>5}x{size:<5}  {record['tiles']:>5}  "
                  f"{record['output_mib']:>5.0f} MiB  {record['traced_peak_mib']:>7.0f} MiB  "
                  f"{record['traced_peak_mib'] - record['output_mib']:>11.0f} MiB  "
                  f"{rss:>10}  {whole_record['rss_growth_mib']:>13.0f} MiB")
    if max(differences) > TOLERANCE:
        print(f"FAIL: the methods disagree by {max(differences):.2e} > {TOLERANCE:.0e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
