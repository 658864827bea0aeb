"""dashboards/explore.ipynb runs top to bottom (nbclient, the venv's own Python as kernel)."""

from __future__ import annotations

import glob
import shutil
import sys
import tempfile
from pathlib import Path

from tests.conftest import REPO
from tests.services import require_module

NOTEBOOK = REPO / "dashboards" / "explore.ipynb"


def test_explore_notebook_runs_and_cleans_up(tmp_path: Path) -> None:
    # Skips without the test extras, fails under CI (tests/services.py: missing()).
    nbformat = require_module("nbformat")
    nbclient = require_module("nbclient")
    require_module("ipykernel")
    copy = tmp_path / "explore.ipynb"
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    before = set(glob.glob(str(Path(tempfile.gettempdir()) / "hpsearch-explore-*")))
    repo_files = {p for p in (REPO / "dashboards").iterdir()}
    from jupyter_client.manager import KernelManager

    # Kernel "python3" resolves to this interpreter (sys.executable), i.e. the venv's Python;
    # IPC sockets in tmp_path, so the kernel opens no TCP port at all.
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "kernel"))
    client = nbclient.NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for outs in outputs.values() for o in outs
    )
    assert "working in" in text and "removed" in text
    assert "best_value" in text and "digits-gridsearchcv" in text  # the compare table was shown
    mimes = {m for outs in outputs.values() for o in outs for m in o.get("data", {})}
    assert "application/vnd.plotly.v1+json" in mimes or "text/html" in mimes, mimes  # the plot
    assert not any(o.get("output_type") == "error" for outs in outputs.values() for o in outs)
    after = set(glob.glob(str(Path(tempfile.gettempdir()) / "hpsearch-explore-*")))
    assert after == before, "the notebook left its temp folder behind"
    assert {p for p in (REPO / "dashboards").iterdir()} == repo_files, "the notebook wrote into the repo"
    print(f"kernel: {sys.executable}")
