"""Step 1 of ``run.py``: benchmarks/text_trainer.py's throughput for several models, one process.

Each model's result is written to ``OUT`` as soon as it is measured, so a
timeout in a later model keeps the earlier ones.

    python _trainer_step.py SPEC.json OUT.json

SPEC: {"device", "batch_size", "max_length", "examples", "epochs", "threads",
"datasets": [...], "models": [{"label", "model", "model_config"}]}
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import text_trainer  # benchmarks/text_trainer.py, found through the path above


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    results: dict[str, object] = {}
    rc = 0
    for m in spec["models"]:
        try:
            results[m["label"]] = text_trainer.throughput(
                spec["device"], spec["batch_size"], spec["max_length"], spec["examples"],
                datasets=tuple(spec["datasets"]), model=m["model"], model_config=m.get("model_config"),
                epochs=spec["epochs"], threads=spec.get("threads"),
            )
        except Exception as err:  # noqa: BLE001 - one model failing must not lose the other
            traceback.print_exc()
            results[m["label"]] = {"error": f"{type(err).__name__}: {err}"[:1000]}
            rc = 1
        out.write_text(json.dumps(results, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
