"""Tables 1-3 with the paper's numbers beside ours, from one long frame of the fan-in metrics files.

Only metrics JSON files and a few params values are read, so the report re-runs in seconds after any training
stage. Every training run contributes one row per selection protocol: the literature's best-test-epoch
selection (the only one comparable with the paper), the last epoch, and the validation-selected epoch: the
last two are the honest numbers that the paper's protocol inflates. Each table cell is a filter of that frame
and a mean / std / count over seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from rsckd.errors import UserError, read_json
from rsckd.evaluation.run_metrics import METRICS, RUN_TYPES, is_scores, read_run_metrics
from rsckd.schema import is_number

PROTOCOLS = {"literature": "best test epoch", "last": "last epoch", "val": "val-selected"}
COLUMNS = ["group", *RUN_TYPES, "n_params", "protocol", *METRICS, "loss"]
MISSING = "-"
NO_VAL = "n/a"


@dataclass(frozen=True)
class Profile:
    """The params values the report reads (extracted in one place: build.report_profile)."""

    data_root: str
    val_fraction: float
    teacher_arch: str
    teacher_select: str  # the teacher checkpoints behind the ensemble's logits
    distill_arch: str
    ks: list[int]
    methods: list[str]
    table2_archs: list[str]
    table2_methods: list[str]
    table2_k: int
    ablation_variants: list[str]
    ablation_k: int
    noise_var: float
    second_gen_k: int
    second_gen_method: str
    seeds: dict[str, list[int]]  # the seeds each metrics folder (run group) is expected to hold
    sizes: dict[str, str]  # model size per architecture
    labels: dict[str, str]  # display name per architecture
    models: dict[str, Any]  # models.<arch> blocks, as build_model takes them


def paper_values() -> dict[str, Any]:
    """The paper's published numbers (see paper_values.yaml for what each row means)."""
    return yaml.safe_load(resources.files("rsckd.report").joinpath("paper_values.yaml").read_text())


# ------------------------------------------------------------------------------------------------- loading


def _load(path: Path, is_valid: Callable[[Any], bool], expected: str) -> Any:
    """A metrics file's content, None when absent; a malformed one is a UserError naming it."""
    if not path.is_file():
        return None
    data = read_json(path, "metrics file", "its stage")
    if not is_valid(data):
        raise UserError(f"{path}: malformed metrics file, expected {expected}")
    return data


def load_runs(metrics_dir: Path, seeds: dict[str, list[int]]) -> pd.DataFrame:
    """Every run of the profile's seeds in the folders of the run groups (teachers, baseline, students, arch,
    ablation): one row per (run, protocol), ordered by seed; results not on disk are simply absent."""
    runs = [
        (group, read_run_metrics(path))
        for group in seeds
        for path in sorted((metrics_dir / group).glob("*.json"))
    ]
    rows = [
        {"group": group, **{f: run[f] for f in RUN_TYPES}, "n_params": run["n_params"], "protocol": p}
        | {m: run[p][m] for m in METRICS}
        | {"loss": run[p].get("loss")}
        for group, run in runs
        for p in PROTOCOLS
        if run[p] is not None
    ]
    dtypes = {"k": "Int64", "seed": "int64", **dict.fromkeys([*METRICS, "loss"], "float64")}
    frame = pd.DataFrame(rows, columns=COLUMNS).astype(dtypes)
    profile_seeds = pd.DataFrame([(g, s) for g in seeds for s in seeds[g]], columns=["group", "seed"])
    return frame.merge(profile_seeds).sort_values("seed", kind="stable")


def load_ensemble(metrics_dir: Path) -> pd.DataFrame:
    """Teacher-ensemble scores indexed by k; empty when metrics/ensemble.json is absent."""
    data = _load(
        metrics_dir / "ensemble.json",
        lambda d: (
            isinstance(d, dict)
            and isinstance(d.get("k"), dict)
            and all(k.isdigit() and is_scores(v, ("loss",)) for k, v in d["k"].items())
        ),
        'a "k" mapping of k -> {sp, se, score, loss}',
    )
    per_k = {int(k): v for k, v in (data or {"k": {}})["k"].items()}
    frame = pd.DataFrame([per_k[k] for k in sorted(per_k)], index=pd.Index(sorted(per_k), name="k"))
    return frame.reindex(columns=[*METRICS, "loss"])


