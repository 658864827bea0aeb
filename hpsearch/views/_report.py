"""``hpsearch report``: one self-contained HTML file per set of studies.

The page holds a header (the studies, their best values), the compare table
(:func:`hpsearch.views._compare.compare_rows`), a cross-study best-so-far figure and,
per study, Optuna's optimisation history, parameter importances, intermediate
values and parallel coordinates; a PBT study adds its schedule (each mutable
param over steps, one line per member) and the best member's lineage
(:mod:`hpsearch.views._lineage`). plotly.js is embedded once in ``<head>``, so
the file opens offline, mails as one attachment and needs no server. Reads only.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError, one_line
from hpsearch.views._format import duration, fmt

if TYPE_CHECKING:
    import optuna

__all__ = ["FIGURES", "PBT_FIGURES", "default_output", "write_report"]

#: Per-study figures: (data-figure id, title, what it shows).
FIGURES = (
    ("optimization-history", "Optimisation history", "Each trial's value and the best so far, in trial order."),
    ("param-importances", "Parameter importances", "How much each parameter explains the objective (fANOVA)."),
    ("intermediate-values", "Intermediate values", "What each trial reported per step; pruned trials stop early."),
    ("parallel-coordinates", "Parallel coordinates", "Every trial's params, coloured by its value."),
)
#: The first figure of a study with several objectives (the others then plot its first objective).
PARETO_FIGURE = (
    "pareto-front",
    "Pareto front",
    "Every complete trial on the objectives' axes; the front (no trial beats it in every objective) highlighted, "
    "infeasible trials greyed.",
)
#: Per-study figures of a PBT study (``scheduler: {name: pbt}``), after :data:`FIGURES`.
PBT_FIGURES = (
    (
        "pbt-schedule",
        "PBT schedule",
        "Each mutable hyperparameter over steps, one line per member; a jump is an exploit or explore.",
    ),
    (
        "pbt-lineage",
        "Best member's lineage",
        "The best final segment's chain back to generation 0: its value over steps, and where it copied a member.",
    ),
)
_COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]


def default_output(names: list[str]) -> Path:
    """``dashboards/<study>.html`` (several studies: their names joined by ``_vs_``)."""
    stem = "_vs_".join(names[:3]) + (f"_and_{len(names) - 3}_more" if len(names) > 3 else "")
    return Path("dashboards") / f"{stem}.html"


@dataclass
class _Study:
    name: str
    study: optuna.Study
    row: dict[str, Any]
    mutate: list[str] | None = None  # PBT: the params explore changes (None: every param)


def _template() -> Any:
    import plotly.graph_objects as go

    return go.layout.Template(
        layout={
            "font": {
                "family": "Inter, system-ui, -apple-system, Segoe UI, Roboto, sans-serif",
                "size": 13,
                "color": "#1f2937",
            },
            "colorway": _COLORS,
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "#ffffff",
            "xaxis": {"gridcolor": "#eef2f7", "zerolinecolor": "#e5e7eb", "linecolor": "#d1d5db", "automargin": True},
            "yaxis": {"gridcolor": "#eef2f7", "zerolinecolor": "#e5e7eb", "linecolor": "#d1d5db", "automargin": True},
            "margin": {"l": 60, "r": 24, "t": 24, "b": 48},
            "legend": {"orientation": "h", "y": -0.22},
            "hoverlabel": {"font": {"family": "Inter, system-ui, sans-serif"}},
        }
    )


def _style(fig: Any, height: int = 380) -> Any:
    fig.update_layout(template=_template(), title=None, height=height, autosize=True)
    return fig


def _figure(kind: str, study: optuna.Study) -> tuple[Any | None, str]:
    """Optuna's figure of ``kind`` for the study, or (None, why it cannot be drawn)."""
    from optuna import visualization as vis
    from optuna.trial import TrialState

    from hpsearch.study._objectives import study_metrics

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None, "no complete trial yet"
    # Several objectives: the single-objective figures plot the first one, named.
    first: dict[str, Any] = {}
    if len(study.directions) > 1:
        first = {"target": lambda t: t.values[0], "target_name": study_metrics(study)[0]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "pareto-front":
                return vis.plot_pareto_front(study, target_names=study_metrics(study)), ""
            if kind == "optimization-history":
                return vis.plot_optimization_history(study, **first), ""
            if kind == "param-importances":
                if len(complete) < 2 or not any(t.params for t in complete):
                    return None, "needs at least 2 complete trials with params"
                return vis.plot_param_importances(study, **first), ""
            if kind == "intermediate-values":
                if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
                    return None, "no trial reported intermediate values (its trainer reports none)"
                return vis.plot_intermediate_values(study), ""
            if kind == "parallel-coordinates":
                if not any(t.params for t in complete):
                    return None, "the trials have no params"
                return vis.plot_parallel_coordinate(study, **first), ""
    except Exception as e:  # noqa: BLE001 - one figure that cannot be drawn must not lose the report
        return None, one_line(f"cannot draw it: {e}")[:200]
    raise ValueError(kind)


def _fig_html(fig: Any, div_id: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]},
    )


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _best_index(rows: list[dict[str, Any]]) -> int | None:
    directions = {r["direction"] for r in rows}
    if len(directions) != 1:
        return None
    maximize = directions.pop() == "maximize"
    scored = [(r["best_value"], i) for i, r in enumerate(rows) if r["best_value"] is not None]
    if not scored:
        return None
    return (max(scored) if maximize else min(scored))[1]


