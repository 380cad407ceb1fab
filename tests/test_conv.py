"""The convolution, pooling and spatial-reshaping NumPy functions against naive loop references.

The references below are written the slow, obvious way (explicit loops over output positions,
zero padding placed per TensorFlow's rules), on tiny arrays; the fixtures check against Keras.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from konverter.layers.conv import (
    conv,
    conv_grouped,
    conv_padding,
    conv_transpose,
    conv_transpose_geometry,
    depthwise_conv,
    separable_conv,
    sliding_windows,
    window_geometry,
    window_view,
)
from konverter.layers.pooling import average_pool, global_average_pool, global_max_pool, max_pool, pool_taps
from konverter.layers.reshaping import crop, upsample_bilinear, upsample_nearest, zero_pad

RNG = np.random.default_rng(7)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def close(got, want):
    assert got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def padded(x, kernel_size, strides, dilation, padding, fill=0.0):
    pads = [
        conv_padding(x.shape[1 + i], k, s, d, padding)
        for i, (k, s, d) in enumerate(zip(kernel_size, strides, dilation))
    ]
    return np.pad(x.astype(np.float64), [(0, 0), *pads, (0, 0)], constant_values=fill)


def naive_conv(x, kernel, bias, strides, dilation, padding, groups=1):
    """Cross-correlation with a (*k, C/groups, F) kernel, one output position at a time."""
    ks = kernel.shape[:-2]
    xp = padded(x, ks, strides, dilation, padding)
    nd = len(ks)
    out = [(xp.shape[1 + i] - (ks[i] - 1) * dilation[i] - 1) // strides[i] + 1 for i in range(nd)]
    cg, filters = kernel.shape[-2], kernel.shape[-1]
    fg = filters // groups
    y = np.zeros((x.shape[0], *out, filters))
    for pos in itertools.product(*[range(o) for o in out]):
        for tap in itertools.product(*[range(k) for k in ks]):
            idx = tuple(p * s + t * d for p, s, t, d in zip(pos, strides, tap, dilation))
            cell = xp[(slice(None), *idx)]  # (N, C)
            for g in range(groups):
                y[(slice(None), *pos, slice(g * fg, (g + 1) * fg))] += (
                    cell[:, g * cg : (g + 1) * cg] @ kernel[tap][:, g * fg : (g + 1) * fg]
                )
    return y + bias


def naive_conv_transpose(x, kernel, bias, strides, dilation, padding, output_padding):
    """Scatter every input cell times the (*k, F, C) kernel, then crop like TensorFlow."""
    ks = kernel.shape[:-2]
    nd = len(ks)
    size = x.shape[1:-1]
    full = [(size[i] - 1) * strides[i] + (ks[i] - 1) * dilation[i] + 1 for i in range(nd)]
    geo = [
        conv_transpose_geometry(size[i], ks[i], strides[i], dilation[i], padding, output_padding and output_padding[i])
        for i in range(nd)
    ]
    big = np.zeros((x.shape[0], *[max(f, g[0] + g[1]) for f, g in zip(full, geo)], kernel.shape[-2]))
    for pos in itertools.product(*[range(n) for n in size]):
        for tap in itertools.product(*[range(k) for k in ks]):
            idx = tuple(p * s + t * d for p, s, t, d in zip(pos, strides, tap, dilation))
            big[(slice(None), *idx)] += x[(slice(None), *pos)] @ kernel[tap].T
    crop_index = tuple(slice(g[1], g[1] + g[0]) for g in geo)
    return big[(slice(None), *crop_index)] + bias


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("n", [5, 6, 7, 8])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_same_padding_keeps_ceil_size_and_pads_extra_at_the_end(n, k):
    lo, hi = conv_padding(n, k, 2, 1, "same")
    assert (n + lo + hi - k) // 2 + 1 == -(-n // 2)
    assert hi - lo in (0, 1)


def test_causal_pads_left_only():
    assert conv_padding(10, 3, 1, 2, "causal") == (4, 0)
    assert conv_padding(10, 3, 1, 2, "valid") == (0, 0)


def test_transpose_output_sizes_match_keras_formula():
    # Keras: valid -> n*s + max(k - s, 0); same -> n*s; with output_padding -> (n-1)*s + k - 2*pad + op.
    assert conv_transpose_geometry(5, 3, 2, 1, "valid", None) == (11, 0)
    assert conv_transpose_geometry(5, 3, 2, 1, "same", None)[0] == 10
    assert conv_transpose_geometry(5, 3, 2, 1, "same", 1)[0] == 10
    assert conv_transpose_geometry(5, 3, 2, 1, "same", 0)[0] == 9
    assert conv_transpose_geometry(5, 3, 2, 1, "valid", 1) == (12, 0)
    assert conv_transpose_geometry(4, 1, 3, 1, "valid", None) == (12, 0)


# ----------------------------------------------------------------------------- convolutions


@pytest.mark.parametrize(
    "size,ks,strides,dilation,padding",
    [
        ((7,), (3,), (1,), (1,), "valid"),
        ((7,), (3,), (2,), (1,), "same"),
        ((8,), (2,), (1,), (3,), "causal"),
        ((6, 7), (3, 2), (2, 2), (1, 1), "same"),
        ((6, 6), (3, 3), (2, 2), (1, 1), "same"),
        ((7, 5), (2, 3), (1, 2), (1, 1), "valid"),
        ((7, 7), (3, 3), (1, 1), (2, 1), "same"),
        ((5, 5), (1, 1), (1, 1), (1, 1), "same"),
        ((5, 4, 5), (2, 3, 2), (2, 1, 2), (1, 1, 1), "same"),
    ],
)
def test_conv_matches_naive_loop(size, ks, strides, dilation, padding):
    c, f = 3, 4
    x, kernel, bias = rand(2, *size, c), rand(*ks, c, f), rand(f)
    want = naive_conv(x, kernel, bias, strides, dilation, padding)
    close(conv(x, kernel.reshape(-1, f), bias, ks, strides, dilation, padding, False), want)
    # channels_first is the same computation with the channel axis moved
    xf = np.moveaxis(x, -1, 1)
    got = conv(xf, kernel.reshape(-1, f), bias, ks, strides, dilation, padding, True)
    close(got, np.moveaxis(want, -1, 1))


@pytest.mark.parametrize(
    "size,ks,strides,dilation,padding",
    [
        ((7,), (3,), (2,), (1,), "same"),
        ((8,), (2,), (1,), (3,), "causal"),
        ((13, 13), (3, 3), (1, 1), (1, 1), "valid"),
        ((6, 7), (3, 2), (2, 2), (1, 1), "same"),
        ((7, 7), (3, 3), (1, 1), (2, 1), "same"),
        ((7, 7), (3, 3), (1, 1), (1, 2), "same"),  # a dilated last axis: taps and channels stay apart
        ((5, 4, 5), (2, 3, 2), (2, 1, 2), (1, 1, 1), "same"),
    ],
)
def test_conv_with_its_window_built_at_import_is_bit_identical(size, ks, strides, dilation, padding):
    c, f = 3, 4
    kernel, bias = rand(int(np.prod(ks)) * c, f), rand(f)
    window = window_geometry(size, c, ks, strides, dilation, padding)
    for x in (rand(2, *size, c), rand(1, *size, c), rand(0, *size, c), rand(2, *size, c + 1)[..., :c]):
        # The same im2col matrix as sliding_windows' view (which merges the last taps with the
        # channels only where x's own strides allow it).
        view = window_view(x, window)
        windows = sliding_windows(x, ks, strides, dilation, padding, 0.0)
        im2col = (len(x), int(np.prod(view.shape[1:])))  # (not -1: a batch may be empty)
        np.testing.assert_array_equal(view.reshape(im2col), windows.reshape(im2col))
        want = conv(x, kernel, bias, ks, strides, dilation, padding, False)
        got = conv(x, kernel, bias, ks, strides, dilation, padding, False, window=window)
        np.testing.assert_array_equal(got, want)
    # Another item size than the one the strides were computed for: the general path.
    x64 = rand(2, *size, c).astype(np.float64)
    got = conv(x64, kernel, bias, ks, strides, dilation, padding, False, window=window)
    np.testing.assert_array_equal(got, conv(x64, kernel, bias, ks, strides, dilation, padding, False))


def test_conv_of_a_large_batch_runs_a_few_images_per_product(monkeypatch):
    import konverter.layers.conv as conv_module

    x, kernel, bias = rand(7, 6, 5, 3), rand(3, 3, 3, 4), rand(4)
    want = naive_conv(x, kernel, bias, (1, 2), (1, 1), "same")
    monkeypatch.setattr(conv_module, "PATCH_CHUNK", 2 * 6 * 3 * 27)  # two images per product, the last alone
    close(conv(x, kernel.reshape(-1, 4), bias, (3, 3), (1, 2), (1, 1), "same", False, relu=True), np.maximum(want, 0))


@pytest.mark.parametrize("activation", ["swish_halved", "sigmoid", "relu6"])
def test_batches_with_a_multi_pass_activation_run_a_few_images_at_a_time(monkeypatch, activation):
    import konverter.layers.conv as conv_module

    x, kernel, bias, dk = rand(5, 6, 7, 3) * 3.0, rand(3, 4), rand(4), rand(3, 3, 3, 1)
    residual = rand(5, 6, 7, 4)
    args = ((1, 1), (1, 1), (1, 1), "same", False)
    want_conv = conv(x, kernel, bias, *args, activation=activation, residual=residual)
    want_depthwise = depthwise_conv(x, dk, bias[:3], (3, 3), (1, 1), (1, 1), "same", False, activation=activation)
    monkeypatch.setattr(conv_module, "ACTIVATION_CHUNK", 2 * 6 * 7 * 4)  # two images at a time, the last alone
    assert conv_module.batch_step(5, 0, 6 * 7 * 4, activation) == (2 if activation != "relu6" else 5)
    got = conv(x, kernel, bias, *args, activation=activation, residual=residual)
    np.testing.assert_allclose(got, want_conv, rtol=1e-6, atol=1e-6)
    got = depthwise_conv(x, dk, bias[:3], (3, 3), (1, 1), (1, 1), "same", False, activation=activation)
    np.testing.assert_allclose(got, want_depthwise, rtol=1e-6, atol=1e-6)


def test_conv_without_bias():
    x, kernel = rand(1, 5, 5, 2), rand(3, 3, 2, 3)
    close(
        conv(x, kernel.reshape(-1, 3), None, (3, 3), (1, 1), (1, 1), "valid", False),
        naive_conv(x, kernel, 0.0, (1, 1), (1, 1), "valid"),
    )


def test_grouped_conv_matches_naive_loop():
    groups, c, f = 2, 4, 6
    x, kernel, bias = rand(2, 6, 5, c), rand(3, 2, c // groups, f), rand(f)
    want = naive_conv(x, kernel, bias, (2, 1), (1, 1), "same", groups=groups)
    packed = np.ascontiguousarray(kernel.reshape(-1, groups, f // groups).transpose(1, 0, 2))
    close(conv_grouped(x, packed, bias, (3, 2), (2, 1), (1, 1), "same", False), want)


@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_and_separable_match_naive_loop(mult):
    c, f = 3, 4
    x, dk, bias = rand(2, 7, 6, c), rand(3, 3, c, mult), rand(c * mult)
    # A depthwise convolution is a grouped convolution with one channel per group.
    grouped_kernel = dk.reshape(3, 3, 1, c * mult)
    want = naive_conv(x, grouped_kernel, bias, (2, 2), (1, 1), "same", groups=c)
    close(depthwise_conv(x, dk, bias, (3, 3), (2, 2), (1, 1), "same", False), want)
    pk, pbias = rand(c * mult, f), rand(f)
    want_sep = (want - bias) @ pk + pbias
    close(separable_conv(x, dk, pk, pbias, (3, 3), (2, 2), (1, 1), "same", False), want_sep)


@pytest.mark.parametrize(
    "size,ks,strides,dilation,padding,output_padding",
    [
        ((5,), (3,), (2,), (1,), "valid", None),
        ((5,), (3,), (2,), (1,), "same", None),
        ((4,), (3,), (1,), (2,), "same", None),
        ((4, 5), (3, 3), (2, 2), (1, 1), "same", (1, 0)),
        ((4, 3), (2, 3), (2, 3), (1, 1), "valid", (1, 2)),
        ((3, 4), (3, 2), (1, 1), (1, 1), "valid", None),
        ((3, 2, 3), (2, 2, 3), (2, 1, 2), (1, 1, 1), "same", None),
    ],
)
def test_conv_transpose_matches_naive_scatter(size, ks, strides, dilation, padding, output_padding):
    c, f = 3, 2
    x, kernel, bias = rand(2, *size, c), rand(*ks, f, c), rand(f)
    want = naive_conv_transpose(x, kernel, bias, strides, dilation, padding, output_padding)
    packed = np.ascontiguousarray(np.moveaxis(kernel, -1, 0).reshape(c, -1))
    close(conv_transpose(x, packed, bias, ks, strides, dilation, padding, output_padding, False), want)


# ----------------------------------------------------------------------------- pooling


def naive_pool(x, pool, strides, padding, kind):
    nd = len(pool)
    fill = -np.inf if kind == "max" else np.nan  # NaN marks padding, which never counts
    xp = padded(x, pool, strides, (1,) * nd, padding, fill)
    out = [(xp.shape[1 + i] - pool[i]) // strides[i] + 1 for i in range(nd)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]))
    for pos in itertools.product(*[range(o) for o in out]):
        window = xp[(slice(None), *[slice(p * s, p * s + k) for p, s, k in zip(pos, strides, pool)])]
        cells = window.reshape(x.shape[0], -1, x.shape[-1])
        y[(slice(None), *pos)] = cells.max(axis=1) if kind == "max" else np.nanmean(cells, axis=1)
    return y


@pytest.mark.parametrize(
    "size,pool,strides,padding",
    [
        ((7,), (2,), (2,), "valid"),
        ((7,), (3,), (2,), "same"),
        ((6, 7), (2, 2), (2, 2), "same"),
        ((5, 5), (4, 4), (4, 4), "same"),
        ((7, 6), (3, 2), (2, 1), "same"),
        ((7, 6), (3, 3), (1, 2), "valid"),
        ((5, 4, 5), (2, 2, 3), (2, 2, 2), "same"),
    ],
)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_naive_loop(size, pool, strides, padding, kind):
    x = rand(2, *size, 3)
    fn = max_pool if kind == "max" else average_pool
    want = naive_pool(x, pool, strides, padding, kind)
    close(fn(x, pool, strides, padding, False), want)
    close(fn(np.moveaxis(x, -1, 1), pool, strides, padding, True), np.moveaxis(want, -1, 1))


@pytest.mark.parametrize(
    "size,pool,strides",
    [
        ((7,), (2,), (2,)),
        ((26, 26), (2, 2), (2, 2)),
        ((7, 6), (3, 3), (1, 2)),
        ((7, 6), (1, 2), (2, 1)),
        ((5, 4, 5), (2, 2, 3), (2, 2, 2)),
    ],
)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_with_its_taps_built_at_import_is_bit_identical(size, pool, strides, kind):
    fn = max_pool if kind == "max" else average_pool
    taps = pool_taps(size, pool, strides)
    for x in (rand(2, *size, 3), rand(1, *size, 3), rand(0, *size, 3)):
        got = fn(x, pool, strides, "valid", False, taps=taps)
        np.testing.assert_array_equal(got, fn(x, pool, strides, "valid", False))
        assert got.base is None or got.base.base is None  # never a view of the caller's x
    x = rand(2, *size, 3)
    close(fn(x, pool, strides, "valid", False, taps=taps), naive_pool(x, pool, strides, "valid", kind))


def test_global_pooling():
    x = rand(2, 4, 5, 3)
    close(global_average_pool(x, (1, 2), False), x.astype(np.float64).mean(axis=(1, 2)))
    close(global_max_pool(x, (1, 2), True), x.max(axis=(1, 2), keepdims=True).astype(np.float64))


# ----------------------------------------------------------------------------- padding, cropping, upsampling


def test_zero_pad_and_crop_are_inverse():
    x = rand(2, 4, 5, 3)
    pads = ((1, 2), (0, 3))
    y = zero_pad(x, pads, False)
    assert y.shape == (2, 7, 8, 3)
    assert np.array_equal(crop(y, pads, False), x)
    assert y[:, 0].sum() == 0 and y[:, -2:].sum() == 0 and y[:, :, -3:].sum() == 0
    yf = zero_pad(np.moveaxis(x, -1, 1), pads, True)
    assert np.array_equal(yf, np.moveaxis(y, -1, 1))
    assert np.array_equal(crop(yf, pads, True), np.moveaxis(x, -1, 1))


def test_upsample_nearest_repeats_cells():
    x = rand(2, 3, 4, 2)
    want = np.repeat(np.repeat(x, 2, axis=1), 3, axis=2)
    assert np.array_equal(upsample_nearest(x, (2, 3), False), want)
    assert np.array_equal(upsample_nearest(np.moveaxis(x, -1, 1), (2, 3), True), np.moveaxis(want, -1, 1))


def test_upsample_bilinear_half_pixel_centers():
    # TF bilinear resize by 2: outputs sit at source positions -0.25, 0.25, 0.75, ... (edges clamped).
    x = np.array([0.0, 4.0, 8.0], dtype=np.float32).reshape(1, 3, 1, 1)
    y = upsample_bilinear(x, (2, 1), False)
    assert np.allclose(y.ravel(), [0.0, 1.0, 3.0, 5.0, 7.0, 8.0])
    img = rand(1, 3, 4, 2)
    both = upsample_bilinear(img, (2, 3), False)
    assert both.shape == (1, 6, 12, 2) and both.dtype == np.float32
    # separable: resizing rows then columns equals the 2-D result
    rows = upsample_bilinear(img, (2, 1), False)
    close(upsample_bilinear(rows, (1, 3), False), both.astype(np.float64))


# ----------------------------------------------------------------------------- Theano-written files


def _as_theano_file(src, dst):
    """A copy of a Keras 2 .h5 fixture as Theano would have written it: backend attr, flipped conv kernels."""
    import shutil

    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        f.attrs["backend"] = "theano"
        kernels = []
        f["model_weights"].visititems(
            lambda name, obj: kernels.append(obj) if isinstance(obj, h5py.Dataset) and obj.ndim >= 3 else None
        )
        assert kernels
        for ds in kernels:
            ds[...] = ds[...][(slice(None, None, -1),) * (ds.ndim - 2)]


def test_theano_file_kernels_are_flipped(tmp_path):
    from conftest import FIXTURES, check_all_modes, convert_and_import, load_reference

    src = FIXTURES / "conv" / "cnn_classifier__k2h5.h5"
    _as_theano_file(src, tmp_path / "theano.h5")
    xs, ys = load_reference(src.with_suffix(".npz"))
    check_all_modes(convert_and_import(tmp_path / "theano.h5", tmp_path), xs, ys, "theano cnn")


def test_theano_file_with_depthwise_kernel_is_refused(tmp_path):
    from conftest import FIXTURES

    from konverter import konvert
    from konverter.errors import UnsupportedModel

    _as_theano_file(FIXTURES / "conv" / "depthwise__k2h5.h5", tmp_path / "theano.h5")
    with pytest.raises(UnsupportedModel, match="Theano"):
        konvert(tmp_path / "theano.h5", tmp_path / "out.py")
    assert not (tmp_path / "out.py").exists()


# ----------------------------------------------------------------------------- conv -> max pool rewrite


def _conv_pool_ops(extra_consumer: bool):
    from konverter.layers.base import Const, Op, Tensor

    x, t, u = Tensor((6, 6, 2)), Tensor((4, 4, 3)), Tensor((2, 2, 3))
    geometry = {"kernel_size": (3, 3), "strides": (1, 1), "dilation": (1, 1), "padding": "valid"}
    bias = Const(rand(3))
    ops = [
        Op(conv, (x, Const(rand(18, 3)), bias), {"relu": True, **geometry, "channels_first": False}, (t,)),
        Op(max_pool, (t,), {"pool_size": (2, 2), "strides": (2, 2), "padding": "valid", "channels_first": False}, (u,)),
    ]
    outputs = [u]
    if extra_consumer:
        outputs.append(t)
    return ops, outputs, bias


def test_pool_before_bias_relu_rewrites_a_private_conv_output():
    from konverter.layers.pooling import pool_before_bias_relu

    ops, outputs, bias = _conv_pool_ops(extra_consumer=False)
    pool_before_bias_relu(ops, outputs)
    assert ops[0].args[2] is None and "relu" not in ops[0].kwargs
    assert ops[1].kwargs["bias"] is bias and ops[1].kwargs["relu"] is True


def test_pool_before_bias_relu_leaves_a_shared_conv_output_alone():
    from konverter.layers.pooling import pool_before_bias_relu

    ops, outputs, bias = _conv_pool_ops(extra_consumer=True)
    pool_before_bias_relu(ops, outputs)
    assert ops[0].args[2] is bias and ops[0].kwargs["relu"] is True
    assert "bias" not in ops[1].kwargs


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("channels_first", [False, True])
def test_max_pool_after_bias_relu_is_bit_identical(padding, channels_first):
    x, kernel, bias = rand(2, 7, 8, 3), rand(3, 3, 3, 4).reshape(-1, 4), rand(4)
    if channels_first:
        x = np.moveaxis(x, -1, 1)
    args = ((3, 3), (1, 1), (1, 1), padding, channels_first)
    before = max_pool(conv(x, kernel, bias, *args, relu=True), (3, 2), (2, 2), "same", channels_first)
    after = max_pool(conv(x, kernel, None, *args), (3, 2), (2, 2), "same", channels_first, bias=bias, relu=True)
    assert np.array_equal(before, after)


# ----------------------------------------------------------------------------- refusals


def _convert_layer(class_name, config, input_shape, weights=(), keras_major=3):
    from konverter.layers import CONVERTERS, Layer, Tensor

    layer = Layer(
        name="l",
        class_name=class_name,
        config=config,
        weights=list(weights),
        keras_major=keras_major,
        args=[Tensor(input_shape)],
        kwargs={},
    )
    return CONVERTERS[class_name](layer), layer


@pytest.mark.parametrize(
    "class_name,config,shape,weights,message",
    [
        ("UpSampling2D", {"size": [2, 2], "interpolation": "bicubic"}, (3, 4, 2), (), "interpolation 'bicubic'"),
        ("Conv2D", {"filters": 2, "kernel_size": [3, 3], "padding": "full"}, (5, 5, 1), (), "padding 'full'"),
        ("Conv2D", {"filters": 2, "kernel_size": [3, 3], "padding": "causal"}, (5, 5, 1), (), "padding 'causal'"),
        ("Conv2D", {"filters": 2, "kernel_size": [1, 1], "lora_rank": 2}, (5, 5, 1), (), "LoRA"),
        ("MaxPooling2D", {"pool_size": [2, 2], "data_format": "channels_middle"}, (5, 5, 1), (), "data_format"),
        ("Conv2D", {"filters": 2, "kernel_size": [3, 3]}, (5, 5, None), (), "unknown number of channels"),
    ],
)
def test_unsupported_options_are_refused_by_name(class_name, config, shape, weights, message):
    from konverter.errors import UnsupportedModel

    with pytest.raises(UnsupportedModel, match=message):
        _convert_layer(class_name, config, shape, weights)


def test_inconsistent_conv_files_are_bad_model_files():
    from konverter.errors import BadModelFile

    config = {"filters": 2, "kernel_size": [3, 3], "padding": "valid"}
    with pytest.raises(BadModelFile, match="kernel larger than its input"):
        _convert_layer("Conv2D", config, (2, 5, 1), [np.zeros((3, 3, 1, 2), np.float32), np.zeros(2, np.float32)])
    with pytest.raises(BadModelFile, match="weight 0 has shape"):
        _convert_layer("Conv2D", config, (5, 5, 1), [np.zeros((3, 3, 2, 2), np.float32), np.zeros(2, np.float32)])
    with pytest.raises(BadModelFile, match="groups"):
        _convert_layer("Conv2D", {**config, "groups": 2}, (5, 5, 3), [])


def test_conv_with_unknown_spatial_size_records_unknown_output_size():
    config = {"filters": 4, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same", "activation": "relu"}
    weights = [np.zeros((3, 3, 2, 4), np.float32), np.zeros(4, np.float32)]
    out, layer = _convert_layer("Conv2D", config, (None, 7, 2), weights)
    assert out.shape == (None, 4, 4)
    assert [op.fn.__name__ for op in layer.ops] == ["conv"] and layer.ops[0].kwargs["relu"] is True


# ----------------------------------------------------------------------------- BatchNormalization and ReLU folding


def _run_ops(ops, env):
    """Evaluate recorded ops the way the generated predict() does."""
    from konverter.layers.base import Const, Derived, Tensor

    def value(v):
        if isinstance(v, Tensor):
            return env[id(v)]
        if isinstance(v, Const):
            return v.array
        if isinstance(v, Derived):  # computed at import in the generated file
            return v.fn(*[value(a) for a in v.args])
        if isinstance(v, list):
            return [value(a) for a in v]
        return v

    for op in ops:
        result = op.fn(*[value(a) for a in op.args], **{k: value(v) for k, v in op.kwargs.items()})
        env[id(op.outputs[0])] = result
    return env


def _conv_case(kind, channels_first):
    """(function, positional args after x, input, output channels) for one convolution kind."""
    c, f = 4, 6
    geometry = ((3, 3), (2, 1), (1, 1), "same")
    x = rand(2, 7, 6, c)
    if kind == "conv":
        args = (rand(9 * c, f), rand(f)) + geometry
        fn = conv
    elif kind == "grouped":
        args = (rand(2, 9 * c // 2, f // 2), rand(f)) + geometry
        fn = conv_grouped
    elif kind == "depthwise":
        args = (rand(3, 3, c, 2), None) + geometry
        fn, f = depthwise_conv, c * 2
    elif kind == "separable":
        args = (rand(3, 3, c, 2), rand(c * 2, f), rand(f)) + geometry
        fn = separable_conv
    else:
        args = (rand(c, 9 * f), rand(f)) + geometry + ((1, 0),)
        fn = conv_transpose
    if channels_first:
        x = np.moveaxis(x, -1, 1)
    return fn, args, x, f


@pytest.mark.parametrize("kind", ["conv", "grouped", "depthwise", "separable", "transpose"])
@pytest.mark.parametrize("channels_first", [False, True])
def test_batchnorm_and_relu_fold_into_every_convolution(kind, channels_first):
    from konverter.layers.activations import relu
    from konverter.layers.base import Const, Op, Tensor
    from konverter.layers.conv import fold_batchnorm_into_conv, fuse_activation_into_conv
    from konverter.layers.normalization import scale_shift

    fn, args, x, f = _conv_case(kind, channels_first)
    shape = (f, 3, 3) if channels_first else (3, 3, f)  # only its rank and channel axis matter
    bn_shape = (f, 1, 1) if channels_first else (1, 1, f)
    t_in, t_conv, t_bn, t_out = Tensor(x.shape[1:]), Tensor(shape), Tensor(shape), Tensor(shape)
    scale, shift = Const(rand(*bn_shape) + 2.0), Const(rand(*bn_shape))
    ops = [
        Op(
            fn,
            (t_in, *[Const(a) if isinstance(a, np.ndarray) else a for a in args]),
            {"channels_first": channels_first},  # as the converters pass it
            (t_conv,),
        ),
        Op(scale_shift, (t_conv, scale, shift), {}, (t_bn,)),
        Op(relu, (t_bn,), {}, (t_out,)),
    ]
    want = _run_ops(ops, {id(t_in): x})[id(t_out)]
    fold_batchnorm_into_conv(ops, [t_out])
    fuse_activation_into_conv(ops, [t_out])
    assert len(ops) == 1 and ops[0].kwargs["relu"] is True and ops[0].outputs == (t_out,)
    got = _run_ops(ops, {id(t_in): x})[id(t_out)]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv", "grouped", "depthwise", "separable", "transpose"])
@pytest.mark.parametrize("name", ["relu6", "sigmoid", "swish", "hard_silu"])
def test_activations_run_in_place_inside_every_convolution(kind, name):
    from konverter.layers import activations
    from konverter.layers.base import Const, Op, Tensor
    from konverter.layers.conv import fuse_activation_into_conv

    fn, args, x, f = _conv_case(kind, False)
    t_in, t_conv, t_out = Tensor(x.shape[1:]), Tensor((3, 3, f)), Tensor((3, 3, f))
    ops = [
        Op(fn, (t_in, *[Const(a) if isinstance(a, np.ndarray) else a for a in args], False), {}, (t_conv,)),
        Op(getattr(activations, name), (t_conv,), {}, (t_out,)),
    ]
    x = x * 4.0  # values well past relu6's 6 and sigmoid's linear part; exp may overflow to inf (as in predict)
    with np.errstate(over="ignore"):
        want = _run_ops(ops, {id(t_in): x})[id(t_out)]
        fuse_activation_into_conv(ops, [t_out])
        fused = "swish_halved" if name == "swish" else name  # swish: the convolution computes x / 2
        assert len(ops) == 1 and ops[0].kwargs == {"activation": fused} and ops[0].outputs == (t_out,)
        got = _run_ops(ops, {id(t_in): x})[id(t_out)]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_swish_after_a_residual_add_keeps_the_full_output():
    from konverter.layers.activations import swish
    from konverter.layers.base import Const, Op, Tensor
    from konverter.layers.conv import fuse_activation_into_conv, fuse_residual_into_conv
    from konverter.layers.merge import merge_add

    t_in, t_conv, t_sum, t_out = (Tensor((4, 4, 3)) for _ in range(4))
    kernel = Const(rand(3, 3))
    geometry = {"kernel_size": (1, 1), "strides": (1, 1), "dilation": (1, 1), "padding": "valid"}
    ops = [
        Op(conv, (t_in, kernel, Const(rand(3))), {**geometry, "channels_first": False}, (t_conv,)),
        Op(merge_add, ([t_in, t_conv],), {}, (t_sum,)),
        Op(swish, (t_sum,), {}, (t_out,)),
    ]
    x = rand(2, 4, 4, 3) * 3.0
    want = _run_ops(ops, {id(t_in): x})[id(t_out)]
    fuse_residual_into_conv(ops, [t_out])
    fuse_activation_into_conv(ops, [t_out])
    assert len(ops) == 1 and ops[0].kwargs["activation"] == "swish" and ops[0].args[1] is kernel
    np.testing.assert_allclose(_run_ops(ops, {id(t_in): x})[id(t_out)], want, rtol=1e-6, atol=1e-6)


def test_activation_of_a_shared_convolution_output_is_not_fused():
    from konverter.layers.activations import swish
    from konverter.layers.base import Const, Op, Tensor
    from konverter.layers.conv import fuse_activation_into_conv

    t_in, t_conv, t_out = Tensor((5, 5, 2)), Tensor((3, 3, 3)), Tensor((3, 3, 3))
    geometry = {"kernel_size": (3, 3), "strides": (1, 1), "dilation": (1, 1), "padding": "valid"}
    ops = [
        Op(conv, (t_in, Const(rand(18, 3)), None), {**geometry, "channels_first": False}, (t_conv,)),
        Op(swish, (t_conv,), {}, (t_out,)),
    ]
    fuse_activation_into_conv(ops, [t_out, t_conv])
    assert len(ops) == 2 and "activation" not in ops[0].kwargs


def test_max_pool_does_not_take_a_non_relu_activation():
    from konverter.layers.pooling import pool_before_bias_relu

    ops, outputs, bias = _conv_pool_ops(False)
    ops[0].kwargs = {**ops[0].kwargs, "relu": False, "activation": "swish"}  # swish is not monotone
    pool_before_bias_relu(ops, outputs)
    assert ops[0].args[2] is bias and "bias" not in ops[1].kwargs


# ----------------------------------------------------------------------------- depthwise rows


@pytest.mark.parametrize(
    "size,ks,strides,dilation,padding,mult",
    [
        ((9,), (3,), (1,), (1,), "same", 1),
        ((9,), (5,), (1,), (2,), "valid", 2),
        ((8,), (3,), (2,), (1,), "same", 1),
        ((7, 6), (3, 3), (1, 1), (1, 1), "same", 1),
        ((7, 6), (5, 5), (1, 1), (1, 1), "same", 1),
        ((8, 7), (3, 3), (2, 1), (1, 1), "same", 2),
        ((8, 7), (3, 2), (1, 1), (2, 3), "valid", 1),
        ((8, 7), (3, 3), (2, 2), (1, 1), "valid", 1),
        ((8, 7), (3, 3), (1, 2), (1, 1), "same", 3),
    ],
)
@pytest.mark.parametrize("channels_first", [False, True])
def test_depthwise_matches_naive_loop_with_tiles_built_at_import(
    size, ks, strides, dilation, padding, mult, channels_first
):
    from konverter.layers.base import Const, Derived, Op, Tensor
    from konverter.layers.conv import tile_depthwise_rows

    c = 5
    x, kernel, bias = rand(2, *size, c), rand(*ks, c, mult), rand(c * mult)
    want = naive_conv(x, kernel.reshape(*ks, 1, c * mult), bias, strides, dilation, padding, groups=c)
    if channels_first:
        x, want = np.moveaxis(x, -1, 1), np.moveaxis(want, -1, 1)
    options = {"kernel_size": ks, "strides": strides, "dilation": dilation, "padding": padding}
    t_in, t_out = Tensor(x.shape[1:]), Tensor(want.shape[1:])
    ops = [
        Op(depthwise_conv, (t_in, Const(kernel), Const(bias)), {**options, "channels_first": channels_first}, (t_out,))
    ]
    close(_run_ops(ops, {id(t_in): x})[id(t_out)], want)  # tiles built on each call
    tile_depthwise_rows(ops, [t_out])
    tiles = ops[0].kwargs.get("tiles")
    assert isinstance(tiles, Derived) if strides[-1] == 1 else tiles is None
    assert tiles is None or tiles.args[0] is ops[0].args[1]  # the stored kernel, not a copy
    close(_run_ops(ops, {id(t_in): x})[id(t_out)], want)


@pytest.mark.parametrize("kind", ["conv", "grouped", "depthwise", "separable", "transpose", "pooled"])
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("whole", [False, True])  # a row, or (small maps) the whole map
def test_bias_and_relu_tiles_give_the_same_results(kind, channels_first, whole, monkeypatch):
    from konverter.layers import pooling
    from konverter.layers.base import Const, Derived, Op, Tensor
    from konverter.layers.conv import bias_tile, zeros_tile
    from konverter.layers.pooling import pool_before_bias_relu, tile_bias_and_relu

    monkeypatch.setattr(pooling, "WHOLE_MAP_VALUES", 1000 if whole else 10)

    fn, args, x, f = _conv_case("conv" if kind == "pooled" else kind, channels_first)
    if kind == "depthwise":
        args = (args[0], rand(f)) + args[2:]
    size = (14, 6) if kind == "transpose" else (4, 6)
    t_in, t_conv, t_pool = Tensor(x.shape[1:]), Tensor((f, *size) if channels_first else (*size, f)), Tensor(None)
    ops = [
        Op(
            fn,
            (t_in, *[Const(a) if isinstance(a, np.ndarray) else a for a in args]),
            {"channels_first": channels_first, "relu": True},
            (t_conv,),
        )
    ]
    outputs = [t_conv]
    if kind == "pooled":
        t_pool.shape = (f, 2, 3) if channels_first else (2, 3, f)
        pool = {"pool_size": (2, 2), "strides": (2, 2), "padding": "valid", "channels_first": channels_first}
        ops.append(Op(max_pool, (t_conv,), pool, (t_pool,)))
        outputs = [t_pool]
        pool_before_bias_relu(ops, outputs)
    want = _run_ops(ops, {id(t_in): x})[id(outputs[0])]
    tile_bias_and_relu(ops, outputs)
    tiles = {a.fn: a.args for op in ops for a in (*op.args, *op.kwargs.values()) if isinstance(a, Derived)}
    spatial = (2, 3) if kind == "pooled" else size
    tile = spatial if whole else spatial[-1:]
    assert tiles[bias_tile][1] == tile and tiles[zeros_tile] == (tile, f)
    np.testing.assert_array_equal(_run_ops(ops, {id(t_in): x})[id(outputs[0])], want)


@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("shortcut_after", [False, True])
def test_residual_add_and_relu_run_inside_the_convolution(channels_first, shortcut_after):
    from konverter.layers.activations import relu
    from konverter.layers.base import Const, Op, Tensor
    from konverter.layers.conv import fuse_activation_into_conv, fuse_residual_into_conv
    from konverter.layers.merge import merge_add
    from konverter.layers.normalization import scale_only

    x = rand(2, 5, 5, 3)
    shape = (3, 5, 5) if channels_first else (5, 5, 3)
    if channels_first:
        x = np.moveaxis(x, -1, 1)
    t_in, t_conv, t_short, t_sum, t_out = (Tensor(shape) for _ in range(5))
    geometry = {"kernel_size": (3, 3), "strides": (1, 1), "dilation": (1, 1), "padding": "same"}
    conv_op = Op(
        conv, (t_in, Const(rand(27, 3)), Const(rand(3))), {**geometry, "channels_first": channels_first}, (t_conv,)
    )
    shortcut_op = Op(scale_only, (t_in,), {"scale": 2.0}, (t_short,))  # computed after the convolution, or before
    ops = [conv_op, shortcut_op] if shortcut_after else [shortcut_op, conv_op]
    ops += [Op(merge_add, ([t_short, t_conv],), {}, (t_sum,)), Op(relu, (t_sum,), {}, (t_out,))]
    want = _run_ops(ops, {id(t_in): x})[id(t_out)]
    fuse_residual_into_conv(ops, [t_out])
    fuse_activation_into_conv(ops, [t_out])
    assert [op.fn for op in ops] == [scale_only, conv]  # the convolution runs where the Add was
    assert ops[1].kwargs["residual"] is t_short and ops[1].kwargs["relu"] is True and ops[1].outputs == (t_out,)
    np.testing.assert_allclose(_run_ops(ops, {id(t_in): x})[id(t_out)], want, rtol=1e-6, atol=1e-6)


def test_residual_is_not_fused_into_a_convolution_whose_output_is_read_elsewhere():
    from konverter.layers.base import Const, Op, Tensor
    from konverter.layers.conv import fuse_residual_into_conv
    from konverter.layers.merge import merge_add

    t_in, t_conv, t_sum = Tensor((5, 5, 3)), Tensor((5, 5, 3)), Tensor((5, 5, 3))
    geometry = {"kernel_size": (1, 1), "strides": (1, 1), "dilation": (1, 1), "padding": "valid"}
    ops = [
        Op(conv, (t_in, Const(rand(3, 3)), None), {**geometry, "channels_first": False}, (t_conv,)),
        Op(merge_add, ([t_in, t_conv],), {}, (t_sum,)),
    ]
    fuse_residual_into_conv(ops, [t_sum, t_conv])
    assert len(ops) == 2 and "residual" not in ops[0].kwargs


def _squeeze_excite_ops(keepdims: bool, gate_first: bool, size: tuple = (4, 5)):
    """GAP -> [Reshape] -> 1x1 conv (swish) -> 1x1 conv (sigmoid) -> Multiply, as the converters record it.
    The GAP's mean_weights are built at import for small maps, per call (None) for large ones."""
    from konverter.layers.activations import sigmoid, swish
    from konverter.layers.base import Const, Derived, Op, Tensor
    from konverter.layers.merge import merge_multiply
    from konverter.layers.pooling import (
        MEAN_WEIGHTS_AT_IMPORT,
        global_average_pool,
        global_average_product,
        mean_weights,
    )
    from konverter.layers.reshaping import reshape

    one = {"kernel_size": (1, 1), "strides": (1, 1), "dilation": (1, 1), "padding": "same", "channels_first": False}
    shapes = [(*size, 6), (6,), (1, 1, 6), (1, 1, 2), (1, 1, 2), (1, 1, 6), (1, 1, 6), (*size, 6)]
    positions = size[0] * size[1]
    mean = Derived(mean_weights, (positions,)) if positions <= MEAN_WEIGHTS_AT_IMPORT else None
    x, gap, gate_in, hidden, hidden_act, gate, gate_act, out = (Tensor(s) for s in shapes)
    if keepdims:
        ops = [Op(global_average_pool, (x,), {"axes": (1, 2), "keepdims": True}, (gate_in,))]
    else:
        ops = [
            Op(global_average_product, (x, mean), {"channels_first": False}, (gap,)),
            Op(reshape, (gap,), {"target": (1, 1, 6)}, (gate_in,)),
        ]
    ops += [
        Op(conv, (gate_in, Const(rand(6, 2)), Const(rand(2))), one, (hidden,)),
        Op(swish, (hidden,), {}, (hidden_act,)),
        Op(conv, (hidden_act, Const(rand(2, 6)), None), one, (gate,)),
        Op(sigmoid, (gate,), {}, (gate_act,)),
        Op(merge_multiply, ([gate_act, x] if gate_first else [x, gate_act],), {}, (out,)),
    ]
    return ops, x, out


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("gate_first", [False, True])
@pytest.mark.parametrize("size", [(4, 5), (40, 30)])  # 1,200 positions: mean_weights per call
def test_squeeze_and_excitation_runs_as_one_call(keepdims, gate_first, size):
    from konverter.layers.conv import fuse_activation_into_conv
    from konverter.layers.pooling import fuse_squeeze_excite, squeeze_excite

    ops, x, out = _squeeze_excite_ops(keepdims, gate_first, size)
    values = rand(3, *size, 6) * 3.0
    want = _run_ops(ops, {id(x): values})[id(out)]
    fuse_activation_into_conv(ops, [out])
    fuse_squeeze_excite(ops, [out])
    assert [op.fn for op in ops] == [squeeze_excite] and ops[0].outputs == (out,)
    assert ops[0].args[4] == "swish_halved" and ops[0].args[7] == "sigmoid" and ops[0].args[6] is None
    np.testing.assert_allclose(_run_ops(ops, {id(x): values})[id(out)], want, rtol=1e-6, atol=1e-6)


