"""Backend smoke test: the fcnkit models and layers give the same numbers on JAX as on
TensorFlow.

Keras fixes its backend once per process, so TensorFlow (the supported backend)
runs here and JAX runs in a subprocess with `KERAS_BACKEND=jax`. For each model
(fcnkit's layers: `pooling_layers_net`, a small network that uses all of them):

1. TensorFlow builds it (seeded He-normal kernels), gives every bias and
   batch-norm parameter and statistic a random value, saves the weights and
   its outputs for a fixed random input, then takes one SGD step on a fixed
   batch and saves the loss and the new weights.
2. JAX rebuilds the same model from the same arguments, loads the weights,
   predicts, and takes the same SGD step.
3. The outputs, the loss and the weights after the step must agree within
   `ATOL`/`RTOL` below (float32; the two backends use different convolution
   kernels, so the last bits differ), the loss must be finite and every weight
   (batch-norm statistics included) must have changed.

A gradient is only comparable away from the kinks of ReLU and max-pooling: a
pre-activation at 2e-7 from zero (it happens) is positive on one backend and
negative on the other, and that single pixel moved a batch-norm update by 5%.
So the training batch is drawn again until every ReLU input and every
max-pooling runner-up is at least `KINK_MARGIN` away from the kink (the two
backends round differently by ~1e-7 to 1e-6).

The package's doctests also run under JAX (`test_doctests_pass_on_jax`): every
example in `fcnkit/` (the course tools aside) must work on both backends.

The `.keras` round trip of the models is tested in `test_models.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import fcnkit.models
from fcnkit.layers import AddCoords2D, BlurPool2D, MaxPoolingWithArgmax2D, MaxUnpooling2D
from fcnkit.shapes import is_valid_unet_size

REPOSITORY = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

# Agreement of TensorFlow and JAX, float32. Measured differences: up to 2e-6
# for outputs and losses, 1e-7 for the weights after one step.
ATOL = 1e-5
RTOL = 1e-5
KINK_MARGIN = 1e-5
LEARNING_RATE = 0.1
SUBPROCESS_TIMEOUT_S = 300

_VALID_SIZES = [n for n in range(1, 200) if is_valid_unet_size(n, depth=2, padding="valid")]

# name -> (builder, keyword arguments, input shape of the test batch, target kind)
MODELS = {
    "plain_cnn": (
        "plain_cnn",
        dict(input_shape=[None, None, 1], output_channels=2, filters=[4, 4], kernel_size=3),
        (2, 20, 24, 1),
        "regression",
    ),
    "unet_same_batchnorm": (
        "unet",
        dict(input_shape=[None, None, 1], num_classes=3, depth=2, filters=4,
             padding="same", batch_norm=True),
        (2, 16, 20, 1),
        "classes",
    ),
    "unet_valid": (
        "unet",
        # The two smallest valid sizes, so that height and width differ.
        dict(input_shape=[None, None, 1], num_classes=2, depth=2, filters=4, padding="valid"),
        (2, _VALID_SIZES[0], _VALID_SIZES[1], 1),
        "classes",
    ),
    "fcn8s": (
        "fcn",
        # Every fusion step; the transposed convolutions keep their bilinear kernels.
        dict(input_shape=[None, None, 1], num_classes=3, variant="8s", filters=2,
             head_filters=4),
        (2, 32, 64, 1),
        "classes",
    ),
    "segnet": (
        "segnet",
        dict(input_shape=[None, None, 1], num_classes=2, depth=2, filters=4),
        (2, 16, 20, 1),
        "classes",
    ),
    # fcnkit's own layers, on odd sizes unknown until run time.
    "pooling_layers": (
        "pooling_layers_net",
        dict(input_shape=[None, None, 1], filters=4),
        (2, 15, 18, 1),
        "regression",
    ),
}


def pooling_layers_net(input_shape, filters):
    """MaxPoolingWithArgmax2D, MaxUnpooling2D (to the recorded size), AddCoords2D and
    BlurPool2D in one small network. Every layer is named, so that the weight paths do not
    depend on how many layers the process made before."""
    inputs = keras.Input(input_shape, name="image")
    features = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                   name="encoder")(inputs)
    pooled, indices = MaxPoolingWithArgmax2D(2, name="pool")(features)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                            name="bottleneck")(pooled)
    x = MaxUnpooling2D(2, name="unpool")([x, indices, features])
    x = AddCoords2D(with_r=True, name="coordinates")(x)
    x = BlurPool2D(3, name="blur")(x)
    outputs = keras.layers.Conv2D(2, 1, name="head")(x)
    return keras.Model(inputs, outputs, name="pooling_layers_net")


# Builders defined here rather than in fcnkit.models.
_TEST_BUILDERS = {"pooling_layers_net": pooling_layers_net}


def build(builder, kwargs):
    """The model `fcnkit.models.<builder>(**kwargs)`, or one of `_TEST_BUILDERS` (kwargs as
    stored in JSON)."""
    kwargs = dict(kwargs)
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    function = _TEST_BUILDERS.get(builder) or getattr(fcnkit.models, builder)
    return function(**kwargs)


def compile_for(model, target_kind, learning_rate):
    loss = (
        "mean_squared_error" if target_kind == "regression"
        else "sparse_categorical_crossentropy"
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=loss)


def weights_dict(model):
    return {w.path: np.asarray(w).copy() for w in model.weights}


# Run by the JAX subprocess: `build`, `compile_for` and `weights_dict` come from
# this very file, imported under the JAX backend.
_JAX_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys, traceback
    from pathlib import Path

    import keras
    import numpy as np

    test_file, work = sys.argv[1], Path(sys.argv[2])
    module_spec = importlib.util.spec_from_file_location("fcnkit_backend_test", test_file)
    helpers = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(helpers)

    spec = json.loads((work / "spec.json").read_text())
    report = {"backend": keras.backend.backend(), "models": {}}
    for name, (builder, kwargs, target_kind) in spec["models"].items():
        try:
            data = np.load(work / f"{name}_data.npz")
            model = helpers.build(builder, kwargs)
            model.load_weights(work / f"{name}.weights.h5")
            outputs = model.predict(data["inputs"], verbose=0)
            helpers.compile_for(model, target_kind, spec["learning_rate"])
            loss = model.train_on_batch(data["train_x"], data["train_y"])
            np.savez(work / f"{name}_jax.npz", outputs=outputs,
                     loss=np.asarray(loss, dtype="float64"))
            np.savez(work / f"{name}_jax_weights.npz", **helpers.weights_dict(model))
            report["models"][name] = "ok"
        except Exception:
            report["models"][name] = traceback.format_exc()
    (work / "report.json").write_text(json.dumps(report))
    """
)


