"""Devices: naming, lookup and moving arrays, pytrees and NNX modules between them.

PyTorch equivalent: ``torch.device``, ``torch.cuda.is_available()``, ``torch.cuda.device_count()``,
``tensor.to(device)`` / ``module.to(device)``, ``with torch.device(...)`` / ``torch.set_default_device``.

Torch-style names are accepted everywhere a device is: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"gpu"``,
``"gpu:N"``, ``"tpu"``, ``"tpu:N"`` (``"cuda"`` and ``"gpu"`` both mean JAX's GPU platform), a
``jax.Device``, or a ``torch.device``. The index counts the devices of this process, like
``cuda:N`` in torch.

Sections of this file:

1. naming and lookup      ``device``, ``cuda_is_available``, ``device_count``, ``available_devices``,
                          ``describe``, ``device_name``
2. placement              ``to``, ``default_device``
3. multi-device           ``mesh``, ``batch_sharding``, ``replicated_sharding``, ``check_batch_size``,
                          ``shard_batch``, ``global_batch``, ``replicate``, ``param_shardings``,
                          ``shard_params``, ``data_parallel``, ``mesh_jit``
4. processes              ``init_distributed``, ``shutdown_distributed``, ``process_index``,
                          ``process_count``, ``is_main_process``, ``to_host``

Data parallelism is ``jax.sharding`` only: the batch is split along a mesh's "data" axis, parameters
are replicated, and a jitted step over those inputs is partitioned by XLA, which inserts the gradient
all-reduce itself (no hand-written communication). Every batch reduction inside the step, BatchNorm's
statistics included, is over the GLOBAL batch: the same numbers as one device (SyncBatchNorm semantics).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from fnml import _torch

__all__ = [
    "DATA_AXIS",
    "MODEL_AXIS",
    "DeviceNotFoundError",
    "available_devices",
    "batch_sharding",
    "check_batch_size",
    "cuda_is_available",
    "data_parallel",
    "default_device",
    "describe",
    "device",
    "device_count",
    "device_name",
    "global_batch",
    "init_distributed",
    "is_main_process",
    "mesh",
    "mesh_jit",
    "param_shardings",
    "process_count",
    "process_index",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "shard_params",
    "shutdown_distributed",
    "to",
    "to_host",
]

# torch-style kind -> JAX platform name.
_KINDS = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "tpu": "tpu"}
_SPEC = re.compile(r"^(?P<kind>[a-z]+)(?::(?P<index>\d+))?$")
_ACCEPTED = '"cpu", "cuda", "cuda:N", "gpu", "gpu:N", "tpu", "tpu:N", a jax.Device or a torch.device'


class DeviceNotFoundError(RuntimeError):
    """The requested device kind or index does not exist on this machine."""


# ----------------------------------------------------------------------------------------------
# 1. naming and lookup
# ----------------------------------------------------------------------------------------------


def _platform_devices(platform: str) -> list[jax.Device]:
    """This process's devices of one JAX platform; [] when that backend is absent or fails to start."""
    try:
        return list(jax.local_devices(backend=platform))
    except RuntimeError:  # "Unknown backend", "failed to initialize": the platform is not here
        return []


def available_devices() -> list[jax.Device]:
    """Every device of this process, across CPU, GPU and TPU backends.

    PyTorch equivalent: none directly (``torch.cuda.device_count()`` plus the CPU).

    >>> [device_name(d) for d in available_devices()]  # ['cpu:0'] here; ['cpu:0', 'cuda:0', ...] with GPUs
    ['cpu:0'...]
    """
    found: list[jax.Device] = []
    for platform in ("cpu", "gpu", "tpu"):
        found.extend(_platform_devices(platform))
    return found


def device_name(dev: jax.Device) -> str:
    """The torch-style name of a ``jax.Device``: ``"cpu:0"``, ``"cuda:1"``, ``"tpu:0"``.

    PyTorch equivalent: ``str(torch.device(...))``.
    """
    kind = "cuda" if dev.platform == "gpu" else dev.platform
    index = _platform_devices(dev.platform).index(dev) if dev in _platform_devices(dev.platform) else dev.id
    return f"{kind}:{index}"


