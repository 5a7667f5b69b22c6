"""The training loop: a pure jitted step over a split-once TrainState, ``fit``, fused epochs, checkpoints.

PyTorch equivalent: the loop every PyTorch user writes::

    for epoch in range(100):
        optimizer.zero_grad()
        loss = criterion(model(X), Y)
        loss.backward()
        optimizer.step()
        if (epoch + 1) % 10 == 0:
            print(f'Epoch [{epoch+1}/100], Loss: {loss.item():.4f}')

fnml splits the NNX module ONCE into a static graph definition and arrays (:class:`TrainState`:
trainable parameters, frozen parameters, other state, optimizer state), then runs a pure jitted
``step(state, *batch) -> (state, loss)`` with no NNX graph traversal per call. The step has two forms:
the short one, ``make_train_step(criterion)`` = ``criterion(model(x), y)``, and the general one,
``make_train_step(loss_fn=f)`` with ``f(model, *batch)``, for several inputs, carried state (truncated
backpropagation through time), penalties. Both take ``accumulate_steps`` (torch's gradient accumulation)
and ``autocast`` (torch's ``torch.autocast``). :func:`fit` prints exactly the tutorial's lines and can run
whole epochs inside one ``lax.scan`` ("fused").

>>> import numpy as np
>>> from flax import nnx
>>> from fnml import layers, losses, optim, train
>>> X, Y = np.ones((10, 2), np.float32), np.zeros((10, 1), np.float32)
>>> model = layers.SimpleNN(rngs=nnx.Rngs(0))
>>> result = train.fit(model, optim.adam(lr=1e-3), losses.MSELoss(), X, Y, epochs=100, verbose=False)
>>> result.losses.shape          # one float per optimizer step
(100,)
>>> result.model is model        # the trained module is a new one: ``model`` itself is untouched
False
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fnml import _step
from fnml import data as _data
from fnml import device as _device
from fnml._validation import check_bool, check_choice, check_int, check_key, check_positive_int
from fnml.checkpoint import (
    checkpoint_metadata,
    latest_step,
    latest_valid_step,
    restore_checkpoint,
    save_checkpoint,
)
from fnml.layers.base import is_frozen, is_trainable

__all__ = [
    "Callback",
    "EarlyStopping",
    "FitResult",
    "NonFiniteError",
    "NonFiniteLossError",
    "Stop",
    "TrainState",
    "accuracy",
    "fit",
    "make_eval_step",
    "make_train_step",
    "restore_checkpoint",
    "save_checkpoint",
    "to_module",
]

# Runs with at least this many optimizer steps get a progress bar (on a terminal only).
_PROGRESS_MIN_STEPS = 2000
_AUTOCAST_CHOICES = (None, "bfloat16", "float16")


# --------------------------------------------------------------------------------------------------
# TrainState
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a training step reads and writes, as one pytree; the module's structure stays static.

    PyTorch equivalent: the pair ``(model, optimizer)`` (``model.state_dict()`` + ``optimizer.state_dict()``).

    Fields: ``graphdef`` (static: ``nnx.split``'s graph definition), ``tx`` (static: the
    ``optax.GradientTransformation``), ``params`` (the TRAINABLE ``nnx.Param`` arrays as plain nested
    dicts: ``state.params["fc1"]["kernel"]`` is a ``jax.Array``), ``rest`` (every other variable, same
    form: BatchNorm statistics, RNG keys and counters of Dropout...), ``opt_state`` (built over
    ``params``), ``step`` (int32 scalar: optimizer steps taken), ``frozen`` (the parameters marked by
    ``layers.freeze``, torch's ``requires_grad=False``: no gradient, no optimizer state, no update, no
    weight decay; ``{}`` when nothing is frozen). A parameter reachable by two paths (tied weights,
    torch's ``decoder.weight = encoder.weight``) is ONE leaf: one gradient (the sum over both uses), one
    update. Being a pytree with static graph definition, a state passes through ``jit``/``lax.scan``
    unchanged in structure, so a step never recompiles. Plain dicts rather than ``nnx.State`` (jax
    flattens dicts in C++); states built by hand with ``nnx.State`` fields still work.

    >>> from flax import nnx
    >>> from fnml import layers, optim, train
    >>> model = layers.SimpleNN(rngs=nnx.Rngs(0))
    >>> state = train.TrainState.create(model, optim.adam(lr=1e-3))
    >>> sorted(state.params), state.frozen, int(state.step)
    (['fc1', 'fc2'], {}, 0)
    """

    graphdef: Any
    tx: Any
    params: Any
    rest: Any
    opt_state: Any
    step: jax.Array
    frozen: Any = dataclasses.field(default_factory=dict)

    @classmethod
    def create(cls, model: nnx.Module, tx: Any, *, copy: bool = True) -> TrainState:
        """Split ``model`` once into trainable / frozen / other arrays and initialise the optimizer state.

        PyTorch equivalent: ``optimizer = torch.optim.Adam(p for p in model.parameters() if p.requires_grad)``.

        The trainable/frozen partition is decided HERE, once, from the ``requires_grad`` marking of
        ``layers.freeze``. ``model`` is not modified; ``copy=True`` copies the arrays so that a donating step
        can never invalidate ``model``'s buffers. ``tx``: an ``optax.GradientTransformation`` (fnml.optim's
        factories) or an ``optax.MultiSteps`` (its ``gradient_transformation()`` is used: each step call is
        then one micro-batch; ``make_train_step(accumulate_steps=N)`` is the torch-shaped alternative). Warning:
        ``MultiSteps`` accumulates in float32 unless given ``accumulator_dtype`` (pass ``jnp.float64`` for
        float64 models); ``accumulate_steps`` accumulates in the parameters' dtype, as torch's ``.grad``.

        Unfreezing mid-training (torch: ``p.requires_grad_(True)`` and a new optimizer): unfreeze the
        module of the state and create a new state, which has FRESH optimizer state for every parameter
        and ``step`` 0, exactly like a new torch optimizer::

            model = train.to_module(state)            # trained values, frozen marking kept
            layers.unfreeze(model.backbone)
            state = train.TrainState.create(model, optim.adamw(lr=1e-4))

        >>> from flax import nnx
        >>> from fnml import layers, optim, train
        >>> model = layers.SimpleNN(rngs=nnx.Rngs(0))
        >>> _ = layers.freeze(model.fc1)
        >>> state = train.TrainState.create(model, optim.adamw(lr=1e-3))
        >>> sorted(state.params), sorted(state.frozen)
        (['fc2'], ['fc1'])
        """
        if not isinstance(model, nnx.Module):
            raise TypeError(f"TrainState.create: model must be a flax.nnx.Module, got {type(model).__name__}")
        tx = _as_gradient_transformation(tx, where="TrainState.create")
        graphdef, params, frozen, rest = nnx.split(model, is_trainable, is_frozen, ...)
        # plain dicts: fast C++ flattening per call
        params, frozen, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(frozen), nnx.to_pure_dict(rest)
        if copy:
            params, frozen, rest = jax.tree.map(jnp.copy, (params, frozen, rest))
        return cls(
            graphdef=graphdef,
            tx=tx,
            params=params,
            rest=rest,
            opt_state=tx.init(params),
            step=jnp.zeros((), jnp.int32),
            frozen=frozen,
        )

    def model(self) -> nnx.Module:
        """A new NNX module holding this state's arrays (``nnx.merge``), frozen parameters included."""
        parts = (self.params, self.rest) if self.frozen is None else (self.params, self.frozen, self.rest)
        return nnx.merge(self.graphdef, *parts)

    def replace(self, **changes: Any) -> TrainState:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    TrainState, data_fields=["params", "rest", "opt_state", "step", "frozen"], meta_fields=["graphdef", "tx"]
)


def _as_gradient_transformation(tx: Any, *, where: str) -> optax.GradientTransformation:
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


def to_module(state: TrainState) -> nnx.Module:
    """``state.model()``: the NNX module of a :class:`TrainState` (trainable and frozen parameters).

    PyTorch equivalent: the trained ``model`` itself (torch trains it in place).

    >>> from flax import nnx
    >>> from fnml import layers, optim, train
    >>> state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
    >>> train.to_module(state).fc1.kernel.shape
    (2, 2)
    """
    return state.model()


def _pure_train_step(criterion: Callable[[Any, Any], jax.Array], *, report: bool = False) -> Callable:
    """The un-jitted criterion-form step ``(state, x, y) -> (state, loss)`` (``fnml._step``'s one step)."""
    return _step.pure_train_step(_step.criterion_loss(criterion), report=report)


