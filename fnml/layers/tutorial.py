"""The tutorial's model.

PyTorch equivalent: the PyTorch basics tutorial's ``SimpleNN``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fnml.layers._facts import CHILDREN, LOWERS_OP_BY_OP, TorchFacts
from fnml.layers.base import (
    Module,
)
from fnml.layers.linear import Linear

__all__ = ["SimpleNN"]


class SimpleNN(Module):
    """The tutorial's network: ``fc2(relu(fc1(x)))`` with ``fc1 = Linear(2, 2)``, ``fc2 = Linear(2, 1)``.

    PyTorch equivalent: the tutorial's ``class SimpleNN(nn.Module)``; its state_dict keys are torch's
    (``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``) through ``fnml.interop``.

    Shapes: ``x: (N, 2) -> (N, 1)``. ``print(model)`` shows the same tree as torch.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import interop, layers
    >>> model = layers.SimpleNN(rngs=nnx.Rngs(0))
    >>> print(model)
    SimpleNN(
      (fc1): Linear(in_features=2, out_features=2, bias=True)
      (fc2): Linear(in_features=2, out_features=1, bias=True)
    )
    >>> model(jnp.ones((3, 2), jnp.float32)).shape
    (3, 1)
    >>> list(interop.state_dict(model))
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    """

    torch_facts = TorchFacts(
        "SimpleNN",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, *, dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.fc1 = Linear(2, 2, dtype=dtype, param_dtype=param_dtype, rngs=rngs)  # input -> hidden
        self.fc2 = Linear(2, 1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)  # hidden -> output

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.fc1(x))  # ReLU activation, as torch.relu in the tutorial
        return self.fc2(x)