def load_second_gen(metrics_dir: Path) -> dict[str, Any] | None:
    """The second generation's metrics (BTS-d++) as written, None when absent."""
    return _load(
        metrics_dir / "second_gen.json",
        lambda d: isinstance(d, dict) and is_number(d.get("k")) and is_scores(d.get("students")),
        "a number k and a students block with numbers sp, se, score",
    )


# ----------------------------------------------------------------------------------------- table cells


def runs_of(runs: pd.DataFrame, group: str, **fields: Any) -> pd.DataFrame:
    """The rows of one run group whose fields equal the given values."""
    keep = runs.group == group
    for name, value in fields.items():
        keep &= runs[name] == value
    return runs[keep]


def seed_stats(runs: pd.DataFrame, by: list[str], metrics: list[str] = METRICS) -> pd.DataFrame:
    """Mean, sample std (ddof=1; 0 for a single run) and count over seeds of each metric per group of `by`,
    as columns <metric>_mean, <metric>_std, <metric>_count."""
    stats = runs.groupby(by)[metrics].agg(["mean", "std", "count"]).fillna(0.0)
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    return stats


def nearest(target: int, available: list[int]) -> int:
    """The available k closest to the paper's k (the smaller one on a tie)."""
    return min(available, key=lambda k: (abs(k - target), k))


def sweep_k(runs: pd.DataFrame, prof: Profile, method: str, paper_k: int) -> int:
    """The sweep's k for a paper cell: the same k when run, else the nearest k that has results."""
    have = set(runs_of(runs, "students", target=method).k)
    return nearest(paper_k, [k for k in prof.ks if k in have] or prof.ks)


def student_cell(
    runs: pd.DataFrame, prof: Profile, method: str, paper_k: int
) -> tuple[str, pd.DataFrame] | None:
    """A paper's BTS-d cell (label, runs), None when the profile does not run the method."""
    if method not in prof.methods:
        return None
    k = sweep_k(runs, prof, method, paper_k)
    return f"ours [k={k}]", runs_of(runs, "students", target=method, k=k)


def arch_cell(runs: pd.DataFrame, prof: Profile, arch: str, target: str) -> tuple[pd.DataFrame, str] | None:
    """Table 2 cell (hard or soft) and what the soft label was; the distilled arch falls back to the
    baseline and the sweep when it is not in the architecture table."""
    if target == "hard":
        if arch in prof.table2_archs:
            return runs_of(runs, "arch", arch=arch, target="hard"), ""
        return (runs_of(runs, "baseline"), "") if arch == prof.distill_arch else None
    method = "mean" if "mean" in prof.table2_methods else prof.table2_methods[0]  # the paper's soft labels
    if arch in prof.table2_archs:
        return runs_of(runs, "arch", arch=arch, target=method), f"{method}, k={prof.table2_k}"
    if arch == prof.distill_arch and method in prof.methods:
        k = sweep_k(runs, prof, method, prof.table2_k)
        return runs_of(runs, "students", target=method, k=k), f"{method}, k={k}"
    return None


# ------------------------------------------------------------------------------------------- rendering


def fmt_stat(stats: pd.Series, metric: str) -> str:
    """Mean ± std over seeds; a single run is printed without ±."""
    mean, std = stats[f"{metric}_mean"], stats[f"{metric}_std"]
    return f"{mean:.2f} ± {std:.2f}" if stats[f"{metric}_count"] > 1 else f"{mean:.2f}"


def protocol_cells(runs: pd.DataFrame, metrics: list[str] = METRICS) -> dict[str, list[str]]:
    """Formatted cells per protocol: '-' without runs, 'n/a' for a protocol no run has (no val subset)."""
    stats = seed_stats(runs, ["protocol"], metrics)
    return {
        p: [
            MISSING if runs.empty else fmt_stat(stats.loc[p], m) if p in stats.index else NO_VAL
            for m in metrics
        ]
        for p in PROTOCOLS
    }