class NonFiniteError(FloatingPointError):
    """``check_finite=True``: a step produced a NaN/inf loss, gradient or parameter.

    Attributes: ``step`` (1-based optimizer step), ``kind`` (``"loss"``, ``"gradient"`` or
    ``"parameter"``), ``name`` (the parameter's torch-style dotted name, e.g. ``"fc1.weight"``; ``None``
    for the loss), ``state`` (the state BEFORE that step, when it was not donated, else ``None``).
    """

    def __init__(self, message: str, *, step: int, kind: str, name: str | None, state: Any) -> None:
        super().__init__(message)
        self.step, self.kind, self.name, self.state = step, kind, name, state


def _param_names(state: TrainState) -> list[str]:
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


def _nonfinite_error(before: Any, after: TrainState, flags: np.ndarray, loss: Any) -> NonFiniteError:
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


def _loss_form(where: str, criterion: Any, loss_fn: Any, has_aux: bool) -> Callable[..., Any]:
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


def _check_autocast(autocast: Any, *, where: str) -> Any:
    """``None`` or ``"bfloat16"``; ``"float16"`` is refused with what to use instead."""
    check_choice("autocast", autocast, _AUTOCAST_CHOICES, where=where)
    if autocast == "float16":
        raise ValueError(
            f"{where}: autocast='float16' needs a loss scaler (torch.amp.GradScaler), which fnml does not "
            f"provide yet; use autocast='bfloat16' (torch.autocast('cpu')'s default dtype: same exponent range "
            f"as float32, no loss scaling needed)"
        )
    return autocast


def make_train_step(
    criterion: Callable[[Any, Any], jax.Array] | None = None,
    *,
    loss_fn: Callable[..., Any] | None = None,
    has_aux: bool = False,
    accumulate_steps: int = 1,
    autocast: str | None = None,
    donate: bool = False,
    mesh: Any = None,
    shard_min_size: int | None = None,
    check_finite: bool = False,
) -> Callable[..., tuple]:
    """A jitted pure training step ``step(state, *batch) -> (new_state, loss)`` (``(.., loss, aux)`` with aux).

    PyTorch equivalent: ``model.train(); optimizer.zero_grad(); loss = criterion(model(x), y);
    loss.backward(); optimizer.step()``.

    Two forms of the loss:

    - short: ``make_train_step(criterion)``, ``step(state, x, y)`` runs ``criterion(model(x), y)``; ``x`` a
      tuple/list means ``model(*x)``, a dict ``model(**x)`` (several inputs);
    - general: ``make_train_step(loss_fn=f)``, ``step(state, *batch)`` runs ``f(model, *batch)`` which
      returns the loss, or ``(loss, aux)`` with ``has_aux=True`` (then ``step`` returns
      ``(state, loss, aux)``). Any loss: several inputs, penalties over ``model``'s parameters, carried
      state. Truncated backpropagation through time (torch's word_language_model) returns the new hidden
      state as ``aux`` and passes it into the next call: it enters that step as a constant input, so no
      gradient flows into the previous batch (torch's ``hidden = repackage_hidden(hidden)``, ``.detach()``)::

          def lm_loss(model, x, y, hidden):        # x, y: (T, B) token ids; hidden: (h, c)
              logits, hidden = model(x, hidden)
              return losses.cross_entropy(logits.reshape(-1, V), y.reshape(-1)), hidden
          step = train.make_train_step(loss_fn=lm_loss, has_aux=True)
          for x, y in batches:
              state, loss, hidden = step(state, x, y, hidden)

    The module runs in train mode (BatchNorm uses batch statistics, Dropout is active); BatchNorm running
    statistics and Dropout RNG counters come back in ``new_state.rest``. Gradients are taken over
    ``state.params`` only: frozen parameters (``layers.freeze``) get none and are not updated. Same
    shapes and dtypes -> one compilation, ever.

    ``accumulate_steps=N``: torch's gradient accumulation, ``(loss / N).backward()`` on N consecutive
    micro-batches, then ``optimizer.step(); optimizer.zero_grad()``. Each call gets the N micro-batches
    concatenated (every batch array ``(N * B, ...)``, micro-batch ``i`` = rows ``i*B:(i+1)*B``) and makes
    ONE optimizer update (schedules count optimizer steps, ``state.step`` too); BatchNorm statistics are
    updated once per micro-batch, as torch's forward does. The loss returned is the mean of the N
    micro-batch losses (the sum of torch's ``loss / N``); ``aux`` is stacked along a leading N axis.

    ``autocast="bfloat16"``: torch's ``torch.autocast("cpu", dtype=torch.bfloat16)``. Parameters and
    optimizer state stay float32 (master weights; gradients arrive in float32 through the casts). Inside
    the loss, every matmul/convolution layer (``Linear``, ``Conv*``, ``ConvTranspose*``, flax's
    ``nnx.Linear``/``Conv``/``Einsum``) computes in bfloat16 (inputs, kernel and bias cast to bfloat16,
    bfloat16 output, products accumulated in float32 and the bias added before the one rounding, as torch's
    CPU kernels), as torch's lower-precision list does; elementwise ops then run in the dtype they
    receive, as in torch; Embedding, recurrent layers and BatchNorm/LayerNorm with float32 parameters
    compute in float32 (torch: the same math, but a bfloat16 OUTPUT for the norms: one rounding fewer in
    fnml); the model's outputs are cast to float32 before the criterion (torch's float32 list: the
    losses). In the general form ``model(...)`` inside ``f`` returns float32. Results differ from float32
    training by bfloat16 rounding (relative ~4e-3 per op); from torch's autocast, the forward pass of
    matmul/conv layers rounds the same way, the norms' outputs and the convolution backward round
    differently (``tests/test_autocast.py`` holds the measured bounds). ``"float16"`` is refused
    (no loss scaler yet). ``autocast`` needs float32 parameters.

    ``donate=True`` donates the input state's buffers to the output: the state passed in must not be
    used afterwards. ``mesh`` (``fnml.device.mesh()``): data-parallel, torch's
    ``DistributedDataParallel``: the batch arrays are the GLOBAL batch, split along the mesh's "data"
    axis; the state is replicated; BatchNorm statistics are over the global batch (``SyncBatchNorm``).
    ``shard_min_size=K`` (with ``mesh``): FSDP-style parameter sharding, torch's
    ``torch.distributed.fsdp.fully_shard``: every state array (parameters AND their optimizer state) of
    at least K elements is split along the mesh's "model" axis (``fnml.device.param_shardings``), the
    rest replicated; XLA gathers what each step needs. A placement choice only: the numbers are those of
    the replicated run (equal up to float summation order). ``None`` (default) replicates everything.
    ``check_finite=True`` (torch: ``torch.autograd.set_detect_anomaly(True)``) checks the loss, every
    gradient and every updated parameter after each step and raises :class:`NonFiniteError` naming the
    step and the parameter (``"fc1.weight"``); the default path is a separate function.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers, losses, optim, train
    >>> state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
    >>> step = train.make_train_step(losses.MSELoss())
    >>> state, loss = step(state, jnp.ones((4, 2)), jnp.zeros((4, 1)))
    >>> int(state.step), loss.shape
    (1, ())
    >>> general = train.make_train_step(loss_fn=lambda m, x, y: jnp.mean((m(x) - y) ** 2), accumulate_steps=2)
    >>> state, loss = general(state, jnp.ones((4, 2)), jnp.zeros((4, 1)))   # two micro-batches of 2 rows
    >>> int(state.step)
    2
    >>> from fnml import device
    >>> fsdp = train.make_train_step(losses.MSELoss(), mesh=device.mesh(), shard_min_size=1024)  # fully_shard
    >>> state, loss = fsdp(state, jnp.ones((4, 2)), jnp.zeros((4, 1)))   # the global batch, split along "data"
    >>> int(state.step)
    3
    """
    where = "make_train_step"
    fn = _loss_form(where, criterion, loss_fn, has_aux)
    check_bool("check_finite", check_finite, where=where)
    check_bool("donate", donate, where=where)
    check_positive_int("accumulate_steps", accumulate_steps, where=where)
    _check_autocast(autocast, where=where)
    shard_min_size = _check_sharding(mesh, shard_min_size, where=where)
    options = dict(has_aux=has_aux, accumulate_steps=accumulate_steps, autocast=autocast)
    if check_finite:
        return _checked_step(fn, donate=donate, mesh=mesh, shard_min_size=shard_min_size, **options)
    pure = _step.pure_train_step(fn, **options)
    if mesh is not None:
        return _device.data_parallel(pure, mesh, donate=donate, shard_min_size=shard_min_size)
    return jax.jit(pure, donate_argnums=(0,) if donate else ())


