"""State dicts and layouts: torch names and torch layouts <-> fnml variables (the one place layouts change).

PyTorch equivalent: ``model.state_dict()`` / ``model.load_state_dict(sd)``.

Each fnml layer declares its tensors on its class (``torch_facts.slots``, see :mod:`fnml.layers._facts`):
``torch name -> fnml attribute`` with the transpose between the two layouts (see the table in
:mod:`fnml.interop`); composites (containers, attention) are walked child by child. A variable reachable
under several torch names (a tied parameter) is listed under every name; a buffer marked non-persistent
(``persistent=False`` metadata) is not listed, as in torch.
"""

from __future__ import annotations

import functools
import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnml import _torch, layers
from fnml.interop._readers import load_safetensors, load_torch_file
from fnml.layers._facts import TorchFacts

# Variable metadata marking a torch buffer registered with persistent=False (kept out of state_dict).
_PERSISTENT = "persistent"


class StateDictError(RuntimeError):
    """A state dict does not fit a model: lists every missing key, unexpected key and shape mismatch."""


def _raise_load_problems(
    owner: str, mismatched: list, missing: list, unexpected: list, *, strict: bool, in_state_dict: bool = False
) -> None:
    """One :class:`StateDictError` listing every size mismatch (always) and missing / unexpected key (strict).

    torch's ``load_state_dict`` message layout; ``in_state_dict`` words the keys as torch's module method
    does ("Missing key(s) in state_dict: ...").
    """
    where = " in state_dict" if in_state_dict else ""
    problems = []
    if mismatched:
        problems.append("size mismatch for " + "; ".join(mismatched))
    if strict and missing:
        problems.append(f"Missing key(s){where}: " + ", ".join(repr(k) for k in missing))
    if strict and unexpected:
        problems.append(f"Unexpected key(s){where}: " + ", ".join(repr(k) for k in unexpected))
    if problems:
        raise StateDictError(f"Error(s) in loading state_dict for {owner}:\n\t" + "\n\t".join(problems))


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


def _facts_of(module: Any) -> TorchFacts | None:
    """The torch facts a module's class declares (inherited by subclasses), or None for a non-fnml module."""
    facts = getattr(type(module), "torch_facts", None)
    return facts if isinstance(facts, TorchFacts) else None


def _slots(module: Any) -> list[_Slot] | None:
    """The module's torch tensors when it is a declared layer (not a composite), else None.

    A slot whose attribute holds no variable (``bias=False``, ``affine=False``) is left out, as in torch.
    """
    facts = _facts_of(module)
    if facts is None or facts.composite:
        return None
    return [
        _Slot(slot.torch_name, module, slot.attr, slot.perm, slot.is_count)
        for slot in facts.slots_of(module)
        if getattr(module, slot.attr, None) is not None
    ]


@functools.cache
def _declared_layers() -> dict[str, type]:
    """torch class name -> the fnml layer class declaring it (layers with tensors or parameterless, no composites)."""
    table: dict[str, type] = {}
    for value in vars(layers).values():
        facts = value.__dict__.get("torch_facts") if isinstance(value, type) else None
        if isinstance(facts, TorchFacts) and not facts.composite:
            for torch_class in facts.torch_classes:
                table[torch_class] = value
    return table


def _fnml_layer_class(name: str) -> type | None:
    """fnml's layer class for a torch.nn class name (from the layers' declarations), or None."""
    return _declared_layers().get(name)


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


