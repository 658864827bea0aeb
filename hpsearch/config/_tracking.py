"""The study file's ``tracking:`` block: experiment trackers fed by the manager (MLflow, TensorBoard).

Each tracker is optional and several may be on at once. Paths and local
tracking URIs resolve from the study file's folder (see :mod:`hpsearch.tracking`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = ["MlflowConfig", "TensorBoardConfig", "TrackingConfig"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _not_blank(value: str | None, what: str) -> str | None:
    if value is not None and not value.strip():
        raise ValueError(f"must be a non-empty {what}, or left out for the default")
    return value


class MlflowConfig(_Model):
    """One MLflow parent run per study, one nested run per trial.

    ``tracking_uri``: an MLflow URI (``http://host:5000``, ``sqlite:///mlflow.db``,
    ``file:///path``) or a folder (default ``mlruns`` beside the study file), which
    holds a SQLite store ``mlflow.db`` and an ``artifacts/`` folder. ``experiment``:
    default the study's name. ``log_model``: also log the best trials' ``model.tar``.
    """

    tracking_uri: str | None = None
    experiment: str | None = None
    log_model: bool = False

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        return _not_blank(v, "MLflow tracking URI (http://host:5000, sqlite:///file.db) or folder")

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str | None) -> str | None:
        return _not_blank(v, "MLflow experiment name")


class TensorBoardConfig(_Model):
    """Per-trial scalars and HParams summaries under ``dir`` (default ``tensorboard`` beside the study file)."""

    dir: str | None = None

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str | None) -> str | None:
        if v is not None and "://" in v:
            raise ValueError(f"must be a local folder, got {v!r}")
        return _not_blank(v, "folder")


class TrackingConfig(_Model):
    """Trackers the manager writes to (several at once allowed); none by default."""

    mlflow: MlflowConfig | None = None
    tensorboard: TensorBoardConfig | None = None
