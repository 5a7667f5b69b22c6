"""Capture: ``from_torch`` runs a torch module's real forward and builds its fnml twin.

PyTorch equivalent: ``torch.export.export(module, args, strict=False)`` (what the capture uses) and
``torch.fx.symbolic_trace`` (the path without example inputs).

Steps, in order (:func:`from_torch`): build the twin's module tree (fnml layers where fnml has a faithful
one, torch-layout containers elsewhere), load the weights by torch name, tie shared parameters and mark
frozen ones, capture the forward in training and in eval mode, and compile each captured graph into a
hashable program of lowering-table ops (:mod:`fnml.interop.lowering`) and fnml layer calls.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import math
import os
import re
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnml import _torch, _validation, layers
from fnml._torch import canonical_dtype
from fnml.interop import lowering
from fnml.interop.lowering import UnsupportedTorchOpError
from fnml.interop.state_dicts import (
    _PERSISTENT,
    IncompatibleKeys,
    _children,
    _declared_layers,
    _fnml_layer_class,
    _load,
    _named_modules,
    _named_slots,
    _raise_load_problems,
    _read_source,
    _slots,
)
from fnml.interop.state_dicts import state_dict as _state_dict
from fnml.layers._facts import LayerCall

__all__ = ["TorchTwin", "from_torch"]

_HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------------------------------
# The twin's modules
# ----------------------------------------------------------------------------------------------------


class _TorchContainer(layers.Module):
    """A twin of a custom torch module (or of a torch leaf without an fnml layer): torch names, torch layouts."""

    def __init__(self, torch_class: str, order: tuple[str, ...], extra: str = ""):
        self._torch_class = torch_class
        self._torch_order = order
        self._torch_extra = extra
        # torch's self.training of this module: train()/eval() set it (layers.Module.train); the root
        # TorchTwin checks it where captured code reads self.training (_check_captured_modes).
        self.training = True

    def extra_repr(self) -> str:
        return self._torch_extra

    def __repr__(self) -> str:
        # Print like torch's tree, under the torch class name: "SimpleNN(\n  (fc1): Linear(...)".
        text = layers.module_repr(self)
        return self._torch_class + text[len(type(self).__name__) :]

    __str__ = __repr__

    def _torch_children(self) -> list[tuple[str, Any]]:
        """Children in torch's registration order (nnx sorts attributes)."""
        return [
            (name, getattr(self, name)) for name in self._torch_order if isinstance(getattr(self, name), nnx.Module)
        ]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"the twin of {self._torch_class} is run by its root TorchTwin (its forward was captured into "
            f"the root's program); call the root module"
        )


@functools.cache
def _container_class(torch_class: str) -> type:
    """A _TorchContainer subclass named like the torch class (so nested twins print torch's names)."""
    return type(torch_class, (_TorchContainer,), {"__module__": __name__, "__qualname__": torch_class})


class _Ref(NamedTuple):
    """A reference to an earlier node's value in a compiled program."""

    name: str


class _SliceSpec(NamedTuple):
    """A slice whose bounds may be references (Python 3.11 slices are not hashable)."""

    start: Any
    stop: Any
    step: Any


class _Const(NamedTuple):
    """A tensor constant of the captured forward, hashable (bytes + dtype + shape)."""

    data: bytes
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, value: Any) -> _Const:
        # np.array, not np.ascontiguousarray: the latter turns a 0-d constant (torch.tensor(0.5)) into shape (1,).
        array = np.array(_torch.to_numpy(value), order="C")
        return cls(array.tobytes(), array.dtype.name, array.shape)  # the name: bfloat16's .str is a void "<V2"

    def array(self) -> jax.Array:
        return jnp.asarray(np.frombuffer(self.data, np.dtype(self.dtype)).reshape(self.shape))


class _Node(NamedTuple):
    """One captured op: ``kind`` "op" (a lowering-table entry), "layer" (an fnml layer call) or "alias"."""

    name: str
    kind: str
    target: str  # op name, or the layer's torch path
    args: tuple
    kwargs: tuple  # ((key, value), ...)
    adapter: str  # layer calls: how torch's op arguments map onto the fnml layer
    write_back: str  # in-place op on a container buffer: that buffer's torch name, written after the op
    where: str  # "module 'path' (Class), file:line: code", for error messages
    static: bool = False  # computed from sizes and constants only: evaluated on concrete values under jit


class _Input(NamedTuple):
    """A program input: a user leaf (``index``), a variable (torch name) or a constant."""

    name: str
    kind: str  # "user" | "var" | "const"
    value: Any
    shape: tuple | None  # user tensors: captured shape, None for a free dim


class _Variable(NamedTuple):
    """Where a torch-named tensor lives in the twin, and the transpose fnml layout -> torch layout."""

    owner: str
    attr: str
    perm: tuple[int, ...] | None


class _Program(NamedTuple):
    """A captured forward, hashable: inputs, nodes, outputs and the input/output tree structures."""

    inputs: tuple[_Input, ...]
    nodes: tuple[_Node, ...]
    outputs: tuple
    in_spec: str
    out_spec: str
    kwarg_order: tuple[str, ...]
    variables: tuple[tuple[str, _Variable], ...]
    source: str


