"""Fixtures for the convolution issue: convolutions, pooling, padding/cropping/upsampling, small CNNs.

Run with the fixture virtualenv: `.venv-keras/bin/python scripts/fixtures_conv.py [--only NAME]`.
Several layers of one kind share a model as parallel branches from one input (a Functional model
with several outputs), which keeps the fixture count and size small. A builder returns None
when that Keras cannot build or run the model (TensorFlow on CPU cannot run some channels_first
convolutions and pooling); nothing is written for that format.
"""

from __future__ import annotations

from fixturelib import rand, run

BATCH = 2


def seq(K, input_shape, layers):
    return K.Sequential([K.Input(shape=input_shape)] + layers)


def branches(K, input_shape, layers, sample=None):
    """One input, each layer applied to it directly, one output per layer.

    With a `sample`, layers this Keras cannot compute on CPU (some channels_first ops) are left out.
    """
    return multi_branches(K, [(input_shape, layers, sample)])


def multi_branches(K, groups):
    """Several inputs, each with its own parallel layers: groups of (input_shape, layers, sample or None)."""
    inputs, outputs = [], []
    for shape, layers, sample in groups:
        x = K.Input(shape=shape)
        kept = [layer for layer in layers if sample is None or runnable(layer, [sample]) is not None]
        if kept:
            inputs.append(x)
            outputs += [layer(x) for layer in kept]
    return K.Model(inputs, outputs) if outputs else None


