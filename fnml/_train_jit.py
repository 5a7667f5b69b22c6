"""Jitting the one pure step: plain, on a mesh, or checked for non-finite values; the checks the builders share.

PyTorch equivalent: none (what ``loss.backward(); optimizer.step()`` becomes once compiled).

Below :mod:`fnml.train` and its ``fit`` pipeline (``fnml._fit``): :func:`fnml.train.make_train_step` and
:func:`fnml.train.make_eval_step` check their arguments and call :func:`jit_train_step` /
:func:`jit_eval_step`; ``fit`` checks its options once and calls the same two, so nothing is checked twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from fnml import _step, _torch
from fnml import device as _device
from fnml._validation import check_bool, check_choice, check_positive_int

AUTOCAST_CHOICES = (None, "bfloat16", "float16")


# --------------------------------------------------------------------------------------------------
# checks shared by TrainState.create, make_train_step, make_eval_step and fit
# --------------------------------------------------------------------------------------------------


def as_gradient_transformation(tx: Any, *, where: str) -> optax.GradientTransformation:
    """``tx`` itself, or an ``optax.MultiSteps``' transformation; a clear error otherwise."""
    if isinstance(tx, optax.MultiSteps):
        return tx.gradient_transformation()
    if not isinstance(tx, optax.GradientTransformation):
        hint = ""
        if hasattr(tx, "param_groups") and hasattr(tx, "zero_grad"):
            hint = " (a torch optimizer; fnml's take no parameters: TrainState.create(model, optim.adam(lr=...)))"
        raise TypeError(
            f"{where}: tx must be an optax.GradientTransformation (e.g. fnml.optim.adam(lr=1e-3)) or an "
            f"optax.MultiSteps, got {type(tx).__name__}{hint}"
        )
    return tx


def loss_form(where: str, criterion: Any, loss_fn: Any, has_aux: bool) -> Callable[..., Any]:
    """The general ``f(model, *batch)`` of either form, after checking that exactly one was given."""
    check_bool("has_aux", has_aux, where=where)
    if (criterion is None) == (loss_fn is None):
        raise TypeError(
            f"{where}: give exactly one of criterion (criterion(output, target), the short form) or "
            f"loss_fn= (loss_fn(model, *batch), the general form), got "
            f"{'both' if criterion is not None else 'neither'}"
        )
    if criterion is not None:
        if not callable(criterion):
            raise TypeError(f"{where}: criterion must be callable(output, target), got {criterion!r}")
        if has_aux:
            raise ValueError(f"{where}: has_aux=True needs the general form loss_fn=f returning (loss, aux)")
        return _step.criterion_loss(criterion)
    if not callable(loss_fn):
        raise TypeError(f"{where}: loss_fn must be callable(model, *batch), got {loss_fn!r}")
    return loss_fn


def check_autocast(autocast: Any, *, where: str) -> Any:
    """``None`` or ``"bfloat16"``; ``"float16"`` is refused with what to use instead."""
    check_choice("autocast", autocast, AUTOCAST_CHOICES, where=where)
    if autocast == "float16":
        raise ValueError(
            f"{where}: autocast='float16' needs a loss scaler (torch.amp.GradScaler), which fnml does not "
            f"provide yet; use autocast='bfloat16' (torch.autocast('cpu')'s default dtype: same exponent range "
            f"as float32, no loss scaling needed)"
        )
    return autocast


def check_sharding(mesh: Any, shard_min_size: Any, *, where: str) -> int | None:
    """``mesh`` is a Mesh (or None); ``shard_min_size`` is None or a positive int, and only with a mesh."""
    if mesh is not None:
        _device._check_mesh(mesh, where=where)
    if shard_min_size is None:
        return None
    size = check_positive_int("shard_min_size", shard_min_size, where=where)
    if mesh is None:
        raise ValueError(
            f"{where}: shard_min_size={size} splits state arrays along a mesh's {_device.MODEL_AXIS!r} axis and "
            f"needs mesh= (e.g. fnml.device.mesh(data=4, model=2)), got mesh=None"
        )
    return size


def loss_of(criterion: Any, loss_fn: Any) -> Callable[..., Any]:
    """The general ``f(model, *batch)`` of a checked pair (exactly one of them given)."""
    return loss_fn if loss_fn is not None else _step.criterion_loss(criterion)


# --------------------------------------------------------------------------------------------------
# check_finite: the error naming the step and the parameter
# --------------------------------------------------------------------------------------------------


class NonFiniteError(FloatingPointError):
    """``check_finite=True``: a step produced a NaN/inf loss, gradient or parameter.

    Attributes: ``step`` (1-based optimizer step), ``kind`` (``"loss"``, ``"gradient"`` or
    ``"parameter"``), ``name`` (the parameter's torch-style dotted name, e.g. ``"fc1.weight"``; ``None``
    for the loss), ``state`` (the state BEFORE that step, when it was not donated, else ``None``).
    """

    def __init__(self, message: str, *, step: int, kind: str, name: str | None, state: Any) -> None:
        super().__init__(message)
        self.step, self.kind, self.name, self.state = step, kind, name, state


NonFiniteError.__module__ = "fnml.train"  # raised by fnml.train's steps; shown (and pickled) as theirs


def _param_names(state: Any) -> list[str]:
    """Dotted names of ``state.params`` leaves in tree order, torch's where interop knows the layer."""
    model = state.model()
    torch_names = {}
    try:
        from fnml import interop

        by_variable = {id(slot.variable): name for name, slot in interop._named_slots(model).items()}
        for path, node in nnx.iter_graph(model):
            if isinstance(node, nnx.Variable) and id(node) in by_variable:
                torch_names[tuple(str(p) for p in path)] = by_variable[id(node)]
    except Exception:  # pragma: no cover - a model interop cannot name: fall back to attribute paths
        pass
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        parts = tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        parts = tuple(p for p in parts if p != ".value")
        names.append(torch_names.get(parts, ".".join(parts)))
    return names