class TorchTwin(_TorchContainer):
    """An fnml module built by :func:`from_torch`: fnml layers + the captured torch forward as a jax program.

    PyTorch equivalent: the torch module it was built from (same inputs, same layouts, same outputs).

    Children are fnml layers / containers under the torch attribute names, so ``state_dict`` and
    ``load_state_dict`` use torch's names and ``print(twin)`` shows torch's tree. ``__call__`` runs the
    program captured for the current mode: ``twin.train()`` / ``twin.eval()`` switch dropout, BatchNorm
    and every ``self.training`` branch of the forward, as torch's do. Random ops draw from ``twin.rngs``.

    torch's module API, where it has a meaning here, with torch's names and order (values are jax arrays
    in torch's layout): ``parameters()``, ``named_parameters()``, ``buffers()``, ``named_buffers()``,
    ``children()``, ``named_children()``, ``modules()``, ``named_modules()``, ``state_dict()``,
    ``load_state_dict()``, ``train()``, ``eval()``, ``to()``, ``cpu()``, ``cuda()``, ``float()``,
    ``double()``. The rest of ``torch.nn.Module`` (``zero_grad``, ``requires_grad_``, hooks, ``half``...)
    raises an ``AttributeError`` that says what to use in fnml.

    A call refuses the operand dtypes torch refuses, where torch would: an fnml layer (Linear, Conv,
    norms, RNNs) or a matmul / convolution / norm op given data not of its parameters' floating dtype (an
    int32 image into a Conv2d, float32 into a float64 Linear), or an embedding given non-integer indices,
    raises a ``TypeError`` naming the layer, the source line and the call's argument it came from, where
    jax would promote silently (float16 / bfloat16 operands are left to promote: autocast mixes them).
    Elementwise ops promote as torch's do, and a forward that casts its input first (``x.float() / 255``)
    takes any dtype. Differences from torch: ``forward`` is not a method (call the twin); the twins
    ``from_torch(model)`` builds without example inputs do not check dtypes.

    >>> import torch
    >>> from fnml import interop
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()).double()
    >>> twin = interop.from_torch(net, torch.ones(4, 3, dtype=torch.float64))
    >>> [name for name, _ in twin.named_parameters()]     # net.named_parameters()
    ['0.weight', '0.bias']
    >>> [tuple(p.shape) for p in twin.parameters()]       # torch's layout: Linear weight (out, in)
    [(2, 3), (2,)]
    >>> twin.eval() is twin
    True
    """

    def __init__(self, torch_class: str, order: tuple[str, ...], programs: Any, source: str, *, rngs: nnx.Rngs):
        super().__init__(torch_class, order)
        self._programs = programs  # captured: (eval program, train program); fx: the one program
        self._source = source
        self._forward_names: tuple[str, ...] = ()  # forward's positional parameter names, for input errors
        self._float_dtypes: tuple[str | None, str | None] = (None, None)  # (captured, current) floating dtype
        self._mode_readers: tuple[str, ...] = ()  # torch paths of captured code reading self.training
        # Programs for other call structures (an optional argument left out or added, positional vs by name):
        # ((structure, layout, (eval, train)), ...), captured on first use by _recapture (which holds the
        # torch module; None for fx twins).
        self._variants: tuple = ()
        self._recapture: Any = None
        self.training = True
        self.rngs = rngs  # None unless the captured forward has random ops (then nnx.split sees no keys)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self._programs, tuple) and len(self._programs) == 2 and isinstance(self._programs[0], _Program):
            _check_captured_modes(self, self._mode_readers, where="the call")
            programs, args, kwargs = _programs_for_call(self, args, kwargs)
            return _run_program(self, programs[int(self.training)], args, kwargs)
        return _run_fx_program(self, self._programs, args, kwargs)

    def program_text(self) -> str:
        """The captured torch forward this twin runs (torch.export / torch.fx readable code)."""
        return self._source

    # ------------------------------------------------------------------------------------------------
    # torch's module API
    # ------------------------------------------------------------------------------------------------

    def named_parameters(
        self, *, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, jax.Array]]:
        """(torch name, value) for every parameter, in torch's order; a tied parameter once, under its first name.

        PyTorch equivalent: ``module.named_parameters(prefix='', recurse=True, remove_duplicate=True)``.

        Values are jax arrays in torch's layout (a Linear weight is ``(out, in)``, a Conv2d weight OIHW):
        read-only snapshots, as every jax array is; change weights with :meth:`load_state_dict`. Frozen
        parameters (``requires_grad=False``) are listed, as in torch.

        >>> import torch
        >>> from fnml import interop
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1))
        >>> twin = interop.from_torch(net, torch.ones(4, 3))
        >>> [(name, tuple(p.shape)) for name, p in twin.named_parameters()]
        [('0.weight', (2, 3)), ('0.bias', (2,)), ('2.weight', (1, 2)), ('2.bias', (1,))]
        """
        return self._named_tensors(True, "named_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, *, recurse: bool = True) -> Iterator[jax.Array]:
        """Every parameter's value, in the order of torch's ``module.parameters()`` (tied ones once).

        PyTorch equivalent: ``module.parameters(recurse=True)``.

        Values are jax arrays in torch's layout (see :meth:`named_parameters`). fnml's optimizers take no
        parameters: ``train.TrainState.create(twin, optim.adam(lr=...))`` builds the state from the twin.

        >>> import torch
        >>> from fnml import interop
        >>> twin = interop.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.ones(4, 3))
        >>> sum(p.size for p in twin.parameters())   # sum(p.numel() for p in net.parameters())
        8
        """
        return (value for _, value in self.named_parameters(recurse=recurse))

    def named_buffers(
        self, *, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, jax.Array]]:
        """(torch name, value) for every buffer, non-persistent ones included, in torch's order.

        PyTorch equivalent: ``module.named_buffers(prefix='', recurse=True, remove_duplicate=True)``.

        >>> import torch
        >>> from fnml import interop
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
        >>> [name for name, _ in interop.from_torch(net, torch.ones(4, 3)).named_buffers()]
        ['1.running_mean', '1.running_var', '1.num_batches_tracked']
        """
        return self._named_tensors(False, "named_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, *, recurse: bool = True) -> Iterator[jax.Array]:
        """Every buffer's value (BatchNorm statistics, registered buffers), in torch's order.

        PyTorch equivalent: ``module.buffers(recurse=True)``.

        >>> import torch
        >>> from fnml import interop
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
        >>> [tuple(b.shape) for b in interop.from_torch(net, torch.ones(4, 3)).buffers()]
        [(2,), (2,), ()]
        """
        return (value for _, value in self.named_buffers(recurse=recurse))

    def _named_tensors(
        self, params: bool, where: str, prefix: str, recurse: bool, remove_duplicate: bool
    ) -> Iterator[tuple[str, jax.Array]]:
        if not isinstance(prefix, str):
            raise TypeError(f"TorchTwin.{where}: prefix must be a str, got prefix={prefix!r}")
        _validation.check_bool("recurse", recurse, where=f"TorchTwin.{where}")
        _validation.check_bool("remove_duplicate", remove_duplicate, where=f"TorchTwin.{where}")
        slots = list(_named_slots(self, with_non_persistent=True).items())

        def generate() -> Iterator[tuple[str, jax.Array]]:
            seen: set[int] = set()
            for name, slot in slots:
                variable = slot.variable
                if isinstance(variable, nnx.Param) != params or (not recurse and slot.owner is not self):
                    continue
                if remove_duplicate and id(variable) in seen:
                    continue
                seen.add(id(variable))
                value = variable.get_value()
                yield _join(prefix, name), value if slot.perm is None else jnp.transpose(value, slot.perm)

        return generate()

    def named_children(self) -> Iterator[tuple[str, nnx.Module]]:
        """(torch name, fnml module) for each direct child, in torch's registration order.

        PyTorch equivalent: ``module.named_children()``.

        >>> import torch
        >>> from fnml import interop
        >>> twin = interop.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()), torch.ones(4, 3))
        >>> [(name, type(child).__name__) for name, child in twin.named_children()]
        [('0', 'Linear'), ('1', 'ReLU')]
        """
        return ((name, module) for name, module in _children(self) if isinstance(module, nnx.Module))

    def children(self) -> Iterator[nnx.Module]:
        """Each direct child module (fnml layers and torch-layout containers), in torch's order.

        PyTorch equivalent: ``module.children()``.

        >>> import torch
        >>> from fnml import interop
        >>> twin = interop.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()), torch.ones(4, 3))
        >>> len(list(twin.children()))
        2
        """
        return (module for _, module in self.named_children())

    def named_modules(self, *, prefix: str = "") -> Iterator[tuple[str, nnx.Module]]:
        """(torch path, module) for the twin and every module under it, root first, each module once.

        PyTorch equivalent: ``module.named_modules(prefix='')``.

        >>> import torch
        >>> from fnml import interop
        >>> twin = interop.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()), torch.ones(4, 3))
        >>> [name for name, _ in twin.named_modules()]
        ['', '0', '1']
        """
        if not isinstance(prefix, str):
            raise TypeError(f"TorchTwin.named_modules: prefix must be a str, got prefix={prefix!r}")
        pairs = list(_named_modules(self, prefix))

        def generate() -> Iterator[tuple[str, nnx.Module]]:
            seen: set[int] = set()
            for name, module in pairs:
                if id(module) not in seen:
                    seen.add(id(module))
                    yield name, module

        return generate()

    def modules(self) -> Iterator[nnx.Module]:
        """The twin and every module under it, in torch's order.

        PyTorch equivalent: ``module.modules()``.

        >>> import torch
        >>> from fnml import interop
        >>> twin = interop.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.ones(4, 3))
        >>> [type(m).__name__ for m in twin.modules()][1:]  # after the twin itself
        ['Linear']
        """
        return (module for _, module in self.named_modules())

    def state_dict(self) -> OrderedDict:
        """torch's state dict of the twin: torch names, torch layouts, numpy arrays (``interop.state_dict``).

        PyTorch equivalent: ``module.state_dict()``.

        Difference from torch: numpy arrays, not tensors (``torch.from_numpy`` makes them tensors); a tied
        parameter is listed under each of its names, non-persistent buffers are left out, as in torch.

        >>> import torch
        >>> from fnml import interop
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2))
        >>> twin = interop.from_torch(net, torch.ones(4, 3))
        >>> _ = net.load_state_dict({k: torch.from_numpy(v) for k, v in twin.state_dict().items()})
        >>> list(twin.state_dict())
        ['0.weight', '0.bias']
        """
        return _state_dict(self)

    def load_state_dict(self, state_dict: Any, *, strict: bool = True) -> IncompatibleKeys:
        """Load torch-named, torch-layout tensors into the twin, in place; torch's strict semantics.

        PyTorch equivalent: ``module.load_state_dict(state_dict, strict=True)``.

        ``state_dict``: a mapping of torch tensors, numpy or jax arrays (``torch_model.state_dict()``), or
        a ``.safetensors`` / ``.pt`` path. Every shape is checked (in torch's layout) before anything is
        assigned; values keep the twin's dtypes (torch's ``copy_``). ``strict=True`` raises
        :class:`~fnml.interop.StateDictError` (a ``RuntimeError``, like torch's) listing every missing key
        (each name of a tied parameter counts, as in torch), unexpected key and size mismatch;
        ``strict=False`` loads the keys that match. Returns ``IncompatibleKeys(missing_keys,
        unexpected_keys)``, as torch's does in both modes; size mismatches raise in both.

        >>> import torch
        >>> from fnml import interop
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2))
        >>> twin = interop.from_torch(net, torch.ones(4, 3))
        >>> twin.load_state_dict(net.state_dict())
        IncompatibleKeys(missing_keys=[], unexpected_keys=[])
        >>> twin.load_state_dict({"0.weight": net.state_dict()["0.weight"]}, strict=False)
        IncompatibleKeys(missing_keys=['0.bias'], unexpected_keys=[])
        """
        _validation.check_bool("strict", strict, where="TorchTwin.load_state_dict")
        mapping = _read_source(state_dict)
        slots = _named_slots(self)
        keys = [str(key) for key in mapping]
        missing = [name for name in slots if name not in mapping]
        unexpected = [key for key in keys if key not in slots]
        mismatched = [
            f"{name}: copying a param with shape {tuple(np.shape(mapping[name]))} from checkpoint, the shape in "
            f"current model is {slot.torch_shape}"
            for name, slot in slots.items()
            if name in mapping and tuple(np.shape(mapping[name])) != slot.torch_shape
        ]
        _raise_load_problems(self._torch_class, mismatched, missing, unexpected, strict=strict, in_state_dict=True)
        _load(self, mapping, strict=False, flatten_nhwc=None, keep_source_dtype=False)
        return IncompatibleKeys(missing, unexpected)

    def to(self, *args: Any, **kwargs: Any) -> TorchTwin:
        """Move the twin to a device and/or convert its floating parameters and buffers to a dtype, in place.

        PyTorch equivalent: ``module.to(device)``, ``module.to(dtype)``, ``module.to(device, dtype)``,
        ``module.to(tensor)``; returns the twin, as torch's returns the module.

        ``device``: a ``jax.Device``, a torch-style string (``"cpu"``, ``"cuda:0"``) or a ``torch.device``;
        a device this machine lacks raises :class:`fnml.device.DeviceNotFoundError` naming those it has.
        ``dtype``: float32 or float64 (torch or jax/numpy dtypes); like torch, only floating parameters and
        buffers change (``num_batches_tracked`` stays an integer) and the twin then computes in that dtype
        and expects floating inputs in it, as torch's converted module does. The forward was captured for
        the example's dtype: when it fixed a floating dtype (an explicit cast or factory dtype, a
        ``torch.finfo`` constant) the conversion raises a ``ValueError`` naming the line; port the
        converted module instead (``interop.from_torch(model.double(), x.double())``). float16 / bfloat16
        are refused the same way. Difference from ``fnml.device.to``: this one changes the twin in place,
        as torch's does.

        >>> import torch
        >>> from fnml import interop
        >>> twin = interop.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.ones(4, 3))
        >>> twin.to("cpu") is twin
        True
        >>> twin.to(torch.float64) is twin, next(twin.parameters()).dtype.name
        (True, 'float64')
        """
        device_spec, dtype_spec = _to_arguments(args, kwargs)
        target = None
        if device_spec is not None:
            from fnml import device as devices

            target = devices.device(device_spec)
        if dtype_spec is not None:
            self._convert_dtype(_float_dtype(dtype_spec, "to"), "to")
        if target is not None:
            for _, variable in nnx.iter_graph(self):
                if isinstance(variable, nnx.Variable) and isinstance(variable.get_value(), jax.Array):
                    variable.set_value(jax.device_put(variable.get_value(), target))
        return self

    def cpu(self) -> TorchTwin:
        """Move every parameter and buffer to the CPU, in place; returns the twin.

        PyTorch equivalent: ``module.cpu()``.

        >>> import torch
        >>> from fnml import interop
        >>> twin = interop.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.ones(4, 3))
        >>> twin.cpu() is twin
        True
        """
        return self.to("cpu")

    def cuda(self, device: int | None = None) -> TorchTwin:
        """Move every parameter and buffer to GPU ``device`` (default 0), in place; returns the twin.

        PyTorch equivalent: ``module.cuda(device=None)``.

        On a machine where JAX sees no GPU this raises :class:`fnml.device.DeviceNotFoundError` (torch
        raises too); the portable form is ``twin.to(fnml.device.device("cuda" if
        fnml.device.cuda_is_available() else "cpu"))``.

        >>> import torch
        >>> from fnml import device, interop
        >>> twin = interop.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.ones(4, 3))
        >>> twin.cuda() is twin if device.cuda_is_available() else True
        True
        """
        from fnml import device as devices

        index = 0 if device is None else _validation.check_int("device", device, where="TorchTwin.cuda")
        if not devices.cuda_is_available():
            raise devices.DeviceNotFoundError(
                f"TorchTwin.cuda: JAX sees no GPU on this machine (devices: "
                f"{', '.join(devices.device_name(d) for d in devices.available_devices())}). Choose the "
                f"device with fnml.device: twin.to(fnml.device.device('cuda' if fnml.device.cuda_is_available() "
                f"else 'cpu')); for NVIDIA GPUs install jax with CUDA: pip install 'fnml[cuda]'"
            )
        return self.to(f"cuda:{index}")

    def double(self) -> TorchTwin:
        """Convert floating parameters and buffers to float64 (needs JAX's x64 mode), in place; returns the twin.

        PyTorch equivalent: ``module.double()``. See :meth:`to` for what the captured forward allows.

        >>> import torch
        >>> from fnml import interop
        >>> twin = interop.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.ones(4, 3))
        >>> twin.double()(torch.ones(1, 3, dtype=torch.float64)).dtype.name
        'float64'
        """
        return self._convert_dtype(_float_dtype(np.float64, "double"), "double")

    def float(self) -> TorchTwin:
        """Convert floating parameters and buffers to float32, in place; returns the twin.

        PyTorch equivalent: ``module.float()``. See :meth:`to` for what the captured forward allows.

        >>> import torch
        >>> from fnml import interop
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2)).double()
        >>> twin = interop.from_torch(net, torch.ones(4, 3, dtype=torch.float64))
        >>> twin.float()(torch.ones(1, 3)).dtype.name
        'float32'
        """
        return self._convert_dtype(_float_dtype(np.float32, "float"), "float")

    def _convert_dtype(self, dtype: np.dtype, where: str) -> TorchTwin:
        captured, current = self._float_dtypes
        if current == dtype.name:
            return self
        fixed = _dtype_fixed_at(self._programs, captured)
        if fixed:
            raise ValueError(
                f"TorchTwin.{where}: the forward of {self._torch_class} was captured for {captured} and fixes "
                f"that dtype at {'; '.join(fixed[:3])}{' ...' if len(fixed) > 3 else ''}, so converting the "
                f"twin to {dtype.name} would not compute what torch's converted module computes. Port the "
                f"converted module instead: interop.from_torch(model.to(torch.{dtype.name}), "
                f"example.to(torch.{dtype.name}))"
            )
        for _, node in nnx.iter_graph(self):
            if isinstance(node, nnx.Variable):
                value = node.get_value()
                if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating):
                    node.set_value(value.astype(dtype))
            elif isinstance(node, nnx.Module) and isinstance(getattr(node, "param_dtype", None), (type, np.dtype)):
                node.param_dtype = dtype  # the layer's declared parameter dtype follows its parameters
        self._float_dtypes = (captured, dtype.name)
        return self

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: children, variables, methods and NNX internals never get here.
        # An AttributeError in every case keeps hasattr() honest for flax and for user code.
        if name.startswith("_") or name not in _TORCH_MODULE_API:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self)
        advice = _TORCH_ADVICE.get(name) or (
            "it is a torch.nn.Module attribute, and the twin is an fnml (flax NNX) module: its forward is a "
            "captured jax program and its weights are nnx variables"
        )
        raise AttributeError(
            f"TorchTwin has no {name!r}: {advice}. The torch module API it answers: {', '.join(_TORCH_API_ANSWERED)}",
            name=name,
            obj=self,
        )


# torch.nn.Module's public attributes (torch 2.x) the twin does not have: __getattr__ answers them with advice.
_TORCH_MODULE_API = frozenset(
    """T_destination add_module apply bfloat16 call_super_init compile dump_patches forward get_buffer
    get_extra_state get_parameter get_submodule half ipu mtia register_backward_hook register_buffer
    register_forward_hook register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook
    register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule
    share_memory to_empty type xpu zero_grad training""".split()
)
_TORCH_API_ANSWERED = (
    "parameters, named_parameters, buffers, named_buffers, children, named_children, modules, named_modules, "
    "state_dict, load_state_dict, train, eval, to, cpu, cuda, float, double"
).split(", ")
_HOOKS = (
    "the twin has no hooks (its forward is one captured jax program); to see each layer's output use "
    "fnml.parity.first_divergence, or register the hook on the torch module and port it again"
)
_PORT_IN_DTYPE = (
    "the twin computes in float32 or float64 only (twin.float() / twin.double()); to run in {0}, port a {0} "
    "module (interop.from_torch(model.{1}(), x.{1}())), or train in float32 under torch's autocast: "
    "train.fit(..., autocast='bfloat16') / train.make_train_step(..., autocast='bfloat16')"
)
_TORCH_ADVICE = {
    "forward": "call the twin itself, twin(x) (as torch's module(x) runs forward)",
    "requires_grad_": (
        "fnml marks parameters frozen instead: fnml.layers.freeze(twin) (requires_grad_(False)) and "
        "fnml.layers.unfreeze(twin) (requires_grad_(True)), or on a child, layers.freeze(twin.backbone)"
    ),
    "zero_grad": (
        "fnml keeps no .grad to clear: gradients are returned by the functional step, "
        "step = train.make_train_step(criterion); state, loss = step(state, x, y)"
    ),
    "register_buffer": (
        "the twin's tensors are fixed by the capture (its program reads the names it captured): register the "
        "buffer on the torch module and port it again with interop.from_torch"
    ),
    "register_parameter": (
        "the twin's tensors are fixed by the capture (its program reads the names it captured): register the "
        "parameter on the torch module and port it again with interop.from_torch"
    ),
    "apply": (
        "walk the modules instead, for name, m in twin.named_modules(): ...; to re-initialise weights, build "
        "them as arrays and load them with twin.load_state_dict(...)"
    ),
    "half": _PORT_IN_DTYPE.format("float16", "half"),
    "bfloat16": _PORT_IN_DTYPE.format("bfloat16", "bfloat16"),
    "type": "convert with twin.to(dtype), twin.float() or twin.double()",
    "get_submodule": "read the child as an attribute (twin.features[0]) or from twin.named_modules()",
    "register_forward_hook": _HOOKS,
    "register_forward_pre_hook": _HOOKS,
    "register_full_backward_hook": _HOOKS,
    "register_backward_hook": _HOOKS,
    "share_memory": "jax arrays are immutable and shared freely; nothing to do",
}