def runnable(model, inputs):
    """(model, inputs) if this Keras can compute the model on CPU, else None."""
    if model is None:
        return None
    try:
        model(inputs if len(inputs) > 1 else inputs[0])
    except Exception as err:  # noqa: BLE001 - any backend failure means "skip this format"
        print(f"skipped: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
        return None
    return model, inputs


# ----------------------------------------------------------------------------- convolutions


def conv1d_options(K, fmt):
    L = K.layers
    layers = [
        L.Conv1D(4, 3, padding="valid"),
        L.Conv1D(4, 3, strides=2, padding="same", activation="relu"),  # odd length 9 -> 5
        L.Conv1D(3, 2, dilation_rate=2, padding="causal"),
        L.Conv1D(4, 1, use_bias=False),
        L.Conv1D(4, 3, padding="same", groups=2, activation="tanh"),
    ]
    return runnable(branches(K, (9, 4), layers), [rand((BATCH, 9, 4), 1)])


def conv2d_options(K, fmt):
    L = K.layers
    layers = [
        L.Conv2D(4, (3, 2), strides=2, padding="same"),  # 9 x 8: odd and even with stride 2
        L.Conv2D(3, 3, strides=2, padding="valid"),
        L.Conv2D(3, 2, strides=2, padding="same"),  # even kernel: the extra pad goes bottom/right
        L.Conv2D(4, 3, dilation_rate=2, padding="same", activation="relu"),
        L.Conv2D(3, (2, 3), dilation_rate=(2, 1), padding="valid"),
        L.Conv2D(6, (2, 3), padding="valid", groups=3, use_bias=False),
        L.Conv2D(4, 1, activation="sigmoid"),
        L.Conv2D(2, (1, 3), strides=(1, 2), padding="same"),
    ]
    return runnable(branches(K, (9, 8, 3), layers), [rand((BATCH, 9, 8, 3), 2)])


def conv3d_options(K, fmt):
    L = K.layers
    layers = [
        L.Conv3D(3, (2, 3, 2), strides=(2, 1, 2), padding="same"),
        L.Conv3D(2, 2, padding="valid", dilation_rate=(1, 2, 1)),
        L.Conv3D(4, 3, strides=2, padding="same", groups=2, activation="relu"),
    ]
    return runnable(branches(K, (5, 6, 5, 2), layers), [rand((BATCH, 5, 6, 5, 2), 3)])


def depthwise(K, fmt):
    L = K.layers
    layers2d = [
        L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same", activation="relu"),
        L.DepthwiseConv2D((2, 3), dilation_rate=2, padding="valid"),
        L.DepthwiseConv2D(3, padding="same", use_bias=False),
    ]
    layers1d = [
        L.DepthwiseConv1D(3, depth_multiplier=2, strides=2, padding="same"),
        L.DepthwiseConv1D(2, dilation_rate=2, padding="valid", activation="tanh"),
    ]
    model = multi_branches(K, [((7, 8, 3), layers2d, None), ((9, 3), layers1d, None)])
    return runnable(model, [rand((BATCH, 7, 8, 3), 4), rand((BATCH, 9, 3), 5)])


def separable(K, fmt):
    L = K.layers
    x = K.Input(shape=(7, 8, 3))
    a = L.SeparableConv2D(5, 3, strides=2, padding="same", depth_multiplier=2, activation="relu")(x)
    b = L.SeparableConv2D(4, (2, 3), dilation_rate=2, padding="valid", use_bias=False)(x)
    s = K.Input(shape=(9, 3))
    c = L.SeparableConv1D(4, 3, padding="same", depth_multiplier=2)(s)
    d = L.SeparableConv1D(2, 2, strides=2, padding="valid")(s)
    return runnable(K.Model([x, s], [a, b, c, d]), [rand((BATCH, 7, 8, 3), 6), rand((BATCH, 9, 3), 7)])


def transpose(K, fmt):
    L = K.layers
    layers2d = [
        L.Conv2DTranspose(3, 3, strides=2, padding="same"),
        L.Conv2DTranspose(2, 3, strides=2, padding="valid", output_padding=1),
        L.Conv2DTranspose(2, 3, strides=(1, 2), padding="same", output_padding=(0, 1)),
        L.Conv2DTranspose(2, (3, 2), strides=(2, 3), padding="valid", activation="relu"),
        L.Conv2DTranspose(2, 3, dilation_rate=2, padding="same", use_bias=False),
        L.Conv2DTranspose(2, 4, strides=2, padding="same", output_padding=1),
    ]
    layers1d = [
        L.Conv1DTranspose(3, 3, strides=2, padding="same"),
        L.Conv1DTranspose(2, 4, strides=3, padding="valid", output_padding=2),
        L.Conv1DTranspose(2, 3, padding="valid", use_bias=False),
    ]
    layers3d = [
        L.Conv3DTranspose(2, 3, strides=2, padding="same"),
        L.Conv3DTranspose(2, (2, 3, 2), strides=(1, 2, 2), padding="valid", output_padding=(0, 1, 1)),
    ]
    # Keras 3 on TF CPU cannot run a dilated Conv2DTranspose: that branch is then left out.
    inputs = [rand((BATCH, 4, 5, 3), 8), rand((BATCH, 5, 2), 9), rand((BATCH, 3, 4, 3, 2), 10)]
    groups = [(x.shape[1:], layers, x) for x, layers in zip(inputs, [layers2d, layers1d, layers3d])]
    return runnable(multi_branches(K, groups), inputs)


# ----------------------------------------------------------------------------- pooling


def pooling(K, fmt):
    L = K.layers
    layers2d = [
        L.MaxPooling2D(2),  # 7 x 6: the odd row is dropped
        L.MaxPooling2D(3, strides=2, padding="same"),
        L.MaxPooling2D((2, 3), strides=(1, 2), padding="valid"),
        L.MaxPooling2D(2, padding="same"),
        L.AveragePooling2D(2, padding="same"),  # edge windows divide by their real cell count
        L.AveragePooling2D(3, strides=2, padding="same"),
        L.AveragePooling2D((3, 2), strides=(1, 2), padding="valid"),
        L.AveragePooling2D(4, padding="same"),
    ]
    layers1d = [
        L.MaxPooling1D(2),
        L.MaxPooling1D(3, strides=2, padding="same"),
        L.AveragePooling1D(2, padding="same"),
        L.AveragePooling1D(3, strides=1, padding="valid"),
    ]
    layers3d = [
        L.MaxPooling3D(2, padding="same"),
        L.MaxPooling3D((2, 2, 3), strides=(1, 2, 2)),
        L.AveragePooling3D(2, padding="same"),
        L.AveragePooling3D((3, 2, 2), strides=2, padding="valid"),
    ]
    groups = [((7, 6, 3), layers2d, None), ((9, 2), layers1d, None), ((5, 4, 5, 2), layers3d, None)]
    inputs = [rand((BATCH, 7, 6, 3), 11), rand((BATCH, 9, 2), 12), rand((BATCH, 5, 4, 5, 2), 13)]
    return runnable(multi_branches(K, groups), inputs)


def global_pooling(K, fmt):
    L = K.layers
    x1 = K.Input(shape=(6, 3))
    x2 = K.Input(shape=(5, 4, 3))
    x3 = K.Input(shape=(3, 4, 2, 3))
    outs = [
        L.GlobalMaxPooling1D()(x1),
        L.GlobalAveragePooling1D()(x1),
        L.GlobalAveragePooling1D(data_format="channels_first")(x1),
        L.GlobalMaxPooling2D()(x2),
        L.GlobalAveragePooling2D(keepdims=True)(x2),
        L.GlobalMaxPooling2D(data_format="channels_first", keepdims=True)(x2),
        L.GlobalAveragePooling2D(data_format="channels_first")(x2),
        L.GlobalMaxPooling3D(keepdims=True)(x3),
        L.GlobalAveragePooling3D()(x3),
    ]
    inputs = [rand((BATCH, 6, 3), 14), rand((BATCH, 5, 4, 3), 15), rand((BATCH, 3, 4, 2, 3), 16)]
    return runnable(K.Model([x1, x2, x3], outs), inputs)


# ----------------------------------------------------------------------------- padding, cropping, upsampling


def pad_crop_upsample(K, fmt):
    L = K.layers
    layers1d = [L.ZeroPadding1D((1, 2)), L.Cropping1D((2, 1)), L.UpSampling1D(3)]
    layers2d = [
        L.ZeroPadding2D(((1, 0), (2, 3))),
        L.ZeroPadding2D(1),
        L.Cropping2D(((1, 2), (0, 3))),
        L.Cropping2D(1),
        L.UpSampling2D((2, 3)),
        L.UpSampling2D(2, interpolation="bilinear"),
        L.UpSampling2D((3, 2), interpolation="bilinear"),
    ]
    layers3d = [
        L.ZeroPadding3D(((1, 0), (0, 2), (1, 1))),
        L.Cropping3D(((1, 1), (2, 0), (0, 1))),
        L.UpSampling3D((1, 2, 3)),
    ]
    groups = [((7, 2), layers1d, None), ((5, 6, 2), layers2d, None), ((4, 5, 4, 2), layers3d, None)]
    inputs = [rand((BATCH, 7, 2), 17), rand((BATCH, 5, 6, 2), 18), rand((BATCH, 4, 5, 4, 2), 19)]
    return runnable(multi_branches(K, groups), inputs)


# ----------------------------------------------------------------------------- channels_first


def channels_first(K, fmt):
    # Every channels_first layer that this Keras can run on CPU, side by side.
    L = K.layers
    cf = {"data_format": "channels_first"}
    layers2d = [
        L.Conv2D(4, 3, strides=2, padding="same", **cf),
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="valid", **cf),
        L.SeparableConv2D(3, 3, padding="same", **cf),
        L.Conv2DTranspose(2, 3, strides=2, padding="same", **cf),
        L.MaxPooling2D(2, **cf),
        L.MaxPooling2D(3, strides=2, padding="same", **cf),
        L.AveragePooling2D(3, strides=2, padding="same", **cf),
        L.AveragePooling2D(2, **cf),
        L.ZeroPadding2D(((1, 0), (2, 1)), **cf),
        L.Cropping2D(((1, 0), (0, 2)), **cf),
        L.UpSampling2D((2, 1), **cf),
        L.UpSampling2D(2, interpolation="bilinear", **cf),
    ]
    layers3d = [L.UpSampling3D(2, **cf), L.Cropping3D(1, **cf), L.ZeroPadding3D((1, 0, 2), **cf)]
    x2, x3 = rand((BATCH, 3, 6, 5), 23), rand((BATCH, 2, 4, 5, 3), 27)
    model = multi_branches(K, [((3, 6, 5), layers2d, x2), ((2, 4, 5, 3), layers3d, x3)])
    return runnable(model, [x2, x3])


