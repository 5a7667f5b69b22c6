"""What fnml knows about a layer's torch counterpart, declared once on the layer class.

PyTorch equivalent: a module's ``__constants__`` (the settings it is built from) and its
``_load_from_state_dict`` (its tensors' names), kept on the module.

Every layer class in :mod:`fnml.layers` carries a class attribute ``torch_facts =`` :class:`TorchFacts`: the
torch class it mirrors, its tensors (torch name, fnml attribute, the transpose between the two layouts), the
layout of its activations, the settings ``parity.check_defaults`` compares, how a ``from_torch`` twin runs it
and whether ``autocast`` lowers its precision. State dicts (:mod:`fnml.interop.state_dicts`), capture
(:mod:`fnml.interop.capture`), parity (:mod:`fnml.parity`) and the training step read these declarations;
none keeps a table of its own. This module imports neither torch nor the layer families.

>>> from fnml import layers
>>> facts = layers.Conv1d.torch_facts
>>> facts.torch_classes, facts.layout, facts.capture.adapter, facts.autocast
(('Conv1d',), 'nlc', 'ncl', True)
>>> [(slot.torch_name, slot.attr, slot.perm) for slot in facts.slots]
[('weight', 'kernel', (2, 1, 0)), ('bias', 'bias', None)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "ADAPTERS",
    "CHILDREN",
    "LAYOUTS",
    "LOWERS_OP_BY_OP",
    "PARAMETERLESS",
    "LayerCall",
    "Slot",
    "TorchFacts",
    "batch_norm_slots",
    "cell_slots",
    "recurrent_slots",
    "same_name_slots",
    "weight_and_bias",
]


class Slot(NamedTuple):
    """One torch tensor of a layer: its torch name, the fnml attribute holding it, ``perm`` fnml -> torch layout.

    A slot whose attribute holds no variable (``bias=False``, ``affine=False``) is left out of the state dict.
    """

    torch_name: str
    attr: str
    perm: tuple[int, ...] | None = None
    is_count: bool = False  # num_batches_tracked: an integer counter, int64 on the torch side


class LayerCall(NamedTuple):
    """How a ``from_torch`` twin runs the fnml layer: the ATen ops of torch's module it replaces, and the
    ``adapter`` mapping those ops' arguments onto the layer (see :data:`ADAPTERS`)."""

    aten_ops: tuple[str, ...]
    adapter: str


# The layer has no tensors (activations, pools, Dropout, padding...).
PARAMETERLESS: tuple[Slot, ...] = ()
# A composite (containers, attention, transformer layers): its own tensors under their attribute names,
# then its children's, walked like a custom torch module.
CHILDREN = "children"
# A twin does not call the fnml layer: the torch module's recorded ops run through the lowering table.
LOWERS_OP_BY_OP = None

# Activation layouts: what the layer computes on, for torch's channels-first data.
LAYOUTS = {
    "torch": "torch's own layout",
    "nhwc": "channels-last images (N, H, W, C) for torch's (N, C, H, W)",
    "nlc": "channels-last sequences (N, L, C) for torch's (N, C, L)",
    "channels_last": "channel axis last at any rank (N, *, C) for torch's (N, C, *)",
    CHILDREN: "a composite: its children's layouts",
}

# Capture adapters (fnml.interop.capture runs them): "first"/"embedding" pass the op's first / second
# argument; "elementwise" too, and it may run on channels-last data; "nchw"/"ncl"/"channels"/"batch_norm"
# take torch's channels-first input and run the channels-last layer; "lstm"/"rnn"/"lstm_cell"/"cell" map the
# recurrent ATen ops' (input, hidden state) arguments, the weights being the layer's own.
ADAPTERS = frozenset(
    {"first", "embedding", "elementwise", "nchw", "ncl", "channels", "batch_norm", "lstm", "rnn", "lstm_cell", "cell"}
)


