"""The ``hpsearch`` command. The only place where errors become exit codes.

Exit codes: 0 done, 1 the study failed (max_failures), 2 bad input
(one line on stderr, nothing written), 130 interrupted (resume by re-running).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hpsearch.errors import HpsearchError, one_line

app = typer.Typer(
    name="hpsearch",
    help="Hyperparameter search for fine-tunes: one YAML study, Optuna + Ray, one SQL store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StudyArg = Annotated[Path, typer.Argument(help="Study YAML file.", show_default=False)]
StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", envvar="HPSEARCH_STORAGE", help="Storage URL (overrides the study's)."),
]


def _fail(err: BaseException, code: int) -> None:
    from hpsearch.storage import mask_secrets

    typer.echo(f"error: {mask_secrets(one_line(str(err)))}", err=True)
    raise typer.Exit(code)


def _guard(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except HpsearchError as e:
        _fail(e, e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted; run the same command again to resume", err=True)
        raise typer.Exit(130) from None


@app.command()
def run(
    study: StudyArg,
    n_trials: Annotated[
        int | None, typer.Option("--n-trials", "-n", min=1, help="Total trials the study should hold.")
    ] = None,
    more: Annotated[int | None, typer.Option("--more", min=1, help="Run N trials beyond those finished.")] = None,
    storage: StorageOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampler seed.")] = None,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", min=1, help="At most N trials at once.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", envvar="RAY_ADDRESS", help="Join this Ray cluster.")
    ] = None,
    executor: Annotated[str | None, typer.Option("--executor", help="ray (default) or local (in-process).")] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.001, help="Stop asking for trials after N seconds.")
    ] = None,
    checkpoints: Annotated[
        str | None,
        typer.Option(
            "--checkpoints", envvar="HPSEARCH_CHECKPOINTS", help="Checkpoint folder or URI (overrides the study's)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or summary.")] = False,
) -> None:
    """Run (or resume) a study until it holds n_trials finished trials."""
    overrides = {
        "n_trials": n_trials,
        "storage": storage,
        "sampler.seed": seed,
        "max_concurrent_trials": max_concurrent,
        "ray.address": ray_address,
        "executor": executor,
        "timeout": timeout,
        "checkpoints.path": checkpoints,
    }
    _guard(_run, study, overrides, more=more, quiet=quiet)


def _run(study: Path, overrides: dict[str, Any], *, more: int | None, quiet: bool) -> None:
    """``hpsearch run``: check the flags, run the study, print one summary line unless quiet."""
    from hpsearch.config import load_config
    from hpsearch.errors import ConfigError
    from hpsearch.study import StudyManager

    if overrides["n_trials"] is not None and more is not None:
        raise ConfigError("--n-trials and --more: give one of them, not both")
    executor = overrides["executor"]
    if executor is not None and executor not in ("ray", "local"):
        raise ConfigError(f"--executor: expected ray or local, got {executor!r}")
    cfg = load_config(study, overrides)
    result = StudyManager(cfg, more=more, progress=None if not quiet else False).run()
    if not quiet:
        counts = result.counts()
        line = ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items()))
        typer.echo(f"{cfg.name}: {line}{_best_line(result)}")


def _best_line(result: Any) -> str:
    """``; best METRIC V with {params}``, or the Pareto front's size; empty without a feasible trial."""
    front = result.best_trials
    if not front:
        return ""
    if result.multi_objective:
        return f"; Pareto front of {len(front)} trials ({', '.join(result.metric_names)}): `hpsearch best` lists it"
    return f"; best {result.metric_names[0]} {result.best_value:.6g} with {json.dumps(result.best_params)}"


@app.command()
def show(
    study: StudyArg,
    storage: StorageOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows to show (0 = all).")] = 20,
    lineage: Annotated[
        bool, typer.Option("--lineage", help="PBT: each member's chain of segments and the best one's lineage.")
    ] = False,
    all_columns: Annotated[bool, typer.Option("--all", help="Keep empty and constant columns too.")] = False,
    columns: Annotated[
        str | None, typer.Option("--columns", help="Comma-separated columns to show, e.g. number,value,lr.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or markdown.")] = "table",
) -> None:
    """Table of the study's trials, best first (--lineage: a PBT study's members and exploits)."""

    def go() -> None:
        from hpsearch.errors import ConfigError
        from hpsearch.views import SHOW_FORMATS, load_result, render, show_columns, show_records

        if fmt not in SHOW_FORMATS:
            raise ConfigError(f"--format: expected one of {', '.join(SHOW_FORMATS)}, got {fmt!r}")
        result = load_result(study, storage=storage)
        if lineage:
            typer.echo(_lineage(study, result))
            return
        frame = result.trials_dataframe(best_first=True)
        picked = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        cols = show_columns(frame, all_columns=all_columns, columns=picked) if len(frame) else []
        rows = frame if limit == 0 else frame.head(limit)
        if fmt != "table":
            typer.echo(render(show_records(rows, cols), fmt) if cols else "")
            return
        _print_table(f"{result.study_name} ({len(frame)} trials)", rows, cols)

    _guard(go)


