"""The one torch bridge: is this a torch value, torch <-> numpy/jax values, dtype names and maps, the x64 rule.

PyTorch equivalent: ``tensor.detach().cpu().numpy()``, ``torch.from_numpy``, ``torch.from_dlpack`` and the
``torch.float32``-style dtype objects.

Every fnml module that meets a torch value goes through here, so each rule is written once:

* **Detection without importing torch.** A torch value can only exist once torch has been imported, so
  :func:`is_tensor` (and its siblings) answer ``False`` without importing it when ``torch`` is not in
  ``sys.modules``; torch is imported only by the functions that convert towards it.
* **bfloat16.** numpy has no bfloat16 that torch understands, so ``tensor.numpy()`` refuses it. Here a
  bfloat16 tensor travels through its 16-bit pattern and arrives as ``ml_dtypes.bfloat16`` (``jnp.bfloat16``):
  never widened, never refused; the way back uses the same bits.
* **Dtypes.** One table of the dtypes fnml maps both ways (:data:`SUPPORTED_DTYPES`); torch's aliases
  (``torch.float``, ``torch.long``, ``"double"``) are read by name.
* **JAX's x64 mode.** torch always has int64/float64; JAX only with ``jax_enable_x64``. With x64 off a 64-bit
  value whose values fit becomes 32-bit with a :class:`PrecisionWarning`; one that does not fit raises
  :class:`PrecisionError` naming the fix (never a silent wrap).

>>> import torch
>>> to_numpy(torch.tensor([1.5, 2.0], dtype=torch.bfloat16)).dtype   # tensor.numpy() would raise here
dtype(bfloat16)
>>> is_tensor(torch.ones(2)), is_tensor([1.0]), jax_dtype(torch.long)
(True, False, dtype('int64'))
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# ----------------------------------------------------------------------------------------------
# 1. is this a torch value (torch stays unimported when it is not loaded)
# ----------------------------------------------------------------------------------------------


def _loaded_torch() -> Any:
    """The torch module when something has imported it already, else None (a torch value cannot exist)."""
    return sys.modules.get("torch")


def is_tensor(value: Any) -> bool:
    """True for a ``torch.Tensor`` (``nn.Parameter`` included); never imports torch."""
    torch = _loaded_torch()
    return torch is not None and isinstance(value, torch.Tensor)


def is_module(value: Any) -> bool:
    """True for a ``torch.nn.Module``; never imports torch."""
    torch = _loaded_torch()
    return torch is not None and isinstance(value, torch.nn.Module)


def is_dtype(value: Any) -> bool:
    """True for a ``torch.dtype`` (``torch.float32``...); never imports torch."""
    torch = _loaded_torch()
    return torch is not None and isinstance(value, torch.dtype)


def is_device(value: Any) -> bool:
    """True for a ``torch.device``; never imports torch."""
    torch = _loaded_torch()
    return torch is not None and isinstance(value, torch.device)


# ----------------------------------------------------------------------------------------------
# 2. dtypes: names, the torch <-> jax/numpy map, JAX's x64 rule
# ----------------------------------------------------------------------------------------------

# Names of the dtypes fnml maps both ways; the torch attribute has the same name (torch.bfloat16, ...).
SUPPORTED_DTYPES: tuple[str, ...] = (
    "bool",
    "int8",
    "uint8",
    "int16",
    "int32",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
)
_NUMPY_DTYPES: dict[str, np.dtype] = {name: np.dtype(jnp.dtype(name)) for name in SUPPORTED_DTYPES}
# torch's aliases (and numpy's bool_) -> the names above.
_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "bool_": "bool",
}

X64_FIX = "jax.config.update('jax_enable_x64', True) (or set JAX_ENABLE_X64=1 before importing jax)"


class PrecisionWarning(UserWarning):
    """An int64/float64 value became int32/float32 because JAX's x64 mode is off (values fit)."""


class PrecisionError(OverflowError):
    """An int64/float64 value does not fit in 32 bits and JAX's x64 mode is off."""


# Public as fnml.tensors.PrecisionWarning / PrecisionError: shown (and pickled) under that name, as before.
PrecisionWarning.__module__ = PrecisionError.__module__ = "fnml.tensors"


def is_dtype_name(value: Any) -> bool:
    """True for a string naming a supported dtype (``"float32"``, ``"double"``, ``"torch.long"``...)."""
    return isinstance(value, str) and _name_of_string(value) in _NUMPY_DTYPES


def _name_of_string(text: str) -> str:
    name = text.removeprefix("torch.").removeprefix("jnp.").removeprefix("np.")
    return _ALIASES.get(name, name)


def dtype_name(dtype: Any) -> str:
    """Name (``"float32"``, ...) of a torch/numpy/jax dtype, a scalar type, or a dtype string."""
    if isinstance(dtype, str):
        return _name_of_string(dtype)
    if is_dtype(dtype):
        return _name_of_string(str(dtype))
    try:
        name = np.dtype(dtype).name
    except TypeError:
        raise TypeError(
            f"dtype={dtype!r} is not a dtype; expected one of {', '.join(SUPPORTED_DTYPES)} "
            "(as a string, a numpy/jax dtype or a torch dtype)"
        ) from None
    return _ALIASES.get(name, name)


