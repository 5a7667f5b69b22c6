"""Side-by-side parity harness: prove an fnml model computes, differentiates and trains like torch.

PyTorch equivalent: none; this is new. It is what a user porting a model runs to trust the port.

- :func:`compare_forward`: per-output max abs / rel difference.
- :func:`compare_gradients`: per-parameter (torch names) gradient differences, plus the loss.
- :func:`compare_training`: both sides trained step by step on identical batches; per-step losses,
  per-step parameter drift, final per-parameter differences, the first step and parameter past a tolerance.
- :func:`first_divergence`: layer-by-layer activations (torch forward hooks vs fnml layer outputs),
  names the first layer that differs.
- :func:`check_defaults`: flags hyperparameters that differ (eps, momentum, padding, approximate GELU...).

Every report renders as a rich table (``report.print()``, or ``rich.print(report)``) and as a plain
JSON-serialisable dict (``report.to_dict()``).

Differences are measured as ``max |fnml - torch|`` (abs) and ``max |fnml - torch| / max |torch|`` (rel,
relative to the largest torch magnitude of that tensor, so tiny entries do not blow it up).

>>> import torch
>>> from fnml import interop, losses, parity
>>> _ = torch.manual_seed(0)
>>> torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
>>> twin = interop.from_torch(torch_model)  # same weights; takes torch's layouts
>>> x, y = torch.randn(5, 3), torch.randn(5, 1)
>>> parity.compare_forward(torch_model, twin, x).max_abs_diff < 1e-6
True
>>> report = parity.compare_gradients(torch_model, twin, x, y, (torch.nn.MSELoss(), losses.MSELoss()))
>>> report.max_abs_diff < 1e-6
True
>>> print(parity.check_defaults(torch_model, twin))
check_defaults: 3 layers compared, no differing settings

:func:`compare_training` has a step-by-step example; ``print(report)`` shows any report as tables.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from fnml import _torch, interop
from fnml.interop import capture
from fnml.interop.state_dicts import _named_modules

__all__ = [
    "DefaultsReport",
    "DivergenceReport",
    "ForwardReport",
    "GradientReport",
    "TrainingReport",
    "check_defaults",
    "compare_forward",
    "compare_gradients",
    "compare_training",
    "first_divergence",
]

_TINY = 1e-300


# ----------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------


_is_tensor = _torch.is_tensor
_numpy = _torch.as_numpy  # torch tensor (bfloat16 kept) / jax array / number -> numpy array


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, np.ndarray]]:
    """(path, array) leaves of nested tuples/lists/dicts of tensors or arrays ("output", "[0]", "[1][0]").

    A transformers ``ModelOutput`` is a dict; a transformers cache (``use_cache=True``) counts as its key/value
    tensors per layer, the form a twin returns it in."""
    from fnml.interop.capture import _cache_tensors, _is_cache

    if _is_cache(value):
        value = _cache_tensors(value)
    if isinstance(value, dict):
        return [leaf for key in value for leaf in _leaves(value[key], f"{prefix}[{key!r}]")]
    if isinstance(value, (list, tuple)):
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, f"{prefix}[{index}]")]
    return [(prefix or "output", _numpy(value))]


def _diff(fnml_value: np.ndarray, torch_value: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max |b|) in float64."""
    a = np.asarray(fnml_value, dtype=np.float64)
    b = np.asarray(torch_value, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: fnml {a.shape} vs torch {b.shape}")
    if a.size == 0:
        return 0.0, 0.0
    abs_diff = float(np.max(np.abs(a - b)))
    scale = float(np.max(np.abs(b)))
    return abs_diff, abs_diff / max(scale, _TINY) if abs_diff else 0.0


def _exceeds(abs_diff: float, scale: float, atol: float, rtol: float) -> bool:
    """True when a difference is past ``atol + rtol * scale`` (or not finite)."""
    return not math.isfinite(abs_diff) or abs_diff > atol + rtol * scale


def _as_tuple(inputs: Any) -> tuple:
    """A single input or a tuple/list of inputs -> a tuple."""
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _map_structure(fn: Callable[[Any], Any], value: Any) -> Any:
    """Apply ``fn`` to every leaf of nested tuples / lists / dicts, keeping the structure (``(x, (h0, c0))``)."""
    if isinstance(value, dict):
        return {key: _map_structure(fn, item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_map_structure(fn, item) for item in value)
    return fn(value)


def _is_plain_value(value: Any) -> bool:
    """None, Python scalars and strings: passed to both models unchanged (flags, sizes)."""
    return value is None or isinstance(value, (bool, int, float, str))


def _torch_inputs(inputs: Any) -> Any:
    """Inputs for the torch model, any structure: tensors as given, numpy / jax arrays as tensors."""

    def leaf(v: Any) -> Any:
        return v if _is_tensor(v) or _is_plain_value(v) else _torch.to_torch(v)

    return _map_structure(leaf, inputs)


def _fnml_inputs(inputs: Any) -> Any:
    """The same values as jax arrays, same structure (x64 off: float64 becomes float32, as the fnml model computes)."""
    return _map_structure(lambda v: v if _is_plain_value(v) else jnp.asarray(_numpy(v)), inputs)


def _check_kwargs(kwargs: Any) -> dict:
    """``kwargs``: None or a mapping of keyword arguments for both models."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"kwargs must be a dict of keyword arguments for both models, got {type(kwargs).__name__}")
    return kwargs


def _default_tolerance(dtype: Any) -> tuple[float, float]:
    """(atol, rtol) for a comparison in ``dtype``: float64 checks exactness, float32 working precision."""
    if np.dtype(dtype) == np.float64:
        return 1e-10, 1e-9
    return 1e-4, 1e-3


def _render(renderable: Any) -> None:
    Console(highlight=False).print(renderable)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


# ----------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------


@dataclass
class DiffRow:
    """One compared tensor: its name, shape, max abs and rel difference."""

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
        }


def _diff_table(title: str, rows: Sequence[DiffRow], name_header: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(name_header)
    table.add_column("shape")
    table.add_column("max |diff|", justify="right")
    table.add_column("max rel diff", justify="right")
    for row in rows:
        table.add_row(row.name, str(tuple(row.shape)), _fmt(row.max_abs_diff), _fmt(row.max_rel_diff))
    return table


class _Report:
    """Shared rendering: ``print()`` and rich's ``__rich__``."""

    def __rich__(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def print(self) -> None:
        """Print the report as rich tables."""
        _render(self)

    def __str__(self) -> str:
        """The rich tables as plain text: ``print(report)`` shows them."""
        console = Console(highlight=False, width=120, record=True, file=io.StringIO(), color_system=None)
        console.print(self)
        return console.export_text().rstrip("\n")


@dataclass
class ForwardReport(_Report):
    """Per-output forward differences between a torch model and its fnml twin.

    PyTorch equivalent: none (fnml's parity harness).
    """

    outputs: list[DiffRow]

    @property
    def max_abs_diff(self) -> float:
        return max((row.max_abs_diff for row in self.outputs), default=0.0)

    @property
    def max_rel_diff(self) -> float:
        return max((row.max_rel_diff for row in self.outputs), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "outputs": [row.to_dict() for row in self.outputs],
        }

    def __rich__(self) -> Table:
        return _diff_table("Forward parity (fnml vs torch)", self.outputs, "output")


@dataclass
class GradientReport(_Report):
    """Per-parameter gradient differences (torch names and layouts) and the loss difference.

    PyTorch equivalent: none (fnml's parity harness).
    """

    torch_loss: float
    fnml_loss: float
    parameters: list[DiffRow]

    @property
    def loss_diff(self) -> float:
        return abs(self.torch_loss - self.fnml_loss)

    @property
    def max_abs_diff(self) -> float:
        return max((row.max_abs_diff for row in self.parameters), default=0.0)

    @property
    def max_rel_diff(self) -> float:
        return max((row.max_rel_diff for row in self.parameters), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "torch_loss": self.torch_loss,
            "fnml_loss": self.fnml_loss,
            "loss_diff": self.loss_diff,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "parameters": [row.to_dict() for row in self.parameters],
        }

    def __rich__(self) -> Group:
        head = Text(f"loss: torch {self.torch_loss:.10g}  fnml {self.fnml_loss:.10g}  |diff| {self.loss_diff:.3g}")
        return Group(head, _diff_table("Gradient parity (fnml vs torch)", self.parameters, "parameter"))


@dataclass
class TrainingReport(_Report):
    """Step-by-step training comparison: losses, parameter drift, final differences, first failure.

    PyTorch equivalent: none (fnml's parity harness).
    """

    torch_losses: list[float]
    fnml_losses: list[float]
    max_param_diff_per_step: list[float] | None
    parameters: list[DiffRow]
    atol: float
    rtol: float
    first_step_exceeding: int | None
    first_param_exceeding: str | None
    first_param_step: int | None
    initial_max_param_diff: float

    @property
    def loss_diffs(self) -> list[float]:
        return [abs(t - f) for t, f in zip(self.torch_losses, self.fnml_losses)]

    @property
    def max_loss_diff(self) -> float:
        return max(self.loss_diffs, default=0.0)

    @property
    def max_param_diff(self) -> float:
        return max((row.max_abs_diff for row in self.parameters), default=0.0)

    @property
    def passed(self) -> bool:
        return self.first_step_exceeding is None and self.first_param_exceeding is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": len(self.torch_losses),
            "torch_losses": list(self.torch_losses),
            "fnml_losses": list(self.fnml_losses),
            "loss_diffs": self.loss_diffs,
            "max_loss_diff": self.max_loss_diff,
            "max_param_diff_per_step": self.max_param_diff_per_step,
            "max_param_diff": self.max_param_diff,
            "initial_max_param_diff": self.initial_max_param_diff,
            "parameters": [row.to_dict() for row in self.parameters],
            "atol": self.atol,
            "rtol": self.rtol,
            "first_step_exceeding": self.first_step_exceeding,
            "first_param_exceeding": self.first_param_exceeding,
            "first_param_step": self.first_param_step,
            "passed": self.passed,
        }

    def _shown_steps(self, rows: int = 8) -> list[int]:
        count = len(self.torch_losses)
        if count <= rows:
            return list(range(count))
        picks = {0, count - 1, *(round(i * (count - 1) / (rows - 1)) for i in range(rows))}
        if self.first_step_exceeding is not None:
            picks.add(self.first_step_exceeding)
        return sorted(picks)

    def __rich__(self) -> Group:
        steps = Table(title="Training parity: loss per step", title_justify="left")
        for header in ("step", "torch loss", "fnml loss", "|diff|", "max |param diff|"):
            steps.add_column(header, justify="right")
        for step in self._shown_steps():
            drift = None if self.max_param_diff_per_step is None else self.max_param_diff_per_step[step]
            steps.add_row(
                str(step + 1),
                f"{self.torch_losses[step]:.8g}",
                f"{self.fnml_losses[step]:.8g}",
                _fmt(self.loss_diffs[step]),
                _fmt(drift),
            )
        final = _diff_table("Final parameters (torch names)", self.parameters, "parameter")
        if self.passed:
            verdict = Text(
                f"PASS: {len(self.torch_losses)} steps, max loss diff {self.max_loss_diff:.3g}, "
                f"max param diff "
                f"{self.max_param_diff:.3g} (atol {self.atol:g}, rtol {self.rtol:g})"
            )
        else:
            where = []
            if self.first_step_exceeding is not None:
                where.append(f"loss first exceeds the tolerance at step {self.first_step_exceeding + 1}")
            if self.first_param_exceeding is not None:
                at = "" if self.first_param_step is None else f" at step {self.first_param_step + 1}"
                where.append(f"parameter {self.first_param_exceeding!r} first exceeds it{at}")
            verdict = Text(f"FAIL: {'; '.join(where)} (atol {self.atol:g}, rtol {self.rtol:g})")
        return Group(steps, final, verdict)


@dataclass
class LayerRow:
    """One layer's activation comparison in first_divergence."""

    name: str
    kind: str
    shape: tuple[int, ...] | None
    max_abs_diff: float | None
    max_rel_diff: float | None
    status: str  # "ok", "DIFFERS", "not in fnml model", "shape mismatch"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": None if self.shape is None else list(self.shape),
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "status": self.status,
        }


@dataclass
class DivergenceReport(_Report):
    """Layer-by-layer activations in torch's execution order; the first layer past the tolerance.

    PyTorch equivalent: none (fnml's parity harness).
    """

    layers: list[LayerRow]
    first_divergent: str | None
    atol: float
    rtol: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_divergent": self.first_divergent,
            "atol": self.atol,
            "rtol": self.rtol,
            "layers": [row.to_dict() for row in self.layers],
        }

    def __rich__(self) -> Group:
        table = Table(title="Layer-by-layer activations (torch execution order)", title_justify="left")
        for header in ("layer", "kind", "shape", "max |diff|", "max rel diff", "status"):
            table.add_column(header)
        for row in self.layers:
            table.add_row(
                row.name,
                row.kind,
                "-" if row.shape is None else str(row.shape),
                _fmt(row.max_abs_diff),
                _fmt(row.max_rel_diff),
                row.status,
            )
        verdict = (
            "all layers agree" if self.first_divergent is None else f"first divergent layer: {self.first_divergent}"
        )
        return Group(table, Text(verdict))


