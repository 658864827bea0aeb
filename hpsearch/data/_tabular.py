"""Tabular datasets for the scikit-learn trainers: bundled ones or a CSV file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpsearch.errors import ConfigError

__all__ = ["BUNDLED", "load_tabular"]

#: name -> sklearn.datasets loader
BUNDLED = {
    "digits": "load_digits",
    "iris": "load_iris",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
}


def load_tabular(
    dataset: str,
    *,
    base_dir: Path,
    target_column: str | None = None,
    field: str = "trainer.dataset",
) -> tuple[Any, Any]:
    """Features and labels of a bundled dataset, or of a CSV/TSV file.

    A file's label column is ``target_column`` (default: the last column);
    every other column is a feature.

    Raises:
        ConfigError: naming ``field`` (or ``trainer.target_column``) when the
            file is missing, unreadable, too small or lacks the label column.
    """
    if dataset in BUNDLED:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, BUNDLED[dataset])()
        return bunch.data, bunch.target
    path = _table_path(dataset, base_dir, field)
    frame = _read_table(path, field)
    target = target_column or frame.columns[-1]
    if target not in frame.columns:
        raise ConfigError(
            f"trainer.target_column: {target!r} is not a column of {path}; "
            f"columns are: {', '.join(map(str, frame.columns[:20]))}"
        )
    return frame.drop(columns=[target]).to_numpy(), frame[target].to_numpy()


def _table_path(dataset: str, base_dir: Path, field: str) -> Path:
    """The existing .csv/.tsv file ``dataset`` names (relative paths from ``base_dir``)."""
    path = Path(dataset)
    if not path.is_absolute():
        path = base_dir / path
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise ConfigError(
            f"{field}: unknown dataset {dataset!r}; use one of {', '.join(BUNDLED)} or a .csv/.tsv file path"
        )
    if path.is_dir():
        raise ConfigError(f"{field}: {path} is a directory, not a .csv/.tsv file; fix the path")
    if not path.is_file():
        raise ConfigError(f"{field}: file {path} does not exist; fix the path")
    return path


def _read_table(path: Path, field: str) -> Any:
    """The file as a pandas DataFrame with a header, 2+ columns and 2+ rows."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except Exception as e:  # noqa: BLE001 - pandas raises many types for a malformed file
        raise ConfigError(f"{field}: cannot read {path}: {type(e).__name__}: {str(e)[:200]}") from None
    if frame.shape[1] < 2 or len(frame) < 2:
        raise ConfigError(f"{field}: {path} needs a header, 2+ columns and 2+ rows")
    return frame
