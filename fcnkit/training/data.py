"""Training data on random crops, and prediction on whole images.

The lecture's advice for large images: train on crops, as large as possible,
with small batches. `crop_dataset` (tf.data) and `CropSequence` (NumPy, for
backends without TensorFlow) draw random crops and apply the same random flips
to an image and its target (the target is never interpolated), and to its
weight map when there is one (the U-Net border weights, computed on the
whole image). Both are streams of a seed only, and a resumed run goes on with
the crops that follow.
`predict_image` applies a model to whole images of any size.

Lesson: ``01_image_to_image``.
"""

from __future__ import annotations

import keras
import numpy as np

from fcnkit._validation import (
    check_bool,
    check_non_negative_int,
    check_positive_int,
)


def _check_pairs(images, targets, crop_size):
    crop_size = check_positive_int(crop_size, "crop_size")
    images, targets = np.asarray(images), np.asarray(targets)
    if images.ndim != 4 or targets.ndim != 4:
        raise ValueError(
            "`images` and `targets` must be 4D arrays (count, height, width, "
            f"channels). Received: images.shape={images.shape}, "
            f"targets.shape={targets.shape}"
        )
    if images.shape[:3] != targets.shape[:3]:
        raise ValueError(
            "Each target must have the count, height and width of its image. "
            f"Received: images.shape={images.shape}, targets.shape={targets.shape}"
        )
    height, width = images.shape[1:3]
    if crop_size > min(height, width):
        raise ValueError(
            f"`crop_size` must be between 1 and the smallest image side "
            f"({min(height, width)}). Received: crop_size={crop_size}. "
            "Use a smaller crop or larger images."
        )
    return images, targets, crop_size


def _check_weight_maps(weight_maps, images):
    """Weight maps `(count, height, width)` (a last axis of 1 is dropped), or None."""
    if weight_maps is None:
        return None
    weight_maps = np.asarray(weight_maps)
    if weight_maps.ndim == 4 and weight_maps.shape[-1] == 1:
        weight_maps = weight_maps[..., 0]
    if weight_maps.shape != images.shape[:3]:
        raise ValueError(
            "`weight_maps` must hold one weight per pixel of each image, shape (count, "
            f"height, width) = {images.shape[:3]}. Received: "
            f"weight_maps.shape={weight_maps.shape}. Compute one map per image, e.g. "
            "with fcnkit.weight_map.unet_weight_map."
        )
    return weight_maps.astype("float32")