def describe() -> str:
    """A short text of the devices that exist and the default one.

    PyTorch equivalent: none (what ``torch.cuda.is_available()``/``get_device_name`` tell together).

    >>> print(describe())  # on a CPU-only machine: "cpu: 1 device (cpu:0 cpu)", "cuda/gpu: not available"
    cpu: ... (cpu:0 ...)
    cuda/gpu: ...
    tpu: ...
    default device: ...
    """
    lines = []
    for platform, label in (("cpu", "cpu"), ("gpu", "cuda/gpu"), ("tpu", "tpu")):
        devices = _platform_devices(platform)
        if devices:
            listed = ", ".join(f"{device_name(d)} {d.device_kind}" for d in devices)
            plural = "device" if len(devices) == 1 else "devices"
            lines.append(f"{label}: {len(devices)} {plural} ({listed})")
        else:
            lines.append(f"{label}: not available")
    lines.append(f"default device: {device_name(_default())}")
    return "\n".join(lines)


def device(spec: Any = None) -> jax.Device:
    """The ``jax.Device`` named by a torch-style string (or a ``jax.Device``/``torch.device``).

    PyTorch equivalent: ``torch.device("cuda:0")``.

    ``"cuda"`` without an index is device 0, as in torch; ``None`` is JAX's default device.
    Difference from torch: the result is a concrete device that must exist: an absent device
    raises :class:`DeviceNotFoundError` naming what does exist (torch only fails when memory is
    first allocated there).

    >>> device("cpu").platform, device_name(device("cpu:0"))
    ('cpu', 'cpu:0')
    >>> dev = device("cuda" if cuda_is_available() else "cpu")  # the usual fallback
    >>> device_name(dev) in ("cpu:0", "cuda:0")
    True
    >>> device("cpu:99")
    Traceback (most recent call last):
    ...
    fnml.device.DeviceNotFoundError: device 'cpu:99' does not exist: ...
    """
    if spec is None:
        return _default()
    if isinstance(spec, jax.Device):
        return spec
    if _torch.is_device(spec):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"device: expected {_ACCEPTED}; got {type(spec).__name__} {spec!r}")
    match = _SPEC.match(spec.strip().lower())
    if match is None or match["kind"] not in _KINDS:
        raise ValueError(f"device: unknown device string {spec!r}; expected {_ACCEPTED}")
    platform = _KINDS[match["kind"]]
    index = int(match["index"] or 0)
    devices = _platform_devices(platform)
    if not devices:
        raise DeviceNotFoundError(
            f"device {spec!r} is not available: JAX sees no {platform} devices here. Available: "
            f"{_listing()}. (For NVIDIA GPUs install jax with CUDA: pip install 'fnml[cuda]'.)"
        )
    if index >= len(devices):
        raise DeviceNotFoundError(
            f"device {spec!r} does not exist: there are {len(devices)} {match['kind']} device(s) "
            f"(indices 0..{len(devices) - 1}). Available: {_listing()}"
        )
    return devices[index]


def cuda_is_available() -> bool:
    """True if JAX sees at least one GPU.

    PyTorch equivalent: ``torch.cuda.is_available()``. JAX's "gpu" platform is CUDA or ROCm,
    whichever jaxlib plugin is installed.
    """
    return bool(_platform_devices("gpu"))


def device_count(kind: str | None = None) -> int:
    """Number of devices of a kind in this process (default: of JAX's default platform).

    PyTorch equivalent: ``torch.cuda.device_count()`` (== ``device_count("cuda")``, 0 when absent).

    >>> device_count("cpu") >= 1, device_count() == len(jax.local_devices())
    (True, True)
    >>> device_count("cuda") == 0 or cuda_is_available()  # 0 on a CPU-only machine, as in torch
    True
    """
    if kind is None:
        return len(jax.local_devices())
    if not isinstance(kind, str) or kind.lower() not in _KINDS:
        raise ValueError(f"device_count: kind must be one of {', '.join(map(repr, _KINDS))} or None; got {kind!r}")
    return len(_platform_devices(_KINDS[kind.lower()]))


