"""A checkpoint format that never unpickles: JSON for the structure, ``.npz`` for arrays.

``ctx.save_checkpoint(obj, step)`` with an object (not a folder) stores plain data:
dicts with string keys, lists, tuples, strings, numbers, booleans, None, numpy
arrays and scalars, and torch tensors (stored as numpy arrays; bfloat16 as
float32). Loading reads JSON and ``numpy.load(allow_pickle=False)``: a checkpoint
folder someone else could write cannot run code in a trial. Anything else is
refused with a TypeError that says what to do (write a folder yourself).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["ARRAYS_FILE", "STATE_FILE", "dump", "load"]

STATE_FILE = "state.json"
ARRAYS_FILE = "arrays.npz"
_ARRAY, _TENSOR, _TUPLE = "__hps_ndarray__", "__hps_tensor__", "__hps_tuple__"


def dump(obj: Any, folder: Path) -> None:
    """Write ``obj`` into ``folder`` (``state.json`` and, with arrays, ``arrays.npz``)."""
    arrays: list[Any] = []
    encoded = _encode(obj, arrays, "state")
    (folder / STATE_FILE).write_text(json.dumps(encoded, allow_nan=True))
    if arrays:
        import numpy as np

        np.savez(folder / ARRAYS_FILE, **{f"a{i}": a for i, a in enumerate(arrays)})


def load(folder: Path) -> Any:
    """What :func:`dump` wrote into ``folder``."""
    encoded = json.loads((folder / STATE_FILE).read_text())
    arrays: dict[str, Any] = {}
    if (folder / ARRAYS_FILE).exists():
        import numpy as np

        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    return _decode(encoded, arrays)


def _encode(obj: Any, arrays: list[Any], where: str) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"save_checkpoint: {where} has a non-string key; use string keys")
        return {k: _encode(v, arrays, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        arrays.append((t.float() if t.dtype == torch.bfloat16 else t).numpy())
        return {_TENSOR: len(arrays) - 1}
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(obj, (numpy.ndarray, numpy.generic)):
        if isinstance(obj, numpy.generic):
            return obj.item()
        if obj.dtype == object:
            raise TypeError(f"save_checkpoint: {where} is an object array; store numbers only")
        arrays.append(obj)
        return {_ARRAY: len(arrays) - 1}
    raise TypeError(
        f"save_checkpoint: {where} is a {type(obj).__name__}, which cannot be stored without pickle; store plain "
        "data (dicts, lists, numbers, strings, numpy arrays, torch tensors), or write a folder and pass its path"
    )


def _decode(obj: Any, arrays: dict[str, Any]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {_ARRAY}:
        return arrays[f"a{obj[_ARRAY]}"]
    if set(obj) == {_TENSOR}:
        import torch

        return torch.from_numpy(arrays[f"a{obj[_TENSOR]}"].copy())
    if set(obj) == {_TUPLE}:
        return tuple(_decode(v, arrays) for v in obj[_TUPLE])
    return {k: _decode(v, arrays) for k, v in obj.items()}
