"""What a minimization did: sizes before/after, removed units per group and per tensor, measured error,
time, rules used. `to_dict()` is the machine-readable form (`sr-ir minimize --json`, the cycle)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..ir.program import Program
from .applying import Removal


@dataclass(repr=False)
class MinimizeReport:
    """What `minimize` did; ``str(report)`` (and ``print(report)``) is `table`, ``to_dict()`` the full record."""

    params_before: int
    bytes_before: int
    params_after: int = 0
    bytes_after: int = 0
    buffers_after: int = 0
    passes: int = 0
    groups: list[dict[str, Any]] = field(default_factory=list)  # one entry per group per pass
    removed_by_param: dict[str, dict[int, int]] = field(default_factory=dict)  # @name -> axis -> units removed
    kept_by_param: dict[str, list[int]] = field(default_factory=dict)  # @name -> shape after
    shapes_before: dict[str, list[int]] = field(default_factory=dict)
    batch_norms_folded: list[str] = field(default_factory=list)
    rules_used: list[str] = field(default_factory=list)
    refused_rules: dict[str, str] = field(default_factory=dict)  # rule -> why it has no certificate
    verification: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ops_before: dict[str, int] = field(default_factory=dict)  # op -> nodes (an attention per head: heads)
    ops_after: dict[str, int] = field(default_factory=dict)
    # channels known to be exactly zero that stay, with why: {value, op, axis, channels, why}
    kept_zero: list[dict[str, Any]] = field(default_factory=list)
    # each parameter of the result -> {"original": the model's state_dict key it came from (None: made
    # by a rewrite), "how": "as is" | how it was derived, sliced or rewritten}; see `name_map`
    names: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed_params: list[str] = field(default_factory=list)  # model keys with nothing left in the result

    @staticmethod
    def start(p: Program) -> "MinimizeReport":
        """A report opened on the program about to be minimized (its sizes and op counts)."""
        return MinimizeReport(
            p.param_count(), p.param_bytes(),
            shapes_before={n: [int(d) for d in t.shape] for n, t in p.params.items() if t.is_static()},
            ops_before=_op_counts(p),
        )

    def record(self, pass_no: int, removals: list[Removal]) -> None:
        """Add what one pass of the engine removed."""
        self.passes = pass_no
        for r in removals:
            self.groups.append({"pass": pass_no, "group": r.group, "size": r.size, "removed": len(r.removed),
                                "channels": r.removed, "tensors": r.tensors, "folded_into": sorted(set(r.folded_into))})
            for t in r.tensors:
                if t.startswith("@"):
                    name, _, axis = t[1:].partition("[axis ")
                    ax = int(axis.rstrip("]"))
                    d = self.removed_by_param.setdefault(name, {})
                    d[ax] = d.get(ax, 0) + len(r.removed)

    def finish(self, p: Program, seconds: float, rules_used: list[str], before: Program | None = None,
               **steps: Program) -> None:
        """Close the report on the result `p`; with `before` (the program minimized) also the name map
        (`steps`: the intermediate programs `name_map` takes)."""
        if before is not None:
            self.names, self.removed_params = name_map(before, p, **steps)
        self.params_after = p.param_count()
        self.bytes_after = p.param_bytes()
        self.kept_by_param = {n: [int(d) for d in t.shape] for n, t in p.params.items() if t.is_static()}
        self.rules_used = rules_used
        self.seconds["minimize"] = seconds
        self.ops_after = _op_counts(p)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"MinimizeReport(params {self.params_before:,} -> {self.params_after:,}, passes {self.passes}, "
                f"{len(self.rules_used)} rules used)")

    @property
    def ratio(self) -> float:
        """Parameters before over parameters after (inf when nothing is left)."""
        return self.params_before / self.params_after if self.params_after else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """The whole report as JSON-ready data (`sr-ir minimize --json` prints it)."""
        return {
            "params_before": self.params_before, "params_after": self.params_after, "ratio": self.ratio,
            "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
            "passes": self.passes, "groups": self.groups,
            "removed_by_param": {k: {str(a): n for a, n in v.items()} for k, v in self.removed_by_param.items()},
            "shapes_before": self.shapes_before, "shapes_after": self.kept_by_param,
            "batch_norms_folded": self.batch_norms_folded, "rules_used": self.rules_used,
            "refused_rules": self.refused_rules,
            "verification": self.verification, "seconds": self.seconds,
            "ops_before": self.ops_before, "ops_after": self.ops_after, "kept_zero": self.kept_zero,
            "names": self.names, "removed_params": self.removed_params,
        }

    def table(self) -> str:
        """A before/after table, one row per parameter whose shape changed, then totals."""
        rows = removal_rows(self)
        w = max([len(r[0]) for r in rows] + [9])
        lines = [f"{'parameter':<{w}}  {'before':>16}  {'after':>16}  {'removed':>9}"]
        for name, before, after, removed in rows:
            lines.append(f"{name:<{w}}  {before:>16}  {after:>16}  {removed:>9}")
        lines.append(f"{'total':<{w}}  {self.params_before:>16,}  {self.params_after:>16,}  {self.params_before - self.params_after:>9,}")
        lines.append(f"{'bytes':<{w}}  {self.bytes_before:>16,}  {self.bytes_after:>16,}  x{self.ratio:.2f} smaller")
        v = self.verification
        for dt in ("bfloat16", "float16", "float32", "float64"):
            if dt in v:
                lines.append(f"verified {dt}: max abs error {v[dt]['max_abs']:.3g}, max relative error {v[dt]['max_rel']:.3g}")
        if self.batch_norms_folded:
            lines.append(f"batch norms folded: {len(self.batch_norms_folded)}")
        changed = [op for op in sorted(set(self.ops_before) | set(self.ops_after))
                   if self.ops_before.get(op, 0) != self.ops_after.get(op, 0)]
        if changed:
            lines.append("nodes: " + ", ".join(f"{op} {self.ops_before.get(op, 0)} -> {self.ops_after.get(op, 0)}"
                                               for op in changed))
        if self.names:
            kinds = {"as is": 0, "renamed": 0, "changed": 0, "computed": 0}
            for n, e in self.names.items():
                kinds["computed" if e["original"] is None else "renamed" if e["original"] != n else
                      "as is" if e["how"] == "as is" else "changed"] += 1
            lines.append("parameter names: " + ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
                         + (f", {len(self.removed_params)} removed" if self.removed_params else "")
                         + " (report.names)")
        for k in self.kept_zero[:5]:
            chans = ", ".join(map(str, k["channels"][:8])) + (", ..." if len(k["channels"]) > 8 else "")
            lines.append(f"kept zero: %{k['value']} ({k['op']}) axis {k['axis']} channels {chans}: {k['why'][0]}")
        if len(self.kept_zero) > 5:
            lines.append(f"kept zero: {len(self.kept_zero) - 5} more values (report.kept_zero, --json)")
        lines.append(f"passes: {self.passes}; time: " + ", ".join(f"{k} {s:.3f}s" for k, s in self.seconds.items()))
        return "\n".join(lines)


def name_map(before: Program, after: Program, *, substituted: Program | None = None,
             gathers: Program | None = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Where each parameter of `after` came from in the model `before` was lowered from, and the model
    keys of `before`'s parameters that `after` no longer has. A parameter keeps its name through the
    rewrites; the lowering records the few it derives under another name (`Program.origins`).
    `gathers` is `before` with its input gathers, `substituted` that after the substitution rules
    (batch-norm folding), so the map can say which step changed or made a tensor."""
    names: dict[str, dict[str, Any]] = {}
    for n, t in after.params.items():
        if n not in before.params:
            if gathers is not None and n in gathers.params:
                how = "new: indices of the input features kept"
            elif substituted is not None and n in substituted.params:
                how = "new: made by a substitution rule (a folded norm's bias)"
            else:
                how = "new: made by a rewrite"
            names[n] = {"original": None, "how": how}
            continue
        key, how = before.origins.get(n, (n, ""))
        steps = [how] if how else []
        wb = before.weights.get(n)
        if substituted is not None and substituted.weights.get(n) is not wb:
            steps.append("rewritten by a substitution rule (a norm folded in)")
            wb = substituted.weights.get(n)
        b, a = before.params[n].shape, t.shape
        if b != a:
            steps.append(f"sliced {list(b)} -> {list(a)}")
        else:
            wa = after.weights.get(n)
            # rewrites replace tensors and never write into them: an identical object is unchanged
            if wb is not None and wa is not None and wb is not wa and not torch.equal(wb, wa):
                steps.append("values rewritten (constants folded in)")
        names[n] = {"original": key, "how": "; ".join(steps) or "as is"}
    removed = {before.origins.get(n, (n, ""))[0] for n in before.params if n not in after.params}
    return names, sorted(removed - {e["original"] for e in names.values()} - {None})


def removal_rows(r: MinimizeReport) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, before in r.shapes_before.items():
        after = r.kept_by_param.get(name)
        if after == before:
            continue
        n_before = _numel(before)
        n_after = _numel(after) if after is not None else 0
        rows.append((name, "x".join(map(str, before)), "x".join(map(str, after)) if after else "(gone)", f"{n_before - n_after:,}"))
    return rows


def _numel(s: list[int]) -> int:
    n = 1
    for d in s:
        n *= d
    return n


def _op_counts(p: Program) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in p.nodes:
        out[n.op] = out.get(n.op, 0) + 1
    return out
