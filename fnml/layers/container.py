"""Containers (Sequential, ...) and shape layers (Flatten, ...).

PyTorch equivalent: ``torch/nn/modules/container.py``, ``flatten.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fnml.layers._facts import CHILDREN, LOWERS_OP_BY_OP, PARAMETERLESS, LayerCall, TorchFacts
from fnml.layers.base import (
    _TORCH_CONTAINERS,
    Module,
    _add_indent,
    _child_repr,
    _normalize_dim,
)

__all__ = ["Flatten", "ModuleDict", "ModuleList", "Sequential", "Unflatten"]


# --------------------------------------------------------------------------------------------------
# Containers and the tutorial model
# --------------------------------------------------------------------------------------------------


class Sequential(Module):
    """Apply layers in order; indexable, sliceable, iterable and sized like torch's.

    PyTorch equivalent: ``torch.nn.Sequential(*layers)``.

    Children live in the attribute ``layers`` (an ``nnx.List``); child ``i``'s torch state_dict prefix is
    ``"i."`` (``fnml.interop`` drops the ``layers`` path component). ``seq[i]`` is a layer, ``seq[a:b]``
    a new Sequential sharing those layers, ``len(seq)`` and ``for layer in seq`` work as in torch.
    Difference: a slice renumbers its children from 0 (torch keeps the original names, ``(5): ...``).
    Children must be modules, as in torch (wrap functions: ``ReLU()`` rather than ``jax.nn.relu``).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> rngs = nnx.Rngs(0)
    >>> model = layers.Sequential(layers.Linear(2, 4, rngs=rngs), layers.ReLU(), layers.Linear(4, 1, rngs=rngs))
    >>> model[0].kernel.shape, len(model)  # (in, out) kernel: torch's weight.T
    ((2, 4), 3)
    >>> model(jnp.ones((5, 2), jnp.float32)).shape
    (5, 1)
    >>> print(model[1:])  # a slice renumbers from 0 (torch would print (1), (2))
    Sequential(
      (0): ReLU()
      (1): Linear(in_features=4, out_features=1, bias=True)
    )
    """

    torch_facts = TorchFacts(
        "Sequential",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, *layers: nnx.Module):
        for index, layer in enumerate(layers):
            if not isinstance(layer, nnx.Module):
                raise TypeError(
                    f"Sequential: layer {index} must be a module (e.g. layers.ReLU() rather than "
                    f"jax.nn.relu), got {type(layer).__name__}"
                )
        self.layers = nnx.List(layers)

    def __call__(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self.layers)

    def _torch_children(self) -> list[tuple[str, Any]]:
        """Children as torch names them: ``"0"``, ``"1"``, ..."""
        return [(str(index), layer) for index, layer in enumerate(self.layers)]

    def __iter__(self) -> Iterator[nnx.Module]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Sequential(*list(self.layers)[index])
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"Sequential indices must be int or slice, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"Sequential: index {index} is out of range for {len(self)} layers")
        return self.layers[index]


class Flatten(Module):
    """Flatten axes ``start_dim..end_dim`` into one.

    PyTorch equivalent: ``torch.nn.Flatten(start_dim=1, end_dim=-1)``.

    Flattens in the array's own order: after an NHWC conv stack that is (H, W, C), whereas torch
    flattens (C, H, W); ``fnml.interop`` permutes the next Linear's weight accordingly.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.Flatten()(jnp.ones((8, 7, 7, 64))).shape
    (8, 3136)
    >>> layers.Flatten(0, 1)(jnp.ones((2, 3, 4))).shape
    (6, 4)
    >>> print(layers.Flatten())
    Flatten(start_dim=1, end_dim=-1)
    """

    torch_facts = TorchFacts(
        "Flatten",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("start_dim", "end_dim"),
        capture=LayerCall(("aten.flatten",), "first"),
        autocast=False,
    )

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Flatten: {name} must be an int, got {name}={value!r}")
        self.start_dim = start_dim
        self.end_dim = end_dim

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        ndim = max(x.ndim, 1)
        start = _normalize_dim(self.start_dim, ndim, "Flatten")
        end = _normalize_dim(self.end_dim, ndim, "Flatten")
        if start > end:
            raise ValueError(
                f"Flatten: start_dim={self.start_dim} must not come after end_dim={self.end_dim} for a {x.ndim}-D input"
            )
        shape = x.shape if x.ndim else (1,)
        # (..., d_start, ..., d_end, ...) -> (..., d_start * ... * d_end, ...)
        return x.reshape(shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# --------------------------------------------------------------------------------------------------
# ModuleList, ModuleDict: children stored as attributes under torch's names
# --------------------------------------------------------------------------------------------------
# Each child is an attribute named as torch names it ("0", "1", ... or the dict key), so state_dict paths are
# torch's ("blocks.0.weight"); ``_torch_order`` (static, kept through nnx.split/merge, which sort attributes)
# records torch's registration order for ``fnml.interop`` and ``print``.


def _check_module(value: Any, where: str) -> nnx.Module:
    if not isinstance(value, nnx.Module):
        raise TypeError(
            f"{where}: {type(value).__name__} is not a module (wrap functions in a layer, e.g. layers.ReLU() "
            "rather than jax.nn.relu)"
        )
    return value


class _NamedChildren(Module):
    """Shared storage: children as attributes under ``_torch_order``'s names."""

    def __init__(self) -> None:
        self._torch_order: tuple[str, ...] = ()

    def _torch_children(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in self._torch_order]

    def _set_children(self, pairs: list[tuple[str, nnx.Module]]) -> None:
        """Replace every child by ``pairs`` (name, module), in that order."""
        for name in self._torch_order:
            delattr(self, name)
        for name, module in pairs:
            setattr(self, name, module)
        self._torch_order = tuple(name for name, _ in pairs)

    def __len__(self) -> int:
        return len(self._torch_order)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function: a container is iterated '
            "or indexed, not called (as in torch)"
        )


