"""The one pure training step of fnml: loss forms, gradient accumulation, frozen parameters, autocast.

Private: ``fnml.train`` (``make_train_step``, ``fit``'s fused and unfused loops) and
``fnml.parity.compare_training`` build their steps here, so there is exactly one implementation of
"merge the module, run the loss in the modes it was split in, differentiate the trainable parameters,
apply the optimizer". The state it reads and writes is a ``train.TrainState`` (duck-typed here: ``graphdef``,
``tx``, ``params``, ``frozen``, ``rest``, ``opt_state``, ``step``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fnml.functional.ad_mode import dropping_param_writes, reverse_mode_only

# --------------------------------------------------------------------------------------------------
# Calling the model and the two loss forms
# --------------------------------------------------------------------------------------------------


def call_model(model: Any, x: Any) -> Any:
    """``model(*x)`` for a tuple/list of inputs, ``model(**x)`` for a dict, else ``model(x)``."""
    if isinstance(x, (tuple, list)):
        return model(*x)
    if isinstance(x, Mapping):
        return model(**x)
    return model(x)


def criterion_loss(criterion: Callable[[Any, Any], jax.Array]) -> Callable[..., jax.Array]:
    """The short form as a general loss: ``f(model, x, y) = criterion(model(x), y)``."""

    def loss_fn(model: Any, x: Any, y: Any) -> jax.Array:
        return criterion(call_model(model, x), y)

    return loss_fn


# --------------------------------------------------------------------------------------------------
# Autocast: torch.autocast's CPU policy on the module copy built while tracing
# --------------------------------------------------------------------------------------------------

AUTOCAST_DTYPES = {"bfloat16": jnp.bfloat16, "float16": jnp.float16}

# flax's own matmul/convolution layers (fnml layers declare it: torch_facts.autocast).
_LOWER_PRECISION_NNX = (nnx.Linear, nnx.LinearGeneral, nnx.Einsum, nnx.Conv, nnx.ConvTranspose)


def _is_lower_precision_layer(module: Any) -> bool:
    """A layer torch's autocast runs in the lower precision (its CPU list: linear, matmul, bmm, conv*...):
    an fnml layer declaring ``torch_facts.autocast``, or a flax matmul/convolution, with a computation
    ``dtype`` attribute (flax's convention)."""
    if not hasattr(module, "dtype"):
        return False
    facts = getattr(type(module), "torch_facts", None)
    if facts is not None:
        return facts.autocast
    return isinstance(module, _LOWER_PRECISION_NNX)


def apply_autocast(model: nnx.Module, dtype: Any) -> None:
    """torch's autocast on ``model`` (a copy built while tracing): matmul/conv layers compute in ``dtype``.

    Each such layer gets its computation ``dtype`` attribute (the flax convention every fnml matmul/conv layer
    reads): input, kernel and bias are cast to ``dtype`` and the result is ``dtype``; ``fnml.functional``
    accumulates such products in float32 and adds the bias before the one rounding (the value torch's autocast
    ``addmm`` rounds once). flax's own ``nnx.Linear``/``nnx.Conv`` get ``preferred_element_type=float32``.
    """
    for _, module in nnx.iter_modules(model):
        if _is_lower_precision_layer(module):
            module.dtype = dtype
            is_flax_own = getattr(type(module), "torch_facts", None) is None  # fnml's accumulate in float32 already
            if is_flax_own and isinstance(module, _LOWER_PRECISION_NNX) and hasattr(module, "preferred_element_type"):
                module.preferred_element_type = jnp.float32


def loss_input(tree: Any, dtype: Any) -> Any:
    """The model's floating outputs as torch's autocast hands them to a loss: rounded to ``dtype``, then float32."""

    def cast(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and leaf.dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
            return leaf.astype(dtype).astype(jnp.float32)
        return leaf

    return jax.tree.map(cast, tree)


class _AutocastModel:
    """The module as a loss sees it under autocast: outputs rounded to the autocast dtype, returned in float32."""

    def __init__(self, module: nnx.Module, dtype: Any) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_dtype", dtype)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return loss_input(self._module(*args, **kwargs), self._dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _check_autocast_params(params: Any) -> None:
    dtypes = {jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)}
    if dtypes - {jnp.dtype(jnp.float32)}:
        raise ValueError(
            f"autocast needs float32 master parameters (torch's autocast casts only float32 tensors), "
            f"got parameter dtypes {sorted(str(d) for d in dtypes)}"
        )


# --------------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------------


def _like(template: Any, state: nnx.State) -> Any:
    """``state`` in ``template``'s form: ``nnx.State`` if the template is one, else plain nested dicts."""
    return state if isinstance(template, nnx.State) else nnx.to_pure_dict(state)


def _merge(state: Any, params: Any, rest: Any) -> nnx.Module:
    """The module of ``state`` with these trainable parameters and this non-parameter state."""
    frozen = getattr(state, "frozen", None)
    parts = (params, rest) if frozen is None else (params, frozen, rest)
    return nnx.merge(state.graphdef, *parts, copy=True)


def _written_params(model: nnx.Module, params: Any, frozen: Any) -> tuple[Any, Any]:
    """The trainable and frozen parameter values of ``model`` now, in the form of ``params`` / ``frozen``."""
    from fnml.layers.base import is_frozen, is_trainable

    new_params = _like(params, nnx.state(model, is_trainable))
    new_frozen = frozen if frozen is None else _like(frozen, nnx.state(model, is_frozen))
    return new_params, new_frozen


def _micro_batches(batch: tuple, accumulate_steps: int) -> tuple:
    """Every array ``(N * B, ...) -> (N, B, ...)``: the N consecutive micro-batches of one optimizer step."""

    def split(leaf: Any) -> Any:
        leaf = jnp.asarray(leaf)
        if leaf.ndim == 0 or leaf.shape[0] % accumulate_steps:
            raise ValueError(
                f"accumulate_steps={accumulate_steps}: every batch array must have a leading axis divisible by "
                f"{accumulate_steps} (N micro-batches of equal size), got shape {leaf.shape}"
            )
        return leaf.reshape(accumulate_steps, leaf.shape[0] // accumulate_steps, *leaf.shape[1:])  # (N*B,..)->(N,B,..)

    return jax.tree.map(split, batch)


def pure_train_step(
    loss_fn: Callable[..., Any],
    *,
    has_aux: bool = False,
    accumulate_steps: int = 1,
    streamed: bool = False,
    autocast: Any = None,
    report: bool = False,
) -> Callable:
    """The un-jitted step ``(state, *batch) -> (state, loss[, aux][, flags])``.

    ``loss_fn(model, *batch)`` returns the loss (or ``(loss, aux)``). Gradients are taken over
    ``state.params`` (the trainable parameters) only; ``state.frozen`` enters as constants; ``state.rest``
    (BatchNorm statistics, RNG counters) threads through every forward pass. With ``accumulate_steps=N``
    each batch array holds N micro-batches: ``grads = sum_i grad(loss_i / N)`` (torch's
    ``(loss / N).backward()`` N times), ``rest`` threaded micro-batch by micro-batch, ONE optimizer update;
    the loss returned is the mean of the N micro-batch losses, ``aux`` is stacked along a leading N axis.
    ``streamed=True`` (with ``accumulate_steps=N``): each call is ONE micro-batch; its ``grad(loss / N)`` is
    added to ``state.grads`` (torch's ``.grad``) and ``state.micro`` counts the micro-batches; the call that
    completes N applies the optimizer to the sum and zeroes both (``lax.cond``: one program for every
    call). The state must carry ``grads``/``micro`` (:func:`start_accumulation`); the loss returned is the
    micro-batch's own, undivided. The same additions in the same order as ``accumulate_steps=N`` over
    the concatenated micro-batches.
    ``report=True`` also returns one finiteness flag per ``[loss, gradient leaves..., parameter leaves...]``.

    Modes: the module runs in the train/eval mode of each submodule as recorded in ``state.graphdef``
    (torch's rule: a module's mode is its own; ``model.train(); model.backbone.eval()`` keeps the backbone's
    BatchNorm on its running statistics and its Dropout off). Nothing here switches modes: ``fit`` sets
    train mode on the state it starts from (unless ``keep_modes=True``), ``TrainState.train()`` / ``eval()``
    / ``with_modes`` change them, and every caller of this step (``make_train_step``, ``fit``'s fused and
    unfused loops, ``parity.compare_training``) follows the same rule.
    """
    compute_dtype = None if autocast is None else AUTOCAST_DTYPES[autocast]

    def gradients(state: Any, params: Any, frozen: Any, rest: Any, batch: tuple, divisor: int) -> tuple:
        def objective(params: Any) -> tuple:
            # merge/split happen while tracing: the compiled step is a pure array program.
            model = _merge(state.replace(frozen=frozen), params, rest)  # in the graphdef's modes, untouched
            seen = model
            if compute_dtype is not None:
                apply_autocast(model, compute_dtype)
                seen = _AutocastModel(model, compute_dtype)
            out = loss_fn(seen, *batch)
            loss, aux = out if has_aux else (out, None)
            new_rest = nnx.state(model, nnx.Not(nnx.Param))
            # Parameter VALUES after the forward pass: torch's in-place writes under no_grad (Embedding's
            # max_norm renormalisation) change the parameter the optimizer then updates. Without such a write
            # these are the input arrays (XLA passes them through).
            written = jax.lax.stop_gradient(_written_params(model, params, frozen))
            return loss / divisor if divisor != 1 else loss, (loss, _like(rest, new_rest), aux, written)

        if compute_dtype is not None:
            _check_autocast_params(params)
        with reverse_mode_only():  # only reverse mode here: ops may carry hand-written backward passes
            (_, (loss, new_rest, aux, (params, frozen))), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return loss, params, frozen, new_rest, aux, grads

    def accumulated(state: Any, batch: tuple) -> tuple:
        def micro_step(carry: tuple, micro: tuple) -> tuple:
            params, frozen, rest, total = carry
            loss, params, frozen, rest, aux, grads = gradients(state, params, frozen, rest, micro, accumulate_steps)
            # p.grad += grad(loss_i / N), in micro-batch order.
            return (params, frozen, rest, jax.tree.map(jnp.add, total, grads)), (loss, aux)

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (params, frozen, rest, grads), (losses, aux) = jax.lax.scan(
            micro_step, (state.params, state.frozen, state.rest, zeros), _micro_batches(batch, accumulate_steps)
        )
        return jnp.mean(losses), params, frozen, rest, aux, grads

    def update(state: Any, grads: Any, params: Any) -> tuple:
        # The optimizer updates the parameters as the forward pass left them (torch's optimizer sees in-place
        # writes too).
        updates, opt_state = state.tx.update(grads, state.opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def streamed_step(state: Any, batch: tuple) -> tuple:
        loss, params, frozen, rest, aux, grads = gradients(
            state, state.params, state.frozen, state.rest, batch, accumulate_steps
        )
        total = jax.tree.map(jnp.add, state.grads, grads)  # p.grad += grad(loss / N)
        micro = state.micro + 1

        def apply(_: Any) -> tuple:  # optimizer.step(); optimizer.zero_grad()
            new_params, opt_state = update(state, total, params)
            zeros = jax.tree.map(jnp.zeros_like, total)
            return new_params, opt_state, zeros, jnp.zeros_like(micro), state.step + 1

        def wait(_: Any) -> tuple:
            return params, state.opt_state, total, micro, state.step

        params, opt_state, total, micro, count = jax.lax.cond(micro == accumulate_steps, apply, wait, None)
        new_state = state.replace(
            params=params, frozen=frozen, rest=rest, opt_state=opt_state, step=count, grads=total, micro=micro
        )
        return new_state, loss, aux, grads, params

    def step(state: Any, *batch: Any) -> tuple:
        if streamed:
            new_state, loss, aux, grads, params = streamed_step(state, batch)
        else:
            if accumulate_steps == 1:
                loss, params, frozen, rest, aux, grads = gradients(
                    state, state.params, state.frozen, state.rest, batch, 1
                )
            else:
                loss, params, frozen, rest, aux, grads = accumulated(state, batch)
            params, opt_state = update(state, grads, params)
            new_state = state.replace(params=params, frozen=frozen, rest=rest, opt_state=opt_state, step=state.step + 1)
            if getattr(state, "grads", None) is not None:
                # torch's loop starts with optimizer.zero_grad(): gradients a streamed step left pending are
                # dropped, not added.
                new_state = new_state.replace(
                    grads=jax.tree.map(jnp.zeros_like, state.grads), micro=jnp.zeros_like(state.micro)
                )
        out = (new_state, loss, aux) if has_aux else (new_state, loss)
        if report:
            checked = [loss, *jax.tree.leaves(grads), *jax.tree.leaves(params)]
            out = (*out, jnp.stack([jnp.all(jnp.isfinite(v)) for v in checked]))
        return out

    return step


def start_accumulation(state: Any) -> Any:
    """``state`` with a zero gradient sum and micro-batch count, if it has none (what a streamed step carries).

    Done outside ``jit`` so that the streamed step sees one state structure on every call: one compilation.
    """
    if state.grads is not None:
        return state
    return state.replace(grads=jax.tree.map(jnp.zeros_like, state.params), micro=jnp.zeros((), jnp.int32))


def pure_eval_step(
    loss_fn: Callable[..., Any] | None,
    *,
    has_aux: bool = False,
    criterion: Callable | None = None,
    metrics: Mapping[str, Callable] | None = None,
    autocast: Any = None,
) -> Callable:
    """The un-jitted evaluation ``(state, *batch) -> {"loss": ..., name: metric(output, target), ...}``.

    Criterion form (``criterion`` and/or ``metrics``, batch ``(x, y)``): one forward pass, every metric of
    its output. General form (``loss_fn``): ``{"loss": loss}`` (plus ``"aux"`` with ``has_aux``).
    """
    compute_dtype = None if autocast is None else AUTOCAST_DTYPES[autocast]
    metrics = dict(metrics or {})

    def evaluate(state: Any, *batch: Any) -> dict[str, Any]:
        with dropping_param_writes():  # the evaluation returns no state: an in-place parameter write is refused
            return _evaluate(state, *batch)

    def _evaluate(state: Any, *batch: Any) -> dict[str, Any]:
        model = _merge(state, state.params, state.rest)
        model.eval()
        seen = model
        if compute_dtype is not None:
            apply_autocast(model, compute_dtype)
            seen = _AutocastModel(model, compute_dtype)
        if loss_fn is not None:
            out = loss_fn(seen, *batch)
            return {"loss": out[0], "aux": out[1]} if has_aux else {"loss": out}
        x, y = batch
        output = call_model(seen, x)
        values = {"loss": criterion(output, y)} if criterion is not None else {}
        values.update({name: fn(output, y) for name, fn in metrics.items()})
        return values

    return evaluate
