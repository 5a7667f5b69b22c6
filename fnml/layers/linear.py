"""Linear and Identity.

PyTorch equivalent: ``torch/nn/modules/linear.py``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from fnml._validation import check_positive_int
from fnml.functional.linear import linear_unchecked
from fnml.layers._facts import LOWERS_OP_BY_OP, PARAMETERLESS, LayerCall, TorchFacts, weight_and_bias
from fnml.layers.base import (
    Module,
    _compute_dtype,
    _fan_in_bound,
    torch_uniform,
)

__all__ = ["Linear", "Identity", "NonDynamicallyQuantizableLinear"]


# nnx.Linear's constructor options that fnml's Linear does not take: its matmul, dtype promotion and
# initialisation are torch's (``precision`` is taken and honoured; ``bias`` is torch's ``use_bias``).
_FLAX_ONLY_OPTIONS = {
    "use_bias": "pass bias=True/False (torch's name)",
    "kernel_init": "initialisation is torch's; re-initialise after construction (layer.kernel[...] = ...)",
    "bias_init": "initialisation is torch's; re-initialise after construction (layer.bias[...] = ...)",
    "dot_general": "the matmul is fnml.functional.linear's (torch's accumulation); set its precision with precision=",
    "promote_dtype": "dtypes follow dtype= / param_dtype= (torch's promotion)",
    "preferred_element_type": "half-precision inputs accumulate in float32, as torch's kernels",
    "kernel_metadata": "set sharding or metadata on layer.kernel after construction",
    "bias_metadata": "set sharding or metadata on layer.bias after construction",
}


# nnx.Linear's attributes that only its own __call__ reads: set once by its constructor (to flax's defaults),
# refused afterwards, since fnml's call would silently ignore a new value.
_IGNORED_FLAX_ATTRIBUTES = ("dot_general", "promote_dtype", "preferred_element_type")


def _refuse_flax_options(options: dict[str, Any], where: str) -> None:
    """Raise for any keyword fnml's Linear does not take, naming it (flax's options with the reason)."""
    for name, value in options.items():
        if name in _FLAX_ONLY_OPTIONS:
            raise TypeError(
                f"{where}: {name}={value!r} is a flax.nnx.Linear option that fnml's Linear does not support "
                f"({_FLAX_ONLY_OPTIONS[name]})"
            )
        raise TypeError(f"{where}: unexpected keyword argument {name}={value!r}")


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
    promote input and parameters); ``precision`` the matmul's ``lax.Precision`` (None: JAX's default, as
    ``jax.default_matmul_precision`` sets it). ``nnx.Linear``'s other options (``dot_general``,
    ``promote_dtype``, ``preferred_element_type``, ``kernel_init``, ...) are refused with a ``TypeError``
    naming the option: the matmul, promotion and initialisation here are torch's. Assigning
    ``dot_general``, ``promote_dtype`` or ``preferred_element_type`` after construction is an
    ``AttributeError`` (the call would ignore it).

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
        precision: lax.PrecisionLike = None,
        rngs: nnx.Rngs,
        **flax_options: Any,
    ):
        where = type(self).__name__  # NonDynamicallyQuantizableLinear names itself
        _refuse_flax_options(flax_options, where)
        check_positive_int("in_features", in_features, where=where)
        check_positive_int("out_features", out_features, where=where)
        if not isinstance(bias, (bool, np.bool_)):  # numpy's bools too, as _validation.check_bool takes them
            raise TypeError(f"{where}: bias must be a bool, got bias={bias!r}")
        bias = bool(bias)
        init = torch_uniform(_fan_in_bound(in_features))
        super().__init__(
            in_features,
            out_features,
            use_bias=bias,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            kernel_init=init,
            bias_init=init,
            rngs=rngs,
        )

    def __setattr__(self, name: str, value: Any) -> None:
        # Only these three names are guarded; nnx's split / merge / clone build modules without __setattr__.
        if name in _IGNORED_FLAX_ATTRIBUTES and name in vars(self) and value is not getattr(self, name):
            raise AttributeError(
                f"{type(self).__name__}: {name} cannot be set; it is a flax.nnx.Linear option that fnml's Linear "
                f"does not support ({_FLAX_ONLY_OPTIONS[name]}), got {name}={value!r}"
            )
        super().__setattr__(name, value)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim < 1:
            raise ValueError("Linear: input must be at least 1-D (*, in_features), got a 0-D array")
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear(in_features={self.in_features}) got an input with {x.shape[-1]} features "
                f"(last axis of shape {x.shape}); expected {self.in_features}"
            )
        kernel = self.kernel[...]
        bias = None if self.bias is None else self.bias[...]
        dtype = _compute_dtype(self.dtype, x, kernel, *(() if bias is None else (bias,)))
        weight = kernel.astype(dtype).T  # fnml kernel (in, out) -> torch weight (out, in)
        bias = None if bias is None else bias.astype(dtype)
        # Checked and cast once, here: the functional core runs without repeating either.
        return linear_unchecked(x.astype(dtype), weight, bias, precision=self.precision)

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
