"""Pools against real torch: functional max/avg/adaptive pools 1d/2d (torch layout and channels-last, values,
gradients, return_indices) and the MaxPool1d / AvgPool1d / AdaptiveAvgPool1d / AdaptiveMaxPool1d/2d layers
(forward, input gradient, print text), with their errors."""

from __future__ import annotations

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


def _data(shape, seed=0, *, ties=False):
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.round(x) if ties else x  # few distinct values: ties inside windows (first-maximum gradient)


def _pool_call(op, spatial, channels_last, args, kwargs):
    def call(x):
        if not channels_last:
            return op(x, *args, **kwargs)
        return to_channels_first(op(to_channels_last(x, spatial), *args, **kwargs, channels_last=True), spatial)

    return call


# name: (fnml op, torch op, torch-layout input shape, positional args, kwargs, ties)
POOL_CASES = {
    "max2d_k2_tiling_odd": (F.max_pool2d, TF.max_pool2d, (2, 3, 5, 7), (2,), {}, True),
    "max2d_k3_s2_p1_ceil": (F.max_pool2d, TF.max_pool2d, (2, 2, 7, 6), (3, 2, 1), dict(ceil_mode=True), True),
    "max2d_k(2,3)_s(1,2)_dil2": (F.max_pool2d, TF.max_pool2d, (1, 2, 7, 8), ((2, 3), (1, 2)), dict(dilation=2), False),
    "max2d_unbatched": (F.max_pool2d, TF.max_pool2d, (3, 5, 5), (2, 1), {}, True),
    "max1d_k3_s2_p1_ceil": (F.max_pool1d, TF.max_pool1d, (2, 3, 10), (3, 2, 1), dict(ceil_mode=True), True),
    "max1d_k2_dil3": (F.max_pool1d, TF.max_pool1d, (2, 2, 9), (2,), dict(dilation=3, stride=1), False),
    "avg2d_k3_s2_p1_ceil_exclude_pad": (
        F.avg_pool2d,
        TF.avg_pool2d,
        (2, 2, 7, 6),
        (3, 2, 1),
        dict(ceil_mode=True, count_include_pad=False),
        False,
    ),
    "avg2d_ceil_include_pad": (F.avg_pool2d, TF.avg_pool2d, (1, 2, 6, 7), (3, 2, 1), dict(ceil_mode=True), False),
    "avg2d_divisor_override": (F.avg_pool2d, TF.avg_pool2d, (1, 2, 5, 5), (2, 1), dict(divisor_override=3), False),
    "avg2d_k2_tiling": (F.avg_pool2d, TF.avg_pool2d, (2, 3, 4, 5), (2,), {}, False),
    "avg1d_k3_s2_p1_ceil_exclude_pad": (
        F.avg_pool1d,
        TF.avg_pool1d,
        (2, 3, 10),
        (3, 2, 1),
        dict(ceil_mode=True, count_include_pad=False),
        False,
    ),
    "avg1d_unbatched": (F.avg_pool1d, TF.avg_pool1d, (3, 9), (2,), {}, False),
    "adaptive_avg2d_(3,None)": (F.adaptive_avg_pool2d, TF.adaptive_avg_pool2d, (2, 2, 7, 5), ((3, None),), {}, False),
    "adaptive_avg2d_larger_than_input": (
        F.adaptive_avg_pool2d,
        TF.adaptive_avg_pool2d,
        (1, 2, 3, 4),
        ((5, 6),),
        {},
        False,
    ),
    "adaptive_avg2d_global": (F.adaptive_avg_pool2d, TF.adaptive_avg_pool2d, (2, 3, 4, 5), (1,), {}, False),
    "adaptive_avg1d_4": (F.adaptive_avg_pool1d, TF.adaptive_avg_pool1d, (2, 3, 10), (4,), {}, False),
    "adaptive_max2d_(2,3)": (F.adaptive_max_pool2d, TF.adaptive_max_pool2d, (2, 2, 7, 5), ((2, 3),), {}, True),
    "adaptive_max2d_larger_than_input": (F.adaptive_max_pool2d, TF.adaptive_max_pool2d, (1, 2, 3, 3), (5,), {}, True),
    "adaptive_max1d_3_unbatched": (F.adaptive_max_pool1d, TF.adaptive_max_pool1d, (3, 8), (3,), {}, True),
}


@VARIANTS
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_functional_pools_match_torch(case, dtype, channels_last):
    op, torch_op, shape, args, kwargs, ties = POOL_CASES[case]
    spatial = 1 if "1d" in case else 2
    parity(
        _pool_call(op, spatial, channels_last, args, kwargs),
        lambda t: torch_op(t, *args, **kwargs),
        [_data(shape, ties=ties)],
        dtype,
    )