def _check_sharding(mesh: Any, shard_min_size: Any, *, where: str) -> int | None:
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


def _state_shardings(state: Any, mesh: Any, shard_min_size: int | None) -> Any:
    """One replicated sharding for the whole state, or per-leaf ``device.param_shardings`` (FSDP-style)."""
    if shard_min_size is None:
        return _device.replicated_sharding(mesh)
    return _device.param_shardings(state, mesh, min_size=shard_min_size)


def _checked_step(fn: Callable, *, donate: bool, mesh: Any, shard_min_size: int | None, **options: Any) -> Callable:
    """make_train_step(check_finite=True): the reporting step plus a host-side check of its flags."""
    pure = _step.pure_train_step(fn, report=True, **options)
    if mesh is not None:
        inner = _device.data_parallel(pure, mesh, donate=donate, shard_min_size=shard_min_size)
    else:
        inner = jax.jit(pure, donate_argnums=(0,) if donate else ())

    def step(state: TrainState, *batch: Any) -> tuple:
        *out, flags = inner(state, *batch)
        flags = np.asarray(flags)
        if not flags.all():
            raise _nonfinite_error(None if donate else state, out[0], flags, out[1])
        return tuple(out)

    step._cache_size = lambda: inner._cache_size()  # the recompile guard reads it
    return step


def make_eval_step(
    criterion: Callable[[Any, Any], jax.Array] | None = None,
    *,
    metrics: Mapping[str, Callable[[Any, Any], jax.Array]] | None = None,
    loss_fn: Callable[..., Any] | None = None,
    has_aux: bool = False,
    autocast: str | None = None,
    mesh: Any = None,
    shard_min_size: int | None = None,
) -> Callable[..., dict[str, jax.Array]]:
    """A jitted evaluation ``evaluate(state, *batch) -> {"loss": ..., name: metric(output, y), ...}``.

    PyTorch equivalent: ``model.eval(); with torch.no_grad(): out = model(x); loss = criterion(out, y)``.

    The module runs in eval mode (BatchNorm uses running statistics, Dropout is off); the state is not
    changed. Short form: ``evaluate(state, x, y)`` (``x`` a tuple -> ``model(*x)``, a dict ->
    ``model(**x)``), ``metrics`` maps names to ``fn(output, target) -> scalar`` (e.g.
    :func:`accuracy`). General form: ``make_eval_step(loss_fn=f)``, ``evaluate(state, *batch)`` returns
    ``{"loss": f(model, *batch)}`` (and ``"aux"`` with ``has_aux=True``). ``autocast`` as in
    :func:`make_train_step`. ``mesh`` / ``shard_min_size``: as in :func:`make_train_step` (torch's
    evaluation under DDP / FSDP ``fully_shard``): the batch is the GLOBAL batch split along "data" (its
    size must be divisible by the "data" axis size), the state replicated or, with ``shard_min_size``,
    its arrays of at least that many elements split along "model"; the values are those of one device
    (up to float summation order) and come back replicated.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers, losses, optim, train
    >>> state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
    >>> evaluate = train.make_eval_step(losses.MSELoss(), metrics={"mae": lambda o, y: jnp.mean(jnp.abs(o - y))})
    >>> sorted(evaluate(state, jnp.ones((4, 2)), jnp.zeros((4, 1))))
    ['loss', 'mae']
    """
    where = "make_eval_step"
    metrics = dict(metrics or {})
    check_bool("has_aux", has_aux, where=where)
    _check_autocast(autocast, where=where)
    shard_min_size = _check_sharding(mesh, shard_min_size, where=where)
    if loss_fn is not None:
        if criterion is not None or metrics:
            raise TypeError(f"{where}: loss_fn= (the general form) takes no criterion or metrics")
        if not callable(loss_fn):
            raise TypeError(f"{where}: loss_fn must be callable(model, *batch), got {loss_fn!r}")
        pure = _step.pure_eval_step(loss_fn, has_aux=has_aux, autocast=autocast)
    else:
        if criterion is None and not metrics:
            raise ValueError(f"{where}: give a criterion or at least one metric (or loss_fn=), got neither")
        for name, fn in ([("criterion", criterion)] if criterion is not None else []) + list(metrics.items()):
            if not callable(fn):
                raise TypeError(f"{where}: {name} must be callable(output, target), got {fn!r}")
        pure = _step.pure_eval_step(None, criterion=criterion, metrics=metrics, autocast=autocast)
    if mesh is None:
        return jax.jit(pure)
    return _eval_on_mesh(pure, mesh, shard_min_size)


def _eval_on_mesh(pure: Callable, mesh: Any, shard_min_size: int | None) -> Callable:
    """``pure(state, *batch) -> values`` jitted over ``mesh``: batch split along "data", values replicated."""
    rep, batch_sharding = _device.replicated_sharding(mesh), _device.batch_sharding(mesh)
    compiled: dict[Any, tuple[Any, Callable]] = {}

    def evaluate(state: Any, *batch: Any) -> Any:
        structure = (jax.tree.structure(state), len(batch))
        if structure not in compiled:
            shardings = _state_shardings(state, mesh, shard_min_size)
            in_shardings = (shardings,) + (batch_sharding,) * len(batch)
            compiled[structure] = (shardings, jax.jit(pure, in_shardings=in_shardings, out_shardings=rep))
        shardings, fn = compiled[structure]
        return fn(jax.device_put(state, shardings), *_device.shard_batch(batch, mesh))

    evaluate._cache_size = lambda: sum(fn._cache_size() for _, fn in compiled.values())
    return evaluate


def accuracy(output: Any, target: Any, *, ignore_index: int = -100) -> jax.Array:
    """Top-1 accuracy of class logits (or probabilities) against class indices, in ``[0, 1]``.

    PyTorch equivalent: ``(output.argmax(1) == target).float().mean()`` (``torchmetrics``' multiclass
    ``Accuracy(top_k=1, ignore_index=...)``).

    Shapes follow ``losses.cross_entropy``: ``output`` ``(N, C)`` or ``(N, C, d1, ...)`` (classes in dim 1)
    or ``(C,)``; ``target`` integer ``(N,)`` / ``(N, d1, ...)`` / ``()``. Targets equal to ``ignore_index``
    are left out of both counts (all ignored: NaN, as 0/0). Ties go to the lowest class index, like torch's
    ``argmax``. Use it as ``fit(..., metrics={"accuracy": train.accuracy})``.

    >>> import jax.numpy as jnp
    >>> from fnml import train
    >>> logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    >>> round(float(train.accuracy(logits, jnp.array([0, 1, 1]))), 4)
    0.6667
    >>> float(train.accuracy(logits, jnp.array([0, 1, -100])))
    1.0
    """
    check_int("ignore_index", ignore_index, where="accuracy")
    output, target = jnp.asarray(output), jnp.asarray(target)
    class_axis = 0 if output.ndim == 1 else 1
    if output.ndim < 1 or target.shape != output.shape[:class_axis] + output.shape[class_axis + 1 :]:
        raise ValueError(
            f"accuracy: output (N, C, ...) and target (N, ...) shapes do not match: output {output.shape}, "
            f"target {target.shape}"
        )
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise TypeError(f"accuracy: target must hold integer class indices, got dtype {target.dtype}")
    kept = target != ignore_index
    correct = (jnp.argmax(output, axis=class_axis) == target) & kept
    dtype = jnp.result_type(float)
    return jnp.sum(correct, dtype=dtype) / jnp.sum(kept, dtype=dtype)


