"""Weight files: safetensors (read and write, atomically) and torch ``.pt`` / ``.pth`` (read, weights only).

PyTorch equivalent: ``safetensors.torch.save_file`` / ``load_file``, ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flax import nnx

from fnml.interop.state_dicts import _to_numpy, state_dict


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
        tensors = OrderedDict((str(k), np.array(_to_numpy(v, str(k)), order="C")) for k, v in obj.items())
    else:
        raise TypeError(f"save_safetensors expects an fnml model or a mapping of tensors, got {type(obj).__name__}")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError(f"metadata must map str -> str, got {metadata!r}")
    _atomic_write(path, lambda tmp: save_file(dict(tensors), tmp, metadata=dict(metadata) if metadata else None))
    return path


def load_safetensors(path: str | os.PathLike) -> OrderedDict:
    """Read a ``.safetensors`` file into ``OrderedDict[str, np.ndarray]`` (torch names and layouts).

    PyTorch equivalent: ``safetensors.torch.load_file(path)``.

    A truncated or corrupted file raises ``ValueError`` naming the path.

    >>> import os, tempfile
    >>> from flax import nnx
    >>> from fnml import interop, layers
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> _ = interop.save_safetensors(layers.SimpleNN(rngs=nnx.Rngs(0)), path)
    >>> sorted(interop.load_safetensors(path))
    ['fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no safetensors file at {path!r}")
    try:
        tensors = load_file(path)
    except (SafetensorError, ValueError, OSError, RuntimeError) as error:
        raise ValueError(
            f"could not read safetensors file {path!r}: the file is truncated or corrupted ({error})"
        ) from error
    return OrderedDict(tensors.items())


def _load_torch_file(path: str) -> Mapping[str, Any]:
    """Read a torch checkpoint with ``torch.load(weights_only=True)``; never unpickle arbitrary objects."""
    import torch  # lazily: fnml itself does not need torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no torch checkpoint at {path!r}")
    try:
        with warnings.catch_warnings():
            # torch warns about non-default pickle protocols before refusing or reading them; not actionable.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"refusing to load {path!r}: it contains pickled objects other than tensors and containers, "
            f"which fnml never unpickles (torch.load(weights_only=True) rejected it: {first_line}). "
            f"Re-save it as a plain state dict or a .safetensors file from a trusted environment."
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"could not read torch checkpoint {path!r}: truncated or corrupted ({error})") from error
    if isinstance(loaded, Mapping):
        if all(isinstance(v, torch.Tensor) for v in loaded.values()):
            return loaded
        for key in ("state_dict", "model_state_dict", "model"):
            inner = loaded.get(key)
            if isinstance(inner, Mapping) and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    raise ValueError(
        f"torch checkpoint {path!r} holds {type(loaded).__name__}"
        + (f" with keys {sorted(map(str, loaded))[:10]}" if isinstance(loaded, Mapping) else "")
        + "; expected a state dict (name -> tensor) or a dict with a 'state_dict' entry"
    )