def test_squeeze_and_excitation_with_a_shared_part_is_left_alone():
    from konverter.layers.conv import fuse_activation_into_conv
    from konverter.layers.pooling import fuse_squeeze_excite

    ops, x, out = _squeeze_excite_ops(False, False)
    fuse_activation_into_conv(ops, [out])
    hidden = ops[2].outputs[0]  # the reduce convolution's output is also a model output
    fuse_squeeze_excite(ops, [out, hidden])
    assert len(ops) == 5


def test_batchnorm_is_not_folded_into_a_shared_convolution_output():
    from konverter.layers.base import Const, Op, Tensor
    from konverter.layers.conv import fold_batchnorm_into_conv
    from konverter.layers.normalization import scale_shift

    t_in, t_conv, t_bn = Tensor((5, 5, 2)), Tensor((3, 3, 3)), Tensor((3, 3, 3))
    geometry = {"kernel_size": (3, 3), "strides": (1, 1), "dilation": (1, 1), "padding": "valid"}
    ops = [
        Op(conv, (t_in, Const(rand(18, 3)), None), {**geometry, "channels_first": False}, (t_conv,)),
        Op(scale_shift, (t_conv, Const(rand(1, 1, 3)), Const(rand(1, 1, 3))), {}, (t_bn,)),
    ]
    fold_batchnorm_into_conv(ops, [t_bn, t_conv])
    assert len(ops) == 2 and ops[0].args[2] is None


