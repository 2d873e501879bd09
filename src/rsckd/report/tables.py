"""Collect the fan-in metrics files and render Tables 1-3 with the paper's published numbers beside ours.

Only metrics JSON files and params lists are read, so the report re-runs in seconds after any training stage.
Every one of our rows is shown under three protocols: the literature's best-test-epoch selection (the only one
comparable with the paper), the last epoch, and the validation-selected epoch: the last two are the honest
numbers that the paper's protocol inflates.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rsckd.errors import UserError

METRICS = ("sp", "se", "score")
PROTOCOLS = {"literature": "best test epoch", "last": "last epoch", "val": "val-selected"}
MISSING = "-"
NO_VAL = "n/a"


def paper_values() -> dict[str, Any]:
    """The paper's published numbers (see paper_values.yaml for what each row means)."""
    return yaml.safe_load(resources.files("rsckd.report").joinpath("paper_values.yaml").read_text())


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (ddof=1) over seeds; a single run has std 0 and is printed without ±."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, len(values))

    def fmt(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_scores(block: Any, extra: tuple[str, ...] = ()) -> bool:
    return isinstance(block, dict) and all(_is_number(block.get(m)) for m in METRICS + extra)


@dataclass
class Runs:
    """The runs of one table cell over its seeds (missing files are simply absent)."""

    runs: list[dict[str, Any]]
    n_expected: int

    def values(self, protocol: str, metric: str) -> list[float]:
        return [r[protocol][metric] for r in self.runs if r[protocol] is not None]

    def stat(self, protocol: str, metric: str) -> Stat | None:
        return Stat.of(self.values(protocol, metric))

    def cell(self, protocol: str, metric: str) -> str:
        if not self.runs:
            return MISSING
        found = self.stat(protocol, metric)
        return NO_VAL if found is None else found.fmt()

    @property
    def n_params(self) -> int | None:
        return self.runs[0]["n_params"] if self.runs else None

    @property
    def seeds_note(self) -> str:
        return (
            "" if len(self.runs) in (0, self.n_expected) else f" ({len(self.runs)}/{self.n_expected} seeds)"
        )


class MetricsDir:
    """Validated, cached access to the metrics folder; a malformed file is a UserError naming it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, Any] = {}

    def _load(self, rel: str) -> Any:
        if rel not in self._cache:
            path = self.root / rel
            try:
                self._cache[rel] = json.loads(path.read_text()) if path.is_file() else None
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise UserError(f"{path}: malformed metrics file, not valid JSON ({err})") from None
        return self._cache[rel]

    def malformed(self, rel: str, expected: str) -> UserError:
        return UserError(f"{self.root / rel}: malformed metrics file, expected {expected}")

    def run(self, rel: str) -> dict[str, Any] | None:
        """One training run's metrics (contract: run metrics JSON of `rsckd train`), or None when absent."""
        data = self._load(rel)
        if data is None:
            return None
        ok = (
            isinstance(data, dict)
            and _is_number(data.get("n_params"))
            and _check_scores(data.get("literature"))
            and _check_scores(data.get("last"))
            and (data.get("val") is None or _check_scores(data.get("val")))
        )
        if not ok:
            raise self.malformed(rel, "n_params and literature/last/val blocks with numbers sp, se, score")
        return data

    def runs(self, pattern: str, seeds: list[int]) -> Runs:
        found = [self.run(pattern.format(seed=seed)) for seed in seeds]
        return Runs([r for r in found if r is not None], len(seeds))

    @cached_property
    def ensemble(self) -> dict[str, dict[str, float]]:
        """Teacher-ensemble scores by k (int keys); empty when metrics/ensemble.json is absent."""
        data = self._load("ensemble.json")
        if data is None:
            return {}
        per_k = data.get("k") if isinstance(data, dict) else None
        if not isinstance(per_k, dict) or not all(
            str(k).isdigit() and _check_scores(v, ("loss",)) for k, v in per_k.items()
        ):
            raise self.malformed("ensemble.json", 'a "k" mapping of k -> {sp, se, score, loss}')
        return {int(k): v for k, v in sorted(per_k.items(), key=lambda kv: int(kv[0]))}

    @cached_property
    def second_gen(self) -> dict[str, Any] | None:
        data = self._load("second_gen.json")
        if data is None:
            return None
        ok = isinstance(data, dict) and _is_number(data.get("k")) and _check_scores(data.get("students"))
        if not ok:
            raise self.malformed(
                "second_gen.json", "k, method and a students block with numbers sp, se, score"
            )
        return data


def nearest(target: int, available: list[int]) -> int:
    """The available k closest to the paper's k (the smaller one on a tie)."""
    return min(available, key=lambda k: (abs(k - target), k))


@dataclass
class Result:
    """Our numbers for one paper row: seed runs (three protocol lines) or one ensemble run."""

    label: str
    runs: Runs | None = None
    single: dict[str, float] | None = None
    note: str = ""


class Sources:
    """Resolves a paper row's `ours` spec to our metrics files under the active profile."""

    def __init__(self, metrics: MetricsDir, params: dict[str, Any]) -> None:
        self.m = metrics
        self.p = params

    def baseline(self) -> Runs:
        return self.m.runs("baseline/s{seed}.json", self.p["distill"]["seeds"])

    def teachers(self) -> Runs:
        return self.m.runs("teachers/s{seed}.json", self.p["teacher"]["seeds"])

    def student(self, method: str, k: int) -> Runs:
        return self.m.runs(f"students/k{k}-{method}-s{{seed}}.json", self.p["distill"]["seeds"])

    def sweep_k(self, method: str, paper_k: int) -> int:
        """The sweep's k for a paper cell: the same k when run, else the nearest k that has results."""
        ks = self.p["distill"]["ks"]
        have = [k for k in ks if self.student(method, k).runs]
        return nearest(paper_k, have or ks)

    def soft_target(self) -> str:
        """The soft-label method of Table 2: the paper's mean teacher when the profile runs it."""
        methods = self.p["arch_table"]["methods"]
        return "mean" if "mean" in methods else methods[0]

    def arch(self, arch: str, target: str) -> tuple[Runs, str] | None:
        """Table 2 cell (hard or soft) and what the soft label was; the distilled arch falls back to the
        baseline and the sweep when it is not in the architecture table."""
        k = self.p["arch_table"]["k"]
        if target == "hard":
            if arch in self.p["arch_table"]["archs"]:
                return self.m.runs(f"arch/{arch}-hard-s{{seed}}.json", self.p["arch_table"]["seeds"]), ""
            return (self.baseline(), "") if arch == self.p["distill"]["arch"] else None
        method = self.soft_target()
        if arch in self.p["arch_table"]["archs"]:
            return self.m.runs(
                f"arch/{arch}-{method}-s{{seed}}.json", self.p["arch_table"]["seeds"]
            ), f"{method}, k={k}"
        if arch == self.p["distill"]["arch"] and method in self.p["distill"]["methods"]:
            k_used = self.sweep_k(method, k)
            return self.student(method, k_used), f"{method}, k={k_used}"
        return None

    def ablation(self, variant: str) -> Runs | None:
        if variant not in self.p["ablation"]["variants"]:
            return None
        return self.m.runs(f"ablation/{variant}-s{{seed}}.json", self.p["ablation"]["seeds"])

    def ensemble_k(self, paper_k: int) -> int | None:
        return nearest(paper_k, list(self.m.ensemble)) if self.m.ensemble else None

    def resolve(self, spec: dict[str, Any]) -> Result | None:
        kind = spec["kind"]
        if kind == "baseline":
            return Result("ours", self.baseline())
        if kind == "teachers":
            return Result(f"ours (mean of {len(self.p['teacher']['seeds'])} teachers)", self.teachers())
        if kind == "student":
            if spec["method"] not in self.p["distill"]["methods"]:
                return None
            k = self.sweep_k(spec["method"], spec["k"])
            return Result(f"ours [k={k}]", self.student(spec["method"], k))
        if kind == "arch":
            found = self.arch(spec["arch"], spec["target"])
            return None if found is None else Result(f"ours [{found[1]}]" if found[1] else "ours", found[0])
        if kind == "ensemble":
            k = self.ensemble_k(spec["k"])
            select = self.p["train"][self.p["teacher"]["arch"]]["select"]
            if k is None:
                return Result("ours")
            return Result(f"ours [k={k}, teacher checkpoints: {select}]", single=self.m.ensemble[k])
        if kind == "second_gen":
            sg = self.m.second_gen
            if sg is None:
                return Result("ours")
            return Result(f"ours [k={sg['k']}, {sg.get('method', '?')}]", single=sg["students"])
        raise ValueError(f"unknown row source {kind!r} in paper_values.yaml")


# ---------------------------------------------------------------------------------------------- rendering


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


def result_lines(result: Result | None) -> list[tuple[str, list[str]]]:
    """(source label, [Sp, Se, Score]) lines for our side of a row."""
    if result is None:
        return [("ours (not in this profile)", [MISSING] * 3)]
    if result.runs is None:
        values = [MISSING] * 3 if result.single is None else [f"{result.single[m]:.2f}" for m in METRICS]
        return [(result.label, values)]
    return [
        (f"{result.label}, {name}{result.runs.seeds_note}", [result.runs.cell(p, m) for m in METRICS])
        for p, name in PROTOCOLS.items()
    ]


def table1(sources: Sources, paper: dict[str, Any]) -> str:
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
                for source, values in result_lines(sources.resolve(row["ours"])):
                    rows.append(["", "", "", "", source, *values])
    header = ["Method", "Backbone", "Pretraining", "Venue", "Source", "Sp (%)", "Se (%)", "Score (%)"]
    return "## Table 1: main results on ICBHI (official split)\n\n" + md_table(header, rows)


def fmt_params(n: int | None) -> str:
    if n is None:
        return MISSING
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def table2(sources: Sources, paper: dict[str, Any]) -> str:
    rows = []
    ours_by_protocol: dict[str, list[tuple[list[Stat], list[Stat]]]] = {p: [] for p in PROTOCOLS}

    def cells(runs: Runs | None, protocol: str) -> list[str]:
        return [MISSING] * 3 if runs is None else [runs.cell(protocol, m) for m in METRICS]

    for row in paper["table2"]:
        hard, soft = sources.arch(row["arch"], "hard"), sources.arch(row["arch"], "soft")
        rows.append(
            [row["model"], row["params"], "paper"]
            + [paper_cell(row[t][m]) for t in ("hard", "soft") for m in METRICS]
            + [f"{row['gain']:.2f}"]
        )
        hard_runs, soft_runs = (hard[0] if hard else None), (soft[0] if soft else None)
        soft_label = f"ours (soft: {soft[1]})" if soft else "ours"
        for i, (protocol, name) in enumerate(PROTOCOLS.items()):
            gain = MISSING
            if hard_runs and soft_runs:
                h = [hard_runs.stat(protocol, m) for m in METRICS]
                s = [soft_runs.stat(protocol, m) for m in METRICS]
                if all(h) and all(s):
                    gain = f"{s[2].mean - h[2].mean:+.2f}"
                    ours_by_protocol[protocol].append((h, s))
            params = fmt_params(hard_runs.n_params if hard_runs else None) if i == 0 else ""
            rows.append(
                [
                    "",
                    params,
                    f"{soft_label}, {name}",
                    *cells(hard_runs, protocol),
                    *cells(soft_runs, protocol),
                    gain,
                ]
            )
    avg = paper["table2_average"]
    rows.append(
        ["Average", "-", "paper"]
        + [paper_cell(avg[t][m]) for t in ("hard", "soft") for m in METRICS]
        + [f"{avg['gain']:.2f}"]
    )
    for protocol, name in PROTOCOLS.items():
        pairs = ours_by_protocol[protocol]
        if not pairs:
            rows.append(["", "", f"ours, {name}"] + [MISSING] * 7)
            continue
        mean_cells = []
        for side in (0, 1):
            for i in range(3):
                stats = [pair[side][i] for pair in pairs]
                mean_cells.append(
                    Stat(
                        statistics.fmean(s.mean for s in stats),
                        statistics.fmean(s.std for s in stats),
                        min(s.n for s in stats),
                    ).fmt()
                )
        gain = statistics.fmean(s[2].mean - h[2].mean for h, s in pairs)
        archs = f"{len(pairs)} arch{'s' if len(pairs) > 1 else ''}"
        rows.append(["", "", f"ours ({archs}), {name}", *mean_cells, f"{gain:+.2f}"])
    header = [
        "Model",
        "# Params",
        "Source",
        "Hard Sp (%)",
        "Hard Se (%)",
        "Hard Score (%)",
        "Soft Sp (%)",
        "Soft Se (%)",
        "Soft Score (%)",
        "Gain Score (%)",
    ]
    note = (
        "Paper: soft labels from the mean teacher BTS++[k=5]; its BTS soft row repeats the best BTS-d "
        "(random teacher, k=15). Averages are means of the rows' means and of their stds, as in the paper; "
        "ours average only the architectures that have both hard and soft results."
    )
    return "## Table 2: hard vs soft labels per architecture\n\n" + note + "\n\n" + md_table(header, rows)


def table3_result(sources: Sources, row: dict[str, Any]) -> Result | None:
    variant, p = row["variant"], sources.p
    if variant == "baseline":
        return Result("ours", sources.baseline())
    if variant in ("mean", "random"):
        paper_k = p["ablation"]["k"] if variant == "mean" else row["k"]
        return sources.resolve({"kind": "student", "method": variant, "k": paper_k})
    runs = sources.ablation(variant)
    if runs is None:
        return None
    labels = {
        "noise_var": f"ours [var={p['ablation']['noise_var']}]",
        "curated": f"ours [k={p['ablation']['k']}]",
    }
    return Result(labels.get(variant, "ours"), runs)


def table3(sources: Sources, paper: dict[str, Any]) -> str:
    rows = []
    for row in paper["table3"]:
        published = [row["text"], "", ""] if "text" in row else [paper_cell(row[m]) for m in METRICS]
        rows.append([row["method"], "paper", *published])
        rows += [["", source, *values] for source, values in result_lines(table3_result(sources, row))]
    header = ["Method", "Source", "Sp (%)", "Se (%)", "Score (%)"]
    return "## Table 3: ablation of the soft labels (BTS-d)\n\n" + md_table(header, rows)


def sweep_table(sources: Sources) -> str:
    """Every cell of the distillation sweep (the data of Figure 2), all three protocols."""
    rows = []
    base = sources.baseline()
    rows.append(
        ["0", "baseline (hard labels)", str(len(base.runs))] + [base.cell(p, "score") for p in PROTOCOLS]
    )
    for k in sources.p["distill"]["ks"]:
        for method in sources.p["distill"]["methods"]:
            runs = sources.student(method, k)
            rows.append([str(k), method, str(len(runs.runs))] + [runs.cell(p, "score") for p in PROTOCOLS])
    header = ["k", "Teacher", "Seeds"] + [f"Score (%), {name}" for name in PROTOCOLS.values()]
    return "## Distillation sweep (Figure 2 data)\n\n" + md_table(header, rows)


def cost_table(cost: dict[str, Any] | None) -> str:
    title = "## Inference cost: one student vs the k-teacher ensemble\n\n"
    if cost is None:
        return title + "Not computed: the feature meta.json of the student's feature kind is missing."
    note = (
        f"FLOPs of one forward pass on one cycle (batch 1, feature shape {cost['student']['feature_shape']}) "
        "counted by torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-add of matmul, conv and "
        "attention). An ensemble of k teachers costs k teacher passes."
    )
    rows = [
        [
            f"{cost['student']['arch']} student (single model)",
            "1",
            fmt_params(cost["student"]["n_params"]),
            f"{cost['student']['flops'] / 1e9:.4g}",
            "1.0",
        ]
    ]
    for k, entry in cost["ensembles"].items():
        rows.append(
            [
                f"{cost['teacher']['arch']} teacher ensemble",
                k,
                fmt_params(entry["n_params"]),
                f"{entry['flops'] / 1e9:.4g}",
                f"{entry['ratio']:.1f}",
            ]
        )
    header = ["Model", "k", "# Params", "GFLOPs / cycle", "× student"]
    return title + note + "\n\n" + md_table(header, rows)


def report_archs(params: dict[str, Any]) -> list[str]:
    return sorted({params["teacher"]["arch"], params["distill"]["arch"], *params["arch_table"]["archs"]})


def is_smoke(params: dict[str, Any]) -> bool:
    """Tiny models or the synthetic corpus: numbers that must never be mistaken for the paper's."""
    tiny = any(params["models"][arch]["size"] == "tiny" for arch in report_archs(params))
    return tiny or "synthetic" in params["data"]["root"]


def profile_header(params: dict[str, Any]) -> str:
    """The facts that tell a smoke run from a paper run, read from params."""
    models = params["models"]
    t, d, a, ab = params["teacher"], params["distill"], params["arch_table"], params["ablation"]
    sizes = ", ".join(f"{arch} {models[arch]['size']}" for arch in report_archs(params))
    lines = [
        f"- data: `{params['data']['root']}` (validation fraction {params['data']['val_fraction']})",
        f"- teachers: {len(t['seeds'])} × {t['arch']} (seeds {t['seeds']})",
        f"- sweep: {d['arch']} students, k ∈ {d['ks']}, teachers {d['methods']}, seeds {d['seeds']}",
        f"- architecture table: {a['archs']}, hard and {a['methods']} teacher, k = {a['k']}, "
        f"seeds {a['seeds']}",
        f"- ablation: {ab['variants']}, k = {ab['k']}, seeds {ab['seeds']}",
        f"- second generation: k = {params['second_gen']['k']}, {params['second_gen']['method']} teacher",
        f"- model sizes: {sizes}",
    ]
    warning = (
        "\n> **Smoke profile** (tiny models and/or the synthetic corpus): these numbers check the pipeline "
        "and are NOT comparable with the paper's.\n"
        if is_smoke(params)
        else ""
    )
    legend = (
        "Ours: mean ± sample std (ddof=1) over seeds; one run has no ±. Protocols: *best test epoch* = "
        "the paper's selection (best test Score with Se > se_min, optimistic); *last epoch*; *val-selected* "
        "= test metrics at the best validation epoch (n/a: no validation subset). `-` = result missing or "
        "not in this profile; `[k=…]` = the k actually used when the paper's k is not in the sweep."
    )
    return (
        "# Results: ours beside the paper's\n\nProfile (from params):\n\n"
        + "\n".join(lines)
        + "\n"
        + warning
        + "\n"
        + legend
    )
