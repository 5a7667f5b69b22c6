"""``fit``'s pipeline: options checked once into a frozen :class:`FitOptions`, then a sequence of named steps.

PyTorch equivalent: the body of a hand-written training loop (``for epoch ...: for x, y in loader: ...``).

:func:`fnml.train.fit` is the public face (signature, docstring); it builds :class:`FitOptions` with
:meth:`FitOptions.create` (every check, once) and calls :func:`run`, which goes, in order:

1. ``FitOptions.create``  every check, once (in ``fnml.train.fit``, before ``run``);
2. ``_start``              the state to start from (train mode unless ``keep_modes``): fresh, or resumed;
3. ``_chunk_epochs``, ``_compile``  epochs per chunk, and the jitted pieces (memoised across calls);
4. ``_run_chunk``          one chunk of epochs, fused in one ``lax.scan`` or step by step;
5. ``_record_epoch``       per epoch: history, validation, log line, callbacks, periodic checkpoint;
6. ``_save_on_interrupt``  Ctrl-C: the last chunk-boundary state is saved, then the interrupt goes on.

The public types this pipeline builds (:class:`Stop`, :class:`FitResult`, :class:`NonFiniteLossError`)
are defined here, below :mod:`fnml.train`, and shown as ``fnml.train``'s (numpy's ``set_module`` idiom).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnml import _step, _torch
from fnml import _train_jit as _jit
from fnml import data as _data
from fnml import device as _device
from fnml._plot import plot_losses
from fnml._validation import check_bool, check_choice, check_key, check_positive_int
from fnml.checkpoint import key_data, latest_step_or_none, resume_fit_checkpoint, save_fit_checkpoint

# Runs with at least this many optimizer steps get a progress bar (on a terminal only).
_PROGRESS_MIN_STEPS = 2000


def _shown_as_train(cls: type) -> type:
    """Present a public type of ``fnml.train`` defined here as ``fnml.train``'s (repr, pickling, doc checks)."""
    cls.__module__ = "fnml.train"
    return cls


# --------------------------------------------------------------------------------------------------
# What fit returns, raises, and what a callback returns to stop it
# --------------------------------------------------------------------------------------------------


@_shown_as_train
@dataclasses.dataclass(frozen=True)
class Stop:
    """Returned by a callback to end training; ``state`` (optional) replaces the final state.

    PyTorch equivalent: ``break`` out of a hand-written training loop.
    """

    reason: str = "stopped by a callback"
    state: Any = None  # fnml.train.TrainState


