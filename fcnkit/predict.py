"""Command line: `python -m fcnkit predict`, a saved model applied to images of any size.

`python -m fcnkit predict --model M.keras --input IMG --out OUT` reads one
image or every image of a folder (PNG, TIFF or NumPy `.npy`), predicts each
with `fcnkit.tiling` (one padded pass by default; tile by tile with
`--tile`), and writes into OUT, per image `<name>`:

- `<name>.npy`: the prediction, float32 `(rows, columns, output channels)`;
- `<name>.png`: the prediction as an image (one channel: the scores in
  [0, 1] as grey levels; several: the class of highest score, as grey levels
  spread over 0-255);
- `<name>_overlay.png`: the input with the prediction over it (one channel:
  the scores in red; several: every class but 0 in its own colour).

Integer images (8- or 16-bit PNG and TIFF) are scaled to [0, 1] by their
type's maximum, as the bundled datasets are; `.npy` files are used as they
are. A 2-D image gets one channel; an RGBA image given to a 3-channel model
loses its alpha channel.

Example:

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="python -m fcnkit")
>>> subparsers = parser.add_subparsers(dest="command")
>>> args = add_parser(subparsers).parse_args(["--model", "m.keras", "--input", "a.png",
...                                           "--out", "out", "--tile", "256"])
>>> args.tile, args.overlap, args.blend
(256, 'auto', 'none')

Lesson: ``08_large_images``.
"""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np

from fcnkit._validation import validate_option

EXTENSIONS = (".png", ".tif", ".tiff", ".npy")
# Colours of classes 1, 2, ... in the overlay (class 0 is the background).
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60)],
                   dtype="float32") / 255


class InputError(ValueError):
    """A bad input path, image or option: reported on stderr with exit code 2."""


def _overlap(text):
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        import argparse

        raise argparse.ArgumentTypeError(
            f"must be auto or an integer >= 0. Received: {text!r}")
    return value


def add_parser(subparsers):
    """Add the `predict` command to `subparsers` (from `ArgumentParser.add_subparsers`).

    Returns:
        The `predict` `ArgumentParser`.
    """
    parser = subparsers.add_parser(
        "predict",
        help="apply a saved model to images of any size",
        description=(
            "Predict PNG, TIFF or .npy images (one file or a folder) with a saved .keras "
            "model and write, per image, <name>.npy (the prediction), <name>.png and "
            "<name>_overlay.png to --out. Without --tile each image is padded to the "
            "next size the model takes and predicted in one pass; with --tile it is "
            "predicted tile by tile (fcnkit.tiling.predict_tiled), with an overlap "
            "that by default ('auto') makes the result equal to the one-pass prediction."
        ),
    )
    parser.add_argument("--model", required=True, help="a model saved with model.save (.keras)")
    parser.add_argument("--input", required=True,
                        help="an image (.png, .tif, .tiff, .npy) or a folder of them")
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument("--tile", type=int, default=None,
                        help="tile size in pixels; default: one pass over the padded image "
                        "(or the model's own input size when it is fixed)")
    parser.add_argument("--overlap", type=_overlap, default="auto",
                        help="auto (seamless, from the receptive field) or output pixels "
                        "shared by neighbouring tiles")
    parser.add_argument("--blend", default="none",
                        help="none, constant or gaussian: how overlapping tiles combine")
    parser.add_argument("--pad-mode", default="reflect",
                        help="reflect, symmetric or constant: the image beyond its border")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per batch (4)")
    return parser


def _images(path):
    path = pathlib.Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise InputError(
                f"The folder {path} holds no image: expected files ending in "
                f"{', '.join(EXTENSIONS)}. Received: --input {path}."
            )
        return files
    if not path.exists():
        raise InputError(f"No such file or folder. Received: --input {path}.")
    if path.suffix.lower() not in EXTENSIONS:
        raise InputError(
            f"Unknown image type {path.suffix!r}: expected one of {', '.join(EXTENSIONS)}. "
            f"Received: --input {path}. Convert it to PNG, TIFF or .npy."
        )
    return [path]


def read_image(path):
    """An image file as float32 `(rows, columns, channels)`.

    PNG and TIFF through scikit-image (integer types scaled to [0, 1]), `.npy`
    with `numpy.load` as it is.

    Example:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> np.save(os.path.join(folder, "a.npy"), np.ones((4, 5)))
    >>> read_image(os.path.join(folder, "a.npy")).shape
    (4, 5, 1)
    """
    path = pathlib.Path(path)
    try:
        if path.suffix.lower() == ".npy":
            image = np.load(path, allow_pickle=False)
        else:
            import skimage.io

            image = skimage.io.imread(path)
    except Exception as error:  # unreadable or corrupt files
        raise InputError(f"Cannot read {path}: {error}. Received: --input {path}.") from error
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        image = image / np.iinfo(image.dtype).max
    elif image.dtype == bool:
        image = image.astype("float32")
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.ndim != 3 or not np.issubdtype(image.dtype, np.number):
        raise InputError(
            f"{path} must hold one image (rows, columns) or (rows, columns, channels). "
            f"Received: shape {image.shape}, dtype {image.dtype}."
        )
    return image.astype("float32")


