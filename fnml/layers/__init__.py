"""Flax NNX layers with PyTorch's constructor signatures, defaults, initialisation and numbers.

PyTorch equivalent: ``torch.nn``.

Every layer here is a :class:`flax.nnx.Module` that reads like ``torch.nn.Module``: ``__init__`` builds the
parameters, ``__call__`` runs the layer, ``print(model)`` shows a tree like torch's. Inside, layouts are
JAX-native:

- ``Linear.kernel`` is ``(in_features, out_features)`` (torch's ``weight.T``);
- ``Conv2d``, the pools and ``BatchNorm2d`` take channels-last images ``(N, H, W, C)``; convert torch's
  ``(N, C, H, W)`` with ``fnml.tensors.nchw_to_nhwc``; ``Conv2d.kernel`` is HWIO (torch OIHW
  transposed ``(2, 3, 1, 0)``);
- ``BatchNorm1d`` takes ``(N, C)`` or ``(N, L, C)`` (torch: ``(N, C, L)``).

Torch layouts are converted in ``fnml.interop`` only, keyed by the attribute names documented on each
class. ``model.train()`` / ``model.eval()`` (flax's own mechanism: they set ``deterministic`` on Dropout
and ``use_running_average`` on BatchNorm in every nested module) switch modes like torch; fnml layers
start in training mode, as torch's do.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from fnml import layers
>>> model = layers.Sequential(
...     layers.Linear(4, 8, rngs=nnx.Rngs(0)), layers.ReLU(), layers.Linear(8, 1, rngs=nnx.Rngs(1))
... )
>>> print(model)
Sequential(
  (0): Linear(in_features=4, out_features=8, bias=True)
  (1): ReLU()
  (2): Linear(in_features=8, out_features=1, bias=True)
)
>>> model[0].kernel.shape  # (in_features, out_features): torch's weight.T
(4, 8)
>>> model(jnp.ones((3, 4), jnp.float32)).shape
(3, 1)
>>> conv = layers.Conv2d(3, 8, 3, rngs=nnx.Rngs(0))
>>> conv.kernel.shape, conv(jnp.ones((2, 16, 16, 3), jnp.float32)).shape  # HWIO kernel; NHWC in and out
((3, 3, 3, 8), (2, 14, 14, 8))
>>> model.eval() is model  # eval() / train() switch modes in place and return the module
True
"""