def _compare_table(rows: list[dict[str, Any]]) -> str:
    best = _best_index(rows)
    head = (
        "study",
        "trainer",
        "method",
        "best",
        "± std",
        "complete",
        "pruned",
        "failed",
        "compute",
        "to best",
        "best params",
    )
    out = ['<table class="compare" data-figure="compare-table"><thead><tr>']
    out += [f"<th>{h}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for i, r in enumerate(rows):
        params = ", ".join(f"{k}={fmt(v)}" for k, v in (r.get("best_params") or {}).items())
        to_best = f"{duration(r['time_to_best_s'])} · {r['trials_to_best']} trials" if r.get("trials_to_best") else "–"
        cls = ' class="winner"' if i == best and len(rows) > 1 else ""
        badge = ' <span class="badge">best</span>' if cls else ""
        out.append(
            f"<tr{cls}><td class='name'>{_e(r['study'])}{badge}</td><td>{_e(r['trainer'])}</td>"
            f"<td>{_e(r['method'])}</td><td class='num strong'>{_e(fmt(r['best_value']))}</td>"
            f"<td class='num'>{_e(fmt(r['best_std'], 2))}</td><td class='num'>{r['complete']}</td>"
            f"<td class='num'>{r['pruned']}</td><td class='num'>{r['failed']}</td>"
            f"<td class='num'>{_e(duration(r['compute_s']))}</td><td class='num'>{_e(to_best)}</td>"
            f"<td class='params'>{_e(params) or '–'}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _cards(studies: list[_Study]) -> str:
    out = ['<div class="kpis">']
    for i, s in enumerate(studies):
        r = s.row
        color = _COLORS[i % len(_COLORS)]
        finished = r["complete"] + r["pruned"] + r["failed"]
        out.append(
            f'<div class="kpi" style="--accent:{color}"><div class="kpi-name">{_e(s.name)}</div>'
            f'<div class="kpi-value">{_e(fmt(r["best_value"]))}</div>'
            f'<div class="kpi-label">best {_e(r["metric"] or "value")} ({_e(r["direction"])})</div>'
            f'<div class="kpi-meta">{finished} trials · {_e(r["method"] or r["trainer"] or "optuna")} · '
            f"{_e(duration(r['compute_s']))}</div></div>"
        )
    out.append("</div>")
    return "".join(out)


def _cross_study(studies: list[_Study]) -> str:
    """Best-so-far of every study on one axis (same direction only)."""
    import plotly.graph_objects as go
    from optuna.trial import TrialState

    if len(studies) < 2 or {s.row["direction"] for s in studies} not in ({"maximize"}, {"minimize"}):
        return ""  # studies of other directions, or of several objectives (no one best value)
    maximize = studies[0].row["direction"] == "maximize"
    fig = go.Figure()
    for i, s in enumerate(studies):
        trials = sorted(s.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
        best: float | None = None
        xs, ys = [], []
        for n, t in enumerate(trials, 1):
            v = t.value
            if v is None:
                continue
            best = v if best is None or (v > best if maximize else v < best) else best
            xs.append(n)
            ys.append(best)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=s.name,
                line={"shape": "hv", "width": 3},
                marker={"size": 5},
                line_color=_COLORS[i % len(_COLORS)],
            )
        )
    metric = studies[0].row["metric"] or "value"
    fig.update_layout(xaxis_title="complete trials", yaxis_title=f"best {metric}")
    _style(fig, 400)
    return (
        '<section class="card wide" data-figure="cross-study"><h3>Best so far, every study</h3>'
        f'<p class="hint">The best {_e(metric)} reached after n complete trials.</p>'
        + _fig_html(fig, "fig-cross-study")
        + "</section>"
    )


def _study_section(index: int, s: _Study) -> str:
    r = s.row
    parts = [
        f'<section class="study" id="study-{index}" data-study="{_e(s.name)}">'
        f'<h2><span class="dot" style="background:{_COLORS[index % len(_COLORS)]}"></span>{_e(s.name)}</h2>'
        f'<p class="sub">{_e(r["trainer"] or "optuna study")} · {_e(r["method"])} · best trial '
        f'{_e(fmt(r["best_trial"]))} · {_e(r["storage"])}</p><div class="grid">'
    ]
    figures = ((PARETO_FIGURE,) if len(s.study.directions) > 1 else ()) + FIGURES
    for kind, title, hint in figures:
        fig, why = _figure(kind, s.study)
        body = (
            _fig_html(_style(fig), f"fig-{index}-{kind}") if fig is not None else f'<div class="empty">{_e(why)}</div>'
        )
        parts.append(
            f'<section class="card" data-figure="{kind}"><h3>{title}</h3><p class="hint">{hint}</p>{body}</section>'
        )
    parts += _pbt_cards(index, s)
    parts.append("</div></section>")
    return "".join(parts)


def _pbt_cards(index: int, s: _Study) -> list[str]:
    """The PBT schedule and the best member's lineage (nothing for a study without PBT segments)."""
    from hpsearch.views._lineage import pbt_segments

    trials = s.study.get_trials(deepcopy=False)
    segments = pbt_segments(trials)
    if not segments:
        return []
    cards = []
    for kind, title, hint in PBT_FIGURES:
        try:
            fig, why = (_schedule_figure if kind == "pbt-schedule" else _lineage_figure)(segments, trials, s)
        except Exception as e:  # noqa: BLE001 - one figure that cannot be drawn must not lose the report
            fig, why = None, one_line(f"cannot draw it: {e}")[:200]
        body = _fig_html(fig, f"fig-{index}-{kind}") if fig is not None else f'<div class="empty">{_e(why)}</div>'
        cards.append(
            f'<section class="card" data-figure="{kind}"><h3>{_e(title)}</h3>'
            f'<p class="hint">{_e(hint)}</p>{body}</section>'
        )
    return cards


def _schedule_figure(segments: list[Any], trials: list[Any], s: _Study) -> tuple[Any | None, str]:
    """One panel per mutable param: its value over steps, one line per member (log axis where log-scaled)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from hpsearch.views._lineage import chains, log_scaled, schedule_xy

    present = {k for seg in segments for k in seg.params}
    params = [p for p in (s.mutate if s.mutate is not None else sorted(present)) if p in present]
    if not params:
        return None, "the segments have no params"
    logs = log_scaled(trials)
    fig = make_subplots(rows=len(params), cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for row, name in enumerate(params, 1):
        for member, chain in chains(segments).items():
            xs, ys = schedule_xy(chain, name)
            hover = [f"member {member} · #{seg.number} (g{seg.generation})" for seg in chain if name in seg.params]
            hover = [h for h in hover for _ in (0, 1)]
            color = _COLORS[member % len(_COLORS)]
            trace = go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=f"member {member}",
                legendgroup=f"m{member}",
                showlegend=row == 1,
                line={"color": color, "width": 2},
                marker={"size": 4},
                hovertext=hover,
                hovertemplate="%{hovertext}<br>step %{x}: %{y}<extra></extra>",
            )
            fig.add_trace(trace, row=row, col=1)
        fig.update_yaxes(title_text=name, type="log" if name in logs else None, row=row, col=1)
    fig.update_xaxes(title_text="step", row=len(params), col=1)
    return _style(fig, 160 + 220 * len(params)).update_layout(legend={"y": -0.3 / len(params)}), ""


def _lineage_figure(segments: list[Any], trials: list[Any], s: _Study) -> tuple[Any | None, str]:
    """The best final segment's chain: its value over steps, a trace per segment, exploits annotated."""
    import plotly.graph_objects as go

    from hpsearch.views._lineage import best_final, lineage, segment_curve

    best = best_final(segments, maximize=s.row.get("direction") == "maximize")
    if best is None:
        return None, "no complete segment yet"
    chain = lineage(segments, best.number)
    fig = go.Figure()
    for i, seg in enumerate(chain):
        before = chain[i - 1] if i else None
        xs, ys = segment_curve(seg, before)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=f"member {seg.member} · #{seg.number}",
                legendgroup=f"m{seg.member}",
                line={"color": _COLORS[seg.member % len(_COLORS)], "width": 3},
                marker={"size": 5},
            )
        )
        if seg.donor is not None and before is not None and before.value is not None:
            fig.add_annotation(
                x=before.end_step,
                y=before.value,
                text=f"m{seg.member} copied m{seg.donor} (#{seg.parent})",
                showarrow=True,
                arrowhead=2,
                ax=-30,
                ay=-36,
            )
    fig.update_layout(xaxis_title="step", yaxis_title=s.row.get("metric") or "value")
    return _style(fig).update_layout(legend={"y": -0.3}), ""