class ModuleList(_NamedChildren):
    """A list of modules: indexable, sliceable, iterable, with ``append``/``extend``/``insert``/``pop``.

    PyTorch equivalent: ``torch.nn.ModuleList(modules=None)``.

    Child ``i`` is registered under torch's name ``"i"``: a model holding ``self.blocks = ModuleList([...])``
    has torch's state_dict keys ``blocks.0.weight``, ``blocks.1.weight``... and prints like torch
    (repeated identical children compressed as ``(0-2): 3 x Linear(...)``). Indices are renumbered after
    ``insert``/``del``/``pop`` as in torch; a slice is a new ModuleList (numbered from 0) sharing the
    modules. Calling it is an error, as in torch: iterate it in your ``__call__``.

    >>> from flax import nnx
    >>> from fnml import layers
    >>> blocks = ModuleList([layers.Linear(2, 2, rngs=nnx.Rngs(i)) for i in range(3)])
    >>> _ = blocks.append(layers.ReLU())
    >>> len(blocks), type(blocks[-1]).__name__, len(blocks[1:])
    (4, 'ReLU', 3)
    >>> print(blocks)
    ModuleList(
      (0-2): 3 x Linear(in_features=2, out_features=2, bias=True)
      (3): ReLU()
    )
    """

    torch_facts = TorchFacts(
        "ModuleList",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, modules: Iterable[nnx.Module] | None = None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _modules_list(self) -> list[nnx.Module]:
        return [getattr(self, name) for name in self._torch_order]

    def _renumber(self, modules: list[nnx.Module]) -> None:
        self._set_children([(str(index), module) for index, module in enumerate(modules)])

    def _index(self, index: Any) -> int:
        """torch's ``_get_abs_string_index``: an int in [-len, len), made non-negative."""
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"ModuleList indices must be integers or slices, not {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"ModuleList: index {index} is out of range for {len(self)} modules")
        return index % len(self)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return type(self)(self._modules_list()[index])
        return getattr(self, str(self._index(index)))

    def __setitem__(self, index: int, module: nnx.Module) -> None:
        modules = self._modules_list()
        modules[self._index(index)] = _check_module(module, "ModuleList")
        self._renumber(modules)

    def __delitem__(self, index: int | slice) -> None:
        modules = self._modules_list()
        if isinstance(index, slice):
            del modules[index]
        else:
            del modules[self._index(index)]
        self._renumber(modules)

    def __iter__(self) -> Iterator[nnx.Module]:
        return iter(self._modules_list())

    def __iadd__(self, modules: Iterable[nnx.Module]) -> ModuleList:
        return self.extend(modules)

    def __add__(self, other: Iterable[nnx.Module]) -> ModuleList:
        return ModuleList([*self, *other])

    def append(self, module: nnx.Module) -> ModuleList:
        """Add ``module`` at the end (name ``str(len(self))``); returns ``self``.

        PyTorch equivalent: ``torch.nn.ModuleList.append(module)``.
        """
        return self.extend([module])

    def extend(self, modules: Iterable[nnx.Module]) -> ModuleList:
        """Add every module of ``modules`` at the end, in order; returns ``self``.

        PyTorch equivalent: ``torch.nn.ModuleList.extend(modules)``.
        """
        if not isinstance(modules, Iterable):
            raise TypeError(
                f"ModuleList.extend should be called with an iterable of modules, but got {type(modules).__name__}"
            )
        new = [_check_module(module, f"ModuleList: item {index}") for index, module in enumerate(modules)]
        self._renumber(self._modules_list() + new)
        return self

    def insert(self, index: int, module: nnx.Module) -> None:
        """Insert ``module`` before position ``index`` (later children are renumbered).

        PyTorch equivalent: ``torch.nn.ModuleList.insert(index, module)``.
        """
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"ModuleList.insert: index must be an int, got {type(index).__name__}")
        modules = self._modules_list()
        modules.insert(index, _check_module(module, "ModuleList.insert"))
        self._renumber(modules)

    def pop(self, index: int = -1) -> nnx.Module:
        """Remove and return the module at ``index`` (later children are renumbered).

        PyTorch equivalent: ``torch.nn.ModuleList.pop(key)``.
        """
        module = self[index]
        del self[index]
        return module

    def __repr__(self) -> str:
        # torch's ModuleList.__repr__: runs of identical children print once, as "(i-j): n x child".
        texts = [_child_repr(module) for module in self]  # a nested ModuleList compresses its own runs too
        if not texts:
            return "ModuleList()"
        runs: list[list[Any]] = []  # [start, end, text]
        for index, text in enumerate(texts):
            if runs and runs[-1][2] == text:
                runs[-1][1] = index
            else:
                runs.append([index, index, text])
        lines = [
            _add_indent(f"({start}): {text}" if start == end else f"({start}-{end}): {end - start + 1} x {text}", 2)
            for start, end, text in runs
        ]
        return "ModuleList(\n  " + "\n  ".join(lines) + "\n)"

    __str__ = __repr__


