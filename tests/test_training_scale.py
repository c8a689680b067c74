"""Training at scale: the memory estimate, mixed precision and XLA flags, a
mirrored strategy on two logical CPU devices, and a run killed mid-epoch."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest

from fcnkit import models, training
from fcnkit.training import device, experiment

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0",
       "PYTHONUNBUFFERED": "1"}
TINY = dict(crop_size=32, batch_size=2, steps_per_epoch=2, depth=1, filters=4, verbose=0)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_python(code, *args, env=ENV, timeout=300):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


# ------------------------------------------------------ the memory estimate


def real_output_bytes(model, images):
    """The bytes of every layer's output in an actual forward pass."""
    layers = [layer for layer in model.layers
              if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    return sum(np.asarray(output).nbytes for output in probe([images]))


@pytest.mark.parametrize("mixed", [False, True], ids=["float32", "mixed_float16"])
def test_estimate_is_the_sum_of_the_real_outputs_of_a_forward_pass(mixed):
    """Exact (0 bytes of tolerance): the shapes and dtypes the estimate computes
    symbolically are those of the tensors a forward pass makes."""
    with device.dtype_policy(mixed):
        model = models.unet((None, None, 3), num_classes=1, depth=2, filters=4,
                            batch_norm=True, output_activation="sigmoid")
    images = np.random.default_rng(0).random((3, 48, 64, 3)).astype("float32")
    estimate = training.activation_memory(model, (48, 64), batch_size=3)
    assert estimate.activations == real_output_bytes(model, images)
    assert estimate.inputs == images.nbytes
    weights = [np.asarray(weight) for weight in model.weights]  # float32 under mixed too
    assert estimate.weights == sum(weight.nbytes for weight in weights)
    trainable = sum(np.asarray(weight).nbytes for weight in model.trainable_weights)
    assert (estimate.gradients, estimate.optimizer_slots) == (trainable, 2 * trainable)
    assert estimate.total == estimate.per_batch + estimate.fixed
    # Counted in another type: every floating output in it.
    as_float32 = training.activation_memory(model, (48, 64), 3, dtype="float32")
    as_float16 = training.activation_memory(model, (48, 64), 3, dtype="mixed_float16")
    assert as_float16.activations * 2 == as_float32.activations
    if mixed:  # float16, but for the output layers kept in float32 (1 channel each)
        assert estimate.activations == as_float16.activations + 2 * (3 * 48 * 64 * 2)


def test_nested_models_count_their_layers_once():
    inner = keras.Sequential([keras.Input((None, None, 4)), keras.layers.Conv2D(6, 3),
                              keras.layers.MaxPooling2D()], name="inner")
    image = keras.Input((None, None, 2))
    nested = keras.Model(image, keras.layers.Conv2D(1, 1)(
        inner(keras.layers.Conv2D(4, 3, padding="same")(image))))
    flat = keras.Sequential([keras.Input((None, None, 2)),
                             keras.layers.Conv2D(4, 3, padding="same"),
                             keras.layers.Conv2D(6, 3), keras.layers.MaxPooling2D(),
                             keras.layers.Conv2D(1, 1)])
    images = np.zeros((2, 20, 24, 2), "float32")
    expected = real_output_bytes(flat, images)
    assert training.activation_memory(nested, (20, 24), 2).activations == expected
    assert training.activation_memory(flat, (20, 24), 2).activations == expected


# Run in a child process with TensorFlow's default oneDNN kernels, whose CPU
# allocator keeps statistics that can be reset between measurements.
_MEASURE = """
    import json, sys
    import numpy as np, tensorflow as tf, keras
    from fcnkit import models, training

    keras.utils.set_random_seed(0)
    model = models.unet((None, None, 3), num_classes=1, depth=3, filters=16)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    rows = []
    for batch, crop in ((8, 128), (2, 256), (1, 64)):
        x = tf.constant(np.random.rand(batch, crop, crop, 3).astype("float32"))
        y = tf.constant((np.random.rand(batch, crop, crop, 1) > 0.5).astype("float32"))
        model.train_on_batch(x, y)  # warm-up: tracing, optimizer slots
        tf.config.experimental.reset_memory_stats("CPU:0")
        model.train_on_batch(x, y)
        peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
        estimate = training.activation_memory(model, crop, batch)
        rows.append((batch, crop, peak, estimate.total))
    print(json.dumps(rows))
"""


def test_estimate_against_the_measured_peak_of_a_training_step():
    """TensorFlow's CPU allocator measures the peak of one training step (U-Net
    depth 3, 16 filters): it must lie between 0.5 and 1.0 times the estimate
    for large activations (measured: about 0.7, the estimate counts every
    convolution's output though a ReLU's backward pass needs only its own),
    and above it for a tiny step, where the fixed costs the estimate leaves out
    (the convolutions' scratch space) dominate."""
    env = {**ENV, "TF_ENABLE_ONEDNN_OPTS": "1"}
    measured = run_python(_MEASURE, env=env)
    assert measured.returncode == 0, measured.stderr[-3000:]
    rows = json.loads(measured.stdout.strip().splitlines()[-1])
    for batch, crop, peak, estimate in rows[:2]:
        assert 0.5 <= peak / estimate <= 1.0, (batch, crop, peak, estimate)
    # Same pixels per batch, same estimate to within the input channels' share.
    assert rows[0][3] == pytest.approx(rows[1][3], rel=0.01)


def test_largest_batch_and_crop_against_brute_force():
    model = models.unet((None, None, 3), num_classes=1, depth=2, filters=4)
    budget = 50 * 2**20
    batch = training.largest_batch_size(model, 96, budget)
    assert training.activation_memory(model, 96, batch).total <= budget
    assert training.activation_memory(model, 96, batch + 1).total > budget
    crop = training.largest_crop_size(model, 4, budget, multiple=4)
    assert crop % 4 == 0
    assert training.activation_memory(model, crop, 4).total <= budget
    assert training.activation_memory(model, crop + 4, 4).total > budget
    assert training.largest_crop_size(model, 4, budget, multiple=4, maximum=64) == 64
    # Mixed precision halves the activations: about twice the batch fits.
    mixed = training.largest_batch_size(model, 96, budget, dtype="mixed_float16")
    assert 2 * batch - 1 <= mixed <= 2 * batch + 1


def test_memory_errors():
    model = models.unet((None, None, 3), num_classes=1, depth=2, filters=4)
    with pytest.raises(ValueError) as error:
        training.largest_batch_size(model, 256, 2**20)
    assert str(error.value) == (
        "A batch of one 256×256 crop needs about 19.2 MiB, more than the budget of 1.0 MiB. "
        "Received: crop_size=256, budget=1048576. Use a smaller crop (largest_crop_size "
        "gives the largest that fits), mixed precision, or more memory."
    )
    with pytest.raises(ValueError) as error:
        training.largest_crop_size(model, 64, 2**20, multiple=32)
    assert str(error.value) == (
        "Even a batch of 64 crops of 32×32 (the smallest multiple of 32) needs about "
        "19.2 MiB, more than the budget of 1.0 MiB. Received: batch_size=64, "
        "budget=1048576. Use a smaller batch, mixed precision, or more memory."
    )
    with pytest.raises(ValueError) as error:
        training.activation_memory(model, 64, dtype="float8")
    assert str(error.value).startswith(
        '`dtype` must be one of "float16", "bfloat16", "float32", "float64", '
        '"mixed_float16", "mixed_bfloat16". Received: dtype=\'float8\'.')
    with pytest.raises(ValueError) as error:
        training.activation_memory(model, (64, 64, 3))
    assert str(error.value) == (
        "`crop_size` must be an int (a square crop) or a pair (height, width). Received: "
        "crop_size=(64, 64, 3). Pass e.g. crop_size=128 or crop_size=(128, 256)."
    )
    with pytest.raises(ValueError) as error:  # 62 -> 31 -> 15 -> 30, merged with 31
        training.activation_memory(model, 62)
    assert str(error.value) == (
        "The model cannot take crops of 62×62: its layer 'decoder_block2_concat' "
        "(Concatenate) would merge tensors of sizes 30×30 and 31×31. Received: "
        "crop_size=(62, 62). Use a size the model takes (for a U-Net, a multiple of "
        "2**depth)."
    )
    with pytest.raises(ValueError) as error:
        training.largest_crop_size(model, 1, 2**30, multiple=32, maximum=16)
    assert str(error.value) == (
        "`maximum` must be at least `multiple` (32). Received: maximum=16, multiple=32. "
        "Pass a larger maximum."
    )

    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(TypeError) as error:
        training.activation_memory(Subclassed(), 64)
    assert str(error.value).startswith(
        "`model` must be a functional or Sequential Keras model built with keras.Input")
    dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError) as error:
        training.activation_memory(dense, 64)
    assert str(error.value) == (
        "`model` must take one batch of images (batch, height, width, channels). "
        "Received: a model with inputs of shapes [(None, 8)]."
    )
    with pytest.raises(ValueError) as error:
        training.largest_batch_size(model, 64, 0)
    assert str(error.value) == (
        "`budget` must be a positive integer (1 or more). Received: budget=0. "
        "Pass budget=1 or more."
    )