INDEX_CASES = {
    "max2d_k3_s2_p1_ceil": (F.max_pool2d, TF.max_pool2d, (2, 2, 7, 6), (3, 2, 1), dict(ceil_mode=True)),
    "max2d_dil2": (F.max_pool2d, TF.max_pool2d, (1, 2, 7, 8), ((2, 3), (1, 2)), dict(dilation=2)),
    "max1d_p1": (F.max_pool1d, TF.max_pool1d, (2, 3, 10), (3, 2, 1), {}),
    "adaptive_max2d": (F.adaptive_max_pool2d, TF.adaptive_max_pool2d, (2, 2, 7, 5), ((2, 3),), {}),
    "adaptive_max1d": (F.adaptive_max_pool1d, TF.adaptive_max_pool1d, (2, 3, 8), (5,), {}),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["torch_layout", "channels_last"])
@pytest.mark.parametrize("case", list(INDEX_CASES))
def test_return_indices_match_torch(case, channels_last):
    op, torch_op, shape, args, kwargs = INDEX_CASES[case]
    spatial = 1 if "1d" in case else 2
    x = _data(shape, ties=True)  # ties: the index of the FIRST maximum, as torch
    values_torch, index_torch = torch_op(torch.tensor(x), *args, **kwargs, return_indices=True)
    if channels_last:
        values, index = op(
            to_channels_last(jnp.asarray(x), spatial), *args, **kwargs, return_indices=True, channels_last=True
        )
        values, index = to_channels_first(values, spatial), to_channels_first(index, spatial)
    else:
        values, index = op(jnp.asarray(x), *args, **kwargs, return_indices=True)
    np.testing.assert_array_equal(np.asarray(index), index_torch.numpy())
    np.testing.assert_array_equal(np.asarray(values), values_torch.numpy())
    assert index.dtype == jnp.int64


POOL_LAYER_CASES = {
    # name: (fnml layer, torch layer, torch-layout input shape, ties)
    "MaxPool1d_k3_s2_p1_ceil": (
        layers.MaxPool1d(3, 2, 1, ceil_mode=True),
        torch.nn.MaxPool1d(3, 2, 1, ceil_mode=True),
        (2, 3, 10),
        True,
    ),
    "MaxPool1d_unbatched": (layers.MaxPool1d(2), torch.nn.MaxPool1d(2), (3, 9), True),
    "AvgPool1d_exclude_pad": (
        layers.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        torch.nn.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        (2, 3, 10),
        False,
    ),
    "AdaptiveAvgPool1d": (layers.AdaptiveAvgPool1d(4), torch.nn.AdaptiveAvgPool1d(4), (2, 3, 10), False),
    "AdaptiveMaxPool1d": (layers.AdaptiveMaxPool1d(3), torch.nn.AdaptiveMaxPool1d(3), (2, 3, 8), True),
    "AdaptiveMaxPool2d_(2,None)": (
        layers.AdaptiveMaxPool2d((2, None)),
        torch.nn.AdaptiveMaxPool2d((2, None)),
        (2, 2, 7, 5),
        True,
    ),
    "MaxPool2d_dil2_ceil": (
        layers.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
        torch.nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
        (1, 2, 9, 8),
        True,
    ),
    "AvgPool2d_divisor_override": (
        layers.AvgPool2d(3, 2, 1, divisor_override=4),
        torch.nn.AvgPool2d(3, 2, 1, divisor_override=4),
        (1, 2, 7, 7),
        False,
    ),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(POOL_LAYER_CASES))
def test_pool_layers_match_torch(case, dtype):
    fnml_layer, torch_layer, shape, ties = POOL_LAYER_CASES[case]
    spatial = len(shape) - 2 if "1d" not in case else 1
    layer_parity(fnml_layer, torch_layer, _data(shape, ties=ties), dtype, spatial, {})


