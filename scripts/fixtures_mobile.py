"""Fixtures for the fused convolution blocks of MobileNetV2 / EfficientNet / ResNet, with real Keras.

    .venv-keras/bin/python scripts/fixtures_mobile.py            # every format
    .venv-keras/bin/python scripts/fixtures_mobile.py --formats k3keras

One tiny model (16x16x3 images) holds every pattern the conversion rewrites for those networks:
BatchNormalization folded into convolutions, ReLU6 / swish / sigmoid / ReLU run inside them (swish
through the halved kernel), a squeeze-and-excitation block (GlobalAveragePooling, Reshape, two 1x1
convolutions, Multiply) as one call, residual Adds inside the convolution before them, depthwise
convolutions with unit column stride (rows einsum), stride 2 after ZeroPadding2D, dilation and a
depth multiplier. Writes tests/fixtures/conv/mobile_blocks__<fmt>.{h5,keras} + .npz (a few KB each).
"""

from __future__ import annotations

from fixturelib import rand, run


def mobile_blocks(K, fmt):
    L = K.layers
    x = inputs = K.Input(shape=(16, 16, 3))
    x = L.Rescaling(1.0 / 4.0)(x)
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(max_value=6.0)(x)
    shortcut = x
    # depthwise (unit strides) + BN + swish, then squeeze-and-excitation
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("swish")(x)
    se = L.GlobalAveragePooling2D()(x)
    se = L.Reshape((1, 1, 8))(se)
    se = L.Conv2D(2, 1, padding="same", activation="swish")(se)
    se = L.Conv2D(8, 1, padding="same", activation="sigmoid")(se)
    x = L.Multiply()([x, se])
    # projection + BN + residual Add + ReLU (ResNet-style)
    x = L.Conv2D(8, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Add()([shortcut, x])
    x = L.Activation("relu")(x)
    # stride 2 after explicit padding (MobileNetV2's block_n_pad), then an expansion with ReLU6
    x = L.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="valid", depth_multiplier=2)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(12, 1, activation="swish")(x)
    x = L.DepthwiseConv2D((3, 2), dilation_rate=(1, 2), padding="same", activation="sigmoid")(x)
    x = L.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(5)(x)
    model = K.Model(inputs, outputs, name="mobile_blocks")
    return model, [rand((6, 16, 16, 3), seed=3, scale=3.0)]


if __name__ == "__main__":
    run("conv", {"mobile_blocks": mobile_blocks})
