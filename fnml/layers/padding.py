"""Padding layers.

PyTorch equivalent: ``torch/nn/modules/padding.py``.
"""

from __future__ import annotations

__all__: list[str] = []
