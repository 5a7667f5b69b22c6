"""bfloat16 / float16 softmax, log_softmax and attention against torch's CPU kernels, bit for bit where measured.

torch's CPU softmax of a half-precision tensor sums in float32 and rounds once; its last-axis log_softmax also
stores the sum and its log in the input's dtype; its flash-attention kernel multiplies the float32 exponentials,
rounded to the input's dtype, with ``value`` and divides by the float32 row sum. fnml does the same, so
``MultiheadAttention`` under ``autocast="bfloat16"`` gives torch's autocast output exactly. float32 / float64
are computed as before (their parity tests are in test_activations.py and test_attention.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from fnml import _step, interop, layers
from fnml import functional as F

HALF = {"bfloat16": (torch.bfloat16, jnp.bfloat16), "float16": (torch.float16, jnp.float16)}
OPS = {
    "softmax": (torch.nn.functional.softmax, F.softmax),
    "log_softmax": (torch.nn.functional.log_softmax, F.log_softmax),
}


def _inputs(shape, dtype_name, seed=0):
    torch_dtype, jax_dtype = HALF[dtype_name]
    x = (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 4).to(torch_dtype)
    return x, jnp.asarray(x.float().numpy()).astype(jax_dtype)


def _as_float(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().float().numpy()
    return np.asarray(jnp.asarray(array).astype(jnp.float32))


def _assert_torchs(ours: np.ndarray, expected: np.ndarray, dtype_name: str) -> None:
    """bfloat16: bit for bit. float16 keeps 3 more bits, where torch's vectorised float32 exp/log and XLA's can
    part: measured at most 1 element in 1000 one float16 step apart."""
    if dtype_name == "bfloat16":
        np.testing.assert_array_equal(ours, expected)
        return
    assert (ours != expected).mean() <= 1e-3
    np.testing.assert_allclose(ours, expected, rtol=2**-10, atol=2**-24)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("dtype_name", sorted(HALF))
@pytest.mark.parametrize("shape", [(64, 37), (16, 1000), (3, 50, 7)], ids=str)
def test_half_softmax_along_the_last_axis_is_torchs_bit_for_bit(op, dtype_name, shape):
    torch_op, fnml_op = OPS[op]
    x_torch, x = _inputs(shape, dtype_name)
    expected = _as_float(torch_op(x_torch, dim=-1))
    ours = fnml_op(x, dim=-1)
    assert ours.dtype == x.dtype
    _assert_torchs(_as_float(ours), expected, dtype_name)
    # Under jit too: the roundings torch's kernel makes are kept (XLA may drop a convert pair, not these).
    _assert_torchs(_as_float(jax.jit(lambda v: fnml_op(v, dim=-1))(x)), expected, dtype_name)


@pytest.mark.parametrize("dtype_name", sorted(HALF))
@pytest.mark.parametrize(("shape", "dim"), [((64, 37), 0), ((3, 50, 7), 0), ((3, 50, 7), 1)], ids=str)
def test_half_log_softmax_along_other_axes_rounds_once_as_torch(dtype_name, shape, dim):
    x_torch, x = _inputs(shape, dtype_name)
    expected = _as_float(torch.nn.functional.log_softmax(x_torch, dim=dim))
    _assert_torchs(_as_float(F.log_softmax(x, dim=dim)), expected, dtype_name)


@pytest.mark.parametrize("dtype_name", sorted(HALF))
def test_half_softmax_along_other_axes_is_within_one_step_of_torch(dtype_name):
    # torch's kernel for a non-last axis rounds differently (measured: 0.3% to 23% of the elements one step
    # apart, depending on the shape); fnml computes in float32 and rounds once.
    x_torch, x = _inputs((3, 50, 7), dtype_name)
    expected = _as_float(torch.nn.functional.softmax(x_torch, dim=1))
    step = float(jnp.finfo(x.dtype).eps)  # one step at 1 (probabilities are <= 1)
    np.testing.assert_allclose(_as_float(F.softmax(x, dim=1)), expected, rtol=step, atol=step / 2)


@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
def test_half_softmax_layers_use_the_same_core(name):
    x_torch, x = _inputs((8, 33), "bfloat16")
    expected = _as_float(getattr(torch.nn, name)(dim=-1)(x_torch))
    np.testing.assert_array_equal(_as_float(getattr(layers, name)(dim=-1)(x)), expected)


def test_float32_softmax_is_unchanged():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 37)).astype(np.float32)) * 4
    np.testing.assert_array_equal(F.softmax(x, dim=-1), jax.nn.softmax(x, axis=-1))
    np.testing.assert_array_equal(F.log_softmax(x, dim=0), jax.nn.log_softmax(x, axis=0))


@pytest.mark.parametrize("mask", [None, "bool", "causal", "float"])
def test_bfloat16_scaled_dot_product_attention_is_close_to_torchs_flash_kernel(mask):
    # Measured against torch's default CPU kernel (flash attention): 3% to 5% of the elements one bfloat16 step
    # apart (every jax intermediate rounded: about 60%); its exponential is not XLA's, bit for bit.
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 16, generator=generator).bfloat16() for n in (7, 9, 9))
    torch_kw, fnml_kw = {}, {}
    if mask == "bool":
        keep = torch.rand(7, 9, generator=generator) > 0.3
        keep[:, 0] = True
        torch_kw["attn_mask"], fnml_kw["attn_mask"] = keep, jnp.asarray(keep.numpy())
    elif mask == "causal":
        torch_kw["is_causal"] = fnml_kw["is_causal"] = True
    elif mask == "float":
        bias = torch.randn(7, 9, generator=generator).bfloat16()
        torch_kw["attn_mask"], fnml_kw["attn_mask"] = bias, jnp.asarray(bias.float().numpy()).astype(jnp.bfloat16)
    expected = _as_float(torch.nn.functional.scaled_dot_product_attention(q, k, v, **torch_kw))
    as_jax = [jnp.asarray(t.float().numpy()).astype(jnp.bfloat16) for t in (q, k, v)]
    ours = _as_float(F.scaled_dot_product_attention(*as_jax, **fnml_kw))
    apart = ours != expected
    assert apart.mean() <= 0.08, apart.mean()
    np.testing.assert_allclose(ours, expected, rtol=2**-7, atol=2**-8)


class _TorchAttention(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(16, 4, batch_first=True, **kwargs)


class _Attention(layers.Module):
    def __init__(self, *, rngs, **kwargs):
        self.attn = layers.MultiheadAttention(16, 4, batch_first=True, rngs=rngs, **kwargs)


CALLS = {
    "weights": ({}, {}),
    "sdpa": ({}, {"need_weights": False}),
    "bias_kv": ({"add_bias_kv": True}, {}),
    "causal": ({}, {"causal": True}),
    "causal-sdpa": ({}, {"causal": True, "need_weights": False}),
    "padding": ({}, {"padding": True}),
}


@pytest.mark.parametrize("case", sorted(CALLS))
def test_multihead_attention_under_autocast_is_torchs_bit_for_bit(case):
    build, options = CALLS[case]
    torch.manual_seed(0)
    torch_model = _TorchAttention(**build).eval()
    model = interop.load_state_dict(_Attention(rngs=nnx.Rngs(0), **build), torch_model.state_dict()).eval()
    _step.apply_autocast(model, jnp.bfloat16)  # what the autocast="bfloat16" step does to its copy
    X = torch.randn(8, 5, 16)
    torch_kw = {"need_weights": options.get("need_weights", True)}
    if options.get("causal"):
        mask = torch.nn.Transformer.generate_square_subsequent_mask(5)
        torch_kw.update(attn_mask=mask, is_causal=True)
    if options.get("padding"):
        padding = torch.zeros(8, 5, dtype=torch.bool)
        padding[:, -2:] = True
        torch_kw["key_padding_mask"] = padding
    fnml_kw = {
        name: jnp.asarray(value.numpy()) if torch.is_tensor(value) else value for name, value in torch_kw.items()
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch_model.attn(X, X, X, **torch_kw)
    x = jnp.asarray(X.numpy())
    for run in (lambda m: m.attn(x, x, x, **fnml_kw), nnx.jit(lambda m: m.attn(x, x, x, **fnml_kw))):
        output, weights = run(model)
        assert output.dtype == jnp.bfloat16
        np.testing.assert_array_equal(_as_float(output), _as_float(expected[0]))
        if expected[1] is not None:
            np.testing.assert_array_equal(_as_float(weights), _as_float(expected[1]))
