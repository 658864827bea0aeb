"""Storage URLs and masking, read-write and read-only engines, the write-through mirror and the study lock.

The only package that opens SQL: everything else reads and writes through it.
"""

from __future__ import annotations

from hpsearch.storage._locks import (
    StudyLock,
)
from hpsearch.storage._mirror import (
    RETRY_ENV,
    RETRY_S,
    MirroredStorage,
    is_transient,
    storage_retry_s,
)
from hpsearch.storage._readonly import (
    ReadOnlySQLite,
    open_readonly_storage,
    readonly_engine,
)
from hpsearch.storage._urls import (
    check_storage,
    mask_secrets,
    mask_url,
    open_storage,
    sqlite_path,
    url_password,
)

__all__ = [
    "MirroredStorage",
    "RETRY_ENV",
    "RETRY_S",
    "ReadOnlySQLite",
    "StudyLock",
    "check_storage",
    "is_transient",
    "mask_secrets",
    "mask_url",
    "open_readonly_storage",
    "open_storage",
    "readonly_engine",
    "sqlite_path",
    "storage_retry_s",
    "url_password",
]