_CSS = """
:root{--bg:#f5f7fb;--fg:#111827;--muted:#6b7280;--card:#fff;--line:#e5e7eb;--brand:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
  font:14px/1.5 Inter,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header.top{background:linear-gradient(120deg,#1e3a8a,#2563eb 55%,#0ea5e9);color:#fff;padding:28px 40px 72px}
header.top h1{margin:0;font-size:26px;font-weight:700;letter-spacing:-.01em}
header.top p{margin:6px 0 0;opacity:.85}
main{max-width:1320px;margin:-52px auto 48px;padding:0 28px}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:16px;margin-bottom:20px}
.kpi{background:var(--card);border-radius:14px;padding:16px 18px;
  box-shadow:0 1px 2px rgba(16,24,40,.06),0 8px 24px rgba(16,24,40,.06);border-top:4px solid var(--accent)}
.kpi-name{font-weight:600;color:var(--muted);font-size:13px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.kpi-value{font-size:32px;font-weight:700;letter-spacing:-.02em;color:var(--accent);margin-top:2px}
.kpi-label{color:var(--muted);font-size:12px}
.kpi-meta{margin-top:8px;font-size:12px;color:#374151}
.card{background:var(--card);border-radius:14px;padding:16px 18px 8px;
  box-shadow:0 1px 2px rgba(16,24,40,.06),0 8px 24px rgba(16,24,40,.04);min-width:0}
.card h3{margin:0;font-size:15px}
.hint{margin:2px 0 6px;color:var(--muted);font-size:12px}
.wide{margin-bottom:20px}
.tablecard{overflow-x:auto;margin-bottom:20px;padding-bottom:14px}
table.compare{border-collapse:collapse;width:100%;font-size:13px;margin-top:8px}
table.compare th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;text-transform:uppercase;
  letter-spacing:.04em;border-bottom:2px solid var(--line);padding:8px 10px;white-space:nowrap}
table.compare td{border-bottom:1px solid var(--line);padding:9px 10px;vertical-align:top}
table.compare tr:last-child td{border-bottom:0}
table.compare tr.winner td{background:#eff6ff}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.strong{font-weight:700}
td.name{font-weight:600;white-space:nowrap}
td.params{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;color:#374151}
.badge{display:inline-block;margin-left:6px;padding:1px 8px;border-radius:999px;background:var(--brand);color:#fff;
  font-size:11px;font-weight:600;vertical-align:1px}
section.study{margin-top:32px}
section.study h2{font-size:20px;margin:0;display:flex;align-items:center;gap:10px}
.dot{width:12px;height:12px;border-radius:50%;display:inline-block}
.sub{color:var(--muted);margin:2px 0 14px;font-size:12px;word-break:break-all}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:18px}
@media (max-width:1100px){.grid{grid-template-columns:minmax(0,1fr)}}
.empty{height:200px;display:flex;align-items:center;justify-content:center;color:var(--muted);
  background:repeating-linear-gradient(45deg,#fafbfc,#fafbfc 10px,#f3f4f6 10px,#f3f4f6 20px);
  border-radius:10px;margin:8px 0 10px;padding:0 20px;text-align:center}
footer{color:var(--muted);font-size:12px;text-align:center;margin:30px 0}
@media (max-width:640px){header.top{padding:22px 20px 64px}main{padding:0 14px}}
"""


