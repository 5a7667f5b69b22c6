"""Multi-head attention and the transformer layers.

PyTorch equivalent: ``torch/nn/modules/activation.py`` (MultiheadAttention), ``transformer.py``.
"""

from __future__ import annotations

__all__: list[str] = []