def test_pool_layers_return_indices():
    x = _data((2, 3, 10), ties=True)
    values, index = layers.MaxPool1d(3, 2, 1, return_indices=True)(to_channels_last(jnp.asarray(x), 1))
    values_torch, index_torch = torch.nn.MaxPool1d(3, 2, 1, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(np.asarray(to_channels_first(index, 1)), index_torch.numpy())
    x2 = _data((1, 2, 5, 7), ties=True)
    _, index = layers.AdaptiveMaxPool2d(3, return_indices=True)(to_channels_last(jnp.asarray(x2), 2))
    _, index_torch = torch.nn.AdaptiveMaxPool2d(3, return_indices=True)(torch.tensor(x2))
    np.testing.assert_array_equal(np.asarray(to_channels_first(index, 2)), index_torch.numpy())


PRINT_CASES = {
    "MaxPool1d": (layers.MaxPool1d(3), torch.nn.MaxPool1d(3)),
    "MaxPool1d_all": (layers.MaxPool1d(3, 2, 1, 2, True, True), torch.nn.MaxPool1d(3, 2, 1, 2, True, True)),
    "AvgPool1d": (layers.AvgPool1d(3), torch.nn.AvgPool1d(3)),
    "AvgPool1d_all": (layers.AvgPool1d(3, 2, 1, True, False), torch.nn.AvgPool1d(3, 2, 1, True, False)),
    "MaxPool2d_positional_torch_order": (
        layers.MaxPool2d(3, 2, 1, 1, False, True),
        torch.nn.MaxPool2d(3, 2, 1, 1, False, True),
    ),
    "AvgPool2d_all": (layers.AvgPool2d(3, 2, 1, True, False, 2), torch.nn.AvgPool2d(3, 2, 1, True, False, 2)),
    "AdaptiveAvgPool1d": (layers.AdaptiveAvgPool1d(3), torch.nn.AdaptiveAvgPool1d(3)),
    "AdaptiveMaxPool1d": (layers.AdaptiveMaxPool1d(3, True), torch.nn.AdaptiveMaxPool1d(3, True)),
    "AdaptiveMaxPool2d": (layers.AdaptiveMaxPool2d((2, None)), torch.nn.AdaptiveMaxPool2d((2, None))),
}


@pytest.mark.parametrize("case", list(PRINT_CASES))
def test_pool_print_matches_torch(case):
    fnml_layer, torch_layer = PRINT_CASES[case]
    assert str(fnml_layer) == repr(torch_layer)


ERRORS = {
    "kernel_zero": (
        lambda: F.max_pool1d(jnp.ones((1, 2, 5)), 0),
        ValueError,
        r"max_pool1d: kernel_size must be positive",
    ),
    "stride_zero": (lambda: layers.AvgPool1d(2, stride=0), ValueError, r"AvgPool1d: stride must be positive"),
    "padding_negative": (
        lambda: F.avg_pool2d(jnp.ones((1, 2, 5, 5)), 3, padding=-1),
        ValueError,
        r"padding must be >= 0",
    ),
    "padding_over_half": (
        lambda: layers.MaxPool1d(2, padding=2),
        ValueError,
        r"MaxPool1d: padding should be at most half of the effective kernel size and of the kernel size, got padding=2",
    ),
    "padding_over_half_despite_dilation": (
        lambda: F.max_pool2d(jnp.ones((1, 1, 9, 9)), 3, padding=2, dilation=2),
        ValueError,
        r"max_pool2d: padding should be at most half of the effective kernel size and of the kernel size",
    ),
    "avg_padding_over_half": (
        lambda: F.avg_pool1d(jnp.ones((1, 2, 5)), 3, padding=2),
        ValueError,
        r"avg_pool1d: padding should be at most half of the kernel size",
    ),
    "too_small": (
        lambda: F.max_pool2d(jnp.ones((1, 2, 2, 2)), 3),
        ValueError,
        r"max_pool2d: input of shape \(1, 2, 2, 2\) \(NCHW\) is too small for kernel_size=3",
    ),
    "layer_too_small_1d": (
        lambda: layers.AvgPool1d(4)(jnp.ones((1, 3, 2))),
        ValueError,
        r"AvgPool1d: input of shape \(1, 3, 2\) \(NLC\) is too small for kernel_size=\(4,\), stride=\(4,\)",
    ),
    "rank": (
        lambda: F.max_pool1d(jnp.ones((1, 2, 5, 5)), 2),
        ValueError,
        r"max_pool1d \(NCL or unbatched CL\): input must be 2-D or 3-D",
    ),
    "layer_rank": (
        lambda: layers.AdaptiveMaxPool1d(2)(jnp.ones(5)),
        ValueError,
        r"AdaptiveMaxPool1d \(NLC or unbatched LC\): input must be 2-D or 3-D",
    ),
    "kernel_tuple_length": (
        lambda: layers.MaxPool1d((2, 2)),
        ValueError,
        r"kernel_size must be an int or a tuple of 1 ints",
    ),
    "ceil_mode_type": (lambda: layers.MaxPool1d(2, ceil_mode=1), TypeError, r"ceil_mode must be a bool"),
    "return_indices_type": (
        lambda: layers.AdaptiveMaxPool2d(2, return_indices="yes"),
        TypeError,
        r"return_indices must be a bool",
    ),
    "divisor_override_zero": (
        lambda: F.avg_pool2d(jnp.ones((1, 1, 4, 4)), 2, divisor_override=0),
        ValueError,
        r"divisor_override must be a positive integer",
    ),
    "adaptive_zero": (
        lambda: layers.AdaptiveMaxPool1d(0),
        ValueError,
        r"output_size must be a positive int or a tuple of 1 positive ints \(or None\), got output_size=0",
    ),
    "adaptive_tuple_length": (
        lambda: F.adaptive_max_pool2d(jnp.ones((1, 1, 4, 4)), (1, 2, 3)),
        ValueError,
        r"output_size must be a positive int or a tuple of 2 positive ints \(or None\)",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_pool_errors(case):
    make, exception, match = ERRORS[case]
    with pytest.raises(exception, match=match):
        make()


def test_adaptive_output_larger_than_input_is_allowed_as_in_torch():
    x = _data((1, 1, 2, 2))
    np.testing.assert_allclose(
        np.asarray(F.adaptive_max_pool2d(jnp.asarray(x), 4)), TF.adaptive_max_pool2d(torch.tensor(x), 4).numpy()
    )


def test_torch_also_limits_padding_by_the_kernel_not_the_dilated_window():
    with pytest.raises(RuntimeError, match="pad should be smaller than or equal to half of kernel size"):
        TF.max_pool2d(torch.ones(1, 1, 9, 9), 3, padding=2, dilation=2)