def _print_table(title: str, rows: Any, cols: list[str]) -> None:
    """The trial table at the terminal's width: numbers are never cut or wrapped; the columns
    that do not fit are left out and named below the table."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from hpsearch.views import short_names, show_cell

    console = Console()
    names = short_names(cols)
    cells = [[show_cell(c, r.get(c)) for c in cols] for _, r in rows.iterrows()]
    widths = [min(30, max([len(n), *(len(row[i]) for row in cells)])) for i, n in enumerate(names)]

    def build(keep: int) -> Table:
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for name, width in zip(names[:keep], widths[:keep], strict=True):
            table.add_column(name, no_wrap=True, overflow="ellipsis", min_width=width, max_width=width)
        for row in cells:
            table.add_row(*row[:keep])
        return table

    keep = len(cols)  # a line is a space, the columns, and two spaces between columns
    while keep > 3 and 1 + sum(widths[:keep]) + 2 * (keep - 1) > console.width:
        keep -= 1
    console.print(build(keep))
    if keep < len(cols):
        console.print(f"not shown at {console.width} columns: {', '.join(names[keep:])} (--columns picks them)")


def _lineage(study: Path, result: Any) -> str:
    """``show --lineage``: the text of :func:`hpsearch.views.lineage_text`, or a one-line refusal."""
    from hpsearch.errors import ConfigError
    from hpsearch.views import lineage_text

    maximize = result.directions[0] == "maximize"
    metric = result.metric_names[0]
    text = lineage_text(result.study.get_trials(deepcopy=False), maximize=maximize, metric=metric)
    if not text:
        raise ConfigError(
            f"{study}: --lineage: study {result.study_name!r} has no PBT segments; "
            "it is for studies run with scheduler: {name: pbt} (drop --lineage for the trial table)"
        )
    return text


@app.command()
def best(
    study: StudyArg,
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The best trial's params and value; with several objectives, every trial of the Pareto front."""

    def go() -> None:
        from hpsearch.views import load_result

        result = load_result(study, storage=storage)
        if result.multi_objective:
            _print_front(result, as_json)
            return
        t = result.best_trial
        if as_json:
            typer.echo(json.dumps({"study": result.study_name, **_trial_json(t, result.metric_names)}))
        else:
            typer.echo(f"best trial {t.number}: value {t.value:.6g}")
            for k, v in t.params.items():
                typer.echo(f"  {k}: {v}")

    _guard(go)


def _trial_json(t: Any, metrics: list[str]) -> dict[str, Any]:
    """A trial as ``best --json`` prints it: number, value(s), params, metrics."""
    out: dict[str, Any] = {"number": t.number}
    if len(metrics) > 1:
        out["values"] = dict(zip(metrics, t.values, strict=True))
    else:
        out["value"] = t.value
    return {**out, "params": t.params, "metrics": t.user_attrs.get("metrics", {})}


def _print_front(result: Any, as_json: bool) -> None:
    """``best`` of a multi-objective study: the Pareto front, one trial per line (or JSON)."""
    from hpsearch.errors import StorageError
    from hpsearch.views import number_cell

    front, metrics = result.best_trials, result.metric_names
    if not front:
        raise StorageError(f"study {result.study_name!r} has no feasible COMPLETE trial yet")
    if as_json:
        rows = [_trial_json(t, metrics) for t in front]
        typer.echo(json.dumps({"study": result.study_name, "objectives": _objectives(result), "pareto_front": rows}))
        return
    heads = ", ".join(f"{m} ({d})" for m, d in zip(metrics, result.directions, strict=True))
    typer.echo(f"Pareto front: {len(front)} trials of {heads}")
    for t in front:
        values = "  ".join(f"{m} {number_cell(float(v))}" for m, v in zip(metrics, t.values, strict=True))
        params = ", ".join(f"{k}={number_cell(v)}" for k, v in t.params.items())
        typer.echo(f"  trial {t.number}: {values}  | {params}")


def _objectives(result: Any) -> list[dict[str, str]]:
    return [{"metric": m, "direction": d} for m, d in zip(result.metric_names, result.directions, strict=True)]


