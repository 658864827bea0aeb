"""The private Ray that ``hpsearch run`` starts always requires a token, whatever RAY_AUTH_MODE says."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.ray

# Runs in the private Ray's worker: clients in fresh processes try the cluster's GCS
# without a token, with a wrong one, and with the cluster's own (the control).
PROBE = '''
import os, subprocess, sys

CLIENT = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_keys(b"", None, timeout=30)
    print("admitted")
except Exception as e:
    print("refused", type(e).__name__)
"""


def probe(params, ctx):
    import ray

    gcs = ray.get_runtime_context().gcs_address
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    clients = {
        "no_token": {"RAY_AUTH_MODE": "disabled"},
        "wrong_token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
        "its_token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN", "")},
    }
    for name, env in clients.items():
        out = subprocess.run([sys.executable, "-c", CLIENT, gcs], env={**base, **env},
                             capture_output=True, text=True, timeout=120)
        lines = out.stdout.strip().splitlines()
        ctx.set_user_attr(name, lines[-1] if lines else out.stderr[-300:])
    ctx.set_user_attr("gcs", gcs)
    return 0.0
'''


@pytest.mark.parametrize("mode", ["disabled", "token"])
def test_private_ray_requires_a_token_even_when_ray_auth_mode_is_set(mode, write_study, tmp_path):
    """RAY_AUTH_MODE=disabled must not open it; =token without a token must not write ~/.ray."""
    import optuna

    path = write_study("""
        name: auth
        objective: {metric: value, direction: minimize}
        n_trials: 1
        executor: ray
        max_concurrent_trials: 1
        search_space:
          x: {type: float, low: 0, high: 1}
        trainer: {kind: python, function: "probe.py:probe"}
        """, **{"probe.py": textwrap.dedent(PROBE)})
    home = tmp_path / "home"
    home.mkdir()
    # The user's environment: this auth mode, no token anywhere (another test may have set one here).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update({"RAY_AUTH_MODE": mode, "HOME": str(home)})
    res = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(path), "--quiet"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = optuna.load_study(study_name="auth", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}").trials
    attrs = trial.user_attrs
    assert attrs["gcs"].startswith("127.0.0.1:") and trial.state.name == "COMPLETE", attrs
    assert attrs["no_token"] == "refused AuthenticationError", attrs
    assert attrs["wrong_token"] == "refused AuthenticationError", attrs
    assert attrs["its_token"] == "admitted", attrs  # the control: the probe itself can get in
    assert not (home / ".ray").exists()  # the token lived in the environment only