@dataclass(frozen=True)
class TorchFacts:
    """A layer's torch facts: every field is required, so a declaration states each one.

    - ``torch_class``: the torch class name(s) the layer mirrors (``"Conv2d"``).
    - ``slots``: its tensors, a tuple of :class:`Slot` (or a function ``module -> tuple of Slot`` when they
      depend on settings, as for LSTM's layers), :data:`PARAMETERLESS`, or :data:`CHILDREN` for a composite.
    - ``layout``: a key of :data:`LAYOUTS`.
    - ``settings``: attribute names shared by the torch and fnml layers that ``parity.check_defaults``
      compares (``()`` for a layer without settings).
    - ``capture``: a :class:`LayerCall`, or :data:`LOWERS_OP_BY_OP`.
    - ``autocast``: whether torch's autocast (CPU policy) runs the layer in the lower precision.
    """

    torch_class: str | tuple[str, ...]
    slots: tuple[Slot, ...] | Callable[[Any], tuple[Slot, ...]] | str
    layout: str
    settings: tuple[str, ...]
    capture: LayerCall | None
    autocast: bool

    def __post_init__(self) -> None:
        names = (self.torch_class,) if isinstance(self.torch_class, str) else tuple(self.torch_class)
        if not names or not all(isinstance(name, str) and name for name in names):
            raise ValueError(
                f"TorchFacts: torch_class must be a class name or a tuple of them, got {self.torch_class!r}"
            )
        if self.layout not in LAYOUTS:
            raise ValueError(f"TorchFacts({names[0]}): layout must be one of {sorted(LAYOUTS)}, got {self.layout!r}")
        if (self.slots == CHILDREN) != (self.layout == CHILDREN):
            raise ValueError(f"TorchFacts({names[0]}): a composite has slots=CHILDREN and layout=CHILDREN together")
        if not (self.slots == CHILDREN or callable(self.slots) or isinstance(self.slots, tuple)):
            raise TypeError(f"TorchFacts({names[0]}): slots must be a tuple of Slot, a function or CHILDREN")
        if isinstance(self.slots, tuple) and not all(isinstance(slot, Slot) for slot in self.slots):
            raise TypeError(f"TorchFacts({names[0]}): slots must hold Slot entries, got {self.slots!r}")
        if not isinstance(self.settings, tuple) or not all(isinstance(name, str) for name in self.settings):
            raise TypeError(f"TorchFacts({names[0]}): settings must be a tuple of names, got {self.settings!r}")
        if self.capture is not None:
            if not isinstance(self.capture, LayerCall) or not self.capture.aten_ops:
                raise TypeError(f"TorchFacts({names[0]}): capture must be a LayerCall or LOWERS_OP_BY_OP")
            if self.capture.adapter not in ADAPTERS:
                raise ValueError(
                    f"TorchFacts({names[0]}): capture adapter must be one of {sorted(ADAPTERS)}, "
                    f"got {self.capture.adapter!r}"
                )
        if not isinstance(self.autocast, bool):
            raise TypeError(f"TorchFacts({names[0]}): autocast must be a bool, got {self.autocast!r}")
        object.__setattr__(self, "torch_class", names if len(names) > 1 else names[0])

    @property
    def torch_classes(self) -> tuple[str, ...]:
        """The torch class names, as a tuple."""
        return (self.torch_class,) if isinstance(self.torch_class, str) else self.torch_class

    @property
    def composite(self) -> bool:
        """A container / composite layer: its tensors are walked, its children declare their own facts."""
        return self.slots == CHILDREN

    @property
    def parameterless(self) -> bool:
        return self.slots == PARAMETERLESS

    @property
    def is_convolution(self) -> bool:
        """Whether the layer is a convolution (it replaces an ``aten.conv*`` op)."""
        return self.capture is not None and any(op.startswith("aten.conv") for op in self.capture.aten_ops)

    def slots_of(self, module: Any) -> tuple[Slot, ...]:
        """The slots of a layer instance (settings-dependent slots resolved); empty for a composite."""
        if self.composite:
            return ()
        return tuple(self.slots(module)) if callable(self.slots) else self.slots


# --------------------------------------------------------------------------------------------------
# Slot sets shared by several layers
# --------------------------------------------------------------------------------------------------


def weight_and_bias(perm: tuple[int, ...] | None) -> tuple[Slot, ...]:
    """torch ``weight`` <-> fnml ``kernel`` transposed by ``perm``, and ``bias`` as is (Linear, convolutions)."""
    return (Slot("weight", "kernel", perm), Slot("bias", "bias"))


def same_name_slots(*names: str) -> tuple[Slot, ...]:
    """Tensors with the same name and layout on both sides (LayerNorm, Embedding, PReLU...)."""
    return tuple(Slot(name, name) for name in names)


def batch_norm_slots() -> tuple[Slot, ...]:
    """BatchNorm / InstanceNorm: ``(C,)`` tensors of the same names; ``num_batches_tracked`` is a counter."""
    counter = Slot("num_batches_tracked", "num_batches_tracked", is_count=True)
    return same_name_slots("weight", "bias", "running_mean", "running_var") + (counter,)


def recurrent_slots(module: Any) -> tuple[Slot, ...]:
    """RNN / LSTM / GRU: per layer k and direction, torch's order weight_ih, weight_hh, bias_ih, bias_hh."""
    # torch weight_ih (G*H, in) <-> fnml kernel_ih (in, G*H); weight_hh (G*H, H) <-> kernel_hh (H, G*H).
    directions = ("", "_reverse") if module.bidirectional else ("",)
    slots = []
    for layer in range(module.num_layers):
        for suffix in directions:
            tag = f"_l{layer}{suffix}"
            slots.append(Slot(f"weight_ih{tag}", f"kernel_ih{tag}", (1, 0)))
            slots.append(Slot(f"weight_hh{tag}", f"kernel_hh{tag}", (1, 0)))
            slots += [Slot(f"bias_ih{tag}", f"bias_ih{tag}"), Slot(f"bias_hh{tag}", f"bias_hh{tag}")]
    return tuple(slots)


def cell_slots() -> tuple[Slot, ...]:
    """RNNCell / LSTMCell / GRUCell: torch weight_ih (G*H, in) <-> fnml kernel_ih (in, G*H), likewise weight_hh."""
    return (Slot("weight_ih", "kernel_ih", (1, 0)), Slot("weight_hh", "kernel_hh", (1, 0))) + same_name_slots(
        "bias_ih", "bias_hh"
    )
