"""The base of every fnml layer: torch's ``print(model)``, ``train()``/``eval()``, init helpers, freezing.

PyTorch equivalent: ``torch.nn.Module`` and ``torch.nn.init``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fnml.layers._facts import CHILDREN, LOWERS_OP_BY_OP, TorchFacts

__all__ = ["Module", "module_repr", "torch_uniform", "freeze", "unfreeze", "is_frozen", "is_trainable"]


# --------------------------------------------------------------------------------------------------
# Printing: torch's print(model) tree
# --------------------------------------------------------------------------------------------------


def _add_indent(text: str, spaces: int) -> str:
    """Indent every line of ``text`` but the first (torch's ``_addindent``)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def _is_module_container(value: Any) -> bool:
    """A list/tuple/dict (or nnx.List/nnx.Dict) holding at least one module."""
    if isinstance(value, (nnx.List, list, tuple)):
        return any(isinstance(item, nnx.Module) for item in value)
    if isinstance(value, (nnx.Dict, dict)):
        return any(isinstance(item, nnx.Module) for item in value.values())
    return False


def _named_children(module: nnx.Module) -> list[tuple[str, Any]]:
    """Direct sub-modules (and module containers) in definition order, as torch lists them."""
    # Containers that name their children themselves (Sequential: "0", "1", ...) define _torch_children.
    own = getattr(module, "_torch_children", None)
    if callable(own):
        return list(own())
    children = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, nnx.Module) or _is_module_container(value):
            children.append((name, value))
    return children


def _container_repr(value: Any) -> str:
    """torch's ModuleList / ModuleDict rendering of a container attribute."""
    if isinstance(value, (nnx.Dict, dict)):
        items, title = list(value.items()), "ModuleDict"
    else:
        items, title = [(str(index), item) for index, item in enumerate(value)], "ModuleList"
    lines = [f"({key}): {_add_indent(_child_repr(item), 2)}" for key, item in items]
    return title + "(\n  " + "\n  ".join(lines) + "\n)"


def _child_repr(value: Any) -> str:
    if _is_module_container(value):  # before Module: nnx.List / nnx.Dict are modules themselves
        return _container_repr(value)
    if isinstance(value, Module) and type(value).__repr__ is not Module.__repr__:
        return repr(value)  # a layer with its own torch rendering (ModuleList compresses repeated children)
    if isinstance(value, nnx.Module):
        return module_repr(value)
    return repr(value)


def _plain_extra_repr(module: nnx.Module) -> str:
    """For a non-fnml leaf module: its simple static settings (ints, floats, bools, strings, tuples)."""
    simple = (int, float, bool, str, tuple)
    parts = [
        f"{name}={value!r}"
        for name, value in vars(module).items()
        if not name.startswith("_") and isinstance(value, simple)
    ]
    return ", ".join(parts)


def module_repr(module: nnx.Module) -> str:
    """Render any nnx.Module tree the way ``print(torch_model)`` does.

    PyTorch equivalent: ``torch.nn.Module.__repr__``.

    fnml layers print their torch ``extra_repr`` (``Linear(in_features=2, out_features=1, bias=True)``);
    sub-modules are listed as ``(name): child`` in definition order, ``Sequential`` children as ``(0)``,
    ``(1)``...; lists/dicts of modules as ``ModuleList``/``ModuleDict``. Plain (non-fnml) nnx leaf modules
    show their simple static attributes. Subclass :class:`Module` to get this as ``print(model)``.

    >>> from flax import nnx
    >>> from fnml import layers
    >>> class Net(nnx.Module):  # a plain nnx module: print(Net(...)) would show flax's repr
    ...     def __init__(self, *, rngs):
    ...         self.fc = layers.Linear(2, 1, rngs=rngs)
    ...         self.head = nnx.Linear(1, 3, rngs=rngs)  # a flax layer: its simple attributes
    >>> print(layers.module_repr(Net(rngs=nnx.Rngs(0))))
    Net(
      (fc): Linear(in_features=2, out_features=1, bias=True)
      (head): Linear(in_features=1, out_features=3, ...)
    )
    """
    # fnml layers (and the recurrent ones, which are not Module subclasses) define torch's extra_repr.
    has_extra_repr = callable(getattr(module, "extra_repr", None))
    extra = module.extra_repr() if has_extra_repr else ""
    children = _named_children(module)
    if not has_extra_repr and not children:
        extra = _plain_extra_repr(module)
    extra_lines = extra.split("\n") if extra else []
    child_lines = [f"({name}): {_add_indent(_child_repr(child), 2)}" for name, child in children]
    lines = extra_lines + child_lines
    text = type(module).__name__ + "("
    if lines:
        if len(extra_lines) == 1 and not child_lines:
            text += extra_lines[0]
        else:
            text += "\n  " + "\n  ".join(lines) + "\n"
    return text + ")"


