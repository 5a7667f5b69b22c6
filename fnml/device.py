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
3. multi-device           (meshes, sharding, multi-process init: added by the multi-device work)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import jax

__all__ = [
    "DeviceNotFoundError",
    "available_devices",
    "cuda_is_available",
    "default_device",
    "describe",
    "device",
    "device_count",
    "device_name",
    "to",
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

    Example::

        [device_name(d) for d in available_devices()]   # ['cpu:0'] or ['cpu:0', 'cuda:0', ...]
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

    Example::

        print(describe())
        # cpu: 1 device (cpu:0 TFRT_CPU_0)
        # cuda/gpu: not available
        # tpu: not available
        # default device: cpu:0
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

    Example::

        dev = device("cuda" if cuda_is_available() else "cpu")
    """
    if spec is None:
        return _default()
    if isinstance(spec, jax.Device):
        return spec
    if type(spec).__module__.startswith("torch"):  # torch.device, without importing torch
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

    Example::

        device_count("cuda")     # 0 on a CPU-only machine
    """
    if kind is None:
        return len(jax.local_devices())
    if not isinstance(kind, str) or kind.lower() not in _KINDS:
        raise ValueError(
            f"device_count: kind must be one of {', '.join(map(repr, _KINDS))} or None; got {kind!r}"
        )
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

    Example::

        model = to(model, device("cuda" if cuda_is_available() else "cpu"))
        X = to(X, dev)
    """
    target = device(dev)
    from flax import nnx  # flax is a runtime dependency; imported here to keep this module light

    if isinstance(tree, nnx.Module):
        graphdef, state = nnx.split(tree)
        return nnx.merge(graphdef, jax.device_put(state, target))
    return jax.device_put(tree, target)


@contextlib.contextmanager
def default_device(dev: Any) -> Iterator[jax.Device]:
    """Within the block, new arrays are created on ``dev`` (yields the ``jax.Device``).

    PyTorch equivalent: ``with torch.device("cuda"):`` / ``torch.set_default_device``.

    Wraps :func:`jax.default_device`: it sets where computations without committed inputs run and
    where new arrays land; arrays already placed elsewhere stay there.

    Example::

        with default_device("cpu"):
            x = jnp.zeros(3)       # on cpu:0
    """
    target = device(dev)
    with jax.default_device(target):
        yield target


# ----------------------------------------------------------------------------------------------
# 3. multi-device (meshes, sharding, multi-process init)
# ----------------------------------------------------------------------------------------------
# Added by the multi-device work; build on `device()` / `available_devices()` above.
