"""Reading weight files: safetensors and torch ``.pt`` / ``.pth`` (weights only, never arbitrary pickles).

PyTorch equivalent: ``safetensors.torch.load_file``, ``torch.load(path, weights_only=True)``.

The lowest layer of :mod:`fnml.interop`: it imports nothing of fnml, so ``state_dicts`` (reading a path in
``load_state_dict``) and ``files`` (re-exporting :func:`load_safetensors`) both build on it.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

__all__ = ["load_safetensors", "load_torch_file"]


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


def load_torch_file(path: str) -> Mapping[str, Any]:
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