# --------------------------------------------------------------------------------------------------
# Attributes: torch's registration rules on top of nnx's data / static split
# --------------------------------------------------------------------------------------------------
# nnx 0.12 decides once per attribute whether it is pytree *data* (traced, split into the state: arrays,
# Variables, modules) or *static* (part of the graphdef: ints, strings, None, plain lists and dicts). A static
# attribute may not receive data later, and a plain list/dict of modules is static, so two torch habits fail
# with flax's "Cannot assign data value ... to static attribute" / "Found data on value ..." errors:
# ``self.down = None`` then a module, and ``self.blocks = [Linear(...), ...]``. Module.__setattr__ applies
# torch's rules instead: a value that is or holds modules / arrays / Variables is data whatever the attribute
# held before, and a plain list / dict of modules becomes fnml's ModuleList / ModuleDict (torch's names
# "blocks.0.weight", torch's repr), as if the user had written ``nn.ModuleList`` / ``nn.ModuleDict``.

# Filled by ``layers.container`` (which imports this module; the package's __init__ imports it before any layer
# is built): the classes a plain list / dict of modules becomes. A registry rather than an import keeps the
# layers package free of import cycles.
_TORCH_CONTAINERS: dict[type, Any] = {}


def _holds_data(value: Any) -> bool:
    """True if ``value`` is, or contains, a module, an array or a Variable (nnx's data)."""
    return nnx.is_data(value) or bool(nnx.has_data(value))


def _registered(value: Any) -> Any:
    """A plain list / dict of modules as fnml's ModuleList / ModuleDict (nested ones too); other values as given.

    Only exact, non-empty ``list`` / ``dict`` whose every item is a module are converted, as torch's
    ModuleList / ModuleDict hold nothing else (a dict's keys then follow ModuleDict's rules and errors: str,
    no ``"."``, not a method name). A list mixing modules with other values becomes an ``nnx.List`` (each
    item data or static on its own), the nnx way; a mixed dict stays a dict.
    """
    if type(value) is list and value:
        items = [_registered(item) for item in value]
        if all(isinstance(item, nnx.Module) for item in items):
            return _TORCH_CONTAINERS[list](items)
        return nnx.List(items) if any(_holds_data(item) for item in items) else value
    if type(value) is dict and value:
        items = {key: _registered(item) for key, item in value.items()}
        if all(isinstance(item, nnx.Module) for item in items.values()):
            return _TORCH_CONTAINERS[dict](items)
        return items if any(_holds_data(item) for item in items.values()) else value
    return value


def _is_static_attribute(module: nnx.Module, name: str) -> bool:
    return name in vars(module) and not module._pytree__nodes.get(name, False)