# ----------------------------------------------------------------------------- gather and mean-folding rewrites


@pytest.mark.parametrize(
    "size,ks,strides,dilation,padding",
    [
        ((7,), (3,), (1,), (1,), "valid"),
        ((8,), (2,), (1,), (3,), "causal"),
        ((6, 7), (3, 2), (2, 2), (1, 1), "same"),
        ((7, 5), (2, 3), (1, 2), (1, 1), "valid"),
        ((7, 7), (3, 3), (1, 1), (2, 1), "same"),
        ((5, 4, 5), (2, 3, 2), (2, 1, 2), (1, 1, 1), "same"),
    ],
)
@pytest.mark.parametrize("relu", [False, True])
def test_gather_rewrite_matches_naive_loop(size, ks, strides, dilation, padding, relu):
    from konverter.layers.base import Const, Derived, Op, Tensor
    from konverter.layers.conv import conv_gather, gather_narrow_convs

    c, f = 2, 3  # two channels: contiguous window runs shorter than GATHER_RUN, so the rewrite applies
    x, kernel, bias = rand(2, *size, c), rand(*ks, c, f), rand(f)
    geometry = {"kernel_size": ks, "strides": strides, "dilation": dilation, "padding": padding}
    ops = [
        Op(
            conv,
            (Tensor((*size, c)), Const(kernel.reshape(-1, f)), Const(bias)),
            {"relu": relu, **geometry, "channels_first": False},
            (Tensor(None),),
        )
    ]
    gather_narrow_convs(ops, [])
    assert ops[0].fn is conv_gather
    args = [
        a.array if isinstance(a, Const) else a.fn(*a.args) if isinstance(a, Derived) else a for a in ops[0].args[1:]
    ]
    want = naive_conv(x, kernel, bias, strides, dilation, padding)
    close(conv_gather(x, *args, **ops[0].kwargs), np.maximum(want, 0.0) if relu else want)
    close(conv_gather(x[:1], *args, **ops[0].kwargs), (np.maximum(want, 0.0) if relu else want)[:1])