# ----------------------------------------------- mixed precision and XLA


def test_mixed_precision_forced_on_a_cpu_is_recorded_and_kept_on_resume(tmp_path):
    result = training.train("nuclei", "unet", epochs=1, out=tmp_path,
                            mixed_precision=True, **TINY)
    assert result["mixed_precision"] is True and result["device"] == "cpu"
    assert training.read_record(tmp_path)["environment"]["mixed_precision"] is True
    with device.dtype_policy(True):
        model = keras.models.load_model(tmp_path / "checkpoint.keras")
    assert model.get_layer("encoder_block1_conv1").compute_dtype == "float16"
    assert keras.mixed_precision.global_policy().name == "float32"

    # The default on a CPU is off: a resumed run must say so explicitly.
    with pytest.raises(ValueError) as error:
        training.train("nuclei", "unet", epochs=2, out=tmp_path, resume=True, **TINY)
    assert str(error.value) == (
        f"`resume=True` continues the run in {tmp_path}, which was trained with other "
        "settings: mixed_precision=True in the run, False in this call. Resume with the "
        "run's settings, or train into another folder."
    )
    resumed = training.train("nuclei", "unet", epochs=2, out=tmp_path, resume=True,
                             mixed_precision=True, **TINY)
    assert resumed["resumed_from_epoch"] == 1 and resumed["mixed_precision"] is True