class _TorchModuleMeta(type(nnx.Module)):
    """nnx's metaclass, plus one step after ``__init__``: lists / dicts filled after their assignment are registered.

    torch's ``self.blocks = nn.ModuleList()`` then ``self.blocks.append(...)`` is often written with a plain
    ``[]`` / ``{}``: the empty container was static when assigned, and nnx would refuse the filled one at the
    end of construction. flax's own ``bridge.Module`` hooks the same place (``_pytree_meta_construct``).
    """

    def _pytree_meta_construct(cls, self, *args, **kwargs):
        super()._pytree_meta_construct(self, *args, **kwargs)
        for name, value in list(vars(self).items()):
            if not name.startswith("_pytree__") and _is_static_attribute(self, name) and _holds_data(value):
                # nnx.data(...) flips the attribute to data in place: it keeps its position, as the
                # nn.ModuleList() it stands for would in torch.
                nnx.Module.__setattr__(self, name, nnx.data(_registered(value)))


class Module(nnx.Module, metaclass=_TorchModuleMeta):
    """Base class of fnml layers: an ``nnx.Module`` that prints like ``torch.nn.Module``.

    PyTorch equivalent: ``torch.nn.Module``.

    Subclass it for your own models to get torch's ``print(model)`` tree (plain ``nnx.Module`` subclasses
    keep flax's detailed repr; :func:`module_repr` renders those too). Override :meth:`extra_repr` to add
    settings to the one-line form, as in torch. ``train()`` / ``eval()`` switch every nested Dropout and
    BatchNorm (flax's ``deterministic`` / ``use_running_average`` attributes, and a ``training`` attribute
    where a module has one) and return the module, as torch's do: ``m = model.eval()`` works.

    >>> import jax
    >>> from flax import nnx
    >>> from fnml import layers
    >>> class TinyNet(layers.Module):
    ...     def __init__(self, *, rngs):
    ...         self.fc1 = layers.Linear(2, 2, rngs=rngs)
    ...         self.drop = layers.Dropout(0.5, rngs=rngs)
    ...         self.fc2 = layers.Linear(2, 1, rngs=rngs)
    ...     def __call__(self, x):
    ...         return self.fc2(self.drop(jax.nn.relu(self.fc1(x))))
    >>> model = TinyNet(rngs=nnx.Rngs(0))
    >>> print(model)
    TinyNet(
      (fc1): Linear(in_features=2, out_features=2, bias=True)
      (drop): Dropout(p=0.5, inplace=False)
      (fc2): Linear(in_features=2, out_features=1, bias=True)
    )
    >>> model.eval() is model, model.drop.deterministic  # eval() returns the module, dropout is off
    (True, True)

    Attributes follow torch's registration habits (nnx alone refuses the first two): a plain ``list`` /
    ``dict`` of modules becomes a :class:`ModuleList` / :class:`ModuleDict` (torch's state_dict names
    ``blocks.0.weight`` and repr; its parameters are in ``nnx.state`` and are trained), also when it is
    filled after its assignment inside ``__init__`` (``self.blocks = []`` then ``append``); a module may be
    assigned over ``None`` or any plain value, in ``__init__`` or later, and is then listed after the other
    children, as in torch. Difference: torch never registers a plain list or dict (only ``nn.ModuleList`` /
    ``nn.ModuleDict``); fnml registers them, so the torch code you meant is the code that runs. A list
    mixing modules and other values becomes an ``nnx.List``; a tuple or a dict holding arrays stays itself,
    marked as nnx data. ``nnx.data(...)`` / ``nnx.static(...)`` keep their explicit meaning.

    >>> class Tower(layers.Module):
    ...     def __init__(self, *, rngs):
    ...         self.down = None  # an optional submodule
    ...         self.blocks = [layers.Linear(2, 2, rngs=rngs) for _ in range(2)]
    ...         self.down = layers.Linear(2, 1, rngs=rngs)
    >>> tower = Tower(rngs=nnx.Rngs(0))
    >>> print(tower)
    Tower(
      (blocks): ModuleList(
        (0-1): 2 x Linear(in_features=2, out_features=2, bias=True)
      )
      (down): Linear(in_features=2, out_features=1, bias=True)
    )
    >>> len(jax.tree.leaves(nnx.state(tower, nnx.Param)))  # 3 kernels, 3 biases
    6
    """

    torch_facts = TorchFacts(
        "Module",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=(),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __setattr__(self, name: str, value: Any) -> None:
        # torch's registration rules on nnx's data/static split (see the comment above _TORCH_CONTAINERS).
        # nnx.data(...) / nnx.static(...) (dataclasses.Field) are the user's explicit choice: kept as given.
        if not isinstance(value, dataclasses.Field) and not name.startswith("_pytree__"):
            value = _registered(value)
            if _holds_data(value):
                if _is_static_attribute(self, name):
                    # torch: a module assigned over a plain attribute (None) is registered anew, after the others.
                    delattr(self, name)
                if not nnx.is_data(value):  # a tuple / mixed dict holding modules or arrays: data, explicitly
                    value = nnx.data(value)
        super().__setattr__(name, value)

    def extra_repr(self) -> str:
        """Settings shown inside the parentheses (torch's ``extra_repr``)."""
        return ""

    def __repr__(self) -> str:
        return module_repr(self)

    # nnx defines __str__ separately (print() uses it): keep both torch-like.
    __str__ = __repr__

    def train(self, mode: bool = True, **attributes: Any):
        """Training mode (``mode=True``) or eval mode (``mode=False``) for every nested module; returns ``self``.

        PyTorch equivalent: ``torch.nn.Module.train(mode=True)``.
        """
        if not isinstance(mode, bool):
            raise TypeError(f"train: mode must be a bool, got mode={mode!r}")
        self.set_attributes(
            deterministic=not mode, use_running_average=not mode, training=mode, **attributes, raise_if_not_found=False
        )
        return self

    def eval(self, **attributes: Any):
        """Eval mode for every nested module (Dropout off, BatchNorm on running statistics); returns ``self``.

        PyTorch equivalent: ``torch.nn.Module.eval()``.
        """
        return self.train(False, **attributes)


# --------------------------------------------------------------------------------------------------
# Small helpers: argument checks, dtypes, initialisation
# --------------------------------------------------------------------------------------------------


def _compute_dtype(dtype: Any, *arrays: Any) -> Any:
    """``dtype`` when given, else the promoted dtype of the input and the parameters (flax convention)."""
    return jnp.dtype(dtype) if dtype is not None else jnp.result_type(*arrays)


def _int_dtype() -> Any:
    # torch's num_batches_tracked is int64; without jax x64 the widest available int is int32.
    return jax.dtypes.canonicalize_dtype(jnp.int64)


def torch_uniform(bound: float) -> nnx.Initializer:
    """Initializer drawing from the symmetric U(-bound, bound), torch's Linear/Conv/RNN init.

    PyTorch equivalent: ``torch.nn.init.uniform_(w, -bound, bound)`` (and ``kaiming_uniform_(a=sqrt(5))``,
    whose bound is also ``1/sqrt(fan_in)``).

    ``nnx.initializers.uniform(s)`` draws from U[0, s), hence this helper. The random stream differs
    from torch's (JAX keys), the distribution and bound are the same.

    >>> import math
    >>> import jax, jax.numpy as jnp
    >>> from fnml import layers
    >>> init = layers.torch_uniform(1 / math.sqrt(4))  # fan_in = 4: U(-0.5, 0.5)
    >>> w = init(jax.random.key(0), (4, 8), jnp.float32)
    >>> w.shape, w.dtype == jnp.float32
    ((4, 8), True)
    >>> bool((jnp.abs(w) <= 0.5).all())
    True
    """
    bound = float(bound)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        # Drawn flat then reshaped: on XLA CPU the eager N-D draw compiles ~4x slower (~1 s per conv kernel).
        flat = jax.random.uniform(key, (math.prod(shape),), dtype, minval=-bound, maxval=bound)
        return flat.reshape(tuple(shape))  # (prod(shape),) -> shape

    return init


def _fan_in_bound(fan_in: int) -> float:
    # torch: bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0 (weight via kaiming_uniform_(a=sqrt(5))).
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


# --------------------------------------------------------------------------------------------------
# Shape and activation layers
# --------------------------------------------------------------------------------------------------


def _normalize_dim(dim: int, ndim: int, where: str) -> int:
    """torch's dim wrapping, with its IndexError for an out-of-range dim."""
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"{where}: dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], got {dim})"
        )
    return dim % ndim


