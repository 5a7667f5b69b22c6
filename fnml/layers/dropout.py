"""Dropout layers: thin modules over :func:`fnml.functional.dropout` and its channel-wise / alpha variants.

PyTorch equivalent: ``torch/nn/modules/dropout.py``.

Every layer here checks ``p`` once, at construction, draws its key from the ``'dropout'`` stream of the
``nnx.Rngs`` given at construction (or ``rngs=`` at call time) and calls the functional op's core (the
settings are not checked again per call): same seed, same masks. Training mode is the default
(torch's); ``model.eval()`` makes them the exact identity. Masks cannot equal torch's (different random
generators); the distribution, the scaling and its rounding do.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp  # noqa: F401 (the examples below use it)
from flax import nnx

from fnml._validation import check_bool, check_in_interval
from fnml.functional._shared import as_float_input
from fnml.functional.dropout import (
    alpha_dropout_unchecked,
    dropout1d_unchecked,
    dropout2d_unchecked,
    dropout_unchecked,
)
from fnml.layers._facts import LOWERS_OP_BY_OP, PARAMETERLESS, LayerCall, TorchFacts
from fnml.layers.base import Module

__all__ = ["AlphaDropout", "Dropout", "Dropout1d", "Dropout2d"]


class _DropoutBase(Module):
    """torch's ``_DropoutNd``: ``p``, ``inplace`` (accepted, no effect), train/eval, the key stream."""

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        where = type(self).__name__
        check_in_interval("p", p, 0.0, 1.0, closed_high=True, where=where)
        check_bool("inplace", inplace, where=where)
        self.p = float(p)
        self.inplace = inplace
        # flax's train()/eval() toggle this attribute: False == torch's training mode (the default).
        self.deterministic = False
        if rngs is None:
            self.rngs = nnx.data(None)
        elif isinstance(rngs, nnx.Rngs):
            self.rngs = rngs["dropout"].fork()
        else:
            raise TypeError(f"{where}: rngs must be an nnx.Rngs or None, got {type(rngs).__name__}")

    def _key(self, rngs: nnx.Rngs | None) -> Any:
        """A fresh key when the layer will draw a mask, else None (so eval / p=0 / p=1 never advance the stream)."""
        if self.deterministic or self.p in (0.0, 1.0):
            return None
        if rngs is not None:
            return rngs["dropout"]()
        if self.rngs is not None:
            return self.rngs()
        raise ValueError(
            f"{type(self).__name__} in training mode needs random numbers: build it with "
            "rngs=nnx.Rngs(dropout=seed), pass rngs= to the call, or switch the model to eval mode with model.eval()"
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutBase):
    """Zero each element with probability ``p`` in training mode and scale the rest by ``1 / (1 - p)``.

    PyTorch equivalent: ``torch.nn.Dropout(p=0.5, inplace=False)``.

    Training mode (the default, ``model.train()``): :func:`fnml.functional.dropout`, ``y = x * (mask / (1 -
    p))`` with ``mask ~ Bernoulli(1 - p)`` keyed from the ``'dropout'`` stream. Eval mode
    (``model.eval()``): the identity. ``p=1`` gives zeros. ``inplace`` is accepted and only printed.

    >>> from flax import nnx
    >>> drop = Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    >>> sorted(set(drop(jnp.ones(8)).tolist()))
    [0.0, 2.0]
    >>> print(drop.eval()(jnp.ones(3)))
    [1. 1. 1.]
    """

    torch_facts = TorchFacts(
        "Dropout",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("p",),
        capture=LayerCall(("aten.dropout",), "elementwise"),
        autocast=False,
    )

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        key = self._key(rngs)
        return dropout_unchecked(as_float_input(x, "dropout"), self.p, not self.deterministic, key)


class Dropout1d(_DropoutBase):
    """Zero whole channels of a sequence with probability ``p``; scale the rest by ``1 / (1 - p)``.

    PyTorch equivalent: ``torch.nn.Dropout1d(p=0.5, inplace=False)``.

    Input in fnml's channels-last layout (as ``Conv1d``): ``(N, L, C)`` or unbatched ``(L, C)`` (torch:
    ``(N, C, L)`` / ``(C, L)``). One draw per (sample, channel), shared along ``L``
    (:func:`fnml.functional.dropout1d` with ``channels_last=True``).

    >>> from flax import nnx
    >>> y = Dropout1d(0.5, rngs=nnx.Rngs(dropout=0))(jnp.ones((1, 3, 4)))    # (N, L, C)
    >>> bool((y == y[:, :1, :]).all())    # the same along L
    True
    """

    torch_facts = TorchFacts(
        "Dropout1d",
        slots=PARAMETERLESS,
        layout="nlc",
        settings=("p",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        key = self._key(rngs)
        x = as_float_input(x, "dropout1d")
        return dropout1d_unchecked(x, self.p, not self.deterministic, key, channels_last=True)


class Dropout2d(_DropoutBase):
    """Zero whole channels of an image with probability ``p``; scale the rest by ``1 / (1 - p)``.

    PyTorch equivalent: ``torch.nn.Dropout2d(p=0.5, inplace=False)``.

    Input in fnml's channels-last layout (as ``Conv2d``): ``(N, H, W, C)`` (torch: ``(N, C, H, W)``).
    One draw per (sample, channel), shared over ``H, W`` (:func:`fnml.functional.dropout2d` with
    ``channels_last=True``). A 3-D input is read as torch reads it, ``(N, L, C)`` 1-D channel dropout, with
    torch's warning.

    >>> from flax import nnx
    >>> y = Dropout2d(0.5, rngs=nnx.Rngs(dropout=0))(jnp.ones((2, 3, 3, 4)))    # (N, H, W, C)
    >>> bool((y == y[:, :1, :1, :]).all())    # the same over H, W
    True
    """

    torch_facts = TorchFacts(
        "Dropout2d",
        slots=PARAMETERLESS,
        layout="channels_last",
        settings=("p",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        key = self._key(rngs)
        x = as_float_input(x, "dropout2d")
        return dropout2d_unchecked(x, self.p, not self.deterministic, key, channels_last=True, stacklevel=3)


class AlphaDropout(_DropoutBase):
    """Dropout for SELU networks: keeps zero mean and unit variance (dropped values set to SELU's saturation).

    PyTorch equivalent: ``torch.nn.AlphaDropout(p=0.5, inplace=False)``.

    :func:`fnml.functional.alpha_dropout` in training mode (the module default, as torch's module); the
    identity in eval mode.

    >>> from flax import nnx
    >>> y = AlphaDropout(0.2, rngs=nnx.Rngs(dropout=0))(jax.random.normal(jax.random.key(0), (20000,)))
    >>> abs(float(y.mean())) < 0.05 and abs(float(y.std()) - 1) < 0.05
    True
    """

    torch_facts = TorchFacts(
        "AlphaDropout",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("p",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        key = self._key(rngs)
        return alpha_dropout_unchecked(as_float_input(x, "alpha_dropout"), self.p, not self.deterministic, key)