def _default() -> jax.Device:
    """JAX's current default device (honours ``jax.default_device`` contexts)."""
    configured = jax.config.jax_default_device
    if isinstance(configured, jax.Device):
        return configured
    if isinstance(configured, str):
        return _platform_devices(configured)[0]
    return jax.local_devices()[0]


def _listing() -> str:
    """Comma-separated torch-style names of every device that exists."""
    return ", ".join(device_name(d) for d in available_devices()) or "none"


# ----------------------------------------------------------------------------------------------
# 2. placement
# ----------------------------------------------------------------------------------------------


def to(tree: Any, dev: Any) -> Any:
    """A copy of ``tree`` on device ``dev``: arrays, pytrees of arrays, or an NNX module.

    PyTorch equivalent: ``tensor.to(device)`` and ``module.to(device)``.

    Difference from torch: ``module.to(device)`` moves the parameters *in place* and returns the
    same module; fnml returns a *new* module (split into graph and state, state moved, merged
    again) and leaves the input untouched, so write ``model = to(model, dev)``. Arrays already on
    ``dev`` are not copied. numpy arrays and Python numbers become jax arrays on ``dev``.

    torch tensors (alone or inside a pytree) are converted as ``fnml.tensors.from_torch(t, copy=True)`` does
    (values only, detached, bfloat16 kept; a copy, so later in-place changes to the tensor do not show) and then placed:
    ``to(torch.randn(3), dev)`` is a jax array on ``dev``. A ``torch.nn.Module`` is refused: port it with
    ``fnml.interop.from_torch`` first.

    >>> import torch
    >>> from flax import nnx
    >>> from fnml import layers
    >>> dev = device("cuda" if cuda_is_available() else "cpu")
    >>> model = to(layers.SimpleNN(rngs=nnx.Rngs(0)), dev)
    >>> to(torch.ones(2), dev).dtype
    dtype('float32')
    """
    target = device(dev)
    from flax import nnx  # flax is a runtime dependency; imported here to keep this module light

    if isinstance(tree, nnx.Module):
        graphdef, state = nnx.split(tree)
        return nnx.merge(graphdef, jax.device_put(state, target))
    return jax.device_put(jax.tree.map(_from_torch_leaf, tree), target)


def _from_torch_leaf(leaf: Any) -> Any:
    """A torch tensor -> jax array (as ``tensors.from_torch(leaf, copy=True)``); any other leaf unchanged."""
    if _torch.is_module(leaf):
        raise TypeError(
            f"to: got a torch.nn.Module ({type(leaf).__name__}); port it first with "
            f"fnml.interop.from_torch(module) (or interop.load_state_dict into an fnml model), then move that"
        )
    if _torch.is_tensor(leaf):
        return _torch.to_jax(leaf, copy=True, what="to")
    return leaf


@contextlib.contextmanager
def default_device(dev: Any) -> Iterator[jax.Device]:
    """Within the block, new arrays are created on ``dev`` (yields the ``jax.Device``).

    PyTorch equivalent: ``with torch.device("cuda"):`` / ``torch.set_default_device``.

    Wraps :func:`jax.default_device`: it sets where computations without committed inputs run and
    where new arrays land; arrays already placed elsewhere stay there.

    >>> import jax.numpy as jnp
    >>> with default_device("cpu") as dev:
    ...     x = jnp.zeros(3)
    >>> device_name(dev), x.devices() == {dev}
    ('cpu:0', True)
    """
    target = device(dev)
    with jax.default_device(target):
        yield target


# ----------------------------------------------------------------------------------------------
# 3. multi-device (meshes, sharding, multi-process init)
# ----------------------------------------------------------------------------------------------
#
# One mesh, two axes: "data" (the batch is split along it; gradients are averaged over it by the
# all-reduce the compiler inserts) and "model" (size 1 unless asked for: large parameters and their
# optimizer state can be split along it). Everything below is placement (device_put / jit shardings);
# fnml never writes a collective by hand: a jitted step over sharded inputs is partitioned by XLA.

DATA_AXIS = "data"
MODEL_AXIS = "model"


