"""The one implementation of every neural-network op, with torch's names, arguments and defaults.

PyTorch equivalent: ``torch.nn.functional``.

Layers in :mod:`fnml.layers` hold parameters and call these functions; ``fnml.interop``'s ``from_torch``
lowers captured torch ops onto them. Layouts: where torch users call an op with torch's layout, the
function takes torch's layout and says so (``linear``'s weight is ``(out_features, in_features)``,
attention is ``(B, heads, T, head_dim)``); image ops take torch's NCHW by default and channels-last
``(N, H, W, C)`` with the keyword ``channels_last=True`` (the fast path fnml's layers use on XLA, where the
layout decision is made once, in the function).
"""

from __future__ import annotations

__all__: list[str] = []

# --------------------------------------------------------------------------------------------------
# Linear (owner: linear family)
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Embedding (owner: sparse family)
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Convolution (owner: conv family)
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Pooling (owner: pooling family)
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Padding, resampling, pixel shuffle (owner: conv family)
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Normalisation (owner: normalization family)
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Attention (owner: transformer family)
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Activations and softmax (owner: activation family)
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Dropout (owner: dropout family)
# --------------------------------------------------------------------------------------------------
