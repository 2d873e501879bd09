"""Figures 2 and 3 as PNG plus the CSV of their data (for `dvc plots`), byte-identical across runs.

Rendering starts from matplotlib's built-in defaults (no user matplotlibrc), uses the Agg canvas, the bundled
DejaVu Sans, a fixed size and dpi, and strips the version stamp from the PNG metadata, so identical numbers
give identical bytes and DVC stops propagating an unchanged report.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rsckd.report.tables import Sources, Stat

FIGSIZE = (6.4, 4.0)
DPI = 150
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
}
COLORS = {
    "mean": "tab:blue",
    "random": "tab:orange",
    "baseline": "black",
    "teacher": "tab:green",
    "loss": "tab:red",
}
ARCH_NAMES = {
    "bts": "BTS",
    "audio_clap": "Audio-CLAP",
    "ast": "AST",
    "cnn6": "CNN6",
    "resnet18": "ResNet18",
    "efficientnet_b0": "EfficientNet-B0",
}
FIGURE2_COLUMNS = ["k", "mean_score", "mean_std", "random_score", "random_std", "n_seeds"]
FIGURE3_COLUMNS = ["k", "teacher_score", "teacher_loss", "student_score"]


def _score(stat: Stat | None) -> tuple[float | None, float | None, int]:
    return (None, None, 0) if stat is None else (stat.mean, stat.std, stat.n)


def figure2_rows(sources: Sources) -> list[dict[str, Any]]:
    """Student Score (literature protocol) per k and teacher method; k = 0 is the hard-label baseline."""
    base_mean, base_std, base_n = _score(sources.baseline().stat("literature", "score"))
    rows = [
        {
            "k": 0,
            "mean_score": base_mean,
            "mean_std": base_std,
            "random_score": base_mean,
            "random_std": base_std,
            "n_seeds": base_n,
        }
    ]
    for k in sorted(sources.p["distill"]["ks"]):
        row: dict[str, Any] = {"k": k}
        counts = []
        for method in ("mean", "random"):
            stat = sources.student(method, k).stat("literature", "score")
            row[f"{method}_score"], row[f"{method}_std"], n = _score(stat)
            if stat is not None:
                counts.append(n)
        row["n_seeds"] = min(counts) if counts else 0
        rows.append(row)
    return rows


def figure3_rows(sources: Sources) -> list[dict[str, Any]]:
    """Teacher-ensemble Score and test loss for every k, with the mean-teacher student's Score where swept."""
    rows = []
    for k, scores in sources.m.ensemble.items():
        student = None
        if k in sources.p["distill"]["ks"] and "mean" in sources.p["distill"]["methods"]:
            student = _score(sources.student("mean", k).stat("literature", "score"))[0]
        rows.append(
            {
                "k": k,
                "teacher_score": scores["score"],
                "teacher_loss": scores["loss"],
                "student_score": student,
            }
        )
    return rows


def csv_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """Fixed float format; a missing value is an empty field."""

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        return str(v) if isinstance(v, int) else f"{v:.4f}"

    return "\n".join([",".join(columns)] + [",".join(fmt(row[c]) for c in columns) for row in rows]) + "\n"


def _render(draw: Any) -> bytes:
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(STYLE)
        fig = Figure(figsize=FIGSIZE, dpi=DPI)
        FigureCanvasAgg(fig)
        draw(fig)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _present(rows: list[dict[str, Any]], key: str, *extra: str) -> list[tuple[Any, ...]]:
    return [(r["k"], r[key], *(r[e] for e in extra)) for r in rows if r[key] is not None]


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no results yet", ha="center", va="center", transform=ax.transAxes, color="gray")


def _title(ax: Any, title: str, subtitle: str) -> None:
    ax.set_title(title, fontsize=11, loc="center", pad=8 + 11 * (subtitle.count("\n") + 1) if subtitle else 6)
    if subtitle:
        ax.text(
            0.5,
            1.02,
            subtitle,
            ha="center",
            va="bottom",
            fontsize=7.5,
            color="dimgray",
            transform=ax.transAxes,
        )


def figure2_png(rows: list[dict[str, Any]], arch: str, subtitle: str) -> bytes:
    name = ARCH_NAMES.get(arch, arch)

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        base = rows[0]
        if base["mean_score"] is not None:
            ax.axhline(base["mean_score"], color=COLORS["baseline"], linestyle=":", linewidth=1)
            ax.errorbar(
                [0],
                [base["mean_score"]],
                yerr=[base["mean_std"]],
                fmt="D",
                color=COLORS["baseline"],
                capsize=3,
                label=f"{name} baseline (k=0, hard labels)",
                zorder=3,
            )
        plotted = False
        for method in ("mean", "random"):
            points = _present(rows, f"{method}_score", f"{method}_std")
            if not points or (len(points) == 1 and points[0][0] == 0):
                continue
            ks, means, stds = zip(*points, strict=True)
            low = [m - s for m, s in zip(means, stds, strict=True)]
            high = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(ks, low, high, color=COLORS[method], alpha=0.15, linewidth=0)
            ax.errorbar(
                ks,
                means,
                yerr=stds,
                fmt="o-",
                color=COLORS[method],
                capsize=3,
                markersize=4,
                label=f"{name}-d, {method} teacher",
            )
            plotted = True
        if not plotted and base["mean_score"] is None:
            _no_data(ax)
        ax.set_xticks([r["k"] for r in rows])
        ax.set_xlabel("number of teachers k")
        ax.set_ylabel("ICBHI Score (%)")
        _title(ax, "Student Score vs number of teachers", subtitle)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")

    return _render(draw)


def figure3_png(rows: list[dict[str, Any]], teacher: str, student: str, subtitle: str) -> bytes:
    t_name, s_name = ARCH_NAMES.get(teacher, teacher), ARCH_NAMES.get(student, student)

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        if not rows:
            _no_data(ax)
        else:
            ks = [r["k"] for r in rows]
            ax.plot(
                ks,
                [r["teacher_score"] for r in rows],
                "o-",
                color=COLORS["teacher"],
                markersize=3,
                label=f"teacher ensemble {t_name}++ Score",
            )
            students = _present(rows, "student_score")
            if students:
                sk, ss = zip(*students, strict=True)
                ax.plot(
                    sk,
                    ss,
                    "s--",
                    color=COLORS["mean"],
                    markersize=5,
                    label=f"distilled student {s_name}-d Score (mean teacher)",
                )
            loss_ax = ax.twinx()
            loss_ax.grid(False)
            loss_ax.plot(
                ks,
                [r["teacher_loss"] for r in rows],
                "^-",
                color=COLORS["loss"],
                markersize=3,
                label=f"teacher ensemble {t_name}++ test loss",
            )
            loss_ax.set_ylabel("test cross-entropy loss", color=COLORS["loss"])
            handles, labels = ax.get_legend_handles_labels()
            more_h, more_l = loss_ax.get_legend_handles_labels()
            ax.legend(
                handles + more_h, labels + more_l, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2
            )
            step = max(1, math.ceil(len(ks) / 15))
            ax.set_xticks(ks[::step])
        ax.set_xlabel("number of teachers k")
        ax.set_ylabel("ICBHI Score (%)")
        _title(ax, "Teacher ensemble vs distilled student", subtitle)

    return _render(draw)