def _to_arguments(args: tuple, kwargs: dict) -> tuple[Any, Any]:
    """torch's ``Module.to`` overloads -> (device or None, dtype or None)."""
    unknown = set(kwargs) - {"device", "dtype", "non_blocking"}
    if unknown:
        raise TypeError(
            f"TorchTwin.to: unexpected keyword(s) {sorted(unknown)}; it takes a device, a dtype, a tensor, "
            f"device=, dtype= and non_blocking="
        )
    _validation.check_bool("non_blocking", kwargs.get("non_blocking", False), where="TorchTwin.to")
    device_spec, dtype_spec = kwargs.get("device"), kwargs.get("dtype")
    for value in args:
        if _torch.is_tensor(value) or isinstance(value, jax.Array):
            dtype_spec = value.dtype
            device_spec = str(value.device) if _torch.is_tensor(value) else next(iter(value.devices()))
        elif isinstance(value, (str, jax.Device)) or _torch.is_device(value):
            device_spec = value
        elif _is_dtype_like(value):
            dtype_spec = value
        else:
            raise TypeError(
                f"TorchTwin.to: expected a device ('cpu', 'cuda:0', a jax.Device or torch.device), a dtype "
                f"(torch.float64, jnp.float32...) or a tensor; got {type(value).__name__} {value!r}"
            )
    return device_spec, dtype_spec


def _is_dtype_like(value: Any) -> bool:
    if _torch.is_dtype(value) or isinstance(value, np.dtype):
        return True
    try:
        return isinstance(value, type) and np.dtype(value) is not None
    except TypeError:
        return False


def _float_dtype(spec: Any, where: str) -> np.dtype:
    """float32 / float64 (as JAX holds it) for a dtype spec; torch's TypeError for integers, advice for halves."""
    name = _torch.dtype_name(spec)
    if name in ("float16", "bfloat16"):
        method = "half" if name == "float16" else "bfloat16"
        raise TypeError(f"TorchTwin.{where}: dtype={name} is not supported: " + _PORT_IN_DTYPE.format(name, method))
    if name not in ("float32", "float64"):
        raise TypeError(
            f"TorchTwin.{where}: only floating dtypes are accepted (float32, float64), as torch's Module.to "
            f"only accepts floating point dtypes; got dtype={name}"
        )
    held = canonical_dtype(name)
    if held.name != name:
        raise ValueError(
            f"TorchTwin.{where}: {name} needs JAX's x64 mode, which is off (the twin would stay {held.name}); "
            f"enable it with {_torch.X64_FIX}"
        )
    return held


def _flat_values(value: Any) -> Iterator[Any]:
    """The leaves of nested plain tuples / lists (program references, _Ref / _SliceSpec, are leaves)."""
    if type(value) in (tuple, list):
        for item in value:
            yield from _flat_values(item)
    else:
        yield value


def _dtype_fixed_at(programs: Any, captured: str | None) -> list[str]:
    """Where the captured program(s) fixed a floating dtype: explicit dtypes, and ``torch.finfo`` literals."""
    finfo = np.finfo(np.dtype(captured)) if captured else None
    literals = {float(finfo.max), float(finfo.eps), float(finfo.tiny)} if finfo is not None else set()
    nodes = []
    for program in programs if isinstance(programs, tuple) and isinstance(programs[0], _Program) else (programs,):
        nodes += [(n.target, n.args, n.kwargs, n.where) for n in program.nodes] if isinstance(program, _Program) else []
        nodes += [(op.target, op.args, op.kwargs, f"fx node {op.name!r}") for op in program if isinstance(op, _FxOp)]
    found = []
    for target, args, kwargs, where in nodes:
        values = list(_flat_values(args)) + list(_flat_values(tuple(v for _, v in kwargs)))
        floating = any(isinstance(v, np.dtype) and jnp.issubdtype(v, jnp.floating) for v in values)
        literal = any(isinstance(v, float) and abs(v) in literals for v in values)
        if floating or literal:
            entry = f"{target} in {where}"
            if entry not in found:
                found.append(entry)
    return found


# ----------------------------------------------------------------------------------------------------
# Building the module tree
# ----------------------------------------------------------------------------------------------------


def _layer_kwargs(fnml_cls: type, torch_module: Any, dtype: Any, seed: int) -> dict[str, Any]:
    """Constructor keywords for ``fnml_cls`` read from the torch module's attributes of the same names."""
    kwargs: dict[str, Any] = {}
    signature = inspect.signature(fnml_cls.__init__).parameters
    for name, parameter in signature.items():
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
    if "rngs" in signature:
        kwargs["rngs"] = nnx.Rngs(seed, dropout=seed)  # one stream per layer: masks independent across layers
    return kwargs


def _unsupported_settings(torch_module: Any) -> list[str]:
    """Settings fnml's layers do not implement (the module then lowers op by op, or is refused)."""
    unsupported = []
    if getattr(torch_module, "proj_size", 0):
        unsupported.append(f"proj_size={torch_module.proj_size}")
    if getattr(torch_module, "max_norm", None) is not None:
        unsupported.append(f"max_norm={torch_module.max_norm}")
    if getattr(torch_module, "return_indices", False):
        unsupported.append("return_indices=True")
    if getattr(torch_module, "ceil_mode", False):
        unsupported.append("ceil_mode=True")
    return unsupported


def _is_plain_sequential(torch_module: Any) -> bool:
    """An ``nn.Sequential`` whose children are named 0, 1, ... (an OrderedDict's names keep a container)."""
    import torch

    if type(torch_module) is not torch.nn.Sequential:
        return False
    return [name for name, _ in torch_module.named_children()] == [str(i) for i in range(len(torch_module))]


class _Builder:
    """Builds the twin's tree; ``generic`` leaves (torch paths) become torch-layout containers."""

    def __init__(self, dtype: Any, *, captured: bool, generic: frozenset[str] = frozenset()):
        self.dtype = dtype
        self.captured = captured  # True: export capture (any leaf can lower op by op); False: torch.fx
        self.generic = generic
        self.seed = 0
        # torch path -> how the twin calls the fnml layer built for that leaf (its declared LayerCall).
        self.layer_paths: dict[str, LayerCall | None] = {}

    def build(self, torch_module: Any, path: str) -> Any:
        import torch

        is_torch_nn = type(torch_module).__module__.startswith("torch.nn.modules")
        if _is_plain_sequential(torch_module):
            children = [self.build(child, _join(path, str(i))) for i, child in enumerate(torch_module)]
            return layers.Sequential(*children)
        is_leaf = is_torch_nn and not isinstance(torch_module, (torch.nn.Sequential, torch.nn.ModuleList))
        is_leaf = is_leaf and not isinstance(torch_module, torch.nn.ModuleDict) and not list(torch_module.children())
        if is_leaf:
            layer = self._fnml_layer(torch_module, path)
            if layer is not None:
                self.layer_paths[path] = type(layer).torch_facts.capture
                return layer
            extra = torch_module.extra_repr()
        else:
            extra = ""
        return self._container(torch_module, path, extra)

    def _fnml_layer(self, torch_module: Any, path: str) -> Any:
        """The fnml layer for a torch leaf, or None when it lowers op by op (or raise on the fx path)."""
        name = type(torch_module).__name__
        fnml_cls = _fnml_layer_class(name)
        faithful = fnml_cls is not None
        settings = _unsupported_settings(torch_module)
        if self.captured:
            # Leaves whose layer declares no LayerCall lower op by op (their recorded ATen ops run through OPS).
            if not faithful or settings or path in self.generic or fnml_cls.torch_facts.capture is None:
                return None
        else:
            where = path or "<root>"
            if not faithful:
                raise UnsupportedTorchOpError(
                    f"from_torch: torch.nn.{name} at {where!r} has no fnml layer; pass example inputs "
                    f"(interop.from_torch(model, x)) to lower it op by op. Layers without example inputs: "
                    f"{sorted(_declared_layers())}"
                )
            if settings:
                raise UnsupportedTorchOpError(
                    f"from_torch: torch.nn.{name} at {where!r} uses {', '.join(settings)}, which "
                    f"fnml.layers.{name} does not implement"
                )
        self.seed += 1
        seed = self.seed
        # Shapes only, then zeros: the torch weights are loaded next, so no random init (one XLA compile each).
        abstract = nnx.eval_shape(lambda: fnml_cls(**_layer_kwargs(fnml_cls, torch_module, self.dtype, seed)))
        layer = _materialize(abstract, seed)
        return layer.train(torch_module.training) if isinstance(layer, layers.Module) else layer

    def _container(self, torch_module: Any, path: str, extra: str) -> _TorchContainer:
        own = [n for n, _ in torch_module.named_parameters(recurse=False)]
        own += [n for n, b in torch_module.named_buffers(recurse=False) if b is not None and n not in own]
        children = list(torch_module.named_children())
        container = _container_class(type(torch_module).__name__)(
            type(torch_module).__name__, tuple(own) + tuple(n for n, _ in children), extra
        )
        container.training = bool(torch_module.training)
        self.fill(container, torch_module, children, path)
        return container

    def fill(self, container: Any, torch_module: Any, children: list, path: str) -> None:
        """Attach a module's own parameters / buffers (torch layout) and its converted children."""
        persistent = set(torch_module.state_dict(keep_vars=True)) if hasattr(torch_module, "state_dict") else set()
        for param_name, param in torch_module.named_parameters(recurse=False):
            setattr(container, param_name, nnx.Param(_jax_value(param)))
        for buffer_name, buffer in torch_module.named_buffers(recurse=False):
            if buffer is not None:
                setattr(
                    container,
                    buffer_name,
                    nnx.BatchStat(_jax_value(buffer), **{_PERSISTENT: buffer_name in persistent}),
                )
        for child_name, child in children:
            setattr(container, child_name, self.build(child, _join(path, child_name)))


def _materialize(module: Any, seed: int) -> Any:
    """Give an ``nnx.eval_shape`` module concrete values: zeros, and real keys for its random streams."""
    for _, variable in nnx.iter_graph(module):
        if not isinstance(variable, nnx.Variable):
            continue
        value = variable.get_value()
        if isinstance(value, jax.ShapeDtypeStruct):
            if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
                keys = jax.random.split(jax.random.key(seed), max(1, math.prod(value.shape)))
                variable.set_value(keys.reshape(value.shape))
            else:
                variable.set_value(jnp.asarray(np.zeros(value.shape, value.dtype)))
    return module


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _jax_value(tensor: Any) -> jax.Array:
    return _torch.as_jax(tensor)