def _nonfinite_error(before: Any, after: Any, flags: np.ndarray, loss: Any) -> NonFiniteError:
    """The error for the first False in ``flags`` ([loss, grads..., params...])."""
    names = _param_names(after)
    first = int(np.argmin(flags))
    step = int(after.step)
    if first == 0:
        kind, name, what = "loss", None, f"the loss is {float(loss)}"
    else:
        kind = "gradient" if first <= len(names) else "parameter"
        name = names[(first - 1) % len(names)]
        what = (
            f"the gradient of {name!r} is non-finite"
            if kind == "gradient"
            else f"parameter {name!r} became non-finite in the update"
        )
    return NonFiniteError(
        f"check_finite: step {step}: {what} (first non-finite value of the step, in the order loss, "
        f"gradients, updated parameters)",
        step=step,
        kind=kind,
        name=name,
        state=before,
    )


# --------------------------------------------------------------------------------------------------
# jitting
# --------------------------------------------------------------------------------------------------


def jit_train_step(
    loss: Callable[..., Any],
    *,
    has_aux: bool = False,
    accumulate_steps: int = 1,
    streamed: bool = False,
    autocast: str | None = None,
    donate: bool = False,
    mesh: Any = None,
    shard_min_size: int | None = None,
    check_finite: bool = False,
) -> Callable[..., tuple]:
    """``make_train_step``'s body, arguments already checked: the pure step of ``loss``, jitted."""
    pure = _step.pure_train_step(
        loss,
        has_aux=has_aux,
        accumulate_steps=accumulate_steps,
        streamed=streamed,
        autocast=autocast,
        report=check_finite,
    )
    if mesh is not None:
        jitted = _device.mesh_jit(pure, mesh, donate=donate, shard_min_size=shard_min_size)
    else:
        jitted = jax.jit(pure, donate_argnums=(0,) if donate else ())
    step = _accepting_torch(_checked(jitted, donate=donate) if check_finite else jitted, where="train step")
    return _accumulating(step) if streamed else step


def _accumulating(inner: Callable) -> Callable:
    """The streamed step: a state without a gradient sum gets a zero one first (outside jit: one structure)."""

    def step(state: Any, *batch: Any) -> Any:
        return inner(_step.start_accumulation(state), *batch)

    step._cache_size = lambda: inner._cache_size()  # the recompile guard reads it
    return step


def _batch_from_torch(batch: tuple, where: str) -> tuple:
    """Every torch tensor in the batch (at any depth of its tuples/dicts) as a jax array, copied.

    ``tensors.from_torch``'s dtype rules (int64/float64 with x64 off: checked, then narrowed with a
    warning; unsupported dtypes: TypeError). Copied, not shared: the step runs asynchronously, and a torch
    loader may refill the tensor's memory meanwhile. numpy arrays and Python numbers pass through to jit.
    """
    if _torch._loaded_torch() is None:  # no torch imported: no tensor can be there
        return batch
    leaves, treedef = jax.tree_util.tree_flatten_with_path(batch)
    if not any(_torch.is_tensor(leaf) for _, leaf in leaves):
        return batch

    def convert(path: tuple, leaf: Any) -> Any:
        if not _torch.is_tensor(leaf):
            return leaf
        name = f"{where}: batch{jax.tree_util.keystr(path)}"
        # A host copy, as a numpy batch: jit then sees the same (uncommitted) argument kinds as for numpy
        # input, so a torch batch and a numpy batch share one compilation.
        try:
            return np.array(_torch.to_jax(leaf, what=name), copy=True)
        except TypeError as error:
            message = str(error)
            raise TypeError(message if message.startswith(name) else f"{name}: {message}") from error

    return jax.tree.unflatten(treedef, [convert(p, v) for p, v in leaves])


def _accepting_torch(inner: Callable, *, where: str) -> Callable:
    """The jitted step, taking torch tensors wherever it takes jax arrays (the model and losses do too)."""

    def step(state: Any, *batch: Any) -> Any:
        return inner(state, *_batch_from_torch(batch, where))

    step._cache_size = lambda: inner._cache_size()  # the recompile guard reads it
    return step


def _checked(inner: Callable, *, donate: bool) -> Callable:
    """check_finite=True: the reporting step plus a host-side check of its flags."""

    def step(state: Any, *batch: Any) -> tuple:
        *out, flags = inner(state, *batch)
        flags = np.asarray(flags)
        if not flags.all():
            raise _nonfinite_error(None if donate else state, out[0], flags, out[1])
        return tuple(out)

    step._cache_size = lambda: inner._cache_size()  # the recompile guard reads it
    return step


def jit_eval_step(
    *,
    loss_fn: Callable[..., Any] | None = None,
    has_aux: bool = False,
    criterion: Callable | None = None,
    metrics: Mapping[str, Callable] | None = None,
    autocast: str | None = None,
    mesh: Any = None,
    shard_min_size: int | None = None,
) -> Callable[..., dict[str, jax.Array]]:
    """``make_eval_step``'s body, arguments already checked: the pure evaluation, jitted (values replicated)."""
    if loss_fn is not None:
        pure = _step.pure_eval_step(loss_fn, has_aux=has_aux, autocast=autocast)
    else:
        pure = _step.pure_eval_step(None, criterion=criterion, metrics=dict(metrics or {}), autocast=autocast)
    if mesh is None:
        return _accepting_torch(jax.jit(pure), where="eval step")
    jitted = _device.mesh_jit(pure, mesh, returns_state=False, shard_min_size=shard_min_size)
    return _accepting_torch(jitted, where="eval step")