@_shown_as_train
@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    PyTorch equivalent: none: what a hand-written training loop leaves behind (the trained model, the list of losses).

    ``model``: the trained module (a new object; the input module is not modified). ``losses``:
    ``np.ndarray`` with the loss of every optimizer step, in order. ``history``: per-epoch arrays
    (``epoch``, ``loss`` = last step of the epoch as printed, ``mean_loss``, ``lr`` = the learning rate
    after the epoch, torch's ``scheduler.get_last_lr()[0]``, or ``lr/<group>`` per ``optim.param_groups``
    group, for ``fnml.optim`` optimizers, and ``val_loss`` / ``val_<metric>`` with validation data).
    ``state``: the final :class:`TrainState`.
    ``stop_reason``: why training ended before ``epochs`` (early stopping, non-finite loss) or None.
    """

    model: nnx.Module
    losses: np.ndarray
    history: dict[str, np.ndarray]
    state: Any  # fnml.train.TrainState
    stop_reason: str | None = None

    def plot(self, path: str, *, title: str = "Training loss") -> str:
        """Save a loss-curve PNG (per-step train loss; per-epoch validation loss if any); returns path."""
        return plot_losses(path, self.losses, self.history, title=title)


@_shown_as_train
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


# --------------------------------------------------------------------------------------------------
# Small pieces: the fused="auto" rule, array inputs, the log line, the progress bar, the memo
# --------------------------------------------------------------------------------------------------


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
    """Array-like (numpy, jax, torch tensor: bfloat16 included) -> jax array."""
    try:
        return _torch.as_jax(value)
    except TypeError as error:
        raise TypeError(f"fit: {name} must be an array, got {type(value).__name__}") from error


def _format_line(epoch: int, epochs: int, logs: Mapping[str, float], *, show_lr: bool = False) -> str:
    """``Epoch [10/100], Loss: 1.7180`` (+ validation entries; + ``LR: ...`` for a scheduled lr): the tutorial."""
    line = f"Epoch [{epoch}/{epochs}], Loss: {logs['loss']:.4f}"
    if "val_loss" in logs:  # the validation loss first, then the metrics (device_get sorts dict keys)
        line += f", Val Loss: {logs['val_loss']:.4f}"
    for name, value in logs.items():
        if name.startswith("val_") and name != "val_loss":
            line += f", Val {name[4:]}: {value:.4f}"
    for name, value in logs.items() if show_lr else ():
        if name == "lr" or name.startswith("lr/"):
            line += f", {name.replace('lr', 'LR', 1)}: {value:.3g}"
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


def _build_step(*, criterion: Any, loss_fn: Any, **options: Any) -> Callable:
    return _jit.jit_train_step(_jit.loss_of(criterion, loss_fn), **options)


def _build_fused(*, criterion: Any, loss_fn: Any, **options: Any) -> Callable:
    return _make_fused_epochs(_jit.loss_of(criterion, loss_fn), **options)


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

    if mesh is None:
        return jax.jit(run, donate_argnums=(0,) if donate else ())
    # the state placed as the mesh step places it; the training arrays, key and epochs replicated
    return _device.mesh_jit(run, mesh, split_args=False, donate=donate, shard_min_size=shard_min_size)


# ---- fit, step 1: every option checked, once, into a FitOptions ----------------------------------


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


@dataclasses.dataclass(frozen=True)
class _Loader:
    """A user's loader (re-iterated once per epoch), each item one micro-batch; how to read its items."""

    source: Any
    short_form: bool
    steps_per_epoch: int | None  # optimizer steps per epoch; None when the loader has no len()

    def items(self, epoch: int) -> Any:
        """Epoch ``epoch``'s items: ``loader.epoch(epoch)`` where there is one (fnml's DataLoader: the exact
        order again after a resume), else a new ``iter(loader)`` (torch's ``for batch in loader``)."""
        replay = getattr(self.source, "epoch", None)
        return iter(replay(epoch)) if callable(replay) else iter(self.source)

    def batch(self, item: Any, index: int, epoch: int) -> tuple:
        """The step's ``*batch`` of one item: ``(x, y)`` in the short form, the item's parts in the general one."""
        where = f"fit: loader item {index} of epoch {epoch + 1}"
        if not isinstance(item, (tuple, list)):
            raise TypeError(
                f"{where} must be a tuple or list ({'(x, y)' if self.short_form else 'the arrays loss_fn takes'}), "
                f"got {type(item).__name__}"
            )
        if self.short_form and len(item) != 2:
            raise TypeError(f"{where} must be a pair (x, y) for criterion(model(x), y), got {len(item)} parts")
        return tuple(item)


