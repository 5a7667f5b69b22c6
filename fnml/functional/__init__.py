"""The one implementation of every neural-network op, with torch's names, arguments and defaults.

PyTorch equivalent: ``torch.nn.functional``.

Layers in :mod:`fnml.layers` hold parameters and call these functions; ``fnml.interop``'s ``from_torch``
lowers captured torch ops onto them. Layouts: where torch users call an op with torch's layout, the
function takes torch's layout and says so (``linear``'s weight is ``(out_features, in_features)``,
attention is ``(B, heads, T, head_dim)``); image ops take torch's NCHW by default and channels-last
``(N, H, W, C)`` with the keyword ``channels_last=True`` (the fast path fnml's layers use on XLA, where the
layout decision is made once, in the function).
"""

# Explicit re-exports (``name as name``): each op lives in its family's module.
from fnml.functional.activation import celu as celu
from fnml.functional.activation import elu as elu
from fnml.functional.activation import gelu as gelu
from fnml.functional.activation import glu as glu
from fnml.functional.activation import hardsigmoid as hardsigmoid
from fnml.functional.activation import hardswish as hardswish
from fnml.functional.activation import hardtanh as hardtanh
from fnml.functional.activation import leaky_relu as leaky_relu
from fnml.functional.activation import log_softmax as log_softmax
from fnml.functional.activation import logsigmoid as logsigmoid
from fnml.functional.activation import mish as mish
from fnml.functional.activation import prelu as prelu
from fnml.functional.activation import relu as relu
from fnml.functional.activation import relu6 as relu6
from fnml.functional.activation import selu as selu
from fnml.functional.activation import sigmoid as sigmoid
from fnml.functional.activation import silu as silu
from fnml.functional.activation import softmax as softmax
from fnml.functional.activation import softplus as softplus
from fnml.functional.activation import softsign as softsign
from fnml.functional.activation import tanh as tanh
from fnml.functional.activation import threshold as threshold

# The AD-mode switches fnml's steps turn on (not torch ops, so not in __all__).
from fnml.functional.ad_mode import dropping_param_writes as dropping_param_writes
from fnml.functional.ad_mode import reverse_mode_only as reverse_mode_only
from fnml.functional.attention import multi_head_attention_forward as multi_head_attention_forward
from fnml.functional.attention import scaled_dot_product_attention as scaled_dot_product_attention
from fnml.functional.batch_norm import batch_norm as batch_norm
from fnml.functional.batch_norm import batch_norm_with_stats as batch_norm_with_stats
from fnml.functional.batch_norm import instance_norm as instance_norm
from fnml.functional.batch_norm import instance_norm_with_stats as instance_norm_with_stats
from fnml.functional.conv import conv1d as conv1d
from fnml.functional.conv import conv2d as conv2d
from fnml.functional.conv import conv_transpose1d as conv_transpose1d
from fnml.functional.conv import conv_transpose2d as conv_transpose2d
from fnml.functional.dropout import alpha_dropout as alpha_dropout
from fnml.functional.dropout import dropout as dropout
from fnml.functional.dropout import dropout1d as dropout1d
from fnml.functional.dropout import dropout2d as dropout2d
from fnml.functional.embedding import embedding as embedding
from fnml.functional.embedding import embedding_renorm as embedding_renorm
from fnml.functional.linear import linear as linear
from fnml.functional.normalization import group_norm as group_norm
from fnml.functional.normalization import layer_norm as layer_norm
from fnml.functional.normalization import local_response_norm as local_response_norm
from fnml.functional.normalization import rms_norm as rms_norm
from fnml.functional.padding import pad as pad
from fnml.functional.pooling import adaptive_avg_pool1d as adaptive_avg_pool1d
from fnml.functional.pooling import adaptive_avg_pool2d as adaptive_avg_pool2d
from fnml.functional.pooling import adaptive_max_pool1d as adaptive_max_pool1d
from fnml.functional.pooling import adaptive_max_pool2d as adaptive_max_pool2d
from fnml.functional.pooling import avg_pool1d as avg_pool1d
from fnml.functional.pooling import avg_pool2d as avg_pool2d
from fnml.functional.pooling import max_pool1d as max_pool1d
from fnml.functional.pooling import max_pool2d as max_pool2d
from fnml.functional.resample import interpolate as interpolate
from fnml.functional.resample import pixel_shuffle as pixel_shuffle
from fnml.functional.resample import pixel_unshuffle as pixel_unshuffle

__all__ = [
    "linear",
    "embedding",
    "embedding_renorm",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "max_pool1d",
    "max_pool2d",
    "interpolate",
    "pad",
    "pixel_shuffle",
    "pixel_unshuffle",
    "layer_norm",
    "rms_norm",
    "batch_norm",
    "batch_norm_with_stats",
    "instance_norm",
    "instance_norm_with_stats",
    "group_norm",
    "local_response_norm",
    "scaled_dot_product_attention",
    "multi_head_attention_forward",
    "celu",
    "elu",
    "gelu",
    "glu",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "leaky_relu",
    "log_softmax",
    "logsigmoid",
    "mish",
    "prelu",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "softsign",
    "tanh",
    "threshold",
    "alpha_dropout",
    "dropout",
    "dropout1d",
    "dropout2d",
]
