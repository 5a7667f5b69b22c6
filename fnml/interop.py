"""Move weights and whole models between PyTorch and fnml: state dicts, safetensors, ``from_torch``.

PyTorch equivalent: ``model.load_state_dict(sd)``, ``model.state_dict()``, ``torch.load`` /
``safetensors.torch.save_file``; ``from_torch`` has no torch counterpart (it builds an fnml twin).

fnml layers keep JAX-native layouts (``(in, out)`` kernels, HWIO conv kernels, channels-last
activations). This module is the ONE place where torch layouts are converted, one converter per layer
kind (:data:`_CONVERTERS`, keyed by layer class), each a list of slots ``torch name -> fnml attribute``
with the transpose between the two layouts:

==================  ===============================  ==========================================
layer               torch tensor                     fnml attribute
==================  ===============================  ==========================================
Linear              weight ``(out, in)``             kernel ``(in, out)`` = weight.T
Conv2d              weight OIHW                      kernel HWIO = weight.transpose(2, 3, 1, 0)
BatchNorm1d/2d      weight, bias, running_mean,      same names, ``(C,)``; num_batches_tracked
                    running_var, num_batches_tracked an int scalar
LayerNorm           weight, bias                     same names and shapes
Embedding           weight ``(num, dim)``            weight ``(num, dim)``
RNN/LSTM/GRU        weight_ih_l{k}{s} ``(G*H, in)``  kernel_ih_l{k}{s} ``(in, G*H)`` = .T
                    weight_hh_l{k}{s} ``(G*H, H)``   kernel_hh_l{k}{s} ``(H, G*H)`` = .T
                    bias_ih_l{k}{s}, bias_hh_l{k}{s} same names and shapes
==================  ===============================  ==========================================

Torch names of a composed module are the dotted attribute path (a ``Sequential``'s ``layers``
component is dropped, so child ``i`` is ``"i"``) followed by the torch parameter name.

Dtypes: ``load_state_dict`` keeps each fnml variable's dtype (a float64 torch tensor loaded into a
float32 model is rounded to float32; with JAX's default ``jax_enable_x64=False`` models are float32,
so float64 checkpoints are always rounded; enable x64 and build the model in float64 to keep them).
``from_torch`` builds the twin in the torch module's dtype (float64 needs x64; without it the twin is
float32). ``state_dict`` returns the fnml dtypes; ``num_batches_tracked`` is returned as int64 like torch.

Example::

    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    interop.load_state_dict(model, torch_model.state_dict())
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in interop.state_dict(model).items()})
    twin = interop.from_torch(torch_model)      # NCHW in, same outputs as torch_model
"""

from __future__ import annotations

import builtins
import inspect
import math
import operator
import os
import pickle
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnml import layers

__all__ = [
    "IncompatibleKeys",
    "StateDictError",
    "TorchTwin",
    "UnsupportedTorchOpError",
    "from_torch",
    "load_safetensors",
    "load_state_dict",
    "named_layers",
    "save_safetensors",
    "state_dict",
]


class StateDictError(RuntimeError):
    """A state dict does not fit a model: lists every missing key, unexpected key and shape mismatch."""


class UnsupportedTorchOpError(NotImplementedError):
    """``from_torch`` met a torch module, function or method it cannot express in JAX."""


class IncompatibleKeys(NamedTuple):
    """torch's ``load_state_dict(..., strict=False)`` result: keys the model lacks / the dict lacks.

    PyTorch equivalent: the ``_IncompatibleKeys(missing_keys, unexpected_keys)`` that
    ``load_state_dict(strict=False)`` returns.
    """

    missing_keys: list[str]
    unexpected_keys: list[str]


# ----------------------------------------------------------------------------------------------------
# Slots: one torch tensor <-> one fnml variable, with the transpose between the two layouts.
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """One torch tensor name bound to one fnml variable; ``perm`` transposes fnml layout -> torch layout."""

    name: str
    owner: Any
    attr: str
    perm: tuple[int, ...] | None = None
    is_count: bool = False  # num_batches_tracked: an integer counter, int64 on the torch side

    @property
    def variable(self) -> nnx.Variable:
        return getattr(self.owner, self.attr)

    @property
    def fnml_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.variable.get_value()))

    @property
    def torch_shape(self) -> tuple[int, ...]:
        shape = self.fnml_shape
        return shape if self.perm is None else tuple(shape[axis] for axis in self.perm)

    def to_torch(self, value: np.ndarray) -> np.ndarray:
        """fnml layout -> torch layout (a transpose, so bit-exact)."""
        value = np.asarray(value)
        if self.perm is not None:
            value = value.transpose(self.perm)
        # A fresh, writable, C-contiguous copy (torch.from_numpy warns on read-only jax buffers).
        return np.array(value, dtype=np.int64 if self.is_count else value.dtype, order="C", copy=True)

    def from_torch(self, value: np.ndarray) -> np.ndarray:
        """torch layout -> fnml layout (the inverse transpose)."""
        if self.perm is None:
            return value
        return value.transpose(np.argsort(self.perm))


def _optional(owner: Any, attr: str) -> bool:
    """True when ``owner.attr`` exists and holds a variable (not None)."""
    return getattr(owner, attr, None) is not None


def _linear_slots(module: Any) -> list[_Slot]:
    # torch weight (out, in) <-> fnml kernel (in, out): a 2-D transpose.
    slots = [_Slot("weight", module, "kernel", perm=(1, 0))]
    if _optional(module, "bias"):
        slots.append(_Slot("bias", module, "bias"))
    return slots


def _conv2d_slots(module: Any) -> list[_Slot]:
    # fnml HWIO (kh, kw, in/groups, out) -> torch OIHW (out, in/groups, kh, kw): axes (3, 2, 0, 1).
    slots = [_Slot("weight", module, "kernel", perm=(3, 2, 0, 1))]
    if _optional(module, "bias"):
        slots.append(_Slot("bias", module, "bias"))
    return slots


def _batchnorm_slots(module: Any) -> list[_Slot]:
    # Same names and (C,) shapes on both sides; num_batches_tracked exists in torch only as a counter.
    slots = [_Slot(name, module, name) for name in ("weight", "bias") if _optional(module, name)]
    slots += [_Slot(name, module, name) for name in ("running_mean", "running_var") if _optional(module, name)]
    if _optional(module, "num_batches_tracked"):
        slots.append(_Slot("num_batches_tracked", module, "num_batches_tracked", is_count=True))
    return slots


