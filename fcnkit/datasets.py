"""Small datasets built offline from images that scikit-image ships.

Nothing is downloaded: every dataset is derived, deterministically, from a file
inside the installed `scikit-image` package. `data/README.md` says where each
one comes from and how it is built.

Lesson: ``01_image_to_image``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fcnkit._validation import check_non_negative_int, validate_option

# Constants of the derived datasets (documented in data/README.md).
NUCLEI_TEST_ROWS = 128  # the bottom 128 rows of ihc.png are the test region
NUCLEI_SMOOTHING_SIGMA = 1.0
NUCLEI_PERCENTILE = 80.0
NUCLEI_MIN_SIZE = 30
TEXT_BLUR_SIGMA = 1.5
TEXT_NOISE_STD = 0.02
TEXT_NOISE_SEED = 0


KINDS = ("segmentation", "restoration")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds: its kind of task, shapes, value ranges and the split.

    Attributes:
        name: the name `load` takes.
        task: the task in words.
        kind: `"segmentation"` (targets are binary masks) or `"restoration"`
            (targets are images). `fcnkit.training` picks the loss, the output
            activation and the held-out scores from it.
        source: where the images come from.
        split: how train and test are made, in words.
        train_shape: shape of the training images `(count, height, width,
            channels)`, known without loading them (options are checked
            against it before anything is built).
        test_shape: shape of the test images.
        target_channels: channels of the targets.
        builder: function that builds `(x_train, y_train), (x_test, y_test)`.

    Example:

    >>> info = DATASETS["nuclei"]
    >>> info.kind, info.train_shape, info.target_channels
    ('segmentation', (1, 384, 512, 3), 1)
    """

    name: str
    task: str
    kind: str
    source: str
    split: str
    train_shape: tuple[int, int, int, int]
    test_shape: tuple[int, int, int, int]
    target_channels: int
    builder: Callable[[], tuple]

    def __post_init__(self):
        validate_option(self.kind, "kind", KINDS)


def _ihc_image() -> np.ndarray:
    from skimage import data

    return data.immunohistochemistry()


def nuclei_mask(rgb: np.ndarray) -> np.ndarray:
    """Derived nuclei mask of an immunohistochemistry image (H-DAB stain).

    Steps: colour deconvolution (`skimage.color.rgb2hed`), Gaussian smoothing
    of the haematoxylin channel (sigma 1), threshold at its 80th percentile,
    morphological opening with a disk of radius 1, removal of objects and holes
    of at most 30 pixels. These are labels made by a classical pipeline, not by
    an expert.

    Args:
        rgb: array `(height, width, 3)`, uint8 or float in [0, 1].

    Returns:
        A uint8 array `(height, width)` with values 0 (background) and
        1 (nucleus).

    Example:

    >>> from skimage import data
    >>> mask = nuclei_mask(data.immunohistochemistry())
    >>> mask.shape, mask.dtype, sorted(np.unique(mask).tolist())
    ((512, 512), dtype('uint8'), [0, 1])
    """
    from skimage import color, filters, morphology

    haematoxylin = filters.gaussian(
        color.rgb2hed(rgb)[..., 0], sigma=NUCLEI_SMOOTHING_SIGMA
    )
    mask = haematoxylin > np.percentile(haematoxylin, NUCLEI_PERCENTILE)
    mask = morphology.opening(mask, morphology.disk(1))
    mask = morphology.remove_small_objects(mask, max_size=NUCLEI_MIN_SIZE)
    mask = morphology.remove_small_holes(mask, max_size=NUCLEI_MIN_SIZE)
    return mask.astype("uint8")


def _build_nuclei():
    rgb = _ihc_image()
    image = rgb.astype("float32") / 255.0
    mask = nuclei_mask(rgb)[..., None]
    split = rgb.shape[0] - NUCLEI_TEST_ROWS
    return (
        (image[None, :split], mask[None, :split]),
        (image[None, split:], mask[None, split:]),
    )


