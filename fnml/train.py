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
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fnml import _fit, _step
from fnml import _train_jit as _jit
from fnml._fit import FitResult, NonFiniteLossError, Stop
from fnml._train_jit import NonFiniteError
from fnml._validation import check_bool, check_int, check_positive_int
from fnml.checkpoint import latest_step_or_none, restore_checkpoint, save_checkpoint  # noqa: F401 - importable here as before
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

# Sections: TrainState; the steps (make_train_step, make_eval_step, accuracy); callbacks; fit. The jitting
# behind the steps is fnml._train_jit; fit's pipeline (and the Stop / FitResult / NonFiniteLossError it
# builds) is fnml._fit; checkpoints are fnml.checkpoint.


# --------------------------------------------------------------------------------------------------
# TrainState
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a training step reads and writes, as one pytree; the module's structure stays static.

    PyTorch equivalent: the pair ``(model, optimizer)`` (``model.state_dict()`` + ``optimizer.state_dict()``).

    Fields: ``graphdef`` (static: ``nnx.split``'s graph definition, which records each submodule's
    train/eval mode: see :meth:`train`, :meth:`eval`, :meth:`with_modes`), ``tx`` (static: the
    ``optax.GradientTransformation``), ``params`` (the TRAINABLE ``nnx.Param`` arrays as plain nested
    dicts: ``state.params["fc1"]["kernel"]`` is a ``jax.Array``), ``rest`` (every other variable, same
    form: BatchNorm statistics, RNG keys and counters of Dropout...), ``opt_state`` (built over
    ``params``), ``step`` (int32 scalar: optimizer steps taken), ``frozen`` (the parameters marked by
    ``layers.freeze``, torch's ``requires_grad=False``: no gradient, no optimizer state, no update, no
    weight decay; ``{}`` when nothing is frozen), ``grads`` and ``micro`` (torch's ``.grad`` between two
    optimizer steps of a streamed accumulation, ``make_train_step(accumulate_steps=N, streamed=True)``:
    the sum of the micro-batch gradients so far and their count; ``None`` otherwise, as torch's ``.grad``
    after ``zero_grad()``). A parameter reachable by two paths (tied weights,
    torch's ``decoder.weight = encoder.weight``) is ONE leaf: one gradient (the sum over both uses), one
    update. Being a pytree with static graph definition, a state passes through ``jit``/``lax.scan``
    unchanged in structure, so a step never recompiles (a mode switch is a new graph definition: one
    compile per mode mix). Plain dicts rather than ``nnx.State`` (jax flattens dicts in C++); states built
    by hand with ``nnx.State`` fields still work.

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
    grads: Any = None
    micro: Any = None

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
        tx = _jit.as_gradient_transformation(tx, where="TrainState.create")
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

    def zero_grad(self) -> TrainState:
        """A state without pending micro-batch gradients (``grads`` and ``micro`` back to ``None``).

        PyTorch equivalent: ``optimizer.zero_grad()`` (``set_to_none=True``, torch's default) between the
        optimizer steps of a gradient accumulation: the gradients of the micro-batches since the last
        update are dropped. Nothing else changes.

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from fnml import layers, losses, optim, train
        >>> state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
        >>> step = train.make_train_step(losses.MSELoss(), accumulate_steps=2, streamed=True)
        >>> state, _ = step(state, jnp.ones((4, 2)), jnp.zeros((4, 1)))   # 1 of 2 micro-batches
        >>> int(state.micro), int(state.step), state.zero_grad().grads is None
        (1, 0, True)
        """
        return self.replace(grads=None, micro=None)

    # ---- train / eval modes: static attributes of the graph definition ------------------------------

    def train(self, mode: bool = True) -> TrainState:
        """A state whose module is in training mode (``mode=True``) or eval mode (``mode=False``) everywhere.

        PyTorch equivalent: ``model.train(mode)``, which returns the model; here a NEW state is returned
        (the state is immutable) with only its ``graphdef`` changed: the arrays are the same objects, not
        copied. The modes are static attributes of the graph definition (Dropout's ``deterministic``,
        BatchNorm's ``use_running_average``, a twin's ``training``), so every training step runs the module
        in the modes its state records (:func:`make_train_step`, :func:`fit` with ``keep_modes=True``,
        ``parity.compare_training``). A jitted step compiles once per mode mix it sees: switching modes back
        and forth reuses both compilations.

        >>> from flax import nnx
        >>> from fnml import layers, optim, train
        >>> model = layers.Sequential(layers.Linear(2, 2, rngs=nnx.Rngs(0)), layers.Dropout(0.5, rngs=nnx.Rngs(1)))
        >>> state = train.TrainState.create(model, optim.sgd(lr=0.1))
        >>> state.eval().model()[1].deterministic, state.eval().train().model()[1].deterministic
        (True, False)
        >>> state.eval().params is state.params   # the arrays are shared, not copied
        True
        """
        check_bool("mode", mode, where="TrainState.train")
        return self.with_modes(lambda model: _set_mode(model, mode))

    def eval(self) -> TrainState:
        """``state.train(False)``: every submodule in eval mode (Dropout off, BatchNorm on running statistics).

        PyTorch equivalent: ``model.eval()``. Training an eval-mode state is what torch does after
        ``model.eval()``: dropout off, BatchNorm normalising with (and not updating) its running statistics.

        >>> from flax import nnx
        >>> from fnml import layers, optim, train
        >>> state = train.TrainState.create(layers.BatchNorm1d(3), optim.sgd(lr=0.1))
        >>> state.model().use_running_average, state.eval().model().use_running_average
        (False, True)
        """
        return self.train(False)

    def with_modes(self, set_modes: Callable[[nnx.Module], Any]) -> TrainState:
        """A state whose modes are those ``set_modes(module)`` leaves on this state's module (per submodule).

        PyTorch equivalent: switching modes on the model in place, e.g. ``model.train(); model.backbone.eval()``
        (the frozen-backbone fine-tuning recipe): ``state.with_modes(lambda m: m.train().backbone.eval())``.

        ``set_modes`` receives the module merged over this state's arrays (not copied) and may only call
        ``train()`` / ``eval()`` (or set other static attributes); its return value is ignored. Only the new
        ``graphdef`` is kept: a ``set_modes`` that changes the arrays, freezes/unfreezes parameters or adds
        variables raises ``ValueError`` (build a new state with :meth:`create` for those). Each mode mix is
        a different static graph definition: a jitted step compiles once per mix it sees.

        >>> from flax import nnx
        >>> from fnml import layers, optim, train
        >>> model = layers.Sequential(layers.BatchNorm1d(2), layers.Linear(2, 1, rngs=nnx.Rngs(0)))
        >>> state = train.TrainState.create(model, optim.sgd(lr=0.1)).with_modes(lambda m: m[0].eval())
        >>> state.model()[0].use_running_average
        True
        """
        if not callable(set_modes):
            raise TypeError(
                f"TrainState.with_modes: set_modes must be callable(module), e.g. lambda m: m.backbone.eval(), "
                f"got {set_modes!r}"
            )
        parts = (self.params, self.rest) if self.frozen is None else (self.params, self.frozen, self.rest)
        module = nnx.merge(self.graphdef, *parts, copy=False)
        set_modes(module)
        graphdef, params, frozen, rest = nnx.split(module, is_trainable, is_frozen, ...)
        before = jax.tree.flatten(parts)
        after = jax.tree.flatten(
            tuple(
                _like_field(old, new)
                for old, new in zip(parts, (params, rest) if self.frozen is None else (params, frozen, rest))
            )
        )
        same_arrays = before[1] == after[1] and all(a is b for a, b in zip(before[0], after[0]))
        if not same_arrays:
            raise ValueError(
                "TrainState.with_modes: set_modes may only switch modes (train()/eval(), static attributes), but it "
                "changed the module's arrays or their partition (a value written, a parameter frozen/unfrozen, a "
                "variable added or removed); build a new state with TrainState.create(module, tx) for those"
            )
        return self.replace(graphdef=graphdef)


jax.tree_util.register_dataclass(
    TrainState,
    data_fields=["params", "rest", "opt_state", "step", "frozen", "grads", "micro"],
    meta_fields=["graphdef", "tx"],
)


def _set_mode(model: nnx.Module, mode: bool) -> None:
    """``model.train(mode)``: the module's own method (fnml's sets ``training`` too; flax's takes attributes)."""
    from fnml.layers.base import Module

    if isinstance(model, Module):
        model.train(mode)
    elif mode:
        model.train(training=True)  # flax's: deterministic=False, use_running_average=False, and a twin's flag
    else:
        model.eval(training=False)


def _like_field(template: Any, state: nnx.State) -> Any:
    """``state`` in the form ``TrainState`` keeps ``template`` in (plain dicts, or ``nnx.State`` if built so)."""
    return state if isinstance(template, nnx.State) else nnx.to_pure_dict(state)


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


# --------------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------------


def make_train_step(
    criterion: Callable[[Any, Any], jax.Array] | None = None,
    *,
    loss_fn: Callable[..., Any] | None = None,
    has_aux: bool = False,
    accumulate_steps: int = 1,
    streamed: bool = False,
    autocast: str | None = None,
    donate: bool = False,
    mesh: Any = None,
    shard_min_size: int | None = None,
    check_finite: bool = False,
) -> Callable[..., tuple]:
    """A jitted pure training step ``step(state, *batch) -> (new_state, loss)`` (``(.., loss, aux)`` with aux).

    PyTorch equivalent: ``optimizer.zero_grad(); loss = criterion(model(x), y); loss.backward();
    optimizer.step()`` on a model in whatever modes it was set to (``model.train()``, or
    ``model.train(); model.backbone.eval()``).

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

    Modes, torch's rule: each submodule runs in the mode recorded in ``state.graphdef``, i.e. the mode
    it had when :meth:`TrainState.create` split it (a new module is in training mode, as in torch), or
    as set since by :meth:`TrainState.train` / :meth:`TrainState.eval` / :meth:`TrainState.with_modes`.
    In training mode BatchNorm uses batch statistics and updates its running ones, Dropout is active; in
    eval mode BatchNorm uses (and keeps) its running statistics and Dropout is off, so
    ``model.train(); model.backbone.eval()`` before ``TrainState.create`` fine-tunes with a fixed backbone
    BatchNorm, as torch does. The step never switches modes itself (``fit`` sets training mode unless
    ``keep_modes=True``). BatchNorm running statistics and Dropout RNG counters come back in
    ``new_state.rest``. A mode change is a new static graph definition: the step compiles once per mode
    mix it sees. Gradients are taken over
    ``state.params`` only: frozen parameters (``layers.freeze``) get none and are not updated. Same
    shapes and dtypes -> one compilation, ever.

    ``accumulate_steps=N``: torch's gradient accumulation, ``(loss / N).backward()`` on N consecutive
    micro-batches, then ``optimizer.step(); optimizer.zero_grad()``. Each call gets the N micro-batches
    concatenated (every batch array ``(N * B, ...)``, micro-batch ``i`` = rows ``i*B:(i+1)*B``) and makes
    ONE optimizer update (schedules count optimizer steps, ``state.step`` too); BatchNorm statistics are
    updated once per micro-batch, as torch's forward does. The loss returned is the mean of the N
    micro-batch losses (the sum of torch's ``loss / N``); ``aux`` is stacked along a leading N axis.

    ``accumulate_steps=N, streamed=True``: the same accumulation fed ONE micro-batch per call, as a loader
    yields them (torch's ``(loss / N).backward(); if (i + 1) % N == 0: optimizer.step();
    optimizer.zero_grad()``). Each call adds ``grad(loss / N)`` of its micro-batch to ``state.grads``
    (torch's ``.grad``; ``state.micro`` counts the micro-batches); the N-th call applies the optimizer to
    the sum and zeroes ``grads``/``micro``; ``state.step`` (and schedules) count optimizer steps. The
    same additions in the same order as ``accumulate_steps=N`` on the N micro-batches concatenated, so
    the two forms give the same parameters. The loss returned is the micro-batch's own (undivided);
    ``state.micro == 0`` after a call means the update was applied. The first call on a state without
    ``grads`` (a new or restored one) starts them at zero outside ``jit``: one compilation for every call.
    :meth:`TrainState.zero_grad` drops pending gradients; a checkpoint of a state holding some is refused
    (torch's checkpoint has no ``.grad`` either). A step without ``streamed`` (torch's loop, which begins
    with ``optimizer.zero_grad()``) drops pending gradients too.

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

    The batch may hold jax arrays, numpy arrays or torch tensors (CPU, any dtype torch's forward would take
    there), also nested in tuples and dicts; torch tensors are copied into jax arrays once per call with
    ``tensors.from_torch``'s dtype rules (int64/float64 with x64 off: checked, narrowed with a warning).

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
    >>> streamed = train.make_train_step(losses.MSELoss(), accumulate_steps=2, streamed=True)
    >>> state, loss = streamed(state, jnp.ones((2, 2)), jnp.zeros((2, 1)))   # micro-batch 1 of 2: no update
    >>> state, loss = streamed(state, jnp.ones((2, 2)), jnp.zeros((2, 1)))   # micro-batch 2 of 2: the update
    >>> int(state.step), int(state.micro)
    (3, 0)
    >>> from fnml import device
    >>> fsdp = train.make_train_step(losses.MSELoss(), mesh=device.mesh(), shard_min_size=1024)  # fully_shard
    >>> state, loss = fsdp(state, jnp.ones((4, 2)), jnp.zeros((4, 1)))   # the global batch, split along "data"
    >>> int(state.step)
    4
    """
    where = "make_train_step"
    loss = _jit.loss_form(where, criterion, loss_fn, has_aux)
    check_bool("check_finite", check_finite, where=where)
    check_bool("donate", donate, where=where)
    check_positive_int("accumulate_steps", accumulate_steps, where=where)
    check_bool("streamed", streamed, where=where)
    if streamed and accumulate_steps == 1:
        raise ValueError(
            f"{where}: streamed=True feeds the micro-batches of an accumulation one per call and needs "
            f"accumulate_steps >= 2 (how many calls make one optimizer step), got accumulate_steps=1"
        )
    _jit.check_autocast(autocast, where=where)
    shard_min_size = _jit.check_sharding(mesh, shard_min_size, where=where)
    return _jit.jit_train_step(
        loss,
        has_aux=has_aux,
        accumulate_steps=accumulate_steps,
        streamed=streamed,
        autocast=autocast,
        donate=donate,
        mesh=mesh,
        shard_min_size=shard_min_size,
        check_finite=check_finite,
    )


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

    Every submodule runs in eval mode, whatever modes the state records (BatchNorm uses running
    statistics, Dropout is off), as after torch's ``model.eval()``; the state (modes included) is not
    changed. Short form: ``evaluate(state, x, y)`` (``x`` a tuple -> ``model(*x)``, a dict ->
    ``model(**x)``), ``metrics`` maps names to ``fn(output, target) -> scalar`` (e.g.
    :func:`accuracy`). General form: ``make_eval_step(loss_fn=f)``, ``evaluate(state, *batch)`` returns
    ``{"loss": f(model, *batch)}`` (and ``"aux"`` with ``has_aux=True``). The batch may hold torch
    tensors, as in :func:`make_train_step`. ``autocast`` as in :func:`make_train_step`. ``mesh`` /
    ``shard_min_size``: as in :func:`make_train_step` (torch's evaluation under DDP / FSDP ``fully_shard``):
    the batch is the GLOBAL batch split along "data" (its size must be divisible by the "data" axis
    size), the state replicated or, with ``shard_min_size``,
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
    _jit.check_autocast(autocast, where=where)
    shard_min_size = _jit.check_sharding(mesh, shard_min_size, where=where)
    if loss_fn is not None:
        if criterion is not None or metrics:
            raise TypeError(f"{where}: loss_fn= (the general form) takes no criterion or metrics")
        if not callable(loss_fn):
            raise TypeError(f"{where}: loss_fn must be callable(model, *batch), got {loss_fn!r}")
        return _jit.jit_eval_step(
            loss_fn=loss_fn, has_aux=has_aux, autocast=autocast, mesh=mesh, shard_min_size=shard_min_size
        )
    if criterion is None and not metrics:
        raise ValueError(f"{where}: give a criterion or at least one metric (or loss_fn=), got neither")
    for name, fn in ([("criterion", criterion)] if criterion is not None else []) + list(metrics.items()):
        if not callable(fn):
            raise TypeError(f"{where}: {name} must be callable(output, target), got {fn!r}")
    return _jit.jit_eval_step(
        criterion=criterion, metrics=metrics, autocast=autocast, mesh=mesh, shard_min_size=shard_min_size
    )


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


# --------------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------------


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
    loader: Any = None,
    batch_size: int | None = None,
    shuffle: bool = False,
    drop_last: bool = False,
    key: jax.Array | None = None,
    accumulate_steps: int = 1,
    autocast: str | None = None,
    keep_modes: bool = False,
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
    - ``loader=``: instead of arrays, any re-iterable of batches (``fnml.data.DataLoader``, a torch
      ``DataLoader``, a list), iterated once per epoch as torch's ``for x, y in loader``: items ``(x, y)``
      in the short form, tuples of ``loss_fn``'s arguments in the general form; numpy, jax or torch
      (CPU) values. It batches and shuffles itself (``batch_size``/``shuffle``/``drop_last``/``key`` stay
      unset); with ``accumulate_steps=N`` each item is ONE micro-batch (the streamed step of
      :func:`make_train_step`: ``(loss / N).backward()`` per item, ``optimizer.step()`` every N items),
      and the items per epoch must be a multiple of N (checked before training when the loader has
      ``len()``, else at the end of the epoch). A loader with an ``epoch(e)`` method (fnml's
      ``DataLoader``) is asked for epoch ``e``'s batches, so a resumed run sees the uninterrupted run's
      order; any other loader is simply iterated again (its own order, as torch's). Steps run one by
      one (never fused); ``mesh=`` takes arrays only.
    - ``autocast="bfloat16"``: torch's ``torch.autocast("cpu", dtype=torch.bfloat16)`` (see
      :func:`make_train_step` for what runs in which dtype); parameters and optimizer state stay float32.

    Train and eval modes (torch's loop calls ``model.train()`` at the start of each epoch and
    ``model.eval()`` for validation):

    - ``keep_modes=False`` (default): every submodule trains in training mode, whatever mode ``model``
      was in (``model.train()``); validation runs in eval mode.
    - ``keep_modes=True``: the training steps run each submodule in the mode it has on ``model``, the
      loop without the ``model.train()`` call, e.g. the frozen-backbone fine-tuning recipe
      ``model.train(); model.backbone.eval(); layers.freeze(model.backbone)`` (the backbone's BatchNorm
      uses and keeps its running statistics, its Dropout is off), or a model trained in eval mode.
      Validation still runs in eval mode. ``result.model`` / ``result.state`` keep the modes training
      ran in.

    Monitoring, control, robustness:

    - ``validation=(X_val, Y_val)``: evaluated after every epoch in eval mode (``val_loss`` and
      ``val_<name>`` for each of ``metrics``, e.g. ``{"accuracy": train.accuracy}``), printed after the loss.
    - ``fused``: run many steps inside one ``jax.lax.scan`` (whole epochs per chunk). Same losses as the
      unfused loop (float32 <= 1e-6), same batches. ``"auto"`` fuses when a chunk has at least 2 steps,
      except for models containing a convolution (a layer declaring one in its ``torch_facts``, flax's
      ``nnx.Conv`` / ``nnx.ConvTranspose``, or a twin's torch convolution) on the CPU backend, where a
      conv net inside ``lax.scan`` runs slower than one jitted step per iteration (measurements:
      ``benchmarks/README.md``).
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
    options = _fit.FitOptions.create(
        model,
        tx,
        criterion,
        X,
        Y,
        epochs=epochs,
        loss_fn=loss_fn,
        data=data,
        loader=loader,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        key=key,
        accumulate_steps=accumulate_steps,
        autocast=autocast,
        keep_modes=keep_modes,
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
    return _fit.run(options, TrainState.create(model, tx), model)
