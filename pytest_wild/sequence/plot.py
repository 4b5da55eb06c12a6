"""The sequence's curve as a picture (--wild-plot): what happens to the edits, and to the
model, as they accumulate. Two panels, the paper's `final` convention (every edit scored on
the model at the checkpoint) and EasyEdit's `immediate` one (each right after its own edit);
one colour per metric, one line style per evaluation mode, so the gap between WILD and
teacher forcing shows; where the run kept it, the token F1 of the answering modes' answers in
the same colour, dash-dot-dotted (on a model that answers in sentences, exact match reads 0 and
F1 is where the curve's information is); the number of edits on a log axis. Over several --wild-orders, the
lines are the mean and the band the range of the orders. matplotlib is an optional extra
(`pytest-wild[plot]`), imported only here."""

from __future__ import annotations

import io
from pathlib import Path

from ..storage import write_bytes_atomic
from ..scores.metrics import TABLE_METRICS

COLOURS = {"reliability": "tab:blue", "generalization": "tab:orange", "locality": "tab:green",
           "capability": "black"}
# Lines often coincide (reliability and generalization both at 1.0, or both at 0): a marker
# shape of its own per metric, hollow, and a width that shrinks from mode to mode keep each
# visible where another runs over it.
MARKERS = {"reliability": "o", "generalization": "s", "locality": "^"}
STYLES = ("-", "--", ":", "-.")  # the run's modes in order: wild first
WIDTHS = (3.0, 2.0, 1.4, 1.0)
F1_STYLE = (0, (6, 1.5, 1, 1.5, 1, 1.5))  # dash-dot-dot: apart from every mode's style


def plot_curve(points: list[dict], by_order: dict[str, list[dict]], modes: list[str], path: Path, title: str) -> None:
    """Draw the curve into `path` (its suffix picks the format), written whole or not at all."""
    import matplotlib.pyplot as plt

    figure = draw_curve(points, by_order, modes, title)
    rendered = io.BytesIO()
    try:
        figure.savefig(rendered, format=path.suffix.lstrip(".").lower(), dpi=120)
    finally:
        plt.close(figure)
    write_bytes_atomic(path, rendered.getvalue())


def draw_curve(points: list[dict], by_order: dict[str, list[dict]], modes: list[str], title: str):
    """The figure: two panels, the edits on a log axis labelled 1, 10, 100."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    edits = [point["edits"] for point in points]
    figure, panels = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True, layout="constrained")
    for panel, convention in zip(panels, ("final", "immediate")):
        for style, width, mode in zip(STYLES, WIDTHS, modes):
            for metric in TABLE_METRICS:
                values = [point[convention].get(mode, {}).get(metric) for point in points]
                if all(v is None for v in values):
                    continue
                panel.plot(edits, _nan(values), style, color=COLOURS[metric], marker=MARKERS[metric],
                           markersize=7 - TABLE_METRICS.index(metric) * 1.5, markerfacecolor="none",
                           linewidth=width, alpha=0.85, label=f"{metric} ({mode})")
                if len(by_order) > 1:
                    low, high = _range(by_order, convention, mode, metric)
                    panel.fill_between(edits, low, high, color=COLOURS[metric], alpha=0.12, linewidth=0)
                f1s = [point[convention].get(mode, {}).get(f"{metric}_f1") for point in points]
                if any(v is not None for v in f1s):
                    panel.plot(edits, _nan(f1s), linestyle=F1_STYLE, color=COLOURS[metric], marker=MARKERS[metric],
                               markersize=4, linewidth=1.6, alpha=0.85, label=f"{metric} F1 ({mode})")
        if convention == "final":
            capability = [point["capability"].get("exact_match") for point in points]
            if any(v is not None for v in capability):
                panel.plot(edits, _nan(capability), "-", color=COLOURS["capability"], marker="s", markersize=3,
                           label="capability EM (untouched facts)")
        panel.set_xscale("log")
        panel.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 1, 10, 100, not 10^0
        panel.set_xlabel("edits made")
        panel.set_ylim(-0.02, 1.02)
        panel.grid(True, which="both", alpha=0.3)
        panel.set_title({"final": "final: every edit so far, scored at the checkpoint",
                         "immediate": "immediate: each edit right after it was made"}[convention], fontsize=10)
    panels[0].set_ylabel("mean score")
    orders = f", mean and range over {len(by_order)} orders" if len(by_order) > 1 else ""
    figure.suptitle(f"Sequential editing: {title}{orders}", fontsize=11)
    labelled = {}
    for panel in panels:
        for handle, label in zip(*panel.get_legend_handles_labels()):
            labelled.setdefault(label, handle)
    figure.legend(list(labelled.values()), list(labelled), loc="outside lower center", ncol=4, fontsize=8)
    return figure


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def _range(by_order: dict[str, list[dict]], convention: str, mode: str, metric: str) -> tuple[list[float], list[float]]:
    """Per checkpoint, the lowest and highest value over the orders."""
    columns = zip(*[[point[convention].get(mode, {}).get(metric) for point in points] for points in by_order.values()])
    low, high = [], []
    for column in columns:
        found = [v for v in column if v is not None]
        low.append(min(found) if found else float("nan"))
        high.append(max(found) if found else float("nan"))
    return low, high