def seeds_note(runs: pd.DataFrame, prof: Profile) -> str:
    n = runs.seed.nunique()
    expected = len(prof.seeds[runs.group.iloc[0]]) if n else 0
    return "" if n == expected else f" ({n}/{expected} seeds)"


def run_lines(found: tuple[str, pd.DataFrame] | None, prof: Profile) -> list[tuple[str, list[str]]]:
    """(source label, [Sp, Se, Score]) lines for our side of a row: one per protocol."""
    if found is None:
        return [("ours (not in this profile)", [MISSING] * 3)]
    label, runs = found
    cells, note = protocol_cells(runs), seeds_note(runs, prof)
    return [(f"{label}, {name}{note}", cells[p]) for p, name in PROTOCOLS.items()]


def single_lines(label: str, scores: Any) -> list[tuple[str, list[str]]]:
    """The one line of a single evaluation (an ensemble): no seeds, no protocols."""
    return [(label, [MISSING] * 3 if scores is None else [f"{scores[m]:.2f}" for m in METRICS])]


def paper_cell(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, list):
        return f"{value[0]:.2f} ± {value[1]:.2f}"
    return f"{value:.2f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_params(n: Any) -> str:
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def table1(
    runs: pd.DataFrame,
    ensemble: pd.DataFrame,
    second_gen: dict[str, Any] | None,
    prof: Profile,
    paper: dict[str, Any],
) -> str:
    def ours(spec: dict[str, Any]) -> list[tuple[str, list[str]]]:
        """Our lines beside one row, from its `ours` spec in paper_values.yaml."""
        kind = spec["kind"]
        if kind == "ensemble":
            if ensemble.empty:
                return single_lines("ours", None)
            k = nearest(spec["k"], list(ensemble.index))
            return single_lines(f"ours [k={k}, teacher checkpoints: {prof.teacher_select}]", ensemble.loc[k])
        if kind == "second_gen":
            if second_gen is None:
                return single_lines("ours", None)
            label = f"ours [k={second_gen['k']}, {second_gen.get('method', '?')}]"
            return single_lines(label, second_gen["students"])
        if kind == "baseline":
            return run_lines(("ours", runs_of(runs, "baseline")), prof)
        if kind == "teachers":
            label = f"ours (mean of {len(prof.seeds['teachers'])} teachers)"
            return run_lines((label, runs_of(runs, "teachers")), prof)
        if kind == "student":
            return run_lines(student_cell(runs, prof, spec["method"], spec["k"]), prof)
        if kind == "arch":
            cell = arch_cell(runs, prof, spec["arch"], spec["target"])
            return run_lines(
                None if cell is None else (f"ours [{cell[1]}]" if cell[1] else "ours", cell[0]), prof
            )
        raise ValueError(f"unknown row source {kind!r} in paper_values.yaml")

    rows = []
    for group in paper["table1"]:
        rows.append([f"**{group['group']}**"] + [""] * 7)
        for row in group["rows"]:
            label = row["method"] + (f" ({row['note']})" if "note" in row else "")
            rows.append(
                [label, row["backbone"], row["pretraining"], row["venue"], "paper"]
                + [paper_cell(row.get(m)) for m in METRICS]
            )
            if "ours" in row:
                rows += [["", "", "", "", source, *values] for source, values in ours(row["ours"])]
    header = ["Method", "Backbone", "Pretraining", "Venue", "Source", "Sp (%)", "Se (%)", "Score (%)"]
    return "## Table 1: main results on ICBHI (official split)\n\n" + md_table(header, rows)