def _same_name_slots(*names: str) -> Callable[[Any], list[_Slot]]:
    """Slots for layers whose torch tensors have fnml's names and layouts (LayerNorm, Embedding)."""

    def slots(module: Any) -> list[_Slot]:
        return [_Slot(name, module, name) for name in names if _optional(module, name)]

    return slots


def _recurrent_slots(module: Any) -> list[_Slot]:
    # Per layer k and direction s, torch's order: weight_ih, weight_hh, bias_ih, bias_hh.
    # torch weight_ih (G*H, in) <-> fnml kernel_ih (in, G*H); weight_hh (G*H, H) <-> kernel_hh (H, G*H).
    directions = ("", "_reverse") if module.bidirectional else ("",)
    slots = []
    for layer in range(module.num_layers):
        for suffix in directions:
            tag = f"_l{layer}{suffix}"
            slots.append(_Slot(f"weight_ih{tag}", module, f"kernel_ih{tag}", perm=(1, 0)))
            slots.append(_Slot(f"weight_hh{tag}", module, f"kernel_hh{tag}", perm=(1, 0)))
            for name in (f"bias_ih{tag}", f"bias_hh{tag}"):
                if _optional(module, name):
                    slots.append(_Slot(name, module, name))
    return slots


def _no_slots(module: Any) -> list[_Slot]:
    """Parameterless layers (activations, pools, Dropout, Flatten)."""
    return []


def _fnml_layer_class(name: str) -> type | None:
    """fnml's layer class of a torch.nn name ."""
    cls = getattr(layers, name, None)
    if isinstance(cls, type) and issubclass(cls, nnx.Module):
        return cls
    return None


def _build_converters() -> dict[type, Callable[[Any], list[_Slot]]]:
    """The registry: fnml layer class -> its slots. Parameterless layers map to no slots."""
    table: dict[type, Callable[[Any], list[_Slot]]] = {}
    with_params = {
        "Linear": _linear_slots,
        "Conv2d": _conv2d_slots,
        "BatchNorm1d": _batchnorm_slots,
        "BatchNorm2d": _batchnorm_slots,
        "LayerNorm": _same_name_slots("weight", "bias"),
        "Embedding": _same_name_slots("weight"),
        "RNN": _recurrent_slots,
        "LSTM": _recurrent_slots,
        "GRU": _recurrent_slots,
    }
    for name, slots in with_params.items():
        cls = _fnml_layer_class(name)
        if cls is not None:
            table[cls] = slots
    for name in _PARAMETERLESS:
        cls = getattr(layers, name, None)
        if isinstance(cls, type):
            table[cls] = _no_slots
    return table


# torch.nn leaf modules without parameters that fnml.layers mirrors under the same name.
_PARAMETERLESS = (
    "Dropout",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Flatten",
    "Identity",
    "ReLU",
    "ReLU6",
    "GELU",
    "Tanh",
    "Sigmoid",
    "SiLU",
    "ELU",
    "LeakyReLU",
    "Softplus",
    "Softmax",
    "LogSoftmax",
    "Hardtanh",
    "Mish",
)

_CONVERTERS = _build_converters()


def _converter_for(module: Any) -> Callable[[Any], list[_Slot]] | None:
    """The registry entry for ``module``'s class (exact class first, then base classes)."""
    for cls in type(module).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls]
    return None


# ----------------------------------------------------------------------------------------------------
# Walking a module tree in torch order, with torch names.
# ----------------------------------------------------------------------------------------------------


def _children(module: Any) -> Iterator[tuple[str, Any]]:
    """(torch name, child) pairs of a container module, in torch registration order."""
    order = getattr(module, "_torch_order", None)
    if order is not None:  # twins built by from_torch remember torch's order (merge sorts attributes)
        names = order
    else:
        names = [name for name in vars(module) if not name.startswith("_")]
    for name in names:
        value = getattr(module, name)
        if isinstance(module, layers.Sequential) and name == "layers":
            # Sequential's children are "0", "1", ... in torch: the `layers` component is dropped.
            for index, child in enumerate(value):
                yield str(index), child
        elif isinstance(value, (list, tuple, nnx.List)):  # nnx.List is itself an nnx.Module: check first
            for index, child in enumerate(value):
                if isinstance(child, nnx.Module):
                    yield f"{name}.{index}", child
        elif isinstance(value, (nnx.Module, nnx.Variable)):
            yield name, value


def _walk(module: Any, prefix: str = "") -> Iterator[tuple[str, Any, list[_Slot]]]:
    """Yield (torch module name, module, slots) for every registry layer and every container variable."""
    converter = _converter_for(module)
    if converter is not None:
        yield prefix.rstrip("."), module, converter(module)
        return
    if type(module).__module__.startswith("flax."):
        raise TypeError(
            f"state_dict/load_state_dict: {type(module).__module__}.{type(module).__name__} at "
            f"{prefix.rstrip('.') or '<root>'!r} has no torch layout converter; use the fnml.layers "
            f"counterpart (registered kinds: {sorted(c.__name__ for c in _CONVERTERS)})"
        )
    own = []
    for name, child in _children(module):
        if isinstance(child, nnx.Variable):
            # A parameter or buffer held directly by a container (torch's custom nn.Parameter):
            # same name, same layout on both sides.
            if child.get_value() is not None:
                own.append(_Slot(name, module, name))
    if own:
        yield prefix.rstrip("."), module, own
    for name, child in _children(module):
        if isinstance(child, nnx.Module):
            yield from _walk(child, f"{prefix}{name}.")


def named_layers(model: nnx.Module) -> list[tuple[str, nnx.Module]]:
    """(torch module name, fnml layer) for every fnml layer in ``model``, in torch's module order.

    PyTorch equivalent: ``[(n, m) for n, m in model.named_modules() if not list(m.children())]``.

    Example::

        model = layers.SimpleNN(rngs=nnx.Rngs(0))
        [name for name, _ in interop.named_layers(model)]  # ['fc1', 'fc2']
    """
    return [(name, module) for name, module, _ in _walk(model) if _converter_for(module) is not None]