def mesh(data: int | None = None, model: int = 1, *, devices: Any = None) -> jax.sharding.Mesh:
    """A ``jax.sharding.Mesh`` with axes ``("data", "model")`` over all devices (of every process).

    PyTorch equivalent: the process group of ``torch.distributed.init_process_group`` + DDP's device
    list (``DeviceMesh(("dp",))`` in ``torch.distributed.device_mesh``).

    ``data * model`` must equal the number of devices; ``data=None`` takes ``len(devices) // model``.
    ``devices``: a sequence of devices (``jax.Device`` or torch-style names of this process);
    default ``jax.devices()``: every device of every process after :func:`init_distributed`. Both axes
    are ``AxisType.Auto``: jit propagates shardings and inserts the collectives.

    >>> m = mesh()  # data-parallel over every device: {'data': 4, 'model': 1} on 4 devices
    >>> m.axis_names, m.shape["data"] == len(jax.devices()), m.shape["model"]
    (('data', 'model'), True, 1)
    >>> mesh(devices=["cpu:0"]).shape["data"]  # an explicit device list
    1

    ``mesh(data=2, model=2)`` on 4 devices: 2-way data parallel x 2-way parameter sharding.
    """
    devs = list(jax.devices()) if devices is None else [device(d) for d in devices]
    if not devs:
        raise ValueError("mesh: devices is empty; expected at least one device")
    if len(set(devs)) != len(devs):
        raise ValueError(f"mesh: devices contains duplicates: {[device_name(d) for d in devs]}")
    if not isinstance(model, int) or isinstance(model, bool) or model < 1:
        raise ValueError(f"mesh: model must be a positive int, got model={model!r}")
    if data is None:
        if len(devs) % model:
            raise ValueError(f"mesh: model={model} does not divide the {len(devs)} devices")
        data = len(devs) // model
    if not isinstance(data, int) or isinstance(data, bool) or data < 1:
        raise ValueError(f"mesh: data must be a positive int or None, got data={data!r}")
    if data * model != len(devs):
        raise ValueError(
            f"mesh: data * model must equal the number of devices ({len(devs)}); got data={data}, model={model}"
        )
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, model), (DATA_AXIS, MODEL_AXIS), axis_types=auto, devices=devs)


def _check_mesh(value: Any, *, where: str) -> jax.sharding.Mesh:
    """``value`` is a Mesh with a "data" axis (as :func:`mesh` builds)."""
    if not isinstance(value, jax.sharding.Mesh) or DATA_AXIS not in value.axis_names:
        raise TypeError(
            f"{where}: mesh must be a jax.sharding.Mesh with a {DATA_AXIS!r} axis (fnml.device.mesh()), "
            f"got {type(value).__name__} {getattr(value, 'axis_names', value)!r}"
        )
    return value


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """``NamedSharding(mesh, P("data"))``: the leading (batch) axis split over the "data" axis.

    PyTorch equivalent: the placement a ``DistributedSampler`` gives (each rank holds its slice of the batch).
    """
    _check_mesh(mesh, where="batch_sharding")
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """``NamedSharding(mesh, P())``: a full copy on every device of the mesh.

    PyTorch equivalent: DDP's parameter broadcast (every rank holds the full tensor).
    """
    _check_mesh(mesh, where="replicated_sharding")
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _local_data_slots(m: jax.sharding.Mesh) -> int:
    """How many positions of the "data" axis have a device of this process."""
    local = set(m.local_devices)
    rows = np.moveaxis(m.devices, m.axis_names.index(DATA_AXIS), 0).reshape(m.shape[DATA_AXIS], -1)
    return sum(any(d in local for d in row) for row in rows)