def table2(runs: pd.DataFrame, prof: Profile, paper: dict[str, Any]) -> str:
    rows, pairs = [], []
    sides = ("hard", "soft")
    for row in paper["table2"]:
        hard, soft = (arch_cell(runs, prof, row["arch"], side) for side in sides)
        hard_runs, soft_runs = (runs.iloc[:0] if cell is None else cell[0] for cell in (hard, soft))
        rows.append(
            [row["model"], row["params"], "paper"]
            + [paper_cell(row[side][m]) for side in sides for m in METRICS]
            + [f"{row['gain']:.2f}"]
        )
        # the protocols where both sides have results, with the Score gain of soft over hard
        pair = (
            seed_stats(hard_runs, ["protocol"])
            .add_prefix("hard_")
            .join(seed_stats(soft_runs, ["protocol"]).add_prefix("soft_"), how="inner")
        )
        pair["gain"] = pair.soft_score_mean - pair.hard_score_mean
        pairs.append(pair)
        hard_cells, soft_cells = protocol_cells(hard_runs), protocol_cells(soft_runs)
        soft_label = f"ours (soft: {soft[1]})" if soft else "ours"
        n_params = MISSING if hard_runs.empty else fmt_params(hard_runs.n_params.iloc[0])
        for protocol, name in PROTOCOLS.items():
            params = n_params if protocol == "literature" else ""
            gain = f"{pair.gain[protocol]:+.2f}" if protocol in pair.index else MISSING
            rows.append(
                ["", params, f"{soft_label}, {name}", *hard_cells[protocol], *soft_cells[protocol], gain]
            )
    avg = paper["table2_average"]
    rows.append(
        ["Average", "-", "paper"]
        + [paper_cell(avg[side][m]) for side in sides for m in METRICS]
        + [f"{avg['gain']:.2f}"]
    )
    # ours as the paper: the means of the rows' means and of their stds (the fewest seeds decide the ±)
    both = pd.concat(pairs).groupby(level="protocol")
    averages = both.agg({c: "min" if c.endswith("_count") else "mean" for c in pairs[0].columns})
    for protocol, name in PROTOCOLS.items():
        if protocol not in averages.index:
            rows.append(["", "", f"ours, {name}"] + [MISSING] * 7)
            continue
        mean, n = averages.loc[protocol], both.size()[protocol]
        cells = [fmt_stat(mean, f"{side}_{m}") for side in sides for m in METRICS]
        archs = f"{n} arch{'s' if n > 1 else ''}"
        rows.append(["", "", f"ours ({archs}), {name}", *cells, f"{mean.gain:+.2f}"])
    header = ["Model", "# Params", "Source"]
    header += [f"{side.title()} {m} (%)" for side in sides for m in ("Sp", "Se", "Score")] + [
        "Gain Score (%)"
    ]
    note = (
        "Paper: soft labels from the mean teacher BTS++[k=5]; its BTS soft row repeats the best BTS-d "
        "(random teacher, k=15). Averages are means of the rows' means and of their stds, as in the paper; "
        "ours average only the architectures that have both hard and soft results."
    )
    return "## Table 2: hard vs soft labels per architecture\n\n" + note + "\n\n" + md_table(header, rows)


def table3_cell(runs: pd.DataFrame, prof: Profile, row: dict[str, Any]) -> tuple[str, pd.DataFrame] | None:
    variant = row["variant"]
    if variant == "baseline":
        return "ours", runs_of(runs, "baseline")
    if variant in ("mean", "random"):
        return student_cell(runs, prof, variant, prof.ablation_k if variant == "mean" else row["k"])
    if variant not in prof.ablation_variants:
        return None
    labels = {"noise_var": f"ours [var={prof.noise_var}]", "curated": f"ours [k={prof.ablation_k}]"}
    return labels.get(variant, "ours"), runs_of(runs, "ablation", ablation=variant)


def table3(runs: pd.DataFrame, prof: Profile, paper: dict[str, Any]) -> str:
    rows = []
    for row in paper["table3"]:
        published = [row["text"], "", ""] if "text" in row else [paper_cell(row[m]) for m in METRICS]
        rows.append([row["method"], "paper", *published])
        rows += [["", source, *values] for source, values in run_lines(table3_cell(runs, prof, row), prof)]
    header = ["Method", "Source", "Sp (%)", "Se (%)", "Score (%)"]
    return "## Table 3: ablation of the soft labels (BTS-d)\n\n" + md_table(header, rows)


