"""Activation layers: thin modules over :mod:`fnml.functional`, with torch's signatures and ``print`` text.

PyTorch equivalent: ``torch/nn/modules/activation.py``.

Each layer checks its settings once, at construction, and calls the core of the functional op of the same
torch name (``ReLU`` -> ``functional.relu``'s ``relu_unchecked``), so a layer and its functional twin give the
same numbers, gradients included (torch's
gradient at every kink: ``relu'(0) = 0``, ``hardtanh' = 0`` at both bounds, ``leaky_relu'(0) =
negative_slope``...). ``inplace=True`` is accepted where torch has it and changes nothing but the printed
text (JAX arrays are immutable; the output is the same array torch would produce in place).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnml import functional as F
from fnml._validation import check_bool, check_choice, check_int, check_number, check_positive_int
from fnml.functional._shared import as_float_input
from fnml.functional.activation import (
    celu_unchecked,
    elu_unchecked,
    gelu_unchecked,
    glu_unchecked,
    hardsigmoid_unchecked,
    hardswish_unchecked,
    hardtanh_unchecked,
    leaky_relu_unchecked,
    log_softmax_unchecked,
    mish_unchecked,
    prelu_unchecked,
    relu6_unchecked,
    relu_unchecked,
    selu_unchecked,
    silu_unchecked,
    softmax_unchecked,
    softplus_unchecked,
    softsign_unchecked,
    threshold_unchecked,
)
from fnml.layers._facts import LOWERS_OP_BY_OP, PARAMETERLESS, LayerCall, TorchFacts, same_name_slots
from fnml.layers.base import Module, _normalize_dim

__all__ = [
    "CELU",
    "ELU",
    "GELU",
    "GLU",
    "SELU",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "LeakyReLU",
    "LogSigmoid",
    "LogSoftmax",
    "Mish",
    "PReLU",
    "ReLU",
    "ReLU6",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Softsign",
    "Tanh",
    "Threshold",
]


class _Inplace(Module):
    """An activation whose only setting is torch's ``inplace`` flag (printed as ``inplace=True`` when set)."""

    def __init__(self, inplace: bool = False):
        check_bool("inplace", inplace, where=type(self).__name__)
        self.inplace = inplace

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


def _inplace_suffix(inplace: bool) -> str:
    return ", inplace=True" if inplace else ""


class ReLU(_Inplace):
    """``max(x, 0)``; gradient 0 at ``x = 0`` as in torch.

    PyTorch equivalent: ``torch.nn.ReLU(inplace=False)``.

    >>> print(ReLU()(jnp.array([-1.0, 0.0, 2.0])))
    [0. 0. 2.]
    """

    torch_facts = TorchFacts(
        "ReLU",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LayerCall(("aten.relu", "aten.relu_"), "elementwise"),
        autocast=False,
    )

    def __call__(self, x: jax.Array) -> jax.Array:
        return relu_unchecked(as_float_input(x, "relu"))


class ReLU6(_Inplace):
    """``min(max(x, 0), 6)``; gradient 0 at 0 and at 6 (torch's ``hardtanh(x, 0, 6)``).

    PyTorch equivalent: ``torch.nn.ReLU6(inplace=False)``.

    >>> print(ReLU6()(jnp.array([-1.0, 3.0, 7.0])))
    [0. 3. 6.]
    """

    torch_facts = TorchFacts(
        "ReLU6",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LayerCall(("aten.hardtanh", "aten.hardtanh_"), "elementwise"),
        autocast=False,
    )

    def __call__(self, x: jax.Array) -> jax.Array:
        return relu6_unchecked(as_float_input(x, "relu6"))