@dataclass
class Mismatch:
    """One hyperparameter that differs between a torch layer and its fnml counterpart."""

    layer: str
    kind: str
    setting: str
    torch_value: Any
    fnml_value: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "kind": self.kind,
            "setting": self.setting,
            "torch_value": _jsonable(self.torch_value),
            "fnml_value": _jsonable(self.fnml_value),
        }


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, other non-JSON values -> repr."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


@dataclass
class DefaultsReport(_Report):
    """Hyperparameter mismatches between a torch model and an fnml model, layer by layer.

    PyTorch equivalent: none (fnml's parity harness).
    """

    mismatches: list[Mismatch]
    compared_layers: int

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "compared_layers": self.compared_layers,
            "mismatches": [m.to_dict() for m in self.mismatches],
        }

    def __rich__(self) -> Any:
        if self.ok:
            return Text(f"check_defaults: {self.compared_layers} layers compared, no differing settings")
        table = Table(title="Settings that differ (torch vs fnml)", title_justify="left")
        for header in ("layer", "kind", "setting", "torch", "fnml"):
            table.add_column(header)
        for m in self.mismatches:
            table.add_row(m.layer, m.kind, m.setting, repr(m.torch_value), repr(m.fnml_value))
        return table


# ----------------------------------------------------------------------------------------------------
# Forward and gradients
# ----------------------------------------------------------------------------------------------------