def flatten_channels_first(K, fmt):
    # Keras moves channels last before flattening, so the Dense weights see channels-last order.
    L = K.layers
    layers = [L.Flatten(data_format="channels_first"), L.Dense(3)]
    return seq(K, (2, 3, 4), layers), [rand((BATCH, 2, 3, 4), 28)]


# ----------------------------------------------------------------------------- models


def conv_batchnorm(K, fmt):
    L = K.layers
    layers = [
        L.Conv2D(6, 3, padding="same", use_bias=False),
        L.BatchNormalization(),
        L.ReLU(),
        L.Conv2D(4, 3, strides=2),
        L.BatchNormalization(),
        L.Activation("relu"),
    ]
    return seq(K, (7, 7, 2), layers), [rand((BATCH, 7, 7, 2), 29)]


def cnn_classifier(K, fmt):
    # The benchmark CNN: 28x28x1 -> Conv 16 -> MaxPool 2 -> Conv 32 -> GlobalAveragePooling -> Dense 10.
    L = K.layers
    layers = [
        L.Conv2D(16, 3, activation="relu"),
        L.MaxPooling2D(2),
        L.Conv2D(32, 3, activation="relu"),
        L.GlobalAveragePooling2D(),
        L.Dense(10, activation="softmax"),
    ]
    return seq(K, (28, 28, 1), layers), [rand((BATCH, 28, 28, 1), 30)]