def _aliases(torch_module: Any) -> list[list[str]]:
    """Groups of torch names bound to one tensor (tied parameters / shared buffers), in torch order."""
    groups: dict[int, list[str]] = {}
    for name, tensor in torch_module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(tensor), []).append(name)
    for name, tensor in torch_module.named_buffers(remove_duplicate=False):
        if tensor is not None:
            groups.setdefault(id(tensor), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _owner_path(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _needs_torch_layout(twin: Any, aliases: list[list[str]]) -> frozenset[str]:
    """Leaf paths whose fnml layer would store a tied tensor transposed: they lower op by op instead."""
    slots = _named_slots(twin, with_non_persistent=True)
    paths = set()
    for group in aliases:
        paths.update(_owner_path(name) for name in group if name in slots and slots[name].perm is not None)
    return frozenset(paths)


def _tie(twin: Any, aliases: list[list[str]]) -> None:
    """Make every name of a tied group point at ONE variable (the first name's): one gradient, one update."""
    slots = _named_slots(twin, with_non_persistent=True)
    for group in aliases:
        present = [name for name in group if name in slots]
        if len(present) < 2:
            continue
        shared = slots[present[0]].variable
        for name in present[1:]:
            setattr(slots[name].owner, slots[name].attr, shared)


def _freeze(twin: Any, torch_module: Any) -> None:
    """``requires_grad=False`` torch parameters -> the frozen marking on the twin's nnx.Param."""
    slots = _named_slots(twin, with_non_persistent=True)
    for name, param in torch_module.named_parameters(remove_duplicate=False):
        if not param.requires_grad and name in slots:
            slots[name].variable.set_metadata("requires_grad", False)


def _variables(twin: Any) -> tuple[tuple[str, _Variable], ...]:
    """torch name -> (owner path, attribute, perm) for every tensor of the twin, non-persistent included."""
    result = []
    owners = {id(module): name for name, module in _named_modules(twin)}
    for name, slot in _named_slots(twin, with_non_persistent=True).items():
        result.append((name, _Variable(owners[id(slot.owner)], slot.attr, slot.perm)))
    return tuple(result)


def _resolve(root: nnx.Module, path: str) -> Any:
    """The twin's module at a torch dotted path ("features.0.conv")."""
    node = root
    for part in path.split(".") if path else ():
        if isinstance(node, layers.Sequential):
            node = node[int(part)]
        elif isinstance(node, (list, tuple, nnx.List)):
            node = node[int(part)]
        else:
            node = getattr(node, part)
    return node


# ----------------------------------------------------------------------------------------------------
# Capture with torch.export
# ----------------------------------------------------------------------------------------------------


def _user_frame_of(tb_lines: list[tuple[str, int, str, str]]) -> str:
    """'file:line in function: code' of the innermost frame outside torch, fnml.interop and the stdlib."""
    import torch

    torch_dir = os.path.dirname(torch.__file__)
    skipped = (torch_dir, _HERE, os.path.dirname(os.__file__))
    for filename, lineno, function, code in reversed(tb_lines):
        path = os.path.abspath(filename)
        if not path.startswith(skipped) and "site-packages" not in path and not filename.startswith("<"):
            return f"{filename}:{lineno} in {function}: {(code or '').strip()}"
    # No user frame: the construct is in a model library's code (timm, torchvision...) or in torch's own
    # modules; name that file and line rather than nothing.
    torch_modules = (os.path.join(torch_dir, "nn", ""),)
    for accept in (lambda path: not path.startswith(skipped), lambda path: path.startswith(torch_modules)):
        for filename, lineno, function, code in reversed(tb_lines):
            path = os.path.abspath(filename)
            if accept(path) and os.path.exists(path):
                return f"{filename}:{lineno} in {function} (library code): {(code or '').strip()}"
    return "unknown source location"


def _frames_of_exception(error: BaseException) -> list[tuple[str, int, str, str]]:
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(error.__traceback__)]
    cause = error.__cause__ or error.__context__
    if cause is not None and cause is not error:
        frames += _frames_of_exception(cause)
    return frames


_DATA_DEPENDENT = ("data-dependent", "DataDependent", "GuardOnDataDependent", "Could not guard on", "item()")


def _export(torch_module: Any, args: tuple, kwargs: dict) -> Any:
    """torch.export (non-strict) with every input dimension left to torch (``Dim.AUTO``)."""
    import torch
    from torch.export import Dim

    def dims(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return {axis: Dim.AUTO for axis in range(value.ndim)} if value.ndim else None
        if isinstance(value, (tuple, list)):
            return type(value)(dims(v) for v in value)
        if isinstance(value, dict):
            return {k: dims(v) for k, v in value.items()}
        return None

    signature = inspect.signature(torch_module.forward)
    try:
        bound = signature.bind(*args, **kwargs)
        dynamic = {name: dims(value) for name, value in bound.arguments.items()}
    except TypeError as error:
        raise TypeError(
            f"from_torch: the example inputs do not fit {type(torch_module).__name__}.forward: {error}"
        ) from None
    try:
        with warnings.catch_warnings(), _caches_as_tensors(torch_module):
            # torch's RNN modules re-assign their flat weight list during export: harmless, not actionable.
            warnings.filterwarnings("ignore", message="The tensor attributes .* were assigned during export")
            with _torch_reference_paths():
                return torch.export.export(torch_module, args, kwargs, strict=False, dynamic_shapes=dynamic)
    except Exception as error:  # torch raises UserError, GuardOnDataDependentSymNode, RuntimeError, ...
        where = _user_frame_of(_frames_of_exception(error))
        text = f"{type(error).__name__}: {error}"
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        if any(marker in text for marker in _DATA_DEPENDENT):
            raise UnsupportedTorchOpError(
                f"from_torch: {type(torch_module).__name__}.forward branches on a tensor's VALUE at {where}. "
                f"The capture runs forward on example inputs and can follow Python branches on sizes, not on "
                f"data. Fix: compute both sides and select with torch.where(cond, a, b), or decide on the "
                f"Python side (pass a flag argument). ({first})"
            ) from None
        raise UnsupportedTorchOpError(
            f"from_torch: torch.export could not capture {type(torch_module).__name__}.forward at {where} ({first})"
        ) from None


def _is_cache(value: Any) -> bool:
    """A transformers ``Cache`` (DynamicCache, EncoderDecoderCache...): an object torch.export cannot return."""
    return any(c.__name__ == "Cache" and c.__module__.startswith("transformers") for c in type(value).__mro__)


def _cache_tensors(cache: Any) -> Any:
    """A transformers cache -> its tensors, per layer: ``(key, value)``, or ``(key, value, cross key, cross
    value)`` for an encoder-decoder cache (transformers' legacy tuple format); None for a layer kind without
    ``keys`` / ``values`` (the warning in :func:`_caches_as_tensors` says so)."""
    if hasattr(cache, "self_attention_cache") and hasattr(cache, "cross_attention_cache"):
        own, cross = _cache_tensors(cache.self_attention_cache), _cache_tensors(cache.cross_attention_cache)
        if own is None or cross is None:
            return None
        return tuple(a + b for a, b in zip(own, cross))
    layers_ = getattr(cache, "layers", None)
    if layers_ is None or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers_):
        return None
    return tuple((layer.keys, layer.values) for layer in layers_)


def _without_caches(value: Any, owner: str) -> Any:
    """The forward's output with every transformers cache replaced by its tensors (or dropped, with a warning)."""
    if _is_cache(value):
        tensors = _cache_tensors(value)
        if tensors is None:
            warnings.warn(
                f"from_torch: {owner}.forward returns a {type(value).__name__} whose layers hold no key/value "
                f"tensors; the twin returns None in its place. Pass use_cache=False to the model to silence this",
                stacklevel=4,
            )
        return tensors
    if isinstance(value, dict) and any(_is_cache(v) for v in value.values()):
        items = {k: _without_caches(v, owner) for k, v in value.items()}
        return type(value)(**items) if type(value) is not dict else items
    if isinstance(value, (tuple, list)) and any(_is_cache(v) for v in value):
        return type(value)(_without_caches(v, owner) for v in value)
    return value


@contextlib.contextmanager
def _caches_as_tensors(torch_module: Any) -> Iterator[None]:
    """Capture a forward whose output holds a transformers cache (``use_cache=True``, transformers' default):
    the capture records the cache's key/value tensors (per layer, transformers' legacy tuple layout) in its
    place, so the twin returns them as arrays. The instance's ``forward`` is swapped for the capture only
    (``functools.wraps`` keeps its signature, which torch.export reads)."""
    forward = torch_module.forward

    @functools.wraps(forward)
    def tensors_for_caches(*args: Any, **kwargs: Any) -> Any:
        return _without_caches(forward(*args, **kwargs), type(torch_module).__name__)

    torch_module.forward = tensors_for_caches
    try:
        yield
    finally:
        del torch_module.forward


@contextlib.contextmanager
def _torch_reference_paths() -> Iterator[None]:
    """During a capture, torch's own transformer modules take their reference path, not a kernel choice made
    by a tensor's VALUE.

    ``nn.TransformerEncoder`` / ``nn.TransformerDecoder`` test whether a given mask equals the causal mask
    (``_detect_is_causal_mask``: ``bool((mask == causal).all())``) and ``nn.MultiheadAttention`` /
    ``nn.TransformerEncoderLayer`` test their inputs for a fused inference fast path (nested tensors from a
    padding mask). Both only choose a kernel: the hint ``is_causal=True`` makes attention apply the same causal
    mask, and the fast path computes the reference math (torch documents both). The capture follows the
    reference path: the hint is what the caller passed (``is_causal is True``), the mask is applied as given,
    and the fast path is off (``torch.backends.mha.set_fastpath_enabled(False)``), so the forward captures
    with no branch on a value, and the twin computes what torch's reference path computes.
    """
    import torch
    from torch.nn.modules import transformer

    detect = transformer._detect_is_causal_mask
    fast_path = torch.backends.mha.get_fastpath_enabled()
    transformer._detect_is_causal_mask = lambda mask, is_causal=None, size=None: is_causal is True
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        transformer._detect_is_causal_mask = detect
        torch.backends.mha.set_fastpath_enabled(fast_path)


def _with_mode(torch_module: Any, training: bool, capture: Any) -> Any:
    """Run ``capture()`` with every submodule in ``training`` mode, then restore each module's own mode."""
    modes = [(module, module.training) for module in torch_module.modules()]
    torch_module.train(training)
    try:
        return capture()
    finally:
        for module, mode in modes:
            module.training = mode


def _tracking_training_reads(torch_module: Any, capture: Any) -> tuple[Any, set[str]]:
    """Run ``capture()`` while recording which modules read ``self.training`` (torch paths).

    Each module's class is swapped, for the capture only, for a subclass whose ``training`` is a property
    (a data descriptor wins over the instance attribute), so every read in forward code is seen.
    """
    reads: set[int] = set()
    paths: dict[int, list[str]] = {}
    for path, module in torch_module.named_modules(remove_duplicate=False):
        paths.setdefault(id(module), []).append(path)
    originals = {}
    for module in {id(m): m for m in torch_module.modules()}.values():
        cls = module.__class__

        def read(self: Any) -> bool:
            reads.add(id(self))
            return self.__dict__["training"]

        def write(self: Any, value: bool) -> None:
            self.__dict__["training"] = value

        tracked = type(cls.__name__, (cls,), {"training": property(read, write), "__module__": cls.__module__})
        tracked.__qualname__ = cls.__qualname__
        originals[id(module)] = (module, cls)
        module.__class__ = tracked
    try:
        result = capture()
    finally:
        for module, cls in originals.values():
            module.__class__ = cls
    return result, {path for key in reads for path in paths.get(key, [])}


def _op_name(target: Any) -> str:
    """'aten.linear' for an OpOverload, 'operator.getitem' for a Python operator, module.name otherwise."""
    import torch

    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._opname}"
    if isinstance(target, torch._ops.OpOverloadPacket):
        return f"{target._qualified_op_name.replace('::', '.')}"
    module = getattr(target, "__module__", None) or ""
    module = {"_operator": "operator"}.get(module, module)
    return f"{module}.{getattr(target, '__name__', repr(target))}"


def _where(node: Any) -> str:
    """'module 'blocks.0.attn' (CausalSelfAttention), file:line in fn: code' for a captured node."""
    stack = node.meta.get("nn_module_stack") or {}
    path, kind = list(stack.values())[-1] if stack else ("", "")
    kind = str(kind).rsplit(".", 1)[-1].strip("'>")
    frames = []
    lines = (node.meta.get("stack_trace") or "").splitlines()
    for i, line in enumerate(lines):
        match = re.match(r'\s*File "(.+)", line (\d+), in (.+)', line)
        if match:
            code = lines[i + 1] if i + 1 < len(lines) else ""
            frames.append((match.group(1), int(match.group(2)), match.group(3), code))
    return f"module {path or '<root>'!r} ({kind}), {_user_frame_of(frames)}"


def _leaf_path(node: Any) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else None


_PLACEMENT_KEYWORDS = {"device", "layout", "pin_memory", "memory_format", "non_blocking", "generator"}


def _convert(value: Any) -> Any:
    """An fx argument -> a hashable program argument (nodes become references, torch dtypes numpy dtypes)."""
    import torch
    import torch.fx

    if isinstance(value, torch.fx.Node):
        return _Ref(value.name)
    if isinstance(value, slice):
        return _SliceSpec(_convert(value.start), _convert(value.stop), _convert(value.step))
    if isinstance(value, (list, tuple)):
        return tuple(_convert(v) for v in value)
    if isinstance(value, torch.dtype):
        return canonical_dtype(value)
    if isinstance(value, (torch.device, torch.layout, torch.memory_format)):
        return None
    if isinstance(value, dict):
        raise UnsupportedTorchOpError(f"a dict argument {value!r}")
    if isinstance(value, torch.Tensor):
        raise UnsupportedTorchOpError("a tensor constant captured in forward (register it as a buffer)")
    return value