def _make_fused_epochs(
    fn: Callable,
    *,
    treedef: Any,
    n: int,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    donate: bool,
    accumulate_steps: int = 1,
    autocast: str | None = None,
    mesh: Any = None,
    shard_min_size: int | None = None,
) -> Callable:
    """Jitted ``run(state, leaves, key, epochs) -> (state, losses (E, steps_per_epoch))`` in one lax.scan.

    ``leaves``: the flat training arrays; ``treedef`` rebuilds the step's ``*batch`` from them. Epoch
    ``e``'s batches are :func:`fnml.data.epoch_batches` of :func:`fnml.data.epoch_permutation`, i.e.
    exactly the batches of the unfused loop. With ``mesh`` (one process only: the leaves are the whole
    training set) the training arrays are replicated, every batch is constrained to be split along
    "data" on its batch axis and the state is placed as ``make_train_step(mesh=, shard_min_size=)``
    places it, so the partitioned program computes what the per-step mesh path computes.
    """
    step = _step.pure_train_step(fn, accumulate_steps=accumulate_steps, autocast=autocast)
    P = jax.sharding.PartitionSpec

    def on_data_axis(leaves, spec):
        if mesh is None:
            return leaves
        sharding = jax.sharding.NamedSharding(mesh, spec)
        return tuple(jax.lax.with_sharding_constraint(leaf, sharding) for leaf in leaves)

    def one_step(state, leaves):
        return step(state, *jax.tree.unflatten(treedef, leaves))

    def one_epoch(carry, epoch):
        state, leaves, key = carry
        order = _data.epoch_permutation(key, n, epoch) if shuffle else jnp.arange(n)
        stacked, remainder = _data.epoch_batches(leaves, order, batch_size, drop_last=drop_last)
        # scan over the leading (num_batches,) axis: (k, B, ...) -> k steps on (B, ...) batches,
        # each batch split along "data" on a mesh (the stack's axis 1, the remainder's axis 0).
        stacked = on_data_axis(tuple(stacked), P(None, _device.DATA_AXIS))
        state, losses = jax.lax.scan(one_step, state, stacked)
        if remainder is not None:
            state, last = one_step(state, on_data_axis(tuple(remainder), P(_device.DATA_AXIS)))
            losses = jnp.concatenate([losses, last[None]])
        return (state, leaves, key), losses

    def run(state, leaves, key, epochs):
        (state, _, _), losses = jax.lax.scan(one_epoch, (state, tuple(leaves), key), epochs)
        return state, losses

    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return jax.jit(run, donate_argnums=donate_argnums)
    return _fused_on_mesh(run, mesh, shard_min_size, donate_argnums)


def _fused_on_mesh(run: Callable, mesh: Any, shard_min_size: int | None, donate_argnums: tuple) -> Callable:
    """``run`` jitted over ``mesh``: the state placed as the mesh step places it, everything else replicated."""
    rep = _device.replicated_sharding(mesh)
    compiled: dict[Any, tuple[Any, Callable]] = {}

    def fused(state, leaves, key, epochs):
        structure = jax.tree.structure(state)
        if structure not in compiled:
            shardings = _state_shardings(state, mesh, shard_min_size)
            fn = jax.jit(
                run,
                in_shardings=(shardings, rep, rep, rep),
                out_shardings=(shardings, rep),
                donate_argnums=donate_argnums,
            )
            compiled[structure] = (shardings, fn)
        shardings, fn = compiled[structure]
        placed = jax.device_put((tuple(leaves), key, epochs), rep)
        return fn(jax.device_put(state, shardings), *placed)

    fused._cache_size = lambda: sum(fn._cache_size() for _, fn in compiled.values())
    return fused


# --------------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stop:
    """Returned by a callback to end training; ``state`` (optional) replaces the final state.

    PyTorch equivalent: ``break`` out of a hand-written training loop.
    """

    reason: str = "stopped by a callback"
    state: TrainState | None = None


class Callback:
    """Base class of ``fit`` callbacks: override ``on_train_begin`` and/or ``on_epoch_end``.

    PyTorch equivalent: none in torch itself (code written inside the loop; Lightning's ``Callback``).
    ``on_epoch_end(epoch, logs, state)`` gets the 1-based epoch, ``logs`` (``loss``, ``val_loss``...
    as floats) and the state after that epoch; returning a :class:`Stop` ends training.
    """

    def on_train_begin(self) -> None:
        """Called once before the first epoch (reset per-run state here)."""

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float], state: TrainState) -> Stop | None:
        """Called after every epoch; return :class:`Stop` to end training."""
        return None


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    PyTorch equivalent: none in torch; the usual hand-written loop ("best val loss, patience counter,
    ``best_state = copy.deepcopy(model.state_dict())``").

    ``monitor``: a key of the epoch logs (``"val_loss"`` by default; falls back to ``"loss"`` when fit
    has no validation data). ``restore_best=True`` ends training with the best epoch's state (so
    ``result.model`` holds the best parameters).

    >>> import numpy as np
    >>> from flax import nnx
    >>> from fnml import layers, losses, optim, train
    >>> X, Y = np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32)
    >>> stopper = train.EarlyStopping(patience=2)
    >>> result = train.fit(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.0), losses.MSELoss(), X, Y,
    ...                    epochs=50, validation=(X, Y), callbacks=[stopper], verbose=False)
    >>> result.stop_reason.startswith("early stopping at epoch 3"), len(result.losses)
    (True, 3)
    """

    def __init__(
        self, *, patience: int = 5, min_delta: float = 0.0, monitor: str = "val_loss", restore_best: bool = True
    ) -> None:
        check_positive_int("patience", patience, where="EarlyStopping")
        if not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise ValueError(f"EarlyStopping: min_delta must be a number >= 0, got min_delta={min_delta!r}")
        self.patience, self.min_delta, self.monitor, self.restore_best = patience, min_delta, monitor, restore_best
        self.on_train_begin()

    def on_train_begin(self) -> None:
        self.best: float = math.inf
        self.best_epoch: int | None = None
        self.best_state: TrainState | None = None
        self.wait = 0

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float], state: TrainState) -> Stop | None:
        key = self.monitor if self.monitor in logs else ("loss" if self.monitor == "val_loss" else None)
        if key is None:
            raise ValueError(f"EarlyStopping: monitor={self.monitor!r} is not among the epoch logs {sorted(logs)}")
        value = logs[key]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                # A copy: a donating step would otherwise reuse these buffers.
                self.best_state = jax.tree.map(jnp.copy, state)
            return None
        self.wait += 1
        if self.wait >= self.patience:
            reason = (
                f"early stopping at epoch {epoch}: {key} did not improve for {self.patience} epochs "
                f"(best {self.best:.4f} at epoch {self.best_epoch})"
            )
            return Stop(reason=reason, state=self.best_state if self.restore_best else None)
        return None


# --------------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    PyTorch equivalent: none: what a hand-written training loop leaves behind (the trained model, the list of losses).

    ``model``: the trained module (a new object; the input module is not modified). ``losses``:
    ``np.ndarray`` with the loss of every optimizer step, in order. ``history``: per-epoch arrays
    (``epoch``, ``loss`` = last step of the epoch as printed, ``mean_loss``, and ``val_loss`` /
    ``val_<metric>`` with validation data). ``state``: the final :class:`TrainState`.
    ``stop_reason``: why training ended before ``epochs`` (early stopping, non-finite loss) or None.
    """

    model: nnx.Module
    losses: np.ndarray
    history: dict[str, np.ndarray]
    state: TrainState
    stop_reason: str | None = None

    def plot(self, path: str, *, title: str = "Training loss") -> str:
        """Save a loss-curve PNG (per-step train loss; per-epoch validation loss if any); returns path."""
        # Figure + Agg canvas directly: no pyplot global state, works without a display.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7, 4))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        axes.plot(np.arange(1, len(self.losses) + 1), self.losses, label="train loss (per step)")
        if "val_loss" in self.history and len(self.history["epoch"]):
            steps_per_epoch = len(self.losses) / max(len(self.history["epoch"]), 1)
            axes.plot(
                self.history["epoch"] * steps_per_epoch,
                self.history["val_loss"],
                "o-",
                label="validation loss (per epoch)",
            )
        axes.set_xlabel("optimizer step")
        axes.set_ylabel("loss")
        axes.set_title(title)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        return path


class NonFiniteLossError(FloatingPointError):
    """A training step produced a NaN/inf loss; ``state`` is the last state with a finite loss history.

    Attributes: ``step`` (1-based optimizer step that produced the loss), ``epoch`` (1-based),
    ``loss`` (the value), ``state`` (the state BEFORE that step: all its parameters finite),
    ``result`` (a :class:`FitResult` built from that state and the finite losses).
    """

    def __init__(self, message: str, *, step: int, epoch: int, loss: float, result: FitResult) -> None:
        super().__init__(message)
        self.step, self.epoch, self.loss, self.result = step, epoch, loss, result
        self.state = result.state


# torch.nn's convolution classes (a Lazy prefix dropped).
_TORCH_CONVS = frozenset(f"Conv{kind}{n}d" for kind in ("", "Transpose") for n in (1, 2, 3))


