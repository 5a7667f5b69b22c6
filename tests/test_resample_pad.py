"""pad / interpolate / pixel_shuffle / pixel_unshuffle against real torch (torch layout and channels-last,
values and gradients), the padding layers, Upsample, PixelShuffle / PixelUnshuffle (forward, input gradient,
print text) and their errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from fnml import functional as F
from fnml import layers

try:
    from test_conv_family import VARIANTS, layer_parity, parity, to_channels_first, to_channels_last
except ImportError:  # pragma: no cover - run from another rootdir
    from tests.test_conv_family import VARIANTS, layer_parity, parity, to_channels_first, to_channels_last


def _data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _call(op, spatial, channels_last, *args, **kwargs):
    """An fnml call on torch-layout data, through channels-last when asked."""

    def call(x):
        if not channels_last:
            return op(x, *args, **kwargs)
        return to_channels_first(op(to_channels_last(x, spatial), *args, **kwargs, channels_last=True), spatial)

    return call


# --------------------------------------------------------------------------------------------------
# pad
# --------------------------------------------------------------------------------------------------

PAD_CASES = {
    # name: (torch-layout input shape, pad, mode, value)
    "constant_1d_value": ((2, 3, 5), (2, 1), "constant", 1.5),
    "constant_2d_negative_crops": ((2, 3, 5, 6), (1, -2, -1, 3), "constant", None),
    "reflect_1d_max": ((2, 3, 5), (4, 4), "reflect", None),
    "reflect_2d_negative": ((1, 2, 5, 6), (1, -2, 3, 0), "reflect", None),
    "replicate_1d_large": ((2, 3, 4), (6, 1), "replicate", None),
    "replicate_2d_unbatched": ((2, 4, 5), (2, 1, 0, 3), "replicate", None),
    "circular_2d_full_and_crop": ((1, 2, 4, 5), (4, -1, 2, 4), "circular", None),
    "circular_1d_unbatched": ((3, 6), (2, 3), "circular", None),
}


@VARIANTS
@pytest.mark.parametrize("case", list(PAD_CASES))
def test_pad_matches_torch(case, dtype, channels_last):
    shape, pad, mode, value = PAD_CASES[case]
    spatial = len(pad) // 2
    parity(
        _call(F.pad, spatial, channels_last, pad, mode, value),
        lambda t: TF.pad(t, pad, mode, value),
        [_data(shape)],
        dtype,
    )


def test_constant_pad_reaches_the_channel_and_batch_axes_as_torch():
    x = _data((2, 3, 4))
    np.testing.assert_array_equal(
        np.asarray(F.pad(jnp.asarray(x), (1, 0, 0, 2, 1, 1))), TF.pad(torch.tensor(x), (1, 0, 0, 2, 1, 1)).numpy()
    )


# --------------------------------------------------------------------------------------------------
# interpolate
# --------------------------------------------------------------------------------------------------

SIZES = {
    # name: kwargs (on a (2, 2, 5, 7) image / (2, 3, 7) signal)
    "size_up": dict(size=(8, 11)),
    "size_down": dict(size=(3, 4)),
    "scale2": dict(scale_factor=2),
    "scale1.7_noninteger": dict(scale_factor=1.7),
    "scale(0.6,2.5)": dict(scale_factor=(0.6, 2.5)),
    "scale1.3_recompute": dict(scale_factor=1.3, recompute_scale_factor=True),
    "scale1.05_same_size": dict(scale_factor=1.05),
}
MODES_2D = [
    ("nearest", None),
    ("nearest-exact", None),
    ("bilinear", False),
    ("bilinear", True),
    ("bicubic", False),
    ("bicubic", True),
    ("area", None),
]


# torch's bicubic backward copies at equal sizes (scale 1.05 keeps (5, 7)): see the test after this one.
INTERPOLATE_2D = [
    (mode, align_corners, sizes)
    for mode, align_corners in MODES_2D
    for sizes in SIZES
    if not (mode == "bicubic" and sizes == "scale1.05_same_size")
]


# Every combination in float64 (exactness); float32 (working tolerance) on two of the sizings.
INTERPOLATE_2D_DTYPES = [
    (dtype, *case)
    for case in INTERPOLATE_2D
    for dtype in ("float64", "float32")
    if dtype == "float64" or case[2] in ("size_up", "scale1.7_noninteger")
]


@pytest.mark.parametrize(
    "dtype, mode, align_corners, sizes",
    INTERPOLATE_2D_DTYPES,
    ids=[f"{d}-{m}-ac{a}-{s}" for d, m, a, s in INTERPOLATE_2D_DTYPES],
)
def test_interpolate_2d_matches_torch(mode, align_corners, sizes, dtype):
    kwargs = dict(SIZES[sizes], mode=mode, align_corners=align_corners)
    parity(lambda x: F.interpolate(x, **kwargs), lambda t: TF.interpolate(t, **kwargs), [_data((2, 2, 5, 7))], dtype)


MODES_1D = [("nearest", None), ("linear", False), ("linear", True), ("area", None)]


@pytest.mark.parametrize("channels_last", [False, True], ids=["torch_layout", "channels_last"])
@pytest.mark.parametrize("sizes", ["size", "scale2.3", "scale0.45"])
@pytest.mark.parametrize("mode, align_corners", MODES_1D, ids=[f"{m}-ac{a}" for m, a in MODES_1D])
def test_interpolate_1d_matches_torch(mode, align_corners, sizes, channels_last):
    kwargs = {"size": dict(size=12), "scale2.3": dict(scale_factor=2.3), "scale0.45": dict(scale_factor=0.45)}[sizes]
    kwargs = dict(kwargs, mode=mode, align_corners=align_corners)
    parity(
        _call(F.interpolate, 1, channels_last, **kwargs),
        lambda t: TF.interpolate(t, **kwargs),
        [_data((2, 3, 7))],
        "float64",
    )


@pytest.mark.parametrize("mode, align_corners", [("nearest", None), ("bilinear", True), ("bicubic", False)])
def test_interpolate_channels_last_matches_torch(mode, align_corners):
    kwargs = dict(scale_factor=(1.5, 0.7), mode=mode, align_corners=align_corners)
    parity(
        _call(F.interpolate, 2, True, **kwargs), lambda t: TF.interpolate(t, **kwargs), [_data((2, 3, 6, 5))], "float64"
    )


def test_bicubic_same_size_gradient_is_the_true_one():
    # scale_factor=1.05 on (5, 7) keeps the size: torch's forward still interpolates with scale 1/1.05, but its
    # backward copies the gradient (a special case in its CPU kernel). fnml's forward matches torch's, and its
    # gradient is the true derivative of that forward (checked against central differences of torch's forward).
    x = _data((1, 1, 5, 7))
    g = _data((1, 1, 5, 7), seed=1)
    kwargs = dict(scale_factor=1.05, mode="bicubic")
    y = F.interpolate(jnp.asarray(x), **kwargs)
    np.testing.assert_allclose(np.asarray(y), TF.interpolate(torch.tensor(x), **kwargs).numpy(), atol=1e-12, rtol=0)
    grad = jax.grad(lambda v: jnp.sum(F.interpolate(v, **kwargs) * g))(jnp.asarray(x))
    eps = 1e-6
    for index in [(0, 0, 2, 3), (0, 0, 0, 0), (0, 0, 4, 6)]:
        bump = np.zeros_like(x)
        bump[index] = eps
        up = TF.interpolate(torch.tensor(x + bump), **kwargs).numpy()
        down = TF.interpolate(torch.tensor(x - bump), **kwargs).numpy()
        numeric = float(np.sum((up - down) * g) / (2 * eps))
        assert abs(float(grad[index]) - numeric) < 1e-8
    t = torch.tensor(x, requires_grad=True)
    (TF.interpolate(t, **kwargs) * torch.tensor(g)).sum().backward()
    assert np.allclose(t.grad.numpy(), g)  # torch's copy, which is not the derivative of its forward
    assert not np.allclose(np.asarray(grad), g)


def test_nearest_is_torchs_floor_rule_not_nearest_exact():
    # torch's "nearest" maps dst -> floor(dst * in / out); "nearest-exact" -> floor((dst + 0.5) * in / out).
    x = jnp.arange(5.0).reshape(1, 1, 5)
    assert (
        F.interpolate(x, size=3).tolist()
        == [[[0.0, 1.0, 3.0]]]
        == TF.interpolate(torch.arange(5.0).reshape(1, 1, 5), size=3).tolist()
    )
    assert F.interpolate(x, size=3, mode="nearest-exact").tolist() == [[[0.0, 2.0, 4.0]]]


# --------------------------------------------------------------------------------------------------
# pixel shuffle
# --------------------------------------------------------------------------------------------------


@VARIANTS
@pytest.mark.parametrize("case", ["shuffle_r2", "shuffle_r3_5d", "unshuffle_r2", "unshuffle_r3_3d"])
def test_pixel_shuffle_matches_torch(case, dtype, channels_last):
    op, torch_op = (
        (F.pixel_shuffle, TF.pixel_shuffle) if case.startswith("shuffle") else (F.pixel_unshuffle, TF.pixel_unshuffle)
    )
    shape, r = {
        "shuffle_r2": ((2, 8, 3, 4), 2),
        "shuffle_r3_5d": ((2, 1, 9, 2, 3), 3),
        "unshuffle_r2": ((2, 3, 4, 6), 2),
        "unshuffle_r3_3d": ((2, 6, 9), 3),
    }[case]

    def call(x):
        if not channels_last:
            return op(x, r)
        return jnp.moveaxis(op(jnp.moveaxis(x, -3, -1), r, channels_last=True), -1, -3)  # (*, C, H, W) <-> (*, H, W, C)

    parity(call, lambda t: torch_op(t, r), [_data(shape)], dtype)


# --------------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------------

LAYER_CASES = {
    # name: (fnml layer, torch layer, torch-layout input shape)
    "ZeroPad1d": (layers.ZeroPad1d((2, 1)), torch.nn.ZeroPad1d((2, 1)), (2, 3, 5)),
    "ZeroPad2d": (layers.ZeroPad2d((1, 2, 0, 3)), torch.nn.ZeroPad2d((1, 2, 0, 3)), (2, 3, 4, 5)),
    "ConstantPad1d_negative": (layers.ConstantPad1d((3, -1), 2.5), torch.nn.ConstantPad1d((3, -1), 2.5), (2, 3, 5)),
    "ConstantPad2d_unbatched": (layers.ConstantPad2d(1, -1.0), torch.nn.ConstantPad2d(1, -1.0), (3, 4, 5)),
    "ReflectionPad1d": (layers.ReflectionPad1d((3, 1)), torch.nn.ReflectionPad1d((3, 1)), (2, 3, 5)),
    "ReflectionPad2d": (layers.ReflectionPad2d((1, 0, 2, 3)), torch.nn.ReflectionPad2d((1, 0, 2, 3)), (2, 2, 4, 5)),
    "ReplicationPad1d_unbatched": (layers.ReplicationPad1d(4), torch.nn.ReplicationPad1d(4), (3, 5)),
    "ReplicationPad2d": (layers.ReplicationPad2d((2, 1, 1, 3)), torch.nn.ReplicationPad2d((2, 1, 1, 3)), (2, 2, 4, 5)),
    "CircularPad1d": (layers.CircularPad1d((5, 2)), torch.nn.CircularPad1d((5, 2)), (2, 3, 5)),
    "CircularPad2d": (layers.CircularPad2d(2), torch.nn.CircularPad2d(2), (1, 2, 4, 5)),
    "Upsample_nearest_scale2": (layers.Upsample(scale_factor=2), torch.nn.Upsample(scale_factor=2), (2, 3, 4, 5)),
    "Upsample_bilinear_ac_size": (
        layers.Upsample(size=(7, 9), mode="bilinear", align_corners=True),
        torch.nn.Upsample(size=(7, 9), mode="bilinear", align_corners=True),
        (2, 2, 4, 5),
    ),
    "Upsample_bicubic_1.5": (
        layers.Upsample(scale_factor=1.5, mode="bicubic"),
        torch.nn.Upsample(scale_factor=1.5, mode="bicubic"),
        (1, 2, 4, 5),
    ),
    "Upsample_linear_1d": (
        layers.Upsample(scale_factor=2.5, mode="linear"),
        torch.nn.Upsample(scale_factor=2.5, mode="linear"),
        (2, 3, 6),
    ),
    "PixelShuffle": (layers.PixelShuffle(2), torch.nn.PixelShuffle(2), (2, 8, 3, 4)),
    "PixelUnshuffle": (layers.PixelUnshuffle(2), torch.nn.PixelUnshuffle(2), (2, 2, 4, 6)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_resample_and_pad_layers_match_torch(case, dtype):
    fnml_layer, torch_layer, shape = LAYER_CASES[case]
    spatial = 1 if "1d" in case else 2
    if case.endswith("unbatched"):
        spatial = len(shape) - 1
    layer_parity(fnml_layer, torch_layer, _data(shape), dtype, spatial, {})


PRINT_CASES = {
    "ZeroPad2d_int": (layers.ZeroPad2d(1), torch.nn.ZeroPad2d(1)),
    "ZeroPad1d": (layers.ZeroPad1d((1, 2)), torch.nn.ZeroPad1d((1, 2))),
    "ConstantPad1d": (layers.ConstantPad1d(2, 3.5), torch.nn.ConstantPad1d(2, 3.5)),
    "ConstantPad2d_int_value": (layers.ConstantPad2d((1, 2, 3, 4), 1), torch.nn.ConstantPad2d((1, 2, 3, 4), 1)),
    "ReflectionPad1d": (layers.ReflectionPad1d(2), torch.nn.ReflectionPad1d(2)),
    "ReflectionPad2d": (layers.ReflectionPad2d((1, 0, 2, 1)), torch.nn.ReflectionPad2d((1, 0, 2, 1))),
    "ReplicationPad1d": (layers.ReplicationPad1d((1, 2)), torch.nn.ReplicationPad1d((1, 2))),
    "ReplicationPad2d": (layers.ReplicationPad2d(1), torch.nn.ReplicationPad2d(1)),
    "CircularPad1d": (layers.CircularPad1d(1), torch.nn.CircularPad1d(1)),
    "CircularPad2d": (layers.CircularPad2d((1, 2, 3, 4)), torch.nn.CircularPad2d((1, 2, 3, 4))),
    "Upsample_scale": (layers.Upsample(scale_factor=2), torch.nn.Upsample(scale_factor=2)),
    "Upsample_size": (
        layers.Upsample(size=(3, 4), mode="bilinear", align_corners=True),
        torch.nn.Upsample(size=(3, 4), mode="bilinear", align_corners=True),
    ),
    "Upsample_tuple_scale": (
        layers.Upsample(scale_factor=(1.5, 2), mode="bicubic"),
        torch.nn.Upsample(scale_factor=(1.5, 2), mode="bicubic"),
    ),
    "Upsample_int_size": (layers.Upsample(size=5), torch.nn.Upsample(size=5)),
    "PixelShuffle": (layers.PixelShuffle(2), torch.nn.PixelShuffle(2)),
    "PixelUnshuffle": (layers.PixelUnshuffle(3), torch.nn.PixelUnshuffle(3)),
}


@pytest.mark.parametrize("case", list(PRINT_CASES))
def test_resample_and_pad_print_matches_torch(case):
    fnml_layer, torch_layer = PRINT_CASES[case]
    assert str(fnml_layer) == repr(torch_layer)


# --------------------------------------------------------------------------------------------------
# errors (each also rejected by torch where torch has the same rule)
# --------------------------------------------------------------------------------------------------

X3 = jnp.ones((1, 2, 4))
X4 = jnp.ones((1, 2, 4, 4))
ERRORS = {
    "interpolate_both": (
        lambda: F.interpolate(X4, size=3, scale_factor=2),
        ValueError,
        r"only one of size or scale_factor",
    ),
    "interpolate_neither": (lambda: F.interpolate(X4), ValueError, r"either size or scale_factor should be defined"),
    "align_corners_with_nearest": (
        lambda: F.interpolate(X4, scale_factor=2, align_corners=True),
        ValueError,
        r"align_corners can only be set with the interpolating modes .*mode='nearest'",
    ),
    "unknown_mode": (
        lambda: F.interpolate(X4, scale_factor=2, mode="trilinear"),
        ValueError,
        r"mode must be one of .*got mode='trilinear'",
    ),
    "bilinear_on_3d": (
        lambda: F.interpolate(X3, scale_factor=2, mode="bilinear"),
        ValueError,
        r"mode='bilinear' needs a 4-D input, got a 3-D one",
    ),
    "linear_on_4d": (
        lambda: F.interpolate(X4, scale_factor=2, mode="linear"),
        ValueError,
        r"mode='linear' needs a 3-D input",
    ),
    "recompute_with_size": (
        lambda: F.interpolate(X4, size=3, recompute_scale_factor=True),
        ValueError,
        r"recompute_scale_factor is not meaningful with an explicit size",
    ),
    "size_length": (
        lambda: F.interpolate(X4, size=(3, 4, 5)),
        ValueError,
        r"size=\(3, 4, 5\) must have one entry per spatial dimension",
    ),
    "scale_negative": (lambda: F.interpolate(X4, scale_factor=-2.0), ValueError, r"scale_factor must be > 0"),
    "scale_empty_output": (lambda: F.interpolate(X4, scale_factor=0.1), ValueError, r"gives an empty output \(0, 0\)"),
    "interpolate_rank": (
        lambda: F.interpolate(jnp.ones((2, 4)), scale_factor=2),
        ValueError,
        r"input must be 3-D or 4-D",
    ),
    "antialias": (
        lambda: F.interpolate(X4, scale_factor=0.5, mode="bilinear", antialias=True),
        NotImplementedError,
        r"antialias=True is not implemented",
    ),
    "upsample_mode": (
        lambda: layers.Upsample(scale_factor=2, mode="cubic"),
        ValueError,
        r"Upsample: mode must be one of",
    ),
    "reflect_too_large": (
        lambda: F.pad(X3, (4, 0), mode="reflect"),
        ValueError,
        r"mode='reflect' needs each padding smaller than the dimension it pads, "
        r"got padding \(4, 0\) for axis 2 of size 4",
    ),
    "reflection_layer_too_large": (
        lambda: layers.ReflectionPad2d(4)(jnp.ones((1, 4, 6, 2))),
        ValueError,
        r"mode='reflect' needs each padding smaller than the dimension it pads",
    ),
    "circular_wraps_twice": (
        lambda: F.pad(X3, (0, 5), mode="circular"),
        ValueError,
        r"mode='circular' needs each padding at most the dimension",
    ),
    "pad_odd_length": (lambda: F.pad(X3, (1, 2, 3)), ValueError, r"the pad length must be divisible by 2"),
    "pad_too_long": (lambda: F.pad(X3, (1,) * 8), ValueError, r"pads 4 dimensions but the input has 3"),
    "pad_channels_last_channel_axis": (
        lambda: F.pad(X3, (1, 1, 1, 1, 1, 1), channels_last=True),
        ValueError,
        r"channels_last: the last axis is never padded",
    ),
    "pad_mode_rank": (
        lambda: F.pad(X4, (1, 1), mode="replicate"),
        ValueError,
        r"mode='replicate' pads the last 1, 2 or 3 spatial dimensions",
    ),
    "pad_value_with_reflect": (
        lambda: F.pad(X3, (1, 1), mode="reflect", value=1.0),
        ValueError,
        r"mode='reflect' does not take a value",
    ),
    "pad_unknown_mode": (
        lambda: F.pad(X3, (1, 1), mode="symmetric"),
        ValueError,
        r"mode must be one of 'constant', 'reflect'",
    ),
    "pad_type": (lambda: F.pad(X3, 1), TypeError, r"pad must be a tuple of ints"),
    "pad_layer_tuple": (
        lambda: layers.ReflectionPad2d((1, 2)),
        TypeError,
        r"padding must be an int or a tuple \(left, right, top, bottom\)",
    ),
    "pad_layer_rank": (
        lambda: layers.ZeroPad2d(1)(jnp.ones((4, 4))),
        ValueError,
        r"ZeroPad2d \(NHWC or unbatched HWC\): input must be 3-D or 4-D",
    ),
    "constant_pad_value_type": (lambda: layers.ConstantPad1d(1, "0"), TypeError, r"value must be a number"),
    "shuffle_channels": (
        lambda: F.pixel_shuffle(jnp.ones((1, 6, 2, 2)), 2),
        ValueError,
        r"the channel count 6 must be divisible by upscale_factor\*\*2 = 4",
    ),
    "shuffle_channels_last_channels": (
        lambda: layers.PixelShuffle(3)(jnp.ones((1, 2, 2, 8))),
        ValueError,
        r"the channel count 8 must be divisible by upscale_factor\*\*2 = 9",
    ),
    "unshuffle_size": (
        lambda: F.pixel_unshuffle(jnp.ones((1, 1, 4, 5)), 2),
        ValueError,
        r"the spatial size \(4, 5\) must be divisible by downscale_factor=2",
    ),
    "shuffle_rank": (lambda: F.pixel_shuffle(jnp.ones((4, 4)), 2), ValueError, r"input must be at least 3-D"),
    "shuffle_factor": (lambda: layers.PixelShuffle(0), ValueError, r"upscale_factor must be a positive integer"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_resample_and_pad_errors(case):
    make, exception, match = ERRORS[case]
    with pytest.raises(exception, match=match):
        make()


TORCH_REJECTS = {
    "interpolate_both": lambda: TF.interpolate(torch.ones(1, 2, 4, 4), size=3, scale_factor=2),
    "align_corners_with_nearest": lambda: TF.interpolate(torch.ones(1, 2, 4, 4), scale_factor=2, align_corners=True),
    "reflect_too_large": lambda: TF.pad(torch.ones(1, 2, 4), (4, 0), mode="reflect"),
    "circular_wraps_twice": lambda: TF.pad(torch.ones(1, 2, 4), (0, 5), mode="circular"),
    "shuffle_channels": lambda: TF.pixel_shuffle(torch.ones(1, 6, 2, 2), 2),
}


@pytest.mark.parametrize("case", list(TORCH_REJECTS))
def test_torch_rejects_the_same_inputs(case):
    with pytest.raises((ValueError, RuntimeError)):
        TORCH_REJECTS[case]()