class _Compiler:
    """ExportedProgram -> :class:`_Program` (checks every op against the lowering table, naming the line)."""

    def __init__(self, exported: Any, layer_paths: dict[str, str], variables: tuple, kwarg_order: tuple):
        self.exported = exported
        self.layer_paths = layer_paths
        self.variables = dict(variables)
        self.kwarg_order = kwarg_order
        self.placeholders: dict[str, tuple[str, Any]] = {}  # node name -> ("param"|"buffer"|"user", torch name)
        self.views: set[str] = set()
        # In-place writes (see _in_place_nodes): basic-indexing views as (base node, slice/select steps), the
        # node now holding each written tensor's value, and views read stale by a later write into their base.
        self.static: set[str] = set()  # nodes computed from sizes and constants only (evaluated, not traced)
        self.view_chain: dict[str, tuple[str, tuple]] = {}
        self.renamed: dict[str, str] = {}
        self.stale: set[str] = set()

    def compile(self) -> _Program:
        import torch.utils._pytree as pytree

        graph = self.exported.graph_module.graph
        inputs = self._inputs(graph)
        nodes, outputs = [], ()
        for node in graph.nodes:
            if node.op in ("call_function", "output"):
                nodes.extend(self._refreshed_views(node))
            if node.op == "call_function":
                compiled = self._batch_norm_with_stats(node) or self._node(node)
                nodes.extend(compiled if isinstance(compiled, list) else [compiled])
            elif node.op == "output":
                outputs = self._outputs(node)
            elif node.op == "get_attr":
                self._refuse(node, "a captured submodule or attribute (control flow such as torch.cond / no_grad)")
        call_spec = self.exported.call_spec
        return _Program(
            inputs=inputs,
            nodes=_only_item_sources_static(nodes),
            outputs=outputs,
            in_spec=pytree.treespec_dumps(call_spec.in_spec),
            out_spec=pytree.treespec_dumps(call_spec.out_spec),
            kwarg_order=self.kwarg_order,
            variables=tuple(self.variables.items()),
            source=self.exported.graph_module.code,
        )

    def _inputs(self, graph: Any) -> tuple[_Input, ...]:
        specs = {spec.arg.name: spec for spec in self.exported.graph_signature.input_specs}
        result, user_index = [], 0
        for node in graph.nodes:
            if node.op != "placeholder":
                continue
            spec = specs[node.name]
            kind = spec.kind.name
            if kind == "USER_INPUT":
                value = node.meta.get("val")
                shape = None
                if hasattr(value, "shape"):
                    shape = tuple(_fixed_size(d) for d in value.shape)
                result.append(_Input(node.name, "user", user_index, shape))
                self.placeholders[node.name] = ("user", user_index)
                user_index += 1
            elif kind in ("PARAMETER", "BUFFER"):
                if spec.target not in self.variables:
                    raise UnsupportedTorchOpError(
                        f"from_torch: the captured forward reads {spec.target!r}, which the twin lacks"
                    )
                result.append(_Input(node.name, "var", spec.target, None))
                self.placeholders[node.name] = (kind.lower(), spec.target)
            elif kind == "CONSTANT_TENSOR":
                result.append(_Input(node.name, "const", _Const.of(self.exported.constants[spec.target]), None))
                self.static.add(node.name)
                self.placeholders[node.name] = ("const", spec.target)
            else:
                raise UnsupportedTorchOpError(f"from_torch: captured input {node.name!r} of kind {kind}")
        return tuple(result)

    def _refuse(self, node: Any, what: str) -> None:
        raise UnsupportedTorchOpError(
            f"from_torch: unsupported operation {what} in {_where(node)}. The twin lowers torch ops through "
            f"fnml.interop.lowering.OPS; rewrite this line with supported ops or register the op there."
        )

    def _node(self, node: Any) -> _Node:
        import torch

        where = _where(node)
        if isinstance(node.target, torch._ops.HigherOrderOperator):
            self._refuse(node, f"{node.target.name()} (a higher-order op: torch.cond, no_grad or autocast region)")
        name = _op_name(node.target)
        try:
            args = _convert(tuple(node.args))
            kwargs = tuple((k, _convert(v)) for k, v in node.kwargs.items() if k not in _PLACEMENT_KEYWORDS)
        except UnsupportedTorchOpError as error:
            self._refuse(node, str(error))
        args, kwargs = _renamed(args, self.renamed), _renamed(kwargs, self.renamed)
        parent = getattr(node.args[0], "name", None) if node.args else None
        # A chain from a base that is itself another kind of view (y.t()[0]) is not followed: writes refused.
        if name in ("aten.slice", "aten.select") and parent and (parent in self.view_chain or parent not in self.views):
            base, steps = self.view_chain.get(node.args[0].name, (node.args[0].name, ()))
            self.view_chain[node.name] = (base, (*steps, (name.split(".")[1], *args[1:])))
        if name in lowering.VIEWS or (
            name == "operator.getitem" and node.args and getattr(node.args[0], "name", None) in self.views
        ):
            self.views.add(node.name)
        path = _leaf_path(node)
        layer_call = self.layer_paths.get(path) if path is not None else None
        if layer_call is not None and name in layer_call.aten_ops:
            return _Node(node.name, "layer", path, args, kwargs, layer_call.adapter, "", where)
        write_back = ""
        if _is_inplace(node.target):
            source = node.args[0].name if node.args and hasattr(node.args[0], "name") else None
            kind, target = self.placeholders.get(source, (None, None))
            if kind == "buffer" and layer_call is not None and _owner_path(target) == path:
                return _Node(node.name, "alias", "", (args[0],), (), "", "", where)  # the fnml layer updates it
            if kind == "buffer":
                write_back = target
            elif kind == "param":
                self._refuse(node, f"{name} (an in-place write into the parameter {target!r})")
            elif source in self.view_chain and lowering.lookup(name) is not None:
                return self._write_into_view(node, name, source, args, kwargs, where)
            elif source in self.views:
                self._refuse(
                    node,
                    f"{name} (an in-place write into a view other than basic indexing, such as "
                    f"x.view(...).add_(1) or x.t()[0] = v; write it out of place, e.g. with torch.cat, "
                    f"torch.where or x = x.clone() before indexing with a tensor)",
                )
            if source is not None:
                self.renamed[source] = node.name  # later reads of the written tensor see the new value
                self.stale.update(view for view, (root, _) in self.view_chain.items() if root == source)
        refs = list(_ref_names((args, tuple(v for _, v in kwargs))))
        if name in ("aten.sym_size", "aten.sym_numel") or (
            refs
            and all(ref in self.static for ref in refs)
            and (name == "aten.item" or not getattr(lowering.lookup(name), "random", True))
        ):
            self.static.add(node.name)  # computed from sizes and constants only: concrete while the twin runs
        if name == "aten.item" and node.name in self.static:
            # .item() of a tensor made from sizes (torch.tensor([x.size(2) - y.size(2)]) // 2): a Python number
            # on the call's shapes, so the size arithmetic specialises like torch's
            return _Node(node.name, "op", "fnml.item", args, kwargs, "", "", where, True)
        if name == "aten.dropout" and (len(node.args) < 3 or node.args[2] is False or node.args[1] == 0):
            return _Node(node.name, "alias", "", (args[0],), (), "", "", where)  # eval-mode / p=0 dropout
        if lowering.lookup(name) is None:
            self._refuse(node, f"{name} ({node.format_node()})")
        return _Node(node.name, "op", name, args, kwargs, "", write_back, where, node.name in self.static)

    def _refreshed_views(self, node: Any) -> list[_Node]:
        """Views read after an in-place write into their base, taken again from the base's new value."""
        import torch.fx

        refreshed = []
        for arg in node.all_input_nodes if isinstance(node, torch.fx.Node) else ():
            if arg.name not in self.stale:
                continue
            self.stale.discard(arg.name)
            base, steps = self.view_chain[arg.name]
            fresh = f"{arg.name}__after_{node.name}"
            current = _Ref(self.renamed.get(base, base))
            refreshed.append(_Node(fresh, "op", "fnml.view_gather", (current, steps), (), "", "", _where(node)))
            self.renamed[arg.name] = fresh
        return refreshed

    def _write_into_view(self, node: Any, name: str, source: str, args: tuple, kwargs: tuple, where: str) -> list:
        """``x[a:b, i] = v`` / ``view.fill_(v)`` / ``view.masked_fill_(m, v)``: torch writes through the view into
        its base tensor. The twin computes the view's new value with the op's functional form, scatters it
        into the base at the view's index (``fnml.view_scatter``), and later reads of the base and of the view
        see the new values, as torch's shared storage does."""
        base, steps = self.view_chain[source]
        kind, target = self.placeholders.get(base, (None, None))
        if kind in ("param", "user", "const"):
            what = {"param": "the parameter", "user": "the forward's input", "const": "the constant"}[kind]
            self._refuse(
                node,
                f"{name} (an in-place write through a view into {what} {target!r}: torch would change it for "
                f"the caller too; clone it first, x = x.clone())",
            )
        scatter = f"{node.name}__into_{base}"
        current = self.renamed.get(base, base)
        # Other views of the base now read the new values (torch shares the storage): taken again when read.
        self.stale.update(view for view, (root, _) in self.view_chain.items() if root == base and view != source)
        self.stale.discard(source)
        self.view_chain[node.name] = self.view_chain[source]  # the op's result is the same view
        self.renamed[base], self.renamed[source] = scatter, node.name
        write_back = target if kind == "buffer" else ""
        return [
            _Node(node.name, "op", name, args, kwargs, "", "", where),
            _Node(
                scatter, "op", "fnml.view_scatter", (_Ref(current), _Ref(node.name), steps), (), "", write_back, where
            ),
        ]

    def _batch_norm_with_stats(self, node: Any) -> list[_Node] | None:
        """``F.batch_norm(x, running_mean, running_var, training=True)`` outside an fnml BatchNorm layer (timm's
        ``BatchNormAct2d``, hand-written norms): torch updates the two buffers inside the op, so the twin runs
        ``batch_norm_with_stats`` and writes both buffers back, as the in-place ops on buffers are."""
        if _op_name(node.target) != "aten.batch_norm" or len(node.args) < 7 or node.args[5] is not True:
            return None
        path = _leaf_path(node)
        layer_call = self.layer_paths.get(path) if path is not None else None
        if layer_call is not None and "aten.batch_norm" in layer_call.aten_ops:
            return None  # an fnml BatchNorm layer updates its own statistics
        stats = [self.placeholders.get(getattr(arg, "name", None), (None, None)) for arg in node.args[3:5]]
        if node.args[3] is None and node.args[4] is None:
            return None  # batch statistics only: nothing to update
        if any(kind != "buffer" for kind, _ in stats):
            self._refuse(
                node,
                "aten.batch_norm (F.batch_norm(training=True) with running statistics that are not buffers of a "
                "module: torch updates them in place inside the op; register running_mean / running_var as "
                "buffers of the module that calls F.batch_norm, or use nn.BatchNorm1d/2d)",
            )
        where = _where(node)
        args = _convert(tuple(node.args))
        kwargs = tuple((k, _convert(v)) for k, v in node.kwargs.items() if k not in _PLACEMENT_KEYWORDS)
        packed = f"{node.name}__with_stats"
        return [
            _Node(packed, "op", "fnml.batch_norm_with_stats", args, kwargs, "", "", where),
            _Node(f"{node.name}__mean", "op", "operator.getitem", (_Ref(packed), 1), (), "", stats[0][1], where),
            _Node(f"{node.name}__var", "op", "operator.getitem", (_Ref(packed), 2), (), "", stats[1][1], where),
            _Node(node.name, "op", "operator.getitem", (_Ref(packed), 0), (), "", "", where),
        ]

    def _outputs(self, node: Any) -> tuple:
        specs = self.exported.graph_signature.output_specs
        results = _renamed(_convert(tuple(node.args[0])), self.renamed)
        user = tuple(value for value, spec in zip(results, specs) if spec.kind.name == "USER_OUTPUT")
        return user


def _only_item_sources_static(nodes: list[_Node]) -> tuple[_Node, ...]:
    """Keep the concrete evaluation to the size arithmetic that feeds a ``.item()``: every other value stays
    traced under jit (a concrete array there would look eager to the layers that check for tracers)."""
    producers = {node.name: node for node in nodes}
    needed: set[str] = set()
    stack = [node.name for node in nodes if node.target == "fnml.item"]
    while stack:
        name = stack.pop()
        node = producers.get(name)
        if name in needed or node is None or not node.static:
            continue
        needed.add(name)
        stack.extend(_ref_names((node.args, tuple(v for _, v in node.kwargs))))
    return tuple(node._replace(static=node.name in needed) if node.static else node for node in nodes)


def _renamed(value: Any, names: dict[str, str]) -> Any:
    """A converted argument with references to tensors written in place replaced by their new values' nodes."""
    if isinstance(value, _Ref):
        return _Ref(names.get(value.name, value.name))
    if isinstance(value, _SliceSpec):
        return _SliceSpec(*(_renamed(v, names) for v in value))
    if isinstance(value, tuple):
        return tuple(_renamed(v, names) for v in value)
    return value


def _fixed_size(dim: Any) -> int | None:
    """A captured input dim: its size when the forward fixed it (an int, or a SymInt equal to a number), else None."""
    if isinstance(dim, int):
        return dim
    expr = getattr(getattr(dim, "node", None), "expr", None)
    return int(expr) if expr is not None and expr.is_number else None


def _is_inplace(target: Any) -> bool:
    """An ATen op that writes its first argument (``add_``, ``relu_``, ``copy_``, ``index_put_``)."""
    schema = getattr(target, "_schema", None)
    if schema is None or not schema.arguments:
        return False
    alias = schema.arguments[0].alias_info
    return bool(alias is not None and alias.is_write)


# ----------------------------------------------------------------------------------------------------
# Running a program
# ----------------------------------------------------------------------------------------------------


def _lookup(env: dict[str, Any], value: Any) -> Any:
    """Replace program references in a (nested) argument by their computed values."""
    if isinstance(value, _Ref):
        return env[value.name]
    if isinstance(value, _SliceSpec):
        return slice(_lookup(env, value.start), _lookup(env, value.stop), _lookup(env, value.step))
    if isinstance(value, tuple):
        return tuple(_lookup(env, v) for v in value)
    return value


@functools.lru_cache(maxsize=256)
def _spec(text: str) -> Any:
    import torch.utils._pytree as pytree

    return pytree.treespec_loads(text)


def _as_array(value: Any) -> Any:
    """Inputs: torch tensors / numpy -> jax arrays; other values (None, ints) unchanged."""
    if _torch.is_tensor(value):
        return _torch.as_jax(value)
    if isinstance(value, np.ndarray):
        return jnp.asarray(value)
    return value