# --------------------------------------------------------------------------------------------------
# Freezing: torch's requires_grad_(False)
# --------------------------------------------------------------------------------------------------

# The marking lives on the nnx.Param itself (variable metadata), so it survives nnx.split/merge, travels with
# a parameter shared by several modules (one object, one marking) and leaves print(model) and state_dict alone.
_REQUIRES_GRAD = "requires_grad"


def is_frozen(path: Any, variable: Any) -> bool:
    """nnx filter: True for an ``nnx.Param`` marked frozen by :func:`freeze` (``requires_grad=False``).

    PyTorch equivalent: ``not p.requires_grad``.

    Use it as an ``nnx.split`` filter: ``graphdef, frozen, params, rest = nnx.split(m, is_frozen, nnx.Param, ...)``.
    """
    return isinstance(variable, nnx.Param) and variable.get_metadata().get(_REQUIRES_GRAD, True) is False


def is_trainable(path: Any, variable: Any) -> bool:
    """nnx filter: True for an ``nnx.Param`` that is not frozen (torch: ``p.requires_grad``).

    PyTorch equivalent: ``p.requires_grad``.
    """
    return isinstance(variable, nnx.Param) and not is_frozen(path, variable)


def _set_requires_grad(module: Any, value: bool, where: str) -> Any:
    if not isinstance(module, nnx.Module):
        raise TypeError(f"{where}: module must be an nnx.Module (an fnml layer or model), got {type(module).__name__}")
    for _, variable in nnx.iter_graph(module):
        if isinstance(variable, nnx.Param):
            variable.set_metadata(_REQUIRES_GRAD, value)
    return module


