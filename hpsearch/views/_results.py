"""Reading studies back: :class:`StudyResult` for notebooks and the CLI."""

from __future__ import annotations

import tempfile
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.config import StudyConfig
from hpsearch.errors import StorageError
from hpsearch.storage import check_storage, mask_url, open_readonly_storage, sqlite_path

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["StudyResult", "load_result"]


class StudyResult:
    """A study in storage, read without writing to it."""

    def __init__(self, study_name: str, storage_url: str, *, config: StudyConfig | None = None) -> None:
        self.study_name = study_name
        self.storage_url = storage_url
        self.config = config
        self.orphans_recovered = 0

    def __repr__(self) -> str:
        return f"StudyResult({self.study_name!r}, {mask_url(self.storage_url)!r})"

    @cached_property
    def study(self) -> optuna.Study:
        import optuna

        # Read-only connections: a result (and `hpsearch show`/`export`) can never write the study.
        storage = open_readonly_storage(self.storage_url)
        try:
            return optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:
            raise StorageError(
                f"no study named {self.study_name!r} in {mask_url(self.storage_url)}; run it first"
            ) from None

    def _complete(self) -> list[optuna.trial.FrozenTrial]:
        """The study's own feasible COMPLETE trials (warm-start history copied from another study left out)."""
        from optuna.trial import TrialState

        from hpsearch.study._objectives import feasible
        from hpsearch.study._scheduling import WARM_START_ATTR

        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return [t for t in trials if WARM_START_ATTR not in t.user_attrs and t.values is not None and feasible(t)]

    @property
    def metric_names(self) -> list[str]:
        """The objectives' metric names, in order."""
        from hpsearch.study._objectives import study_metrics

        return study_metrics(self.study)

    @property
    def directions(self) -> list[str]:
        """Each objective's direction (``maximize``/``minimize``), in order."""
        return [d.name.lower() for d in self.study.directions]

    @property
    def multi_objective(self) -> bool:
        return len(self.study.directions) > 1

    @property
    def best_trials(self) -> list[optuna.trial.FrozenTrial]:
        """The Pareto front of the study's own feasible COMPLETE trials, by number.

        With one objective: the trials that share the best value.
        """
        from hpsearch.study._objectives import pareto_front

        return pareto_front(self._complete(), self.directions)

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial:
        """The best of the study's own feasible COMPLETE trials (never a warm-start copy); the first one on a tie.

        Raises:
            StorageError: No such trial yet, or the study has several objectives (see :attr:`best_trials`).
        """
        if self.multi_objective:
            raise StorageError(
                f"study {self.study_name!r} has {len(self.directions)} objectives ({', '.join(self.metric_names)}): "
                "it has a Pareto front, not one best trial; use best_trials (`hpsearch best` prints the front)"
            )
        own = self._complete()
        if not own:
            raise StorageError(f"study {self.study_name!r} has no feasible COMPLETE trial yet")
        sign = -1 if self.study.direction.name == "MAXIMIZE" else 1
        return min(own, key=lambda t: (sign * t.value, t.number))  # type: ignore[operator]

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.best_trial.params)

    @property
    def best_value(self) -> float:
        value = self.best_trial.value
        assert value is not None
        return value

    def counts(self) -> dict[str, int]:
        """Number of trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
        out: dict[str, int] = {}
        for t in self.study.get_trials(deepcopy=False):
            out[t.state.name] = out.get(t.state.name, 0) + 1
        return out

    def trials_dataframe(self, *, best_first: bool = False) -> pd.DataFrame:
        """One row per trial: number, state, value, params_*, metrics, host, reason, duration."""
        import pandas as pd

        rows = []
        multi, names = self.multi_objective, self.metric_names
        front = {t.number for t in self.best_trials} if multi else set()
        for t in self.study.get_trials(deepcopy=False):
            row: dict[str, Any] = {"number": t.number, "state": t.state.name}
            if multi:
                row.update({f"values_{m}": v for m, v in zip(names, t.values or [None] * len(names), strict=True)})
                row["pareto"] = t.number in front
            else:
                row["value"] = t.value
            if t.constraints:
                row["feasible"] = all(v <= 0 for v in t.constraints.values())
            row["duration_s"] = t.duration.total_seconds() if t.duration else None
            row.update({f"params_{k}": v for k, v in t.params.items()})
            for k, v in (t.user_attrs.get("metrics") or {}).items():
                row[f"metric_{k}"] = v
            placement = t.user_attrs.get("placement") or {}
            row["host"] = placement.get("host")
            row["device"] = placement.get("device")
            row["fail_reason"] = t.user_attrs.get("fail_reason")
            rows.append(row)
        frame = pd.DataFrame(rows)
        if best_first and len(frame) and multi:
            frame = frame.sort_values(["pareto", "number"], ascending=[False, True]).reset_index(drop=True)
        elif best_first and len(frame):
            desc = self.study.direction.name == "MAXIMIZE"
            keys = ["value", "number"] if "feasible" not in frame else ["feasible", "value", "number"]
            up = [not desc, True] if "feasible" not in frame else [False, not desc, True]
            frame = frame.sort_values(keys, ascending=up, na_position="last").reset_index(drop=True)
        return frame

    def trial(self, number: int) -> optuna.trial.FrozenTrial:
        """The trial numbered ``number``."""
        for t in self.study.get_trials(deepcopy=False):
            if t.number == number:
                return t
        raise StorageError(f"study {self.study_name!r} has no trial {number}; see `hpsearch show` for its trials")

    def export_best_model(self, out_dir: str | Path) -> Path:
        """Unpack the best trial's saved model (an Optuna artifact) into ``out_dir``.

        The folder then loads with the trainer's own loader, e.g.
        ``AutoModelForSequenceClassification.from_pretrained(out_dir)``.
        """
        return self.export_model(out_dir)

    def export_model(self, out_dir: str | Path, *, trial: int | None = None) -> Path:
        """Unpack the saved model of trial ``trial`` (default: the best) into ``out_dir``.

        A trial keeps its model when it was the best so far as it finished,
        so every earlier best can be exported, not only the final one.
        ``out_dir`` is created only once the model is found.
        """
        import tarfile

        from optuna.artifacts import FileSystemArtifactStore, download_artifact

        best = self.best_trial if trial is None else None
        chosen = best if best is not None else self.trial(trial)  # type: ignore[arg-type]
        artifact_id = (chosen.user_attrs.get("artifacts") or {}).get("model.tar")
        if artifact_id is None:
            why = (
                "its trainer did not save one (set trainer.save_model: true)"
                if best is not None
                else "a trial keeps its model only if it was the best so far when it finished "
                "and its trainer saves one; export the best with --best"
            )
            raise StorageError(f"trial {chosen.number} of study {self.study_name!r} has no saved model; {why}")
        root = self._artifact_root()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hps-export-") as tmp:
            tar_path = Path(tmp) / "model.tar"
            download_artifact(
                artifact_store=FileSystemArtifactStore(str(root)), artifact_id=artifact_id, file_path=str(tar_path)
            )
            with tarfile.open(tar_path) as tar:
                tar.extractall(out, filter="data")
        return out

    def load_best_model(self) -> Any:
        """The best trial's model, loaded by its trainer (text: ``(model, tokenizer)``).

        The model is unpacked into a temporary folder that is removed once loaded.
        """
        from hpsearch.trainers import trainer_class

        kind = self.study.user_attrs.get("hpsearch.trainer", "")
        cls = trainer_class(kind)
        loader = getattr(cls, "load_model", None)
        if loader is None:
            raise StorageError(f"trainer {kind!r} has no model loader")
        with tempfile.TemporaryDirectory(prefix="hps-best-") as out:
            # Loaders read everything into memory (torch.load, from_pretrained), so the
            # folder can go; on Linux even a memory-mapped weights file stays readable.
            self.export_best_model(out)
            return loader(out)

    def _artifact_root(self) -> Path:
        if self.config is not None:
            return self.config.resolved_artifacts()
        path = sqlite_path(self.storage_url)
        if path is None:
            raise StorageError("pass the study file to find its artifact folder")
        return path.resolve().parent / "hpsearch-artifacts"


def load_result(study: str | Path | StudyConfig, *, storage: str | None = None, name: str | None = None) -> StudyResult:
    """The stored result of a study file (or of ``name`` in ``storage``)."""
    from hpsearch.config import load_config

    cfg = study if isinstance(study, StudyConfig) else load_config(study)
    if storage:
        # As in `run`: an overriding storage also moves the default artifact folder.
        cfg = cfg.model_copy(update={"storage": storage})
    url = storage or cfg.resolved_storage()
    check_storage(url, file=cfg.file, must_exist=True)
    return StudyResult(name or cfg.name, url, config=cfg)
