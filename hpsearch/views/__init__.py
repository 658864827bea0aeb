"""Read-only views of stored studies: results, compare, report, PBT lineage, the dashboard and the live note."""

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
from hpsearch.views._lineage import (
    PBTSegment,
    best_final,
    chains,
    lineage,
    lineage_text,
    log_scaled,
    pbt_segments,
    schedule_xy,
    segment_curve,
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
    PBT_FIGURES,
    default_output,
    write_report,
)
from hpsearch.views._reproduce import (
    Reproduction,
    reproduce_trial,
    reproduction_table,
)
from hpsearch.views._results import (
    StudyResult,
    load_result,
)
from hpsearch.views._show import (
    SHOW_FORMATS,
    number_cell,
    short_names,
    show_cell,
    show_columns,
    show_records,
)

__all__ = [
    "COLUMNS",
    "DashboardTarget",
    "FIGURES",
    "FIGURE_ID",
    "FORMATS",
    "LOOPBACK_HOSTS",
    "NOTE_EVERY_S",
    "PBTSegment",
    "PBT_FIGURES",
    "READ_ONLY",
    "SHOW_FORMATS",
    "ReadOnlyArtifactStore",
    "ReadOnlyHTTP",
    "Reproduction",
    "StudyNote",
    "StudyResult",
    "best_final",
    "best_over_time_figure",
    "build_app",
    "chains",
    "compare",
    "compare_rows",
    "default_output",
    "host_warning",
    "lineage",
    "lineage_text",
    "load_result",
    "log_scaled",
    "number_cell",
    "show_cell",
    "pbt_segments",
    "short_names",
    "show_columns",
    "show_records",
    "render",
    "render_note",
    "reproduce_trial",
    "reproduction_table",
    "require_extra",
    "resolve",
    "schedule_xy",
    "segment_curve",
    "serve",
    "write_report",
]