class LeakyReLU(Module):
    """``x if x > 0 else negative_slope * x``; gradient ``negative_slope`` at 0 as in torch.

    PyTorch equivalent: ``torch.nn.LeakyReLU(negative_slope=0.01, inplace=False)``.

    ``jax.nn.leaky_relu`` gives gradient 1 at 0; this follows torch.

    >>> print(LeakyReLU(0.5)(jnp.array([-1.0, 2.0])))
    [-0.5  2. ]
    """

    torch_facts = TorchFacts(
        "LeakyReLU",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("negative_slope",),
        capture=LayerCall(("aten.leaky_relu", "aten.leaky_relu_"), "elementwise"),
        autocast=False,
    )

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        check_number("negative_slope", negative_slope, where="LeakyReLU")
        check_bool("inplace", inplace, where="LeakyReLU")
        self.negative_slope = negative_slope
        self.inplace = inplace

    def __call__(self, x: jax.Array) -> jax.Array:
        return leaky_relu_unchecked(as_float_input(x, "leaky_relu"), self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}{_inplace_suffix(self.inplace)}"


class ELU(Module):
    """``x if x > 0 else alpha * (exp(x) - 1)``; gradient ``alpha`` at 0 as in torch.

    PyTorch equivalent: ``torch.nn.ELU(alpha=1.0, inplace=False)``.

    >>> print(ELU()(jnp.array([0.0, 2.0])))
    [0. 2.]
    """

    torch_facts = TorchFacts(
        "ELU",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("alpha",),
        capture=LayerCall(("aten.elu", "aten.elu_"), "elementwise"),
        autocast=False,
    )

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        check_number("alpha", alpha, where="ELU")
        check_bool("inplace", inplace, where="ELU")
        self.alpha = alpha
        self.inplace = inplace

    def __call__(self, x: jax.Array) -> jax.Array:
        return elu_unchecked(as_float_input(x, "elu"), self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}{_inplace_suffix(self.inplace)}"