def cnn_flatten(K, fmt):
    L = K.layers
    layers = [
        L.Conv2D(4, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2),
        L.Conv2D(6, 3, activation="relu"),
        L.MaxPooling2D(2, padding="same"),
        L.Flatten(),
        L.Dropout(0.5),
        L.Dense(8, activation="relu"),
        L.Dense(3, activation="softmax"),
    ]
    return seq(K, (12, 11, 1), layers), [rand((BATCH, 12, 11, 1), 31)]


def genomics_conv1d(K, fmt):
    # A dilated Conv1D stack with cropping, as in sequence-to-profile genomics models.
    L = K.layers
    layers = [
        L.Conv1D(6, 5, padding="same", activation="relu"),
        L.Conv1D(6, 3, dilation_rate=2, padding="same", activation="relu"),
        L.Conv1D(6, 3, dilation_rate=4, padding="same", activation="relu"),
        L.Cropping1D((3, 3)),
        L.Conv1D(2, 1),
    ]
    return seq(K, (24, 4), layers), [rand((BATCH, 24, 4), 32)]


def fully_convolutional(K, fmt):
    # Unknown spatial sizes (None): every size is computed at predict time.
    L = K.layers
    x = K.Input(shape=(None, None, 3))
    y = L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    y = L.MaxPooling2D(2, padding="same")(y)
    y = L.DepthwiseConv2D(3, padding="same")(y)
    y = L.UpSampling2D(2, interpolation="bilinear")(y)
    y = L.Conv2DTranspose(2, 3, strides=2, padding="same")(y)
    s = K.Input(shape=(None, 2))
    z = L.Conv1D(3, 3, dilation_rate=2, padding="causal")(s)
    z = L.AveragePooling1D(2, padding="same")(z)
    z = L.Cropping1D((1, 0))(z)
    return K.Model([x, s], [y, z]), [rand((BATCH, 7, 6, 3), 34), rand((BATCH, 11, 2), 35)]


def residual_separable(K, fmt):
    # A mini-Xception block: separable convolutions, batch norm, a strided 1x1 shortcut, Add.
    L = K.layers
    x = K.Input(shape=(8, 8, 3))
    y = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.Activation("relu")(y)
    shortcut = L.Conv2D(16, 1, strides=2, padding="same", use_bias=False)(y)
    shortcut = L.BatchNormalization()(shortcut)
    z = L.SeparableConv2D(16, 3, padding="same", use_bias=False)(y)
    z = L.BatchNormalization()(z)
    z = L.Activation("relu")(z)
    z = L.SeparableConv2D(16, 3, padding="same", use_bias=False)(z)
    z = L.BatchNormalization()(z)
    z = L.MaxPooling2D(3, strides=2, padding="same")(z)
    z = L.Add()([z, shortcut])
    z = L.GlobalAveragePooling2D()(z)
    out = L.Dense(4, activation="softmax")(z)
    return K.Model(x, out), [rand((BATCH, 8, 8, 3), 33)]


BUILDERS = {
    "conv1d_options": conv1d_options,
    "conv2d_options": conv2d_options,
    "conv3d_options": conv3d_options,
    "depthwise": depthwise,
    "separable": separable,
    "transpose": transpose,
    "pooling": pooling,
    "global_pooling": global_pooling,
    "pad_crop_upsample": pad_crop_upsample,
    "channels_first": channels_first,
    "flatten_channels_first": flatten_channels_first,
    "conv_batchnorm": conv_batchnorm,
    "cnn_classifier": cnn_classifier,
    "cnn_flatten": cnn_flatten,
    "genomics_conv1d": genomics_conv1d,
    "fully_convolutional": fully_convolutional,
    "residual_separable": residual_separable,
}

if __name__ == "__main__":
    run("conv", BUILDERS)
