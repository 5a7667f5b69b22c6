"""Checkpoints of a full ``train.TrainState`` with orbax-checkpoint: atomic saves, keep-last-N, exact resume.

PyTorch equivalent: ``torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
"epoch": epoch}, path)`` / ``torch.load`` + ``load_state_dict``.

What is saved: the parameters, the non-parameter state (BatchNorm statistics, RNG keys and counters),
the optimizer state and the step counter, plus a JSON ``metadata`` dict (``train.fit`` stores the
completed epoch, the data-order key and the loss history there, which is what an exact resume needs).
The static parts (the module's graph definition and the optimizer's functions) are not saved: restore
needs a ``template`` state built the same way (``TrainState.create(model, tx)``).

Atomicity comes from orbax: a step is written into a temporary directory and renamed to ``<step>``
only when complete, so a crash mid-save leaves the previous checkpoint loadable and the partial one
invisible. orbax is imported lazily: ``import fnml.train`` stays fast.

Integrity: after orbax has finished a step, :func:`save_checkpoint` writes ``fnml_manifest.json`` into
the step directory (atomically: a temporary file renamed into place) with the size and SHA-256 of every
file of the step. Restoring verifies it: a step whose files were truncated, altered, added or removed
raises :class:`CorruptCheckpointError` naming the file. With ``step=None`` (the latest),
:func:`restore_checkpoint` and :func:`checkpoint_metadata` skip corrupt steps with a
:class:`CorruptCheckpointWarning` and use the newest good one (:func:`latest_valid_step`). A step without
a manifest (written by another tool, or killed between orbax's commit and the manifest) is accepted
as orbax committed it. Nothing is ever unpickled: orbax stores arrays with tensorstore and metadata as
JSON / msgpack.

>>> import tempfile
>>> from flax import nnx
>>> from fnml import checkpoint, layers, optim, train
>>> state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.adam(lr=1e-3))
>>> folder = tempfile.mkdtemp()
>>> _ = checkpoint.save_checkpoint(folder, state, step=0, keep=3)
>>> restored = checkpoint.restore_checkpoint(folder, template=state)   # latest step
>>> checkpoint.all_steps(folder), int(restored.step)
([0], 0)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CorruptCheckpointError",
    "CorruptCheckpointWarning",
    "all_steps",
    "checkpoint_metadata",
    "latest_step",
    "latest_valid_step",
    "restore_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
]

MANIFEST = "fnml_manifest.json"


class CorruptCheckpointError(ValueError):
    """A checkpoint step whose files do not match its manifest (truncated, altered, missing, extra)."""


class CorruptCheckpointWarning(UserWarning):
    """A corrupt step was skipped and an older good one used."""


def _ocp():
    """orbax.checkpoint, imported on first use (it costs ~0.5 s)."""
    import orbax.checkpoint as ocp

    return ocp


def _is_key(leaf: Any) -> bool:
    """A typed jax PRNG key array (``jax.random.key``)."""
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _key_name(entry: Any) -> str:
    """One path entry of ``tree_flatten_with_path`` as a plain string."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _flat(tree: Any) -> tuple[list[str], list[Any], Any]:
    """Leaves of ``tree`` with '/'-joined path names, and the treedef to rebuild it."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = ["/".join(_key_name(e) for e in path) or "value" for path, _ in with_path]
    if len(set(names)) != len(names):  # pragma: no cover - exotic pytrees only
        names = [f"{i:05d}" for i in range(len(names))]
    return names, [leaf for _, leaf in with_path], treedef


def _to_storable(leaf: Any) -> np.ndarray:
    """Host numpy array; typed keys become their uint32 key data (orbax cannot store key dtypes).

    An array split across processes (``shard_min_size`` over several hosts) is gathered first: a
    collective, so every process must save (as orbax requires anyway).
    """
    if _is_key(leaf):
        leaf = jax.random.key_data(leaf)
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and not leaf.is_fully_replicated:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)


def _isdir_everywhere(path: str) -> bool:
    """``os.path.isdir(path)``, as process 0 sees it when there are several processes.

    Every process must take the same branch (orbax's managers synchronise all processes at
    construction), and a directory that process 0 creates in its save could otherwise already exist
    for a process that looks a moment later: process 0's answer is broadcast to all (a collective).
    """
    exists = os.path.isdir(path)
    if jax.process_count() == 1:
        return exists
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(exists)))


def _nest(names: list[str], values: list[Any]) -> dict[str, Any]:
    """{'a/b/c': v} -> {'a': {'b': {'c': v}}}, the nested dict orbax stores readably."""
    root: dict[str, Any] = {}
    for name, value in zip(names, values):
        node = root
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return root


def _get(nested: dict[str, Any], name: str) -> Any:
    node = nested
    for part in name.split("/"):
        node = node[part]
    return node


def _check_directory(directory: Any, *, where: str) -> str:
    path = os.fspath(directory)
    if not _isdir_everywhere(path):
        raise FileNotFoundError(f"{where}: checkpoint directory {path!r} does not exist")
    return path


def _manager(path: str, *, keep: int | None = None, create: bool = False):
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(
        create=create,
        enable_async_checkpointing=False,
        preservation_policy=ocp.checkpoint_managers.LatestN(n=keep) if keep else None,
    )
    # Registered handlers: orbax can then read item metadata (and does not log "could not be restored").
    handlers = {"state": ocp.StandardCheckpointHandler(), "metadata": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(os.path.abspath(path), options=options, item_handlers=handlers)


def _file_digests(step_dir: str) -> dict[str, list]:
    """{relative path: [size, sha256 hex]} of every regular file under ``step_dir`` but the manifest."""
    out = {}
    for root, _, files in os.walk(step_dir):
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, step_dir)
            if rel == MANIFEST or rel.startswith(MANIFEST + "."):
                continue
            digest = hashlib.sha256()
            with open(full, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            out[rel] = [os.path.getsize(full), digest.hexdigest()]
    return out


def _write_manifest(step_dir: str) -> None:
    """Write the manifest atomically (temporary file, fsync, rename): it exists complete or not at all."""
    tmp = os.path.join(step_dir, f"{MANIFEST}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump({"format": 1, "files": _file_digests(step_dir)}, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, os.path.join(step_dir, MANIFEST))


def verify_checkpoint(directory: Any, *, step: int) -> bool:
    """Check ``step``'s files against its manifest; True if verified, False if it has no manifest.

    PyTorch equivalent: none (torch has no checkpoint integrity check).

    Raises :class:`CorruptCheckpointError` naming the first truncated / altered / missing / extra file.

    >>> import tempfile
    >>> from flax import nnx
    >>> from fnml import checkpoint, layers, optim, train
    >>> state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
    >>> folder = tempfile.mkdtemp()
    >>> _ = checkpoint.save_checkpoint(folder, state, step=40)
    >>> checkpoint.verify_checkpoint(folder, step=40)
    True
    """
    path = _check_directory(directory, where="verify_checkpoint")
    step_dir = os.path.join(path, str(int(step)))
    if not os.path.isdir(step_dir):
        raise ValueError(f"verify_checkpoint: step {step} is not in {path!r} (no directory {step_dir!r})")
    manifest_path = os.path.join(step_dir, MANIFEST)
    if not os.path.exists(manifest_path):
        return False
    try:
        with open(manifest_path) as handle:
            expected = json.load(handle)["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        message = f"checkpoint {step_dir!r}: unreadable manifest {MANIFEST} ({error})"
        raise CorruptCheckpointError(message) from None
    actual = _file_digests(step_dir)
    for rel, (size, digest) in sorted(expected.items()):
        if rel not in actual:
            raise CorruptCheckpointError(f"checkpoint {step_dir!r}: file {rel!r} is missing")
        if actual[rel][0] != size:
            raise CorruptCheckpointError(
                f"checkpoint {step_dir!r}: file {rel!r} has {actual[rel][0]} bytes, the manifest says {size} "
                f"(truncated or altered)"
            )
        if actual[rel][1] != digest:
            raise CorruptCheckpointError(f"checkpoint {step_dir!r}: file {rel!r} was altered (sha256 mismatch)")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise CorruptCheckpointError(f"checkpoint {step_dir!r}: unexpected files {extra[:5]} not in the manifest")
    return True


def latest_valid_step(directory: Any) -> int:
    """The newest step that passes :func:`verify_checkpoint`; corrupt newer ones are skipped with a warning.

    PyTorch equivalent: none (torch has no checkpoint integrity check).

    Raises ``ValueError`` when ``directory`` holds no checkpoint and :class:`CorruptCheckpointError`
    when every step is corrupt.
    """
    path = _check_directory(directory, where="latest_valid_step")
    steps = all_steps(path)
    if not steps:
        raise ValueError(f"latest_valid_step: {path!r} is not a checkpoint directory (no completed checkpoint steps)")
    problems = []
    for candidate in reversed(steps):
        try:
            verify_checkpoint(path, step=candidate)
        except CorruptCheckpointError as error:
            problems.append(str(error))
            warnings.warn(f"{error}; trying the previous step", CorruptCheckpointWarning, stacklevel=2)
            continue
        return candidate
    raise CorruptCheckpointError(f"every checkpoint step in {path!r} is corrupt: " + "; ".join(problems))


def all_steps(directory: Any) -> list[int]:
    """The completed checkpoint steps in ``directory``, ascending (temporary/partial saves excluded).

    PyTorch equivalent: none (``torch.save`` files are listed by hand).
    """
    path = _check_directory(directory, where="all_steps")
    with _manager(path) as manager:
        return sorted(int(s) for s in manager.all_steps())


def latest_step(directory: Any) -> int | None:
    """The newest completed step in ``directory`` or ``None`` when it holds no checkpoint.

    PyTorch equivalent: none (``torch.save`` files are listed by hand).
    """
    steps = all_steps(directory)
    return steps[-1] if steps else None


def _without_pending_gradients(state: Any, *, where: str) -> Any:
    """A ``TrainState`` as checkpoints hold it: no gradient sum of a streamed accumulation.

    torch's checkpoint holds no ``.grad`` either; a zero sum (between two optimizer steps) is dropped, so
    the checkpoint restores into ``TrainState.create``'s template. Pending gradients would be lost: refused.
    """
    grads = getattr(state, "grads", None)
    if grads is None or not hasattr(state, "zero_grad"):
        return state
    pending = int(state.micro)
    if pending:
        raise ValueError(
            f"{where}: the state holds the gradients of {pending} micro-batches of a streamed accumulation "
            f"(state.micro={pending}) that no optimizer step has applied yet; a checkpoint does not keep them "
            f"(torch's has no .grad either): save after the update (state.micro == 0), or drop them with "
            f"state.zero_grad()"
        )
    return state.zero_grad()


def save_checkpoint(
    directory: Any, state: Any, *, step: int, metadata: dict[str, Any] | None = None, keep: int | None = None
) -> str:
    """Save ``state`` (a ``TrainState`` or any pytree of arrays) as step ``step`` of ``directory``.

    PyTorch equivalent: ``torch.save({...state_dicts..., "epoch": epoch}, f"{directory}/{step}.pt")``.

    Atomic (orbax writes a temporary directory and renames it when complete). ``metadata`` is a
    JSON-serialisable dict stored beside the arrays (read it back with :func:`checkpoint_metadata`).
    ``keep``: keep only the newest ``keep`` steps (older ones are deleted after a successful save).
    Typed PRNG keys are stored as their key data and re-wrapped on restore. Returns the step's path.
    Several processes (``fnml.device.init_distributed``, torch's ``if rank == 0: torch.save(...)``):
    EVERY process calls it with the same ``directory`` on a shared file system; arrays split across
    processes are gathered, process 0 writes, and the call returns on every process once the step
    (manifest included) is complete. A checkpoint does not record the process count: one written by
    2 processes restores in 1 and vice versa (:func:`restore_checkpoint` returns host-local arrays;
    ``fit(mesh=...)`` / ``fnml.device.replicate`` place them).

    >>> import os, tempfile
    >>> from flax import nnx
    >>> from fnml import checkpoint, layers, optim, train
    >>> state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
    >>> folder = tempfile.mkdtemp()
    >>> path = checkpoint.save_checkpoint(folder, state, step=int(state.step), keep=3, metadata={"epoch": 0})
    >>> os.path.basename(path), checkpoint.checkpoint_metadata(folder)
    ('0', {'epoch': 0})
    """
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
        raise ValueError(f"save_checkpoint: step must be a non-negative integer, got step={step!r}")
    if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
        raise ValueError(f"save_checkpoint: keep must be a positive integer or None, got keep={keep!r}")
    state = _without_pending_gradients(state, where="save_checkpoint")
    ocp = _ocp()
    names, leaves, _ = _flat(state)
    # Zero-size arrays cannot be stored by orbax; they are rebuilt from the template on restore.
    stored = {n: _to_storable(leaf) for n, leaf in zip(names, leaves) if np.size(leaf) > 0 or _is_key(leaf)}
    path = os.fspath(directory)
    with _manager(path, keep=keep, create=True) as manager:
        if int(step) in manager.all_steps():
            raise ValueError(f"save_checkpoint: step {step} already exists in {path!r}")
        items = {"state": ocp.args.StandardSave(_nest(list(stored), list(stored.values())))}
        items["metadata"] = ocp.args.JsonSave(dict(metadata or {}))
        manager.save(int(step), args=ocp.args.Composite(**items))
        manager.wait_until_finished()
    step_dir = os.path.join(os.path.abspath(path), str(int(step)))
    if jax.process_count() == 1:
        _write_manifest(step_dir)
    else:  # one writer (orbax wrote the step from process 0 too); nobody returns before the manifest exists
        from jax.experimental import multihost_utils

        if jax.process_index() == 0:
            _write_manifest(step_dir)
        multihost_utils.sync_global_devices(f"fnml save_checkpoint {step_dir} manifest")
    return step_dir


def _resolve_step(path: str, step: int | None, *, where: str) -> int:
    """An explicit step (verified: corrupt raises) or the newest valid one (corrupt ones skipped)."""
    steps = all_steps(path)
    if not steps:
        raise ValueError(f"{where}: {path!r} is not a checkpoint directory (no completed checkpoint steps in it)")
    if step is None:
        return latest_valid_step(path)
    if step not in steps:
        raise ValueError(f"{where}: step {step} is not in {path!r}; available steps: {steps}")
    verify_checkpoint(path, step=int(step))
    return int(step)


def _read(read: Any, path: str, step: int) -> Any:
    """Run an orbax read; its low-level failures (undecodable / truncated files) name the step."""
    try:
        return read()
    except (ValueError, OSError, KeyError, TypeError, UnicodeError) as error:
        raise CorruptCheckpointError(
            f"checkpoint {os.path.join(path, str(step))!r} cannot be read ({type(error).__name__}: "
            f"{str(error)[:200]}); it has no manifest to say which file is damaged"
        ) from error


def restore_checkpoint(directory: Any, *, template: Any, step: int | None = None) -> Any:
    """Restore the state saved at ``step`` (default: the latest) into the structure of ``template``.

    PyTorch equivalent: ``ckpt = torch.load(path, weights_only=True); model.load_state_dict(ckpt["model"]);
    optimizer.load_state_dict(ckpt["optimizer"])``.

    ``template``: a state with the same structure, e.g. ``TrainState.create(model, tx)`` for the same
    model and optimizer; its static parts (graph definition, optimizer functions) and dtypes are used.
    Errors name the path: a missing directory, a directory without checkpoints, an unknown step, or a
    checkpoint whose arrays do not match the template. Files are verified against the step's manifest
    first (:class:`CorruptCheckpointError`); with ``step=None`` a corrupt newest step is skipped with a
    :class:`CorruptCheckpointWarning` and the newest good one is restored.

    >>> import tempfile
    >>> from flax import nnx
    >>> from fnml import checkpoint, layers, optim, train
    >>> template = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
    >>> folder = tempfile.mkdtemp()
    >>> _ = checkpoint.save_checkpoint(folder, template.replace(step=template.step + 7), step=7)
    >>> int(checkpoint.restore_checkpoint(folder, template=template).step)
    7
    """
    path = _check_directory(directory, where="restore_checkpoint")
    chosen = _resolve_step(path, step, where="restore_checkpoint")
    ocp = _ocp()
    names, leaves, treedef = _flat(template)
    storable = {n: _to_storable(leaf) for n, leaf in zip(names, leaves) if np.size(leaf) > 0 or _is_key(leaf)}
    with _manager(path) as manager:
        saved = _read(lambda: manager.item_metadata(chosen)["state"], path, chosen)
        try:
            saved_names, _, _ = _flat(saved)
        except Exception:  # pragma: no cover - metadata format of a foreign checkpoint
            saved_names = None
        if saved_names is not None and sorted(saved_names) != sorted(storable):
            missing = sorted(set(storable) - set(saved_names))[:5]
            extra = sorted(set(saved_names) - set(storable))[:5]
            raise ValueError(
                f"restore_checkpoint: the checkpoint at {path!r} step {chosen} does not match the template; "
                f"missing in checkpoint: {missing}, not in template: {extra}"
            )
        target = _nest(list(storable), list(storable.values()))
        restored = _read(
            lambda: manager.restore(chosen, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))),
            path,
            chosen,
        )
    values = restored["state"]
    out = []
    for name, leaf in zip(names, leaves):
        if name not in storable:
            out.append(jnp.zeros(np.shape(leaf), dtype=leaf.dtype))
            continue
        value = np.asarray(_get(values, name))
        if value.shape != storable[name].shape:
            raise ValueError(
                f"restore_checkpoint: {name} has shape {value.shape} in {path!r} step {chosen}, "
                f"the template expects {storable[name].shape}"
            )
        if _is_key(leaf):
            out.append(jax.random.wrap_key_data(jnp.asarray(value), impl=jax.random.key_impl(leaf)))
        else:
            out.append(jnp.asarray(value, dtype=leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def checkpoint_metadata(directory: Any, *, step: int | None = None) -> dict[str, Any]:
    """The JSON metadata dict saved with ``step`` (default: the latest).

    PyTorch equivalent: the extra entries of a ``torch.save({...})`` checkpoint dict (epoch, losses).
    """
    path = _check_directory(directory, where="checkpoint_metadata")
    chosen = _resolve_step(path, step, where="checkpoint_metadata")
    ocp = _ocp()
    with _manager(path) as manager:
        restored = _read(
            lambda: manager.restore(chosen, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())), path, chosen
        )
    return dict(restored["metadata"] or {})


# ----------------------------------------------------------------------------------------------
# fit's checkpoints: the state plus what an exact resume needs (epoch, data-order key, loss history)
# ----------------------------------------------------------------------------------------------


def key_data(key: Any) -> list[int] | None:
    """A jax random key (typed or raw) as JSON-able ints; None stays None."""
    if key is None:
        return None
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(v) for v in np.asarray(key).ravel()]


def latest_step_or_none(directory: Any) -> int | None:
    """Latest checkpoint step in ``directory``, None when it does not exist yet or holds none."""
    try:
        return latest_step(directory)
    except FileNotFoundError:
        return None


def save_fit_checkpoint(
    directory: Any, state: Any, *, epoch: int, key: Any, losses: Any, history: dict, keep: int | None
) -> None:
    """``fit``'s checkpoint of ``state`` after ``epoch`` epochs (skipped when that step is already saved)."""
    metadata = {
        "epoch": int(epoch),
        "data_key": key_data(key),
        "losses": [float(v) for v in losses],
        "history": {k: [float(x) for x in v] for k, v in history.items()},
    }
    if latest_step_or_none(directory) == int(state.step):
        return
    save_checkpoint(directory, state, step=int(state.step), metadata=metadata, keep=keep)


def resume_fit_checkpoint(directory: Any, *, template: Any) -> tuple[Any, dict[str, Any]]:
    """The newest valid checkpoint of ``directory`` restored over ``template``, and its metadata.

    Corrupt newer steps are skipped with a :class:`CorruptCheckpointWarning`; a missing directory raises
    ``FileNotFoundError`` naming it (``fit(resume_from=...)``'s argument).
    """
    if not os.path.isdir(os.fspath(directory)):
        raise FileNotFoundError(
            f"fit: resume_from={os.fspath(directory)!r} does not exist (expected a "
            f"checkpoint directory written by fit or save_checkpoint)"
        )
    chosen = latest_valid_step(directory)
    state = restore_checkpoint(directory, template=template, step=chosen)
    return state, checkpoint_metadata(directory, step=chosen)