def freeze(module: Any) -> Any:
    """Mark every parameter under ``module`` as not trainable; returns ``module``.

    PyTorch equivalent: ``for p in module.parameters(): p.requires_grad_(False)``.

    Frozen parameters get no gradient and no optimizer update (no weight decay either) in
    ``train.TrainState`` / ``make_train_step`` / ``fit`` / ``parity.compare_training``; they stay in
    ``interop.state_dict`` and ``print(model)`` is unchanged. A parameter shared with another module is one
    object: freezing it anywhere freezes it everywhere, as in torch.

    >>> from flax import nnx
    >>> from fnml import layers
    >>> model = layers.Sequential(layers.Linear(2, 3, rngs=nnx.Rngs(0)), layers.Linear(3, 1, rngs=nnx.Rngs(1)))
    >>> _ = layers.freeze(model[0])
    >>> [layers.is_frozen(None, p) for p in (model[0].kernel, model[0].bias, model[1].kernel)]
    [True, True, False]
    """
    return _set_requires_grad(module, False, "freeze")


def unfreeze(module: Any) -> Any:
    """Mark every parameter under ``module`` as trainable again; returns ``module``.

    PyTorch equivalent: ``for p in module.parameters(): p.requires_grad_(True)``.

    >>> from flax import nnx
    >>> from fnml import layers
    >>> fc = layers.freeze(layers.Linear(2, 3, rngs=nnx.Rngs(0)))
    >>> layers.is_frozen(None, layers.unfreeze(fc).kernel)
    False
    """
    return _set_requires_grad(module, True, "unfreeze")
