"""Centre cropping of a feature map to the size of another one (valid U-Nets)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fcnkit")
class CropToMatch2D(keras.layers.Layer):
    """Crops a feature map, centred, to the height and width of a reference map.

    In a U-Net without padding, the encoder map is larger than the decoder map
    it is concatenated with (64×64 against 56×56 at the deepest skip connection
    of the original network), so the encoder map is cropped around its centre.
    When the size difference is odd, the extra row or column is removed at the
    bottom or the right.

    Call arguments:
        inputs: a list `[features, reference]` of two 4D tensors in
            channels-last format. `features` is cropped to the spatial size of
            `reference`; the channels of `reference` are not used.

    Input shape:
        `[(batch, height, width, channels), (batch, ref_height, ref_width, any)]`
        with `ref_height <= height` and `ref_width <= width`.

    Output shape:
        `(batch, ref_height, ref_width, channels)`.

    Raises:
        ValueError: if the reference is larger than the features.

    Example:

    >>> import numpy as np
    >>> features = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> reference = np.zeros((1, 2, 2, 3), dtype="float32")
    >>> cropped = CropToMatch2D()([features, reference])
    >>> keras.ops.convert_to_numpy(cropped)[0, :, :, 0].tolist()
    [[5.0, 6.0], [9.0, 10.0]]

    Reference:
        Ronneberger et al., U-Net: Convolutional Networks for Biomedical Image
        Segmentation, MICCAI 2015 (Fig. 1, "copy and crop").
    """

    def compute_output_shape(self, input_shape):
        features_shape, reference_shape = input_shape
        for axis, name in ((1, "height"), (2, "width")):
            big, small = features_shape[axis], reference_shape[axis]
            if big is not None and small is not None and small > big:
                raise ValueError(
                    f"`CropToMatch2D` can only make feature maps smaller: the "
                    f"reference {name} must be at most the features {name}. "
                    f"Received: input_shape={input_shape}"
                )
        return (
            features_shape[0],
            reference_shape[1],
            reference_shape[2],
            features_shape[3],
        )

    def build(self, input_shape):
        self.compute_output_shape(input_shape)

    def call(self, inputs):
        features, reference = inputs
        height, width = ops.shape(features)[1], ops.shape(features)[2]
        target_height, target_width = ops.shape(reference)[1], ops.shape(reference)[2]
        top = (height - target_height) // 2
        left = (width - target_width) // 2
        return features[:, top : top + target_height, left : left + target_width, :]
