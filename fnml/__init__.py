"""fnml: PyTorch's core workflow in JAX's functional style, with verified numerical parity.

Submodules (imported lazily, so ``import fnml`` stays cheap and never imports torch):

- :mod:`fnml.tensors`  creation, dtypes, torch <-> jax conversion (``torch.tensor``, ``.numpy()``)
- :mod:`fnml.grad`     autograd counterparts (``.backward()``, ``torch.no_grad``, ``gradcheck``)
- :mod:`fnml.layers`   Flax NNX layers with torch defaults (``torch.nn``)
- :mod:`fnml.losses`   torch-semantics losses (``torch.nn.functional``)
- :mod:`fnml.optim`    torch-semantics optax optimizers, schedules, clipping (``torch.optim``)
- :mod:`fnml.schedules` the LR schedules (``torch.optim.lr_scheduler``), re-exported by ``optim``
- :mod:`fnml.functional` the one implementation of every op (``torch.nn.functional``)
- :mod:`fnml.interop`  ``state_dict`` both ways, ``from_torch``, safetensors
- :mod:`fnml.parity`   side-by-side comparison of a torch model and its fnml twin
- :mod:`fnml.data`     datasets, splits, keyed batching (``DataLoader``)
- :mod:`fnml.train`    ``TrainState``, jitted ``train_step``, ``fit`` (the training loop)
- :mod:`fnml.device`   ``device``, ``to``, meshes and sharding (``torch.device``, DDP)

The PyTorch tutorial's loop, in fnml (``fit`` prints the tutorial's ``Epoch [10/100], Loss: ...`` lines):

>>> import numpy as np
>>> from flax import nnx
>>> from fnml import layers, losses, optim, train
>>> X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], np.float32)
>>> Y = np.array([[0.0], [1.0], [1.0], [0.0]], np.float32)
>>> model = layers.SimpleNN(rngs=nnx.Rngs(0))
>>> result = train.fit(model, optim.adam(lr=1e-3), losses.MSELoss(), X, Y, epochs=100, log_every=50)
Epoch [50/100], Loss: ...
Epoch [100/100], Loss: ...
>>> result.losses.shape, bool(result.losses[-1] < result.losses[0])
((100,), True)
>>> print(result.model)
SimpleNN(
  (fc1): Linear(in_features=2, out_features=2, bias=True)
  (fc2): Linear(in_features=2, out_features=1, bias=True)
)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_SUBMODULES = (
    "data",
    "device",
    "functional",
    "grad",
    "interop",
    "layers",
    "losses",
    "optim",
    "parity",
    "schedules",
    "sidebyside",
    "tensors",
    "train",
)

__all__ = [*_SUBMODULES, "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from fnml import (  # noqa: F401
        data,
        device,
        functional,
        grad,
        interop,
        layers,
        losses,
        optim,
        parity,
        schedules,
        sidebyside,
        tensors,
        train,
    )


def __getattr__(name: str):
    # Lazy submodule import: `fnml.layers` works without importing every module (and torch) up front.
    if name in _SUBMODULES:
        module = importlib.import_module(f"fnml.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'fnml' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