def _named_modules(module: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(torch path, module) for every module of an fnml model, the root first (Sequential children by index).

    PyTorch equivalent: ``model.named_modules()``.
    """
    yield prefix, module
    for name, child in _children(module):
        if isinstance(child, nnx.Module):
            yield from _named_modules(child, f"{prefix}.{name}" if prefix else name)


def _walk(
    module: Any, prefix: str = "", *, with_non_persistent: bool = False
) -> Iterator[tuple[str, Any, list[_Slot]]]:
    """Yield (torch module name, module, slots) for every registry layer and every container variable."""
    slots = _slots(module)
    if slots is not None:
        yield prefix.rstrip("."), module, slots
        return
    if type(module).__module__.startswith("flax."):
        raise TypeError(
            f"state_dict/load_state_dict: {type(module).__module__}.{type(module).__name__} at "
            f"{prefix.rstrip('.') or '<root>'!r} has no torch layout converter; use the fnml.layers "
            f"counterpart (declared layers: {sorted(_declared_layers())})"
        )
    own = []
    for name, child in _children(module):
        if isinstance(child, nnx.Variable):
            # A parameter or buffer held directly by a container (torch's custom nn.Parameter):
            # same name, same layout on both sides. Non-persistent buffers are not in torch's state_dict.
            persistent = child.get_metadata().get(_PERSISTENT, True) or with_non_persistent
            if child.get_value() is not None and persistent:
                own.append(_Slot(name, module, name))
    if own:
        yield prefix.rstrip("."), module, own
    for name, child in _children(module):
        if isinstance(child, nnx.Module):
            yield from _walk(child, f"{prefix}{name}.", with_non_persistent=with_non_persistent)


def named_layers(model: nnx.Module) -> list[tuple[str, nnx.Module]]:
    """(torch module name, fnml layer) for every fnml layer in ``model``, in torch's module order.

    PyTorch equivalent: ``[(n, m) for n, m in model.named_modules() if not list(m.children())]``.

    >>> from flax import nnx
    >>> from fnml import interop, layers
    >>> [name for name, _ in interop.named_layers(layers.SimpleNN(rngs=nnx.Rngs(0)))]
    ['fc1', 'fc2']
    """
    return [(name, module) for name, module, _ in _walk(model) if _slots(module) is not None]


def _named_slots(model: nnx.Module, *, with_non_persistent: bool = False) -> OrderedDict[str, _Slot]:
    """torch name -> slot, for every tensor of ``model``, in torch's state_dict order.

    A tied variable appears under each of its names; non-persistent buffers only with ``with_non_persistent``.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module (an fnml model), got {type(model).__name__}")
    slots: OrderedDict[str, _Slot] = OrderedDict()
    for module_name, _, module_slots in _walk(model, with_non_persistent=with_non_persistent):
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

    >>> from flax import nnx
    >>> from fnml import interop, layers
    >>> list(interop.state_dict(layers.SimpleNN(rngs=nnx.Rngs(0))))
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
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
    """A torch tensor / jax array / numpy array -> numpy array (the torch bridge: bfloat16 stays bfloat16)."""
    if _torch.is_tensor(value) or isinstance(value, (np.ndarray, jax.Array, np.generic, int, float)):
        return _torch.as_numpy(value)
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
            return load_torch_file(path)
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

    >>> from flax import nnx
    >>> from fnml import interop, layers
    >>> source = interop.state_dict(layers.SimpleNN(rngs=nnx.Rngs(1)))   # or torch_model.state_dict()
    >>> model = interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), source)
    >>> bool((model.fc1.kernel[...].T == source["fc1.weight"]).all())
    True
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

    # A tied variable is loaded from any of its names (torch copies each present name into the one tensor).
    aliases: dict[int, list[str]] = {}
    for name, slot in slots.items():
        aliases.setdefault(id(slot.variable), []).append(name)
    missing = [name for name, slot in slots.items() if not any(alias in arrays for alias in aliases[id(slot.variable)])]
    unexpected = [name for name in arrays if name not in slots]
    mismatched = []
    for name, slot in slots.items():
        if name in arrays and tuple(arrays[name].shape) != slot.torch_shape:
            mismatched.append(
                f"{name}: shape {tuple(arrays[name].shape)} in the state dict, {slot.torch_shape} in the "
                f"model (torch layout)"
            )
    _raise_load_problems(type(model).__name__, mismatched, missing, unexpected, strict=strict)

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
