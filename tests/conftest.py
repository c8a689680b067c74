"""Fixtures shared by the test files."""

import numpy as np
import pytest


@pytest.fixture
def keras_round_trip(tmp_path):
    """`round_trip(model, shape)`: random weights (positive, so batch-norm variances stay
    valid), a .keras save and load, then the same outputs, weights and layer names.
    Returns the loaded model."""
    import keras

    def round_trip(model, shape):
        rng = np.random.default_rng(0)
        model.set_weights([rng.uniform(0.5, 1.5, w.shape) / np.sqrt(max(w.size, 1) ** 0.5)
                           for w in model.get_weights()])
        data = rng.random(shape).astype("float32")
        model.save(tmp_path / "model.keras")
        loaded = keras.models.load_model(tmp_path / "model.keras")
        np.testing.assert_allclose(loaded.predict(data, verbose=0),
                                   model.predict(data, verbose=0), rtol=1e-6, atol=1e-6)
        for original, restored in zip(model.get_weights(), loaded.get_weights()):
            np.testing.assert_array_equal(original, restored)
        assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
        return loaded

    return round_trip