def _named_slots(model: nnx.Module) -> OrderedDict[str, _Slot]:
    """torch name -> slot, for every tensor of ``model``, in torch's state_dict order."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module (an fnml model), got {type(model).__name__}")
    slots: OrderedDict[str, _Slot] = OrderedDict()
    for module_name, _, module_slots in _walk(model):
        for slot in module_slots:
            slots[f"{module_name}.{slot.name}" if module_name else slot.name] = slot
    return slots


# ----------------------------------------------------------------------------------------------------
# conv -> flatten -> Linear in an NHWC model: permute the Linear's input columns.
# ----------------------------------------------------------------------------------------------------


def _check_flatten_nhwc(flatten_nhwc: Mapping[str, Sequence[int]] | None, slots: Mapping[str, _Slot]) -> dict:
    """Validate ``flatten_nhwc``: Linear torch name -> (C, H, W) of the feature map it reads."""
    if flatten_nhwc is None:
        return {}
    if not isinstance(flatten_nhwc, Mapping):
        raise TypeError(f"flatten_nhwc must be a mapping {{linear_name: (C, H, W)}}, got {flatten_nhwc!r}")
    checked = {}
    for name, chw in flatten_nhwc.items():
        key = f"{name}.weight"
        if key not in slots or not isinstance(slots[key].owner, layers.Linear):
            raise ValueError(f"flatten_nhwc names {name!r}, which is not a Linear layer of the model")
        if len(tuple(chw)) != 3 or math.prod(chw) != slots[key].torch_shape[1]:
            raise ValueError(
                f"flatten_nhwc[{name!r}]={tuple(chw)!r} must be (C, H, W) with C*H*W == in_features="
                f"{slots[key].torch_shape[1]}"
            )
        checked[key] = tuple(int(v) for v in chw)
    return checked


def _chw_to_hwc_columns(weight: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Permute a torch Linear weight's input columns from torch's (C, H, W) flatten order to (H, W, C)."""
    out_features = weight.shape[0]
    channels, height, width = chw
    # (O, C*H*W) -> (O, C, H, W) -> (O, H, W, C) -> (O, H*W*C)
    return weight.reshape(out_features, channels, height, width).transpose(0, 2, 3, 1).reshape(out_features, -1)


def _hwc_to_chw_columns(weight: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`_chw_to_hwc_columns`."""
    out_features = weight.shape[0]
    channels, height, width = chw
    # (O, H*W*C) -> (O, H, W, C) -> (O, C, H, W) -> (O, C*H*W)
    return weight.reshape(out_features, height, width, channels).transpose(0, 3, 1, 2).reshape(out_features, -1)


# ----------------------------------------------------------------------------------------------------
# state_dict / load_state_dict
# ----------------------------------------------------------------------------------------------------


def state_dict(model: nnx.Module, *, flatten_nhwc: Mapping[str, Sequence[int]] | None = None) -> OrderedDict:
    """The model's parameters and buffers under torch names, in torch layouts, as numpy arrays.

    PyTorch equivalent: ``model.state_dict()``.

    Returns ``OrderedDict[str, np.ndarray]`` in torch's module order. Every conversion is a transpose,
    so ``torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict(m).items()})``
    reproduces the loaded torch tensors bit for bit. ``num_batches_tracked`` is int64 like torch.

    ``flatten_nhwc={"fc": (C, H, W)}``: for a hand-written channels-last model whose Linear ``fc``
    reads a flattened NHWC feature map, permute its weight columns back to torch's (C, H, W) flatten
    order (the inverse of the same flag of :func:`load_state_dict`). Twins from :func:`from_torch`
    flatten in torch's order and need no flag.

    Example::

        sd = interop.state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)))
        list(sd)   # ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    """
    slots = _named_slots(model)
    permuted = _check_flatten_nhwc(flatten_nhwc, slots)
    result: OrderedDict[str, np.ndarray] = OrderedDict()
    for name, slot in slots.items():
        value = slot.to_torch(np.asarray(slot.variable.get_value()))
        if name in permuted:
            value = np.array(_hwc_to_chw_columns(value, permuted[name]), order="C", copy=True)
        result[name] = value
    return result


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """A torch tensor / jax array / numpy array -> numpy array (bfloat16 tensors widen to float32)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(value, (np.ndarray, jax.Array, np.generic, int, float)):
        return np.asarray(value)
    raise TypeError(
        f"state_dict[{name!r}] must be a torch tensor, numpy array or jax array, got {type(value).__name__}"
    )


def _read_source(source: Any) -> Mapping[str, Any]:
    """A state dict mapping, or a path to a .safetensors / .pt / .pth file, as a mapping."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.endswith(".safetensors"):
            return load_safetensors(path)
        if path.endswith((".pt", ".pth", ".bin")):
            return _load_torch_file(path)
        raise ValueError(f"state_dict path {path!r} has an unknown extension; expected .safetensors, .pt, .pth or .bin")
    if isinstance(source, nnx.Module):
        return state_dict(source)
    if isinstance(source, Mapping):
        return source
    if hasattr(source, "state_dict") and callable(source.state_dict):
        raise TypeError("state_dict must be a mapping: pass torch_model.state_dict(), not the torch model")
    raise TypeError(
        f"state_dict must be a mapping of name -> tensor or a path to a .safetensors/.pt/.pth file, "
        f"got {type(source).__name__}"
    )


def load_state_dict(
    model: nnx.Module,
    state_dict: Any,
    *,
    strict: bool = True,
    flatten_nhwc: Mapping[str, Sequence[int]] | None = None,
) -> Any:
    """Load torch-named, torch-layout tensors into an fnml model, in place.

    PyTorch equivalent: ``model.load_state_dict(state_dict, strict=True)``.

    ``state_dict`` is a mapping ``name -> tensor`` (torch tensors, numpy or jax arrays) or a path to a
    ``.safetensors`` / ``.pt`` / ``.pth`` file (``.pt`` files are read with ``weights_only=True``: no
    arbitrary unpickling). Every tensor is shape-checked against the model (in torch layout) before any
    is transposed or assigned; nothing is assigned unless all checks pass. Values take the dtype of the
    model's variable (float64 tensors into a float32 model are rounded to float32).

    ``strict=True`` raises one :class:`StateDictError` listing ALL missing keys, unexpected keys and shape
    mismatches, and returns ``model``. ``strict=False`` loads the matching keys and returns
    :class:`IncompatibleKeys` ``(missing_keys, unexpected_keys)`` like torch; shape mismatches raise
    in both modes (as in torch).

    Difference from torch: ``flatten_nhwc={"fc": (C, H, W)}`` permutes the input columns of Linear
    ``fc`` from torch's (C, H, W) flatten order to the (H, W, C) order of a channels-last fnml model
    (see SEMANTICS.md: a plain transpose is 1.4 off). Twins from :func:`from_torch` flatten in torch's
    order and need no flag.

    Example::

        model = interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), torch_model.state_dict())
    """
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got strict={strict!r}")
    return _load(model, state_dict, strict=strict, flatten_nhwc=flatten_nhwc, keep_source_dtype=False)