def _is_conv(module: nnx.Module) -> bool:
    """A convolution: an fnml layer whose torch facts say so, flax's own, or a twin's torch conv leaf."""
    facts = getattr(type(module), "torch_facts", None)
    if facts is not None and facts.is_convolution:
        return True
    # from_torch keeps a torch leaf without an fnml layer (Conv3d, LazyConv2d...) as a container of its class name.
    torch_class = getattr(module, "_torch_class", "")
    return isinstance(module, (nnx.Conv, nnx.ConvTranspose)) or torch_class.removeprefix("Lazy") in _TORCH_CONVS


def _has_conv(model: nnx.Module) -> bool:
    """Whether any submodule is a convolution (see :func:`_is_conv`)."""
    return any(_is_conv(module) for _, module in nnx.iter_modules(model))


def _choose_fused(fused: Any, model: nnx.Module, steps_per_chunk: int) -> bool:
    """The fused='auto' rule (see fit's docstring)."""
    if fused != "auto":
        return bool(fused)
    if steps_per_chunk < 2:
        return False
    return not (jax.default_backend() == "cpu" and _has_conv(model))


def _as_array(name: str, value: Any) -> jax.Array:
    """Array-like (numpy, jax, torch CPU tensor) -> jax array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        return jnp.asarray(value)
    except TypeError as error:
        raise TypeError(f"fit: {name} must be an array, got {type(value).__name__}") from error


def _format_line(epoch: int, epochs: int, logs: Mapping[str, float]) -> str:
    """``Epoch [10/100], Loss: 1.7180`` (+ validation entries), the tutorial's print."""
    line = f"Epoch [{epoch}/{epochs}], Loss: {logs['loss']:.4f}"
    if "val_loss" in logs:  # the validation loss first, then the metrics (device_get sorts dict keys)
        line += f", Val Loss: {logs['val_loss']:.4f}"
    for name, value in logs.items():
        if name.startswith("val_") and name != "val_loss":
            line += f", Val {name[4:]}: {value:.4f}"
    return line


class _Progress:
    """A rich progress bar for long runs on a terminal; prints through the bar otherwise plain print."""

    def __init__(self, enabled: bool, total: int, completed: int) -> None:
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            self._task = self._bar.add_task("fit", total=total, completed=completed)
            self._bar.start()

    def advance(self, steps: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, steps)

    def print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, highlight=False, markup=False)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@functools.lru_cache(maxsize=64)
def _cached_build(builder: Callable, options: tuple) -> Callable:
    """Memoised jitted functions: repeated ``fit`` calls with the same loss and options reuse compilations."""
    kwargs = dict(options)
    if kwargs.get("metrics") is not None:
        kwargs["metrics"] = dict(kwargs["metrics"])
    return builder(**kwargs)


def _cached(builder: Callable, **options: Any) -> Callable:
    """``builder(**options)``, memoised when every option is hashable (``metrics`` as sorted pairs)."""
    key = tuple(sorted(options.items()))
    try:
        hash(key)
    except TypeError:
        return _cached_build.__wrapped__(builder, key)
    return _cached_build(builder, key)


def _build_fused(*, criterion: Any, loss_fn: Any, **options: Any) -> Callable:
    return _make_fused_epochs(_loss_form("fit", criterion, loss_fn, False), **options)


def _key_data(key: jax.Array | None) -> list[int] | None:
    """A key as JSON-able ints (typed or raw)."""
    if key is None:
        return None
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(v) for v in np.asarray(key).ravel()]


# ---- fit, step 1: validate the arguments into a plan ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Arrays:
    """Training (or validation) arrays as flat leaves, and how to rebuild the step's ``*batch`` from them."""

    leaves: tuple
    treedef: Any
    n: int

    def batch(self, index: Any = None) -> tuple:
        """The step's ``*batch`` for rows ``index`` (all rows when None)."""
        leaves = self.leaves if index is None else tuple(leaf[index] for leaf in self.leaves)
        return jax.tree.unflatten(self.treedef, leaves)


@dataclasses.dataclass(frozen=True)
class _Checkpointing:
    """fit's checkpoint options, grouped: where, how often (epochs), how many kept, what to resume."""

    directory: str | None
    every: int | None
    keep: int | None
    resume_from: str | None


@dataclasses.dataclass(frozen=True)
class _FitPlan:
    """Every fit option, checked; derived sizes (rows per optimizer step, steps per epoch)."""

    criterion: Any
    loss_fn: Any
    train: _Arrays
    validation: _Arrays | None
    metrics: tuple | None
    epochs: int
    batch: int  # rows per optimizer step (micro-batch size * accumulate_steps)
    full_batch: bool
    shuffle: bool
    drop_last: bool
    key: Any
    accumulate_steps: int
    autocast: str | None
    log_every: int
    verbose: bool
    progress: bool | None
    fused: Any
    donate: bool
    mesh: Any
    shard_min_size: int | None
    check_finite: bool
    on_nonfinite: str
    callbacks: tuple
    checkpoints: _Checkpointing

    @property
    def steps_per_epoch(self) -> int:
        return _data.num_batches(self.train.n, self.batch, drop_last=self.drop_last)

    @property
    def data_key(self) -> jax.Array:
        return self.key if self.key is not None else jax.random.key(0)  # unused without shuffle

    def batches(self, epoch: int) -> list[np.ndarray]:
        return _data.batch_indices(
            self.train.n, self.batch, shuffle=self.shuffle, drop_last=self.drop_last, key=self.data_key, epoch=epoch
        )


def _as_arrays(name: str, value: Any) -> Any:
    """A tuple / dict of array-likes (several inputs) or one array-like -> the same structure of jax arrays."""
    if isinstance(value, tuple):
        return tuple(_as_arrays(f"{name}[{i}]", v) for i, v in enumerate(value))
    if isinstance(value, Mapping):
        return {k: _as_arrays(f"{name}[{k!r}]", v) for k, v in value.items()}
    return _as_array(name, value)


def _arrays(tree: tuple, *, where: str) -> _Arrays:
    leaves, treedef = jax.tree.flatten(tree)
    return _Arrays(tuple(leaves), treedef, _data._length(leaves, where=where))


def _training_arrays(criterion: Any, X: Any, Y: Any, loss_fn: Any, data: Any) -> _Arrays:
    """``(X, Y)`` (short form) or ``data`` (general form) as flat arrays, all of one length."""
    if loss_fn is not None:
        if X is not None or Y is not None:
            raise TypeError("fit: with loss_fn=, pass the arrays as data=(arrays...), not X, Y")
        if not isinstance(data, (tuple, list)) or not data:
            raise TypeError(f"fit: loss_fn= needs data=(array, ...), a non-empty tuple, got {type(data).__name__}")
        return _arrays(tuple(_as_arrays(f"data[{i}]", v) for i, v in enumerate(data)), where="fit")
    if data is not None:
        raise TypeError("fit: data= goes with loss_fn=; with a criterion pass X, Y")
    if X is None or Y is None:
        raise TypeError("fit: the short form needs X and Y: fit(model, tx, criterion, X, Y, epochs=...)")
    return _arrays((_as_arrays("X", X), _as_arrays("Y", Y)), where="fit")


def _validation_arrays(validation: Any, general: bool) -> _Arrays | None:
    if validation is None:
        return None
    if general:
        if not isinstance(validation, (tuple, list)) or not validation:
            raise ValueError(f"fit: validation must be a tuple like data=, got {type(validation).__name__}")
        tree = tuple(_as_arrays(f"validation[{i}]", v) for i, v in enumerate(validation))
    else:
        if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
            raise ValueError(f"fit: validation must be a pair (X_val, Y_val), got {type(validation).__name__}")
        tree = (_as_arrays("X_val", validation[0]), _as_arrays("Y_val", validation[1]))
    return _arrays(tree, where="fit: validation")


def _rows_per_step(n: int, batch_size: Any, drop_last: bool, accumulate_steps: int) -> int:
    """Rows of one optimizer step; with accumulation every step must get N full micro-batches."""
    if batch_size is None:
        if n % accumulate_steps:
            raise ValueError(
                f"fit: accumulate_steps={accumulate_steps} splits the full batch into equal micro-batches: "
                f"{n} samples are not divisible by {accumulate_steps}"
            )
        return n
    _data._check_batching(n, batch_size, drop_last, where="fit")
    used = n - n % batch_size if drop_last else n
    if accumulate_steps > 1 and used % (batch_size * accumulate_steps):
        raise ValueError(
            f"fit: accumulate_steps={accumulate_steps} needs every optimizer step to see {accumulate_steps} full "
            f"micro-batches of batch_size={batch_size}, but the {used} samples used per epoch are not a "
            f"multiple of {batch_size * accumulate_steps} (torch's loop would carry the leftover micro-batches' "
            f"gradients into the next epoch); change batch_size, accumulate_steps or drop_last"
        )
    return batch_size * accumulate_steps