def test_mixed_precision_forced_off_on_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "gpu_available", lambda: True)
    result = training.train("text_deblur", "plain_cnn", epochs=1, out=tmp_path,
                            mixed_precision=False, jit_compile=False, **TINY)
    assert result["device"] == "gpu" and result["mixed_precision"] is False
    assert training.read_record(tmp_path)["environment"]["mixed_precision"] is False
    model = keras.models.load_model(tmp_path / "model.keras")
    assert {layer.compute_dtype for layer in model.layers} == {"float32"}


def test_jit_compile_is_used_and_may_change_on_resume(tmp_path, monkeypatch):
    built = []
    build_model = experiment.build_model

    def spy(*args, **kwargs):
        built.append(build_model(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(experiment, "build_model", spy)
    first = training.train("text_deblur", "plain_cnn", epochs=1, out=tmp_path,
                           jit_compile=True, **TINY)
    # The model that trained compiled its steps with XLA.
    assert built[0].jit_compile is True and first["jit_compile"] is True
    assert built[0].train_function is not None
    # Not a recorded setting: a resumed run takes this call's value.
    second = training.train("text_deblur", "plain_cnn", epochs=2, out=tmp_path,
                            resume=True, jit_compile=False, **TINY)
    assert second["jit_compile"] is False and second["resumed_from_epoch"] == 1
    # The default is Keras' "auto": no XLA on a CPU.
    third = training.train("text_deblur", "plain_cnn", epochs=3, out=tmp_path,
                           resume=True, **TINY)
    assert third["jit_compile"] is False
    assert [row["epoch"] for row in read_rows(tmp_path / "history.csv")] == ["0", "1", "2"]


@pytest.mark.parametrize(
    "kwargs, error_type, message",
    [
        ({"mixed_precision": "yes"}, TypeError,
         "`mixed_precision` must be None (automatic), True or False. Received: "
         "mixed_precision='yes' of type str. Pass mixed_precision=None, "
         "mixed_precision=True or mixed_precision=False."),
        ({"jit_compile": 1}, TypeError,
         "`jit_compile` must be None (automatic), True or False. Received: jit_compile=1 "
         "of type int. Pass jit_compile=None, jit_compile=True or jit_compile=False."),
        ({"strategy": "mirored"}, ValueError,
         '`strategy` must be one of "none", "mirrored". Received: strategy=\'mirored\'. '
         'Did you mean "mirrored"?'),
        ({"strategy": 2}, TypeError,
         '`strategy` must be None, "none", "mirrored" or a tf.distribute.Strategy. '
         'Received: strategy=2 of type int. Pass e.g. strategy="mirrored".'),
    ],
)
def test_bad_flags_are_refused_before_anything_is_written(tmp_path, kwargs, error_type,
                                                          message):
    with pytest.raises(error_type) as error:
        training.train("nuclei", "unet", epochs=1, out=tmp_path / "run", **TINY, **kwargs)
    assert str(error.value) == message
    assert not (tmp_path / "run").exists()


def test_a_strategy_on_another_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError) as error:
        device.distribution("mirrored")
    assert str(error.value) == (
        "`strategy='mirrored'` uses tf.distribute, which only the TensorFlow backend has. "
        "Received: the jax backend (KERAS_BACKEND=jax). Train with KERAS_BACKEND=tensorflow, "
        "or without a strategy (on JAX, keras.distribution.DataParallel spreads a batch "
        "over devices)."
    )
    assert device.distribution("none").replicas == 1  # no strategy: any backend


def test_the_global_batch_must_split_across_the_replicas():
    three = device.Distribution("mirrored", types.SimpleNamespace(num_replicas_in_sync=3))
    three.check_batch_size(6)
    with pytest.raises(ValueError) as error:
        three.check_batch_size(8)
    assert str(error.value) == (
        "`batch_size` is the global batch, split evenly across the 3 replicas of "
        "strategy='mirrored': it must be a multiple of 3. Received: batch_size=8. "
        "Use 6 or 9."
    )
    with pytest.raises(ValueError, match="Received: batch_size=2. Use 3."):
        three.check_batch_size(2)


# --------------------------------------- MirroredStrategy on two CPU devices

# Two logical CPU devices must be configured before TensorFlow starts: this
# runs in a child process. The same global batch on one device (3 epochs
# straight) and on two replicas (stopped after epoch 2's checkpoint, then
# resumed for the third under a strategy object), then a batch that two
# replicas cannot share.
def _mirrored_script():
    return textwrap.dedent("""
    import csv, json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from fcnkit import training
    from fcnkit.training import checkpoint

    out = sys.argv[1]
    common = dict(dataset="nuclei", model="unet", crop_size=32, batch_size=4,
                  steps_per_epoch=3, depth=1, filters=4, verbose=0)
    one = training.train(epochs=3, out=out + "/one", **common)
    # The mirrored run plans 3 epochs too, and stops after epoch 2's checkpoint.
    original = checkpoint.EpochCheckpoint.on_epoch_end

    class Stop(Exception):
        pass

    def stop_after_two(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 == 2:
            raise Stop

    checkpoint.EpochCheckpoint.on_epoch_end = stop_after_two
    try:
        training.train(epochs=3, out=out + "/two", strategy="mirrored", **common)
    except Stop:
        pass
    checkpoint.EpochCheckpoint.on_epoch_end = original
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    two = training.train(epochs=3, out=out + "/two", resume=True, strategy=strategy,
                         **common)
    try:
        training.train(epochs=1, out=out + "/three", strategy="mirrored",
                       **{**common, "batch_size": 3})
        refused = None
    except ValueError as error:
        refused = str(error)
    losses = {}
    weights = {}
    for name in ("one", "two"):
        with open(f"{out}/{name}/history.csv") as handle:
            losses[name] = [[float(row["loss"]), float(row["val_loss"])]
                            for row in csv.DictReader(handle)]
        model = keras.models.load_model(f"{out}/{name}/model.keras")
        weights[name] = [w.tolist() for w in model.get_weights()]
    print(json.dumps({"one": one, "two": two, "losses": losses, "weights": weights,
                      "refused": refused}))
    """)


def test_mirrored_strategy_on_two_cpus_follows_the_one_device_run(tmp_path):
    """Same global batch (4 crops: 2 per replica), same crops: the loss and the
    held-out loss of every epoch within rtol 1e-5 of one device's, the final
    weights within 1e-5 (float sums in another order; measured about 1e-7),
    including an epoch resumed under a strategy object."""
    result = subprocess.run([sys.executable, "-c", _mirrored_script(), str(tmp_path)],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    one, two = data["one"], data["two"]
    assert (one["strategy"], one["replicas"]) == ("none", 1)
    assert (two["strategy"], two["replicas"]) == ("MirroredStrategy", 2)
    assert two["resumed_from_epoch"] == 2 and two["jit_compile"] is False
    assert len(data["losses"]["two"]) == 3
    np.testing.assert_allclose(data["losses"]["two"], data["losses"]["one"], rtol=1e-5)
    for mirrored, single in zip(data["weights"]["two"], data["weights"]["one"]):
        np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)
    assert two["test_dice"] == pytest.approx(one["test_dice"], abs=1e-3)
    assert data["refused"] == (
        "`batch_size` is the global batch, split evenly across the 2 replicas of "
        "strategy='mirrored': it must be a multiple of 2. Received: batch_size=3. "
        "Use 2 or 4."
    )


# ------------------------------------------------- killed mid-epoch, resumed

KILLED = ["--dataset", "text_deblur", "--model", "plain_cnn", "--crop-size", "32",
          "--batch-size", "2", "--steps-per-epoch", "150", "--depth", "1", "--filters", "4",
          "--epochs", "4", "--verbose", "2"]


def cli(*args):
    return [sys.executable, "-m", "fcnkit", "train", *args]


def test_a_run_killed_mid_epoch_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL during epoch 3 (after epoch 2's checkpoint): `--resume` loses only
    that epoch, and ends as the same run never interrupted (same crops, same
    weights: losses within rtol 1e-5, weights within 1e-5)."""
    killed_out, reference_out = tmp_path / "killed", tmp_path / "reference"
    # The uninterrupted reference runs beside the killed run (two processes).
    reference = subprocess.Popen(cli(*KILLED, "--out", str(reference_out)),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, env=ENV)
    killed = subprocess.Popen(cli(*KILLED, "--out", str(killed_out)), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        for line in killed.stdout:  # "Epoch 3/4" starts after epoch 2's checkpoint
            if line.startswith("Epoch 3/4"):
                killed.send_signal(signal.SIGKILL)
                break
        assert killed.wait(timeout=60) == -signal.SIGKILL
    finally:
        killed.kill()
        killed.stdout.close()
    assert training.read_record(killed_out)["epochs_done"] == 2  # killed inside epoch 3
    assert not (killed_out / "model.keras").exists()
    assert [row["epoch"] for row in read_rows(killed_out / "history.csv")] == ["0", "1"]

    resumed = subprocess.run(cli(*KILLED, "--out", str(killed_out), "--resume"),
                             capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Epoch 3/4" in resumed.stdout and "Epoch 2/4" not in resumed.stdout
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-4000:]
    reference.stderr.close()

    metrics = json.loads((killed_out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 2 and metrics["epochs"] == 4
    assert training.read_record(killed_out)["epochs_done"] == 4
    rows = read_rows(killed_out / "history.csv")
    expected = read_rows(reference_out / "history.csv")
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    np.testing.assert_allclose([[float(row["loss"]), float(row["val_loss"])] for row in rows],
                               [[float(row["loss"]), float(row["val_loss"])]
                                for row in expected], rtol=1e-5)
    model = keras.models.load_model(killed_out / "checkpoint.keras")
    assert int(model.optimizer.iterations) == 4 * 150
    for weights, reference_weights in zip(
            model.get_weights(),
            keras.models.load_model(reference_out / "checkpoint.keras").get_weights()):
        np.testing.assert_allclose(weights, reference_weights, rtol=1e-5, atol=1e-6)