def _check_models(torch_model: Any, fnml_model: Any) -> None:
    import torch

    if not isinstance(torch_model, torch.nn.Module):
        raise TypeError(f"torch_model must be a torch.nn.Module, got {type(torch_model).__name__}")
    if not isinstance(fnml_model, nnx.Module):
        raise TypeError(f"fnml_model must be a flax.nnx.Module, got {type(fnml_model).__name__}")


def _split_arrays(tree: Any) -> tuple[list, Callable[[list], Any]]:
    """(array leaves, rebuild): arrays become jit arguments; flags, sizes and None stay Python values."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda v: v is None)
    is_array = [isinstance(v, (jax.Array, np.ndarray)) for v in leaves]

    def rebuild(arrays: list) -> Any:
        values = iter(arrays)
        return jax.tree.unflatten(treedef, [next(values) if traced else v for v, traced in zip(leaves, is_array)])

    return [v for v, traced in zip(leaves, is_array) if traced], rebuild


def _jitted_forward(fnml_model: nnx.Module, inputs: tuple, kwargs: dict | None = None) -> Any:
    """One jitted forward (eager JAX compiles every op separately); state updates go back to the model.

    Array leaves of ``(inputs, kwargs)`` are traced; other leaves (flags, sizes, None) stay Python values.
    """
    graphdef, state = nnx.split(fnml_model)
    arrays, rebuild = _split_arrays((inputs, kwargs or {}))

    @jax.jit
    def forward(state, arrays):
        call_args, call_kwargs = rebuild(arrays)
        model = nnx.merge(graphdef, jax.tree.map(lambda v: v, state))
        return model(*call_args, **call_kwargs), nnx.split(model)[1]

    out, new_state = forward(state, arrays)
    nnx.update(fnml_model, new_state)  # BatchNorm statistics in training mode, as torch's forward
    return out


def compare_forward(
    torch_model: Any, fnml_model: nnx.Module, inputs: Any, *, fnml_inputs: Any = None, kwargs: dict | None = None
) -> ForwardReport:
    """Run both models on the same inputs and measure every output's difference.

    PyTorch equivalent: none (``torch.testing.assert_close(fnml_out, torch_out)`` on each output).

    ``inputs``: one input or a tuple of positional inputs, nested as the torch forward takes them
    (``(x, (h0, c0))`` for an LSTM; torch tensors, numpy arrays, or Python values such as flags); ``kwargs``:
    keyword arguments for both (``{"attention_mask": m}``). The fnml model gets the same structure with
    jax arrays (twins from ``interop.from_torch`` take torch's layouts). Give ``fnml_inputs`` for a
    hand-written channels-last fnml model. Both models run in their current mode
    (``train()``/``eval()``); torch runs under ``no_grad``. Outputs may be nested tuples (LSTM).

    >>> import torch
    >>> from fnml import interop, parity
    >>> _ = torch.manual_seed(0)
    >>> torch_model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    >>> report = parity.compare_forward(torch_model, interop.from_torch(torch_model), torch.randn(8, 2))
    >>> [(row.name, row.shape) for row in report.outputs]
    [('output', (8, 1))]
    >>> report.max_abs_diff < 1e-6
    True
    """
    import torch

    _check_models(torch_model, fnml_model)
    inputs, kwargs = _as_tuple(inputs), _check_kwargs(kwargs)
    with torch.no_grad():
        torch_out = torch_model(*_torch_inputs(inputs), **_torch_inputs(kwargs))
    fnml_args = _fnml_inputs(_as_tuple(fnml_inputs) if fnml_inputs is not None else inputs)
    fnml_out = _jitted_forward(fnml_model, fnml_args, _fnml_inputs(kwargs))
    torch_leaves, fnml_leaves = _leaves(torch_out), _leaves(fnml_out)
    if [p for p, _ in torch_leaves] != [p for p, _ in fnml_leaves]:
        raise ValueError(
            f"output structures differ: torch {[p for p, _ in torch_leaves]} vs fnml {[p for p, _ in fnml_leaves]}"
        )
    rows = []
    for (path, t), (_, f) in zip(torch_leaves, fnml_leaves):
        if t.shape != f.shape:
            raise ValueError(f"output {path}: shape {f.shape} (fnml) != {t.shape} (torch)")
        rows.append(DiffRow(path, tuple(t.shape), *_diff(f, t)))
    return ForwardReport(rows)


def _criteria(criterion: Any) -> tuple[Callable, Callable]:
    """A (torch_criterion, fnml_criterion) pair, checked."""
    if not isinstance(criterion, (tuple, list)) or len(criterion) != 2 or not all(map(callable, criterion)):
        raise TypeError(
            f"criterion must be a pair (torch_criterion, fnml_criterion) of callables "
            f"criterion(output, target) -> scalar, got {criterion!r}"
        )
    return criterion[0], criterion[1]


def _torch_name_tree(fnml_model: nnx.Module, graphdef: Any, params: Any, rest: Any) -> OrderedDict:
    """``params`` (same structure as the model's nnx.Param state) under torch names and layouts."""
    return interop.state_dict(nnx.merge(graphdef, params, rest))


def compare_gradients(
    torch_model: Any,
    fnml_model: nnx.Module,
    inputs: Any,
    targets: Any,
    criterion: tuple[Callable, Callable],
    *,
    fnml_inputs: Any = None,
    kwargs: dict | None = None,
) -> GradientReport:
    """Gradients of ``criterion(model(inputs), targets)`` w.r.t. every parameter, torch vs fnml.

    PyTorch equivalent: ``loss.backward()`` then comparing each ``param.grad``.

    ``criterion`` is the pair ``(torch_criterion, fnml_criterion)``, each ``(output, target) -> scalar``
    (e.g. ``(torch.nn.CrossEntropyLoss(), losses.CrossEntropyLoss())``). fnml gradients come from
    ``jax.grad`` over the ``nnx.Param`` state and are reported under torch names in torch layouts
    (kernels transposed back), so rows line up with ``torch_model.named_parameters()`` (a tied parameter:
    one row, its summed gradient). ``inputs`` / ``kwargs`` take any structure the forward takes, as in
    :func:`compare_forward`. In training mode both sides update BatchNorm running statistics once, as
    torch's forward does.

    >>> import torch
    >>> from fnml import interop, losses, parity
    >>> _ = torch.manual_seed(0)
    >>> torch_model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    >>> twin = interop.from_torch(torch_model)
    >>> x, y = torch.randn(8, 2), torch.randn(8, 1)
    >>> report = parity.compare_gradients(torch_model, twin, x, y, (torch.nn.MSELoss(), losses.MSELoss()))
    >>> [(row.name, row.shape) for row in report.parameters]  # torch names and layouts
    [('0.weight', (3, 2)), ('0.bias', (3,)), ('2.weight', (1, 3)), ('2.bias', (1,))]
    >>> report.max_abs_diff < 1e-6, report.loss_diff < 1e-6
    (True, True)
    """

    _check_models(torch_model, fnml_model)
    torch_criterion, fnml_criterion = _criteria(criterion)
    inputs, kwargs = _as_tuple(inputs), _check_kwargs(kwargs)
    torch_model.zero_grad(set_to_none=True)
    torch_out = torch_model(*_torch_inputs(inputs), **_torch_inputs(kwargs))
    torch_loss = torch_criterion(torch_out, _torch_inputs((targets,))[0])
    torch_loss.backward()
    torch_grads = OrderedDict(
        (name, _numpy(p.grad)) for name, p in torch_model.named_parameters() if p.grad is not None
    )

    graphdef, params, rest = nnx.split(fnml_model, nnx.Param, ...)
    x = _fnml_inputs(_as_tuple(fnml_inputs) if fnml_inputs is not None else inputs)
    y = _fnml_inputs((targets,))[0]
    arrays, rebuild = _split_arrays((x, _fnml_inputs(kwargs)))

    def loss_fn(p, arrays):
        # Fresh Variable objects at this trace level (BatchNorm mutates its statistics inside grad).
        model = nnx.merge(graphdef, p, jax.tree.map(lambda v: v, rest))
        call_args, call_kwargs = rebuild(arrays)
        loss = fnml_criterion(model(*call_args, **call_kwargs), y)
        return loss, nnx.split(model, nnx.Param, ...)[2]

    # jitted: eager JAX would compile every primitive of the backward pass separately.
    (fnml_loss, new_rest), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, arrays)
    nnx.update(fnml_model, new_rest)
    fnml_grads = _torch_name_tree(fnml_model, graphdef, grads, rest)
    missing = [name for name in torch_grads if name not in fnml_grads]
    if missing:
        raise ValueError(f"the fnml model has no parameters named {missing} (torch names); is it a twin?")
    rows = [DiffRow(name, tuple(g.shape), *_diff(fnml_grads[name], g)) for name, g in torch_grads.items()]
    return GradientReport(float(torch_loss.item()), float(fnml_loss), rows)


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------


def _make_step(fnml_criterion: Callable) -> Callable:
    """The fnml side's step: ``fnml.train``'s one pure step, jitted: ``(state, x, y) -> (state, loss)``."""
    from fnml import _step

    # The one rule of every training step: each submodule runs in the mode it has (as torch's model does).
    return jax.jit(_step.pure_train_step(_step.criterion_loss(fnml_criterion)))


def _param_rows(torch_sd: dict, fnml_sd: dict) -> list[DiffRow]:
    """Rows for every torch state_dict entry (parameters and buffers)."""
    rows = []
    for name, value in torch_sd.items():
        if name not in fnml_sd:
            raise ValueError(f"the fnml model has no tensor named {name!r} (torch name); is it a twin?")
        t = _numpy(value)
        rows.append(DiffRow(name, tuple(t.shape), *_diff(fnml_sd[name], t)))
    return rows


def compare_training(
    torch_model: Any,
    torch_optimizer: Any,
    torch_criterion: Callable,
    fnml_model: nnx.Module,
    fnml_optimizer: optax.GradientTransformation,
    fnml_criterion: Callable,
    batches: Sequence[tuple[Any, Any]],
    *,
    steps: int | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    track_params: bool = True,
) -> TrainingReport:
    """Train both models step by step on identical batches and compare losses and parameters.

    PyTorch equivalent: the training loop ``zero_grad(); loss = criterion(model(x), y); loss.backward();
    optimizer.step()``, run side by side with its fnml counterpart.

    ``batches``: a sequence of ``(x, y)`` (torch tensors or numpy arrays; ``x`` one input, a tuple of
    positional inputs, or a dict of keyword inputs such as ``{"input_ids": ids, "attention_mask": m}``,
    given to both models as ``model(**x)``; the criteria then receive the model's output as it is, e.g. a
    transformers ``ModelOutput``); step ``i`` uses batch
    ``i % len(batches)``; ``steps`` defaults to ``len(batches)``. The torch side runs eagerly with
    ``torch_optimizer``; the fnml side is ONE jitted pure step (``nnx.split`` once, ``jax.value_and_grad``,
    ``fnml_optimizer`` = any ``optax.GradientTransformation``, BatchNorm statistics threaded through).
    Both models are trained in place (torch's optimizer mutates its model; the fnml model receives the
    final state). Each submodule of both models runs in its current mode (``model.train();
    model.backbone.eval()`` is kept on both sides): the rule of ``train.make_train_step`` and
    ``train.fit(..., keep_modes=True)``. Dropout masks cannot match between frameworks, so compare dropout
    in eval mode or with ``p=0``.

    Tolerance: ``atol``/``rtol`` default to (1e-10, 1e-9) for float64 models, (1e-4, 1e-3) otherwise. A
    step's loss exceeds it when ``|dl| > atol + rtol * |torch loss|``; a parameter when ``max |dp| >
    atol + rtol * max |torch param|``. ``track_params`` compares every parameter after every step (to find
    the first step and parameter to diverge); without it only the final parameters are compared.

    >>> import jax.numpy as jnp, torch
    >>> from flax import nnx
    >>> from fnml import layers, losses, optim, parity
    >>> tm = torch.nn.Linear(2, 1)
    >>> twin = layers.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> twin.kernel[...] = jnp.asarray(tm.weight.detach().numpy().T)   # torch (out, in) -> (in, out)
    >>> twin.bias[...] = jnp.asarray(tm.bias.detach().numpy())
    >>> batches = [(torch.randn(8, 2), torch.randn(8, 1)) for _ in range(4)]
    >>> report = parity.compare_training(tm, torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9),
    ...                                  torch.nn.MSELoss(), twin, optim.sgd(lr=0.1, momentum=0.9),
    ...                                  losses.MSELoss(), batches, steps=20)
    >>> report.passed
    True
    """
    import torch

    _check_models(torch_model, fnml_model)
    if not isinstance(torch_optimizer, torch.optim.Optimizer):
        raise TypeError(f"torch_optimizer must be a torch.optim.Optimizer, got {type(torch_optimizer).__name__}")
    if not isinstance(fnml_optimizer, optax.GradientTransformation):
        raise TypeError(
            f"fnml_optimizer must be an optax.GradientTransformation (e.g. fnml.optim.adam(lr=...)), got "
            f"{type(fnml_optimizer).__name__}"
        )
    if not callable(torch_criterion) or not callable(fnml_criterion):
        raise TypeError("torch_criterion and fnml_criterion must be callables (output, target) -> scalar")
    batches = list(batches)
    if not batches or not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in batches):
        raise ValueError("batches must be a non-empty sequence of (inputs, targets) pairs")
    steps = len(batches) if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got steps={steps!r}")

    first_param = next(iter(torch_model.parameters()), None)
    dtype = np.float32 if first_param is None else _numpy(first_param.detach()[:0]).dtype
    default_atol, default_rtol = _default_tolerance(dtype)
    atol = default_atol if atol is None else float(atol)
    rtol = default_rtol if rtol is None else float(rtol)

    # x: one input, a tuple (model(*x)) or a dict of keyword inputs (model(**x), e.g. input_ids / attention_mask)
    def inputs_of(x: Any, convert: Callable) -> Any:
        return convert(dict(x)) if isinstance(x, Mapping) else convert(_as_tuple(x))

    torch_batches = [(inputs_of(x, _torch_inputs), _torch_inputs((y,))[0]) for x, y in batches]
    fnml_batches = [(inputs_of(x, _fnml_inputs), _fnml_inputs((y,))[0]) for x, y in batches]

    param_names = [name for name, _ in torch_model.named_parameters()]
    initial = _param_rows(
        OrderedDict((n, p) for n, p in torch_model.state_dict().items() if n in param_names),
        interop.state_dict(fnml_model),
    )
    initial_max = max((row.max_abs_diff for row in initial), default=0.0)

    from fnml import train

    # Trainable / frozen (layers.freeze, torch's requires_grad=False) decided once, as fit does.
    state = train.TrainState.create(fnml_model, fnml_optimizer)
    step_fn = _make_step(fnml_criterion)

    torch_losses: list[float] = []
    fnml_loss_arrays = []
    drift: list[float] | None = [] if track_params else None
    first_param_name = first_param_step = None
    for step in range(steps):
        x_t, y_t = torch_batches[step % len(batches)]
        torch_optimizer.zero_grad()
        loss = torch_criterion(torch_model(**x_t) if isinstance(x_t, dict) else torch_model(*x_t), y_t)
        loss.backward()
        torch_optimizer.step()
        torch_losses.append(float(loss.item()))

        x_f, y_f = fnml_batches[step % len(batches)]
        state, fnml_loss = step_fn(state, x_f, y_f)  # x_f a tuple: model(*x_f); a dict: model(**x_f)
        fnml_loss_arrays.append(fnml_loss)

        if track_params:
            fnml_sd = interop.state_dict(train.to_module(state))
            torch_sd = torch_model.state_dict()
            worst = 0.0
            for name in param_names:
                t = _numpy(torch_sd[name])
                abs_diff, _ = _diff(fnml_sd[name], t)
                worst = max(worst, abs_diff)
                if first_param_name is None and _exceeds(abs_diff, float(np.max(np.abs(t), initial=0.0)), atol, rtol):
                    first_param_name, first_param_step = name, step
            drift.append(worst)

    nnx.update(fnml_model, nnx.state(train.to_module(state)))
    fnml_losses = [float(v) for v in fnml_loss_arrays]
    final = _param_rows(torch_model.state_dict(), interop.state_dict(fnml_model))
    if first_param_name is None:
        for row in final:
            scale = float(np.max(np.abs(_numpy(torch_model.state_dict()[row.name]).astype(np.float64)), initial=0.0))
            if _exceeds(row.max_abs_diff, scale, atol, rtol):
                first_param_name, first_param_step = row.name, (steps - 1 if track_params else None)
                break
    first_step = next(
        (i for i, (t, f) in enumerate(zip(torch_losses, fnml_losses)) if _exceeds(abs(t - f), abs(t), atol, rtol)),
        None,
    )
    return TrainingReport(
        torch_losses=torch_losses,
        fnml_losses=fnml_losses,
        max_param_diff_per_step=drift,
        parameters=final,
        atol=atol,
        rtol=rtol,
        first_step_exceeding=first_step,
        first_param_exceeding=first_param_name,
        first_param_step=first_param_step,
        initial_max_param_diff=initial_max,
    )


