"""The `report` stage: Figures 2-3, Tables 1-3, headline metrics and the inference-cost comparison.

Reads only the fan-in metrics files, the params lists, the feature meta.json (the model input shape) and the
cycle table's prompts (the text tokenizer, as training builds it), so it re-runs in seconds whenever any
result changes. Missing optional results are shown as "-": a half-finished sweep still reports.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from rsckd.architectures import ARCHITECTURES, architecture
from rsckd.atomic import clean_json, write_bytes, write_json, write_text
from rsckd.config import Params, load_params
from rsckd.data.prompts import bts_prompt
from rsckd.data.table import load_cycles
from rsckd.errors import UserError, warn
from rsckd.report import figures, tables
from rsckd.report.tables import Profile, arch_cell, runs_of, seed_stats

# The text tower's FLOPs depend on the prompt length: count them on a typical ICBHI sentence.
COST_PROMPT = bts_prompt("Al", 60.0, "M", "Meditron")


def report_profile(params: Params) -> Profile:
    """The params values the report reads: its only access to params."""
    t, d, a, ab = params.teacher, params.distill, params.arch_table, params.ablation
    return Profile(
        data_root=params.data.root,
        val_fraction=params.data.val_fraction,
        teacher_arch=t.arch,
        teacher_select=params.train[t.arch].select,
        distill_arch=d.arch,
        ks=d.ks,
        methods=d.methods,
        table2_archs=a.archs,
        table2_methods=a.methods,
        table2_k=a.k,
        ablation_variants=ab.variants,
        ablation_k=ab.k,
        noise_var=ab.noise_var,
        second_gen_k=params.second_gen.k,
        second_gen_method=params.second_gen.method,
        seeds={
            "teachers": t.seeds,
            "baseline": d.seeds,
            "students": d.seeds,
            "arch": a.seeds,
            "ablation": ab.seeds,
        },
        sizes={arch: cfg.size for arch, cfg in params.models.items()},
        labels={arch: ARCHITECTURES[arch].label for arch, _ in params.models.items()},
        models=params.models,
    )


def headline(
    runs: pd.DataFrame,
    ensemble: pd.DataFrame,
    second_gen: dict[str, Any] | None,
    prof: Profile,
    paper: dict[str, Any],
) -> dict[str, Any]:
    """Numbers only, in the order `dvc exp show` / `dvc metrics diff` list them: the mean Score over seeds
    (best test epoch, as the tables) of the baseline, the sweep (k<k>_<method>), the teacher ensemble at the
    sweep's k and with all teachers, the second generation, Table 2 (<arch>_hard|soft, mean_gain) and Table 3
    (per variant), then the individual teachers; named as the paper (BTS, BTS-d, BTS++, BTS-d++ when both
    architectures are BTS). A missing result has no key."""

    def mean_score(cell: pd.DataFrame, by: list[str]) -> pd.Series:
        return seed_stats(cell[cell.protocol == "literature"], by, ["score"]).score_mean

    student, teacher = prof.labels[prof.distill_arch], prof.labels[prof.teacher_arch]
    sweep = mean_score(runs_of(runs, "students"), ["k", "target"])
    table2 = {
        f"{prof.labels[row['arch']]}_{side}": mean_score(cell[0], ["group"]).iloc[0]
        for row in paper["table2"]
        for side in ("hard", "soft")
        if (cell := arch_cell(runs, prof, row["arch"], side)) is not None and not cell[0].empty
    }
    gains = [
        table2[f"{arch}_soft"] - table2[f"{arch}_hard"]
        for arch in (prof.labels[row["arch"]] for row in paper["table2"])
        if f"{arch}_soft" in table2 and f"{arch}_hard" in table2
    ]
    ablation = mean_score(runs_of(runs, "ablation"), ["ablation"])
    summary = {
        student: mean_score(runs_of(runs, "baseline"), ["group"]).get("baseline"),
        f"{student}-d": {
            f"k{k}_{method}": sweep.get((k, method)) for k in prof.ks for method in prof.methods
        },
        f"{teacher}++": {
            f"k{k}": ensemble.score.get(k) for k in sorted({*prof.ks, len(prof.seeds["teachers"])})
        },
        f"{student}-d++": None if second_gen is None else second_gen["students"]["score"],
        "table2": {**table2, "mean_gain": pd.Series(gains).mean() if gains else None},
        "table3": {variant: ablation.get(variant) for variant in prof.ablation_variants},
        "teachers": mean_score(runs_of(runs, "teachers"), ["group"]).get("teachers"),
    }
    return _present_numbers(summary)


def _present_numbers(tree: dict[str, Any]) -> dict[str, Any]:
    """The tree without its missing values and empty groups."""
    kept = {key: _present_numbers(v) if isinstance(v, dict) else v for key, v in tree.items()}
    return {key: v for key, v in kept.items() if v is not None and v != {}}


def model_cost(arch: str, prof: Profile, features_dir: Path, cycles: Path) -> dict[str, Any] | None:
    """Parameters and FLOPs of one forward pass of `arch` on one cycle (None without its inputs): the model
    `rsckd train` builds, with its text tokenizer (a local one from the cycle table's prompts, as in training,
    unless the weights are pretrained)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

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

    cfg = prof.models[arch]
    torch.manual_seed(0)
    tokenizer, inputs = None, {}
    if architecture(arch).reads_prompt:
        prompts = []  # a pretrained tokenizer is the directory's own
        if cfg.pretrained is None:
            if not cycles.is_file():
                warn(f"{cycles}: missing, inference cost of {arch} not computed")
                return None
            prompts = load_cycles(cycles)["prompt"].tolist()
        tokenizer = build_tokenizer(cfg, prompts)
        ids, mask = tokenize(tokenizer, [COST_PROMPT], cfg.max_text_length)
        inputs = {"input_ids": ids, "attention_mask": mask}
    model = build_model(arch, cfg, (t, f), tokenizer=tokenizer).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, t, f), **inputs)
    return {
        "arch": arch,
        "size": cfg.size,
        "feature_shape": [t, f],
        "n_params": count_parameters(model),
        "flops": int(counter.get_total_flops()),
    }


