"""Linear and Identity.

PyTorch equivalent: ``torch/nn/modules/linear.py``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fnml import functional as F
from fnml._validation import check_positive_int
from fnml.layers._facts import LOWERS_OP_BY_OP, PARAMETERLESS, LayerCall, TorchFacts, weight_and_bias
from fnml.layers.base import (
    Module,
    _compute_dtype,
    _fan_in_bound,
    torch_uniform,
)

__all__ = ["Linear", "Identity", "NonDynamicallyQuantizableLinear"]


# --------------------------------------------------------------------------------------------------
# Linear
# --------------------------------------------------------------------------------------------------


class Linear(Module, nnx.Linear):
    """Fully connected layer ``y = x @ kernel + bias`` with torch's signature and initialisation.

    PyTorch equivalent: ``torch.nn.Linear(in_features, out_features, bias=True)``.

    Shapes: ``x: (*, in_features) -> (*, out_features)``. ``kernel`` is ``(in_features, out_features)`` =
    torch ``weight.T``; ``bias`` is ``(out_features,)`` or None. Built on ``nnx.Linear`` (same parameters);
    the call is :func:`fnml.functional.linear` with ``weight = kernel.T`` (XLA folds the transpose into the
    contraction). Only the initialisation differs from flax's: weight AND bias ~ U(-1/sqrt(in_features),
    1/sqrt(in_features)) as in torch (flax: truncated lecun-normal kernel, zero bias). ``param_dtype``
    is the parameter dtype (float64 for exactness checks); ``dtype`` the computation dtype (None:
    promote input and parameters).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> fc = layers.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> fc
    Linear(in_features=2, out_features=1, bias=True)
    >>> fc(jnp.ones((4, 2))).shape, fc.kernel.shape       # kernel = torch weight.T
    ((4, 1), (2, 1))
    """

    torch_facts = TorchFacts(
        "Linear",
        slots=weight_and_bias(perm=(1, 0)),  # fnml kernel (in, out) -> torch weight (out, in)
        layout="torch",
        settings=("in_features", "out_features", "bias"),
        capture=LayerCall(("aten.linear",), "first"),
        autocast=True,
    )

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        where = "Linear"
        check_positive_int("in_features", in_features, where=where)
        check_positive_int("out_features", out_features, where=where)
        if not isinstance(bias, bool):
            raise TypeError(f"{where}: bias must be a bool, got bias={bias!r}")
        init = torch_uniform(_fan_in_bound(in_features))
        super().__init__(
            in_features,
            out_features,
            use_bias=bias,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=init,
            bias_init=init,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim < 1:
            raise ValueError("Linear: input must be at least 1-D (*, in_features), got a 0-D array")
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear(in_features={self.in_features}) got an input with {x.shape[-1]} features "
                f"(last axis of shape {x.shape}); expected {self.in_features}"
            )
        bias = None if self.bias is None else self.bias[...]
        dtype = _compute_dtype(self.dtype, x, self.kernel[...], *(() if bias is None else (bias,)))
        weight = self.kernel[...].astype(dtype).T  # fnml kernel (in, out) -> torch weight (out, in)
        return F.linear(x.astype(dtype), weight, None if bias is None else bias.astype(dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.use_bias}"


class NonDynamicallyQuantizableLinear(Linear):
    """A :class:`Linear` under torch's class name for ``MultiheadAttention.out_proj`` (so ``print`` matches).

    PyTorch equivalent: ``torch.nn.modules.linear.NonDynamicallyQuantizableLinear`` (a Linear that
    torch's quantisation tooling skips; same math, parameters and initialisation).
    """

    torch_facts = TorchFacts(
        "NonDynamicallyQuantizableLinear",
        slots=weight_and_bias(perm=(1, 0)),
        layout="torch",
        settings=("in_features", "out_features", "bias"),
        capture=LOWERS_OP_BY_OP,  # torch's MultiheadAttention reads its weight, never calls it
        autocast=True,
    )


class Identity(Module):
    """Return the input unchanged. PyTorch equivalent: ``torch.nn.Identity()``."""

    torch_facts = TorchFacts(
        "Identity",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __call__(self, x: jax.Array) -> jax.Array:
        return x