def crop_dataset(images, targets, crop_size, batch_size, seed=0, flips=True, start=0,
                 weight_maps=None):
    """An endless `tf.data.Dataset` of random crops with paired random flips.

    Each example picks an image, a crop position and (if `flips`) a horizontal
    and a vertical flip, all from a stateless random stream, so the dataset is
    the same for the same `seed`, whatever else the program does. Image and
    target are stacked along the channels before cropping and flipping, so they
    always get exactly the same geometric transform; targets keep their values
    and dtype (a mask stays a mask: no interpolation ever happens).

    Args:
        images: array `(count, height, width, channels)`.
        targets: array `(count, height, width, target_channels)`.
        crop_size: int, side of the square crops.
        batch_size: int, crops per batch.
        seed: int >= 0, seed of the random stream.
        flips: bool, apply random horizontal and vertical flips.
        start: int >= 0, index of the first example of the stream. A run resumed
            after `k` examples passes `start=k` to go on with new crops
            instead of replaying the first ones.
        weight_maps: None, or per-pixel weights `(count, height, width)` (the
            U-Net weight maps of the whole images), cropped and flipped with
            their images. The stream then holds `(images, targets, weights)`,
            which `Model.fit` takes as `(x, y, sample_weight)`; the crops are
            the same as without them.

    Returns:
        A `tf.data.Dataset` of `(image_batch, target_batch)`, or of
        `(image_batch, target_batch, weight_batch)` with `weight_maps`.

    Raises:
        TypeError: for a count, size or seed that is not an integer (Python
            or NumPy), or `flips` that is not a bool.
        ValueError: for arrays that are not 4D or do not pair up, a crop
            larger than the images, or a count below 1.

    Example:

    >>> images = np.random.rand(2, 32, 32, 3).astype("float32")
    >>> masks = (images[..., :1] > 0.5).astype("uint8")
    >>> x, y = next(iter(crop_dataset(images, masks, 16, batch_size=4)))
    >>> tuple(x.shape), tuple(y.shape), y.dtype.name
    ((4, 16, 16, 3), (4, 16, 16, 1), 'uint8')
    """
    import tensorflow as tf

    images, targets, crop_size = _check_pairs(images, targets, crop_size)
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_non_negative_int(seed, "seed")
    flips = check_bool(flips, "flips")
    start = check_non_negative_int(start, "start")
    weight_maps = _check_weight_maps(weight_maps, images)
    channels = images.shape[-1]
    target_end = channels + targets.shape[-1]
    # Stack in a type that holds both exactly (uint8 images with float masks
    # must not round the masks), then give each part its own type back.
    stack_dtype = np.result_type(images.dtype, targets.dtype, np.float32)
    parts = [images.astype(stack_dtype), targets.astype(stack_dtype)]
    if weight_maps is not None:
        parts.append(weight_maps[..., None].astype(stack_dtype))
    stacked = tf.constant(np.concatenate(parts, axis=-1))
    count, height, width = stacked.shape[:3]

    def uniform(seed, upper):
        return tf.random.stateless_uniform((), seed, maxval=upper, dtype=tf.int32)

    def transform(example_seed):
        seeds = tf.random.experimental.stateless_split(example_seed, 5)
        # Slice the window out of the stack directly: no copy of a whole image.
        corner = [uniform(seeds[0], count), uniform(seeds[1], height - crop_size + 1),
                  uniform(seeds[2], width - crop_size + 1), 0]
        crop = tf.slice(stacked, corner, [1, crop_size, crop_size, -1])[0]
        if flips:
            crop = tf.image.stateless_random_flip_left_right(crop, seeds[3])
            crop = tf.image.stateless_random_flip_up_down(crop, seeds[4])
        pair = (tf.cast(crop[..., :channels], images.dtype),
                tf.cast(crop[..., channels:target_end], targets.dtype))
        if weight_maps is None:
            return pair
        return pair + (tf.cast(crop[..., target_end], tf.float32),)

    # Example i uses the stateless seed (seed, i): the stream depends on `seed`
    # only, not on TensorFlow's global seed or on what ran before.
    return (
        tf.data.Dataset.range(start, 2**62)
        .map(lambda index: tf.stack([tf.constant(seed, tf.int64), index]))
        .map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


class CropSequence(keras.utils.PyDataset):
    """The same random crops and paired flips as `crop_dataset`, in NumPy.

    For backends without TensorFlow (JAX or PyTorch on a GPU machine). Every
    batch index maps to a fixed batch for a given `seed` and epoch.

    Args:
        images: array `(count, height, width, channels)`.
        targets: array `(count, height, width, target_channels)`.
        crop_size: int, side of the square crops.
        batch_size: int, crops per batch.
        steps_per_epoch: int, batches per epoch (the sequence's length).
        seed: int >= 0, seed of the crops.
        flips: bool, apply random horizontal and vertical flips.
        first_epoch: int >= 0, epochs already done by a resumed run: its
            first epoch draws the crops of epoch `first_epoch`.
        weight_maps: None, or per-pixel weights `(count, height, width)`,
            cropped and flipped with their images: batches are then
            `(images, targets, weights)`.
        **kwargs: passed to `keras.utils.PyDataset` (`workers`, ...).

    Raises:
        TypeError, ValueError: as `crop_dataset`.

    Example:

    >>> images = np.random.rand(1, 20, 20, 1).astype("float32")
    >>> sequence = CropSequence(images, images > 0.5, 8, batch_size=2,
    ...                         steps_per_epoch=3)
    >>> len(sequence), sequence[0][0].shape
    (3, (2, 8, 8, 1))
    """

    def __init__(self, images, targets, crop_size, batch_size, steps_per_epoch,
                 seed=0, flips=True, first_epoch=0, weight_maps=None, **kwargs):
        super().__init__(**kwargs)
        self.images, self.targets, self.crop_size = _check_pairs(images, targets, crop_size)
        self.weight_maps = _check_weight_maps(weight_maps, self.images)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.seed = check_non_negative_int(seed, "seed")
        self.flips = check_bool(flips, "flips")
        # A resumed run goes on with the next epochs' crops.
        self.epoch = check_non_negative_int(first_epoch, "first_epoch")

    def __len__(self):
        return self.steps_per_epoch

    def on_epoch_end(self):
        self.epoch += 1

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, self.epoch, index))
        count, height, width = self.images.shape[:3]
        size = self.crop_size
        sources = [self.images, self.targets]
        if self.weight_maps is not None:
            sources.append(self.weight_maps)
        batches = [[] for _ in sources]
        for _ in range(self.batch_size):
            which = rng.integers(count)
            top = rng.integers(height - size + 1)
            left = rng.integers(width - size + 1)
            window = (which, slice(top, top + size), slice(left, left + size))
            crops = [source[window] for source in sources]
            if self.flips and rng.random() < 0.5:
                crops = [crop[:, ::-1] for crop in crops]
            if self.flips and rng.random() < 0.5:
                crops = [crop[::-1] for crop in crops]
            for batch, crop in zip(batches, crops):
                batch.append(crop)
        return tuple(np.stack(batch) for batch in batches)