def _load(model, source, *, strict, flatten_nhwc, keep_source_dtype):
    """load_state_dict's body; ``keep_source_dtype`` (from_torch) takes the tensors' own float dtype."""
    slots = _named_slots(model)
    permuted = _check_flatten_nhwc(flatten_nhwc, slots)
    mapping = _read_source(source)
    arrays = OrderedDict((str(k), _to_numpy(v, str(k))) for k, v in mapping.items())

    missing = [name for name in slots if name not in arrays]
    unexpected = [name for name in arrays if name not in slots]
    mismatched = []
    for name, slot in slots.items():
        if name in arrays and tuple(arrays[name].shape) != slot.torch_shape:
            mismatched.append(
                f"{name}: shape {tuple(arrays[name].shape)} in the state dict, {slot.torch_shape} in the "
                f"model (torch layout)"
            )
    problems = []
    if mismatched:
        problems.append("size mismatch for " + "; ".join(mismatched))
    if strict and missing:
        problems.append("Missing key(s): " + ", ".join(repr(k) for k in missing))
    if strict and unexpected:
        problems.append("Unexpected key(s): " + ", ".join(repr(k) for k in unexpected))
    if problems:
        raise StateDictError(f"Error(s) in loading state_dict for {type(model).__name__}:\n\t" + "\n\t".join(problems))

    for name, slot in slots.items():
        if name not in arrays:
            continue
        value = arrays[name]
        if name in permuted:
            value = _chw_to_hwc_columns(value, permuted[name])
        value = slot.from_torch(value)  # torch layout -> fnml layout
        variable = slot.variable
        if keep_source_dtype and not slot.is_count:
            dtype = jax.dtypes.canonicalize_dtype(value.dtype)
        else:
            dtype = np.asarray(variable.get_value()).dtype
        # np.array, not np.ascontiguousarray: the latter turns 0-d scalars (num_batches_tracked) into (1,).
        variable.set_value(jnp.asarray(np.array(value, dtype=dtype, order="C")))
    if strict:
        return model
    return IncompatibleKeys(missing, unexpected)


# ----------------------------------------------------------------------------------------------------
# Files: safetensors (read/write), torch .pt/.pth (read, weights only).
# ----------------------------------------------------------------------------------------------------


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

    Example::

        interop.save_safetensors(model, "model.safetensors")
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

    Example::

        interop.load_state_dict(model, interop.load_safetensors("model.safetensors"))
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


# ----------------------------------------------------------------------------------------------------
# from_torch: an fnml twin of a torch module, traced with torch.fx and interpreted with jax ops.
# ----------------------------------------------------------------------------------------------------


class _Ref(NamedTuple):
    """A reference to an earlier fx node's value in a compiled program."""

    name: str


class _SliceSpec(NamedTuple):
    """A slice whose bounds may be references (Python 3.11 slices are not hashable)."""

    start: Any
    stop: Any
    step: Any


class _Op(NamedTuple):
    """One fx node, hashable: op kind, target (module path / function / method name), args, kwargs."""

    name: str
    op: str
    target: Any
    args: tuple
    kwargs: tuple  # ((key, value), ...)
    layout: str  # for call_module: "nchw" (convert to NHWC around the layer), "ncl", or ""


# torch leaf module class name -> how its fnml counterpart wants the channels (twins take torch layouts).
_CHANNELS_LAST_2D = {"Conv2d", "BatchNorm2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"}


class _TorchContainer(layers.Module):
    """A twin of a custom torch module: children and own parameters under their torch names."""

    def __init__(self, torch_class: str, order: tuple[str, ...]):
        self._torch_class = torch_class
        self._torch_order = order

    def __repr__(self) -> str:
        # Print like torch's tree, under the torch class name: "SimpleNN(\n  (fc1): Linear(...)".
        text = layers.module_repr(self)
        return self._torch_class + text[len(type(self).__name__) :]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"the twin of {self._torch_class} is run by its root TorchTwin (its forward was traced into "
            f"the root's program); call the root module"
        )


class TorchTwin(_TorchContainer):
    """An fnml module built by :func:`from_torch`: fnml layers + the torch forward as a jax program.

    PyTorch equivalent: the torch module it was built from (same inputs, same layouts, same outputs).

    Children are fnml layers / containers under the torch attribute names, so ``state_dict`` and
    ``load_state_dict`` use torch's names. ``__call__`` interprets the traced torch.fx graph with jax
    ops; channels-first inputs are moved to NHWC around fnml's conv / pool / BatchNorm2d layers and back,
    so ``flatten`` / ``view`` see torch's (C, H, W) order and the following Linear keeps torch's weight.
    """

    def __init__(self, torch_class: str, order: tuple[str, ...], program: tuple[_Op, ...], source: str):
        super().__init__(torch_class, order)
        self._program = program
        self._source = source

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _run_program(self, self._program, args, kwargs)

    def program_text(self) -> str:
        """The traced torch forward this twin runs (torch.fx's readable code)."""
        return self._source


def _resolve(root: nnx.Module, path: str) -> Any:
    """The twin's child at a torch dotted path ("features.0.conv")."""
    node = root
    for part in path.split("."):
        if isinstance(node, layers.Sequential):
            node = node[int(part)]
        elif isinstance(node, (list, tuple, nnx.List)):
            node = node[int(part)]
        else:
            node = getattr(node, part)
    return node


def _lookup(env: dict[str, Any], value: Any) -> Any:
    """Replace program references in a (nested) argument by their computed values."""
    if isinstance(value, _Ref):
        return env[value.name]
    if isinstance(value, _SliceSpec):
        return slice(_lookup(env, value.start), _lookup(env, value.stop), _lookup(env, value.step))
    if isinstance(value, tuple):
        return tuple(_lookup(env, v) for v in value)
    return value


