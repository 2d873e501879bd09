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
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from rsckd.report.tables import Profile, runs_of, seed_stats

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
FIGURE2_METHODS = ["mean", "random"]
FIGURE2_COLUMNS = ["k", "mean_score", "mean_std", "random_score", "random_std", "n_seeds"]
FIGURE3_COLUMNS = ["k", "teacher_score", "teacher_loss", "student_score"]
SIGNIFICANCE = 0.05  # Figure 2's caption calls the gain over k = 0 not significant at or above this p


def figure2_frame(runs: pd.DataFrame, prof: Profile) -> pd.DataFrame:
    """Student Score (literature protocol) per k and teacher method; k = 0 is the hard-label baseline, and
    n_seeds the fewest seeds of a k's methods."""
    literature = runs[runs.protocol == "literature"]
    sweep = literature[literature.group.isin(["baseline", "students"])]
    sweep = sweep.assign(
        k=sweep.k.where(sweep.group == "students", 0)
    )  # the baseline is every method's k = 0
    frame = pd.DataFrame({"k": [0, *sorted(prof.ks)]})
    counts = []
    for method in FIGURE2_METHODS:
        cells = sweep[(sweep.group == "baseline") | (sweep.target == method)]
        stats = seed_stats(cells, ["k"], ["score"]).reindex(frame.k)
        frame[f"{method}_score"], frame[f"{method}_std"] = (
            stats.score_mean.to_numpy(),
            stats.score_std.to_numpy(),
        )
        counts.append(stats.score_count.to_numpy())
    frame["n_seeds"] = pd.DataFrame(counts).min().fillna(0).astype(int)
    return frame


def figure2_noise_note(frame: pd.DataFrame) -> str:
    """A caption line unless the gain of the largest k over k = 0 is significant for both methods (two-sided
    Welch t-test over the seeds, at SIGNIFICANCE): with two seeds, bars narrower than the gain still allow a
    gain that seed noise explains (README, 'What it does not show')."""
    base, last = frame.iloc[0], frame.iloc[-1]
    n = int(min(base.n_seeds, last.n_seeds))
    p_values = {}
    for method in FIGURE2_METHODS:
        score, std = f"{method}_score", f"{method}_std"
        test = stats.ttest_ind_from_stats(
            last[score], last[std], n, base[score], base[std], n, equal_var=False
        )
        p_values[method] = test.pvalue if n > 1 else math.nan  # one seed: its std of 0 is no spread
    if all(p < SIGNIFICANCE for p in p_values.values()):  # NaN compares False
        return ""
    shown = ", ".join(f"{'n/a' if math.isnan(p) else f'{p:.3f}'} {method}" for method, p in p_values.items())
    return f"\ngain at k = {int(last.k)} not significant (Welch t-test, p = {shown} teacher; {n} seeds)"


def figure3_frame(runs: pd.DataFrame, ensemble: pd.DataFrame, prof: Profile) -> pd.DataFrame:
    """Teacher-ensemble Score and test loss for every k, with the mean-teacher student's Score where swept."""
    students = runs_of(runs, "students", target="mean", protocol="literature")
    students = students[students.k.isin(prof.ks) & ("mean" in prof.methods)]
    student = seed_stats(students, ["k"], ["score"]).score_mean
    return pd.DataFrame(
        {
            "k": ensemble.index,
            "teacher_score": ensemble.score.to_numpy(),
            "teacher_loss": ensemble.loss.to_numpy(),
            "student_score": student.reindex(ensemble.index).to_numpy(),
        }
    )


def csv_text(frame: pd.DataFrame, columns: list[str]) -> str:
    """Fixed float format; a missing value is an empty field."""
    return frame.to_csv(index=False, columns=columns, float_format="%.4f", lineterminator="\n")


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


def figure2_png(frame: pd.DataFrame, name: str, subtitle: str) -> bytes:
    """Figure 2 of the distilled architecture (display name `name`) from figure2_frame."""

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        base = frame.iloc[0]
        if pd.notna(base["mean_score"]):
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
        for method in FIGURE2_METHODS:
            points = frame.dropna(subset=[f"{method}_score"])
            if points.empty or (len(points) == 1 and points.k.iloc[0] == 0):
                continue
            ks, means, stds = (points[c].tolist() for c in ("k", f"{method}_score", f"{method}_std"))
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
        if not plotted and pd.isna(base["mean_score"]):
            _no_data(ax)
        ax.set_xticks(frame.k.tolist())
        ax.set_xlabel("number of teachers k")
        ax.set_ylabel("ICBHI Score (%)")
        _title(ax, "Student Score vs number of teachers", subtitle)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")

    return _render(draw)


def figure3_png(frame: pd.DataFrame, t_name: str, s_name: str, subtitle: str) -> bytes:
    """Figure 3 from figure3_frame; t_name and s_name are the teacher's and the student's display names."""

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        if frame.empty:
            _no_data(ax)
        else:
            ks = frame.k.tolist()
            ax.plot(
                ks,
                frame.teacher_score.tolist(),
                "o-",
                color=COLORS["teacher"],
                markersize=3,
                label=f"teacher ensemble {t_name}++ Score",
            )
            students = frame.dropna(subset=["student_score"])
            if not students.empty:
                ax.plot(
                    students.k.tolist(),
                    students.student_score.tolist(),
                    "s--",
                    color=COLORS["mean"],
                    markersize=5,
                    label=f"distilled student {s_name}-d Score (mean teacher)",
                )
            loss_ax = ax.twinx()
            loss_ax.grid(False)
            loss_ax.plot(
                ks,
                frame.teacher_loss.tolist(),
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