def _validate_fit(model: Any, tx: Any, criterion: Any, X: Any, Y: Any, **o: Any) -> _FitPlan:
    """Every eager check of fit's arguments; returns the plan the other pieces follow."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"fit: model must be a flax.nnx.Module, got {type(model).__name__}")
    _as_gradient_transformation(tx, where="fit")
    loss_fn = o["loss_fn"]
    if criterion is not None and loss_fn is not None:
        raise TypeError("fit: give a criterion (short form) or loss_fn= (general form), not both")
    if criterion is None and loss_fn is None:
        raise TypeError("fit: give a criterion(output, target) or loss_fn=f(model, *batch)")
    if criterion is not None and not callable(criterion):
        raise TypeError(f"fit: criterion must be callable(output, target), got {criterion!r}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"fit: loss_fn must be callable(model, *batch), got {loss_fn!r}")
    epochs = check_positive_int("epochs", o["epochs"], where="fit")
    check_positive_int("log_every", o["log_every"], where="fit")
    check_positive_int("accumulate_steps", o["accumulate_steps"], where="fit")
    check_choice("on_nonfinite", o["on_nonfinite"], ("raise", "stop", "ignore"), where="fit")
    check_choice("fused", o["fused"], ("auto", True, False), where="fit")
    check_bool("check_finite", o["check_finite"], where="fit")
    _check_autocast(o["autocast"], where="fit")
    train_arrays = _training_arrays(criterion, X, Y, loss_fn, o["data"])
    n = train_arrays.n
    batch = _rows_per_step(n, o["batch_size"], o["drop_last"], o["accumulate_steps"])
    mesh = o["mesh"]
    shard_min_size = _check_sharding(mesh, o["shard_min_size"], where="fit")
    if mesh is not None:
        if o["fused"] is True and _device.process_count() > 1:
            raise ValueError(
                f"fit: fused=True with mesh= needs a single process, got jax.process_count() == "
                f"{_device.process_count()}: fused epochs draw every batch from the whole training set inside one "
                f"program, but each process holds only its own rows; use fused='auto' or fused=False (one "
                f"jitted step per global batch)"
            )
        for size in {min(batch, n), n % batch if not o["drop_last"] else 0} - {0}:
            _device.check_batch_size(size // o["accumulate_steps"], mesh, where="fit")
    if o["shuffle"]:
        if o["key"] is None:
            raise ValueError("fit: shuffle=True needs key=jax.random.key(seed), got key=None")
        check_key("key", o["key"], where="fit")
    checkpoints = _Checkpointing(o["checkpoint_dir"], o["checkpoint_every"], o["checkpoint_keep"], o["resume_from"])
    if checkpoints.every is not None:
        check_positive_int("checkpoint_every", checkpoints.every, where="fit")
        if checkpoints.directory is None:
            raise ValueError(f"fit: checkpoint_every={checkpoints.every} needs checkpoint_dir, got None")
    metrics = tuple(sorted((o["metrics"] or {}).items())) or None
    if metrics is not None and loss_fn is not None:
        raise TypeError("fit: metrics= need the short form (criterion, X, Y): metric(output, target)")
    callbacks = tuple(o["callbacks"])
    for cb in callbacks:
        if not hasattr(cb, "on_epoch_end"):
            raise TypeError(f"fit: callbacks must be fnml.train.Callback objects, got {cb!r}")
    return _FitPlan(
        criterion=criterion,
        loss_fn=loss_fn,
        train=train_arrays,
        validation=_validation_arrays(o["validation"], loss_fn is not None),
        metrics=metrics,
        epochs=epochs,
        batch=batch,
        full_batch=o["batch_size"] is None,
        shuffle=o["shuffle"],
        drop_last=o["drop_last"],
        key=o["key"],
        accumulate_steps=o["accumulate_steps"],
        autocast=o["autocast"],
        log_every=o["log_every"],
        verbose=o["verbose"],
        progress=o["progress"],
        fused=o["fused"],
        donate=o["donate"],
        mesh=mesh,
        shard_min_size=shard_min_size,
        check_finite=o["check_finite"],
        on_nonfinite=o["on_nonfinite"],
        callbacks=callbacks,
        checkpoints=checkpoints,
    )


# ---- fit, step 2: the state to start from (fresh or resumed) -------------------------------------


@dataclasses.dataclass
class _Record:
    """What fit has recorded so far: per-step losses and per-epoch history."""

    losses: list[float]
    history: dict[str, list[float]]

    def lengths(self) -> tuple[int, dict[str, int]]:
        return len(self.losses), {k: len(v) for k, v in self.history.items()}

    def truncated(self, lengths: tuple[int, dict[str, int]]) -> _Record:
        n_losses, sizes = lengths
        return _Record(self.losses[:n_losses], {k: v[: sizes.get(k, 0)] for k, v in self.history.items()})


def _start(plan: _FitPlan, model: nnx.Module, tx: Any) -> tuple[TrainState, int, _Record]:
    """A fresh state, or the newest valid checkpoint of ``resume_from`` with its epoch and records."""
    state = TrainState.create(model, tx)
    record = _Record([], {"epoch": [], "loss": [], "mean_loss": []})
    resume_from = plan.checkpoints.resume_from
    if resume_from is None:
        return state, 0, record
    if not os.path.isdir(os.fspath(resume_from)):
        raise FileNotFoundError(
            f"fit: resume_from={os.fspath(resume_from)!r} does not exist (expected a "
            f"checkpoint directory written by fit or save_checkpoint)"
        )
    chosen = latest_valid_step(resume_from)  # corrupt newer steps are skipped with a warning
    state = restore_checkpoint(resume_from, template=state, step=chosen)
    meta = checkpoint_metadata(resume_from, step=chosen)
    start_epoch = int(meta.get("epoch", 0))
    record.losses = [float(v) for v in meta.get("losses", [])]
    record.history.update({k: list(v) for k, v in meta.get("history", {}).items()})
    saved_key = meta.get("data_key")
    if plan.shuffle and saved_key is not None and _key_data(plan.key) != saved_key:
        raise ValueError(
            f"fit: key={plan.key!r} differs from the data-order key saved in {resume_from!r} ({saved_key}); "
            f"pass the key of the original run so the resumed epochs see the same batches"
        )
    if start_epoch > plan.epochs:
        raise ValueError(f"fit: the checkpoint in {resume_from!r} is at epoch {start_epoch} > epochs={plan.epochs}")
    return state, start_epoch, record


# ---- fit, step 3: plan the chunks and build the compiled pieces ----------------------------------


def _chunk_epochs(plan: _FitPlan) -> int:
    """Epochs per chunk: 1 with per-epoch work, else up to the next log line (and checkpoint)."""
    if plan.validation is not None or plan.callbacks:
        return 1
    chunk = plan.log_every if plan.verbose else plan.epochs
    if plan.checkpoints.every is not None:
        chunk = math.gcd(chunk, plan.checkpoints.every)
    return chunk


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """The jitted functions of one fit call (memoised across calls with the same loss and options)."""

    step: Callable
    fused: Callable | None
    evaluate: Callable | None


def _compile(plan: _FitPlan, model: nnx.Module, chunk_epochs: int) -> _Compiled:
    loss = dict(criterion=plan.criterion, loss_fn=plan.loss_fn)
    shared = dict(accumulate_steps=plan.accumulate_steps, autocast=plan.autocast)
    mesh = dict(mesh=plan.mesh, shard_min_size=plan.shard_min_size)
    use_fused = (
        (plan.mesh is None or _device.process_count() == 1)  # a mesh: fused epochs need the whole data set
        and not plan.check_finite
        and _choose_fused(plan.fused, model, chunk_epochs * plan.steps_per_epoch)
    )
    step = _cached(make_train_step, **loss, donate=plan.donate, check_finite=plan.check_finite, **mesh, **shared)
    fused = None
    if use_fused:
        fused = _cached(
            _build_fused,
            **loss,
            treedef=plan.train.treedef,
            n=plan.train.n,
            batch_size=plan.batch,
            shuffle=plan.shuffle,
            drop_last=plan.drop_last,
            donate=plan.donate,
            **mesh,
            **shared,
        )
    evaluate = None
    if plan.validation is not None:
        if plan.loss_fn is not None:
            evaluate = _cached(make_eval_step, loss_fn=plan.loss_fn, autocast=plan.autocast)
        else:
            evaluate = _cached(make_eval_step, criterion=plan.criterion, metrics=plan.metrics, autocast=plan.autocast)
    return _Compiled(step, fused, evaluate)


# ---- fit, step 4: run one chunk of epochs, fused or step by step ---------------------------------


def _run_chunk(plan: _FitPlan, compiled: _Compiled, state: TrainState, epochs: list[int]) -> tuple:
    """Train ``epochs``; returns (state, losses as numpy (len(epochs), steps_per_epoch))."""
    if compiled.fused is not None:
        state, chunk = compiled.fused(state, plan.train.leaves, plan.data_key, jnp.asarray(epochs, dtype=jnp.int32))
        return state, np.asarray(chunk)
    per_epoch = []
    for epoch in epochs:
        epoch_losses = []
        for index in plan.batches(epoch):
            whole = plan.full_batch and not plan.shuffle
            state, loss = compiled.step(state, *plan.train.batch(None if whole else index))
            epoch_losses.append(loss)
        per_epoch.append(jnp.stack(epoch_losses))
    return state, np.asarray(jnp.stack(per_epoch))


def _replay(plan: _FitPlan, compiled: _Compiled, state: TrainState, epochs: list[int], steps: int) -> TrainState:
    """``steps`` single steps from ``state`` over the chunk's batches: the exact state before a bad step."""
    taken = 0
    for epoch in epochs:
        for index in plan.batches(epoch):
            if taken == steps:
                return state
            state, _ = compiled.step(state, *plan.train.batch(index))
            taken += 1
    return state