def _run_program(root: nnx.Module, program: tuple[_Op, ...], args: tuple, kwargs: dict) -> Any:
    """Evaluate a compiled fx program with jax ops; fnml layers run the call_module nodes."""
    env: dict[str, Any] = {}
    positional = list(args)
    for op in program:
        if op.op == "placeholder":
            if positional:
                env[op.name] = _as_array(positional.pop(0))
            elif op.target in kwargs:
                env[op.name] = _as_array(kwargs[op.target])
            elif op.args:
                env[op.name] = op.args[0]  # the forward's default value
            else:
                raise TypeError(f"the twin's forward is missing the argument {op.target!r}")
            continue
        call_args = _lookup(env, op.args)
        call_kwargs = {k: _lookup(env, v) for k, v in op.kwargs}
        if op.op == "get_attr":
            variable = _resolve(root, op.target)
            env[op.name] = variable.get_value() if isinstance(variable, nnx.Variable) else variable
        elif op.op == "call_module":
            env[op.name] = _call_layer(_resolve(root, op.target), op.layout, call_args, call_kwargs)
        elif op.op == "call_function":
            env[op.name] = _FUNCTIONS[op.target](*call_args, **call_kwargs)
        elif op.op == "call_method":
            env[op.name] = _METHODS[op.target](*call_args, **call_kwargs)
        elif op.op == "output":
            return call_args[0]
    raise RuntimeError("the traced program has no output node")


def _as_array(value: Any) -> Any:
    """Inputs: torch tensors / numpy -> jax arrays; other values (None, ints) unchanged."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return jnp.asarray(value.detach().cpu().numpy())
    if isinstance(value, np.ndarray):
        return jnp.asarray(value)
    return value


def _call_layer(layer: Any, layout: str, args: tuple, kwargs: dict) -> Any:
    """Run one fnml layer on torch-layout values, converting channels around it when it needs that."""
    x, *rest = args
    if layout == "nchw" and x.ndim == 4:
        x = jnp.transpose(x, (0, 2, 3, 1))  # (N, C, H, W) -> (N, H, W, C)
        out = layer(x, *rest, **kwargs)
        return jnp.transpose(out, (0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    if layout == "nchw" and x.ndim != 4:
        raise ValueError(f"{type(layer).__name__} in a twin expects a batched (N, C, H, W) input, got shape {x.shape}")
    if layout == "ncl" and x.ndim == 3:
        out = layer(jnp.transpose(x, (0, 2, 1)), *rest, **kwargs)  # (N, C, L) -> (N, L, C)
        return jnp.transpose(out, (0, 2, 1))  # (N, L, C) -> (N, C, L)
    return layer(x, *rest, **kwargs)


# ---- torch functions and tensor methods, with torch's signatures, in jax ------------------------------


def _dims(dims: tuple) -> tuple:
    """``view(2, 3)`` / ``view((2, 3))`` / ``permute([1, 0])`` -> a tuple of ints."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        return tuple(dims[0])
    return tuple(dims)


def _flatten(x, start_dim=0, end_dim=-1):
    """torch.flatten: merge dims start_dim..end_dim (in the array's own order, torch's here)."""
    if x.ndim == 0:
        return x.reshape(1)
    start = start_dim % x.ndim
    end = end_dim % x.ndim
    # (..., d_start, ..., d_end, ...) -> (..., prod, ...)
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :])


def _reduce(fn):
    """torch.mean / torch.sum signature: (x, dim=None, keepdim=False, *, dtype=None)."""

    def reduce(x, dim=None, keepdim=False, *, dtype=None):
        axis = tuple(dim) if isinstance(dim, (list, tuple)) else dim
        out = fn(x, axis=axis, keepdims=keepdim)
        return out if dtype is None else out.astype(_jax_dtype(dtype))

    return reduce


def _jax_dtype(dtype: Any) -> Any:
    """A torch dtype -> the numpy dtype of the same name."""
    return np.dtype(str(dtype).replace("torch.", ""))


def _squeeze(x, dim=None):
    """torch.squeeze: a non-size-1 dim is left alone (jnp.squeeze would raise)."""
    if dim is None:
        return jnp.squeeze(x)
    dims = tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)
    dims = tuple(d % x.ndim for d in dims if x.shape[d] == 1)
    return jnp.squeeze(x, axis=dims) if dims else x


def _softmax(fn):
    """F.softmax / F.log_softmax signature: (x, dim, _stacklevel=3, dtype=None)."""

    def softmax(x, dim=None, _stacklevel=3, dtype=None):
        if dim is None:
            raise UnsupportedTorchOpError("softmax without dim is deprecated in torch; pass dim explicitly")
        if dtype is not None:
            x = x.astype(_jax_dtype(dtype))
        return fn(x, axis=dim)

    return softmax


def _pool_args(kernel_size, stride, padding, dilation=1):
    """Normalise torch pooling arguments to pairs."""

    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    kernel = pair(kernel_size)
    stride = kernel if stride is None or stride == [] or stride == () else pair(stride)
    return kernel, stride, pair(padding), pair(dilation)


def _max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """F.max_pool2d on (N, C, H, W) with -inf padding."""
    if ceil_mode or return_indices:
        raise UnsupportedTorchOpError("F.max_pool2d with ceil_mode=True or return_indices=True")
    kernel, stride, pad, dil = _pool_args(kernel_size, stride, padding, dilation)
    return jax.lax.reduce_window(
        x,
        -jnp.inf,
        jax.lax.max,
        (1, 1) + kernel,
        (1, 1) + stride,
        ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])),
        window_dilation=(1, 1) + dil,
    )


def _avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """F.avg_pool2d on (N, C, H, W): zero padding counted in the divisor by default, like torch."""
    if ceil_mode:
        raise UnsupportedTorchOpError("F.avg_pool2d with ceil_mode=True")
    kernel, stride, pad, _ = _pool_args(kernel_size, stride, padding)
    window = dict(
        window_dimensions=(1, 1) + kernel,
        window_strides=(1, 1) + stride,
        padding=((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])),
    )
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, **window)
    if divisor_override is not None:
        return total / divisor_override
    if count_include_pad:
        return total / (kernel[0] * kernel[1])
    counts = jax.lax.reduce_window(jnp.ones(x.shape[2:], x.dtype)[None, None], 0.0, jax.lax.add, **window)
    return total / counts


def _adaptive_avg_pool2d(x, output_size):
    """F.adaptive_avg_pool2d on (N, C, H, W): bin i spans [floor(i*H/out), ceil((i+1)*H/out))."""
    out_h, out_w = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    height, width = x.shape[-2:]
    out_h = height if out_h is None else out_h
    out_w = width if out_w is None else out_w
    rows = []
    for i in range(out_h):
        h0, h1 = (i * height) // out_h, -(-((i + 1) * height) // out_h)
        cols = []
        for j in range(out_w):
            w0, w1 = (j * width) // out_w, -(-((j + 1) * width) // out_w)
            cols.append(jnp.mean(x[..., h0:h1, w0:w1], axis=(-2, -1)))
        rows.append(jnp.stack(cols, axis=-1))
    return jnp.stack(rows, axis=-2)  # (N, C, out_h, out_w)