# ----------------------------------------------------------------------------------------------------
# Layer by layer
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _record_fnml_layers(fnml_model: nnx.Module, record: dict[str, Any]):
    """Temporarily wrap the ``__call__`` of every fnml layer class in the model to record outputs by name."""
    names = {id(module): name for name, module in interop.named_layers(fnml_model)}
    classes = {type(module) for _, module in interop.named_layers(fnml_model)}
    originals = {}

    def wrap(original):
        def call(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            name = names.get(id(self))
            if name is not None and name not in record:
                # A twin may run an elementwise layer on channels-last data: record it in torch's layout.
                record[name] = jnp.moveaxis(out, -1, 1) if capture.in_channels_last_call() else out
            return out

        return call

    try:
        for cls in classes:
            originals[cls] = cls.__dict__.get("__call__")
            cls.__call__ = wrap(cls.__call__)
        yield
    finally:
        for cls, original in originals.items():
            if original is None:
                del cls.__call__
            else:
                cls.__call__ = original


def _torch_layout(layout: str, value: np.ndarray) -> np.ndarray:
    """Move an fnml layer output to torch's layout, by the layer's declared ``torch_facts.layout``."""
    # Decided by the declaration, not by shapes (an (N, 4, 4, 4) map has the same shape in both layouts).
    if layout == "nhwc" and value.ndim == 4:
        return value.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if layout == "nlc" and value.ndim == 3:
        return value.transpose(0, 2, 1)  # (N, L, C) -> (N, C, L)
    if layout == "channels_last" and value.ndim >= 3:
        return np.moveaxis(value, -1, 1)  # (N, *, C) -> (N, C, *)
    return value


def first_divergence(
    torch_model: Any,
    fnml_model: nnx.Module,
    inputs: Any,
    *,
    fnml_inputs: Any = None,
    kwargs: dict | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> DivergenceReport:
    """Compare every layer's output, in torch's execution order, and name the first that differs.

    PyTorch equivalent: none (forward hooks on every leaf module, compared with the fnml layer of the
    same torch name).

    Leaf torch modules are hooked; the fnml model's layers (found by torch name, see
    ``interop.named_layers``) record their outputs during one eager forward. Channels-last fnml outputs
    are moved to torch's layout before comparing (``inputs`` / ``kwargs``: any structure, as in
    :func:`compare_forward`). A layer differs when ``max |diff| > atol + rtol * max
    |torch|`` (defaults: 1e-10/1e-9 in float64, 1e-4/1e-3 otherwise). Every layer after the first
    divergent one usually differs too: the first one is the one to fix (compare with ``check_defaults``).

    >>> import torch
    >>> from flax import nnx
    >>> from fnml import interop, layers, parity
    >>> _ = torch.manual_seed(0)
    >>> torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    >>> twin = layers.Sequential(
    ...     layers.Linear(3, 4, rngs=nnx.Rngs(0)), layers.Tanh(), layers.Linear(4, 1, rngs=nnx.Rngs(1))
    ... )
    >>> _ = interop.load_state_dict(twin, torch_model.state_dict())
    >>> x = torch.randn(5, 3)
    >>> print(parity.first_divergence(torch_model, twin, x).first_divergent)
    None
    >>> twin[2].bias[...] = twin[2].bias[...] + 1.0  # a porting bug in the last layer
    >>> report = parity.first_divergence(torch_model, twin, x)
    >>> report.first_divergent, [row.status for row in report.layers]
    ('2', ['ok', 'ok', 'DIFFERS'])
    """
    import torch

    _check_models(torch_model, fnml_model)
    inputs, kwargs = _as_tuple(inputs), _check_kwargs(kwargs)
    torch_outputs: OrderedDict[str, Any] = OrderedDict()
    kinds = {}
    handles = []
    for name, module in torch_model.named_modules():
        if name and not list(module.children()):
            kinds[name] = type(module).__name__

            def hook(mod, args, output, name=name):
                # A copy: a later in-place op (ReLU(inplace=True)) would otherwise rewrite the recorded value.
                torch_outputs.setdefault(name, _map_structure(lambda t: t.clone() if _is_tensor(t) else t, output))

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            torch_model(*_torch_inputs(inputs), **_torch_inputs(kwargs))
    finally:
        for handle in handles:
            handle.remove()

    fnml_outputs: dict[str, Any] = {}
    layouts = {name: type(module).torch_facts.layout for name, module in interop.named_layers(fnml_model)}
    with _record_fnml_layers(fnml_model, fnml_outputs):
        fnml_model(*_fnml_inputs(_as_tuple(fnml_inputs) if fnml_inputs is not None else inputs), **_fnml_inputs(kwargs))

    first_param = next(iter(torch_model.parameters()), None)
    dtype = np.float32 if first_param is None else _numpy(first_param.detach()[:0]).dtype
    default_atol, default_rtol = _default_tolerance(dtype)
    atol = default_atol if atol is None else float(atol)
    rtol = default_rtol if rtol is None else float(rtol)

    rows = []
    first = None
    for name, torch_out in torch_outputs.items():
        kind = kinds[name]
        if name not in fnml_outputs:
            rows.append(LayerRow(name, kind, None, None, None, "not in fnml model"))
            continue
        torch_leaves, fnml_leaves = _leaves(torch_out), _leaves(fnml_outputs[name])
        if len(torch_leaves) != len(fnml_leaves):
            rows.append(LayerRow(name, kind, None, None, None, "output structure differs"))
            first = first or name
            continue
        worst_abs = worst_rel = 0.0
        status = "ok"
        shape = tuple(torch_leaves[0][1].shape)
        for (_, t), (_, f) in zip(torch_leaves, fnml_leaves):
            f = _torch_layout(layouts[name], f)
            if f.shape != t.shape:
                status = "shape mismatch"
                break
            abs_diff, rel_diff = _diff(f, t)
            worst_abs, worst_rel = max(worst_abs, abs_diff), max(worst_rel, rel_diff)
            if _exceeds(abs_diff, float(np.max(np.abs(t), initial=0.0)), atol, rtol):
                status = "DIFFERS"
        if status != "ok" and first is None:
            first = name
        rows.append(LayerRow(name, kind, shape, worst_abs, worst_rel, status))
    return DivergenceReport(rows, first, atol, rtol)


# ----------------------------------------------------------------------------------------------------
# Hyperparameters
# ----------------------------------------------------------------------------------------------------

_MISSING = object()


def _setting(module: Any, name: str, *, torch_side: bool) -> Any:
    """A layer's setting, normalised: bias/affine tensors -> bool, ints -> pairs where the other is a pair."""
    if name == "bias":
        value = getattr(module, "bias", _MISSING)
        if isinstance(value, bool):
            return value
        if value is _MISSING:
            return getattr(module, "use_bias", _MISSING)
        return value is not None
    if name == "momentum" and not torch_side and getattr(module, "momentum", _MISSING) is _MISSING:
        return _MISSING
    value = getattr(module, name, _MISSING)
    if isinstance(value, list):
        value = tuple(value)
    return value


def _same(torch_value: Any, fnml_value: Any) -> bool:
    """Equal, treating ``k`` and ``(k, k)`` as the same (torch stores pool sizes as ints)."""
    if isinstance(torch_value, int) and isinstance(fnml_value, tuple) and not isinstance(torch_value, bool):
        return all(v == torch_value for v in fnml_value)
    if isinstance(fnml_value, int) and isinstance(torch_value, tuple) and not isinstance(fnml_value, bool):
        return all(v == fnml_value for v in torch_value)
    if isinstance(torch_value, float) or isinstance(fnml_value, float):
        try:
            return float(torch_value) == float(fnml_value)
        except (TypeError, ValueError):
            return False
    return torch_value == fnml_value


def check_defaults(torch_model: Any, fnml_model: nnx.Module) -> DefaultsReport:
    """Flag every layer setting that differs between a torch model and an fnml model (by torch name).

    PyTorch equivalent: none (reading both ``print(model)`` trees side by side, done exhaustively).

    Compares the settings each fnml layer declares (``torch_facts.settings``): eps, momentum, affine /
    track_running_stats, padding, stride, dilation, groups, padding_mode, bias presence, approximate GELU,
    negative_slope, dropout p, pooling windows, recurrent and attention settings... Layers present on one
    side only and layers of different kinds are flagged too.

    >>> import torch
    >>> from flax import nnx
    >>> from fnml import layers, parity
    >>> torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LeakyReLU(0.2))
    >>> twin = layers.Sequential(layers.Linear(3, 4, rngs=nnx.Rngs(0)), layers.LeakyReLU())  # slope left at 0.01
    >>> report = parity.check_defaults(torch_model, twin)
    >>> report.ok
    False
    >>> report.mismatches
    [Mismatch(layer='1', kind='LeakyReLU', setting='negative_slope', torch_value=0.2, fnml_value=0.01)]
    >>> fixed = layers.Sequential(layers.Linear(3, 4, rngs=nnx.Rngs(0)), layers.LeakyReLU(0.2))
    >>> print(parity.check_defaults(torch_model, fixed))
    check_defaults: 2 layers compared, no differing settings
    """
    _check_models(torch_model, fnml_model)
    torch_layers = OrderedDict(
        (name, module) for name, module in torch_model.named_modules() if name and not list(module.children())
    )
    fnml_layers = OrderedDict(interop.named_layers(fnml_model))
    mismatches = []
    compared = 0
    for name, torch_layer in torch_layers.items():
        kind = type(torch_layer).__name__
        fnml_layer = fnml_layers.get(name)
        if fnml_layer is None:
            mismatches.append(Mismatch(name, kind, "layer", kind, None))
            continue
        if kind not in type(fnml_layer).torch_facts.torch_classes:
            mismatches.append(Mismatch(name, kind, "layer kind", kind, type(fnml_layer).__name__))
            continue
        compared += 1
        mismatches += _setting_mismatches(name, kind, torch_layer, fnml_layer)
        if getattr(torch_layer, "training", None) is not None:
            fnml_training = _fnml_training(fnml_layer)
            if fnml_training is not None and fnml_training != torch_layer.training:
                mismatches.append(Mismatch(name, kind, "training", torch_layer.training, fnml_training))
    for name, fnml_layer in fnml_layers.items():
        if name not in torch_layers:
            mismatches.append(Mismatch(name, type(fnml_layer).__name__, "layer", None, type(fnml_layer).__name__))
    # Composites with settings of their own (MultiheadAttention, transformer layers) found at the same path.
    composites = dict(_named_modules(fnml_model))
    for name, torch_module in torch_model.named_modules():
        fnml_module = composites.get(name)
        facts = getattr(type(fnml_module), "torch_facts", None)
        kind = type(torch_module).__name__
        if name and facts is not None and facts.composite and facts.settings and kind in facts.torch_classes:
            compared += 1
            mismatches += _setting_mismatches(name, kind, torch_module, fnml_module)
    return DefaultsReport(mismatches, compared)


def _setting_mismatches(name: str, kind: str, torch_layer: Any, fnml_layer: Any) -> list[Mismatch]:
    """The settings the fnml layer declares (``torch_facts.settings``) that differ from the torch layer's."""
    mismatches = []
    for setting in type(fnml_layer).torch_facts.settings:
        torch_value = _setting(torch_layer, setting, torch_side=True)
        fnml_value = _setting(fnml_layer, setting, torch_side=False)
        if torch_value is _MISSING and fnml_value is _MISSING:
            continue
        if torch_value is _MISSING or fnml_value is _MISSING or not _same(torch_value, fnml_value):
            mismatches.append(
                Mismatch(
                    name,
                    kind,
                    setting,
                    None if torch_value is _MISSING else torch_value,
                    "(not supported)" if fnml_value is _MISSING else fnml_value,
                )
            )
    return mismatches


def _fnml_training(layer: Any) -> bool | None:
    """The fnml layer's mode as torch's ``training`` flag (None for layers without a mode)."""
    if hasattr(layer, "deterministic"):
        return not layer.deterministic
    if hasattr(layer, "use_running_average"):
        return not layer.use_running_average
    return None
