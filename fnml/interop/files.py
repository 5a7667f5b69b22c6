"""Weight files: safetensors (read and write, atomically) and torch ``.pt`` / ``.pth`` (read, weights only).

PyTorch equivalent: ``safetensors.torch.save_file`` / ``load_file``, ``torch.load(weights_only=True)``.

Writing a model needs its state dict (:mod:`fnml.interop.state_dicts`); reading needs nothing above the
file formats and lives in ``fnml.interop._readers``, which ``state_dicts`` uses for ``load_state_dict(model,
path)``: the import graph runs one way, ``files -> state_dicts -> _readers``.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from fnml import _torch
from fnml.interop._readers import load_safetensors, load_torch_file
from fnml.interop.state_dicts import state_dict

__all__ = ["load_safetensors", "save_safetensors", "state_dict"]

_load_torch_file = load_torch_file  # the name state_dicts and older callers used


def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Write via ``write(tmp_path)`` to a temp file in the same folder, then ``os.replace`` onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(handle)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)  # atomic on POSIX: readers see the old file or the new, never half
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def save_safetensors(obj: Any, path: str | os.PathLike, *, metadata: Mapping[str, str] | None = None) -> str:
    """Write an fnml model's torch-named state dict (or any name -> tensor mapping) to ``.safetensors``.

    PyTorch equivalent: ``safetensors.torch.save_file(model.state_dict(), path)``.

    The file is written to a temporary file and moved into place with ``os.replace``, so a crash never
    leaves a half-written file at ``path``. The result loads in torch with
    ``safetensors.torch.load_file(path)``. Returns the path.

    >>> import os, tempfile
    >>> from flax import nnx
    >>> from fnml import interop, layers
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> interop.save_safetensors(layers.SimpleNN(rngs=nnx.Rngs(0)), path) == path
    True
    """
    from safetensors.numpy import save_file

    path = os.fspath(path)
    if isinstance(obj, nnx.Module):
        tensors = state_dict(obj)
    elif isinstance(obj, Mapping):
        tensors = OrderedDict((str(k), np.array(_tensor_values(v, str(k)), order="C")) for k, v in obj.items())
    else:
        raise TypeError(f"save_safetensors expects an fnml model or a mapping of tensors, got {type(obj).__name__}")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError(f"metadata must map str -> str, got {metadata!r}")
    _atomic_write(path, lambda tmp: save_file(dict(tensors), tmp, metadata=dict(metadata) if metadata else None))
    return path


def _tensor_values(value: Any, name: str) -> np.ndarray:
    """A torch tensor / jax array / numpy array -> numpy (bfloat16 kept: safetensors stores BF16)."""
    if _torch.is_tensor(value) or isinstance(value, (np.ndarray, jax.Array, np.generic, int, float)):
        return _torch.as_numpy(value)
    raise TypeError(f"tensors[{name!r}] must be a torch tensor, numpy array or jax array, got {type(value).__name__}")