def _dropout(x, p=0.5, training=True, inplace=False):
    """F.dropout: only the identity cases (eval mode or p=0) are traceable; nn.Dropout handles the rest."""
    if training and p > 0:
        raise UnsupportedTorchOpError(
            "F.dropout(training=True, p>0) in forward: use an nn.Dropout module (fnml.layers.Dropout keeps "
            "the random stream in the twin)"
        )
    return x


def _gelu(x, approximate="none"):
    """F.gelu: exact erf by default (jax.nn.gelu defaults to the tanh approximation)."""
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def _softplus(x, beta=1.0, threshold=20.0):
    """F.softplus: log1p(exp(beta x)) / beta, linear where beta x > threshold (as torch)."""
    return jnp.where(x * beta > threshold, x, jnp.log1p(jnp.exp(x * beta)) / beta)


def _linear(x, weight, bias=None):
    """F.linear with a torch-layout (out, in) weight."""
    out = x @ weight.T
    return out if bias is None else out + bias


def _add(x, y, *, alpha=1):
    """torch.add(x, y, alpha=...)."""
    return x + (y if alpha == 1 else alpha * y)


def _sub(x, y, *, alpha=1):
    """torch.sub(x, y, alpha=...)."""
    return x - (y if alpha == 1 else alpha * y)


def _div(x, y, *, rounding_mode=None):
    """torch.div with rounding_mode None / 'floor' / 'trunc'."""
    if rounding_mode == "floor":
        return jnp.floor_divide(x, y)
    if rounding_mode == "trunc":
        return jnp.trunc(x / y)
    return jnp.true_divide(x, y)


def _clamp(x, min=None, max=None):  # noqa: A002 - torch's argument names
    """torch.clamp(x, min, max)."""
    return jnp.clip(x, min, max)


def _cat(tensors, dim=0):
    """torch.cat(tensors, dim)."""
    return jnp.concatenate(tensors, axis=dim)


def _stack(tensors, dim=0):
    """torch.stack(tensors, dim)."""
    return jnp.stack(tensors, axis=dim)


def _max_min(fn, arg):
    """torch.max / torch.min: full reduction, elementwise with a tensor, or (values, indices) over dim."""

    def reduce(x, dim=None, keepdim=False):
        if dim is None:
            return fn(x)
        if not isinstance(dim, int):  # torch.max(x, other): elementwise
            return jnp.maximum(x, dim) if fn is jnp.max else jnp.minimum(x, dim)
        return fn(x, axis=dim, keepdims=keepdim), arg(x, axis=dim, keepdims=keepdim)

    return reduce


def _size(x, dim=None):
    """x.size() / x.size(dim)."""
    return tuple(x.shape) if dim is None else x.shape[dim]


def _getattr(x, name):
    """Tensor attributes used for shapes: x.shape, x.ndim, x.T."""
    if name == "shape":
        return tuple(x.shape)
    if name == "ndim":
        return x.ndim
    if name == "T":
        return x.T
    raise UnsupportedTorchOpError(f"tensor attribute .{name}")


def _activation_table() -> dict[str, Callable]:
    """torch activation name -> jax function (shared by torch.X, F.X and tensor.X())."""
    return {
        "relu": lambda x, inplace=False: jax.nn.relu(x),
        "relu6": lambda x, inplace=False: jnp.clip(x, 0.0, 6.0),
        "sigmoid": jax.nn.sigmoid,
        "tanh": jnp.tanh,
        "silu": lambda x, inplace=False: jax.nn.silu(x),
        "gelu": _gelu,
        "elu": lambda x, alpha=1.0, inplace=False: jax.nn.elu(x, alpha),
        "leaky_relu": lambda x, negative_slope=0.01, inplace=False: jnp.where(x >= 0, x, negative_slope * x),
        "softplus": _softplus,
        "hardtanh": lambda x, min_val=-1.0, max_val=1.0, inplace=False: jnp.clip(x, min_val, max_val),
        "mish": lambda x, inplace=False: x * jnp.tanh(jax.nn.softplus(x)),
        "exp": jnp.exp,
        "log": jnp.log,
        "sqrt": jnp.sqrt,
        "abs": jnp.abs,
        "neg": jnp.negative,
        "sin": jnp.sin,
        "cos": jnp.cos,
        "softmax": _softmax(jax.nn.softmax),
        "log_softmax": _softmax(jax.nn.log_softmax),
    }


def _build_function_tables() -> tuple[dict[Any, Callable], dict[str, Callable]]:
    """The supported torch functions (by object) and tensor methods (by name)."""
    import torch
    import torch.nn.functional as F

    activations = _activation_table()
    functions: dict[Any, Callable] = {
        operator.add: operator.add,
        operator.sub: operator.sub,
        operator.mul: operator.mul,
        operator.truediv: operator.truediv,
        operator.floordiv: jnp.floor_divide,
        operator.matmul: jnp.matmul,
        operator.neg: operator.neg,
        operator.pow: jnp.power,
        operator.getitem: operator.getitem,
        builtins.getattr: _getattr,
        torch.add: _add,
        torch.sub: _sub,
        torch.mul: jnp.multiply,
        torch.div: _div,
        torch.matmul: jnp.matmul,
        torch.mm: jnp.matmul,
        torch.bmm: jnp.matmul,
        torch.pow: jnp.power,
        torch.flatten: _flatten,
        torch.reshape: lambda x, shape: jnp.reshape(x, tuple(shape)),
        torch.cat: _cat,
        torch.concat: _cat,
        torch.stack: _stack,
        torch.mean: _reduce(jnp.mean),
        torch.sum: _reduce(jnp.sum),
        torch.transpose: jnp.swapaxes,
        torch.permute: lambda x, dims: jnp.transpose(x, tuple(dims)),
        torch.squeeze: _squeeze,
        torch.unsqueeze: jnp.expand_dims,
        torch.clamp: _clamp,
        torch.max: _max_min(jnp.max, jnp.argmax),
        torch.min: _max_min(jnp.min, jnp.argmin),
        F.linear: _linear,
        F.max_pool2d: _max_pool2d,
        F.avg_pool2d: _avg_pool2d,
        F.adaptive_avg_pool2d: _adaptive_avg_pool2d,
        F.dropout: _dropout,
    }
    for name, fn in activations.items():
        for namespace in (torch, F):
            target = getattr(namespace, name, None)
            if target is not None:
                functions[target] = fn
    methods: dict[str, Callable] = {
        "view": lambda x, *shape: jnp.reshape(x, _dims(shape)),
        "reshape": lambda x, *shape: jnp.reshape(x, _dims(shape)),
        "flatten": _flatten,
        "size": _size,
        "dim": lambda x: x.ndim,
        "contiguous": lambda x, *a, **k: x,
        "mean": _reduce(jnp.mean),
        "sum": _reduce(jnp.sum),
        "transpose": jnp.swapaxes,
        "permute": lambda x, *dims: jnp.transpose(x, _dims(dims)),
        "squeeze": _squeeze,
        "unsqueeze": jnp.expand_dims,
        "t": lambda x: x.T,
        "add": _add,
        "sub": _sub,
        "mul": jnp.multiply,
        "div": _div,
        "matmul": jnp.matmul,
        "pow": jnp.power,
        "clamp": _clamp,
        "max": _max_min(jnp.max, jnp.argmax),
        "min": _max_min(jnp.min, jnp.argmin),
        "__getitem__": operator.getitem,
        **activations,
    }
    return functions, methods


