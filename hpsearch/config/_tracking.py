"""The study file's ``tracking:`` block: experiment trackers fed by the manager (MLflow, TensorBoard)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["MlflowConfig", "TensorBoardConfig", "TrackingConfig"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class MlflowConfig(_Model):
    """One MLflow parent run per study, one nested run per trial."""

    tracking_uri: str | None = None
    experiment: str | None = None


class TensorBoardConfig(_Model):
    """Per-trial scalars and HParams summaries under ``dir``."""

    dir: str | None = None


class TrackingConfig(_Model):
    """Trackers the manager writes to (several at once allowed); none by default."""

    mlflow: MlflowConfig | None = None
    tensorboard: TensorBoardConfig | None = None