def test_gather_rewrite_keeps_wide_windows_and_unknown_sizes_strided():
    from konverter.layers.base import Const, Op, Tensor
    from konverter.layers.conv import gather_narrow_convs

    geometry = {"kernel_size": (3, 3), "strides": (1, 1), "dilation": (1, 1), "padding": "valid"}
    for shape in ((6, 6, 16), (None, None, 1)):
        c = shape[-1]
        ops = [
            Op(
                conv,
                (Tensor(shape), Const(rand(9 * c, 4)), None),
                {**geometry, "channels_first": False},
                (Tensor(None),),
            )
        ]
        gather_narrow_convs(ops, [])
        assert ops[0].fn is conv


@pytest.mark.parametrize("size", [(7,), (4, 5), (3, 2, 4)])
@pytest.mark.parametrize("channels_first", [False, True])
def test_global_average_as_one_product_matches_the_mean(size, channels_first):
    from konverter.layers.pooling import global_average_product, mean_weights

    x = rand(2, *size, 3)
    want = x.astype(np.float64).mean(axis=tuple(range(1, len(size) + 1)))
    weights = mean_weights(int(np.prod(size)))
    assert weights.dtype == np.float32 and not weights.flags.writeable
    if channels_first:
        x = np.moveaxis(x, -1, 1)
    close(global_average_product(x, weights, channels_first), want)
    close(global_average_product(x[:1], weights, channels_first), want[:1])