_FUNCTIONS: dict[Any, Callable] = {}
_METHODS: dict[str, Callable] = {}


def _ensure_tables() -> None:
    """Fill the function/method tables on first use (they reference torch, imported lazily)."""
    if not _FUNCTIONS:
        functions, methods = _build_function_tables()
        _FUNCTIONS.update(functions)
        _METHODS.update(methods)


# ---- building the twin's layers -----------------------------------------------------------------------


def _layer_kwargs(fnml_cls: type, torch_module: Any, dtype: Any) -> dict[str, Any]:
    """Constructor keywords for ``fnml_cls`` read from the torch module's attributes of the same names."""
    kwargs: dict[str, Any] = {}
    for name, parameter in inspect.signature(fnml_cls.__init__).parameters.items():
        if name in ("self", "rngs") or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name == "param_dtype":
            kwargs[name] = dtype  # parameters in the torch module's dtype
            continue
        if name == "dtype":
            continue  # computation dtype: None promotes input and parameters, as torch computes
        if not hasattr(torch_module, name):
            continue
        value = getattr(torch_module, name)
        if name == "bias" and not isinstance(value, bool):
            value = value is not None  # torch keeps the bias Parameter (or None); fnml takes a flag
        kwargs[name] = value
    if "rngs" in inspect.signature(fnml_cls.__init__).parameters:
        kwargs["rngs"] = nnx.Rngs(0, dropout=0)
    return kwargs


def _check_supported_settings(torch_module: Any, path: str) -> None:
    """Settings fnml's layers do not implement: refuse rather than build a twin that computes otherwise."""
    name = type(torch_module).__name__
    unsupported = []
    if getattr(torch_module, "proj_size", 0):
        unsupported.append(f"proj_size={torch_module.proj_size}")
    if getattr(torch_module, "max_norm", None) is not None:
        unsupported.append(f"max_norm={torch_module.max_norm}")
    if getattr(torch_module, "return_indices", False):
        unsupported.append("return_indices=True")
    if unsupported:
        raise UnsupportedTorchOpError(
            f"from_torch: torch.nn.{name} at {path!r} uses {', '.join(unsupported)}, which "
            f"fnml.layers.{name} "
            f"does not implement"
        )


def _build_twin_tree(torch_module: Any, path: str, dtype: Any) -> Any:
    """fnml counterpart of one torch module: an fnml layer, a Sequential, or a container."""
    import torch

    name = type(torch_module).__name__
    is_torch_nn = type(torch_module).__module__.startswith("torch.nn.modules")
    if isinstance(torch_module, torch.nn.Sequential) and type(torch_module) is torch.nn.Sequential:
        children = [
            _build_twin_tree(child, f"{path}.{i}" if path else str(i), dtype) for i, child in enumerate(torch_module)
        ]
        return layers.Sequential(*children)
    if is_torch_nn and name not in ("ModuleList", "ModuleDict", "Sequential"):
        fnml_cls = _fnml_layer_class(name)
        if fnml_cls is None or fnml_cls not in _CONVERTERS:
            raise UnsupportedTorchOpError(
                f"from_torch: torch.nn.{name} at {path or '<root>'!r} has no fnml counterpart; supported "
                f"layers: {sorted(c.__name__ for c in _CONVERTERS)}"
            )
        _check_supported_settings(torch_module, path or "<root>")
        return fnml_cls(**_layer_kwargs(fnml_cls, torch_module, dtype))
    # A custom module (or ModuleList / ModuleDict): a container with torch's attribute names.
    own = [n for n, _ in torch_module.named_parameters(recurse=False)]
    own += [n for n, b in torch_module.named_buffers(recurse=False) if b is not None and n not in own]
    children = list(torch_module.named_children())
    container = _TorchContainer(name, tuple(own) + tuple(n for n, _ in children))
    return _fill_container(container, torch_module, children, path, dtype)


def _fill_container(container, torch_module, children, path, dtype):
    """Attach a custom module's own parameters/buffers and converted children to its twin container."""
    for param_name, param in torch_module.named_parameters(recurse=False):
        setattr(container, param_name, nnx.Param(jnp.asarray(param.detach().cpu().numpy())))
    for buffer_name, buffer in torch_module.named_buffers(recurse=False):
        if buffer is not None:
            setattr(container, buffer_name, nnx.BatchStat(jnp.asarray(buffer.detach().cpu().numpy())))
    for child_name, child in children:
        setattr(
            container,
            child_name,
            _build_twin_tree(child, f"{path}.{child_name}" if path else child_name, dtype),
        )
    return container


def _node_location(node: Any) -> str:
    """The user's source line for an fx node (recorded by :func:`_make_tracer` while tracing)."""
    return node.meta.get("fnml_location") or "unknown source location"


def _user_frame() -> str:
    """'file:line in function: code' of the innermost stack frame outside torch and this module."""
    import traceback

    import torch

    skipped = (os.path.dirname(torch.__file__), os.path.abspath(__file__))
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(skipped):
            return f"{frame.filename}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
    return ""