def _fit_channels(image, channels, path):
    if channels is None or image.shape[-1] == channels:
        return image
    if image.shape[-1] == 4 and channels == 3:  # RGBA: drop the alpha channel
        return image[..., :3]
    raise InputError(
        f"The model takes {channels} channel(s); {path} has {image.shape[-1]}. "
        f"Received: image shape {image.shape}. Convert the image (e.g. to grey levels "
        "for a 1-channel model)."
    )


def prediction_image(prediction):
    """The prediction as a uint8 picture: scores as grey levels, or the class map.

    Example:

    >>> prediction_image(np.array([[[0.0], [1.0]]])).tolist()
    [[0, 255]]
    >>> prediction_image(np.array([[[0.9, 0.1, 0.0], [0.1, 0.2, 0.7]]])).tolist()
    [[0, 255]]
    """
    prediction = np.asarray(prediction)
    if prediction.shape[-1] == 1:
        return np.round(np.clip(prediction[..., 0], 0, 1) * 255).astype("uint8")
    classes = np.argmax(prediction, axis=-1)
    return np.round(classes * 255 / (prediction.shape[-1] - 1)).astype("uint8")


def overlay_image(image, prediction, alpha=0.5):
    """The input in grey (or colour) with the prediction over it, uint8 RGB.

    Example:

    >>> overlay_image(np.zeros((1, 2, 1)), np.array([[[0.0], [1.0]]]))[0].tolist()
    [[0, 0, 0], [115, 12, 38]]
    """
    image = np.clip(np.asarray(image, dtype="float32"), 0, 1)
    base = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    if base.shape[-1] != 3:
        base = np.repeat(image.mean(axis=-1, keepdims=True), 3, axis=-1)
    prediction = np.asarray(prediction, dtype="float32")
    if prediction.shape[-1] == 1:
        weight = alpha * np.clip(prediction, 0, 1)
        colour = np.broadcast_to(PALETTE[0], base.shape)
    else:
        classes = np.argmax(prediction, axis=-1)
        colour = PALETTE[(classes - 1) % len(PALETTE)]
        weight = np.where(classes > 0, alpha, 0.0)[..., np.newaxis]
    mixed = (1 - weight) * base + weight * colour
    return np.round(mixed * 255).astype("uint8")


def _write_png(path, picture):
    import skimage.io

    skimage.io.imsave(path, picture, check_contrast=False)


def run(args) -> int:
    """Run `python -m fcnkit predict` with parsed `args` (see `add_parser`).

    Returns:
        The exit code: 0 on success, 2 for a bad model, input or option (the
        message goes to stderr).
    """
    import keras

    import fcnkit.layers  # noqa: F401  (registers fcnkit's layers for loading)
    from fcnkit import tiling

    try:
        if args.tile is not None and args.tile < 1:
            raise InputError(f"--tile must be a positive integer. Received: --tile {args.tile}.")
        if args.batch_size < 1:
            raise InputError("--batch-size must be a positive integer. Received: "
                             f"--batch-size {args.batch_size}.")
        files = _images(args.input)
        if not os.path.isfile(args.model):
            raise InputError(f"No such model file. Received: --model {args.model}.")
        try:
            model = keras.models.load_model(args.model, compile=False)
        except Exception as error:
            raise InputError(f"Cannot load the model {args.model}: {error}") from error
        channels = model.inputs[0].shape[-1]
        fixed = None not in tuple(model.inputs[0].shape[1:3])
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for path in files:
            image = _fit_channels(read_image(path), channels, path)
            if args.tile is None and not fixed:
                validate_option(args.blend, "blend", tiling.BLENDS)
                prediction = tiling.predict_padded(model, image, pad_mode=args.pad_mode)
            else:
                prediction = tiling.predict_tiled(
                    model, image, args.tile, overlap=args.overlap, blend=args.blend,
                    pad_mode=args.pad_mode, batch_size=args.batch_size)
            np.save(out / f"{path.stem}.npy", prediction)
            _write_png(out / f"{path.stem}.png", prediction_image(prediction))
            _write_png(out / f"{path.stem}_overlay.png", overlay_image(image, prediction))
            print(f"{path} -> {out / path.stem}.npy, .png, _overlay.png "
                  f"{prediction.shape[0]}x{prediction.shape[1]}x{prediction.shape[2]}")
    except (InputError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
