"""Import torchvision (and timm, which imports it) beside the CPU torch, for the tests only.

Why: the registry's torchvision 0.28.0 wheel for torch 2.13.0 is a CUDA build. Beside the CPU torch its C
extension (``torchvision/_C.so``) cannot load, and ``import torchvision`` then fails in
``torchvision/_meta_registrations.py``: ``torch.library.register_fake("torchvision::nms")`` raises
``operator torchvision::nms does not exist``, because the extension that would define the op is missing.

What this does: when the extension cannot load, it defines the schemas of the two ops that module registers
fake kernels for (``torchvision::nms`` and ``torchvision::qnms``) in a ``torch.library.Library("torchvision",
"FRAGMENT")``, with no kernel, then imports torchvision. Nothing in site-packages is patched.

What is and is not available: every model definition (``torchvision.models``: ResNet, MobileNet,
EfficientNet, Swin, ConvNeXt, ViT, ...), the transforms and timm work, since they need no C op. The C ops
themselves (``torchvision.ops.nms``, ``roi_align``, ``deform_conv2d``, the image/video decoders) do not: a
call raises torch's "no kernel registered" error. The tests use model definitions only.
"""

from __future__ import annotations

import importlib.util
import os

import torch

_LIBRARY = None  # kept alive: dropping the Library object would unregister the schemas


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False  # no torchvision: the import below raises ImportError, as it should
    folder = list(spec.submodule_search_locations)[0]
    library = next((os.path.join(folder, f) for f in os.listdir(folder) if f.startswith("_C.")), None)
    if library is None:
        return False
    try:
        torch.ops.load_library(library)
    except (OSError, RuntimeError):
        return False
    return True


def _define_missing_ops() -> None:
    global _LIBRARY
    try:
        torch.ops.torchvision.nms.default  # noqa: B018 - defined already (a working extension, or an earlier call)
        return
    except (AttributeError, RuntimeError):
        pass
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


if importlib.util.find_spec("torchvision") is not None and not _extension_loads():
    _define_missing_ops()

import timm  # noqa: E402 - after the op schemas exist
import torchvision  # noqa: E402

__all__ = ["timm", "torchvision"]
