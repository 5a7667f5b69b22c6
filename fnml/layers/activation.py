"""Activation layers.

PyTorch equivalent: ``torch/nn/modules/activation.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnml._validation import check_choice, check_number
from fnml.layers.base import (
    Module,
    _normalize_dim,
)

__all__ = ["GELU", "LeakyReLU", "LogSoftmax", "ReLU", "Sigmoid", "Softmax", "Tanh"]


class ReLU(Module):
    """``max(x, 0)``; gradient 0 at x = 0 as in torch. PyTorch equivalent: ``torch.nn.ReLU()``.

    Example::

        ReLU()(jnp.array([-1.0, 0.0, 2.0]))    # [0., 0., 2.]
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


class LeakyReLU(Module):
    """``x if x > 0 else negative_slope * x``. PyTorch equivalent: ``torch.nn.LeakyReLU(0.01)``.

    The gradient at exactly 0 is ``negative_slope`` as in torch (``jax.nn.leaky_relu`` gives 1 there).

    Example::

        LeakyReLU(0.1)(jnp.array([-1.0, 2.0]))    # [-0.1, 2.]
    """

    def __init__(self, negative_slope: float = 0.01):
        check_number("negative_slope", negative_slope, where="LeakyReLU")
        self.negative_slope = negative_slope

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.where(x > 0, x, x * jnp.asarray(self.negative_slope, x.dtype))

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    """Gaussian error linear unit, exact (erf) by default as in torch.

    PyTorch equivalent: ``torch.nn.GELU(approximate="none")``.

    ``approximate="none"``: ``x * Phi(x)`` with the erf; ``"tanh"``: torch's tanh approximation.
    ``jax.nn.gelu`` defaults to the tanh approximation (about 4.7e-4 off torch's default).

    Example::

        GELU()(jnp.array([1.0]))    # [0.8413447]
    """

    def __init__(self, approximate: str = "none"):
        check_choice("approximate", approximate, ("none", "tanh"), where="GELU")
        self.approximate = approximate

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=self.approximate == "tanh")

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    """Hyperbolic tangent. PyTorch equivalent: ``torch.nn.Tanh()``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(x)


class Sigmoid(Module):
    """Logistic ``1 / (1 + exp(-x))``. PyTorch equivalent: ``torch.nn.Sigmoid()``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(x)


class _SoftmaxBase(Module):
    """Shared ``dim`` handling for Softmax / LogSoftmax."""

    _name = "Softmax"

    def __init__(self, dim: int):
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"{self._name}: dim must be an int (torch's implicit dim is deprecated), got dim={dim!r}")
        self.dim = dim

    def _axis(self, x: jax.Array) -> int:
        return _normalize_dim(self.dim, max(x.ndim, 1), self._name)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    """``exp(x) / sum(exp(x))`` along ``dim``. PyTorch equivalent: ``torch.nn.Softmax(dim)``.

    ``dim`` is required (torch's implicit choice is deprecated there). Example::

        Softmax(dim=-1)(jnp.array([[1.0, 2.0]]))
    """

    _name = "Softmax"

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return jax.nn.softmax(x, axis=self._axis(x))


class LogSoftmax(_SoftmaxBase):
    """``x - logsumexp(x)`` along ``dim``. PyTorch equivalent: ``torch.nn.LogSoftmax(dim)``.

    Example::

        LogSoftmax(dim=1)(jnp.array([[1.0, 2.0]]))
    """

    _name = "LogSoftmax"

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return jax.nn.log_softmax(x, axis=self._axis(x))