def _randomize_weights(model, rng):
    """Random biases and batch-norm parameters and statistics, so loading is tested.

    The kernels keep their He-normal values: noise on top of them would make the
    activations grow layer after layer until the softmax saturates, and then
    the backends legitimately differ (TensorFlow computes the cross-entropy from
    the logits behind the softmax, JAX from probabilities clipped at 1e-7).
    """
    values = []
    for weight in model.weights:
        value = np.asarray(weight)
        kind = weight.path.rsplit("/", 1)[-1]
        if kind in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif kind in ("bias", "beta", "moving_mean"):
            value = rng.normal(0.0, 0.1, value.shape)
        values.append(value.astype("float32"))
    model.set_weights(values)


def _kink_margin(model, x):
    """Smallest distance of a ReLU input or a max-pooling runner-up to its kink.

    Computed in training mode (batch statistics), as in the training step; the
    model's weights and batch-norm statistics are left as they were.
    """
    relu = keras.activations.relu
    pooling = (keras.layers.MaxPooling2D, MaxPoolingWithArgmax2D)
    watched = [
        layer for layer in model.layers
        if getattr(layer, "activation", None) is relu or isinstance(layer, pooling)
    ]
    if not watched:
        return np.inf
    probe = keras.Model(model.input, [layer.input for layer in watched])
    saved = [np.asarray(weight).copy() for weight in model.weights]
    values = probe(x, training=True)
    for weight, value in zip(model.weights, saved):
        weight.assign(value)  # undo the batch-norm statistics update
    margins = []
    for layer, value in zip(watched, values):
        if isinstance(layer, pooling):  # "valid", square pools
            pool = layer.pool_size[0]
            value = np.asarray(value)
            batch, height, width, channels = value.shape
            value = value[:, : height - height % pool, : width - width % pool]
            windows = value.reshape(batch, height // pool, pool, width // pool, pool, channels)
            windows = np.sort(windows.transpose(0, 1, 3, 5, 2, 4).reshape(-1, pool * pool), -1)
            positive = windows[:, -1] > 0  # all-zero windows pass no gradient on
            if positive.any():
                margins.append(float(np.min(windows[positive, -1] - windows[positive, -2])))
            continue
        if not isinstance(layer, keras.layers.Activation):  # a convolution with relu
            value = layer.convolution_op(value, layer.kernel)
            if layer.use_bias:
                value = value + layer.bias
        margins.append(float(np.min(np.abs(np.asarray(value)))))
    return min(margins)


def _training_batch(model, input_shape, rng):
    """A random batch whose pre-activations all keep `KINK_MARGIN` from a kink."""
    for _ in range(100):
        train_x = rng.normal(size=input_shape).astype("float32")
        if _kink_margin(model, train_x) >= KINK_MARGIN:
            return train_x
    pytest.fail(f"no random batch out of 100 keeps {KINK_MARGIN} away from every ReLU kink")


def jax_environment():
    """Environment of a subprocess on the JAX backend, CPU only."""
    return dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
                TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
                # XLA compiles every initializer and step; on a CPU its optimising
                # passes cost ~5x more than they save on these tiny models.
                XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""),
                                    "--xla_backend_optimization_level=0",
                                    "--xla_llvm_disable_expensive_passes=true"]).strip())