def blur_and_noise(
    image: np.ndarray,
    sigma: float = TEXT_BLUR_SIGMA,
    noise_std: float = TEXT_NOISE_STD,
    seed: int = TEXT_NOISE_SEED,
) -> np.ndarray:
    """The degradation of `text_deblur`: Gaussian blur, then Gaussian noise.

    Args:
        image: float array in [0, 1], `(height, width)`.
        sigma: float, standard deviation of the blur in pixels.
        noise_std: float, standard deviation of the additive noise.
        seed: int, seed of the noise (the dataset is deterministic).

    Returns:
        A float32 array, clipped to [0, 1].

    Example:

    >>> sharp = np.zeros((9, 9), "float32"); sharp[4, 4] = 1.0
    >>> blurred = blur_and_noise(sharp, sigma=1.0, noise_std=0.0)
    >>> round(float(blurred.sum()), 3), bool(blurred[4, 4] < 0.2)
    (1.0, True)
    """
    from scipy import ndimage

    seed = check_non_negative_int(seed, "seed")
    blurred = ndimage.gaussian_filter(image.astype("float64"), sigma, mode="reflect")
    noise = np.random.default_rng(seed).normal(0.0, noise_std, image.shape)
    return np.clip(blurred + noise, 0.0, 1.0).astype("float32")


def _build_text_deblur():
    from skimage import data

    pairs = []
    for offset, sharp in enumerate((data.page(), data.text())):
        sharp = sharp.astype("float32") / 255.0
        blurred = blur_and_noise(sharp, seed=TEXT_NOISE_SEED + offset)
        pairs.append((blurred[None, ..., None], sharp[None, ..., None]))
    return tuple(pairs)


DATASETS = {
    "nuclei": DatasetInfo(
        name="nuclei",
        task="binary segmentation of cell nuclei",
        kind="segmentation",
        source="scikit-image data/ihc.png (immunohistochemistry, 512×512 RGB)",
        split=(
            "train: rows 0-383 (1, 384, 512, 3); test: rows 384-511 "
            "(1, 128, 512, 3); masks (…, 1) uint8 in {0, 1}, derived by "
            "colour deconvolution + threshold + morphology"
        ),
        train_shape=(1, 384, 512, 3),
        test_shape=(1, 128, 512, 3),
        target_channels=1,
        builder=_build_nuclei,
    ),
    "text_deblur": DatasetInfo(
        name="text_deblur",
        task="deblurring of text (blurred + noisy -> sharp)",
        kind="restoration",
        source="scikit-image data/page.png (train) and data/text.png (test)",
        split=(
            "train: page.png (1, 191, 384, 1); test: text.png (1, 172, 448, 1); "
            f"inputs blurred with a Gaussian of sigma {TEXT_BLUR_SIGMA} plus "
            f"Gaussian noise of std {TEXT_NOISE_STD}; float32 in [0, 1]"
        ),
        train_shape=(1, 191, 384, 1),
        test_shape=(1, 172, 448, 1),
        target_channels=1,
        builder=_build_text_deblur,
    ),
}


def load(name: str):
    """Load a bundled dataset as NumPy arrays.

    Every dataset is built from an image shipped with scikit-image, the same
    way every time (no download, no randomness left).

    Args:
        name: `"nuclei"` (segmentation of nuclei in an immunohistochemistry
            image; train and test are different regions of the image) or
            `"text_deblur"` (restore a sharp text image from a blurred, noisy
            one; train and test are different images).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: 4D arrays
        `(images, height, width, channels)`. Images are float32 in [0, 1];
        masks are uint8 in {0, 1}.

    Raises:
        ValueError: for an unknown name.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load("nuclei")
    >>> x_train.shape, y_train.shape, x_test.shape
    ((1, 384, 512, 3), (1, 384, 512, 1), (1, 128, 512, 3))
    >>> (x_train, y_train), (x_test, y_test) = load("text_deblur")
    >>> x_train.shape, x_test.shape
    ((1, 191, 384, 1), (1, 172, 448, 1))
    """
    name = validate_option(name, "name", tuple(DATASETS))
    return DATASETS[name].builder()
