"""Views of a PBT study (issue 13): `hpsearch show --lineage` and the report's schedule and lineage figures."""

from __future__ import annotations

import datetime as dt
import html
import itertools
import json
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from hpsearch.views import (
    PBT_FIGURES,
    best_final,
    lineage,
    lineage_text,
    log_scaled,
    pbt_segments,
    schedule_xy,
    segment_curve,
)
from tests.conftest import OBJECTIVES, quadratic_study, run_cli
from tests.core.test_pbt import _write


@pytest.fixture(scope="module")
def pbt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 4-member, 3-generation PBT study of test_pbt, run once (seed 0: deterministic)."""
    path = _write(tmp_path_factory.mktemp("pbt"))
    res = run_cli("run", path, "-q", cwd=path.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study without PBT (the sampler's trials)."""
    folder = tmp_path_factory.mktemp("plain")
    (folder / "obj.py").write_text(OBJECTIVES)
    path = folder / "study.yaml"
    path.write_text(quadratic_study("plain", n_trials=3, sampler="random"))
    res = run_cli("run", path, "-q", cwd=folder)
    assert res.returncode == 0, res.stderr[-3000:]
    return path


def _complete(path: Path) -> dict[int, FrozenTrial]:
    study = optuna.load_study(study_name="pbt", storage=f"sqlite:///{path.parent / 'hpsearch.db'}")
    return {t.number: t for t in study.trials if t.state == TrialState.COMPLETE}


def _blocks(text: str) -> dict[int, list[str]]:
    """member -> its rows in `show --lineage`."""
    blocks: dict[int, list[str]] = {}
    member = None
    for line in text.splitlines():
        if m := re.fullmatch(r"member (\d+)", line):
            member = int(m.group(1))
            blocks[member] = []
        elif member is not None and re.match(r"  g\d+ ", line):
            blocks[member].append(line)
        elif not line.startswith(" "):
            member = None
    return blocks


# -- show --lineage -------------------------------------------------------------


