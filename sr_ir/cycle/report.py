"""Per-cycle table, JSON summary and the size/accuracy plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..ir.persist import atomic_save_with

COLUMNS = [
    ("cycle", "cycle", "{}"),
    ("params", "params", "{:,}"),
    ("compression", "x", "{:.1f}"),
    ("bytes", "bytes", "{:,}"),
    ("flops", "FLOPs", "{:,}"),
    ("val_acc", "val", "{:.2%}"),
    ("test_acc", "test", "{:.2%}"),
    ("released_test_acc", "test(rel)", "{:.2%}"),
    ("units_removed_total", "units-", "{}"),
    ("alpha", "alpha", "{:.3g}"),
    ("time_s", "time", "{:.0f}s"),
]


def _cell(record: dict[str, Any], key: str, fmt: str) -> str:
    if key == "alpha":
        v = (record.get("release") or {}).get("alpha")
    elif key == "compression" and record.get("cycle") == 0:
        v = 1.0
    else:
        v = record.get(key)
    return "-" if v is None else fmt.format(v)


def table_header() -> str:
    return "  ".join(f"{title:>10}" for _, title, _ in COLUMNS)


def table_row(record: dict[str, Any]) -> str:
    return "  ".join(f"{_cell(record, k, f):>10}" for k, _, f in COLUMNS)


def format_units(record: dict[str, Any]) -> str:
    u = {k: v for k, v in (record.get("units_removed") or {}).items() if v}
    return ", ".join(f"{k}: {v}" for k, v in u.items()) or "none"


def record_lines(record: dict[str, Any]) -> list[str]:
    """The table lines of one record as the run prints them: its row, and for a cycle the units it removed."""
    lines = [table_row(record)]
    if record.get("cycle", 0) > 0:
        lines.append(f"{'':>10}  units removed: {format_units(record)}")
    return lines


def table_text(dense: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """The per-cycle table (header, the dense model as cycle 0, every cycle) as one string."""
    lines = [table_header()]
    for r in [dense, *records]:
        lines += record_lines(r)
    return "\n".join(lines) + "\n"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """How a finished run ended, in words: why it stopped and the smallest state within the floor."""
    dense, best = summary["dense"], summary.get("best")
    n = len(summary["cycles"])
    procs = summary.get("processes", 1)
    lines = [f"stopped: {summary['stopped']} after {n} cycle(s), {summary.get('wall_s', 0.0):.0f} s"
             + (f" on {procs} processes" if procs > 1 else "")]
    drop = summary["config"]["max_drop"]
    if best:
        test = "-" if best.get("test_acc") is None else f"{best['test_acc']:.2%}"
        dense_test = "-" if dense.get("test_acc") is None else f"{dense['test_acc']:.2%}"
        lines.append(f"smallest within {drop:g} point(s) of dense on validation: cycle {best['cycle']} "
                     f"({best['stage']}), {best['params']:,} params ({best['compression']:.1f}x), "
                     f"test {test} vs dense {dense_test}")
    else:
        lines.append(f"no state stayed within {drop:g} point(s) of dense on validation")
    return lines


def _pct(values: Sequence[float | None]) -> list[float]:
    """Fractions as percent; a missing value (no test set) as NaN, which matplotlib leaves out."""
    return [float("nan") if v is None else 100 * v for v in values]


def plot_cycles(
    path: str | Path,
    dense: dict[str, Any],
    records: Sequence[dict[str, Any]],
    *,
    baseline: dict[str, Any] | None = None,
    title: str = "Squeeze-Release",
    extra: dict[str, Sequence[dict[str, Any]]] | None = None,
) -> None:
    """PNG: deployable parameters (log scale) and accuracy per cycle; the dense model at cycle 0. Test
    accuracy for every run (``extra`` runs, e.g. the no-release ablation, dashed), the main run's
    validation accuracy and the validation floor it enforced (``dense["floor"]``); the single-pass
    prune+minimize baseline as a marked point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_size, ax_acc) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    runs = {"squeeze-release": records, **(extra or {})}
    for i, (name, recs) in enumerate(runs.items()):
        style = "-" if i == 0 else "--"
        xs = [0] + [r["cycle"] for r in recs]
        ax_size.plot(xs, [dense["params"]] + [r["params"] for r in recs], style + "o", label=name)
        acc = [dense["test_acc"]] + [
            r["released_test_acc"] if r.get("released_test_acc") is not None else r["test_acc"] for r in recs
        ]
        ax_acc.plot(xs, _pct(acc), style + "o", label=f"{name} test (after fine-tune)")
    ax_acc.plot([r["cycle"] for r in records], _pct([r["test_acc"] for r in records]), ":x", color="gray",
                label="test at minimization")
    if dense.get("val_acc") is not None:
        # what the floor is checked on: validation accuracy after each cycle's fine-tuning
        val = [dense["val_acc"]] + [
            r["released_val_acc"] if r.get("released_val_acc") is not None else r["val_acc"] for r in records
        ]
        ax_acc.plot([0] + [r["cycle"] for r in records], _pct(val), "-.", color="tab:green", lw=1,
                    label="validation (after fine-tune)")
    if baseline is not None:
        ax_size.scatter([baseline["cycle"]], [baseline["params"]], marker="*", s=220, color="crimson", zorder=5,
                        label="single-pass prune+minimize")
        ax_acc.scatter([baseline["cycle"]], _pct([baseline["test_acc"]]), marker="*", s=220, color="crimson",
                       zorder=5, label="single-pass prune+minimize")
    # the floor the run enforced: dense validation accuracy minus max_drop, on validation accuracy
    ax_acc.axhline(100 * dense["floor"], color="black", lw=0.8, ls=":",
                   label=f"validation floor ({100 * dense['floor']:.2f}%)")
    from matplotlib.ticker import MaxNLocator

    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_size.set_yscale("log")
    ax_size.set_ylabel("deployable parameters")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_xlabel("cycle (0 = dense)")
    ax_size.set_title(title)
    ax_size.legend(fontsize=8)
    ax_acc.legend(fontsize=8)
    ax_size.grid(alpha=0.3)
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    atomic_save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