@pytest.mark.parametrize(
    "name",
    ["cnn_classifier__k2h5", "conv_batchnorm__k3keras", "genomics_conv1d__k2h5", "flatten_channels_first__k3keras"],
)
def test_large_batches_run_in_row_chunks_with_the_same_results(tmp_path, name):
    from conftest import FIXTURES, convert_and_import, load_reference

    path = next((FIXTURES / "conv").glob(name + ".*[!z]"))
    module = convert_and_import(path, tmp_path)
    source = (tmp_path / (path.stem + ".py")).read_text()
    rows = int(source.split("    if len(x0) > ")[1].split(":")[0])
    (x,), (y,) = load_reference(path.with_suffix(".npz"))
    # More rows than two chunks, the Keras reference rows among them, the rest noise.
    batch = np.concatenate([x, rand(2 * rows + 3 - len(x), *x.shape[1:])])
    got = module.predict(batch)
    assert got.shape == (len(batch),) + y.shape[1:] and got.dtype == np.float32
    close(got[: len(x)], y.astype(np.float64))
    for i in (len(x), rows - 1, rows, 2 * rows + 2):
        close(got[i : i + 1], module.predict(batch[i : i + 1]).astype(np.float64))


def test_every_chunked_fixture_gives_the_same_rows_in_a_large_batch(tmp_path):
    """Each fixture model whose file runs large batches in chunks: chunk edges change nothing."""
    from conftest import FIXTURES, import_file, load_reference

    from konverter import konvert
    from konverter.errors import KonverterError

    checked = []
    for path in sorted(FIXTURES.glob("*/*__k[23]*")):
        if path.suffix == ".npz" or "stateful" in path.parts or "hostile" in path.parts:
            continue
        try:
            out = konvert(path, tmp_path / f"{path.stem}_{path.suffix[1:]}.py")
        except KonverterError:
            continue
        source = out.read_text()
        if "    if len(x0) > " not in source:
            continue
        rows = int(source.split("    if len(x0) > ")[1].split(":")[0])
        predict = import_file(out).predict
        (x,), _ = load_reference(path.with_suffix(".npz"))
        batch = np.concatenate([x, rand(rows + 1, *x.shape[1:]).astype(x.dtype)])
        got = predict(batch)
        for i in (0, rows - 1, rows, rows + len(x)):
            close(got[i : i + 1], predict(batch[i : i + 1]).astype(np.float64))
        checked.append(path.name)
    assert len(checked) >= 8, checked