def _user_leaves(program: _Program, args: tuple, kwargs: dict) -> list:
    """The call's inputs flattened as torch flattened the example's (kwargs in the example's order)."""
    import torch.utils._pytree as pytree

    # A keyword captured as None and left out now means the same (forward's default): put the None back.
    ordered = {name: kwargs.get(name) for name in program.kwarg_order}
    ordered.update({name: value for name, value in kwargs.items() if name not in ordered})
    leaves, spec = pytree.tree_flatten((tuple(args), ordered))
    expected = _spec(program.in_spec)
    if spec != expected:
        given = ", ".join([f"<{len(args)} positional>"] * bool(args) + [f"{k}=" for k in kwargs])
        raise TypeError(
            f"the twin was captured for a call with {expected.child(0).num_children} positional "
            f"argument(s) and keyword(s) {list(program.kwarg_order)}, and was called with ({given}), whose "
            f"structure differs; call it with the example's structure (the same positional and keyword "
            f"arguments, the same nesting)"
        )
    return leaves


def _check_shape(name: str, value: Any, shape: tuple | None) -> None:
    if shape is None or not hasattr(value, "shape"):
        return
    actual = tuple(value.shape)
    if len(actual) != len(shape) or any(s is not None and s != a for s, a in zip(shape, actual)):
        captured = tuple("free" if s is None else s for s in shape)
        raise ValueError(
            f"from_torch twin: input {name!r} has shape {actual}, but the forward was captured with shape "
            f"{captured} (dims marked 'free' may change; the others were fixed by the forward's code at capture). "
            f"Capture again with an example of this shape: interop.from_torch(model, example)"
        )


# ATen ops torch runs only on operands of one floating dtype (no type promotion) -> the positions of those
# operands: matmuls, convolutions, norms (input and affine parameters), attention (query, key, value; torch
# converts a float mask itself). torch raises on a mix ("mat1 and mat2 must have the same dtype"); jax promotes.
_SAME_DTYPE_OPS: dict[str, tuple[int, ...]] = {
    "aten.linear": (0, 1, 2),
    "aten.conv1d": (0, 1, 2),
    "aten.conv2d": (0, 1, 2),
    "aten.conv_transpose1d": (0, 1, 2),
    "aten.conv_transpose2d": (0, 1, 2),
    "aten.mm": (0, 1),
    "aten.bmm": (0, 1),
    "aten.matmul": (0, 1),
    "aten.mv": (0, 1),
    "aten.dot": (0, 1),
    "aten.addmm": (0, 1, 2),
    "aten.baddbmm": (0, 1, 2),
    "aten.layer_norm": (0, 2, 3),
    "aten.group_norm": (0, 2, 3),
    "aten.batch_norm": (0, 1, 2, 3, 4),
    "aten.instance_norm": (0, 1, 2, 3, 4),
    "aten.scaled_dot_product_attention": (0, 1, 2),
}


def _dtype_of(value: Any) -> Any:
    """The dtype of an array operand (channels-last ones included), None for anything else."""
    if isinstance(value, _ChannelsLast):
        return value.data.dtype
    return value.dtype if isinstance(value, (jax.Array, np.ndarray)) or hasattr(value, "aval") else None


def _parameter_dtype(layer: Any) -> Any:
    """The dtype of a layer's first floating tensor (its parameters' dtype), or None for a layer without one."""
    for slot in _slots(layer) or ():
        value = slot.variable.get_value()
        if hasattr(value, "dtype") and jnp.issubdtype(value.dtype, jnp.floating):
            return value.dtype
    return None


def _is_half(dtype: Any) -> bool:
    # 16-bit floats are left unchecked: under autocast (train.make_train_step(autocast=...)) torch itself feeds
    # bfloat16 activations to float32 layers, so a mix there is not an error.
    return jnp.dtype(dtype) in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def _check_layer_input(root: Any, node: _Node, layer: Any, call_args: tuple, context: tuple) -> None:
    """Refuse the input dtype torch's layer refuses: data that is not of its parameters' floating dtype
    (an int32 image into a Conv2d, float32 into a float64 Linear), indices that are not integers."""
    if node.adapter == "elementwise":
        return  # ReLU, Dropout...: no parameters, torch's own dtype rules per op
    if node.adapter == "embedding":
        ids = call_args[1] if len(call_args) > 1 else None
        if _dtype_of(ids) is not None and not jnp.issubdtype(_dtype_of(ids), jnp.integer):
            _refuse_dtype(
                root, node, node.args[1], _dtype_of(ids), "integer indices (int32 or int64)", "int64", context
            )
        return
    x = call_args[0] if call_args else None
    received, expected = _dtype_of(x), _parameter_dtype(layer)
    if received is None or expected is None or _is_half(received) or _is_half(expected):
        return
    if jnp.dtype(received) != jnp.dtype(expected):
        name = jnp.dtype(expected).name
        _refuse_dtype(root, node, node.args[0], received, f"{name}, its parameters' dtype", name, context)


def _check_op_operands(root: Any, node: _Node, call_args: tuple, context: tuple) -> None:
    """Refuse the operand dtypes torch refuses for a same-dtype op (one floating dtype, no integers beside it)."""
    positions = _SAME_DTYPE_OPS[node.target]
    operands = [
        (node.args[i], call_args[i])
        for i in positions
        if i < len(call_args) and _dtype_of(call_args[i]) is not None and not _is_half(_dtype_of(call_args[i]))
    ]
    floating = [jnp.dtype(_dtype_of(v)) for _, v in operands if jnp.issubdtype(_dtype_of(v), jnp.floating)]
    if not floating:
        return
    expected = floating[0]
    for ref, value in operands:
        if jnp.dtype(_dtype_of(value)) != expected:
            _refuse_dtype(
                root, node, ref, _dtype_of(value), f"{expected.name}, as its other operands", expected.name, context
            )


def _refuse_dtype(root: Any, node: _Node, ref: Any, received: Any, expected: str, cast: str, context: tuple) -> None:
    program, args, kwargs = context
    sources = _user_sources(program, ref)
    where = node.target if node.kind == "op" else f"layer {node.target!r}"
    origin = ", ".join(_argument_name(root, program, index, args, kwargs) for index in sources) or "no argument"
    raise TypeError(
        f"twin of {root._torch_class}: {where} got an operand of dtype {jnp.dtype(received).name} (from {origin}), "
        f"expected "
        f"{expected}, as torch's forward would refuse it at {node.where} (torch's Linear, Conv, norms and RNNs "
        f"raise on an input whose dtype differs from their parameters': 'mat1 and mat2 must have the same dtype', "
        f"'Input type (int) and bias type (float) should be the same'). Cast the input first "
        f"(x.astype(jnp.{cast})), or port with an example of that dtype (interop.from_torch(model, example))"
    )


def _ref_names(value: Any) -> Iterator[str]:
    if isinstance(value, _Ref):
        yield value.name
    elif isinstance(value, (tuple, list, _SliceSpec)):
        for item in value:
            yield from _ref_names(item)


def _user_sources(program: _Program, ref: Any) -> list[int]:
    """The user leaves (indices) a program value is computed from, walking the program backwards."""
    producers = {node.name: node for node in program.nodes}
    users = {item.name: item.value for item in program.inputs if item.kind == "user"}
    stack, seen, found = list(_ref_names(ref)), set(), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in users:
            found.add(users[name])
        elif name in producers:
            stack.extend(_ref_names((producers[name].args, tuple(v for _, v in producers[name].kwargs))))
    return sorted(found)


def _argument_name(root: Any, program: _Program, index: int, args: tuple, kwargs: dict) -> str:
    """'argument 0 (x)', 'argument 'mask'' or 'argument 1 (pair)[0]' for user leaf ``index`` of a call."""
    import torch.utils._pytree as pytree

    ordered = {name: kwargs[name] for name in program.kwarg_order if name in kwargs}
    ordered.update({name: value for name, value in kwargs.items() if name not in ordered})
    path = pytree.tree_flatten_with_path((tuple(args), ordered))[0][index][0]
    group, key, rest = path[0].idx, path[1], "".join(str(k) for k in path[2:])
    if group == 1:
        return f"argument {key.key!r}{rest}"
    names = getattr(root, "_forward_names", ())
    label = f" ({names[key.idx]})" if key.idx < len(names) else ""
    return f"argument {key.idx}{label}{rest}"


def _read_variable(root: nnx.Module, location: _Variable) -> Any:
    """A twin variable's value in torch layout (transposed from fnml's layout where the two differ)."""
    value = getattr(_resolve(root, location.owner), location.attr)[...]
    return value if location.perm is None else jnp.transpose(value, location.perm)


class _ChannelsLast:
    """A torch channels-first tensor ``(N, C, *spatial)`` held channels-last, ``(N, *spatial, C)``.

    fnml's convolution, pooling and normalization layers compute channels-last (XLA's fast layout). A
    twin keeps their outputs in that form while elementwise work follows (ReLU, the residual add,
    dropout, scaling), so a chain conv -> BN -> ReLU -> conv -> BN -> add -> ReLU transposes once at its
    entry and once where an op needs torch's layout (flatten, a reduction, the output), not around every
    layer. Values only: the numbers are the same as transposing around each layer.
    """

    __slots__ = ("data",)

    def __init__(self, data: jax.Array):
        self.data = data

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def logical(self) -> jax.Array:
        return jnp.moveaxis(self.data, -1, 1)  # (N, *spatial, C) -> (N, C, *spatial)


def _logical(value: Any) -> Any:
    """``value`` with every channels-last tensor back in torch's layout (nested tuples / lists too)."""
    if isinstance(value, _ChannelsLast):
        return value.logical()
    if isinstance(value, (tuple, list)):
        return type(value)(_logical(v) for v in value)
    return value


# True while a twin runs an elementwise layer (ReLU, Dropout...) on channels-last data.
_CHANNELS_LAST_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("fnml_channels_last_call", default=False)


def in_channels_last_call() -> bool:
    """Whether the layer being called runs on a twin's channels-last data (its output is ``(N, *S, C)``).

    PyTorch equivalent: none (a layout note for ``parity.first_divergence``, which compares layer outputs
    in torch's layout).

    >>> from fnml.interop import capture
    >>> capture.in_channels_last_call()
    False
    """
    return _CHANNELS_LAST_CALL.get()


# adapter -> the input ranks it runs channels-last (batched forms; unbatched inputs take the plain path).
_CHANNELS_LAST_RANKS = {"nchw": (4,), "ncl": (3,), "channels": (3, 4, 5), "batch_norm": (3, 4)}


def _channels_last_layer(layer: Any, adapter: str, args: tuple) -> Any:
    """Run a layer call, keeping channels-last data channels-last where the adapter allows it."""
    x = args[0] if args else None
    if adapter in _CHANNELS_LAST_RANKS and getattr(x, "ndim", None) in _CHANNELS_LAST_RANKS[adapter]:
        data = x.data if isinstance(x, _ChannelsLast) else jnp.moveaxis(x, 1, -1)  # (N, C, *S) -> (N, *S, C)
        return _ChannelsLast(layer(data))
    if adapter == "elementwise" and isinstance(x, _ChannelsLast):
        token = _CHANNELS_LAST_CALL.set(True)  # parity.first_divergence reads the layout of this call
        try:
            return _ChannelsLast(layer(x.data))
        finally:
            _CHANNELS_LAST_CALL.reset(token)
    return _call_layer(layer, adapter, _logical(args))


def _to_channels_last(value: Any, ndim: int) -> Any:
    """An elementwise operand next to channels-last ones: arrays broadcast in torch's layout are moved
    to the channels-last layout (a ``(C, 1, 1)`` bias becomes ``(1, 1, 1, C)``); scalars stay."""
    if isinstance(value, _ChannelsLast):
        return value.data
    if not hasattr(value, "ndim") or value.ndim == 0:
        return value
    shaped = jnp.reshape(value, (1,) * (ndim - value.ndim) + tuple(value.shape))  # torch's right-aligned broadcast
    return jnp.moveaxis(shaped, 1, -1)


def _channels_last_elementwise(op: Callable, args: tuple, kwargs: dict) -> Any:
    """``op(*args, **kwargs)``, an elementwise op, on channels-last operands, or None when it must run in
    torch's layout (no channels-last operand, operands of several ranks, or one of a higher rank)."""
    ranks = {v.ndim for v in args if isinstance(v, _ChannelsLast)}
    if len(ranks) != 1 or any(isinstance(v, (tuple, list)) for v in args):
        return None
    (ndim,) = ranks
    if any(getattr(v, "ndim", 0) > ndim for v in args):
        return None  # an operand of higher rank: broadcasting reshapes the result; keep torch's layout
    moved = tuple(_to_channels_last(v, ndim) for v in args)
    kwargs = _logical(kwargs)
    out = op(*moved, **kwargs)
    return _ChannelsLast(out) if getattr(out, "ndim", None) == ndim else None