# Explicit re-exports (``name as name``): one family file per torch.nn module file.
from fnml.layers.activation import CELU as CELU
from fnml.layers.activation import ELU as ELU
from fnml.layers.activation import GELU as GELU
from fnml.layers.activation import GLU as GLU
from fnml.layers.activation import SELU as SELU
from fnml.layers.activation import Hardsigmoid as Hardsigmoid
from fnml.layers.activation import Hardswish as Hardswish
from fnml.layers.activation import Hardtanh as Hardtanh
from fnml.layers.activation import LeakyReLU as LeakyReLU
from fnml.layers.activation import LogSigmoid as LogSigmoid
from fnml.layers.activation import LogSoftmax as LogSoftmax
from fnml.layers.activation import Mish as Mish
from fnml.layers.activation import PReLU as PReLU
from fnml.layers.activation import ReLU as ReLU
from fnml.layers.activation import ReLU6 as ReLU6
from fnml.layers.activation import Sigmoid as Sigmoid
from fnml.layers.activation import SiLU as SiLU
from fnml.layers.activation import Softmax as Softmax
from fnml.layers.activation import Softplus as Softplus
from fnml.layers.activation import Softsign as Softsign
from fnml.layers.activation import Tanh as Tanh
from fnml.layers.activation import Threshold as Threshold
from fnml.layers.base import Module as Module
from fnml.layers.base import freeze as freeze
from fnml.layers.base import is_frozen as is_frozen
from fnml.layers.base import is_trainable as is_trainable
from fnml.layers.base import module_repr as module_repr
from fnml.layers.base import torch_uniform as torch_uniform
from fnml.layers.base import unfreeze as unfreeze
from fnml.layers.container import Flatten as Flatten
from fnml.layers.container import ModuleDict as ModuleDict
from fnml.layers.container import ModuleList as ModuleList
from fnml.layers.container import Sequential as Sequential
from fnml.layers.container import Unflatten as Unflatten
from fnml.layers.conv import Conv1d as Conv1d
from fnml.layers.conv import Conv2d as Conv2d
from fnml.layers.conv import ConvTranspose1d as ConvTranspose1d
from fnml.layers.conv import ConvTranspose2d as ConvTranspose2d
from fnml.layers.dropout import AlphaDropout as AlphaDropout
from fnml.layers.dropout import Dropout as Dropout
from fnml.layers.dropout import Dropout1d as Dropout1d
from fnml.layers.dropout import Dropout2d as Dropout2d
from fnml.layers.linear import Identity as Identity
from fnml.layers.linear import Linear as Linear
from fnml.layers.linear import NonDynamicallyQuantizableLinear as NonDynamicallyQuantizableLinear
from fnml.layers.normalization import BatchNorm1d as BatchNorm1d
from fnml.layers.normalization import BatchNorm2d as BatchNorm2d
from fnml.layers.normalization import GroupNorm as GroupNorm
from fnml.layers.normalization import InstanceNorm1d as InstanceNorm1d
from fnml.layers.normalization import InstanceNorm2d as InstanceNorm2d
from fnml.layers.normalization import LayerNorm as LayerNorm
from fnml.layers.normalization import LocalResponseNorm as LocalResponseNorm
from fnml.layers.normalization import RMSNorm as RMSNorm
from fnml.layers.padding import CircularPad1d as CircularPad1d
from fnml.layers.padding import CircularPad2d as CircularPad2d
from fnml.layers.padding import ConstantPad1d as ConstantPad1d
from fnml.layers.padding import ConstantPad2d as ConstantPad2d
from fnml.layers.padding import ReflectionPad1d as ReflectionPad1d
from fnml.layers.padding import ReflectionPad2d as ReflectionPad2d
from fnml.layers.padding import ReplicationPad1d as ReplicationPad1d
from fnml.layers.padding import ReplicationPad2d as ReplicationPad2d
from fnml.layers.padding import ZeroPad1d as ZeroPad1d
from fnml.layers.padding import ZeroPad2d as ZeroPad2d
from fnml.layers.pooling import AdaptiveAvgPool1d as AdaptiveAvgPool1d
from fnml.layers.pooling import AdaptiveAvgPool2d as AdaptiveAvgPool2d
from fnml.layers.pooling import AdaptiveMaxPool1d as AdaptiveMaxPool1d
from fnml.layers.pooling import AdaptiveMaxPool2d as AdaptiveMaxPool2d
from fnml.layers.pooling import AvgPool1d as AvgPool1d
from fnml.layers.pooling import AvgPool2d as AvgPool2d
from fnml.layers.pooling import MaxPool1d as MaxPool1d
from fnml.layers.pooling import MaxPool2d as MaxPool2d
from fnml.layers.recurrent import GRU as GRU
from fnml.layers.recurrent import LSTM as LSTM
from fnml.layers.recurrent import RNN as RNN
from fnml.layers.recurrent import GRUCell as GRUCell
from fnml.layers.recurrent import LSTMCell as LSTMCell
from fnml.layers.recurrent import RNNCell as RNNCell
from fnml.layers.sparse import Embedding as Embedding
from fnml.layers.transformer import MultiheadAttention as MultiheadAttention
from fnml.layers.transformer import Transformer as Transformer
from fnml.layers.transformer import TransformerDecoder as TransformerDecoder
from fnml.layers.transformer import TransformerDecoderLayer as TransformerDecoderLayer
from fnml.layers.transformer import TransformerEncoder as TransformerEncoder
from fnml.layers.transformer import TransformerEncoderLayer as TransformerEncoderLayer
from fnml.layers.tutorial import SimpleNN as SimpleNN
from fnml.layers.upsampling import PixelShuffle as PixelShuffle
from fnml.layers.upsampling import PixelUnshuffle as PixelUnshuffle
from fnml.layers.upsampling import Upsample as Upsample

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AlphaDropout",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "CELU",
    "CircularPad1d",
    "CircularPad2d",
    "ConstantPad1d",
    "ConstantPad2d",
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "ELU",
    "Embedding",
    "Flatten",
    "GELU",
    "GLU",
    "GRU",
    "GRUCell",
    "GroupNorm",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "Identity",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "LSTM",
    "LSTMCell",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LocalResponseNorm",
    "LogSigmoid",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "Mish",
    "Module",
    "ModuleDict",
    "ModuleList",
    "MultiheadAttention",
    "NonDynamicallyQuantizableLinear",
    "PReLU",
    "PixelShuffle",
    "PixelUnshuffle",
    "RMSNorm",
    "RNN",
    "RNNCell",
    "ReLU",
    "ReLU6",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "SELU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "SimpleNN",
    "Softmax",
    "Softplus",
    "Softsign",
    "Tanh",
    "Threshold",
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "Unflatten",
    "Upsample",
    "ZeroPad1d",
    "ZeroPad2d",
    "freeze",
    "is_frozen",
    "is_trainable",
    "module_repr",
    "torch_uniform",
    "unfreeze",
]