def _result(state: TrainState, record: _Record, stop_reason: str | None = None) -> FitResult:
    return FitResult(
        model=state.model(),
        losses=np.asarray(record.losses, dtype=np.float64).reshape(-1),
        history={k: np.asarray(v) for k, v in record.history.items()},
        state=state,
        stop_reason=stop_reason,
    )


def _nonfinite_outcome(plan, compiled, start_state, epochs, chunk_losses, record, bar) -> FitResult:
    """The first non-finite loss of a chunk: raise NonFiniteLossError or return the last finite state."""
    flat = chunk_losses.reshape(-1)
    bad = int(np.argmax(~np.isfinite(flat)))
    replay = _replay(plan, compiled, start_state, epochs, bad)
    good = _Record(record.losses + flat[:bad].tolist(), record.history)
    bad_step = len(good.losses) + 1
    bad_epoch = epochs[bad // plan.steps_per_epoch] + 1
    message = (
        f"fit: non-finite loss {flat[bad]} at step {bad_step} (epoch {bad_epoch}/{plan.epochs}); "
        f"the state before that step (after step {bad_step - 1}, all finite) is kept"
    )
    result = _result(replay, good, stop_reason=message)
    if plan.on_nonfinite == "raise":
        raise NonFiniteLossError(
            message + " in error.state / error.result",
            step=bad_step,
            epoch=bad_epoch,
            loss=float(flat[bad]),
            result=result,
        )
    if plan.verbose:
        bar.print(message)
    return result


# ---- fit, step 5: record an epoch (history, log line, callbacks, periodic checkpoint) -----------


def _record_epoch(plan, compiled, state, done: int, row: np.ndarray, record: _Record, bar) -> tuple:
    """Book epoch ``done`` (1-based); returns (state, stop reason or None). Callbacks run here, in order."""
    record.losses.extend(row.tolist())
    logs = {"loss": float(row[-1]), "mean_loss": float(np.mean(row))}
    if compiled.evaluate is not None:
        values = jax.device_get(compiled.evaluate(state, *plan.validation.batch()))
        logs.update({f"val_{k}": float(v) for k, v in values.items() if k != "aux"})
    record.history["epoch"].append(done)
    for name, value in logs.items():
        record.history.setdefault(name, []).append(value)
    if plan.verbose and done % plan.log_every == 0:
        bar.print(_format_line(done, plan.epochs, logs))
    stop_reason = None
    for cb in plan.callbacks:
        action = cb.on_epoch_end(done, logs, state)
        if isinstance(action, Stop):
            stop_reason = action.reason
            if action.state is not None:
                state = action.state
    ckpt = plan.checkpoints
    if ckpt.directory is not None and ckpt.every is not None and done % ckpt.every == 0:
        _save_fit_checkpoint(ckpt.directory, state, done, plan.key, record.losses, record.history, ckpt.keep)
    return state, stop_reason


# ---- fit, step 6: checkpoint on interrupt -------------------------------------------------------


def _save_on_interrupt(plan: _FitPlan, safe: tuple, record: _Record, bar) -> None:
    """Ctrl-C: save the last chunk-boundary state and the records up to it (what an exact resume needs)."""
    directory = plan.checkpoints.directory
    if directory is None or safe is None:
        return
    safe_state, safe_epoch, lengths = safe
    kept = record.truncated(lengths)
    _save_fit_checkpoint(directory, safe_state, safe_epoch, plan.key, kept.losses, kept.history, plan.checkpoints.keep)
    if plan.verbose:
        bar.print(
            f"fit: interrupted; saved the state after epoch {safe_epoch} (step {int(safe_state.step)}) to {directory!r}"
        )


def fit(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    criterion: Callable[[Any, Any], jax.Array] | None = None,
    X: Any = None,
    Y: Any = None,
    *,
    epochs: int,
    loss_fn: Callable[..., jax.Array] | None = None,
    data: Sequence[Any] | None = None,
    batch_size: int | None = None,
    shuffle: bool = False,
    drop_last: bool = False,
    key: jax.Array | None = None,
    accumulate_steps: int = 1,
    autocast: str | None = None,
    log_every: int = 10,
    validation: tuple[Any, ...] | None = None,
    metrics: Mapping[str, Callable[[Any, Any], jax.Array]] | None = None,
    fused: bool | str = "auto",
    donate: bool = False,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    checkpoint_keep: int | None = 3,
    resume_from: str | None = None,
    on_nonfinite: str = "raise",
    check_finite: bool = False,
    verbose: bool = True,
    progress: bool | None = None,
    mesh: Any = None,
    shard_min_size: int | None = None,
) -> FitResult:
    """Train ``model`` on in-memory arrays for ``epochs`` epochs; print like the tutorial loop.

    PyTorch equivalent::

        loader = DataLoader(TensorDataset(X, Y), batch_size, shuffle, drop_last)
        for epoch in range(epochs):
            for x, y in loader:
                optimizer.zero_grad(); loss = criterion(model(x), y); loss.backward(); optimizer.step()
            if (epoch + 1) % 10 == 0:
                print(f'Epoch [{epoch+1}/{epochs}], Loss: {loss.item():.4f}')

    What it does, in order: checks every argument; builds the :class:`TrainState` (or resumes one from
    ``resume_from``); splits the epochs into chunks (one epoch with validation or callbacks, else up to
    the next log line / checkpoint); runs each chunk fused or step by step; records each epoch (losses,
    validation, log line, callbacks, periodic checkpoint); saves a checkpoint on Ctrl-C.

    Data and loss:

    - ``fit(model, tx, criterion, X, Y)``: ``criterion(model(x), y)``. ``X`` may be a tuple of arrays
      (``model(*x)``) or a dict (``model(**x)``), e.g. ``(X_num, X_cat)``; all arrays are batched and
      shuffled together (same rows).
    - ``fit(model, tx, loss_fn=f, data=(A, B, ...))``: the general form, ``f(model, a, b, ...)`` on the
      batches of every array of ``data`` (see :func:`make_train_step`); ``validation`` is then a tuple like
      ``data`` and reports ``val_loss``; ``metrics`` need the short form.
    - ``batch_size=None``: full batch (one step per epoch, as in the tutorial). Otherwise mini-batches
      with ``shuffle`` / ``drop_last``; epoch ``e`` (0-based) uses the order
      ``fnml.data.epoch_permutation(key, n, e)`` (``shuffle=True`` requires ``key``; torch would use its
      global generator). The printed loss is the loss of the epoch's LAST step, like ``loss.item()``.
    - ``accumulate_steps=N``: torch's gradient accumulation over N consecutive batches of ``batch_size``
      (``(loss / N).backward()`` on each, then ``optimizer.step(); optimizer.zero_grad()``); BatchNorm
      statistics per micro-batch. The samples used per epoch must fill whole groups of N batches
      (``ValueError`` otherwise). ``result.losses`` has one entry per OPTIMIZER step: the mean of its N
      micro-batch losses; schedules count optimizer steps.
    - ``autocast="bfloat16"``: torch's ``torch.autocast("cpu", dtype=torch.bfloat16)`` (see
      :func:`make_train_step` for what runs in which dtype); parameters and optimizer state stay float32.

    Monitoring, control, robustness:

    - ``validation=(X_val, Y_val)``: evaluated after every epoch in eval mode (``val_loss`` and
      ``val_<name>`` for each of ``metrics``, e.g. ``{"accuracy": train.accuracy}``), printed after the loss.
    - ``fused``: run many steps inside one ``jax.lax.scan`` (whole epochs per chunk). Same losses as the
      unfused loop (float32 <= 1e-6), same batches. ``"auto"`` fuses when a chunk has at least 2 steps,
      except for models containing a convolution (any submodule whose class name contains ``Conv``) on
      the CPU backend, where a conv net inside ``lax.scan`` runs slower than one jitted step per
      iteration (measurements: ``benchmarks/README.md``).
    - ``donate``: donate state buffers to each step (faster for MLPs, slower for LSTMs).
    - ``callbacks``: :class:`Callback` objects, e.g. :class:`EarlyStopping`. ``on_train_begin()`` runs once
      before the first epoch; ``on_epoch_end(epoch, logs, state)`` after every epoch's records (and before
      that epoch's checkpoint), in list order: deterministic points a test can hook (a callback raising
      ``KeyboardInterrupt`` there behaves like Ctrl-C).
    - ``checkpoint_dir`` / ``checkpoint_every`` (epochs) / ``checkpoint_keep``: orbax checkpoints of the
      full state (frozen parameters included) plus the data-order key, epoch and loss history (and one at
      the end of training). ``resume_from=dir`` continues from that directory's newest valid checkpoint up
      to ``epochs``: the parameters are bitwise those of an uninterrupted run (same shuffles, same dropout
      keys). Checkpoints are atomic (orbax) and verified by a manifest; a corrupt newest one is skipped
      with a warning.
    - ``on_nonfinite``: ``"raise"`` (default) raises :class:`NonFiniteLossError` naming the step, carrying
      the last finite state; ``"stop"`` returns early with that state; ``"ignore"`` keeps training.
    - ``check_finite=True``: debug mode, one checked step at a time (never fused): raises
      :class:`NonFiniteError` at the first step whose loss, gradient or updated parameter is NaN/inf,
      naming the parameter (``"fc1.weight"``) and the step.
    - Ctrl-C (``KeyboardInterrupt``) during training: with ``checkpoint_dir``, the state at the last
      completed chunk boundary (epoch-aligned, what an exact resume needs) is saved first, then the
      ``KeyboardInterrupt`` is re-raised.
    - ``mesh``: data-parallel over a ``jax.sharding.Mesh`` (``fnml.device.mesh()``), torch's DDP: every
      batch is split along the "data" axis, parameters stay replicated; the losses equal the single-device
      run (BatchNorm: global-batch statistics, i.e. ``SyncBatchNorm``). Each batch (and a last partial
      one; with ``accumulate_steps`` each micro-batch) must be divisible by the "data" axis size
      (``ValueError`` before training). In one process the epochs are fused on the mesh as without one
      (same ``fused`` rule; the training arrays replicated, each batch split along "data" inside the
      scan). With several processes (``fnml.device.init_distributed``) each process passes ITS rows;
      global batch ``i`` = the concatenation of every process's batch ``i``; one jitted step per batch
      (``fused=True`` is a ``ValueError``: a fused epoch would need every process's rows). Validation
      runs on the placed state with plain ``jit``. The returned state and model live on the mesh
      (``interop.state_dict(result.model)`` / ``fnml.device.to_host`` gather them to numpy).
    - ``shard_min_size`` (with ``mesh``): FSDP-style sharding, torch's ``fully_shard``: state arrays
      (parameters and optimizer state) of at least that many elements are split along the mesh's
      "model" axis (``fnml.device.param_shardings``), the rest replicated; the numbers are unchanged
      (equal up to float summation order), fused or not. ``None``: everything replicated (DDP).
    - ``progress``: a rich progress bar; ``None`` = only on a terminal for runs of >= 2000 steps.

    Returns a :class:`FitResult` (``.model``, ``.losses``, ``.history``, ``.state``, ``.plot(path)``).

    >>> import jax, numpy as np
    >>> from flax import nnx
    >>> from fnml import layers, losses, optim, train
    >>> X, Y = np.ones((10, 2), np.float32), np.zeros((10, 1), np.float32)
    >>> result = train.fit(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.adam(lr=1e-3), losses.MSELoss(), X, Y,
    ...                    epochs=20, log_every=10)  # doctest: +ELLIPSIS
    Epoch [10/20], Loss: ...
    Epoch [20/20], Loss: ...
    >>> result.losses.shape
    (20,)
    """
    plan = _validate_fit(
        model,
        tx,
        criterion,
        X,
        Y,
        epochs=epochs,
        loss_fn=loss_fn,
        data=data,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        key=key,
        accumulate_steps=accumulate_steps,
        autocast=autocast,
        log_every=log_every,
        validation=validation,
        metrics=metrics,
        fused=fused,
        donate=donate,
        callbacks=callbacks,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        checkpoint_keep=checkpoint_keep,
        resume_from=resume_from,
        on_nonfinite=on_nonfinite,
        check_finite=check_finite,
        verbose=verbose,
        progress=progress,
        mesh=mesh,
        shard_min_size=shard_min_size,
    )
    state, epoch, record = _start(plan, model, tx)
    chunk_epochs = _chunk_epochs(plan)
    compiled = _compile(plan, model, chunk_epochs)

    total_steps = plan.epochs * plan.steps_per_epoch
    show_bar = (
        progress if progress is not None else (verbose and sys.stdout.isatty() and total_steps >= _PROGRESS_MIN_STEPS)
    )
    bar = _Progress(bool(show_bar), total_steps, epoch * plan.steps_per_epoch)
    for cb in plan.callbacks:
        if hasattr(cb, "on_train_begin"):
            cb.on_train_begin()

    stop_reason = None
    safe = None  # what Ctrl-C saves: (chunk-boundary state, its epoch, record lengths)
    check = plan.on_nonfinite != "ignore"
    try:
        while epoch < plan.epochs:
            # The chunk ends at the next multiple of chunk_epochs (aligned, so a resumed run compiles
            # and sums exactly like the uninterrupted one).
            end = min(plan.epochs, (epoch // chunk_epochs + 1) * chunk_epochs)
            epoch_list = list(range(epoch, end))
            keep_start = plan.donate and (check or plan.checkpoints.directory is not None)
            start_state = jax.tree.map(jnp.copy, state) if keep_start else state
            safe = (start_state, epoch, record.lengths())
            state, chunk_losses = _run_chunk(plan, compiled, state, epoch_list)
            if check and not np.all(np.isfinite(chunk_losses)):
                return _nonfinite_outcome(plan, compiled, start_state, epoch_list, chunk_losses, record, bar)
            for offset, e in enumerate(epoch_list):
                state, reason = _record_epoch(plan, compiled, state, e + 1, chunk_losses[offset], record, bar)
                stop_reason = reason or stop_reason
            bar.advance(len(epoch_list) * plan.steps_per_epoch)
            epoch = end
            if stop_reason is not None:
                if verbose:
                    bar.print(stop_reason)
                break
    except KeyboardInterrupt:
        _save_on_interrupt(plan, safe, record, bar)
        raise
    finally:
        bar.close()
    ckpt = plan.checkpoints
    if ckpt.directory is not None and latest_step_or_none(ckpt.directory) != int(state.step):
        _save_fit_checkpoint(ckpt.directory, state, epoch, plan.key, record.losses, record.history, ckpt.keep)
    return _result(state, record, stop_reason=stop_reason)


def latest_step_or_none(directory: str) -> int | None:
    """Latest checkpoint step in ``directory``, None when it does not exist yet or holds none."""
    try:
        return latest_step(directory)
    except FileNotFoundError:
        return None


def _save_fit_checkpoint(directory, state, epoch, key, losses, history, keep) -> None:
    """fit's periodic checkpoint: the state plus what an exact resume needs (epoch, key, history)."""
    metadata = {
        "epoch": int(epoch),
        "data_key": _key_data(key),
        "losses": [float(v) for v in losses],
        "history": {k: [float(x) for x in v] for k, v in history.items()},
    }
    if latest_step_or_none(directory) == int(state.step):
        return
    save_checkpoint(directory, state, step=int(state.step), metadata=metadata, keep=keep)
