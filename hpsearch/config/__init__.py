"""Study files: the pydantic schema, YAML loading with ${VAR}, and validation errors as one line."""

from __future__ import annotations

from hpsearch.config._errors import format_validation
from hpsearch.config._loading import MAX_STUDY_FILE_BYTES, load_config
from hpsearch.config._schema import (
    CategoricalParam,
    CheckpointsConfig,
    ConstraintConfig,
    FloatParam,
    IntParam,
    ObjectiveConfig,
    ParamSpec,
    PrunerConfig,
    RayConfig,
    ResourcesConfig,
    SamplerConfig,
    SchedulerConfig,
    StudyConfig,
    TrainerConfig,
    WarmStartConfig,
)

__all__ = [
    "MAX_STUDY_FILE_BYTES",
    "CategoricalParam",
    "CheckpointsConfig",
    "ConstraintConfig",
    "FloatParam",
    "IntParam",
    "ObjectiveConfig",
    "ParamSpec",
    "PrunerConfig",
    "RayConfig",
    "ResourcesConfig",
    "SamplerConfig",
    "SchedulerConfig",
    "StudyConfig",
    "TrainerConfig",
    "WarmStartConfig",
    "format_validation",
    "load_config",
]
