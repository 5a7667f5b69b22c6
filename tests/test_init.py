"""fnml.layers initialisation follows torch's distributions (Kolmogorov-Smirnov tests) and bounds.

Random streams differ between JAX and torch, so the draws are compared as distributions: a two-sample
KS test against torch's own draws for the same layer, a one-sample KS test against the exact
distribution, and the support bound checked exactly. Seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flax import nnx
from scipy import stats

from fnml import layers

# A p-value below this means the draws do not follow the distribution (deterministic seeds: no flakes).
P_MIN = 1e-3


def _torch_uniform_bound(weight: torch.Tensor) -> float:
    """torch's kaiming_uniform_(a=sqrt(5)) bound, computed as torch.nn.init does."""
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(weight)
    gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    return gain * math.sqrt(3.0 / fan_in)


UNIFORM_CASES = {
    # name: (fnml factory, torch factory, fan_in)
    "Linear(16,1024)": (
        lambda rngs: layers.Linear(16, 1024, rngs=rngs),
        lambda: torch.nn.Linear(16, 1024),
        16,
    ),
    "Conv2d(8,512,3)": (
        lambda rngs: layers.Conv2d(8, 512, 3, rngs=rngs),
        lambda: torch.nn.Conv2d(8, 512, 3),
        8 * 3 * 3,
    ),
    "Conv2d(8,512,(3,2),groups=4)": (
        lambda rngs: layers.Conv2d(8, 512, (3, 2), groups=4, rngs=rngs),
        lambda: torch.nn.Conv2d(8, 512, (3, 2), groups=4),
        2 * 3 * 2,
    ),
}


@pytest.mark.parametrize("case", list(UNIFORM_CASES), ids=list(UNIFORM_CASES))
@pytest.mark.parametrize("param", ["weight", "bias"])
def test_linear_and_conv_init_is_torch_uniform(case, param):
    make_fnml, make_torch, fan_in = UNIFORM_CASES[case]
    fnml_layer, torch_layer = make_fnml(nnx.Rngs(0)), make_torch()
    attr = "kernel" if param == "weight" else "bias"
    ours = np.asarray(getattr(fnml_layer, attr)[...]).ravel()
    theirs = getattr(torch_layer, param).detach().numpy().ravel()
    bound = 1.0 / math.sqrt(fan_in)
    # torch's own bound for this layer is 1/sqrt(fan_in), with the grouped-conv fan_in.
    assert _torch_uniform_bound(torch_layer.weight) == pytest.approx(bound, rel=1e-15)
    assert ours.size == theirs.size
    # Support: inside [-bound, bound], and the extremes reach close to it on both sides.
    assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
    assert ours.max() > 0.98 * bound and ours.min() < -0.98 * bound
    assert stats.kstest(ours, stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue > P_MIN
    assert stats.ks_2samp(ours, theirs).pvalue > P_MIN


def test_uniform_ks_test_can_fail():
    # The same check rejects flax's default (truncated lecun-normal kernel): the test has teeth.
    kernel = np.asarray(nnx.Linear(16, 1024, rngs=nnx.Rngs(0)).kernel[...]).ravel()
    theirs = torch.nn.Linear(16, 1024).weight.detach().numpy().ravel()
    assert stats.ks_2samp(kernel, theirs).pvalue < P_MIN


def test_embedding_init_is_standard_normal():
    fnml_layer = layers.Embedding(1000, 16, rngs=nnx.Rngs(0))
    torch_layer = torch.nn.Embedding(1000, 16)
    ours = np.asarray(fnml_layer.weight[...]).ravel()
    theirs = torch_layer.weight.detach().numpy().ravel()
    assert stats.kstest(ours, "norm").pvalue > P_MIN
    assert stats.ks_2samp(ours, theirs).pvalue > P_MIN
    # flax's nnx.Embed (std 1/sqrt(16)) is rejected by the same test.
    flax_draws = np.asarray(nnx.Embed(1000, 16, rngs=nnx.Rngs(0)).embedding[...]).ravel()
    assert stats.ks_2samp(flax_draws, theirs).pvalue < P_MIN


def test_embedding_padding_row_is_zero_like_torch():
    fnml_layer = layers.Embedding(20, 8, padding_idx=3, rngs=nnx.Rngs(0))
    torch_layer = torch.nn.Embedding(20, 8, padding_idx=3)
    np.testing.assert_array_equal(np.asarray(fnml_layer.weight[...])[3], torch_layer.weight.detach().numpy()[3])
    assert np.all(np.asarray(fnml_layer.weight[...])[3] == 0)
    assert np.all(np.asarray(fnml_layer.weight[...])[[0, 1, 2, 4]] != 0)


@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d"])
def test_batchnorm_init_matches_torch_exactly(name):
    fnml_layer, torch_layer = getattr(layers, name)(6), getattr(torch.nn, name)(6)
    for attr in ("weight", "bias", "running_mean", "running_var"):
        np.testing.assert_array_equal(
            np.asarray(getattr(fnml_layer, attr)[...]), getattr(torch_layer, attr).detach().numpy()
        )
    assert int(fnml_layer.num_batches_tracked[...]) == int(torch_layer.num_batches_tracked) == 0


def test_layernorm_init_matches_torch_exactly():
    fnml_layer, torch_layer = layers.LayerNorm((3, 4)), torch.nn.LayerNorm((3, 4))
    for attr in ("weight", "bias"):
        np.testing.assert_array_equal(
            np.asarray(getattr(fnml_layer, attr)[...]), getattr(torch_layer, attr).detach().numpy()
        )


@pytest.mark.parametrize("param_dtype", ["float32", "float64"])
def test_param_dtype_and_reproducibility(param_dtype):
    def build(seed):
        rngs = nnx.Rngs(seed)
        return layers.Sequential(
            layers.Conv2d(2, 3, 3, param_dtype=param_dtype, rngs=rngs),
            layers.BatchNorm2d(3, param_dtype=param_dtype),
            layers.Linear(3, 2, param_dtype=param_dtype, rngs=rngs),
            layers.Embedding(4, 2, param_dtype=param_dtype, rngs=rngs),
        )

    first, second, other = nnx.state(build(0)), nnx.state(build(0)), nnx.state(build(1))
    leaves = [leaf for leaf in nnx.to_flat_state(first)]
    for path, variable in leaves:
        if path[-1] != "num_batches_tracked":
            assert variable[...].dtype == np.dtype(param_dtype), path
    flat_first = [np.asarray(v[...]) for _, v in nnx.to_flat_state(first)]
    flat_second = [np.asarray(v[...]) for _, v in nnx.to_flat_state(second)]
    flat_other = [np.asarray(v[...]) for _, v in nnx.to_flat_state(other)]
    assert all(np.array_equal(a, b) for a, b in zip(flat_first, flat_second))  # same seed, same weights
    assert not np.array_equal(flat_first[0], flat_other[0])  # another seed, other weights


def test_torch_uniform_helper_is_symmetric():
    import jax

    draws = np.asarray(layers.torch_uniform(0.5)(jax.random.key(0), (20000,), np.float64))
    assert np.abs(draws).max() <= 0.5 and draws.min() < -0.49
    assert stats.kstest(draws, stats.uniform(loc=-0.5, scale=1.0).cdf).pvalue > P_MIN
