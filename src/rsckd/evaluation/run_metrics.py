"""The contract of a run's metrics JSON, written by `rsckd train` and read by the ensemble's curated ranking
and by the report: in one place, so that no reader accepts what another refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rsckd.errors import UserError, read_json
from rsckd.schema import is_number

METRICS = ["sp", "se", "score"]
RUN_TYPES = {"arch": str, "target": str, "ablation": str | None, "k": int | None, "seed": int}
EXPECTED = (
    f"{', '.join(RUN_TYPES)}, n_params and literature/last/val blocks with numbers sp, se, score "
    "(val: also val_score, or null)"
)


def is_scores(block: Any, extra: tuple[str, ...] = ()) -> bool:
    return isinstance(block, dict) and all(is_number(block.get(m)) for m in (*METRICS, *extra))


def is_run(run: Any) -> bool:
    return (
        isinstance(run, dict)
        and all(
            isinstance(run.get(f), kind) and not isinstance(run.get(f), bool) for f, kind in RUN_TYPES.items()
        )
        and is_number(run.get("n_params"))
        and is_scores(run.get("literature"))
        and is_scores(run.get("last"))
        and (run.get("val") is None or is_scores(run["val"], ("val_score",)))
    )


def read_run_metrics(path: Path) -> dict[str, Any]:
    """A run's metrics; missing or not of the contract is one UserError naming the file."""
    run = read_json(path, "run metrics", "`rsckd train`")
    if not is_run(run):
        raise UserError(f"{path}: malformed run metrics, expected {EXPECTED}; re-run its stage")
    return run