@pytest.fixture(scope="module")
def backend_run(tmp_path_factory, jax_doctests):
    """Build, save and train every model in TF; run the JAX subprocess once.

    (`jax_doctests` only starts the doctest subprocess alongside.)"""
    work = tmp_path_factory.mktemp("backends")
    keras.utils.set_random_seed(0)  # the kernels' initial values
    rng = np.random.default_rng(0)
    tf_results = {}
    for name, (builder, kwargs, input_shape, target_kind) in MODELS.items():
        model = build(builder, kwargs)
        _randomize_weights(model, rng)
        inputs = rng.normal(size=input_shape).astype("float32")
        train_x = _training_batch(model, input_shape, rng)
        output_shape = model.compute_output_shape(input_shape)
        if target_kind == "regression":
            train_y = rng.normal(size=output_shape).astype("float32")
        else:
            train_y = rng.integers(0, output_shape[-1], size=output_shape[:-1]).astype("int32")
        model.save_weights(work / f"{name}.weights.h5")
        np.savez(work / f"{name}_data.npz", inputs=inputs, train_x=train_x, train_y=train_y)
        outputs = model.predict(inputs, verbose=0)
        before = weights_dict(model)
        compile_for(model, target_kind, LEARNING_RATE)
        loss = float(model.train_on_batch(train_x, train_y))
        tf_results[name] = dict(
            outputs=outputs, loss=loss, before=before,
            after=weights_dict(model),
            trainable={w.path for w in model.trainable_weights},
        )
    (work / "spec.json").write_text(json.dumps({
        "learning_rate": LEARNING_RATE,
        "models": {name: (b, kw, kind) for name, (b, kw, _, kind) in MODELS.items()},
    }))
    (work / "jax_check.py").write_text(_JAX_SCRIPT)
    try:
        completed = subprocess.run(
            [sys.executable, str(work / "jax_check.py"), __file__, str(work)],
            env=jax_environment(), capture_output=True, text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:  # subprocess.run kills the child
        pytest.fail(f"the JAX subprocess ran over {SUBPROCESS_TIMEOUT_S} s:\n{error.stderr}")
    if completed.returncode != 0 or not (work / "report.json").exists():
        pytest.fail(
            f"the JAX subprocess failed with exit code {completed.returncode}.\n"
            f"stderr:\n{completed.stderr[-8000:]}"
        )
    report = json.loads((work / "report.json").read_text())
    return work, tf_results, report, completed.stderr


def test_subprocess_ran_on_jax(backend_run):
    _, _, report, _ = backend_run
    assert report["backend"] == "jax"


@pytest.mark.parametrize("name", list(MODELS))
def test_jax_matches_tensorflow(backend_run, name):
    work, tf_results, report, stderr = backend_run
    status = report["models"][name]
    assert status == "ok", f"{name} failed on JAX:\n{status}\nstderr:\n{stderr[-4000:]}"
    tf = tf_results[name]
    jax_outputs = np.load(work / f"{name}_jax.npz")
    jax_after = dict(np.load(work / f"{name}_jax_weights.npz"))

    # Inference: same weights, same input -> same outputs.
    np.testing.assert_allclose(
        jax_outputs["outputs"], tf["outputs"], atol=ATOL, rtol=RTOL,
        err_msg=f"{name}: JAX and TensorFlow outputs differ",
    )

    # One training step: finite loss, equal to TensorFlow's, every weight moved.
    jax_loss = float(jax_outputs["loss"])
    assert np.isfinite(jax_loss), f"{name}: JAX loss is {jax_loss}"
    assert np.isfinite(tf["loss"]), f"{name}: TensorFlow loss is {tf['loss']}"
    np.testing.assert_allclose(jax_loss, tf["loss"], atol=ATOL, rtol=RTOL)
    assert sorted(jax_after) == sorted(tf["after"]), "weight paths differ between backends"
    unchanged = [
        path for path, value in jax_after.items()
        if np.array_equal(value, tf["before"][path])
        and (path in tf["trainable"] or "moving" in path)
    ]
    assert not unchanged, f"{name}: one JAX training step left these weights unchanged: {unchanged}"
    for path, value in jax_after.items():
        np.testing.assert_allclose(
            value, tf["after"][path], atol=ATOL, rtol=RTOL,
            err_msg=f"{name}: weight {path} after one SGD step differs between backends",
        )


# Runs pytest on the package's doctests in a JAX process, after checking that
# Keras really runs on JAX there (the repository's conftest only sets a default).
_JAX_DOCTESTS = textwrap.dedent(
    """
    import sys

    import keras
    import pytest

    if keras.backend.backend() != "jax":
        sys.exit(f"expected the JAX backend, got {keras.backend.backend()}")
    sys.exit(pytest.main(["--doctest-modules", "fcnkit", "--ignore=fcnkit/course",
                          "-p", "no:cacheprovider", "-q"]))
    """
)


@pytest.fixture(scope="module")
def jax_doctests(tmp_path_factory):
    """The doctest subprocess, started at once so that it runs while the models
    are compared (the machine has two cores); its output goes to a file."""
    log_path = tmp_path_factory.mktemp("jax_doctests") / "pytest.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _JAX_DOCTESTS], cwd=REPOSITORY, env=jax_environment(),
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
    yield process, log_path
    if process.poll() is None:
        process.kill()
        process.wait()


def test_doctests_pass_on_jax(jax_doctests):
    """Every `>>>` example of the library (not the course tools) runs under JAX too."""
    process, log_path = jax_doctests
    try:
        returncode = process.wait(timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"the JAX doctests ran over {SUBPROCESS_TIMEOUT_S} s:\n"
                    f"{log_path.read_text()[-8000:]}")
    output = log_path.read_text()
    assert returncode == 0, (
        f"doctests failed on JAX (exit code {returncode}):\n{output[-8000:]}"
    )
    summary = output.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, output[-4000:]