# Figures are drawn while the page is parsed; size them again once the layout is final.
_RESIZE = (
    "<script>window.addEventListener('load',function(){document.querySelectorAll('.js-plotly-plot')"
    ".forEach(function(d){Plotly.Plots.resize(d);});});</script>"
)


def render_report(studies: list[_Study], rows: list[dict[str, Any]], *, title: str) -> str:
    from plotly.offline import get_plotlyjs

    from hpsearch._version import __version__

    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    names = ", ".join(s.name for s in studies)
    body = [
        f'<header class="top"><h1>{_e(title)}</h1>'
        f"<p>{_e(names)} · generated {_e(now)} by hpsearch {_e(__version__)}</p></header>",
        "<main>",
        _cards(studies),
        '<section class="card tablecard"><h3>Compare</h3>'
        '<p class="hint">Best value with its CV spread, trial counts, compute'
        " and the time it took to reach the best.</p>" + _compare_table(rows) + "</section>",
        _cross_study(studies),
    ]
    body += [_study_section(i, s) for i, s in enumerate(studies)]
    body.append(
        "<footer>Self-contained: plotly.js is embedded, no network needed. "
        "Live view: <code>hpsearch dashboard STUDY.yaml</code>.</footer></main>"
    )
    meta = json.dumps({"studies": [s.name for s in studies], "hpsearch": __version__})
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{_e(title)}</title><meta name="hpsearch-report" content="{_e(meta)}">'
        f"<style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body>{''.join(body)}{_RESIZE}</body></html>\n"
    )


def write_report(
    studies: list[str | Path],
    *,
    output: str | Path | None = None,
    storage: str | None = None,
    title: str | None = None,
) -> Path:
    """Write the HTML report of ``studies`` (study files) and return its path.

    Raises:
        ConfigError: No studies, or a bad study file.
        StorageError: A study that was never run.
        HpsearchError: plotly is not installed.
    """
    from hpsearch.views._compare import compare_rows
    from hpsearch.views._dashboard import require_extra
    from hpsearch.views._results import load_result

    if not studies:
        raise ConfigError("report: give one or more study files")
    require_extra("plotly")
    rows = compare_rows([str(s) for s in studies], storage=storage)
    loaded = []
    for path, row in zip(studies, rows, strict=False):  # rows drop repeated studies
        result = load_result(str(path), storage=storage)
        sch = result.config.scheduler if result.config is not None else None
        mutate = sch.mutate if sch is not None and sch.name == "pbt" else None
        loaded.append(_Study(result.study_name, result.study, row, mutate))
    out = Path(output) if output is not None else default_output([s.name for s in loaded])
    if out.is_dir():
        out = out / default_output([s.name for s in loaded]).name
    page = render_report(loaded, rows, title=title or f"hpsearch report: {', '.join(s.name for s in loaded)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
