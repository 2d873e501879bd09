"""The `report` stage: Figures 2-3, Tables 1-3, headline metrics and the inference-cost comparison.

Reads only the fan-in metrics files, the params lists and the feature meta.json (the model input shape),
so it re-runs in seconds whenever any result changes. Missing optional results are shown as "-": the report
of a half-finished sweep is still useful.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rsckd.atomic import write_bytes, write_json, write_text
from rsckd.config import load_params
from rsckd.data.prompts import bts_prompt
from rsckd.errors import UserError, warn
from rsckd.report import figures, tables
from rsckd.report.tables import PROTOCOLS, MetricsDir, Sources

# The text tower's FLOPs depend on the prompt length: count them on a typical ICBHI sentence.
COST_PROMPT = bts_prompt("Al", 60.0, "M", "Meditron")


def headline(sources: Sources) -> dict[str, Any]:
    """Numbers for `dvc metrics diff`: literature protocol unless the key says otherwise."""
    out: dict[str, Any] = {}

    def summary(runs: tables.Runs) -> dict[str, Any]:
        found = {"score" if p == "literature" else f"score_{p}": runs.stat(p, "score") for p in PROTOCOLS}
        entry = {key: stat.mean for key, stat in found.items() if stat is not None}
        entry["std"], entry["n_seeds"] = found["score"].std, found["score"].n
        return entry

    if sources.baseline().runs:
        out["baseline"] = summary(sources.baseline())
    if sources.teachers().runs:
        out["teachers_individual"] = summary(sources.teachers())
    for method in sources.p["distill"]["methods"]:
        cells = [(k, sources.student(method, k)) for k in sources.p["distill"]["ks"]]
        cells = [(k, runs) for k, runs in cells if runs.runs]
        if cells:
            k, runs = max(cells, key=lambda c: (c[1].stat("literature", "score").mean, -c[0]))
            out[f"student_{method}_best"] = {"k": k, **summary(runs)}
    if sources.m.ensemble:
        k_max = max(sources.m.ensemble)
        out["teacher_ensemble_max_k"] = {"k": k_max, **sources.m.ensemble[k_max]}
    second_gen = sources.m.second_gen
    if second_gen is not None:
        out["second_gen"] = {"k": second_gen["k"], **{m: second_gen["students"][m] for m in tables.METRICS}}
    return out


def model_cost(arch: str, params: dict[str, Any], features_dir: Path) -> dict[str, Any] | None:
    """Parameters and FLOPs of one forward pass of `arch` on one cycle (None without features)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from rsckd.architectures import architecture

    meta_path = features_dir / architecture(arch).feature_kind / "meta.json"
    if not meta_path.is_file():
        warn(f"{meta_path}: missing, inference cost of {arch} not computed")
        return None
    try:
        shape = json.loads(meta_path.read_text())["shape"]
        t, f = int(shape[1]), int(shape[2])
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        raise UserError(f"{meta_path}: malformed feature meta, expected a shape [N, T, F]") from None
    from rsckd.models import build_model, build_tokenizer, count_parameters, tokenize

    cfg = architecture(arch).block.model_validate(params["models"][arch])
    torch.manual_seed(0)
    tokenizer = build_tokenizer(cfg, [COST_PROMPT]) if arch == "bts" else None
    model = build_model(arch, cfg, (t, f), tokenizer=tokenizer).eval()
    inputs: dict[str, Any] = {}
    if architecture(arch).reads_prompt:
        ids, mask = tokenize(tokenizer, [COST_PROMPT], cfg.max_text_length)
        inputs = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, t, f), **inputs)
    return {
        "arch": arch,
        "size": cfg.size,
        "feature_shape": [t, f],
        "n_params": count_parameters(model),
        "flops": int(counter.get_total_flops()),
    }


def inference_cost(params: dict[str, Any], features_dir: Path) -> dict[str, Any] | None:
    """One student vs the k-teacher ensembles of the sweep and the full one: the paper's cost argument."""
    student = model_cost(params["distill"]["arch"], params, features_dir)
    teacher_arch = params["teacher"]["arch"]
    teacher = (
        student
        if teacher_arch == params["distill"]["arch"]
        else model_cost(teacher_arch, params, features_dir)
    )
    if student is None or teacher is None:
        return None
    ks = sorted({*params["distill"]["ks"], len(params["teacher"]["seeds"])})
    ensembles = {
        str(k): {
            "flops": k * teacher["flops"],
            "n_params": k * teacher["n_params"],
            "ratio": k * teacher["flops"] / max(student["flops"], 1),
        }
        for k in ks
    }
    return {"student": student, "teacher": teacher, "ensembles": ensembles}


def subtitle(params: dict[str, Any]) -> str:
    seeds = len(params["distill"]["seeds"])
    text = (
        f"students: best test epoch (paper protocol), mean ± std over {seeds} seed{'s' if seeds > 1 else ''}"
    )
    return text + (
        "\nSMOKE PROFILE (tiny models / synthetic data): not comparable with the paper"
        if tables.is_smoke(params)
        else ""
    )


def build_report(
    params: dict[str, Any], metrics_dir: Path, plots_dir: Path, tables_path: Path, features_dir: Path
) -> None:
    sources = Sources(MetricsDir(metrics_dir), params)
    paper = tables.paper_values()
    fig2 = figures.figure2_rows(sources)
    fig3 = figures.figure3_rows(sources)
    cost = inference_cost(params, features_dir)
    sections = [
        tables.profile_header(params),
        tables.table1(sources, paper),
        tables.table2(sources, paper),
        tables.table3(sources, paper),
        tables.sweep_table(sources),
        tables.cost_table(cost),
    ]
    report = headline(sources)
    # Render everything before writing anything, so a malformed input leaves the previous report intact.
    png2 = figures.figure2_png(fig2, params["distill"]["arch"], subtitle(params))
    png3 = figures.figure3_png(fig3, params["teacher"]["arch"], params["distill"]["arch"], subtitle(params))
    write_text(plots_dir / "figure2.csv", figures.csv_text(figures.FIGURE2_COLUMNS, fig2))
    write_text(plots_dir / "figure3.csv", figures.csv_text(figures.FIGURE3_COLUMNS, fig3))
    write_bytes(plots_dir / "figure2.png", png2)
    write_bytes(plots_dir / "figure3.png", png3)
    write_text(tables_path, "\n\n".join(sections) + "\n")
    write_json(metrics_dir / "report.json", report)
    write_json(metrics_dir / "inference_cost.json", cost if cost is not None else {"computed": False})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--metrics-dir", default="metrics", help="fan-in metrics folder (also receives report.json)"
    )
    parser.add_argument("--plots-dir", default="plots")
    parser.add_argument("--tables", default="reports/tables.md")
    parser.add_argument(
        "--features-dir", default="data/features", help="for <kind>/meta.json (model input shape)"
    )


def run(args: argparse.Namespace) -> None:
    build_report(
        load_params(args.params).model_dump(),
        Path(args.metrics_dir),
        Path(args.plots_dir),
        Path(args.tables),
        Path(args.features_dir),
    )
    print(
        f"report: {args.tables}, {args.plots_dir}/figure2.png, {args.plots_dir}/figure3.png, "
        f"{args.metrics_dir}/report.json"
    )
