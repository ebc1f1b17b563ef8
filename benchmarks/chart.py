"""The chart of a run: ratios against ratio targets, values against upper bounds, and the other verdicts.

The left panel is each metric's ratio to its figure's baseline (and to the origin's runtime, dotted) on a log
scale; the right panel each upper-bounded value as a share of its bound, beside the baseline's; targets that are
counts ("all N", "none") have no scale and are listed under the panels with their verdicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import Figure, Target

__all__ = ["write_chart"]


Ratio = tuple[str, float, "Target | None"]
Budget = tuple[str, float, "float | None", str]
Verdict = tuple[str, str, bool]


def _chart_rows(figures: list[Figure]) -> tuple[list[Ratio], list[Budget], list[Verdict]]:
    """What the chart shows: each ratio with its ratio target, each value against its upper bound, and every
    other target (counts such as "all N" or "none", lower bounds) as a verdict."""
    ratios: list[Ratio] = []
    budgets: list[Budget] = []
    verdicts: list[Verdict] = []
    for figure in figures:
        if figure.status != "ok":
            continue
        baseline_name = figure.baseline_label.split(" (")[0].replace("bare grpc.aio", "bare")
        for metric in figure.metrics:
            label = f"{figure.key}: {metric.name}"
            if metric.ratio is not None:
                target = metric.target if metric.target is not None and metric.target.of == "ratio" else None
                ratios.append((label, metric.ratio, target))
            if metric.peer_ratio is not None:
                ratios.append((f"{label} / origin", metric.peer_ratio, metric.peer_target))
            target = metric.target
            # Only upper bounds read as a budget (value / bound under 1 is met); counts like "all N" do not.
            upper = target is not None and target.of == "value" and target.op in ("<", "<=") and target.bound
            if upper and target is not None and metric.value is not None:
                share = None if metric.baseline is None else metric.baseline / target.bound
                budgets.append((label, metric.value / target.bound, share, baseline_name))
            elif target is not None and target.of == "value" and metric.value is not None:
                met = target.met(metric.value, metric.ratio)
                verdicts.append((label, f"{metric.value:g} ({target.text})", bool(met)))
    return ratios, budgets, verdicts


def write_chart(path: Path, figures: list[Figure], subtitle: str) -> None:
    """Two panels: ratios (to bare, to the peer) against ratio targets, and values as a fraction of absolute targets."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    ratios, budgets, verdicts = _chart_rows(figures)
    footer = _verdict_lines(verdicts)
    fig, (left, right) = plt.subplots(1, 2, figsize=(18, 7 + 0.16 * len(footer)), gridspec_kw={"width_ratios": [3, 2]})
    fig.suptitle(f"engine-runtime vs bare grpc.aio and the origin's runtime (same run)\n{subtitle}", fontsize=10)
    _plot_ratios(left, ratios)
    _plot_budgets(right, budgets)
    if footer:
        # Targets that are counts ("all N", "none") have no scale to plot: their verdicts are listed under the panels.
        fig.text(0.01, 0.01, "\n".join(footer), fontsize=7, family="monospace", va="bottom")
    fig.tight_layout(rect=(0, 0.16 * len(footer) / (7 + 0.16 * len(footer)), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_ratios(left: Any, ratios: list[Ratio]) -> None:
    xs = range(len(ratios))
    colors = []
    for _, ratio, target in ratios:
        met = None if target is None else target.met(None, ratio)
        colors.append("tab:gray" if met is None else ("tab:green" if met else "tab:red"))
    bars = left.bar(xs, [r for _, r, _ in ratios], color=colors)
    for bar, (label, _, _) in zip(bars, ratios, strict=True):
        if label.endswith("/ origin"):
            bar.set_hatch("..")  # a ratio to the origin's runtime, not to the bare server
    left.bar_label(bars, labels=[f"{r:.3g}x" for _, r, _ in ratios], fontsize=7)
    left.axhline(1.0, color="black", linewidth=0.8)
    for x, (_, _, target) in zip(xs, ratios, strict=True):
        if target is not None:
            left.hlines(target.bound, x - 0.45, x + 0.45, colors="tab:blue", linestyles="dashed")
            left.annotate(
                target.text,
                (x, target.bound),
                textcoords="offset points",
                xytext=(0, -10),  # below the line: the bar's own label sits above the bar
                ha="center",
                fontsize=7,
                color="tab:blue",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
            )
    left.set_yscale("log")
    left.set_xticks(list(xs), [label for label, _, _ in ratios], rotation=60, ha="right", fontsize=7)
    left.set_ylabel("project / bare, or / origin's runtime (log)")
    left.set_title("ratios to the bare server and the origin's runtime (dashed: target; green met, red missed)")


def _plot_budgets(right: Any, budgets: list[Budget]) -> None:
    # The bare server's bar beside the project's: a target the bare server misses too is the machine's limit.
    ys = [float(y) for y in range(len(budgets))]
    project = [p for _, p, _, _ in budgets]
    bars = right.barh(
        [y + 0.2 for y in ys], project, height=0.4, color=["tab:green" if p < 1 else "tab:red" for p in project]
    )
    right.bar_label(bars, labels=[f"project {p:.2f}" for p in project], fontsize=7)
    baseline = [b or 0.0 for _, _, b, _ in budgets]
    bars = right.barh([y - 0.2 for y in ys], baseline, height=0.4, color="lightgray", hatch="//")
    names = ["" if b is None else f"{name} {b:.2f}" for _, _, b, name in budgets]  # no baseline: no label
    right.bar_label(bars, labels=names, fontsize=7)
    right.axvline(1.0, color="tab:blue", linestyle="dashed")
    right.set_yticks(ys, [label.replace("\n", " ") for label, _, _, _ in budgets], fontsize=7)
    right.set_xlabel("value / absolute target (under 1 is met)")
    right.set_title("absolute targets (hatched: the figure's baseline, the bare server unless named)")


def _verdict_lines(verdicts: list[Verdict], columns: int = 3) -> list[str]:
    """The count targets as lines of ``columns`` cells: ``[ok] figure: metric  value (target)``."""
    cells = [f"[{'ok' if met else 'MISSED'}] {label}  {value}"[:70].ljust(72) for label, value, met in verdicts]
    return ["".join(cells[i : i + columns]) for i in range(0, len(cells), columns)]