def test_gather_indices_are_built_at_import_not_stored(tmp_path):
    from conftest import FIXTURES, import_file

    from konverter import konvert

    src = FIXTURES / "conv" / "conv2d_options__k3keras.keras"
    first = konvert(src, tmp_path / "a.py").read_text()
    assert konvert(src, tmp_path / "b.py").read_text() == first  # deterministic
    calls = [line for line in first.splitlines() if not line.startswith(" ") and " = gather_index(" in line]
    assert len(calls) == len({line.split(" = ", 1)[1] for line in calls}) >= 2  # one line per distinct geometry
    table = first.split("_TABLE = (")[1].split(")\n(")[0]
    assert "'<i" not in table and "'<u" not in table  # no index array among the stored weights
    module = import_file(tmp_path / "a.py")
    index = getattr(module, calls[0].split(" = ", 1)[0])  # named after its layer: conv2d_index
    assert index.dtype == np.intp and not index.flags.writeable


def test_mobile_blocks_fixture_runs_every_fusion():
    """The fixture of scripts/fixtures_mobile.py (checked against Keras by test_fixtures): each of its
    layers runs as one call, the activations, Adds and squeeze-and-excitation inside the convolutions."""
    from conftest import FIXTURES

    from konverter.convert import generate_source

    source = generate_source(FIXTURES / "conv" / "mobile_blocks__k3keras.keras")[0]
    body = source[source.index("def predict") : source.index("# layer math")]
    calls = [line.split(" = ")[1].split("(")[0] for line in body.splitlines() if " = " in line and "(" in line]
    assert calls[2:] == [
        "scale_only",
        "conv",
        "depthwise_conv",
        "squeeze_excite",
        "conv",
        "zero_pad",
        "depthwise_conv",
        "conv",
        "depthwise_conv",
        "conv",
        "global_average_product",
        "dense",
    ], calls
    assert "residual=t0" in body and body.count("'swish_halved'") == 3 and body.count("tiles=") == 2


