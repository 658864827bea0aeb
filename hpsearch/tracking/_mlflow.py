"""MLflow: one parent run per study, one nested run per trial, through MLflow's own client.

A trial's run holds its params, each intermediate value as a step of the
objective's metric, the final metrics, its state and fail reason as tags, and
its artifacts (the model only with ``log_model``). Runs are tagged with the
study's tracking id and the trial's number; a run is complete once it carries
``hpsearch.logged``. On (re)connecting, the tracker reads the study's child
runs once, so a trial that a killed run logged but did not record is not logged
again, and a half-written one is deleted and written anew.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError
from hpsearch.storage import mask_secrets
from hpsearch.study._artifacts import MODEL_DIR
from hpsearch.tracking._base import BaseTracker, StudyInfo, final_metrics

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from hpsearch.config import StudyConfig
    from hpsearch.config._tracking import MlflowConfig

__all__ = ["DONE_TAG", "PROBE_TIMEOUT_S", "MlflowTracker", "resolve_mlflow_uri"]

#: Set last on a trial's run: the run is complete.
DONE_TAG = "hpsearch.logged"
#: Seconds a reachability check of an HTTP tracking server may take.
PROBE_TIMEOUT_S = 3.0
_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_END = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_MODEL = MODEL_DIR.rstrip("/") + ".tar"


def resolve_mlflow_uri(cfg: MlflowConfig, study: StudyConfig) -> tuple[str, str | None]:
    """The tracking URI and, for a local folder, the artifact location of new experiments.

    A URI with a scheme (``http://``, ``sqlite:///``, ``file:///``, ``databricks``) is used as
    written; a folder (default ``mlruns`` beside the study file) holds ``mlflow.db`` and ``artifacts/``
    (MLflow 3 keeps its plain-folder store in maintenance mode: SQLite is its local store).
    """
    uri = cfg.tracking_uri
    if uri and (":" in uri and not re.match(r"^[A-Za-z]:[\\/]", uri)):
        return uri, None
    folder = Path(uri or "mlruns")
    folder = folder if folder.is_absolute() else (study.study_dir / folder).resolve()
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def _ms(when: Any) -> int:
    return int(when.timestamp() * 1000) if when is not None else int(time.time() * 1000)


def _key(name: str) -> str:
    """A metric or param name MLflow accepts (letters, digits, ``_ - . / space``)."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)[:250] or "_"


def _terminate(client: Any, run_id: str, status: str, end_ms: int) -> None:
    """End a run with ``status`` at ``end_ms``.

    Why MLflow's store and not ``MlflowClient.set_terminated``: on an HTTP server that
    prints a "View run" line to stdout for every run (our CLI's output) and reads the run
    back to do it; turning that off takes a process-wide environment variable. The store's
    ``update_run_info`` is what ``set_terminated`` calls; without it, ``set_terminated``.
    """
    from mlflow.entities import RunStatus

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None or not hasattr(store, "update_run_info"):
        client.set_terminated(run_id, status=status, end_time=end_ms)
        return
    store.update_run_info(run_id, run_status=RunStatus.from_string(status), end_time=end_ms, run_name=None)


class MlflowTracker(BaseTracker):
    """Logs trials to MLflow (``tracking.mlflow``).

    Args:
        cfg: The study file's ``tracking.mlflow`` block.
        study: The study (its folder and name).
    """

    kind = "mlflow"

    def __init__(self, cfg: MlflowConfig, study: StudyConfig) -> None:
        if importlib.util.find_spec("mlflow") is None:  # imported on the tracker's thread: it takes seconds
            raise ConfigError(
                f"{study.file}: tracking.mlflow: needs the mlflow package; install it with "
                "pip install -e '.[mlflow]' (or remove tracking.mlflow)"
            )
        self.uri, self.artifact_location = resolve_mlflow_uri(cfg, study)
        self.experiment = cfg.experiment or study.name
        self.log_model = cfg.log_model
        self._client: Any = None
        self._experiment_id = ""
        self._parent = ""
        #: The study's child runs found at the last open, by trial number (read once per open).
        self._children: dict[int, Any] = {}

    @property
    def key(self) -> str:
        digest = hashlib.sha1(f"{self.uri}|{self.experiment}".encode()).hexdigest()[:10]
        return f"mlflow:{digest}"

    def where(self) -> str:
        return mask_secrets(self.uri)

    def probe(self) -> None:
        if self.uri.startswith(("http://", "https://")):
            import urllib.request

            with urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):
                pass

    def open(self, info: StudyInfo) -> None:
        from mlflow import MlflowClient

        if self.artifact_location is not None:
            Path(self.uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        client = self._client = MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            self._experiment_id = client.create_experiment(self.experiment, self.artifact_location)
        else:
            self._experiment_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
        self._parent = self._parent_run(info)
        self._children = self._read_children()

    def _parent_run(self, info: StudyInfo) -> str:
        client = self._client
        found = client.search_runs(
            [self._experiment_id],
            f"tags.`hpsearch.study_uid` = '{info.uid}' and tags.`hpsearch.role` = 'study'",
            max_results=1,
        )
        if found:
            run_id: str = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {"hpsearch.study": info.name, "hpsearch.study_uid": info.uid, "hpsearch.role": "study"}
        tags.update({f"hpsearch.{k}": v for k, v in info.tags.items()})
        run = client.create_run(self._experiment_id, run_name=info.name, tags=tags)
        if info.config_yaml:
            client.log_text(run.info.run_id, info.config_yaml, "study.yaml")
        return str(run.info.run_id)

    def _read_children(self) -> dict[int, Any]:
        out: dict[int, Any] = {}
        token = None
        while True:
            page = self._client.search_runs(
                [self._experiment_id], f"tags.`mlflow.parentRunId` = '{self._parent}'", max_results=1000,
                page_token=token,
            )  # fmt: skip
            for run in page:
                number = run.data.tags.get("hpsearch.trial_number")
                if number is not None and number.isdigit():
                    out[int(number)] = run
            token = page.token
            if not token:
                return out

    def log_trial(self, trial: FrozenTrial, info: StudyInfo) -> str:
        client = self._client
        old = self._children.pop(trial.number, None)
        if old is not None:
            if old.data.tags.get(DONE_TAG) == "1":
                return str(old.info.run_id)
            client.delete_run(old.info.run_id)  # half written by a killed run: written anew
        tags = {
            "mlflow.parentRunId": self._parent,
            "hpsearch.study": info.name,
            "hpsearch.study_uid": info.uid,
            "hpsearch.trial_number": str(trial.number),
        }
        run = client.create_run(
            self._experiment_id, start_time=_ms(trial.datetime_start), tags=tags, run_name=f"trial-{trial.number}"
        )
        run_id = str(run.info.run_id)
        self._log_data(run_id, trial, info)
        self._log_artifacts(run_id, trial, info)
        client.set_tag(run_id, DONE_TAG, "1")
        _terminate(client, run_id, _STATUS.get(trial.state.name, "FAILED"), _ms(trial.datetime_complete))
        return run_id

    def _log_data(self, run_id: str, trial: FrozenTrial, info: StudyInfo) -> None:
        from mlflow.entities import Metric, Param, RunTag

        params = [Param(_key(k), str(v)[:6000]) for k, v in trial.params.items()]
        tags = [RunTag("hpsearch.state", trial.state.name)]
        reason = trial.user_attrs.get("fail_reason")
        if reason:
            tags.append(RunTag("hpsearch.fail_reason", str(reason)[:5000]))
        start, end = _ms(trial.datetime_start), _ms(trial.datetime_complete)
        steps = trial.intermediate_values
        series = _key(info.objective_names[0])
        metrics = [Metric(series, v, start, int(s)) for s, v in sorted(steps.items())]
        last = max(steps, default=0)
        finals = final_metrics(trial, info)
        if steps and finals.get(series) == steps[last]:
            del finals[series]  # the curve's last point already says it
        metrics += [Metric(_key(k), v, end, int(last)) for k, v in finals.items()]
        for i in range(0, max(len(metrics), 1), _BATCH):
            first = i == 0
            self._client.log_batch(
                run_id,
                metrics=metrics[i : i + _BATCH],
                params=params[:100] if first else [],
                tags=tags if first else [],
            )
        for i in range(100, len(params), 100):
            self._client.log_batch(run_id, params=params[i : i + 100])

    def _log_artifacts(self, run_id: str, trial: FrozenTrial, info: StudyInfo) -> None:
        ids = trial.user_attrs.get("artifacts")
        if not isinstance(ids, dict) or not ids:
            return
        from optuna.artifacts import FileSystemArtifactStore, download_artifact

        store = FileSystemArtifactStore(str(info.artifact_root))
        with tempfile.TemporaryDirectory(prefix="hps-mlflow-") as tmp:
            for name, artifact_id in ids.items():
                if name == _MODEL and not self.log_model:
                    continue
                path = Path(tmp) / artifact_id / Path(name).name
                path.parent.mkdir(parents=True)
                download_artifact(artifact_store=store, file_path=str(path), artifact_id=str(artifact_id))
                folder = str(Path(name).parent) if "/" in name else None
                self._client.log_artifact(run_id, str(path), folder)

    def close(self, info: StudyInfo, summary: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = _ms(None)
        metrics = [Metric(f"trials_{k}", float(summary[k]), now, 0) for k in ("done", "pruned", "failed")]
        if summary.get("best") is not None:
            metrics.append(Metric(f"best_{_key(info.objective_names[0])}", float(summary["best"]), now, 0))
        self._client.log_batch(self._parent, metrics=metrics)
        _terminate(self._client, self._parent, _END.get(summary["end"], "FINISHED"), now)