class CELU(Module):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``; ``alpha=0`` is a ``ValueError``.

    PyTorch equivalent: ``torch.nn.CELU(alpha=1.0, inplace=False)``.

    >>> print(CELU(2.0)(jnp.array([0.0, 2.0])))
    [0. 2.]
    """

    torch_facts = TorchFacts(
        "CELU",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("alpha",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        check_number("alpha", alpha, where="CELU")
        if alpha == 0:
            raise ValueError("CELU: alpha must not be 0 (celu divides by alpha), got alpha=0")
        check_bool("inplace", inplace, where="CELU")
        self.alpha = alpha
        self.inplace = inplace

    def __call__(self, x: jax.Array) -> jax.Array:
        return celu_unchecked(as_float_input(x, "celu"), self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}{_inplace_suffix(self.inplace)}"


class SELU(_Inplace):
    """``scale * elu(x, alpha)`` with torch's constants (alpha 1.6733, scale 1.0507).

    PyTorch equivalent: ``torch.nn.SELU(inplace=False)``.

    >>> print(SELU()(jnp.array([0.0])))
    [0.]
    """

    torch_facts = TorchFacts(
        "SELU",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __call__(self, x: jax.Array) -> jax.Array:
        return selu_unchecked(as_float_input(x, "selu"))


class GELU(Module):
    """Gaussian error linear unit, exact (erf) by default as in torch.

    PyTorch equivalent: ``torch.nn.GELU(approximate="none")``.

    ``approximate="none"``: ``x * Phi(x)`` with the erf; ``"tanh"``: torch's tanh approximation.
    ``jax.nn.gelu`` defaults to the tanh approximation (about 4.7e-4 off torch's default).

    >>> print(np.asarray(GELU()(jnp.array([1.0]))).round(4))
    [0.8413]
    """

    torch_facts = TorchFacts(
        "GELU",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("approximate",),
        capture=LayerCall(("aten.gelu",), "elementwise"),
        autocast=False,
    )

    def __init__(self, approximate: str = "none"):
        check_choice("approximate", approximate, ("none", "tanh"), where="GELU")
        self.approximate = approximate

    def __call__(self, x: jax.Array) -> jax.Array:
        return gelu_unchecked(as_float_input(x, "gelu"), self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Inplace):
    """``x * sigmoid(x)`` (swish).

    PyTorch equivalent: ``torch.nn.SiLU(inplace=False)``.

    >>> print(SiLU()(jnp.array([0.0])))
    [0.]
    """

    torch_facts = TorchFacts(
        "SiLU",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LayerCall(("aten.silu", "aten.silu_"), "elementwise"),
        autocast=False,
    )

    def __call__(self, x: jax.Array) -> jax.Array:
        return silu_unchecked(as_float_input(x, "silu"))


class Mish(_Inplace):
    """``x * tanh(softplus(x))``.

    PyTorch equivalent: ``torch.nn.Mish(inplace=False)``.

    >>> print(np.asarray(Mish()(jnp.array([1.0]))).round(4))
    [0.8651]
    """

    torch_facts = TorchFacts(
        "Mish",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LayerCall(("aten.mish",), "elementwise"),
        autocast=False,
    )

    def __call__(self, x: jax.Array) -> jax.Array:
        return mish_unchecked(as_float_input(x, "mish"))


class Hardtanh(Module):
    """``clamp(x, min_val, max_val)``; gradient 1 strictly inside, 0 at and beyond the bounds (torch's rule).

    PyTorch equivalent: ``torch.nn.Hardtanh(min_val=-1.0, max_val=1.0, inplace=False)``.

    ``max_val <= min_val`` is a ``ValueError`` (torch: an ``AssertionError``). torch's deprecated
    ``min_value`` / ``max_value`` keywords are not accepted.

    >>> print(Hardtanh(-2.0, 2.0)(jnp.array([-3.0, 0.5, 3.0])))
    [-2.   0.5  2. ]
    """

    torch_facts = TorchFacts(
        "Hardtanh",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("min_val", "max_val"),
        capture=LayerCall(("aten.hardtanh", "aten.hardtanh_"), "elementwise"),
        autocast=False,
    )

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
        check_number("min_val", min_val, where="Hardtanh")
        check_number("max_val", max_val, where="Hardtanh")
        if max_val <= min_val:
            raise ValueError(f"Hardtanh: max_val ({max_val}) must be greater than min_val ({min_val})")
        check_bool("inplace", inplace, where="Hardtanh")
        self.min_val = min_val
        self.max_val = max_val
        self.inplace = inplace

    def __call__(self, x: jax.Array) -> jax.Array:
        return hardtanh_unchecked(as_float_input(x, "hardtanh"), self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}{_inplace_suffix(self.inplace)}"


class Hardswish(Module):
    """``x * relu6(x + 3) / 6`` with torch's gradient (0 up to -3, ``x/3 + 1/2`` on (-3, 3), 1 from 3).

    PyTorch equivalent: ``torch.nn.Hardswish(inplace=False)`` (torch prints no settings here).

    >>> print(Hardswish()(jnp.array([-4.0, 0.0, 4.0])))
    [-0.  0.  4.]
    """

    torch_facts = TorchFacts(
        "Hardswish",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, inplace: bool = False):
        check_bool("inplace", inplace, where="Hardswish")
        self.inplace = inplace

    def __call__(self, x: jax.Array) -> jax.Array:
        return hardswish_unchecked(as_float_input(x, "hardswish"))


class Hardsigmoid(Module):
    """``relu6(x + 3) / 6``; gradient ``1/6`` strictly inside (-3, 3), 0 elsewhere (torch's rule).

    PyTorch equivalent: ``torch.nn.Hardsigmoid(inplace=False)`` (torch prints no settings here).

    >>> print(Hardsigmoid()(jnp.array([-4.0, 0.0, 4.0])))
    [0.  0.5 1. ]
    """

    torch_facts = TorchFacts(
        "Hardsigmoid",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, inplace: bool = False):
        check_bool("inplace", inplace, where="Hardsigmoid")
        self.inplace = inplace

    def __call__(self, x: jax.Array) -> jax.Array:
        return hardsigmoid_unchecked(as_float_input(x, "hardsigmoid"))


class Softplus(Module):
    """``log(1 + exp(beta x)) / beta``, and ``x`` itself where ``beta x > threshold`` (torch's rule).

    PyTorch equivalent: ``torch.nn.Softplus(beta=1.0, threshold=20.0)``.

    >>> print(Softplus(threshold=1.0)(jnp.array([2.0])))
    [2.]
    """

    torch_facts = TorchFacts(
        "Softplus",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("beta", "threshold"),
        capture=LayerCall(("aten.softplus",), "elementwise"),
        autocast=False,
    )

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        check_number("beta", beta, where="Softplus")
        check_number("threshold", threshold, where="Softplus")
        self.beta = beta
        self.threshold = threshold

    def __call__(self, x: jax.Array) -> jax.Array:
        return softplus_unchecked(as_float_input(x, "softplus"), self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Softsign(Module):
    """``x / (1 + |x|)``.

    PyTorch equivalent: ``torch.nn.Softsign()``.

    >>> print(Softsign()(jnp.array([-1.0, 3.0])))
    [-0.5   0.75]
    """

    torch_facts = TorchFacts(
        "Softsign",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __call__(self, x: jax.Array) -> jax.Array:
        return softsign_unchecked(as_float_input(x, "softsign"))


class LogSigmoid(Module):
    """``log(sigmoid(x))``, stable for large ``|x|``.

    PyTorch equivalent: ``torch.nn.LogSigmoid()``.

    >>> print(np.asarray(LogSigmoid()(jnp.array([0.0]))).round(4))
    [-0.6931]
    """

    torch_facts = TorchFacts(
        "LogSigmoid",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.logsigmoid(x)


class Tanh(Module):
    """Hyperbolic tangent.

    PyTorch equivalent: ``torch.nn.Tanh()``.

    >>> print(Tanh()(jnp.array([0.0])))
    [0.]
    """

    torch_facts = TorchFacts(
        "Tanh",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LayerCall(("aten.tanh",), "elementwise"),
        autocast=False,
    )

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.tanh(x)


class Sigmoid(Module):
    """Logistic ``1 / (1 + exp(-x))``.

    PyTorch equivalent: ``torch.nn.Sigmoid()``.

    >>> print(Sigmoid()(jnp.array([0.0])))
    [0.5]
    """

    torch_facts = TorchFacts(
        "Sigmoid",
        slots=PARAMETERLESS,
        layout="torch",
        settings=(),
        capture=LayerCall(("aten.sigmoid",), "elementwise"),
        autocast=False,
    )

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.sigmoid(x)


class Threshold(Module):
    """``x if x > threshold else value``; gradient 0 where ``x <= threshold``.

    PyTorch equivalent: ``torch.nn.Threshold(threshold, value, inplace=False)``.

    >>> print(Threshold(1.0, -3.0)(jnp.array([0.5, 1.0, 2.0])))
    [-3. -3.  2.]
    """

    torch_facts = TorchFacts(
        "Threshold",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("threshold", "value"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, threshold: float, value: float, inplace: bool = False):
        check_number("threshold", threshold, where="Threshold")
        check_number("value", value, where="Threshold")
        check_bool("inplace", inplace, where="Threshold")
        self.threshold = threshold
        self.value = value
        self.inplace = inplace

    def __call__(self, x: jax.Array) -> jax.Array:
        return threshold_unchecked(as_float_input(x, "threshold"), self.threshold, self.value)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, value={self.value}{_inplace_suffix(self.inplace)}"


class GLU(Module):
    """Gated linear unit: ``a * sigmoid(b)``, ``a``/``b`` the halves of the input along ``dim``.

    PyTorch equivalent: ``torch.nn.GLU(dim=-1)``.

    >>> print(GLU()(jnp.array([[1.0, 2.0, 0.0, 0.0]])))
    [[0.5 1. ]]
    """

    torch_facts = TorchFacts(
        "GLU",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("dim",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, dim: int = -1):
        check_int("dim", dim, where="GLU")
        self.dim = dim

    def __call__(self, x: jax.Array) -> jax.Array:
        return glu_unchecked(as_float_input(x, "glu"), self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class PReLU(Module):
    """``x if x > 0 else weight * x`` with a learned slope, shared (``num_parameters=1``) or per channel.

    PyTorch equivalent: ``torch.nn.PReLU(num_parameters=1, init=0.25)``.

    ``weight``: ``nnx.Param`` ``(num_parameters,)`` filled with ``init`` (torch's parameter, same name and
    layout). Layout difference: with ``num_parameters = C > 1`` the slopes broadcast over the LAST axis,
    fnml's channel axis (``(N, C)``, ``(N, L, C)``, ``(N, H, W, C)``), where torch's broadcast over dim 1 of
    its channels-first data: the same per-channel slopes on the same channels. For a torch-layout array
    call ``functional.prelu(x, layer.weight[...])`` (channel dim 1).

    >>> act = PReLU(2, init=0.5)
    >>> print(act(jnp.array([[-2.0, 4.0], [2.0, -4.0]])))    # (N, C)
    [[-1.  4.]
     [ 2. -2.]]
    """

    torch_facts = TorchFacts(
        "PReLU",
        slots=same_name_slots("weight"),
        layout="channels_last",
        settings=("num_parameters",),
        capture=LOWERS_OP_BY_OP,
        # torch's CPU autocast runs prelu in bfloat16; fnml's PReLU has no computation dtype to lower (yet).
        autocast=False,
    )

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *, param_dtype: Any = jnp.float32):
        check_positive_int("num_parameters", num_parameters, where="PReLU")
        check_number("init", init, where="PReLU")
        self.num_parameters = num_parameters
        self.init = init
        self.weight = nnx.Param(jnp.full((num_parameters,), init, param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return prelu_unchecked(as_float_input(x, "prelu"), self.weight[...], channels_last=True)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class _SoftmaxBase(Module):
    """Shared ``dim`` handling for Softmax / LogSoftmax."""

    _name = "Softmax"

    def __init__(self, dim: int):
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
            raise TypeError(
                f"{self._name}: dim must be an int (torch's implicit dim is deprecated; fnml requires it), "
                f"got dim={dim!r}"
            )
        self.dim = int(dim)

    def _checked(self, x: jax.Array) -> jax.Array:
        """The input, after torch's dim-range check under this layer's name."""
        x = jnp.asarray(x)
        _normalize_dim(self.dim, max(x.ndim, 1), self._name)
        return x

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    """``exp(x) / sum(exp(x))`` along ``dim``.

    PyTorch equivalent: ``torch.nn.Softmax(dim)``.

    Difference: ``dim`` is required (torch's ``dim=None`` picks one implicitly, with a deprecation warning).

    >>> print(Softmax(dim=-1)(jnp.array([[1.0, 1.0]])))
    [[0.5 0.5]]
    """

    torch_facts = TorchFacts(
        "Softmax",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("dim",),
        capture=LayerCall(("aten.softmax",), "first"),
        autocast=False,
    )

    _name = "Softmax"

    def __call__(self, x: jax.Array) -> jax.Array:
        x = as_float_input(self._checked(x), self._name)
        return softmax_unchecked(x, self.dim % max(x.ndim, 1))


class LogSoftmax(_SoftmaxBase):
    """``x - logsumexp(x)`` along ``dim``.

    PyTorch equivalent: ``torch.nn.LogSoftmax(dim)``.

    Difference: ``dim`` is required, as for :class:`Softmax`.

    >>> print(np.asarray(LogSoftmax(dim=1)(jnp.array([[1.0, 1.0]]))).round(4))
    [[-0.6931 -0.6931]]
    """

    torch_facts = TorchFacts(
        "LogSoftmax",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("dim",),
        capture=LayerCall(("aten.log_softmax",), "first"),
        autocast=False,
    )

    _name = "LogSoftmax"

    def __call__(self, x: jax.Array) -> jax.Array:
        x = as_float_input(self._checked(x), self._name)
        return log_softmax_unchecked(x, self.dim % max(x.ndim, 1))