def _as_loader(
    loader: Any, *, short_form: bool, accumulate_steps: int, X: Any, Y: Any, data: Any, batching: dict[str, Any]
) -> _Loader:
    """``loader=`` checked: iterable, alone (no arrays, no batching options), whole optimizer steps per epoch."""
    if X is not None or Y is not None or data is not None:
        raise TypeError("fit: loader= replaces X, Y (and data=): pass the arrays or a loader, not both")
    if not hasattr(loader, "__iter__"):
        raise TypeError(
            f"fit: loader must be iterable (a DataLoader, or any object iter() works on, re-iterated each epoch), "
            f"got {type(loader).__name__}"
        )
    if isinstance(loader, Iterator):  # not iter(loader): that can draw from a torch DataLoader's generator
        raise TypeError(
            "fit: loader is an iterator (it would be exhausted after one epoch); pass a re-iterable object, e.g. "
            "a DataLoader or a list of batches"
        )
    for name, (value, default) in batching.items():
        if value is not default:
            raise ValueError(
                f"fit: {name}={value!r} with loader=: the loader batches and shuffles (torch's DataLoader(dataset, "
                f"batch_size, shuffle, drop_last)); leave {name} at {default!r}"
            )
    steps = None
    if hasattr(loader, "__len__"):
        items = len(loader)
        if items == 0 or items % accumulate_steps:
            raise ValueError(
                f"fit: accumulate_steps={accumulate_steps} needs every optimizer step to see {accumulate_steps} "
                f"micro-batches, but the loader yields {items} per epoch (torch's loop would carry the leftover "
                f"micro-batches' gradients into the next epoch); change the loader's batch_size/drop_last or "
                f"accumulate_steps"
            )
        steps = items // accumulate_steps
    return _Loader(loader, short_form, steps)


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


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """Every ``fit`` option, typed and checked (built once by :meth:`create`); derived sizes as properties.

    PyTorch equivalent: none (the arguments of a hand-written loop: DataLoader settings, epochs, logging).
    """

    criterion: Any
    loss_fn: Any
    train: _Arrays | None  # None with a loader
    loader: _Loader | None
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
    keep_modes: bool
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
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch (None: a loader without len())."""
        if self.loader is not None:
            return self.loader.steps_per_epoch
        return _data.num_batches(self.train.n, self.batch, drop_last=self.drop_last)

    @property
    def data_key(self) -> jax.Array:
        return self.key if self.key is not None else jax.random.key(0)  # unused without shuffle

    def batches(self, epoch: int) -> list[np.ndarray]:
        return _data.batch_indices(
            self.train.n, self.batch, shuffle=self.shuffle, drop_last=self.drop_last, key=self.data_key, epoch=epoch
        )

    @classmethod
    def create(
        cls,
        model: Any,
        tx: Any,
        criterion: Any,
        X: Any,
        Y: Any,
        *,
        epochs: int,
        loss_fn: Callable[..., Any] | None,
        data: Sequence[Any] | None,
        loader: Any,
        batch_size: int | None,
        shuffle: bool,
        drop_last: bool,
        key: Any,
        accumulate_steps: int,
        autocast: str | None,
        keep_modes: bool,
        log_every: int,
        validation: tuple[Any, ...] | None,
        metrics: Mapping[str, Callable] | None,
        fused: bool | str,
        donate: bool,
        callbacks: Sequence[Any],
        checkpoint_dir: str | None,
        checkpoint_every: int | None,
        checkpoint_keep: int | None,
        resume_from: str | None,
        on_nonfinite: str,
        check_finite: bool,
        verbose: bool,
        progress: bool | None,
        mesh: Any,
        shard_min_size: int | None,
    ) -> FitOptions:
        """Every eager check of ``fit``'s arguments (the only ones: the pieces built from it check nothing)."""
        if not isinstance(model, nnx.Module):
            raise TypeError(f"fit: model must be a flax.nnx.Module, got {type(model).__name__}")
        _jit.as_gradient_transformation(tx, where="fit")
        if criterion is not None and loss_fn is not None:
            raise TypeError("fit: give a criterion (short form) or loss_fn= (general form), not both")
        if criterion is None and loss_fn is None:
            raise TypeError("fit: give a criterion(output, target) or loss_fn=f(model, *batch)")
        if criterion is not None and not callable(criterion):
            raise TypeError(f"fit: criterion must be callable(output, target), got {criterion!r}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"fit: loss_fn must be callable(model, *batch), got {loss_fn!r}")
        epochs = check_positive_int("epochs", epochs, where="fit")
        check_positive_int("log_every", log_every, where="fit")
        check_positive_int("accumulate_steps", accumulate_steps, where="fit")
        check_choice("on_nonfinite", on_nonfinite, ("raise", "stop", "ignore"), where="fit")
        check_choice("fused", fused, ("auto", True, False), where="fit")
        check_bool("check_finite", check_finite, where="fit")
        check_bool("donate", donate, where="fit")
        check_bool("keep_modes", keep_modes, where="fit")
        _jit.check_autocast(autocast, where="fit")
        shard_min_size = _jit.check_sharding(mesh, shard_min_size, where="fit")
        train_arrays, batch = None, 0
        if loader is not None:
            batching = dict(batch_size=(batch_size, None), shuffle=(shuffle, False), drop_last=(drop_last, False))
            batching["key"] = (key, None)
            if fused is True:
                raise ValueError(
                    "fit: fused=True with loader=: fused epochs run over in-memory arrays inside one program, a "
                    "loader's batches come from Python one at a time; use fused='auto' or False, or pass the arrays"
                )
            loader = _as_loader(
                loader,
                short_form=loss_fn is None,
                accumulate_steps=accumulate_steps,
                X=X,
                Y=Y,
                data=data,
                batching=batching,
            )
            if mesh is not None:
                raise ValueError(
                    "fit: mesh= with loader= is not supported: fit splits in-memory arrays across devices; pass the "
                    "arrays (X, Y or data=), or drive make_train_step(mesh=...) from your loader"
                )
        else:
            train_arrays = _training_arrays(criterion, X, Y, loss_fn, data)
            batch = _rows_per_step(train_arrays.n, batch_size, drop_last, accumulate_steps)
        n = 0 if train_arrays is None else train_arrays.n
        if mesh is not None:
            if fused is True and _device.process_count() > 1:
                raise ValueError(
                    f"fit: fused=True with mesh= needs a single process, got jax.process_count() == "
                    f"{_device.process_count()}: fused epochs draw every batch from the whole training set inside one "
                    f"program, but each process holds only its own rows; use fused='auto' or fused=False (one "
                    f"jitted step per global batch)"
                )
            for size in {min(batch, n), n % batch if not drop_last else 0} - {0}:
                _device.check_batch_size(size // accumulate_steps, mesh, where="fit")
        if shuffle:
            if key is None:
                raise ValueError("fit: shuffle=True needs key=jax.random.key(seed), got key=None")
            check_key("key", key, where="fit")
        checkpoints = _Checkpointing(checkpoint_dir, checkpoint_every, checkpoint_keep, resume_from)
        if checkpoints.every is not None:
            check_positive_int("checkpoint_every", checkpoints.every, where="fit")
            if checkpoints.directory is None:
                raise ValueError(f"fit: checkpoint_every={checkpoints.every} needs checkpoint_dir, got None")
        metrics = tuple(sorted((metrics or {}).items())) or None
        if metrics is not None and loss_fn is not None:
            raise TypeError("fit: metrics= need the short form (criterion, X, Y): metric(output, target)")
        for name, metric in metrics or ():
            if not callable(metric):
                raise TypeError(f"fit: metrics[{name!r}] must be callable(output, target), got {metric!r}")
        callbacks = tuple(callbacks)
        for cb in callbacks:
            if not hasattr(cb, "on_epoch_end"):
                raise TypeError(f"fit: callbacks must be fnml.train.Callback objects, got {cb!r}")
        return cls(
            criterion=criterion,
            loss_fn=loss_fn,
            train=train_arrays,
            loader=loader,
            validation=_validation_arrays(validation, loss_fn is not None),
            metrics=metrics,
            epochs=epochs,
            batch=batch,
            full_batch=batch_size is None,
            shuffle=shuffle,
            drop_last=drop_last,
            key=key,
            accumulate_steps=accumulate_steps,
            autocast=autocast,
            keep_modes=bool(keep_modes),
            log_every=log_every,
            verbose=verbose,
            progress=progress,
            fused=fused,
            donate=donate,
            mesh=mesh,
            shard_min_size=shard_min_size,
            check_finite=check_finite,
            on_nonfinite=on_nonfinite,
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


def _start(plan: FitOptions, fresh: Any) -> tuple[Any, int, _Record]:
    """The fresh state, or the newest valid checkpoint of ``resume_from`` (over it) with its epoch and records.

    Modes: torch's loop calls ``model.train()`` at each epoch's start; validation (``pure_eval_step``) runs a
    copy in eval mode and never touches the state's modes, so setting train mode on the state once is the
    same. ``keep_modes`` keeps the modes recorded from the user's model. A resumed state takes the
    template's graph definition, hence these modes too.
    """
    state = fresh if plan.keep_modes else fresh.train()
    record = _Record([], {"epoch": [], "loss": [], "mean_loss": []})
    resume_from = plan.checkpoints.resume_from
    if resume_from is None:
        return state, 0, record
    state, meta = resume_fit_checkpoint(resume_from, template=state)  # corrupt newer steps skipped, warned
    start_epoch = int(meta.get("epoch", 0))
    record.losses = [float(v) for v in meta.get("losses", [])]
    record.history.update({k: list(v) for k, v in meta.get("history", {}).items()})
    saved_key = meta.get("data_key")
    if plan.shuffle and saved_key is not None and key_data(plan.key) != saved_key:
        raise ValueError(
            f"fit: key={plan.key!r} differs from the data-order key saved in {resume_from!r} ({saved_key}); "
            f"pass the key of the original run so the resumed epochs see the same batches"
        )
    if start_epoch > plan.epochs:
        raise ValueError(f"fit: the checkpoint in {resume_from!r} is at epoch {start_epoch} > epochs={plan.epochs}")
    return state, start_epoch, record


# ---- fit, step 3: plan the chunks and build the compiled pieces ----------------------------------


def _chunk_epochs(plan: FitOptions) -> int:
    """Epochs per chunk: 1 with per-epoch work or a loader, else up to the next log line (and checkpoint)."""
    if plan.validation is not None or plan.callbacks or plan.loader is not None:
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


def _compile(plan: FitOptions, model: nnx.Module, chunk_epochs: int) -> _Compiled:
    """The jitted step, the fused epochs (when the fused rule says so) and the evaluation, memoised."""
    loss = dict(criterion=plan.criterion, loss_fn=plan.loss_fn)
    shared = dict(accumulate_steps=plan.accumulate_steps, autocast=plan.autocast)
    mesh = dict(mesh=plan.mesh, shard_min_size=plan.shard_min_size)
    use_fused = (
        plan.loader is None  # a loader's batches come from the host, one step at a time
        and (plan.mesh is None or _device.process_count() == 1)  # a mesh: fused epochs need the whole data set
        and not plan.check_finite
        and _choose_fused(plan.fused, model, chunk_epochs * plan.steps_per_epoch)
    )
    streamed = plan.loader is not None and plan.accumulate_steps > 1  # a loader item is one micro-batch
    step = _cached(
        _build_step, **loss, donate=plan.donate, check_finite=plan.check_finite, streamed=streamed, **mesh, **shared
    )
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
            evaluate = _cached(_jit.jit_eval_step, loss_fn=plan.loss_fn, autocast=plan.autocast)
        else:
            evaluate = _cached(
                _jit.jit_eval_step, criterion=plan.criterion, metrics=plan.metrics, autocast=plan.autocast
            )
    return _Compiled(step, fused, evaluate)


# ---- fit, step 4: run one chunk of epochs, fused or step by step ---------------------------------


def _run_loader_epoch(plan: FitOptions, compiled: _Compiled, state: Any, epoch: int) -> tuple:
    """One epoch over the loader, one micro-batch per call; returns (state, losses, state before a bad step).

    Each optimizer step's loss is the mean of its N micro-batch losses (as ``accumulate_steps`` on arrays).
    Unless ``on_nonfinite="ignore"``, every step's loss is checked as it comes (the loader cannot be
    replayed in general): at the first non-finite one the epoch stops, and the state before that step
    is returned beside the losses so far (the bad one last).
    """
    check = plan.on_nonfinite != "ignore"
    n = plan.accumulate_steps
    losses, micro, before, count = [], [], state, 0
    for count, item in enumerate(plan.loader.items(epoch), start=1):
        if not micro and check:
            before = jax.tree.map(jnp.copy, state) if plan.donate else state
        state, loss = compiled.step(state, *plan.loader.batch(item, count - 1, epoch))
        micro.append(loss)
        if len(micro) == n:
            losses.append(micro[0] if n == 1 else jnp.mean(jnp.stack(micro)))
            micro = []
            if check and not np.isfinite(float(losses[-1])):
                return state, np.asarray(jnp.stack(losses)), before
    if count == 0 or micro:
        raise ValueError(
            f"fit: epoch {epoch + 1}: the loader yielded {count} micro-batches, "
            + ("none" if count == 0 else f"not a multiple of accumulate_steps={n}")
            + " (torch's loop would carry the leftover micro-batches' gradients into the next epoch); change the "
            "loader's batch_size/drop_last or accumulate_steps"
        )
    return state, np.asarray(jnp.stack(losses)), None


def _run_chunk(plan: FitOptions, compiled: _Compiled, state: Any, epochs: list[int]) -> tuple:
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


def _replay(plan: FitOptions, compiled: _Compiled, state: Any, epochs: list[int], steps: int) -> Any:
    """``steps`` single steps from ``state`` over the chunk's batches: the exact state before a bad step."""
    taken = 0
    for epoch in epochs:
        for index in plan.batches(epoch):
            if taken == steps:
                return state
            state, _ = compiled.step(state, *plan.train.batch(index))
            taken += 1
    return state


def _result(state: Any, record: _Record, stop_reason: str | None = None) -> FitResult:
    return FitResult(
        model=state.model(),
        losses=np.asarray(record.losses, dtype=np.float64).reshape(-1),
        history={k: np.asarray(v) for k, v in record.history.items()},
        state=state,
        stop_reason=stop_reason,
    )


def _nonfinite_outcome(plan, compiled, start_state, epochs, chunk_losses, record, bar, *, before=None) -> FitResult:
    """The first non-finite loss of a chunk: raise NonFiniteLossError or return the last finite state.

    ``before``: the state before the bad step when the caller kept it (a loader's epoch); else it is
    replayed from ``start_state`` over the chunk's batches.
    """
    flat = chunk_losses.reshape(-1)
    bad = int(np.argmax(~np.isfinite(flat)))
    replay = before if before is not None else _replay(plan, compiled, start_state, epochs, bad)
    good = _Record(record.losses + flat[:bad].tolist(), record.history)
    bad_step = len(good.losses) + 1
    bad_epoch = epochs[0] + 1 if plan.loader is not None else epochs[bad // plan.steps_per_epoch] + 1
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


def _record_epoch(
    plan, compiled, state, done: int, row: np.ndarray, record: _Record, bar, *, epochs_after: int = 0
) -> tuple:
    """Book epoch ``done`` (1-based); returns (state, stop reason or None). Callbacks run here, in order.

    ``state`` is the state at the end of the chunk, ``epochs_after`` epochs past ``done`` (fused chunks).
    """
    record.losses.extend(row.tolist())
    logs = {"loss": float(row[-1]), "mean_loss": float(np.mean(row))}
    logs.update(_lr_logs(state, epochs_after * plan.steps_per_epoch if epochs_after else 0))
    if compiled.evaluate is not None:
        values = jax.device_get(compiled.evaluate(state, *plan.validation.batch()))
        logs.update({f"val_{k}": float(v) for k, v in values.items() if k != "aux"})
    record.history["epoch"].append(done)
    for name, value in logs.items():
        record.history.setdefault(name, []).append(value)
    if plan.verbose and done % plan.log_every == 0:
        bar.print(_format_line(done, plan.epochs, logs, show_lr=_lr_is_scheduled(state)))
    stop_reason = None
    for cb in plan.callbacks:
        action = cb.on_epoch_end(done, logs, state)
        if isinstance(action, Stop):
            stop_reason = action.reason
            if action.state is not None:
                state = action.state
    ckpt = plan.checkpoints
    if ckpt.directory is not None and ckpt.every is not None and done % ckpt.every == 0:
        _save(plan, state, done, record)
    return state, stop_reason


def _lr_logs(state: Any, updates_after: int) -> dict[str, float]:
    """``{"lr": ...}`` (``{"lr/<group>": ...}`` per param group): the lr the next epoch starts with.

    torch's ``scheduler.get_last_lr()`` printed after an epoch's ``scheduler.step()`` calls; empty when the
    optimizer is not an ``fnml.optim`` one (its lr cannot be read off the state: ``schedules.current_lr``).
    ``state`` may be ``updates_after`` optimizer updates past the epoch (the end of a fused chunk of
    epochs): the step counters are wound back by that many first, so each epoch books its own lr.
    """
    from fnml import schedules

    if schedules._recorded_lr(state.tx) is None:
        return {}
    if updates_after:

        def wind_back(path: tuple, leaf: Any) -> Any:
            is_count = path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "count"
            return leaf - updates_after if is_count else leaf

        opt_state = jax.tree_util.tree_map_with_path(wind_back, state.opt_state)
        state = state.replace(opt_state=opt_state, step=state.step - updates_after)
    lr = jax.device_get(schedules.current_lr(state))
    if isinstance(lr, dict):
        return {f"lr/{label}": float(value) for label, value in lr.items()}
    return {"lr": float(lr)}


def _lr_is_scheduled(state: Any) -> bool:
    """Whether the lr changes over training (a schedule, in some param group): then fit's line shows it."""
    from fnml import schedules

    lr = schedules._recorded_lr(state.tx)
    values = lr.values() if isinstance(lr, dict) else [lr]
    return any(callable(value) or isinstance(value, schedules.ReduceLROnPlateau) for value in values)


def _save(plan: FitOptions, state: Any, epoch: int, record: _Record) -> None:
    """fit's checkpoint: the state plus what an exact resume needs (epoch, data-order key, loss history)."""
    ckpt = plan.checkpoints
    save_fit_checkpoint(
        ckpt.directory, state, epoch=epoch, key=plan.key, losses=record.losses, history=record.history, keep=ckpt.keep
    )


# ---- fit, step 6: checkpoint on interrupt -------------------------------------------------------


def _save_on_interrupt(plan: FitOptions, safe: tuple, record: _Record, bar) -> None:
    """Ctrl-C: save the last chunk-boundary state and the records up to it (what an exact resume needs)."""
    directory = plan.checkpoints.directory
    if directory is None or safe is None:
        return
    safe_state, safe_epoch, lengths = safe
    kept = record.truncated(lengths)
    _save(plan, safe_state, safe_epoch, kept)
    if plan.verbose:
        bar.print(
            f"fit: interrupted; saved the state after epoch {safe_epoch} (step {int(safe_state.step)}) to {directory!r}"
        )


# ---- the pipeline -------------------------------------------------------------------------------


def run(plan: FitOptions, fresh: Any, model: nnx.Module) -> FitResult:
    """Train from ``fresh`` (``TrainState.create(model, tx)``) as ``plan`` says; the steps above, in order."""
    state, epoch, record = _start(plan, fresh)
    chunk_epochs = _chunk_epochs(plan)
    compiled = _compile(plan, model, chunk_epochs)

    per_epoch = plan.steps_per_epoch or 0  # 0: a loader without len() (no progress bar: no total)
    total_steps = plan.epochs * per_epoch
    show_bar = plan.progress
    if show_bar is None:
        show_bar = plan.verbose and sys.stdout.isatty() and total_steps >= _PROGRESS_MIN_STEPS
    bar = _Progress(bool(show_bar) and per_epoch > 0, total_steps, epoch * per_epoch)
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
            before = None
            if plan.loader is not None:  # chunks of one epoch
                state, row, before = _run_loader_epoch(plan, compiled, state, epoch)
                chunk_losses = row[None]
            else:
                state, chunk_losses = _run_chunk(plan, compiled, state, epoch_list)
            if check and not np.all(np.isfinite(chunk_losses)):
                return _nonfinite_outcome(
                    plan, compiled, start_state, epoch_list, chunk_losses, record, bar, before=before
                )
            for offset, e in enumerate(epoch_list):
                state, reason = _record_epoch(
                    plan, compiled, state, e + 1, chunk_losses[offset], record, bar, epochs_after=end - (e + 1)
                )
                stop_reason = reason or stop_reason
            bar.advance(chunk_losses.size)
            epoch = end
            if stop_reason is not None:
                if plan.verbose:
                    bar.print(stop_reason)
                break
    except KeyboardInterrupt:
        _save_on_interrupt(plan, safe, record, bar)
        raise
    finally:
        bar.close()
    if plan.checkpoints.directory is not None and latest_step_or_none(plan.checkpoints.directory) != int(state.step):
        _save(plan, state, epoch, record)
    return _result(state, record, stop_reason=stop_reason)