def jax_dtype(dtype: Any) -> np.dtype:
    """The JAX (numpy) dtype for a torch dtype, numpy/jax dtype or name: the mapping, before x64 is applied."""
    name = dtype_name(dtype)
    if name not in _NUMPY_DTYPES:
        raise TypeError(
            f"unsupported dtype {dtype!r}; fnml maps these dtypes between torch and jax: {', '.join(SUPPORTED_DTYPES)}"
        )
    return _NUMPY_DTYPES[name]


def torch_dtype(dtype: Any) -> Any:
    """The torch dtype for a JAX/numpy dtype, torch dtype or name (imports torch)."""
    import torch

    return getattr(torch, jax_dtype(dtype).name)


def canonical_dtype(dtype: Any) -> np.dtype:
    """The dtype JAX holds for ``dtype``: int64/float64 -> int32/float32 when x64 is off."""
    return np.dtype(jax.dtypes.canonicalize_dtype(jax_dtype(dtype)))


# The modules whose frames a PrecisionWarning skips: it names the first caller outside the bridge.
_BRIDGE_FILES = frozenset(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), name) for name in ("_torch.py", "tensors.py", "device.py")
)


def warn_precision(message: str) -> None:
    """Issue a PrecisionWarning attributed to the first caller outside the bridge modules."""
    frame, level = sys._getframe(1), 2  # stacklevel 2 is our caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename) in _BRIDGE_FILES:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, PrecisionWarning, stacklevel=level)


def check_fits(values: np.ndarray, source: np.dtype, target: np.dtype, *, what: str) -> None:
    """Raise PrecisionError if ``values`` (dtype ``source``) do not fit ``target``; else warn that they shrink."""
    if values.size:
        if source.kind in "iu":
            info = np.iinfo(target)
            low, high = int(values.min()), int(values.max())
            if low < info.min or high > info.max:
                raise PrecisionError(
                    f"{what}: {source.name} values in [{low}, {high}] do not fit in {target.name} "
                    f"([{info.min}, {info.max}]), and JAX's x64 mode is off so {source.name} is not "
                    f"available; enable it with {X64_FIX}"
                )
        else:
            finite = values[np.isfinite(values)]
            largest = float(np.max(np.abs(finite))) if finite.size else 0.0
            if largest > float(np.finfo(target).max):
                raise PrecisionError(
                    f"{what}: {source.name} values up to {largest:g} overflow {target.name} "
                    f"(max {float(np.finfo(target).max):g}), and JAX's x64 mode is off so {source.name} "
                    f"is not available; enable it with {X64_FIX}"
                )
    warn_precision(
        f"{what}: {source.name} became {target.name} because JAX's x64 mode is off"
        + (" (values rounded to float32 precision)" if source.kind == "f" else " (all values fit)")
        + f"; to keep {source.name} use {X64_FIX}"
    )


# ----------------------------------------------------------------------------------------------
# 3. values: torch -> numpy, torch -> jax, numpy/jax -> torch
# ----------------------------------------------------------------------------------------------


def to_numpy(tensor: Any) -> np.ndarray:
    """A host numpy copy of a torch tensor, detached; bfloat16 via its bits, as ``ml_dtypes.bfloat16``."""
    import torch

    tensor = tensor.detach().cpu().resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(jnp.bfloat16)
    return tensor.numpy()


def as_numpy(value: Any) -> np.ndarray:
    """A torch tensor (:func:`to_numpy`), jax array, numpy array or number -> a numpy array."""
    return to_numpy(value) if is_tensor(value) else np.asarray(value)


def to_jax(tensor: Any, *, copy: bool = False, what: str = "from_torch") -> jax.Array:
    """A jax array with a torch tensor's values, zero-copy through DLPack where possible.

    Detached, conjugation/negation resolved, made contiguous (logical order). bool and bfloat16 travel
    unchanged. int64/float64 with x64 off: values checked in torch, then shrunk there with a
    :class:`PrecisionWarning` (JAX's own DLPack import would wrap int64 silently), or :class:`PrecisionError`.
    Without ``copy`` the result may share the tensor's memory. Unsupported dtypes raise ``TypeError``.
    """
    import torch

    if tensor.layout != torch.strided:
        raise TypeError(f"{what}: layout {tensor.layout} is not supported; call tensor.to_dense() first")
    source = tensor.detach().resolve_conj().resolve_neg()
    wanted = jax_dtype(source.dtype)  # unsupported dtypes fail here with the list of supported ones
    held = canonical_dtype(wanted)
    if held != wanted:
        check_fits(to_numpy(source), wanted, held, what=what)
        source = source.to(torch_dtype(held))
    if not source.is_contiguous():
        source = source.contiguous()  # (copy) logical order, so every importer reads it right
    if copy:
        source = source.clone()
    try:
        return jax.dlpack.from_dlpack(source)
    except (RuntimeError, TypeError, ValueError, BufferError):
        # e.g. a CUDA tensor with a CPU-only jax: go through host memory instead.
        return jnp.asarray(to_numpy(source))


def as_jax(value: Any) -> jax.Array:
    """A torch tensor (through host numpy, bfloat16 kept), numpy array or number -> a jax array.

    Unlike :func:`to_jax` no x64 check: the values go through ``jnp.asarray`` as numpy arrays do.
    """
    return jnp.asarray(to_numpy(value) if is_tensor(value) else value)


def to_torch(values: Any) -> Any:
    """A new CPU torch tensor with the values of a numpy/jax array or number (bfloat16 via its bits)."""
    import torch

    array = np.array(values)  # a writable host copy: torch.from_numpy warns on read-only buffers
    if array.dtype == jnp.bfloat16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