def inference_cost(prof: Profile, features_dir: Path, cycles: Path) -> dict[str, Any] | None:
    """One student vs the k-teacher ensembles of the sweep and the full one: the paper's cost argument."""
    student = model_cost(prof.distill_arch, prof, features_dir, cycles)
    teacher = (
        student
        if prof.teacher_arch == prof.distill_arch
        else model_cost(prof.teacher_arch, prof, features_dir, cycles)
    )
    if student is None or teacher is None:
        return None
    ks = sorted({*prof.ks, len(prof.seeds["teachers"])})
    ensembles = {
        str(k): {
            "flops": k * teacher["flops"],
            "n_params": k * teacher["n_params"],
            "ratio": k * teacher["flops"] / max(student["flops"], 1),
        }
        for k in ks
    }
    return {"student": student, "teacher": teacher, "ensembles": ensembles}


def subtitle(prof: Profile) -> str:
    seeds = len(prof.seeds["students"])
    text = (
        f"students: best test epoch (paper protocol), mean ± std over {seeds} seed{'s' if seeds > 1 else ''}"
    )
    return text + (
        "\nSMOKE PROFILE (tiny models / synthetic data): not comparable with the paper"
        if tables.is_smoke(prof)
        else ""
    )


def build_report(
    params: Params, metrics_dir: Path, plots_dir: Path, tables_path: Path, features_dir: Path, cycles: Path
) -> None:
    prof = report_profile(params)
    runs = tables.load_runs(metrics_dir, prof.seeds)
    ensemble, second_gen = tables.load_ensemble(metrics_dir), tables.load_second_gen(metrics_dir)
    paper = tables.paper_values()
    fig2, fig3 = figures.figure2_frame(runs, prof), figures.figure3_frame(runs, ensemble, prof)
    cost = inference_cost(prof, features_dir, cycles)
    sections = [
        tables.profile_header(prof),
        tables.table1(runs, ensemble, second_gen, prof, paper),
        tables.table2(runs, prof, paper),
        tables.table3(runs, prof, paper),
        tables.sweep_table(runs, prof),
        tables.cost_table(cost),
    ]
    # key order is the order `dvc exp show` and `dvc metrics diff` list the numbers in
    report = json.dumps(clean_json(headline(runs, ensemble, second_gen, prof, paper)), indent=2) + "\n"
    # Render everything before writing anything, so a malformed input leaves the previous report intact.
    student, teacher = prof.labels[prof.distill_arch], prof.labels[prof.teacher_arch]
    png2 = figures.figure2_png(fig2, student, subtitle(prof) + figures.figure2_noise_note(fig2))
    png3 = figures.figure3_png(fig3, teacher, student, subtitle(prof))
    write_text(plots_dir / "figure2.csv", figures.csv_text(fig2, figures.FIGURE2_COLUMNS))
    write_text(plots_dir / "figure3.csv", figures.csv_text(fig3, figures.FIGURE3_COLUMNS))
    write_bytes(plots_dir / "figure2.png", png2)
    write_bytes(plots_dir / "figure3.png", png3)
    write_text(tables_path, "\n\n".join(sections) + "\n")
    write_text(metrics_dir / "report.json", report)
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
    parser.add_argument(
        "--cycles", default="data/prepared/cycles.csv", help="cycle table (its prompts: the text tokenizer)"
    )


def run(args: argparse.Namespace) -> None:
    build_report(
        load_params(args.params),
        Path(args.metrics_dir),
        Path(args.plots_dir),
        Path(args.tables),
        Path(args.features_dir),
        Path(args.cycles),
    )
    print(
        f"report: {args.tables}, {args.plots_dir}/figure2.png, {args.plots_dir}/figure3.png, "
        f"{args.metrics_dir}/report.json"
    )