def _divisibility_error(where: str, global_batch: int, n_data: int) -> ValueError:
    """The uneven-batch error: names both numbers and the two ways out."""
    lower, upper = (global_batch // n_data) * n_data, -(-global_batch // n_data) * n_data
    hint = f"{upper}" if lower == 0 else f"{lower} or {upper}"
    return ValueError(
        f"{where}: the global batch size {global_batch} is not divisible by the mesh's {DATA_AXIS!r} "
        f"axis size {n_data}; use a batch size that is a multiple of {n_data} (e.g. {hint}), or "
        f"drop_last=True for a last partial batch (fnml never pads: padding would change the mean loss "
        f"and the gradients)"
    )


def check_batch_size(local_batch: int, mesh: jax.sharding.Mesh, *, where: str = "check_batch_size") -> int:
    """The global batch size for ``local_batch`` rows per process; ``ValueError`` unless "data" divides it.

    PyTorch equivalent: none (DDP takes whatever each rank loads; uneven ranks silently weight samples
    differently). Single process: the global batch is ``local_batch``.

    >>> check_batch_size(64, mesh())  # one process: the global batch is the local one
    64
    >>> check_batch_size(3, mesh(devices=["cpu:0"]))
    3

    On 4 devices ``check_batch_size(10, mesh())`` raises ``ValueError`` (10 is not a multiple of 4).
    """
    _check_mesh(mesh, where=where)
    n_data, slots = mesh.shape[DATA_AXIS], _local_data_slots(mesh)
    global_rows = local_batch * n_data // slots
    if local_batch % slots or global_rows % n_data:
        raise _divisibility_error(where, local_batch * n_data // slots, n_data)
    return global_rows


def shard_batch(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Split every array of ``tree`` along its leading (batch) axis over the mesh's "data" axis.

    PyTorch equivalent: ``DistributedSampler`` + each DDP rank loading ``batch_size / world_size``
    samples; here one global array whose shards live on the devices (``NamedSharding(mesh, P("data"))``).

    Single process: ``tree`` is the GLOBAL batch. Several processes (:func:`init_distributed`): each
    process passes ITS OWN rows and gets the global array (their concatenation in process order,
    :func:`global_batch`); a global ``jax.Array`` that already has this sharding passes through.
    The global batch size must be a multiple of the "data" axis size: otherwise ``ValueError`` naming
    both (no silent padding). Shape contract: ``(B, ...) -> (B, ...)`` with ``B // data`` rows per device.

    >>> m = mesh()
    >>> xb, yb = shard_batch((np.zeros((64, 10), np.float32), np.zeros(64, np.int32)), m)
    >>> xb.shape, yb.shape  # the global batch, unchanged
    ((64, 10), (64,))
    >>> xb.sharding.shard_shape(xb.shape)[0] == 64 // m.shape["data"]  # on 4 devices: 4 shards of (16, 10)
    True
    """
    _check_mesh(mesh, where="shard_batch")
    sharding = batch_sharding(mesh)
    local_only = _local_data_slots(mesh) == mesh.shape[DATA_AXIS] and not mesh.is_multi_process

    def put(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf  # already a global batch with this layout
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError(f"shard_batch: got a scalar leaf {leaf!r}; every leaf needs a leading batch axis")
        check_batch_size(shape[0], mesh, where="shard_batch")
        if local_only:
            return jax.device_put(leaf, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree.map(put, tree)


def global_batch(local_tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Global batch arrays from each process's local rows (``jax.make_array_from_process_local_data``).

    PyTorch equivalent: none (each DDP rank keeps its local batch; the all-reduce happens on gradients).

    Every process calls it with its own ``(b, ...)`` rows; the result has global shape
    ``(b * data / local_data_positions, ...)`` ordered by process, sharded ``P("data")``. In a single
    process it equals :func:`shard_batch`. Uneven global batch: ``ValueError`` naming both numbers.

    >>> x = global_batch(np.arange(64.0, dtype=np.float32).reshape(64, 1), mesh())
    >>> x.shape, float(x[10, 0])  # one process: the local rows are the global batch
    ((64, 1), 10.0)

    With several processes, process ``p`` passes its ``b`` rows and gets rows ``p*b .. (p+1)*b - 1``
    of the global batch placed on its devices.
    """
    _check_mesh(mesh, where="global_batch")
    sharding = batch_sharding(mesh)

    def put(leaf: Any) -> jax.Array:
        local = np.asarray(leaf)
        if local.ndim == 0:
            raise ValueError(f"global_batch: got a scalar leaf {leaf!r}; every leaf needs a leading batch axis")
        check_batch_size(local.shape[0], mesh, where="global_batch")
        return jax.make_array_from_process_local_data(sharding, local)

    return jax.tree.map(put, local_tree)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """A copy of ``tree`` (arrays, pytree, ``TrainState`` or NNX module) replicated on every mesh device.

    PyTorch equivalent: DDP's broadcast of the parameters from rank 0 at construction.

    ``NamedSharding(mesh, P())``. With several processes every process must pass the same values
    (same seed / same checkpoint), as DDP assumes after its initial broadcast. NNX modules come
    back as a new module (like :func:`to`).

    >>> params = replicate({"w": np.ones((2, 3), np.float32)}, mesh())
    >>> params["w"].sharding.is_fully_replicated, params["w"].shape
    (True, (2, 3))

    ``replicate(TrainState.create(model, tx), mesh())`` places a whole training state.
    """
    return _place(tree, replicated_sharding(_check_mesh(mesh, where="replicate")))


def _place(tree: Any, shardings: Any) -> Any:
    """device_put for arrays / pytrees / NNX modules; numpy inputs become jax arrays."""
    from flax import nnx

    if isinstance(tree, nnx.Module):
        graphdef, state = nnx.split(tree)
        return nnx.merge(graphdef, jax.device_put(state, shardings))
    return jax.device_put(tree, shardings)


def param_shardings(tree: Any, mesh: jax.sharding.Mesh, *, min_size: int = 2**18) -> Any:
    """Per-leaf shardings: arrays of >= ``min_size`` elements split along "model", the rest replicated.

    PyTorch equivalent: FSDP / ZeRO-3 style parameter sharding (``fully_shard``), simplified.

    A large array is split on its largest axis that the "model" axis size divides (``P(None, "model")``
    for a ``(in, out)`` kernel split over ``out``); arrays with no such axis, small arrays and scalars
    are replicated. With ``model=1`` everything is replicated. The numbers are unchanged: jit gathers
    what each step needs (a placement choice, not a different algorithm).

    >>> state = {"kernel": np.zeros((64, 32), np.float32), "bias": np.zeros(32, np.float32)}
    >>> shardings = param_shardings(state, mesh(), min_size=1024)  # mesh() has model=1: all replicated
    >>> {name: s.spec for name, s in shardings.items()}
    {'bias': P(), 'kernel': P()}
    >>> state = jax.device_put(state, shardings)

    On ``mesh(data=2, model=2)`` the ``(64, 32)`` kernel (2048 >= ``min_size`` elements) would get
    ``P("model")`` (split on its largest axis, 64) and the bias would stay replicated.
    """
    _check_mesh(mesh, where="param_shardings")
    if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 1:
        raise ValueError(f"param_shardings: min_size must be a positive int, got min_size={min_size!r}")
    n_model = mesh.shape.get(MODEL_AXIS, 1)
    P = jax.sharding.PartitionSpec

    def choose(leaf: Any) -> jax.sharding.NamedSharding:
        shape = np.shape(leaf)
        if n_model == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
            return jax.sharding.NamedSharding(mesh, P())
        candidates = [axis for axis, size in enumerate(shape) if size % n_model == 0]
        if not candidates:
            return jax.sharding.NamedSharding(mesh, P())
        axis = max(candidates, key=lambda a: (shape[a], a))
        return jax.sharding.NamedSharding(mesh, P(*([None] * axis + [MODEL_AXIS])))

    return jax.tree.map(choose, tree)


def shard_params(tree: Any, mesh: jax.sharding.Mesh, *, min_size: int = 2**18) -> Any:
    """``tree`` placed by :func:`param_shardings`: large arrays split over "model", the rest replicated.

    PyTorch equivalent: ``torch.distributed.fsdp.fully_shard`` (opt-in; the default is :func:`replicate`).
    """
    return _place(tree, param_shardings(tree, mesh, min_size=min_size))


def data_parallel(
    step: Callable[..., Any],
    mesh: jax.sharding.Mesh,
    *,
    donate: bool = False,
    shard_min_size: int | None = None,
) -> Callable[..., Any]:
    """Jit ``step(state, *batch) -> (state, aux)`` so it runs data-parallel over ``mesh``.

    PyTorch equivalent: ``DistributedDataParallel(model)``: each device gets ``B / data`` samples,
    gradients are averaged over devices, parameters stay identical.

    How: ``jax.jit`` with ``in_shardings=(state: replicated, batch: P("data"))`` and
    ``out_shardings=(state: replicated, aux: replicated)``. Every reduction over the batch inside
    ``step`` (the mean loss, its gradient, BatchNorm's batch statistics) becomes a cross-device
    all-reduce inserted by XLA's partitioner, so the result is the SAME global-batch computation as on
    one device (equal up to float summation order), unlike DDP, whose BatchNorm is per-device unless
    converted to ``SyncBatchNorm``. The returned function places its inputs first (``shard_batch`` on
    the batch: uneven batch -> ``ValueError``; the state onto its sharding: a no-op once placed).
    ``shard_min_size``: split state arrays of at least that many elements along "model"
    (:func:`param_shardings`); ``None`` replicates everything. ``donate``: donate the state buffers.

    >>> import jax.numpy as jnp
    >>> def pure_step(w, x, y):  # one SGD step on a mean-squared error; returns (state, aux)
    ...     loss, grad = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
    ...     return w - 0.1 * grad, loss
    >>> run = data_parallel(pure_step, mesh())
    >>> x, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)  # x, y: the global batch
    >>> w, loss = run(np.zeros((2, 1), np.float32), x, y)
    >>> round(float(loss), 6), [round(v, 6) for v in w.ravel().tolist()]
    (1.0, [0.2, 0.2])
    """
    _check_mesh(mesh, where="data_parallel")
    if not callable(step):
        raise TypeError(f"data_parallel: step must be callable(state, *batch), got {step!r}")
    return mesh_jit(step, mesh, donate=donate, shard_min_size=shard_min_size)


def mesh_jit(
    fn: Callable[..., Any],
    mesh: jax.sharding.Mesh,
    *,
    split_args: bool = True,
    returns_state: bool = True,
    donate: bool = False,
    shard_min_size: int | None = None,
) -> Callable[..., Any]:
    """Jit ``fn(state, *args)`` over ``mesh``, compiled once per state structure and argument count.

    PyTorch equivalent: none (what ``DistributedDataParallel`` / ``fully_shard`` do around a step).

    The state is replicated, or with ``shard_min_size`` placed by :func:`param_shardings`; the other
    arguments are split along "data" on their leading axis (:func:`shard_batch`, ``split_args=True``) or
    replicated. ``fn`` returns ``(state, aux)`` (``returns_state=True``: the state keeps its placement,
    ``aux`` replicated) or values that come back replicated. The returned function places its inputs
    first (a no-op once placed) and has ``_cache_size()`` (the compilations so far) and ``mesh``.
    ``donate``: donate the state's buffers. :func:`data_parallel` is this with the defaults.

    >>> import jax.numpy as jnp
    >>> mean = mesh_jit(lambda w, x: jnp.mean(x @ w), mesh(), returns_state=False)
    >>> float(mean(np.ones((2, 1), np.float32), np.ones((8, 2), np.float32)))
    2.0
    """
    _check_mesh(mesh, where="mesh_jit")
    replicated = replicated_sharding(mesh)
    arg_sharding = batch_sharding(mesh) if split_args else replicated
    compiled: dict[Any, tuple[Any, Callable]] = {}

    def run(state: Any, *args: Any) -> Any:
        structure = (jax.tree.structure(state), len(args))
        if structure not in compiled:
            shardings = replicated if shard_min_size is None else param_shardings(state, mesh, min_size=shard_min_size)
            jitted = jax.jit(
                fn,
                in_shardings=(shardings,) + (arg_sharding,) * len(args),
                out_shardings=(shardings, replicated) if returns_state else replicated,
                donate_argnums=(0,) if donate else (),
            )
            compiled[structure] = (shardings, jitted)
        shardings, jitted = compiled[structure]
        placed = shard_batch(args, mesh) if split_args else jax.device_put(args, replicated)
        return jitted(jax.device_put(state, shardings), *placed)

    run._cache_size = lambda: sum(jitted._cache_size() for _, jitted in compiled.values())  # recompile guard
    run.mesh = mesh
    return run


# ----------------------------------------------------------------------------------------------
# 4. processes (multi-host runs)
# ----------------------------------------------------------------------------------------------


def process_index() -> int:
    """This process's rank (0 in a single-process run). PyTorch: ``torch.distributed.get_rank()``.

    PyTorch equivalent: ``torch.distributed.get_rank()``.
    """
    return jax.process_index()


def process_count() -> int:
    """Number of processes (1 unless :func:`init_distributed`). PyTorch: ``get_world_size()`` per host.

    PyTorch equivalent: ``torch.distributed.get_world_size()``.
    """
    return jax.process_count()


def is_main_process() -> bool:
    """True on process 0: log, plot and write files (checkpoints) there only.

    PyTorch equivalent: ``torch.distributed.get_rank() == 0``.

    >>> step, loss = 10, 0.25
    >>> if is_main_process():  # True in a single-process run
    ...     print(f"step {step}: loss {float(loss):.4f}")
    step 10: loss 0.2500
    """
    return jax.process_index() == 0


def init_distributed(
    coordinator_address: str,
    num_processes: int,
    process_id: int,
    *,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: str | None = "gloo",
    initialization_timeout: int = 300,
) -> None:
    """Join a multi-process JAX run (``jax.distributed.initialize``); call first, before any JAX work.

    PyTorch equivalent: ``torch.distributed.init_process_group(backend, init_method="tcp://host:port",
    world_size=num_processes, rank=process_id)``.

    Every process calls it with the same ``coordinator_address`` (``"host:port"`` of process 0, which
    runs the coordinator) and ``num_processes``, and its own ``process_id`` in ``0..num_processes-1``.
    Afterwards ``jax.devices()`` lists the devices of ALL processes (``jax.local_devices()`` this
    one's), :func:`mesh` spans them, and jitted steps over that mesh communicate through XLA's
    collectives (NCCL on GPUs; on CPU the ``cpu_collectives`` implementation, ``"gloo"`` over TCP,
    is what lets several CPU processes on one machine test the same code). ``local_device_ids``:
    which local GPUs this process uses (default: all visible).

    Example (one process per host, 2 hosts)::

        init_distributed("10.0.0.1:1234", num_processes=2, process_id=int(os.environ["RANK"]))
        m = mesh()          # all GPUs of both hosts on the "data" axis
    """
    where = "init_distributed"
    if not isinstance(coordinator_address, str) or not re.match(r"^\[?[\w.\-:]+\]?:\d+$", coordinator_address):
        raise ValueError(f"{where}: coordinator_address must be 'host:port', got {coordinator_address!r}")
    if not isinstance(num_processes, int) or isinstance(num_processes, bool) or num_processes < 1:
        raise ValueError(f"{where}: num_processes must be a positive int, got num_processes={num_processes!r}")
    if not isinstance(process_id, int) or isinstance(process_id, bool) or not 0 <= process_id < num_processes:
        raise ValueError(
            f"{where}: process_id must be an int in 0..{num_processes - 1} (num_processes={num_processes}), "
            f"got process_id={process_id!r}"
        )
    if cpu_collectives is not None:
        if cpu_collectives not in ("gloo", "mpi"):
            raise ValueError(f"{where}: cpu_collectives must be 'gloo', 'mpi' or None, got {cpu_collectives!r}")
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=list(local_device_ids) if local_device_ids is not None else None,
        initialization_timeout=initialization_timeout,
    )


def shutdown_distributed() -> None:
    """Leave the multi-process run (``jax.distributed.shutdown``). PyTorch: ``destroy_process_group()``.

    PyTorch equivalent: ``torch.distributed.destroy_process_group()``.
    """
    jax.distributed.shutdown()


def to_host(tree: Any) -> Any:
    """Every array of ``tree`` as a full numpy array on every process (gathers across processes).

    PyTorch equivalent: ``tensor.cpu().numpy()`` after an ``all_gather`` (for replicated parameters:
    just ``.cpu()``).

    Replicated and single-process arrays are read locally; arrays sharded across processes are
    gathered with ``jax.experimental.multihost_utils.process_allgather`` (every process must call).

    >>> params = replicate({"w": np.ones(2, np.float32)}, mesh())
    >>> to_host(params)  # numpy, identical on every process
    {'w': array([1., 1.], dtype=float32)}
    """

    def fetch(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and not leaf.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree.map(fetch, tree)
