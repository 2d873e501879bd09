"""The cycle table (``data/prepared/cycles.csv``): one row per annotation row, in a fixed order.

Every logit and soft-label file downstream is aligned with this table by position, so the order (sorted
stems, then file row order) and the stable id ``<stem>:<row>`` are part of the contract. This module holds
the contract (columns, writer, reader) and nothing of the ICBHI reader or prompts, so the training stages that
read the table depend on it alone; ``rsckd prepare`` builds the rows.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pandas as pd

from rsckd.errors import UserError

CYCLE_COLUMNS = (
    "id",
    "stem",
    "row",
    "patient",
    "split",
    "subset",
    "label",
    "crackle",
    "wheeze",
    "start",
    "end",
    "location",
    "prompt_location",
    "device",
    "mode",
    "age",
    "sex",
    "age_group",
    "prompt",
    "native_sr",
    "wav",
)
LABEL_NAMES = ("normal", "crackle", "wheeze", "both")
STRING_COLUMNS = (
    "id",
    "stem",
    "split",
    "subset",
    "location",
    "prompt_location",
    "device",
    "mode",
    "sex",
    "age_group",
    "prompt",
    "wav",
)


def label_of(crackle: int, wheeze: int) -> int:
    """(0,0) normal 0, (1,0) crackle 1, (0,1) wheeze 2, (1,1) both 3."""
    return crackle + 2 * wheeze


def cycles_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text with a fixed column order and float repr, so equal inputs give equal bytes."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CYCLE_COLUMNS)
    for row in rows:
        writer.writerow([repr(v) if isinstance(v, float) else v for v in (row[c] for c in CYCLE_COLUMNS)])
    return buf.getvalue()


def load_cycles(path: str | Path) -> pd.DataFrame:
    """Read and check a cycle table; string columns stay strings, a missing age is NaN, a missing sex ''."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: cycle table not found; run `rsckd prepare` first")
    try:
        df = pd.read_csv(
            path,
            dtype={c: str for c in STRING_COLUMNS},
            keep_default_na=False,
            na_values={"age": [""]},
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise UserError(f"{path}: not a readable cycle table ({err})") from None
    if tuple(df.columns) != CYCLE_COLUMNS:
        missing = [c for c in CYCLE_COLUMNS if c not in df.columns]
        extra = [c for c in df.columns if c not in CYCLE_COLUMNS]
        raise UserError(
            f"{path}: columns do not match the cycle table "
            f"(missing: {missing or 'none'}, unexpected: {extra or 'none'}); "
            f"expected exactly {', '.join(CYCLE_COLUMNS)} in this order -- re-run `rsckd prepare`"
        )
    problems = [
        ("split", ~df["split"].isin(["train", "test"]), "train or test"),
        ("subset", ~df["subset"].isin(["train", "val", "test"]), "train, val or test"),
        ("label", ~df["label"].isin(range(4)), "0..3"),
    ]
    for column, bad, expected in problems:
        if bad.any():
            raise UserError(
                f"{path}: column {column} has {df.loc[bad, column].iloc[0]!r}; expected {expected}"
            )
    if df["id"].duplicated().any():
        raise UserError(
            f"{path}: duplicate id {df.loc[df['id'].duplicated(), 'id'].iloc[0]!r}; "
            "expected one row per cycle"
        )
    return df