def _run_program(root: TorchTwin, program: _Program, args: tuple, kwargs: dict) -> Any:
    """Evaluate a captured program: lowering-table ops on jax values, fnml layers for layer calls."""
    import torch.utils._pytree as pytree

    leaves = _user_leaves(program, args, kwargs)
    variables = dict(program.variables)
    env: dict[str, Any] = {}
    for item in program.inputs:
        if item.kind == "user":
            env[item.name] = _as_array(leaves[item.value])
            _check_shape(item.name, env[item.name], item.shape)
        elif item.kind == "var":
            env[item.name] = _read_variable(root, variables[item.value])
        else:
            env[item.name] = item.value.array()
    for node in program.nodes:
        call_args = _lookup(env, node.args)
        call_kwargs = {k: _lookup(env, v) for k, v in node.kwargs}
        if node.kind == "alias":
            env[node.name] = call_args[0]
            continue
        if node.kind == "layer":
            layer = _resolve(root, node.target)
            _check_layer_input(root, node, layer, call_args, (program, args, kwargs))
            env[node.name] = _channels_last_layer(layer, node.adapter, call_args)
            continue
        if node.target in _SAME_DTYPE_OPS:
            _check_op_operands(root, node, call_args, (program, args, kwargs))
        entry = lowering.lookup(node.target)
        op = entry.fn if not entry.random else functools.partial(entry.fn, root.rngs())
        out = None
        if node.target in lowering.ELEMENTWISE and not node.write_back:
            out = _channels_last_elementwise(op, call_args, call_kwargs)
        if out is None and node.static:
            with jax.ensure_compile_time_eval():  # sizes are concrete under jit: keep their arithmetic concrete
                out = op(*_logical(call_args), **_logical(call_kwargs))
        if out is None:
            out = op(*_logical(call_args), **_logical(call_kwargs))
        if node.write_back:
            location = variables[node.write_back]
            variable = getattr(_resolve(root, location.owner), location.attr)
            variable[...] = jnp.asarray(out, variable[...].dtype)
        env[node.name] = out
    outputs = [_logical(_lookup(env, ref)) for ref in program.outputs]
    _register_output_types(program.out_spec)
    return pytree.tree_unflatten(outputs, _spec(program.out_spec))


@functools.lru_cache(maxsize=256)
def _register_output_types(text: str) -> None:
    """Make the forward's own output classes jax pytrees (transformers' ``ModelOutput``: an OrderedDict
    subclass torch's pytree knows and jax does not), so a twin's output crosses ``jax.jit`` / ``grad`` as
    the same class, with ``out.logits`` and ``out["logits"]``."""
    pending = [_spec(text)]
    while pending:
        spec = pending.pop()
        pending.extend(spec.children())
        cls = spec.type
        if isinstance(cls, type) and issubclass(cls, dict) and cls not in (dict, OrderedDict):
            _register_dict_class(cls)


_JAX_REGISTERED: set[type] = set()


def _register_dict_class(cls: type) -> None:
    if cls in _JAX_REGISTERED:
        return

    def flatten(value: Any) -> tuple[list, tuple]:
        keys = tuple(value.keys())
        return [value[k] for k in keys], keys

    def unflatten(keys: tuple, children: Any) -> Any:
        # Item by item, not cls(**items): transformers' ModelOutput.__post_init__ inspects its first field,
        # and jax unflattens with placeholder leaves too. ModelOutput.__setitem__ sets the attribute as well.
        value = cls.__new__(cls)
        for key, child in zip(keys, children):
            value[key] = child
        return value

    try:
        jax.tree_util.register_pytree_node(cls, flatten, unflatten)
    except ValueError:  # registered elsewhere already (by the user, or another library)
        pass
    _JAX_REGISTERED.add(cls)


