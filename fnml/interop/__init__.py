"""Move weights and whole models between PyTorch and fnml: state dicts, weight files, ``from_torch``.

PyTorch equivalent: ``model.load_state_dict(sd)``, ``model.state_dict()``, ``torch.load`` /
``safetensors.torch.save_file``; ``from_torch`` has no torch counterpart (it builds an fnml twin).

One file per job: :mod:`~fnml.interop.state_dicts` (torch names and layouts), :mod:`~fnml.interop.files`
(safetensors, ``.pt``), :mod:`~fnml.interop.capture` (``from_torch``: running the real forward with
``torch.export`` and building the twin) and :mod:`~fnml.interop.lowering` (the one table of torch ops).

fnml layers keep JAX-native layouts (``(in, out)`` kernels, HWIO conv kernels, channels-last
activations). ``state_dicts`` is the ONE place where torch layouts are converted, from the slots each
layer class declares (``torch_facts.slots``): ``torch name -> fnml attribute`` with the transpose
between the two layouts:

==================  ===============================  ==========================================
layer               torch tensor                     fnml attribute
==================  ===============================  ==========================================
Linear              weight ``(out, in)``             kernel ``(in, out)`` = weight.T
Conv2d              weight OIHW                      kernel HWIO = weight.transpose(2, 3, 1, 0)
BatchNorm1d/2d      weight, bias, running_mean,      same names, ``(C,)``; num_batches_tracked
                    running_var, num_batches_tracked an int scalar
LayerNorm           weight, bias                     same names and shapes
Embedding           weight ``(num, dim)``            weight ``(num, dim)``
RNN/LSTM/GRU        weight_ih_l{k}{s} ``(G*H, in)``  kernel_ih_l{k}{s} ``(in, G*H)`` = .T
                    weight_hh_l{k}{s} ``(G*H, H)``   kernel_hh_l{k}{s} ``(H, G*H)`` = .T
                    bias_ih_l{k}{s}, bias_hh_l{k}{s} same names and shapes
==================  ===============================  ==========================================

Torch names of a composed module are the dotted attribute path (a ``Sequential``'s ``layers``
component is dropped, so child ``i`` is ``"i"``) followed by the torch parameter name.

Dtypes: ``load_state_dict`` keeps each fnml variable's dtype (a float64 torch tensor loaded into a
float32 model is rounded to float32; with JAX's default ``jax_enable_x64=False`` models are float32,
so float64 checkpoints are always rounded; enable x64 and build the model in float64 to keep them).
``from_torch`` builds the twin in the torch module's dtype (float64 needs x64; without it the twin is
float32). ``state_dict`` returns the fnml dtypes; ``num_batches_tracked`` is returned as int64 like torch.

``twin = interop.from_torch(torch_model, example_x)`` builds a whole-model twin (torch layouts in, the
same outputs as ``torch_model``); weights alone move with ``state_dict`` / ``load_state_dict``:

>>> from flax import nnx
>>> from fnml import interop, layers
>>> model = layers.SimpleNN(rngs=nnx.Rngs(0))
>>> sd = interop.state_dict(model)              # what torch_model.load_state_dict(...) takes (as tensors)
>>> list(sd)
['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
>>> _ = interop.load_state_dict(model, sd)      # torch_model.state_dict() works the same way
"""

from fnml.interop.capture import TorchTwin, from_torch
from fnml.interop.files import load_safetensors, save_safetensors
from fnml.interop.lowering import UnsupportedTorchOpError
from fnml.interop.state_dicts import (
    IncompatibleKeys,
    StateDictError,
    _named_slots,  # noqa: F401 - fnml.train maps variables to torch names with it
    load_state_dict,
    named_layers,
    state_dict,
)

__all__ = [
    "IncompatibleKeys",
    "StateDictError",
    "TorchTwin",
    "UnsupportedTorchOpError",
    "from_torch",
    "load_safetensors",
    "load_state_dict",
    "named_layers",
    "save_safetensors",
    "state_dict",
]
