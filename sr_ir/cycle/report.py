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


def plot_cycles(
    path: str | Path,
    dense: dict[str, Any],
    records: Sequence[dict[str, Any]],
    *,
    baseline: dict[str, Any] | None = None,
    title: str = "Squeeze-Release",
    extra: dict[str, Sequence[dict[str, Any]]] | None = None,
) -> None:
    """PNG: deployable parameters (log scale) and test accuracy per cycle; the dense model at cycle 0;
    the single-pass prune+minimize baseline as a marked point; ``extra`` runs (e.g. the no-release
    ablation) as dashed lines."""
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
        ax_acc.plot(xs, [100 * a for a in acc], style + "o", label=f"{name} (after fine-tune)")
    ax_acc.plot([r["cycle"] for r in records], [100 * r["test_acc"] for r in records], ":x", color="gray",
                label="at minimization")
    if baseline is not None:
        ax_size.scatter([baseline["cycle"]], [baseline["params"]], marker="*", s=220, color="crimson", zorder=5,
                        label="single-pass prune+minimize")
        ax_acc.scatter([baseline["cycle"]], [100 * baseline["test_acc"]], marker="*", s=220, color="crimson",
                       zorder=5, label="single-pass prune+minimize")
    ax_acc.axhline(100 * dense["test_acc"] - 1.0, color="black", lw=0.8, ls=":", label="dense - 1 point")
    from matplotlib.ticker import MaxNLocator

    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_size.set_yscale("log")
    ax_size.set_ylabel("deployable parameters")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_xlabel("cycle (0 = dense)")
    ax_size.set_title(title)
    ax_size.legend(fontsize=8)
    ax_acc.legend(fontsize=8)
    ax_size.grid(alpha=0.3)
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    atomic_save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