def _call_layer(layer: Any, adapter: str, args: tuple) -> Any:
    """Run an fnml layer in place of the torch op it replaces, converting torch layouts around it."""
    if adapter in ("first", "elementwise"):
        return layer(args[0])
    if adapter == "embedding":
        return layer(args[1])
    if adapter == "nchw":
        x = args[0]
        if x.ndim == 3:  # unbatched (C, H, W)
            return _call_layer(layer, adapter, (x[None],))[0]
        out = layer(jnp.transpose(x, (0, 2, 3, 1)))  # (N, C, H, W) -> (N, H, W, C)
        return jnp.transpose(out, (0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    if adapter == "ncl":
        x = args[0]
        if x.ndim == 2:  # unbatched (C, L)
            return _call_layer(layer, adapter, (x[None],))[0]
        return jnp.transpose(layer(jnp.transpose(x, (0, 2, 1))), (0, 2, 1))  # (N, C, L) <-> (N, L, C)
    if adapter == "channels":  # (N, C, *) <-> (N, *, C)
        return jnp.moveaxis(layer(jnp.moveaxis(args[0], 1, -1)), -1, 1)
    if adapter == "batch_norm":
        x = args[0]
        if x.ndim == 4:
            return jnp.transpose(layer(jnp.transpose(x, (0, 2, 3, 1))), (0, 3, 1, 2))  # NCHW <-> NHWC
        if x.ndim == 3:
            return jnp.transpose(layer(jnp.transpose(x, (0, 2, 1))), (0, 2, 1))  # (N, C, L) <-> (N, L, C)
        return layer(x)
    if adapter == "lstm":  # aten.lstm(input, [h0, c0], params, ...) -> (output, h_n, c_n)
        output, (h_n, c_n) = layer(args[0], (args[1][0], args[1][1]))
        return output, h_n, c_n
    if adapter == "rnn":  # aten.gru / rnn_tanh(input, h0, params, ...) -> (output, h_n)
        return layer(args[0], args[1])
    if adapter == "lstm_cell":  # aten.lstm_cell(input, [h, c], w_ih, w_hh, b_ih, b_hh) -> (h', c')
        return layer(args[0], (args[1][0], args[1][1]))
    if adapter == "cell":  # aten.gru_cell / rnn_tanh_cell(input, h, w_ih, w_hh, b_ih, b_hh) -> h'
        return layer(args[0], args[1])
    raise ValueError(f"unknown layer adapter {adapter!r}")


# ----------------------------------------------------------------------------------------------------
# The torch.fx path (no example inputs): symbolic tracing, as before
# ----------------------------------------------------------------------------------------------------


class _FxOp(NamedTuple):
    """One fx node, hashable: op kind, target (module path / function / method name), args, kwargs."""

    name: str
    op: str
    target: Any
    args: tuple
    kwargs: tuple  # ((key, value), ...)
    layout: str  # call_module: "nchw" / "ncl" / "channels" (the layer runs channels-last), "elementwise", or ""


# A layer's declared activation layout -> how the fx path feeds it torch's channels-first data.
_FX_LAYOUTS = {"nhwc": "nchw", "nlc": "ncl", "channels_last": "channels"}
_FX_FUNCTIONS: dict[Any, Any] = {}
_FX_METHODS: dict[str, Any] = {}


def _fx_tables() -> tuple[dict, dict]:
    if not _FX_FUNCTIONS:
        functions, methods = lowering.build_fx_tables()
        _FX_FUNCTIONS.update(functions)
        _FX_METHODS.update(methods)
    return _FX_FUNCTIONS, _FX_METHODS


@functools.lru_cache(maxsize=1)
def _fx_elementwise() -> tuple[frozenset, frozenset]:
    return lowering.fx_elementwise_targets()


def _fx_user_frame() -> str:
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_stack()]
    return _user_frame_of(frames)


def _fx_trace(torch_module: Any) -> Any:
    import torch.fx

    class _LocatingTracer(torch.fx.Tracer):
        def create_node(self, *args: Any, **kwargs: Any) -> Any:
            node = super().create_node(*args, **kwargs)
            node.meta["fnml_location"] = _fx_user_frame()
            return node

    try:
        return _LocatingTracer().trace(torch_module)
    except Exception as error:  # torch.fx raises TraceError, TypeError, RuntimeError...
        raise UnsupportedTorchOpError(
            f"from_torch: torch.fx could not trace {type(torch_module).__name__}.forward without example inputs "
            f"({type(error).__name__}: {error}); pass example inputs, interop.from_torch(model, example_x), so "
            f"the real forward runs (asserts, sizes and Python branches then work)"
        ) from error


def _fx_layout(torch_class: str) -> str:
    """The fx layout of a call_module node: its fnml layer's declared layout, or "elementwise" (see _FxOp)."""
    layer = _fnml_layer_class(torch_class)
    if layer is None:
        return ""
    facts = layer.torch_facts
    if facts.capture is not None and facts.capture.adapter == "elementwise":
        return "elementwise"  # ReLU, Dropout...: may run on channels-last data
    return _FX_LAYOUTS.get(facts.layout, "")


def _fx_compile(graph: Any, torch_root: Any) -> tuple[_FxOp, ...]:
    functions, methods = _fx_tables()
    program = []
    for node in graph.nodes:
        layout = ""
        where = node.meta.get("fnml_location") or "unknown source location"
        described = f"tensor method .{node.target}()" if node.op == "call_method" else _op_name(node.target)
        unsupported = (node.op == "call_function" and node.target not in functions) or (
            node.op == "call_method" and node.target not in methods
        )
        if unsupported:
            raise UnsupportedTorchOpError(
                f"from_torch: unsupported operation {described} at fx node {node.name!r} ({node.format_node()}), "
                f"used at {where}. Pass example inputs (interop.from_torch(model, x)) for the full op table."
            )
        if node.op == "call_module":
            layout = _fx_layout(type(torch_root.get_submodule(node.target)).__name__)
        try:
            args = _convert(tuple(node.args))
            kwargs = tuple((k, _convert(v)) for k, v in node.kwargs.items())
        except UnsupportedTorchOpError as error:
            raise UnsupportedTorchOpError(
                f"from_torch: unsupported operation {error} at fx node {node.name!r}, used at {where}"
            ) from None
        program.append(_FxOp(node.name, node.op, node.target, args, kwargs, layout))
    return tuple(program)


def _run_fx_program(root: nnx.Module, program: tuple[_FxOp, ...], args: tuple, kwargs: dict) -> Any:
    """Evaluate a compiled fx program with jax ops; fnml layers run the call_module nodes."""
    functions, methods = _fx_tables()
    elementwise_functions, elementwise_methods = _fx_elementwise()
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
            env[op.name] = _fx_call_layer(_resolve(root, op.target), op.layout, call_args, call_kwargs)
        elif op.op in ("call_function", "call_method"):
            fn = functions[op.target] if op.op == "call_function" else methods[op.target]
            out = None
            if op.target in (elementwise_functions if op.op == "call_function" else elementwise_methods):
                out = _channels_last_elementwise(fn, call_args, call_kwargs)
            env[op.name] = fn(*_logical(call_args), **_logical(call_kwargs)) if out is None else out
        elif op.op == "output":
            return _logical(call_args[0])
    raise RuntimeError("the traced program has no output node")


def _fx_call_layer(layer: Any, layout: str, args: tuple, kwargs: dict) -> Any:
    """Run one fnml layer on torch-layout values, converting channels around it when it needs that (a
    channels-last input stays channels-last through convolutions, norms, pools and elementwise layers)."""
    x, *rest = args
    if layout == "nchw" and getattr(x, "ndim", None) != 4:
        raise ValueError(f"{type(layer).__name__} in a twin expects a batched (N, C, H, W) input, got shape {x.shape}")
    batched_ranks = _CHANNELS_LAST_RANKS.get(layout, ())  # BatchNorm1d on (N, C) takes the plain path
    if not rest and not kwargs and (layout == "elementwise" or getattr(x, "ndim", None) in batched_ranks):
        return _channels_last_layer(layer, layout, (x,))
    x, rest, kwargs = _logical(x), _logical(rest), _logical(kwargs)
    if layout == "nchw" and x.ndim == 4:
        out = layer(jnp.transpose(x, (0, 2, 3, 1)), *rest, **kwargs)  # (N, C, H, W) -> (N, H, W, C)
        return jnp.transpose(out, (0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    if layout == "ncl" and x.ndim == 3:
        out = layer(jnp.transpose(x, (0, 2, 1)), *rest, **kwargs)  # (N, C, L) -> (N, L, C)
        return jnp.transpose(out, (0, 2, 1))  # (N, L, C) -> (N, C, L)
    if layout == "channels" and x.ndim >= 3:
        out = layer(jnp.moveaxis(x, 1, -1), *rest, **kwargs)  # (N, C, *S) -> (N, *S, C)
        return jnp.moveaxis(out, -1, 1)  # (N, *S, C) -> (N, C, *S)
    return layer(x, *rest, **kwargs)


# ----------------------------------------------------------------------------------------------------
# from_torch
# ----------------------------------------------------------------------------------------------------


def _root_checks(torch_module: Any) -> Any:
    """The module's dtype as a jax dtype; refuses non-modules and bare torch.nn leaves."""
    import torch

    if not isinstance(torch_module, torch.nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(torch_module).__name__}")
    if type(torch_module) is not torch.nn.Sequential and type(torch_module).__module__.startswith("torch.nn"):
        raise UnsupportedTorchOpError(
            f"from_torch: pass a model, not a bare torch.nn.{type(torch_module).__name__}; wrap it in "
            f"nn.Sequential(...)"
        )
    params = list(torch_module.parameters())
    dtype = params[0].dtype if params else torch.get_default_dtype()
    return canonical_dtype(dtype)


def _build_twin(torch_module: Any, dtype: Any, programs: Any, source: str, *, captured: bool, rngs: Any) -> Any:
    """The twin's tree with torch's weights, tied groups shared, frozen parameters marked."""
    aliases = _aliases(torch_module) if captured else []
    generic: frozenset[str] = frozenset()
    for _ in range(2):  # built twice only when a tied tensor would be transposed by an fnml layer
        builder = _Builder(dtype, captured=captured, generic=generic)
        own = [n for n, _ in torch_module.named_parameters(recurse=False)]
        own += [n for n, b in torch_module.named_buffers(recurse=False) if b is not None and n not in own]
        children = list(torch_module.named_children())
        twin = TorchTwin(
            type(torch_module).__name__, tuple(own) + tuple(n for n, _ in children), programs, source, rngs=rngs
        )
        builder.fill(twin, torch_module, children, "")
        needed = _needs_torch_layout(twin, aliases) if aliases else frozenset()
        if needed <= generic:
            break
        generic = generic | needed
    # Weights: through the same torch-name machinery as load_state_dict, in the torch dtype.
    _load(twin, torch_module.state_dict(), strict=True, flatten_nhwc=None, keep_source_dtype=True)
    _tie(twin, aliases)
    _freeze(twin, torch_module)
    twin._float_dtypes = (np.dtype(dtype).name, np.dtype(dtype).name)
    return twin, builder.layer_paths


def from_torch(torch_module: Any, *example_args: Any, rngs: nnx.Rngs | None = None, **example_kwargs: Any) -> TorchTwin:
    """Build an fnml twin of a torch module: same weights, same inputs (torch layouts), same outputs.

    PyTorch equivalent: none (the twin IS the torch module, in JAX); the capture is
    ``torch.export.export(module, example_args, strict=False)``.

    With example inputs, the module's REAL forward runs (``torch.export``, non-strict, every input dim
    left dynamic with ``Dim.AUTO``) once in training mode and once in eval mode, so asserts, Python
    branches on sizes or flags, ``len``, buffer/parameter slicing by sizes, factories (``torch.zeros(B,
    n)``, ``arange(T)``), ``.to(device/dtype)``, ``.device`` / ``.dtype``, modules built inside forward,
    ``torch.fx.wrap``-ed helpers and the user's own functions all work. Captured ops lower through one
    table (:data:`fnml.interop.lowering.OPS`); torch leaves with a faithful fnml layer (Linear, Conv2d,
    BatchNorm, LayerNorm, Embedding, LSTM/GRU/RNN, activations, pools, Dropout) become that layer.

    What is specialised to the example: every input dimension the forward's code fixes (a ``view`` with
    a constant, a branch on a size, a Linear's ``in_features``) and dims of size 0 or 1 in the example; the
    others (batch, usually sequence length and image size) stay free, so the twin runs on another batch
    size without capturing again. A call with a different fixed dim raises a ``ValueError`` that says so.
    Python branches on sizes are decided for the example's sizes. Non-tensor arguments are constants.

    Parameters are torch's: a parameter shared by several modules (tied) is ONE ``nnx.Param`` (one
    gradient, the sum; one update) listed under every torch name by ``state_dict``; ``requires_grad=False``
    parameters carry the frozen marking (``layers.is_frozen``); buffers stay buffers (non-persistent
    ones out of ``state_dict``); children keep torch's names (``Sequential(OrderedDict)``, ``add_module``).

    ``twin.train()`` / ``twin.eval()`` switch dropout, BatchNorm and ``self.training`` branches as torch's
    do, whatever mode the module had when ported (the twin starts in the module's mode). Random ops
    (dropout, ``rand``/``randn``/``*_like``, ``bernoulli``, ``multinomial``) draw from ``rngs`` (default
    ``nnx.Rngs(0)``): torch's distributions, never torch's streams.

    A branch on a tensor's VALUE (``if x.sum() > 0``) cannot be captured and raises
    :class:`UnsupportedTorchOpError` naming the file and line with a fix; an op outside the table raises
    it naming the op, the module path and the line.

    Without example inputs the forward is traced with ``torch.fx.symbolic_trace`` (the earlier path:
    fnml layers and a smaller set of torch functions; ask for example inputs when tracing fails).

    >>> import torch
    >>> from fnml import interop
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()).double()
    >>> twin = interop.from_torch(net, torch.ones(4, 3, dtype=torch.float64))
    >>> print(twin)
    Sequential(
      (0): Linear(in_features=3, out_features=2, bias=True)
      (1): ReLU()
    )
    >>> twin(torch.ones(7, 3, dtype=torch.float64)).shape  # another batch size, no new capture
    (7, 2)
    """
    dtype = _root_checks(torch_module)
    rngs = nnx.Rngs(0) if rngs is None else rngs
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"from_torch: rngs must be an nnx.Rngs or None, got {type(rngs).__name__}")
    if not example_args and not example_kwargs:
        return _from_torch_fx(torch_module, dtype, rngs)
    twin, layer_paths = _build_twin(torch_module, dtype, None, "", captured=True, rngs=rngs)
    mode = bool(torch_module.training)
    recapture = _Recapture(torch_module, layer_paths, _variables(twin))
    twin._programs, readers = recapture(example_args, example_kwargs, mode)
    twin._mode_readers = readers
    twin.training = mode  # before the check: it compares each reader's mode with the root's
    _check_captured_modes(twin, readers, where="from_torch")
    twin.rngs = rngs if _uses_random(twin._programs) else None
    twin._source = twin._programs[int(mode)].source
    twin._forward_names = _positional_names(torch_module)
    twin._recapture = recapture
    twin._variants = ((*_structure(recapture.signature, example_args, example_kwargs), twin._programs),)
    return twin


def _uses_random(programs: tuple) -> bool:
    return any(lowering.lookup(n.target).random for p in programs for n in p.nodes if n.kind == "op")


class _Recapture:
    """Captures the torch module's forward for a call structure (both modes where code reads ``self.training``).

    The twin keeps one (its ``_recapture``) so that a call with another structure than the example's (an
    optional argument such as ``attention_mask`` left out, ``labels=`` added) is captured for that structure
    on first use, with the twin's own variables: the same parameters, the same ``nnx.Param`` objects.
    Hashed by identity (an nnx static attribute).
    """

    def __init__(self, torch_module: Any, layer_paths: dict, variables: tuple):
        self.torch_module = torch_module
        self.layer_paths = layer_paths
        self.variables = variables
        self.signature = inspect.signature(torch_module.forward)

    def __call__(self, args: tuple, kwargs: dict, mode: bool) -> tuple[tuple[_Program, _Program], tuple[str, ...]]:
        torch_module = self.torch_module

        def capture(training: bool) -> tuple[_Program, set[str]]:
            exported, reads = _with_mode(
                torch_module,
                training,
                lambda: _tracking_training_reads(torch_module, lambda: _export(torch_module, args, kwargs)),
            )
            return _Compiler(exported, self.layer_paths, self.variables, tuple(kwargs)).compile(), reads

        program, reads = capture(mode)
        # fnml layers switch modes themselves; any other module reading self.training needs the other mode's graph.
        readers = tuple(sorted(path for path in reads if path not in self.layer_paths))
        other = capture(not mode)[0] if readers else program
        return ((other, program) if mode else (program, other)), readers


def _bound(signature: inspect.Signature | None, args: tuple, kwargs: dict) -> dict | None:
    """forward's arguments by name (signature order), leaving out a None the forward defaults to None
    anyway (``attention_mask=None`` means what leaving it out means); None when they do not bind."""
    if signature is None or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        return None
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    parameters = signature.parameters
    arguments = {}
    for name, value in bound.arguments.items():
        if parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)  # **kwargs: its keywords are the call's own
        elif not (value is None and parameters[name].default is None):
            arguments[name] = value
    return arguments


def _structure(signature: inspect.Signature | None, args: tuple, kwargs: dict) -> tuple[Any, tuple]:
    """(the call's structure, the layout it was given in): argument names and their tree structure,
    independent of positional vs keyword passing; the layout is (positional names, keyword names)."""
    import torch.utils._pytree as pytree

    bound = _bound(signature, args, kwargs)
    if bound is None:  # *args forwards, or a call that does not bind: the structure as given
        return ("as given", pytree.treespec_dumps(pytree.tree_flatten((tuple(args), kwargs))[1])), ()
    names = list(bound)
    layout = (tuple(names[: len(args)]), tuple(names[len(args) :]))
    spec = pytree.treespec_dumps(pytree.tree_flatten(bound)[1])
    return (tuple(names), spec), layout


def _describe(structure: Any) -> str:
    """'forward(input_ids, attention_mask)' for a captured structure."""
    names = structure[0]
    return "forward(<as captured>)" if names == "as given" else f"forward({', '.join(names)})"


def _programs_for_call(twin: TorchTwin, args: tuple, kwargs: dict) -> tuple[tuple, tuple, dict]:
    """The programs for this call's structure (captured now if new) and the call arranged as they expect."""
    recapture = twin._recapture
    signature = recapture.signature if recapture is not None else None
    structure, _ = _structure(signature, args, kwargs)
    for captured, layout, programs in twin._variants:
        if captured == structure:
            if not layout:
                return programs, args, kwargs
            bound = _bound(signature, args, kwargs)
            positional, keywords = layout
            return programs, tuple(bound[n] for n in positional), {n: bound[n] for n in keywords}
    if recapture is None or structure[0] == "as given":
        return twin._programs, args, kwargs  # _user_leaves explains the mismatch
    bound = _bound(signature, args, kwargs)
    examples = {name: _torch_example(value) for name, value in bound.items()}
    try:
        programs, readers = recapture((), examples, bool(twin.training))
    except (UnsupportedTorchOpError, TypeError) as error:
        captured = "; ".join(_describe(c) for c, _, _ in twin._variants)
        raise TypeError(
            f"the twin of {twin._torch_class} was captured for {captured} and was called as "
            f"{_describe(structure)}; capturing that call failed: {str(error).rstrip('.')}. Call it like a "
            f"captured signature, or port with an example of this call: interop.from_torch(model, **inputs)"
        ) from None
    extra = tuple(r for r in readers if r not in twin._mode_readers)
    if extra or (_uses_random(programs) and twin.rngs is None):
        captured = "; ".join(_describe(c) for c, _, _ in twin._variants)
        raise TypeError(
            f"the twin of {twin._torch_class} was captured for {captured} and was called as {_describe(structure)}, "
            f"whose forward {'reads self.training in ' + ', '.join(extra) if extra else 'draws random numbers'} "
            f"where the captured ones did not; port with an example of this call: interop.from_torch(model, **inputs)"
        )
    twin._variants = (*twin._variants, (structure, ((), tuple(bound)), programs))
    return programs, (), bound


def _torch_example(value: Any) -> Any:
    """A call's value as a torch example for a new capture: torch tensors as they are, arrays (or tracers,
    inside jit) as tensors of their shape and dtype filled with ones (shapes and dtypes are what the capture
    reads), nested containers alike, other values unchanged."""
    import torch

    if _torch.is_tensor(value):
        return value
    if isinstance(value, (jax.Array, np.ndarray)) or hasattr(value, "aval"):
        dtype = _torch.torch_dtype(value.dtype)
        return torch.ones(tuple(value.shape), dtype=dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_torch_example(v) for v in value)
    if isinstance(value, dict):
        return {k: _torch_example(v) for k, v in value.items()}
    return value


def _check_captured_modes(twin: TorchTwin, readers: tuple[str, ...], *, where: str) -> None:
    """Refuse a mode mix the captured programs cannot run: code reading ``self.training`` follows the root.

    The twin holds one program per mode of the WHOLE model (torch's ``model.train()`` / ``model.eval()``);
    fnml layers (BatchNorm, Dropout...) switch per module themselves, but a module whose own forward code
    reads ``self.training`` was captured in the root's mode. Such a module in another mode than the root
    (``model.train(); model.backbone.eval()`` before ``from_torch``, or ``twin.backbone.eval()`` after)
    would run the root's branch: raise instead of computing something else than torch.
    """
    for path in readers:
        module = _resolve(twin, path)
        mode = getattr(module, "training", twin.training)
        if mode != twin.training:
            names = {True: "training", False: "eval"}
            call = "train" if twin.training else "eval"
            kind = getattr(module, "_torch_class", type(module).__name__)
            raise UnsupportedTorchOpError(
                f"{where}: module {path!r} ({kind}) reads self.training in its forward and is in "
                f"{names[mode]} mode while the model is in {names[twin.training]} mode; a ported twin runs "
                f"such code in the whole model's mode (one captured program per mode), so it would compute the "
                f"{names[twin.training]}-mode branch there, unlike torch. Fix: put that module in the model's "
                f"mode (model.{path}.{call}() on the torch model before porting, or twin.{path}.{call}() on the "
                f"twin); fnml layers inside it (BatchNorm, Dropout) may still keep their own modes"
            )


def _positional_names(torch_module: Any) -> tuple[str, ...]:
    """The names of forward's positional parameters (for errors that name an input)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(torch_module.forward).parameters.values()
    return tuple(parameter.name for parameter in parameters if parameter.kind in kinds)


def _from_torch_fx(torch_module: Any, dtype: Any, rngs: nnx.Rngs) -> TorchTwin:
    """``from_torch(module)`` without example inputs: torch.fx symbolic tracing (fnml layers only)."""
    import torch.fx

    graph = _fx_trace(torch_module)
    program = _fx_compile(graph, torch_module)
    source = torch.fx.GraphModule(torch_module, graph).code
    twin, _ = _build_twin(torch_module, dtype, program, source, captured=False, rngs=None)
    return twin.train() if torch_module.training else twin.eval()