def predict_image(model, images, multiple=1, batch_size=1):
    """Predict whole images whose size need not be a multiple of `multiple`.

    Images are padded by reflection up to the next multiple (a U-Net with
    depth d needs multiples of 2**d), predicted, and cropped back.

    Args:
        model: a Keras model mapping images to images of the same size.
        images: array `(count, height, width, channels)`.
        multiple: int, the size the model needs height and width to be a
            multiple of.
        batch_size: int, images per prediction batch.

    Returns:
        A NumPy array `(count, height, width, output_channels)`.

    Raises:
        TypeError: for a `multiple` or `batch_size` that is not an integer.
        ValueError: for images that are not 4D or a count below 1.

    Example:

    >>> model = keras.Sequential([keras.Input((None, None, 1)),
    ...                           keras.layers.MaxPooling2D(2),
    ...                           keras.layers.UpSampling2D(2)])
    >>> predict_image(model, np.ones((1, 5, 7, 1)), multiple=2).shape
    (1, 5, 7, 1)
    """
    multiple = check_positive_int(multiple, "multiple")
    batch_size = check_positive_int(batch_size, "batch_size")
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            "`images` must be a 4D array (count, height, width, channels). "
            f"Received: images.shape={images.shape}. Add the missing axes, e.g. "
            "images[None, ..., None] for one grey image."
        )
    height, width = images.shape[1:3]
    pad_h = -height % multiple
    pad_w = -width % multiple
    padded = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    prediction = model.predict(padded, batch_size=batch_size, verbose=0)
    return np.asarray(prediction)[:, :height, :width]




def training_stream(images, targets, settings, epochs_done=0, weight_maps=None):
    """The crops a run trains on: `crop_dataset` on TensorFlow, else `CropSequence`.

    A resumed run that has done `epochs_done` epochs goes on with the crops
    that follow those it has seen.

    Args:
        images: training images `(count, height, width, channels)`.
        targets: training targets.
        settings: a `TrainSettings` (crop size, batch size, steps, seed).
        epochs_done: int >= 0, epochs already done.
        weight_maps: None, or per-pixel weights `(count, height, width)`,
            cropped with the images and given to the loss as `sample_weight`.

    Returns:
        A `tf.data.Dataset` or a `CropSequence`, for `Model.fit`.
    """
    epochs_done = check_non_negative_int(epochs_done, "epochs_done")
    if keras.backend.backend() == "tensorflow":
        seen = epochs_done * settings.steps_per_epoch * settings.batch_size
        return crop_dataset(images, targets, settings.crop_size, settings.batch_size,
                            settings.seed, start=seen, weight_maps=weight_maps)
    return CropSequence(images, targets, settings.crop_size, settings.batch_size,
                        settings.steps_per_epoch, settings.seed, first_epoch=epochs_done,
                        weight_maps=weight_maps)


def held_out_region(images, targets, multiple):
    """The largest top-left region whose sides are multiples of `multiple`.

    Keras evaluates the validation data as it is, so it is cropped to a size
    the network accepts (whole images are predicted with `predict_image`).

    Example:

    >>> x, y = held_out_region(np.zeros((1, 10, 13, 1)), np.zeros((1, 10, 13, 1)), 4)
    >>> x.shape, y.shape
    ((1, 8, 12, 1), (1, 8, 12, 1))
    """
    multiple = check_positive_int(multiple, "multiple")
    height = images.shape[1] - images.shape[1] % multiple
    width = images.shape[2] - images.shape[2] % multiple
    return images[:, :height, :width], targets[:, :height, :width]
