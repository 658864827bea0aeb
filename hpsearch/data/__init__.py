"""Datasets, splits, tokenisation cache and augmentation used by the trainers.

Implementation lives in private modules (``_text``); import from there lazily
(it pulls in scikit-learn, and torch for the collate functions at call time).
"""

from __future__ import annotations

__all__: list[str] = []