def sweep_table(runs: pd.DataFrame, prof: Profile) -> str:
    """Every cell of the distillation sweep (the data of Figure 2), all three protocols."""
    cells = [("0", "baseline (hard labels)", runs_of(runs, "baseline"))] + [
        (str(k), method, runs_of(runs, "students", target=method, k=k))
        for k in prof.ks
        for method in prof.methods
    ]
    rows = []
    for k, teacher, cell in cells:
        scores = protocol_cells(cell, ["score"])
        rows.append([k, teacher, str(cell.seed.nunique())] + [scores[p][0] for p in PROTOCOLS])
    header = ["k", "Teacher", "Seeds"] + [f"Score (%), {name}" for name in PROTOCOLS.values()]
    return "## Distillation sweep (Figure 2 data)\n\n" + md_table(header, rows)


def cost_table(cost: dict[str, Any] | None) -> str:
    title = "## Inference cost: one student vs the k-teacher ensemble\n\n"
    if cost is None:
        return title + "Not computed: an input of the student or teacher model is missing (see the warnings)."
    note = (
        f"FLOPs of one forward pass on one cycle (batch 1, feature shape {cost['student']['feature_shape']}) "
        "counted by torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-add of matmul, conv and "
        "attention). An ensemble of k teachers costs k teacher passes."
    )
    student, teacher = cost["student"], cost["teacher"]
    models = [(f"{student['arch']} student (single model)", "1", student, "1.0")] + [
        (f"{teacher['arch']} teacher ensemble", k, entry, f"{entry['ratio']:.1f}")
        for k, entry in cost["ensembles"].items()
    ]
    rows = [[name, k, fmt_params(c["n_params"]), f"{c['flops'] / 1e9:.4g}", x] for name, k, c, x in models]
    header = ["Model", "k", "# Params", "GFLOPs / cycle", "× student"]
    return title + note + "\n\n" + md_table(header, rows)


def report_archs(prof: Profile) -> list[str]:
    return sorted({prof.teacher_arch, prof.distill_arch, *prof.table2_archs})


def is_smoke(prof: Profile) -> bool:
    """Tiny models or the synthetic corpus: numbers that must never be mistaken for the paper's."""
    return any(prof.sizes[arch] == "tiny" for arch in report_archs(prof)) or "synthetic" in prof.data_root


def profile_header(prof: Profile) -> str:
    """The facts that tell a smoke run from a paper run, read from params."""
    p, seeds = prof, prof.seeds
    sizes = ", ".join(f"{arch} {p.sizes[arch]}" for arch in report_archs(p))
    lines = [
        f"- data: `{p.data_root}` (validation fraction {p.val_fraction})",
        f"- teachers: {len(seeds['teachers'])} × {p.teacher_arch} (seeds {seeds['teachers']})",
        f"- sweep: {p.distill_arch} students, k ∈ {p.ks}, teachers {p.methods}, seeds {seeds['students']}",
        f"- architecture table: {p.table2_archs}, hard and {p.table2_methods} teacher, k = {p.table2_k}, "
        f"seeds {seeds['arch']}",
        f"- ablation: {p.ablation_variants}, k = {p.ablation_k}, seeds {seeds['ablation']}",
        f"- second generation: k = {p.second_gen_k}, {p.second_gen_method} teacher",
        f"- model sizes: {sizes}",
    ]
    warning = (
        "\n> **Smoke profile** (tiny models and/or the synthetic corpus): these numbers check the pipeline "
        "and are NOT comparable with the paper's.\n"
        if is_smoke(prof)
        else ""
    )
    legend = (
        "Ours: mean ± sample std (ddof=1) over seeds; one run has no ±. Protocols: *best test epoch* = "
        "the paper's selection (best test Score with Se > se_min, optimistic); *last epoch*; *val-selected* "
        "= test metrics at the best validation epoch (n/a: no validation subset). `-` = result missing or "
        "not in this profile; `[k=…]` = the k actually used when the paper's k is not in the sweep."
    )
    body = "\n".join(lines)
    return f"# Results: ours beside the paper's\n\nProfile (from params):\n\n{body}\n{warning}\n{legend}"
