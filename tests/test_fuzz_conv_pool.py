"""Property-based parity of fnml.functional's convolutions, pools, pad and interpolate against real torch.

Each property draws a configuration (channels, groups, kernel, stride, padding, dilation, output_padding,
ceil_mode, modes, sizes, scale factors), a layout (torch's or channels-last), a dtype and a value regime
(normal, large, ties), and compares the output and the gradient of a random linear functional w.r.t. every
input with torch's. Tolerance: the conftest table, ``atol`` scaled by the largest magnitude compared.

Settings: ``tests/_hypothesis_profiles.py`` (derandomized, no deadline, bounded examples per property).
Each example compiles one jitted value-and-grad (cheaper than eager dispatch for shapes seen once).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as TF
from _hypothesis_profiles import examples
from helpers import tolerance
from hypothesis import assume, given
from hypothesis import strategies as st
from test_conv_family import parity, to_channels_first, to_channels_last

from fnml import functional as F

DTYPE = st.sampled_from(["float64", "float32"])
REGIME = st.sampled_from(["normal", "large", "ties"])
SEED = st.integers(0, 2**16)


def values(shape, regime: str, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape)
    if regime == "large":
        return x * 1e3
    if regime == "ties":
        return np.round(x)
    return x


def _check(fnml_fn, torch_fn, arrays, dtype, *, spatial, channels_last, layout_args=None):
    """parity(), with the fnml call moved through channels-last when drawn, atol scaled by the magnitude."""
    layout_args = layout_args or (lambda *a: a)

    def call(*args):
        if not channels_last:
            return fnml_fn(*args, channels_last=False)
        moved = layout_args(*args)
        return to_channels_first(fnml_fn(*moved, channels_last=True), spatial)

    with torch.no_grad():
        scale = max(1.0, float(np.max(np.abs(torch_fn(*[torch.tensor(a) for a in arrays]).numpy()))))
    parity(call, torch_fn, arrays, dtype, atol=tolerance(dtype)["atol"] * scale)


@examples(6)
@given(
    data=st.data(),
    spatial=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2]),
    channels_last=st.booleans(),
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
)
def test_conv_matches_torch(data, spatial, groups, channels_last, dtype, regime, seed):
    cin, cout = 2 * groups, data.draw(st.sampled_from([2, 4]))
    kernel = tuple(data.draw(st.integers(1, 3)) for _ in range(spatial))
    stride = tuple(data.draw(st.integers(1, 2)) for _ in range(spatial))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(spatial))
    padding = tuple(data.draw(st.integers(0, 2)) for _ in range(spatial))
    size = tuple(data.draw(st.sampled_from([5, 6])) for _ in range(spatial))
    x = values((2, cin, *size), regime, seed)
    w = values((cout, cin // groups, *kernel), "normal", seed + 1)
    b = values((cout,), "normal", seed + 2)
    op, torch_op = (F.conv1d, TF.conv1d) if spatial == 1 else (F.conv2d, TF.conv2d)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _check(
        lambda x, w, b, channels_last: op(x, w, b, **kwargs, channels_last=channels_last),
        lambda x, w, b: torch_op(x, w, b, **kwargs),
        [x, w, b],
        dtype,
        spatial=spatial,
        channels_last=channels_last,
        # (N, C, *S) -> (N, *S, C); (O, I, *k) -> (*k, I, O)
        layout_args=lambda x, w, b: (to_channels_last(x, spatial), np.moveaxis(w, (0, 1), (-1, -2)), b),
    )


@examples(6)
@given(
    data=st.data(),
    spatial=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2]),
    channels_last=st.booleans(),
    dtype=DTYPE,
    seed=SEED,
)
def test_conv_transpose_matches_torch(data, spatial, groups, channels_last, dtype, seed):
    cin, cout = 2 * groups, data.draw(st.sampled_from([2, 4]))
    kernel = tuple(data.draw(st.integers(1, 3)) for _ in range(spatial))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(spatial))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(spatial))
    padding = tuple(data.draw(st.integers(0, 2)) for _ in range(spatial))
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = tuple(data.draw(st.sampled_from([3, 4])) for _ in range(spatial))
    out = [
        (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        for n, s, p, d, k, op in zip(size, stride, padding, dilation, kernel, output_padding)
    ]
    assume(min(out) >= 1)
    x = values((2, cin, *size), "normal", seed)
    w = values((cin, cout // groups, *kernel), "normal", seed + 1)
    b = values((cout,), "normal", seed + 2)
    op, torch_op = (
        (F.conv_transpose1d, TF.conv_transpose1d) if spatial == 1 else (F.conv_transpose2d, TF.conv_transpose2d)
    )
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    _check(
        lambda x, w, b, channels_last: op(x, w, b, **kwargs, channels_last=channels_last),
        lambda x, w, b: torch_op(x, w, b, **kwargs),
        [x, w, b],
        dtype,
        spatial=spatial,
        channels_last=channels_last,
        # (I, O/g, *k) -> (*k, I, O/g)
        layout_args=lambda x, w, b: (to_channels_last(x, spatial), np.moveaxis(w, (0, 1), (-2, -1)), b),
    )


@examples(8)
@given(
    data=st.data(),
    spatial=st.sampled_from([1, 2]),
    kind=st.sampled_from(["max", "avg"]),
    channels_last=st.booleans(),
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
)
def test_pools_match_torch(data, spatial, kind, channels_last, dtype, regime, seed):
    kernel = tuple(data.draw(st.integers(1, 3)) for _ in range(spatial))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(spatial))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(spatial)) if kind == "max" else (1,) * spatial
    padding = tuple(data.draw(st.integers(0, k // 2)) for k in kernel)  # torch: at most half the kernel
    ceil_mode = data.draw(st.booleans())
    size = tuple(data.draw(st.sampled_from([5, 6, 7])) for _ in range(spatial))
    x = values((2, 3, *size), regime, seed)
    if kind == "max":
        op = F.max_pool1d if spatial == 1 else F.max_pool2d
        torch_op = TF.max_pool1d if spatial == 1 else TF.max_pool2d
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    else:
        op = F.avg_pool1d if spatial == 1 else F.avg_pool2d
        torch_op = TF.avg_pool1d if spatial == 1 else TF.avg_pool2d
        kwargs = dict(stride=stride, padding=padding, ceil_mode=ceil_mode, count_include_pad=data.draw(st.booleans()))
    _check(
        lambda x, channels_last: op(x, kernel, **kwargs, channels_last=channels_last),
        lambda x: torch_op(x, kernel, **kwargs),
        [x],
        dtype,
        spatial=spatial,
        channels_last=channels_last,
        layout_args=lambda x: (to_channels_last(x, spatial),),
    )


@examples(6)
@given(
    data=st.data(),
    spatial=st.sampled_from([1, 2]),
    kind=st.sampled_from(["max", "avg"]),
    channels_last=st.booleans(),
    dtype=DTYPE,
    seed=SEED,
)
def test_adaptive_pools_match_torch(data, spatial, kind, channels_last, dtype, seed):
    size = tuple(data.draw(st.sampled_from([3, 5, 7])) for _ in range(spatial))
    output = tuple(data.draw(st.integers(1, 8)) for _ in range(spatial))
    x = values((2, 2, *size), "ties" if kind == "max" else "normal", seed)
    name = f"adaptive_{kind}_pool{spatial}d"
    op, torch_op = getattr(F, name), getattr(TF, name)
    _check(
        lambda x, channels_last: op(x, output, channels_last=channels_last),
        lambda x: torch_op(x, output),
        [x],
        dtype,
        spatial=spatial,
        channels_last=channels_last,
        layout_args=lambda x: (to_channels_last(x, spatial),),
    )


@examples(10)
@given(
    data=st.data(),
    mode=st.sampled_from(["nearest", "nearest-exact", "bilinear", "bicubic", "linear", "area"]),
    channels_last=st.booleans(),
    dtype=DTYPE,
    seed=SEED,
)
def test_interpolate_matches_torch(data, mode, channels_last, dtype, seed):
    spatial = 1 if mode == "linear" else data.draw(st.sampled_from([1, 2])) if mode in ("nearest", "area") else 2
    size = tuple(data.draw(st.integers(2, 7)) for _ in range(spatial))
    if data.draw(st.booleans()):
        kwargs = dict(size=tuple(data.draw(st.integers(1, 12)) for _ in range(spatial)))
    else:
        factors = tuple(data.draw(st.sampled_from([0.5, 0.75, 1.0, 1.3, 1.5, 2.0, 2.7, 3.0])) for _ in range(spatial))
        assume(all(math.floor(n * f) >= 1 for n, f in zip(size, factors)))
        kwargs = dict(scale_factor=factors, recompute_scale_factor=data.draw(st.sampled_from([None, True])))
    if mode in ("linear", "bilinear", "bicubic"):
        kwargs["align_corners"] = data.draw(st.booleans())
    x = values((2, 2, *size), "normal", seed)
    _check(
        lambda x, channels_last: F.interpolate(x, **kwargs, mode=mode, channels_last=channels_last),
        lambda x: TF.interpolate(x, **kwargs, mode=mode),
        [x],
        dtype,
        spatial=spatial,
        channels_last=channels_last,
        layout_args=lambda x: (to_channels_last(x, spatial),),
    )


@examples(8)
@given(
    data=st.data(),
    mode=st.sampled_from(["constant", "reflect", "replicate", "circular"]),
    spatial=st.sampled_from([1, 2]),
    channels_last=st.booleans(),
    seed=SEED,
)
def test_pad_matches_torch(data, mode, spatial, channels_last, seed):
    size = tuple(data.draw(st.integers(2, 5)) for _ in range(spatial))
    pads = []
    for n in reversed(size):  # torch's order: last dimension first
        high = {"constant": 4, "reflect": n - 1, "replicate": 4, "circular": n}[mode]
        # circular: torch wraps the cropped signal, which is undefined when a pad exceeds it; draw >= 0 there.
        pads += [data.draw(st.integers(0 if mode == "circular" else -1, high)) for _ in range(2)]
    assume(all(n + pads[2 * i] + pads[2 * i + 1] >= 1 for i, n in enumerate(reversed(size))))
    x = values((2, 2, *size), "normal", seed)
    _check(
        lambda x, channels_last: F.pad(x, tuple(pads), mode, channels_last=channels_last),
        lambda x: TF.pad(x, tuple(pads), mode),
        [x],
        "float64",
        spatial=spatial,
        channels_last=channels_last,
        layout_args=lambda x: (to_channels_last(x, spatial),),
    )
