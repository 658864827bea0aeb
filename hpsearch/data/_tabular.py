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
    """
    if dataset in BUNDLED:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, BUNDLED[dataset])()
        return bunch.data, bunch.target
    path = Path(dataset)
    if not path.is_absolute():
        path = base_dir / path
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise ConfigError(
            f"{field}: unknown dataset {dataset!r}; use one of {', '.join(BUNDLED)} "
            "or a .csv/.tsv file path"
        )
    if path.is_dir():
        raise ConfigError(f"{field}: {path} is a directory, not a .csv/.tsv file; fix the path")
    if not path.is_file():
        raise ConfigError(f"{field}: file {path} does not exist; fix the path")
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{field}: cannot read {path}: {type(e).__name__}: {str(e)[:200]}") from None
    if frame.shape[1] < 2 or len(frame) < 2:
        raise ConfigError(f"{field}: {path} needs a header, 2+ columns and 2+ rows")
    target = target_column or frame.columns[-1]
    if target not in frame.columns:
        raise ConfigError(
            f"trainer.target_column: {target!r} is not a column of {path}; "
            f"columns are: {', '.join(map(str, frame.columns[:20]))}"
        )
    return frame.drop(columns=[target]).to_numpy(), frame[target].to_numpy()