def _make_tracer() -> Any:
    """A torch.fx tracer that remembers, for every node, the user source line that created it."""
    import torch.fx

    class _LocatingTracer(torch.fx.Tracer):
        def create_node(self, *args: Any, **kwargs: Any) -> Any:
            node = super().create_node(*args, **kwargs)
            node.meta["fnml_location"] = _user_frame()
            return node

    return _LocatingTracer()


def _describe_target(node: Any) -> str:
    """A readable name for an fx node's target (torch.erf, F.relu, tensor.numpy(), ...)."""
    target = node.target
    if node.op == "call_method":
        return f"tensor method .{target}()"
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", repr(target))
    return f"function {module}.{name}" if module else f"function {name}"


def _compile(graph: Any, torch_root: Any) -> tuple[_Op, ...]:
    """fx graph -> a hashable program; unsupported ops raise naming the op, the node and the source line."""
    _ensure_tables()

    def convert(value):
        if isinstance(value, _fx_node_type()):
            return _Ref(value.name)
        if isinstance(value, slice):
            return _SliceSpec(convert(value.start), convert(value.stop), convert(value.step))
        if isinstance(value, (list, tuple)):
            return tuple(convert(v) for v in value)
        if isinstance(value, dict):
            raise UnsupportedTorchOpError(f"a dict argument {value!r}")
        if hasattr(value, "detach"):
            raise UnsupportedTorchOpError("a tensor constant captured in forward (register it as a buffer)")
        return value

    program = []
    for node in graph.nodes:
        layout = ""
        if node.op == "call_function" and node.target not in _FUNCTIONS:
            _unsupported(node, _describe_target(node))
        if node.op == "call_method" and node.target not in _METHODS:
            _unsupported(node, _describe_target(node))
        if node.op == "call_module":
            kind = type(torch_root.get_submodule(node.target)).__name__
            layout = "nchw" if kind in _CHANNELS_LAST_2D else ("ncl" if kind == "BatchNorm1d" else "")
        try:
            args = convert(tuple(node.args))
            kwargs = tuple((k, convert(v)) for k, v in node.kwargs.items())
        except UnsupportedTorchOpError as error:
            _unsupported(node, str(error))
        program.append(_Op(node.name, node.op, node.target, args, kwargs, layout))
    return tuple(program)


def _fx_node_type():
    """torch.fx.Node, imported lazily."""
    import torch.fx

    return torch.fx.Node


def _unsupported(node: Any, what: str) -> None:
    """Raise the error for an op the twin cannot run."""
    raise UnsupportedTorchOpError(
        f"from_torch: unsupported operation {what} at fx node {node.name!r} ({node.format_node()}), used at "
        f"{_node_location(node)}. Supported: fnml.layers modules, torch/F activations and pooling, flatten, "
        f"view/reshape, cat/stack, + - * / @, mean/sum, transpose/permute, squeeze/unsqueeze, indexing."
    )


def from_torch(torch_module: Any) -> TorchTwin:
    """Build an fnml twin of a torch module: same weights, same inputs (NCHW images), same outputs.

    PyTorch equivalent: none (the twin IS the torch module, in JAX).

    Works for ``nn.Sequential`` trees of fnml's layers and for custom ``nn.Module`` subclasses whose
    ``forward`` uses those layers and common torch functions / tensor methods (``torch.relu``, ``F.*``
    activations and pooling, ``flatten``, ``view``/``reshape``, ``cat``, ``+ * @``, ``mean``,
    ``transpose``/``permute``, indexing). The forward is traced once with ``torch.fx.symbolic_trace``;
    the twin (:class:`TorchTwin`) runs the traced graph with jax ops and fnml layers (``nnx.Param``
    weights under torch names, so ``jax.grad``/optax train it and :func:`state_dict` round-trips).

    Layout: values stay in torch layout between layers; fnml's channels-last Conv2d / pools /
    BatchNorm2d get NHWC (transposed in and out; XLA folds back-to-back transposes), so
    ``flatten``/``view`` run in torch's (C, H, W) order and the next Linear's weight needs no permutation.

    The twin is built in the torch module's parameter dtype and mode (``train()``/``eval()``). Dropout
    masks cannot match torch's random stream. Python control flow on tensor values cannot be traced
    (a torch.fx limitation); an unsupported module, function or method raises
    :class:`UnsupportedTorchOpError` naming it, its fx node and the source line using it.

    Example::

        twin = interop.from_torch(torch_cnn.eval())
        twin(jnp.asarray(x_nchw))          # == torch_cnn(torch.from_numpy(x_nchw))
    """
    import torch
    import torch.fx

    if not isinstance(torch_module, torch.nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(torch_module).__name__}")
    params = list(torch_module.parameters())
    dtype = params[0].dtype if params else torch.get_default_dtype()
    dtype = jax.dtypes.canonicalize_dtype(_jax_dtype(dtype))

    tracer = _make_tracer()
    try:
        graph = tracer.trace(torch_module)
    except Exception as error:  # torch.fx raises TraceError, TypeError, RuntimeError...
        raise UnsupportedTorchOpError(
            f"from_torch: torch.fx could not trace {type(torch_module).__name__}.forward "
            f"({type(error).__name__}: "
            f"{error}); data-dependent Python control flow is not traceable"
        ) from error
    program = _compile(graph, torch_module)

    # Build the layer tree first (an unsupported layer fails before anything else is done).
    twin_children = []
    if type(torch_module) is torch.nn.Sequential or not type(torch_module).__module__.startswith("torch.nn"):
        twin_children = list(torch_module.named_children())
    else:  # a single torch.nn layer at the root: the twin holds it as its only child
        raise UnsupportedTorchOpError(
            f"from_torch: pass a model, not a bare torch.nn.{type(torch_module).__name__}; wrap it in "
            f"nn.Sequential(...)"
        )
    own = [n for n, _ in torch_module.named_parameters(recurse=False)]
    own += [n for n, b in torch_module.named_buffers(recurse=False) if b is not None and n not in own]
    source = torch.fx.GraphModule(torch_module, graph).code
    twin = TorchTwin(type(torch_module).__name__, tuple(own) + tuple(n for n, _ in twin_children), program, source)
    _fill_container(twin, torch_module, twin_children, "", dtype)

    # Weights: through the same torch-name machinery as load_state_dict, in the torch dtype.
    _load(twin, torch_module.state_dict(), strict=True, flatten_nhwc=None, keep_source_dtype=True)
    if torch_module.training:
        twin.train()
    else:
        twin.eval()
    return twin
