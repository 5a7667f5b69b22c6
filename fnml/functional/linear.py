"""Linear map with torch's ``(out_features, in_features)`` weight.

PyTorch equivalent: ``torch.nn.functional.linear``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from fnml._validation import (
    check_ndim,
)
from fnml.functional._shared import accumulation_dtype, as_float_array

__all__ = ["linear"]


def linear(input: Any, weight: Any, bias: Any = None) -> jax.Array:
    """Affine map ``y = input @ weight.T + bias`` with torch's ``(out_features, in_features)`` weight.

    PyTorch equivalent: ``torch.nn.functional.linear(input, weight, bias=None)``.

    Shapes: ``input: (*, in_features)``, ``weight: (out_features, in_features)`` (torch's layout; the
    :class:`fnml.layers.Linear` layer stores ``kernel = weight.T`` and passes ``kernel.T`` here, which XLA
    folds into the contraction), ``bias: (out_features,)`` or None -> ``(*, out_features)``. Mixed dtypes
    are promoted (torch requires equal dtypes).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.linear(jnp.ones((2, 3)), jnp.ones((4, 3)), jnp.arange(4.0)).tolist()
    [[3.0, 4.0, 5.0, 6.0], [3.0, 4.0, 5.0, 6.0]]
    """
    where = "linear"
    x = as_float_array("input", input, where)
    w = as_float_array("weight", weight, where)
    check_ndim("weight", w.shape, (2,), where=where)
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"{where}: input of shape {x.shape} does not match weight of shape {w.shape} "
            f"(expected input (*, {w.shape[1]}) for weight (out_features, in_features))"
        )
    b = None
    if bias is not None:
        b = as_float_array("bias", bias, where)
        if b.shape != (w.shape[0],):
            raise ValueError(f"{where}: bias must have shape ({w.shape[0]},) for weight {w.shape}, got {b.shape}")
    dtype = jnp.result_type(x, w, *(() if b is None else (b,)))
    return linear_unchecked(x.astype(dtype), w.astype(dtype), None if b is None else b.astype(dtype))


def linear_unchecked(
    x: jax.Array, weight: jax.Array, bias: jax.Array | None, *, precision: lax.PrecisionLike = None
) -> jax.Array:
    """:func:`linear` on arrays already checked and of one floating dtype (the layers' entry: they check once)."""
    dtype = x.dtype
    accumulate = accumulation_dtype(dtype)
    # N-D inputs run as ONE 2-D matmul over the rows: XLA CPU's gradient of a 3-D contraction falls off its fast
    # matmul path (see benchmarks/README.md, W6).
    rows = x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x  # (*, in) -> (prod(*), in)
    # Contract the input's last axis with weight's in_features axis: (rows, in) x (out, in) -> (rows, out).
    y = lax.dot_general(
        rows, weight, (((rows.ndim - 1,), (1,)), ((), ())), precision=precision, preferred_element_type=accumulate
    )
    if x.ndim > 2:
        y = y.reshape(*x.shape[:-1], weight.shape[0])  # (prod(*), out) -> (*, out)
    if bias is not None:
        y = y + jnp.reshape(bias.astype(accumulate), (1,) * (y.ndim - 1) + (-1,))
    return y.astype(dtype)
