"""Dropout layers.

PyTorch equivalent: ``torch/nn/modules/dropout.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fnml._validation import check_in_interval
from fnml.layers.base import (
    Module,
)

__all__ = ["Dropout"]


# --------------------------------------------------------------------------------------------------
# Dropout, Embedding
# --------------------------------------------------------------------------------------------------


class Dropout(Module):
    """Zero each element with probability ``p`` in training mode and scale the rest by ``1 / (1 - p)``.

    PyTorch equivalent: ``torch.nn.Dropout(p=0.5)``.

    Training mode (the default, ``model.train()``): ``y = x * (mask / (1 - p))`` with ``mask ~
    Bernoulli(1 - p)`` drawn from the ``'dropout'`` stream of the ``nnx.Rngs`` given at construction (or
    ``rngs=`` at call time): same seed, same masks. Eval mode (``model.eval()``): identity. ``p=1`` gives
    zeros. Masks cannot match torch's (different random generators); everything else does.

    Example::

        drop = Dropout(0.2, rngs=nnx.Rngs(dropout=0))
        y = drop(jnp.ones((4, 8)))
        drop.eval(); assert (drop(x) == x).all()
    """

    def __init__(self, p: float = 0.5, *, rngs: nnx.Rngs | None = None):
        check_in_interval("p", p, 0.0, 1.0, closed_high=True, where="Dropout")
        self.p = float(p)
        # flax's train()/eval() toggle this attribute: False == torch's training mode (the default).
        self.deterministic = False
        if rngs is None:
            self.rngs = nnx.data(None)
        elif isinstance(rngs, nnx.Rngs):
            self.rngs = rngs["dropout"].fork()
        else:
            raise TypeError(f"Dropout: rngs must be an nnx.Rngs or None, got {type(rngs).__name__}")

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = jnp.asarray(x)
        if self.deterministic or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * jnp.zeros_like(x)  # torch: input * 0 (keeps NaN/inf propagation)
        if rngs is not None:
            key = rngs["dropout"]()
        elif self.rngs is not None:
            key = self.rngs()
        else:
            raise ValueError(
                "Dropout in training mode needs random numbers: build it with rngs=nnx.Rngs(dropout=seed), "
                "pass rngs= to the call, or switch the model to eval mode with model.eval()"
            )
        keep = jax.random.bernoulli(key, 1.0 - self.p, x.shape)
        # torch multiplies by mask / (1 - p) (not x / (1 - p)): same rounding.
        scale = jnp.asarray(1.0 / (1.0 - self.p), x.dtype)
        return x * (keep.astype(x.dtype) * scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"
