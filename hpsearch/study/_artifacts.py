"""Artifact upload: a trial's files, the best model as one tar, a whole search's files."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.storage._urls import mask_secrets

if TYPE_CHECKING:
    import optuna

    from hpsearch.config import StudyConfig

__all__ = ["MODEL_DIR", "ArtifactUploader"]

#: Files under this prefix make up the model: kept (as ``model.tar``) only for a new best trial.
MODEL_DIR = "model/"


class ArtifactUploader:
    """Uploads files to the study's artifact store (created on first use), names masked.

    Args:
        config: The study (its artifact folder and objective direction).
        secrets: Strings masked in every file name stored.
    """

    def __init__(self, config: StudyConfig, secrets: tuple[str, ...]) -> None:
        self.config = config
        self.secrets = secrets
        self._store: Any = None

    def store(self) -> Any:
        """The study's ``FileSystemArtifactStore``, its folder created on first use."""
        from optuna.artifacts import FileSystemArtifactStore

        if self._store is None:
            root = self.config.resolved_artifacts()
            root.mkdir(parents=True, exist_ok=True)
            self._store = FileSystemArtifactStore(str(root))
        return self._store

    def upload_trial(
        self, trial: optuna.trial.Trial, files: dict[str, bytes], value: float | None, best: float | None
    ) -> dict[str, str]:
        """Upload ``files`` as the trial's artifacts; returns name -> artifact id.

        The model files (under :data:`MODEL_DIR`) are kept, as one ``model.tar``,
        only when ``value`` beats ``best`` (never for a trial without a value: a
        failed or pruned one). Inside a storage batch the references commit with
        the trial's end.
        """
        sign = 1 if self.config.first_objective.direction == "maximize" else -1
        is_best = value is not None and (best is None or sign * value > sign * best)
        model = {k: v for k, v in files.items() if k.startswith(MODEL_DIR)}
        plain = {k: v for k, v in files.items() if not k.startswith(MODEL_DIR)}
        ids = self._upload(trial, plain)
        if model and is_best:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for name, data in model.items():
                    info = tarfile.TarInfo(name[len(MODEL_DIR) :])
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            ids.update(self._upload(trial, {"model.tar": buf.getvalue()}, mask=False))
        return ids

    def upload_study(self, study: optuna.Study, files: dict[str, bytes]) -> None:
        """Upload a whole search's files as the study's artifacts (user attr ``artifacts``)."""
        ids = dict(study.user_attrs.get("artifacts", {}))
        ids.update(self._upload(study, files))
        study.set_user_attr("artifacts", ids)

    def _upload(self, owner: Any, files: dict[str, bytes], *, mask: bool = True) -> dict[str, str]:
        from optuna.artifacts import upload_artifact

        ids: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="hps-art-") as tmp:
            for name, data in files.items():
                if mask:
                    name = mask_secrets(name, *self.secrets)
                    if name.endswith(".log"):  # a trial's output may print the storage URL
                        data = mask_secrets(data.decode("utf-8", "replace"), *self.secrets).encode()
                path = Path(tmp) / name.replace("/", "__")
                path.write_bytes(data)
                ids[name] = upload_artifact(artifact_store=self.store(), file_path=str(path), study_or_trial=owner)
        return ids
