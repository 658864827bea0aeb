"""Re-running one stored trial: :func:`reproduce_trial` (``hpsearch reproduce``).

The trial runs again from the study's stored resolved config (``hpsearch.config``) and its
stored params, in a scratch study on a temporary SQLite file with the local executor. The
original study is only read (read-only connections), so its storage stays byte-for-byte as it was.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from hpsearch.config import StudyConfig, format_validation
from hpsearch.errors import ConfigError, StorageError, StudyFailedError
from hpsearch.study._environment import current_environment, environment_changes, environment_for_trial
from hpsearch.views._results import StudyResult, load_result

if TYPE_CHECKING:
    import optuna

__all__ = ["Reproduction", "reproduce_trial", "reproduction_table"]

#: Study user attribute holding the resolved config the study was run with.
CONFIG_ATTR = "hpsearch.config"


@dataclass
class Reproduction:
    """A stored trial and its re-run: metrics side by side."""

    study_name: str
    number: int
    stored: dict[str, Any]
    reproduced: dict[str, Any]
    #: The re-run's state (COMPLETE, PRUNED, FAIL) and, when it failed, why.
    state: str = "COMPLETE"
    fail_reason: str | None = None
    #: One line when the stored environment differs from this one (versions or git commit).
    warning: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, Any, Any, float | None]]:
        """``(metric, stored, reproduced, reproduced - stored)`` for each metric either side holds."""
        names = list(self.stored) + [k for k in self.reproduced if k not in self.stored]
        out = []
        for name in names:
            a, b = self.stored.get(name), self.reproduced.get(name)
            diff = float(b) - float(a) if _number(a) and _number(b) else None  # type: ignore[arg-type]
            out.append((name, a, b, diff))
        return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def reproduce_trial(study: str | Path | StudyConfig, number: int, *, storage: str | None = None) -> Reproduction:
    """Re-run trial ``number`` of ``study`` (a study file) in a scratch study; the original is only read.

    Raises:
        StorageError: No such study or trial.
        ConfigError: The study has no stored config, the trial no params, or it cannot be re-run alone.
    """
    result = load_result(study, storage=storage)
    trial = result.trial(number)
    cfg = _stored_config(result, number, trial)
    folder = cfg.source.parent if cfg.source is not None else None
    stored_env = environment_for_trial(result.study.user_attrs, number)
    changes = environment_changes(stored_env, current_environment(folder)) if stored_env else []
    warning = f"environment differs from trial {number}'s: {'; '.join(changes)}" if changes else None
    stored = dict(trial.user_attrs.get("metrics") or {})
    if not stored and trial.values is not None:
        stored = dict(zip([o.metric for o in cfg.objectives], trial.values, strict=False))
    rerun = _rerun(cfg, dict(trial.params))
    rerun.study_name, rerun.number, rerun.stored, rerun.warning = result.study_name, number, stored, warning
    return rerun


def _stored_config(result: StudyResult, number: int, trial: optuna.trial.FrozenTrial) -> StudyConfig:
    """The study's stored resolved config, refusing what one trial cannot be re-run from."""
    cfg = result.config
    file = cfg.file if cfg is not None else result.study_name
    attrs = result.study.user_attrs
    text = attrs.get(CONFIG_ATTR)
    if not text:
        raise ConfigError(
            f"{file}: study {result.study_name!r} has no stored config ({CONFIG_ATTR}); it was run by an "
            "hpsearch that did not store it, so its trials cannot be reproduced"
        )
    if not trial.params:
        raise StorageError(
            f"{file}: trial {number} of study {result.study_name!r} has no params (state {trial.state.name}); "
            "pick a trial with params (see `hpsearch show`)"
        )
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {CONFIG_ATTR}: the stored config is not a mapping; it cannot be re-run")
    source = Path(attrs.get("hpsearch.study_file") or (cfg.source if cfg and cfg.source else Path(file)))
    if not source.is_file() and cfg is not None and cfg.source is not None:
        source = cfg.source  # the study moved: its files resolve from where it is now
    try:
        stored = StudyConfig.model_validate({**data, "source": source, "display_path": file})
    except ValidationError as e:
        raise ConfigError(format_validation(e, f"{file} ({CONFIG_ATTR})")) from None
    if stored.trainer.kind == "sklearn_search":
        raise ConfigError(
            f"{file}: trainer.kind: trial {number} was imported from one whole scikit-learn search and "
            "cannot be re-run alone; run the search again in a new study"
        )
    if stored.scheduler.name == "pbt":
        raise ConfigError(
            f"{file}: scheduler.name: a PBT trial continues other members' checkpoints and cannot be "
            "re-run alone; reproduce trials of a study with scheduler: sampler"
        )
    return stored


def _scratch_config(cfg: StudyConfig, params: dict[str, Any], tmp: Path) -> StudyConfig:
    """``cfg`` as a one-trial study of ``params`` in ``tmp``: its own storage, artifacts and checkpoints."""
    return cfg.model_copy(
        update={
            "storage": f"sqlite:///{tmp / 'reproduce.db'}",
            "artifacts": str(tmp / "artifacts"),
            "checkpoints": cfg.checkpoints.model_copy(update={"path": str(tmp / "checkpoints")}),
            "executor": "local",
            "n_trials": 1,
            "timeout": None,
            "max_failures": 1,
            "max_retries": 0,
            "enqueue": [params],
            "warm_start": None,
            "compare_with": [],
            "sampler": cfg.sampler.model_validate({"name": "random", "seed": 0}),
            "pruner": cfg.pruner.model_validate({"name": "none"}),
        }
    )


def _rerun(cfg: StudyConfig, params: dict[str, Any]) -> Reproduction:
    """Run ``params`` once in a scratch study on a temporary SQLite file (removed afterwards)."""
    from hpsearch.study import StudyManager

    with tempfile.TemporaryDirectory(prefix="hps-reproduce-") as tmp:
        scratch = _scratch_config(cfg, params, Path(tmp))
        manager = StudyManager(scratch, progress=False)
        with contextlib.suppress(StudyFailedError):  # the trial failed: its state and reason are read below
            manager.run()
        trials = manager.study.get_trials(deepcopy=False)
        if not trials:  # pragma: no cover - the enqueued trial always runs
            raise ConfigError(f"{cfg.file}: the trial did not run in the scratch study")
        t = trials[-1]
        reproduced = dict(t.user_attrs.get("metrics") or {})
        if not reproduced and t.values is not None:
            reproduced = dict(zip([o.metric for o in cfg.objectives], t.values, strict=False))
        reason = t.user_attrs.get("fail_reason")
        out = Reproduction(cfg.name, t.number, {}, reproduced, state=t.state.name, params=dict(t.params))
        out.fail_reason = None if reason is None else str(reason)
        # The scratch study's engine holds the file open: drop it before the folder goes.
        del manager.study
        return out


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if _number(v):
        return f"{v:.10g}"
    return str(v)


def reproduction_table(rep: Reproduction) -> str:
    """The metrics as a plain table: metric, stored, reproduced, difference (reproduced - stored)."""
    head = ("metric", "stored", "reproduced", "difference")
    rows = [head, *((m, _cell(a), _cell(b), _cell(d)) for m, a, b, d in rep.rows())]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    state = rep.state if rep.fail_reason is None else f"{rep.state} ({rep.fail_reason})"
    title = f"{rep.study_name}: trial {rep.number} reproduced ({state})"
    return "\n".join([title, *(line.rstrip() for line in lines)])
