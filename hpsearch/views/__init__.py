"""Read-only views of stored studies: results, compare, report, the dashboard and the live note."""

from __future__ import annotations

from hpsearch.views._compare import (
    COLUMNS,
    FORMATS,
    compare,
    compare_rows,
    render,
)
from hpsearch.views._dashboard import (
    LOOPBACK_HOSTS,
    READ_ONLY,
    DashboardTarget,
    ReadOnlyArtifactStore,
    ReadOnlyHTTP,
    build_app,
    host_warning,
    require_extra,
    resolve,
    serve,
)
from hpsearch.views._notes import (
    FIGURE_ID,
    NOTE_EVERY_S,
    StudyNote,
    best_over_time_figure,
    render_note,
)
from hpsearch.views._report import (
    FIGURES,
    default_output,
    write_report,
)
from hpsearch.views._results import (
    StudyResult,
    load_result,
)

__all__ = [
    "COLUMNS",
    "DashboardTarget",
    "FIGURES",
    "FIGURE_ID",
    "FORMATS",
    "LOOPBACK_HOSTS",
    "NOTE_EVERY_S",
    "READ_ONLY",
    "ReadOnlyArtifactStore",
    "ReadOnlyHTTP",
    "StudyNote",
    "StudyResult",
    "best_over_time_figure",
    "build_app",
    "compare",
    "compare_rows",
    "default_output",
    "host_warning",
    "load_result",
    "render",
    "render_note",
    "require_extra",
    "resolve",
    "serve",
    "write_report",
]