class ModuleDict(_NamedChildren):
    """An ordered dict of modules: ``md[key]``, ``keys()``/``items()``/``values()``, ``update``, insertion order.

    PyTorch equivalent: ``torch.nn.ModuleDict(modules=None)``.

    Each entry is registered under its key, so ``self.heads = ModuleDict({"cls": ...})`` has torch's state_dict
    keys ``heads.cls.weight``; order is insertion order (``update`` with a mapping or with (key, module)
    pairs keeps the given order), through ``nnx.split``/``merge`` too. Keys follow torch's rules: a
    non-empty ``str`` without ``"."`` that is not already an attribute (``"keys"``, ``"update"``... are
    refused with torch's ``KeyError``).

    >>> from flax import nnx
    >>> from fnml import layers
    >>> heads = ModuleDict({"cls": layers.Linear(4, 3, rngs=nnx.Rngs(0)), "act": layers.ReLU()})
    >>> list(heads.keys()), "cls" in heads
    (['cls', 'act'], True)
    >>> print(heads)
    ModuleDict(
      (cls): Linear(in_features=4, out_features=3, bias=True)
      (act): ReLU()
    )
    """

    torch_facts = TorchFacts(
        "ModuleDict",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, modules: Mapping[str, nnx.Module] | Iterable[tuple[str, nnx.Module]] | None = None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def _check_key(self, key: Any) -> str:
        if not isinstance(key, str):
            raise TypeError(f"ModuleDict: module name should be a string, got {type(key).__name__}")
        if key == "":
            raise KeyError('ModuleDict: module name cannot be the empty string ""')
        if "." in key:
            raise KeyError(f'ModuleDict: module name cannot contain ".", got: {key}')
        if key not in self._torch_order and hasattr(self, key):
            raise KeyError(f"ModuleDict: attribute '{key}' already exists")
        return key

    def __getitem__(self, key: str) -> nnx.Module:
        if key not in self._torch_order:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, module: nnx.Module) -> None:
        key = self._check_key(key)
        module = _check_module(module, f"ModuleDict[{key!r}]")
        pairs = self._torch_children()
        if key in self._torch_order:  # replacing keeps the position, as a dict does
            pairs = [(name, module if name == key else value) for name, value in pairs]
        else:
            pairs.append((key, module))
        self._set_children(pairs)

    def __delitem__(self, key: str) -> None:
        if key not in self._torch_order:
            raise KeyError(key)
        self._set_children([(name, value) for name, value in self._torch_children() if name != key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._torch_order)

    def __contains__(self, key: Any) -> bool:
        return key in self._torch_order

    def keys(self) -> list[str]:
        """The keys in insertion order.

        PyTorch equivalent: ``torch.nn.ModuleDict.keys()``.
        """
        return list(self._torch_order)

    def values(self) -> list[nnx.Module]:
        """The modules in insertion order.

        PyTorch equivalent: ``torch.nn.ModuleDict.values()``.
        """
        return [getattr(self, name) for name in self._torch_order]

    def items(self) -> list[tuple[str, nnx.Module]]:
        """(key, module) pairs in insertion order.

        PyTorch equivalent: ``torch.nn.ModuleDict.items()``.
        """
        return self._torch_children()

    def pop(self, key: str) -> nnx.Module:
        """Remove ``key`` and return its module.

        PyTorch equivalent: ``torch.nn.ModuleDict.pop(key)``.
        """
        module = self[key]
        del self[key]
        return module

    def clear(self) -> None:
        """Remove every entry.

        PyTorch equivalent: ``torch.nn.ModuleDict.clear()``.
        """
        self._set_children([])

    def update(self, modules: Mapping[str, nnx.Module] | Iterable[tuple[str, nnx.Module]]) -> None:
        """Add or replace entries from a mapping or an iterable of (key, module) pairs, in their order.

        PyTorch equivalent: ``torch.nn.ModuleDict.update(modules)``.
        """
        if isinstance(modules, (ModuleDict, Mapping)):
            for key, module in modules.items():
                self[key] = module
            return
        if not isinstance(modules, Iterable) or isinstance(modules, (str, nnx.Module)):
            raise TypeError(
                "ModuleDict.update should be called with a mapping or an iterable of (key, module) pairs, "
                f"but got {type(modules).__name__}"
            )
        for index, pair in enumerate(modules):
            if not isinstance(pair, (tuple, list)):
                raise TypeError(
                    f"ModuleDict.update: sequence element #{index} should be a (key, module) pair, "
                    f"got {type(pair).__name__}"
                )
            if len(pair) != 2:
                raise ValueError(f"ModuleDict.update: sequence element #{index} has length {len(pair)}; 2 is required")
            self[pair[0]] = pair[1]


class Unflatten(Module):
    """Split axis ``dim`` into the shape ``unflattened_size`` (one entry may be -1).

    PyTorch equivalent: ``torch.nn.Unflatten(dim, unflattened_size)``.

    Works on the array's own axes, like torch's: ``Unflatten(1, (C, H, W))`` after a Linear gives torch's
    NCHW ``(N, C, H, W)``; fnml's ``Conv2d`` reads NHWC, so a native fnml decoder writes
    ``Unflatten(1, (H, W, C))`` (``fnml.interop`` converts the torch layout when porting).

    >>> print(Unflatten(1, (2, 3)))
    Unflatten(dim=1, unflattened_size=(2, 3))
    >>> Unflatten(1, (2, -1))(jnp.ones((4, 6, 5))).shape
    (4, 2, 3, 5)
    """

    torch_facts = TorchFacts(
        "Unflatten",
        slots=PARAMETERLESS,
        layout="torch",
        settings=("dim", "unflattened_size"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, dim: int, unflattened_size: tuple[int, ...] | list[int]):
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"Unflatten: dim must be an int, got dim={dim!r}")
        if not isinstance(unflattened_size, (tuple, list)):
            raise TypeError(
                f"Unflatten: unflattened_size must be a tuple of ints, but found type {type(unflattened_size).__name__}"
            )
        for index, size in enumerate(unflattened_size):
            if not isinstance(size, int) or isinstance(size, bool):
                raise TypeError(
                    "Unflatten: unflattened_size must be tuple of ints, "
                    f"but found element of type {type(size).__name__} at pos {index}"
                )
        if not unflattened_size:
            raise ValueError("Unflatten: unflattened_size must be non-empty, got ()")
        if sum(size == -1 for size in unflattened_size) > 1 or any(size < -1 for size in unflattened_size):
            raise ValueError(
                f"Unflatten: unflattened_size may hold one -1 and otherwise sizes >= 0, got {unflattened_size!r}"
            )
        self.dim = dim
        self.unflattened_size = unflattened_size  # kept as given (tuple or list): torch prints it so

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        axis = _normalize_dim(self.dim, max(x.ndim, 1), "Unflatten")
        sizes = tuple(self.unflattened_size)
        length = x.shape[axis] if x.ndim else 1
        known = math.prod(size for size in sizes if size != -1)
        if -1 in sizes:
            if known == 0 or length % known:
                raise ValueError(
                    f"Unflatten: cannot split dimension {self.dim} of size {length} into {self.unflattened_size}"
                )
            sizes = tuple(length // known if size == -1 else size for size in sizes)
        elif known != length:
            raise ValueError(
                f"Unflatten: unflattened_size {self.unflattened_size} must multiply to the size of dimension "
                f"{self.dim} ({length}), got a product of {known}"
            )
        shape = x.shape if x.ndim else (1,)
        # (..., d, ...) -> (..., *sizes, ...)
        return x.reshape(shape[:axis] + sizes + shape[axis + 1 :])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


# A plain list / dict of modules assigned to a layers.Module attribute becomes one of these (layers.base).
_TORCH_CONTAINERS[list] = ModuleList
_TORCH_CONTAINERS[dict] = ModuleDict
