"""``hpsearch ARGS`` in this process, writing its peak memory to a JSON file at exit.

Used by the packing step of ``run.py``: each driver runs its trials one at a
time (``--executor local``), so the process's peak is its largest trial's.

    python _driver.py MEM.json run study.yaml --executor local -q
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import sys
from pathlib import Path


def _record(path: Path) -> None:
    out: dict[str, float | int] = {
        "pid": os.getpid(),
        "rss_max_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        # Allocated: tensors; reserved: what the caching allocator held (what the
        # GPU lent this process, less its CUDA context).
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["cuda_max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    path.write_text(json.dumps(out))


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: _driver.py MEM.json HPSEARCH-ARGS...")
    atexit.register(_record, Path(sys.argv[1]))
    sys.argv = ["hpsearch", *sys.argv[2:]]
    from hpsearch.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
