"""Explicit dtype casts in a captured forward keep torch's dtype at every step, in float64, float32 and
bfloat16 models alike: one small module per cast form, its output's dtype and values against torch's.

The forms real models use: ``.to(torch.float32)`` and back (T5 / Llama RMSNorm), ``.float()`` /
``.double()`` / ``.half()``-style methods, ``.type_as(other)``, ``.to(other)`` (a tensor's dtype),
``.to(x.dtype)``, ``dtype=`` of factories (``zeros``, ``arange``, ``full``) and of reductions
(``sum``/``mean``/``softmax`` with ``dtype=``), and an integer mask cast to the input's dtype.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import tolerance

from fnml import interop


class Island(torch.nn.Module):
    """T5's RMSNorm: the variance in float32 whatever the model's dtype, the result back in the input's."""

    def forward(self, x):
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return (x * torch.rsqrt(variance + 1e-6)).to(x.dtype)


class Methods(torch.nn.Module):
    def forward(self, x):
        return x.float() * 2, x.double() + 1, (x.float() + 1).to(x.dtype)


class TypeAs(torch.nn.Module):
    def forward(self, x, ids):
        mask = (ids > 2).type_as(x)  # an integer/bool mask in the input's dtype
        return x * mask[..., None], ids.to(x) + x.sum(-1)  # .to(tensor): that tensor's dtype (and device)


class Factories(torch.nn.Module):
    def forward(self, x):
        positions = torch.arange(x.size(1), dtype=torch.float32)
        zeros = torch.zeros(x.shape, dtype=x.dtype)
        full = torch.full((x.size(0), 1), 0.5, dtype=torch.float64)
        return x + positions.to(x.dtype)[:, None], zeros, full


class Reductions(torch.nn.Module):
    def forward(self, x):
        return (
            x.sum(-1, dtype=torch.float64),
            torch.softmax(x, -1, dtype=torch.float32),
            x.to(torch.int64).sum(-1),
            torch.mean(x, -1, dtype=torch.float32),
        )


MODULES = {
    "island": (Island, False),
    "methods": (Methods, False),
    "type_as": (TypeAs, True),
    "factories": (Factories, False),
    "reductions": (Reductions, False),
}
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


def _inputs(with_ids: bool, dtype: torch.dtype, batch: int) -> tuple:
    generator = torch.Generator().manual_seed(batch)
    x = (torch.randn(batch, 5, 6, generator=generator, dtype=torch.float64) * 3).to(dtype)
    if not with_ids:
        return (x,)
    return x, torch.randint(0, 6, (batch, 5), generator=generator)


PRECISION = ["bfloat16", "float32", "float64"]  # narrowest first


def _close(form: str, dtype: str, out_dtype: torch.dtype) -> dict:
    """The tolerance of the narrowest floating dtype the value went through: the model's, the output's, and
    float32 for the forms that compute in float32 (two float32 kernels round differently: the islands rule).
    Integer outputs are exact."""
    if not out_dtype.is_floating_point:
        return {"atol": 0.0, "rtol": 0.0}
    through = {dtype, str(out_dtype).removeprefix("torch.")}
    if form != "type_as":
        through.add("float32")
    return tolerance(min(through, key=PRECISION.index))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("form", list(MODULES))
def test_a_cast_keeps_torchs_dtype_at_every_step(form, dtype):
    module_class, with_ids = MODULES[form]
    model = module_class()
    twin = interop.from_torch(model, *_inputs(with_ids, DTYPES[dtype], 2))
    inputs = _inputs(with_ids, DTYPES[dtype], 3)  # another batch size than the capture's
    expected = model(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    out = twin(*inputs)
    out = out if isinstance(out, tuple) else (out,)
    assert len(out) == len(expected)
    for index, (actual, reference) in enumerate(zip(out, expected)):
        reference_dtype = str(reference.dtype).removeprefix("torch.")
        assert str(actual.dtype) == reference_dtype, f"{form}[{index}] in a {dtype} model"
        tol = _close(form, dtype, reference.dtype)
        np.testing.assert_allclose(
            np.asarray(jnp.asarray(actual, jnp.float64)),
            reference.to(torch.float64).numpy(),
            **tol,
            err_msg=f"{form}[{index}] in a {dtype} model",
        )