@app.command()
def compare(
    studies: Annotated[
        list[Path] | None,
        typer.Argument(help="Study YAML files (or, with --storage, study names).", show_default=False),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage", envvar="HPSEARCH_STORAGE", help="Storage URL: overrides the files' own; alone, every study."
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or markdown.")] = "table",
    params: Annotated[bool, typer.Option("--params", help="table/markdown: a table of the best params.")] = False,
    paired: Annotated[bool, typer.Option("--paired", help="Two studies: fold by fold, corrected t-test.")] = False,
    reference: Annotated[str | None, typer.Option(help="Several objectives: hypervolume reference (0.5,10)")] = None,
) -> None:
    """One table across studies: best value and spread, trials, compute, time to best and to beat, evaluated on.

    The table wraps to the terminal ($COLUMNS, else 80). --paired: two studies' best trials fold by fold.
    """

    def go() -> None:
        from hpsearch.views._compare import compare_output

        names = [str(s) for s in studies or []]
        out, warn = compare_output(names, storage=storage, fmt=fmt, params=params, paired=paired, reference=reference)
        typer.echo(out)
        if warn:
            typer.echo(warn, err=True)

    _guard(go)


@app.command()
def export(
    study: StudyArg,
    out: Annotated[Path, typer.Argument(help="Folder to write the model into.")],
    best_: Annotated[bool, typer.Option("--best", help="Export the best trial's model (the default).")] = False,
    trial: Annotated[
        int | None,
        typer.Option(
            "--trial", min=0, help="Export trial N's model instead (kept by each trial that was the best so far)."
        ),
    ] = None,
    storage: StorageOpt = None,
) -> None:
    """Write the best trial's (or --trial N's) saved model to OUT, loadable with the trainer's loader."""

    def go() -> None:
        from hpsearch.errors import ConfigError
        from hpsearch.views import load_result

        if best_ and trial is not None:
            raise ConfigError("--best and --trial: give one of them, not both")
        result = load_result(study, storage=storage)
        path = result.export_model(out, trial=trial)
        t = result.best_trial if trial is None else result.trial(trial)
        value = "" if t.value is None else f" ({t.value:.6g})"
        typer.echo(f"trial {t.number}{value} -> {path}")

    _guard(go)


@app.command()
def dashboard(
    study: Annotated[
        Path | None, typer.Argument(help="Study YAML file (its storage and artifacts).", show_default=False)
    ] = None,
    storage: StorageOpt = None,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address to listen on; anything but 127.0.0.1/localhost is reachable from the network."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Serve optuna-dashboard, read-only, on the study's storage with its artifacts (Ctrl-C stops it)."""

    def go() -> None:
        from hpsearch.views import host_warning, require_extra, resolve, serve

        warning = host_warning(host)
        if warning:
            typer.echo(warning, err=True)
        require_extra("optuna_dashboard")
        serve(resolve(study, storage), host=host, port=port)

    _guard(go)


@app.command()
def report(
    studies: Annotated[list[Path], typer.Argument(help="Study YAML files.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="HTML file (or folder) to write; default dashboards/<study>.html."),
    ] = None,
    storage: StorageOpt = None,
    title: Annotated[str | None, typer.Option("--title", help="Page title.")] = None,
) -> None:
    """Write a self-contained HTML report.

    History, importances, intermediate values, parallel coordinates and the compare table.
    """

    def go() -> None:
        from hpsearch.views import write_report

        path = write_report(list(studies), output=output, storage=storage, title=title)
        typer.echo(str(path))

    _guard(go)


@app.command()
def reproduce(
    study: StudyArg,
    trial: Annotated[int, typer.Option("--trial", min=0, help="The trial to re-run.", show_default=False)],
    storage: StorageOpt = None,
) -> None:
    """Re-run trial N from the stored config and params in a scratch study; its metrics beside the stored ones."""

    def go() -> None:
        from hpsearch.views import reproduce_trial, reproduction_table

        rep = reproduce_trial(study, trial, storage=storage)
        if rep.warning:
            typer.echo(f"warning: {rep.warning}", err=True)
        typer.echo(reproduction_table(rep))

    _guard(go)


@app.command()
def logs(
    study: StudyArg,
    trial: Annotated[int, typer.Option("--trial", min=0, help="The trial whose output to print.", show_default=False)],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Print its output as it comes while it runs; exit when it ends.")
    ] = False,
    storage: StorageOpt = None,
) -> None:
    """Print trial N's stdout and stderr (its trial.log: the last few MB, every rank's)."""

    def go() -> None:
        from hpsearch.views._logs import follow_trial_log, read_trial_log

        def write(data: bytes) -> None:
            typer.echo(data, nl=False)  # bytes as they are, flushed at once

        if follow:
            follow_trial_log(study, trial, write, storage=storage)
        else:
            write(read_trial_log(study, trial, storage=storage))

    _guard(go)


@app.command()
def version() -> None:
    """Print the hpsearch version."""
    from hpsearch._version import __version__

    typer.echo(__version__)


def _print_version(value: bool) -> None:
    if value:
        version()
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Hyperparameter search for fine-tunes: one YAML study, Optuna + Ray, one SQL store."""


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except HpsearchError as e:  # pragma: no cover - _guard catches these
        _fail(e, e.exit_code)


if __name__ == "__main__":
    main()
