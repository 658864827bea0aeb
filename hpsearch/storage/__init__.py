"""Storage URLs and masking, the engines, the write-through mirror and the study lock: the only package that opens SQL for writing."""

from __future__ import annotations

from hpsearch.storage._locks import (
    StudyLock,
)
from hpsearch.storage._mirror import (
    MirroredStorage,
    is_transient,
    storage_retry_s,
    RETRY_ENV,
    RETRY_S,
)
from hpsearch.storage._urls import (
    mask_url,
    mask_secrets,
    check_storage,
    open_storage,
    sqlite_path,
)

__all__ = [
    "MirroredStorage",
    "RETRY_ENV",
    "RETRY_S",
    "StudyLock",
    "check_storage",
    "is_transient",
    "mask_secrets",
    "mask_url",
    "open_storage",
    "sqlite_path",
    "storage_retry_s",
]