def test_convolutions_and_poolings_of_a_known_size_get_their_geometry_built_at_import():
    from konverter.layers.base import Const, Derived, Op, Tensor
    from konverter.layers.conv import plan_conv_windows
    from konverter.layers.pooling import plan_pool_taps

    x, kernel, bias = rand(3, 9, 8, 4), rand(9 * 4, 6), rand(6)
    geometry = {
        "kernel_size": (3, 3),
        "strides": (1, 1),
        "dilation": (1, 1),
        "padding": "same",
        "channels_first": False,
    }
    pool = {"pool_size": (2, 2), "strides": (2, 2), "padding": "valid", "channels_first": False}

    def program(size):
        t_in, t_conv, t_pool = Tensor(size), Tensor(size[:2] + (6,)), Tensor((4, 4, 6))
        ops = [
            Op(conv, (t_in, Const(kernel), Const(bias)), dict(geometry), (t_conv,)),
            Op(max_pool, (t_conv,), dict(pool), (t_pool,)),
        ]
        return ops, t_in, t_pool

    ops, t_in, t_out = program((9, 8, 4))
    want = _run_ops(ops, {id(t_in): x})[id(t_out)]
    plan_conv_windows(ops, [t_out])
    plan_pool_taps(ops, [t_out])
    planned = {a.fn.__name__ for op in ops for a in op.kwargs.values() if isinstance(a, Derived)}
    assert planned == {"window_geometry", "pool_taps"}
    np.testing.assert_array_equal(_run_ops(ops, {id(t_in): x})[id(t_out)], want)
    # An unknown size: nothing to build at import.
    ops, _, t_out = program((None, None, 4))
    plan_conv_windows(ops, [t_out])
    plan_pool_taps(ops, [t_out])
    assert not any(isinstance(a, Derived) for op in ops for a in op.kwargs.values())
