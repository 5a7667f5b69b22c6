"""Flax NNX layers with PyTorch's constructor signatures, defaults, initialisation and numbers.

PyTorch equivalent: ``torch.nn``.

Every layer here is a :class:`flax.nnx.Module` that reads like ``torch.nn.Module``: ``__init__`` builds the
parameters, ``__call__`` runs the layer, ``print(model)`` shows a tree like torch's. Inside, layouts are
JAX-native:

- ``Linear.kernel`` is ``(in_features, out_features)`` (torch's ``weight.T``);
- ``Conv2d``, the pools and ``BatchNorm2d`` take channels-last images ``(N, H, W, C)``; convert torch's
  ``(N, C, H, W)`` with ``fnml.tensors.nchw_to_nhwc``; ``Conv2d.kernel`` is HWIO (torch OIHW
  transposed ``(2, 3, 1, 0)``);
- ``BatchNorm1d`` takes ``(N, C)`` or ``(N, L, C)`` (torch: ``(N, C, L)``).

Torch layouts are converted in ``fnml.interop`` only, keyed by the attribute names documented on each
class. ``model.train()`` / ``model.eval()`` (flax's own mechanism: they set ``deterministic`` on Dropout
and ``use_running_average`` on BatchNorm in every nested module) switch modes like torch; fnml layers
start in training mode, as torch's do.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from fnml import layers
>>> model = layers.Sequential(
...     layers.Linear(4, 8, rngs=nnx.Rngs(0)), layers.ReLU(), layers.Linear(8, 1, rngs=nnx.Rngs(1))
... )
>>> print(model)
Sequential(
  (0): Linear(in_features=4, out_features=8, bias=True)
  (1): ReLU()
  (2): Linear(in_features=8, out_features=1, bias=True)
)
>>> model[0].kernel.shape  # (in_features, out_features): torch's weight.T
(4, 8)
>>> model(jnp.ones((3, 4), jnp.float32)).shape
(3, 1)
>>> conv = layers.Conv2d(3, 8, 3, rngs=nnx.Rngs(0))
>>> conv.kernel.shape, conv(jnp.ones((2, 16, 16, 3), jnp.float32)).shape  # HWIO kernel; NHWC in and out
((3, 3, 3, 8), (2, 14, 14, 8))
>>> model.eval() is model  # eval() / train() switch modes in place and return the module
True
"""

from fnml.layers import (
    activation,
    base,
    container,
    conv,
    dropout,
    linear,
    normalization,
    padding,
    pooling,
    recurrent,
    sparse,
    transformer,
    tutorial,
    upsampling,
)
from fnml.layers.activation import *  # noqa: F403
from fnml.layers.base import *  # noqa: F403
from fnml.layers.container import *  # noqa: F403
from fnml.layers.conv import *  # noqa: F403
from fnml.layers.dropout import *  # noqa: F403
from fnml.layers.linear import *  # noqa: F403
from fnml.layers.normalization import *  # noqa: F403
from fnml.layers.padding import *  # noqa: F403
from fnml.layers.pooling import *  # noqa: F403
from fnml.layers.recurrent import *  # noqa: F403
from fnml.layers.sparse import *  # noqa: F403
from fnml.layers.transformer import *  # noqa: F403
from fnml.layers.tutorial import *  # noqa: F403
from fnml.layers.upsampling import *  # noqa: F403

# One family file per torch.nn module file; each lists its public names in its own __all__.
_FAMILIES = (
    activation,
    base,
    container,
    conv,
    dropout,
    linear,
    normalization,
    padding,
    pooling,
    recurrent,
    sparse,
    transformer,
    tutorial,
    upsampling,
)
__all__ = sorted(name for family in _FAMILIES for name in family.__all__)
