"""Study files: the pydantic schema, YAML loading with ${VAR}, and validation errors as one line."""

from __future__ import annotations

from hpsearch.config._study import (
    StudyConfig,
    ObjectiveConfig,
    SamplerConfig,
    PrunerConfig,
    ResourcesConfig,
    RayConfig,
    FloatParam,
    IntParam,
    CategoricalParam,
    load_config,
    MAX_STUDY_FILE_BYTES,
)

__all__ = [
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "MAX_STUDY_FILE_BYTES",
    "ObjectiveConfig",
    "PrunerConfig",
    "RayConfig",
    "ResourcesConfig",
    "SamplerConfig",
    "StudyConfig",
    "load_config",
]
