"""fcnkit.erf: Luo et al.'s Figure 1 reproduced, exact oracles, batching, errors.

Oracles: for n linear layers with all-equal 3x3 weights the ERF is exactly the
outer product of the n-fold convolution of ones(3) (variance 2n/3 per axis).
For random weights the width grows like sqrt(n): a log-log fit of sigma
against n over n = 5, 10, 20, 40 must have a slope in [0.4, 0.6]. Measured
with the fixed seeds below (16 samples): 0.500 uniform, 0.550 random linear,
0.513 random + ReLU; seeds 1-3 gave 0.47-0.57 (linear) and 0.44-0.54 (ReLU).
With |g| averaged, random-weight maps are wider than the uniform one (about
sqrt(2) in sigma: E|g| follows the square root of the binomial profile), which
changes the constant, not the exponent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from fcnkit.erf import (
    EffectiveReceptiveField,
    box_convolution,
    conv_stack,
    effective_receptive_field,
)

REPOSITORY = Path(__file__).resolve().parents[1]
DEPTHS = (5, 10, 20, 40)


def _size(depth):
    return 2 * depth + 9  # larger than the theoretical RF 2n + 1


def _fig1(activation, weights, samples, statistic="absolute"):
    results = []
    for depth in DEPTHS:
        model = conv_stack(depth, activation=activation, weights=weights)
        results.append(effective_receptive_field(
            model, (_size(depth), _size(depth), 1), samples=samples, statistic=statistic))
    return results


def _slope(values):
    return float(np.polyfit(np.log(DEPTHS), np.log(values), 1)[0])


@pytest.fixture(scope="module")
def uniform():
    return _fig1(None, "uniform", samples=1)


@pytest.fixture(scope="module")
def random_linear():
    return _fig1(None, "random", samples=16)


@pytest.fixture(scope="module")
def random_relu():
    return _fig1("relu", "random", samples=16)


# ------------------------------------------------------------ exact oracles


def test_box_convolution_is_the_binomial_like_profile():
    # (1 + z + z^2)^3 = 1, 3, 6, 7, 6, 3, 1 (sum 27)
    np.testing.assert_allclose(box_convolution(3)[3] * 27**2, 7 * np.array([1, 3, 6, 7, 6, 3, 1]))
    assert box_convolution(4).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("index, depth", list(enumerate(DEPTHS)))
def test_uniform_linear_stack_is_the_n_fold_box_convolution(uniform, index, depth):
    erf = uniform[index]
    expected = np.pad(box_convolution(depth), 4)  # input 2n + 9, support 2n + 1
    np.testing.assert_allclose(erf.map, expected, rtol=0, atol=1e-7)
    assert erf.output_position == (depth + 4, depth + 4)
    np.testing.assert_allclose(erf.centre, (depth + 4, depth + 4), atol=1e-6)
    np.testing.assert_allclose(np.square(erf.sigma), 2 * depth / 3, rtol=1e-6)


# -------------------------------------------------------- Luo et al. Fig. 1


@pytest.mark.parametrize("case", ["uniform", "random_linear", "random_relu"])
def test_erf_width_grows_like_sqrt_depth(case, request):
    results = request.getfixturevalue(case)
    sigmas = [np.mean(erf.sigma) for erf in results]
    assert all(a < b for a, b in zip(sigmas, sigmas[1:])), sigmas
    slope = _slope(sigmas)
    if case == "uniform":
        assert slope == pytest.approx(0.5, abs=1e-3)
    else:
        assert 0.4 <= slope <= 0.6, (case, slope, sigmas)


@pytest.mark.parametrize("case", ["uniform", "random_linear", "random_relu"])
def test_erf_fills_a_shrinking_fraction_of_the_theoretical_rf(case, request):
    # TRF = 2n + 1 grows like n, the ERF like sqrt(n): ERF/TRF ~ 1/sqrt(n).
    # The 95 % side is an odd integer, so its slope is coarse: [-0.7, -0.3].
    results = request.getfixturevalue(case)
    fractions = [erf.fraction_of(2 * depth + 1) for erf, depth in zip(results, DEPTHS)]
    assert all(a > b for a, b in zip(fractions, fractions[1:])), fractions
    assert -0.7 <= _slope(fractions) <= -0.3, fractions
    ratios = [np.mean(erf.sigma) / (2 * depth + 1) for erf, depth in zip(results, DEPTHS)]
    assert -0.65 <= _slope(ratios) <= -0.35, ratios


def test_uniform_95_percent_square_by_hand(uniform):
    # n = 5: profile (1 + z + z^2)^5 / 243; the centred 9-wide window holds
    # (243 - 2) / 243 per axis, squared 0.9836 >= 0.95; 7-wide: (243-12)/243
    # squared 0.9037 < 0.95. So the side is 9 of the TRF's 11.
    assert uniform[0].side(0.95) == 9
    assert uniform[0].fraction_of(11) == pytest.approx(9 / 11)


def test_squared_gradient_of_random_linear_stack_has_the_uniform_variance():
    # E[g^2] of a random linear stack is proportional to the n-fold box
    # convolution (cross terms of distinct paths vanish): sigma^2 = 2n/3 in
    # expectation. 64 samples at n = 5: within 15 % (seeds 0-3: 0.92-1.06).
    erf = effective_receptive_field(conv_stack(5, weights="random"), (19, 19, 1),
                                    samples=64, statistic="squared")
    np.testing.assert_allclose(np.square(erf.sigma), 10 / 3, rtol=0.15)


# ----------------------------------------------------- protocol and result


def test_batched_pass_equals_one_sample_at_a_time():
    model = conv_stack(4, activation="relu", weights="random", filters=3, input_channels=2)
    batched = effective_receptive_field(model, (17, 15, 2), samples=6, init="model")
    looped = effective_receptive_field(model, (17, 15, 2), samples=6, init="model",
                                       batch_size=1)
    np.testing.assert_allclose(batched.map, looped.map, rtol=1e-5, atol=1e-9)
    assert batched.output_position == (8, 7)


@pytest.mark.filterwarnings("ignore:.*TensorFlow could not vectorise:RuntimeWarning")
def test_random_inits_in_one_vectorised_pass_equal_one_init_at_a_time():
    # Trainable and non-trainable weights (batch normalisation) are all re-drawn.
    # TensorFlow's vectoriser fails on batch normalisation: a warning, then a loop.
    inputs = keras.Input((None, None, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(x))
    together = effective_receptive_field(model, (11, 12, 2), samples=5, seed=3, batch_size=5)
    one_by_one = effective_receptive_field(model, (11, 12, 2), samples=5, seed=3,
                                           batch_size=1)
    in_twos = effective_receptive_field(model, (11, 12, 2), samples=5, seed=3,
                                        batch_size=2)
    np.testing.assert_allclose(together.map, one_by_one.map, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(together.map, in_twos.map, rtol=1e-5, atol=1e-9)
    # Each sample really has its own weights: not the map of the model's weights.
    own = effective_receptive_field(model, (11, 12, 2), samples=5, seed=3, init="model")
    assert not np.allclose(together.map, own.map)


def test_convolution_stacks_are_vectorised_without_a_warning():
    model = conv_stack(3, activation="relu", weights="random", filters=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectorised = effective_receptive_field(model, (11, 11, 1), samples=4, seed=5,
                                               batch_size=4)
    looped = effective_receptive_field(model, (11, 11, 1), samples=4, seed=5, batch_size=1)
    np.testing.assert_allclose(vectorised.map, looped.map, rtol=1e-5, atol=1e-9)


def test_fresh_models_do_not_log_tracing_warnings(caplog):
    # Each model gets its own compiled function: TensorFlow's "retracing" warning
    # after five of them would only be noise in a lesson.
    for depth in range(1, 8):
        for init in ("model", "random"):
            effective_receptive_field(conv_stack(depth), (9, 9, 1), samples=2, init=init)
    assert "retracing" not in caplog.text


def test_init_random_leaves_the_model_alone_and_depends_on_the_seed():
    model = conv_stack(3, weights="random", filters=2)
    before = [w.copy() for w in model.get_weights()]
    first = effective_receptive_field(model, (13, 13, 1), samples=3, seed=1)
    again = effective_receptive_field(model, (13, 13, 1), samples=3, seed=1)
    other = effective_receptive_field(model, (13, 13, 1), samples=3, seed=2)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(first.map, again.map)
    assert not np.allclose(first.map, other.map)


def test_given_inputs_and_output_channel():
    # A 1x1 convolution with kernel [[2], [-3]] on 2 input channels into 2
    # output channels: pixel (2, 2) of channel 1 depends on input (2, 2) only.
    inputs = keras.Input((None, None, 2))
    outputs = keras.layers.Conv2D(2, 1, use_bias=False)(inputs)
    model = keras.Model(inputs, outputs)
    model.layers[1].set_weights([np.array([[[[1.0, 2.0], [1.0, -3.0]]]])])
    images = np.random.default_rng(0).random((3, 5, 5, 2))
    erf = effective_receptive_field(model, (5, 5, 2), inputs=images, init="model",
                                    output_channel=1)
    expected = np.zeros((5, 5))
    expected[2, 2] = 1.0
    np.testing.assert_array_equal(erf.map, expected)
    assert erf.sigma == (0.0, 0.0) and erf.samples == 3


def test_result_is_frozen_and_read_only(uniform):
    erf = uniform[0]
    assert isinstance(erf, EffectiveReceptiveField)
    with pytest.raises(AttributeError):
        erf.sigma = (1.0, 1.0)
    with pytest.raises(ValueError):
        erf.map[0, 0] = 1.0


# ------------------------------------------------------------------- errors


def _two_input_model():
    first, second = keras.Input((None, None, 1), name="a"), keras.Input((None, None, 1), name="b")
    return keras.Model([first, second], keras.layers.Add()([first, second]))


@pytest.mark.parametrize(
    "make, kwargs, error, message",
    [
        (lambda: conv_stack(2), {"input_shape": (9, 9, 1), "samples": 0}, ValueError,
         "`samples` must be a positive integer (1 or more). Received: samples=0. "
         "Pass samples=1 or more."),
        (lambda: conv_stack(2), {"input_shape": (9, 9, 1), "samples": 2.0}, TypeError,
         "`samples` must be a positive integer (a Python int or a NumPy integer). "
         "Received: samples=2.0 of type float. Pass samples=2 (an int, not a float)."),
        (lambda: conv_stack(2), {"input_shape": (9, 9, 3)}, ValueError,
         "`input_shape` must be (rows, columns, channels), positive ints that the model "
         "accepts: its input is (batch,) + (None, None, 1). Received: input_shape=(9, 9, 3). "
         "Pass e.g. input_shape=(45, 45, 1), larger than the theoretical receptive field."),
        (lambda: conv_stack(2), {"input_shape": (9, 9)}, ValueError,
         "`input_shape` must be (rows, columns, channels), positive ints that the model "
         "accepts: its input is (batch,) + (None, None, 1). Received: input_shape=(9, 9). "
         "Pass e.g. input_shape=(45, 45, 1), larger than the theoretical receptive field."),
        (_two_input_model, {"input_shape": (9, 9, 1)}, ValueError,
         "`effective_receptive_field` needs a model with a single image input. Received: "
         "a model with 2 inputs ['a', 'b']. Wrap the part to probe in a model of its own, "
         "or fix the other inputs with a model that takes only the image."),
        (lambda: conv_stack(2), {"input_shape": (9, 9, 1), "init": "trained"}, ValueError,
         '`init` must be one of "random", "model". Received: init=\'trained\'. '
         'Did you mean "random"?'),
        (lambda: conv_stack(2), {"input_shape": (9, 9, 1), "samples": 2,
                                 "inputs": np.zeros((3, 9, 9, 1))}, ValueError,
         "`samples` must equal the number of `inputs` given. Received: samples=2 with 3 "
         "inputs. Pass samples=3 or leave it out."),
    ],
)
def test_bad_arguments(make, kwargs, error, message):
    with pytest.raises(error) as raised:
        effective_receptive_field(make(), **kwargs)
    assert str(raised.value) == message


def test_zero_gradient_is_an_error():
    model = conv_stack(2, activation="relu")
    with pytest.raises(ValueError) as raised:
        effective_receptive_field(model, (9, 9, 1), samples=2, init="model",
                                  inputs=-np.ones((2, 9, 9, 1)))
    assert str(raised.value) == (
        "The input gradient of the centre output pixel is zero (or not finite) for all 2 "
        "samples, so there is no ERF to normalise. This happens when every ReLU on the way "
        "is inactive or the weights overflow. Received: sum of the maps = 0.0. Use more "
        "samples, other inputs, or init=\"random\"."
    )


def test_conv_stack_even_kernel():
    with pytest.raises(ValueError) as raised:
        conv_stack(3, kernel_size=4)
    assert str(raised.value) == (
        "`kernel_size` must be odd, so that the receptive field has a centre pixel. "
        "Received: kernel_size=4. Pass e.g. kernel_size=3."
    )


# ---------------------------------------------------------------------- JAX


@pytest.mark.slow
def test_jax_backend_gives_the_same_maps(tmp_path):
    # Seeded initialisers draw different numbers on the two backends, so JAX
    # loads the TensorFlow weights for init="model" (same map expected) and
    # checks init="random" for reproducibility and a sensible map.
    model = conv_stack(3, activation="relu", weights="random", filters=2)
    model.save_weights(tmp_path / "stack.weights.h5")
    script = textwrap.dedent("""
        import numpy as np
        from fcnkit.erf import box_convolution, conv_stack, effective_receptive_field
        uniform = effective_receptive_field(conv_stack(6), (21, 21, 1), samples=1)
        np.testing.assert_allclose(uniform.map, np.pad(box_convolution(6), 4), atol=1e-7)
        model = conv_stack(3, activation="relu", weights="random", filters=2)
        model.load_weights("stack.weights.h5")
        erf = effective_receptive_field(model, (11, 11, 1), samples=4, init="model")
        np.save("model.npy", erf.map)
        first, again = (effective_receptive_field(model, (11, 11, 1), samples=3, seed=5)
                        for _ in range(2))
        np.testing.assert_array_equal(first.map, again.map)
        assert abs(first.map.sum() - 1) < 1e-9 and first.map[:2].sum() == 0
        together = effective_receptive_field(model, (11, 11, 1), samples=3, seed=5,
                                             batch_size=3)
        np.testing.assert_allclose(first.map, together.map, rtol=1e-5, atol=1e-9)
        import keras
        inputs = keras.Input((None, None, 2))
        x = keras.layers.BatchNormalization()(keras.layers.Conv2D(3, 3, padding="same")(inputs))
        normalised = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(x))
        maps = [effective_receptive_field(normalised, (9, 9, 2), samples=4, seed=1,
                                          batch_size=size).map for size in (4, 1)]
        np.testing.assert_allclose(maps[0], maps[1], rtol=1e-5, atol=1e-9)
    """)
    environment = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
                       PYTHONPATH=str(REPOSITORY))
    process = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=environment,
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-4000:]
    expected = effective_receptive_field(model, (11, 11, 1), samples=4, init="model")
    np.testing.assert_allclose(np.load(tmp_path / "model.npy"), expected.map,
                               rtol=1e-4, atol=1e-7)
