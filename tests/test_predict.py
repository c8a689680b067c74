"""`python -m fcnkit predict` (`fcnkit.predict`): a saved model on PNG, TIFF and .npy files.

The command is driven through its own argparse parser (`add_parser` + `run`), on a tiny
U-Net saved by the test and images the test writes.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
import pytest
import skimage.io

from fcnkit import predict, tiling
from fcnkit.models import unet


def parse(*arguments):
    parser = argparse.ArgumentParser(prog="python -m fcnkit")
    subparsers = parser.add_subparsers(dest="command", required=True)
    predict.add_parser(subparsers)
    return parser.parse_args(["predict", *arguments])


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = unet((None, None, 1), num_classes=2, depth=2, filters=4)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path, model


@pytest.fixture
def images(tmp_path):
    """One grey image as 8-bit PNG, 16-bit TIFF and float .npy, and the floats they hold."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    png = rng.integers(0, 256, (70, 53), dtype=np.uint8)
    tif = rng.integers(0, 65536, (41, 90), dtype=np.uint16)
    array = rng.random((33, 47, 1)).astype("float32")
    skimage.io.imsave(folder / "a.png", png, check_contrast=False)
    skimage.io.imsave(folder / "b.tif", tif, check_contrast=False)
    np.save(folder / "c.npy", array)
    (folder / "notes.txt").write_text("not an image")
    return folder, {"a": png[..., None] / 255, "b": tif[..., None] / 65535, "c": array}


def test_a_folder_is_predicted_in_one_pass(saved_model, images, tmp_path, capsys):
    path, model = saved_model
    folder, expected_inputs = images
    out = tmp_path / "out"
    assert predict.run(parse("--model", str(path), "--input", str(folder), "--out", str(out))) == 0
    printed = capsys.readouterr().out
    for name, image in expected_inputs.items():
        prediction = np.load(out / f"{name}.npy")
        expected = tiling.predict_padded(model, image.astype("float32"))
        np.testing.assert_allclose(prediction, expected, atol=1e-5)
        picture = skimage.io.imread(out / f"{name}.png")
        np.testing.assert_array_equal(picture, np.where(prediction.argmax(-1) == 1, 255, 0))
        overlay = skimage.io.imread(out / f"{name}_overlay.png")
        assert overlay.shape == (*image.shape[:2], 3) and overlay.dtype == np.uint8
        background = prediction.argmax(-1) == 0  # the input in grey where nothing was found
        grey = np.round(np.clip(image[..., 0], 0, 1) * 255)
        np.testing.assert_allclose(overlay[background], np.stack([grey[background]] * 3, -1),
                                   atol=1)
        assert f"{name}.npy" in printed
    assert not (out / "notes.npy").exists()


def test_tiles_give_the_one_pass_result(saved_model, images, tmp_path):
    path, _ = saved_model
    folder, _ = images
    one_pass, tiled = tmp_path / "one", tmp_path / "tiled"
    assert predict.run(parse("--model", str(path), "--input", str(folder / "a.png"),
                             "--out", str(one_pass))) == 0
    assert predict.run(parse("--model", str(path), "--input", str(folder / "a.png"),
                             "--out", str(tiled), "--tile", "52", "--blend", "gaussian",
                             "--batch-size", "2")) == 0
    np.testing.assert_allclose(np.load(tiled / "a.npy"), np.load(one_pass / "a.npy"),
                               atol=1e-5)
    seams = tmp_path / "seams"
    assert predict.run(parse("--model", str(path), "--input", str(folder / "a.png"),
                             "--out", str(seams), "--tile", "24", "--overlap", "0")) == 0
    assert np.abs(np.load(seams / "a.npy") - np.load(one_pass / "a.npy")).max() > 1e-4


@pytest.mark.parametrize("arguments, message", [
    (("--input", "missing.png"), "error: No such file or folder. Received: --input "
                                 "missing.png.\n"),
    (("--input", "{folder}/notes.txt"), "error: Unknown image type '.txt': expected one of "
                                        ".png, .tif, .tiff, .npy. Received: --input "
                                        "{folder}/notes.txt. Convert it to PNG, TIFF or .npy.\n"),
    (("--input", "{folder}", "--tile", "30"),
     "error: `tile_size` must be a size the model takes whole along the rows: every layer "
     "with a stride must receive a size it divides (a multiple of the total stride 4 for a "
     "\"same\" network). Received: tile_size=30, where layer 'encoder_block2_pool' (stride 2) "
     "would receive 15 rows, not a multiple of 2. Use 28 or 32.\n"),
    (("--input", "{folder}", "--blend", "linear"),
     "error: `blend` must be one of \"none\", \"constant\", \"gaussian\". Received: "
     "blend='linear'.\n"),
    (("--input", "{folder}/a.png", "--tile", "52", "--pad-mode", "edge"),
     "error: `pad_mode` must be one of \"reflect\", \"symmetric\", \"constant\". Received: "
     "pad_mode='edge'.\n"),
])
def test_bad_input_exits_with_code_2(saved_model, images, tmp_path, capsys, arguments,
                                     message):
    path, _ = saved_model
    folder, _ = images
    arguments = [argument.format(folder=folder) for argument in arguments]
    code = predict.run(parse("--model", str(path), "--out", str(tmp_path / "out"), *arguments))
    assert code == 2
    assert capsys.readouterr().err == message.format(folder=folder)


def test_wrong_channels_and_missing_model_exit_with_code_2(saved_model, tmp_path, capsys):
    path, _ = saved_model
    colour = tmp_path / "colour.png"
    skimage.io.imsave(colour, np.zeros((8, 8, 3), dtype=np.uint8), check_contrast=False)
    assert predict.run(parse("--model", str(path), "--input", str(colour),
                             "--out", str(tmp_path / "out"))) == 2
    assert capsys.readouterr().err == (
        f"error: The model takes 1 channel(s); {colour} has 3. Received: image shape "
        "(8, 8, 3). Convert the image (e.g. to grey levels for a 1-channel model).\n")
    assert predict.run(parse("--model", str(tmp_path / "none.keras"), "--input", str(colour),
                             "--out", str(tmp_path / "out"))) == 2
    assert capsys.readouterr().err == (
        f"error: No such model file. Received: --model {tmp_path / 'none.keras'}.\n")


def test_overlap_must_be_auto_or_a_count(capsys):
    with pytest.raises(SystemExit) as info:
        parse("--model", "m.keras", "--input", "a.png", "--out", "o", "--overlap", "half")
    assert info.value.code == 2
    assert "argument --overlap: must be auto or an integer >= 0. Received: 'half'" in (
        capsys.readouterr().err)