def test_lineage_shows_every_member_chain_with_its_exploits_and_explored_params(pbt: Path) -> None:
    res = run_cli("show", pbt, "--lineage", cwd=pbt.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert all(len(line) <= 80 for line in out.splitlines()), out
    trials = _complete(pbt)
    blocks = _blocks(out)
    assert sorted(blocks) == [0, 1, 2, 3]
    exploits = 0
    for member, rows in blocks.items():
        own = sorted(
            (t for t in trials.values() if t.user_attrs["pbt_member"] == member),
            key=lambda t: t.user_attrs["pbt_generation"],
        )
        # The whole chain: one row per generation, each the member's segment of it.
        assert [re.match(r"  g(\d+)\s+#(\d+)", r).groups() for r in rows] == [
            (str(t.user_attrs["pbt_generation"]), str(t.number)) for t in own
        ]
        for row, t in zip(rows, own, strict=True):
            assert f"{t.value:.4g}" in row
            parent = t.user_attrs["pbt_parent"]
            if parent is None:
                assert f"lr {t.params['lr']:.3g}" in row and "copied" not in row
                continue
            donor = trials[parent]
            if donor.user_attrs["pbt_member"] == member:
                assert "copied" not in row and "->" not in row  # went on with its own params
                continue
            exploits += 1
            assert f"copied m{donor.user_attrs['pbt_member']} #{parent}" in row
            assert f"lr {donor.params['lr']:.3g}->{t.params['lr']:.3g}" in row
    assert exploits >= 2  # 1 per generation after the first: the worst member copies the best


def test_lineage_ends_with_the_best_final_segments_chain_back_to_generation_0(pbt: Path) -> None:
    res = run_cli("show", pbt, "--lineage", cwd=pbt.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    trials = _complete(pbt)
    last = max(t.user_attrs["pbt_generation"] for t in trials.values())
    best = max((t for t in trials.values() if t.user_attrs["pbt_generation"] == last), key=lambda t: t.value)
    chain = [best]
    while chain[-1].user_attrs["pbt_parent"] is not None:
        chain.append(trials[chain[-1].user_attrs["pbt_parent"]])
    assert chain[-1].user_attrs["pbt_generation"] == 0 and len(chain) == last + 1
    flat = " ".join(res.stdout.split())
    assert f"best final segment: #{best.number}, member {best.user_attrs['pbt_member']}" in flat
    assert " <- ".join(f"#{t.number} m{t.user_attrs['pbt_member']}" for t in chain) in flat


def test_lineage_of_a_study_without_pbt_is_refused_in_one_line(plain: Path) -> None:
    res = run_cli("show", plain, "--lineage", cwd=plain.parent)
    assert res.returncode == 2, res.stdout
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "study 'plain' has no PBT segments" in res.stderr and "--lineage" in res.stderr
    assert res.stdout == ""


def test_show_without_lineage_still_prints_the_trial_table(pbt: Path) -> None:
    res = run_cli("show", pbt, "--limit", "0", cwd=pbt.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "pbt (12 trials)" in res.stdout and "PBT lineage" not in res.stdout


# -- the pure functions, on hand-made trials --------------------------------------

_DISTS: dict[str, Any] = {"lr": FloatDistribution(1e-4, 1.0, log=True), "width": CategoricalDistribution((8, 16))}


def _trial(
    number: int,
    member: int,
    gen: int,
    parent: int | None,
    state: TrialState = TrialState.COMPLETE,
    value: float | None = None,
    lr: float = 0.01,
    width: int = 8,
) -> FrozenTrial:
    now = dt.datetime(2026, 1, 1)
    steps = {s: float(s) for s in range(1, 2 * gen + 3)} if state == TrialState.COMPLETE else {2 * gen + 1: 0.5}
    return FrozenTrial(
        number=number,
        trial_id=number,
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        values=None,
        datetime_start=now,
        datetime_complete=now if state.is_finished() else None,
        params={"lr": lr, "width": width},
        distributions=_DISTS,
        system_attrs={},
        intermediate_values=steps,
        user_attrs={"pbt_member": member, "pbt_generation": gen, "pbt_parent": parent, "start_step": 2 * gen},
    )


def _hand_made() -> list[FrozenTrial]:
    """2 members x 2 generations: member 1 copies member 0 (lr nudged in the 4th digit) after a failed try;
    member 0's generation-1 segment is still running."""
    return [
        _trial(0, 0, 0, None, value=2.0, lr=0.01231),
        _trial(1, 1, 0, None, value=1.0, lr=0.5, width=16),
        _trial(2, 1, 1, 0, TrialState.FAIL, lr=0.01234),
        _trial(3, 1, 1, 0, value=3.0, lr=0.01234),
        _trial(4, 0, 1, 0, TrialState.RUNNING, lr=0.01231),
    ]


def test_segments_keep_the_complete_try_and_compare_with_the_segment_they_started_from() -> None:
    segs = {(s.member, s.generation): s for s in pbt_segments(_hand_made())}
    assert sorted(segs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    copied = segs[(1, 1)]
    assert (copied.number, copied.tries, copied.donor, copied.state) == (3, 2, 0, "COMPLETE")
    assert copied.changes == {"lr": (0.01231, 0.01234)}  # width 8 came with the copy: not a change
    assert (copied.start_step, copied.end_step, sorted(copied.steps)) == (2, 4, [3, 4])
    assert segs[(0, 1)].state == "RUNNING" and segs[(0, 1)].donor is None
    assert log_scaled(_hand_made()) == {"lr"}
    assert schedule_xy([segs[(1, 0)], copied], "lr") == ([0, 2, 2, 4], [0.5, 0.5, 0.01234, 0.01234])
    assert segment_curve(copied, segs[(0, 0)]) == ([2, 3, 4], [2.0, 3.0, 4.0])


def test_lineage_text_of_hand_made_trials() -> None:
    text = lineage_text(_hand_made(), maximize=True, metric="score")
    rows = _blocks(text)
    assert "lr 0.01231->0.01234" in rows[1][1]  # as many digits as it takes to tell them apart
    assert "copied m0 #0" in rows[1][1] and "(2 tries)" in rows[1][1]
    assert "running" in rows[0][1] and "copied" not in rows[0][1]
    assert "maximize score" in text.splitlines()[0]
    assert [line.strip() for line in text.splitlines()[-2:]] == [
        "lineage: #3 m1 <- #0 m0",
        "members, first to last: m0 -> m1",
    ]
    segs = pbt_segments(_hand_made())
    best = best_final(segs, maximize=False)
    assert best is not None and best.number == 3  # the only complete segment of generation 1
    assert [s.number for s in lineage(segs, 3)] == [0, 3]


def test_a_study_without_pbt_segments_has_no_lineage() -> None:
    plain = _hand_made()
    for t in plain:
        t.user_attrs = {}
    assert plain and pbt_segments(plain) == [] and lineage_text(plain, maximize=True) == ""


# -- hpsearch report -----------------------------------------------------------------


def _figure(page: str, div_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The data and layout plotly draws into ``div_id``."""
    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + '"', page)
    assert match is not None, f"no figure {div_id}"
    start = match.end()
    decoder = json.JSONDecoder()
    pos = page.index("[", start)
    data, pos = decoder.raw_decode(page, pos)
    layout, _ = decoder.raw_decode(page, page.index("{", pos))
    return data, layout


def test_report_draws_the_schedule_and_the_best_members_lineage(pbt: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = run_cli("report", pbt, "-o", out, cwd=pbt.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    page = out.read_text()
    assert [k for k, _, _ in PBT_FIGURES] == ["pbt-schedule", "pbt-lineage"]
    for kind, title, _ in PBT_FIGURES:
        assert f'data-figure="{kind}"' in page and f"<h3>{html.escape(title)}</h3>" in page
        assert f'id="fig-0-{kind}"' in page  # drawn, not the empty placeholder
    trials = _complete(pbt)
    data, layout = _figure(page, "fig-0-pbt-schedule")
    assert sorted(d["name"] for d in data) == [f"member {m}" for m in range(4)]  # lr only: mutate: [lr]
    assert layout["yaxis"]["type"] == "log" and layout["yaxis"]["title"]["text"] == "lr"
    for d in data:
        member = int(d["name"].split()[1])
        own = sorted(
            (t for t in trials.values() if t.user_attrs["pbt_member"] == member),
            key=lambda t: t.user_attrs["pbt_generation"],
        )
        assert d["x"] == [x for g in range(3) for x in (2 * g, 2 * g + 2)]
        assert d["y"] == pytest.approx([t.params["lr"] for t in own for _ in (0, 1)])
    data, layout = _figure(page, "fig-0-pbt-lineage")
    last = [t for t in trials.values() if t.user_attrs["pbt_generation"] == 2]
    best = max(last, key=lambda t: t.value)
    assert data[-1]["name"] == f"member {best.user_attrs['pbt_member']} · #{best.number}"
    assert data[-1]["y"][-1] == pytest.approx(best.value) and data[-1]["x"][-1] == 6
    chain = [best]
    while chain[-1].user_attrs["pbt_parent"] is not None:
        chain.append(trials[chain[-1].user_attrs["pbt_parent"]])
    copies = [
        f"m{a.user_attrs['pbt_member']} copied m{b.user_attrs['pbt_member']} (#{b.number})"
        for a, b in itertools.pairwise(chain)
        if a.user_attrs["pbt_member"] != b.user_attrs["pbt_member"]
    ]
    assert copies and sorted(a["text"] for a in layout.get("annotations", [])) == sorted(copies)
    assert len(data) == len(chain)


def test_report_of_a_study_without_pbt_has_no_pbt_figures(plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = run_cli("report", plain, "-o", out, cwd=plain.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    page = out.read_text()
    assert 'data-figure="optimization-history"' in page
    assert "pbt-schedule" not in page and "pbt-lineage" not in page


def test_long_param_names_and_values_stay_within_80_columns() -> None:
    params = {
        "per_device_train_batch_size": 16,
        "learning_rate": 0.0001234,
        "weight_decay": 0.01,
        "lr_scheduler_type": "cosine_with_restarts",
        "warmup_ratio": 0.1,
    }
    moved = {**params, "per_device_train_batch_size": 32, "learning_rate": 0.0001481, "weight_decay": 0.012}
    trials = [_trial(n, n, 0, None, value=float(n)) for n in range(2)]
    trials.append(_trial(12345, 0, 1, 1, value=5.0))
    for t, p in zip(trials, (params, params, moved), strict=True):
        t.params = p
    text = lineage_text(trials, maximize=True)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    flat = " ".join(text.split())
    assert "copied m1 #1" in flat and "learning_rate 0.000123->0.000148," in flat
    assert "per_device_t.. 16->32," in flat and "lr_scheduler.. cosine_wit..," in flat
    assert "warmup_ratio" not in flat.split("copied m1 #1", 1)[1].split("member 1")[0]  # unchanged: not listed
