"""Prove many rules: worker processes with a hard per-rule deadline, certificates, warnings.

A worker that overruns its deadline is killed and the rule reported as `timeout` (never proved,
never wrong). After a proof, each side condition is dropped in turn and the rule re-checked (test
and bounded tiers): a condition without which the rule still proves is reported as unnecessary.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import replace
from typing import Any, Callable, Mapping

from ..lang import ast as A
from ..lang.rule import Rule
from ..ops.decl import OpDecl

EXIT = {"proved": 0, "refuted": 1, "refuted-uf": 1, "vacuous": 1, "unknown": 2, "timeout": 2, "error": 3}


def prove_one(rule: Rule, ops: Mapping[str, OpDecl], timeout_ms: int = 20000, check_conditions: bool = True) -> dict:
    """Prove one rule in this process; a JSON-able result dict."""
    from .tiers import prove_rule

    res = prove_rule(rule, ops, timeout_ms=timeout_ms)
    out = res.to_json()
    if res.status == "proved" and check_conditions and rule.where:
        out["warnings"] = out.get("warnings", []) + unnecessary_conditions(rule, ops, timeout_ms)
    return out


def unnecessary_conditions(rule: Rule, ops: Mapping[str, OpDecl], timeout_ms: int) -> list[str]:
    from .tiers import prove_rule

    warnings = []
    for i, cond in enumerate(rule.where):
        rest = rule.where[:i] + rule.where[i + 1:]
        if isinstance(cond, A.Unused) and not any(isinstance(w, A.Unused) for w in rest):
            pass  # dropping the only `unused` makes the comparison cover the channel: still a real check
        from .obligation import classify_where

        static = cond in classify_where(rule).static
        try:
            r = prove_rule(rule, ops, max_tier="bounded", timeout_ms=min(timeout_ms, 5000), conds=rest,
                           configs=[(4, "middle"), (3, "end")], violate=cond if static else None)
        except Exception:  # a failed re-check says nothing about the condition
            continue
        if r.status == "proved":
            loc = rule.where_locs[i] if i < len(rule.where_locs) else rule.loc
            warnings.append(f"{loc}: side condition `{A.show(cond)}` of rule '{rule.name}' is unnecessary "
                            f"(the rule proves without it at the bounded sizes tried)")
    return warnings


def _worker(conn: Any, rules: list[Rule], ops: Mapping[str, OpDecl], timeout_ms: int, check_conditions: bool) -> None:
    """A long-lived worker: proves the rules the parent names, one at a time, until told to stop."""
    while True:
        try:
            i = conn.recv()
        except EOFError:
            return
        if i is None:
            return
        rule = rules[i]
        try:
            out = prove_one(rule, ops, timeout_ms, check_conditions)
        except BaseException as e:  # report, never hang the parent
            out = {"rule": rule.name, "status": "error", "tier": None, "seconds": 0.0,
                   "message": f"prover failure: {type(e).__name__}: {e}", "loc": str(rule.loc or "")}
        conn.send((i, out))


class _Worker:
    def __init__(self, ctx: Any, rules: list[Rule], ops: Mapping[str, OpDecl], timeout_ms: int, check: bool):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker, args=(child, rules, ops, timeout_ms, check), daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.t0 = 0.0

    def give(self, i: int) -> None:
        self.task = i
        self.t0 = time.monotonic()
        self.conn.send(i)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(1)
        if self.proc.is_alive():
            self.proc.kill()
        self.conn.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(1)
        self.conn.close()


def prove_all(rules: list[Rule], ops: Mapping[str, OpDecl], jobs: int = 1, deadline_s: float = 60.0,
              timeout_ms: int = 20000, check_conditions: bool = True,
              on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Prove `rules` on `jobs` worker processes, each rule under a hard deadline (the worker is
    killed and replaced when a rule overruns it; that rule is reported `timeout`)."""
    # load the solvers once here so forked workers start warm
    import sympy  # noqa: F401
    import z3  # noqa: F401

    from . import tiers, z3bridge  # noqa: F401

    ctx = mp.get_context("fork")
    pending = list(range(len(rules)))
    results: dict[int, dict] = {}
    workers = [_Worker(ctx, rules, ops, timeout_ms, check_conditions) for _ in range(max(1, min(jobs, len(rules))))]
    try:
        while pending or any(w.task is not None for w in workers):
            for w in workers:
                if w.task is None and pending:
                    w.give(pending.pop(0))
            progressed = False
            for k, w in enumerate(workers):
                if w.task is None:
                    continue
                i = w.task
                if w.conn.poll(0.002):
                    try:
                        j, out = w.conn.recv()
                        results[j] = out
                        w.task = None
                    except (EOFError, OSError):
                        results[i] = _dead(rules[i], time.monotonic() - w.t0)
                        w.kill()
                        workers[k] = _Worker(ctx, rules, ops, timeout_ms, check_conditions)
                    progressed = True
                elif not w.proc.is_alive():
                    results[i] = _dead(rules[i], time.monotonic() - w.t0)
                    workers[k] = _Worker(ctx, rules, ops, timeout_ms, check_conditions)
                    progressed = True
                elif time.monotonic() - w.t0 > deadline_s:
                    w.kill()
                    results[i] = {"rule": rules[i].name, "status": "timeout", "tier": None,
                                  "seconds": round(time.monotonic() - w.t0, 3), "loc": str(rules[i].loc or ""),
                                  "message": f"no verdict within the {deadline_s:g} s deadline"}
                    workers[k] = _Worker(ctx, rules, ops, timeout_ms, check_conditions)
                    progressed = True
                else:
                    continue
                if on_result:
                    on_result(results[i])
            if not progressed:
                time.sleep(0.003)
    finally:
        for w in workers:
            w.stop()
    return [results[i] for i in range(len(rules))]


def _dead(rule: Rule, secs: float) -> dict:
    return {"rule": rule.name, "status": "error", "tier": None, "seconds": round(secs, 3),
            "loc": str(rule.loc or ""), "message": "the prover process died (out of memory?)"}


def exit_code(results: list[dict]) -> int:
    codes = {EXIT.get(r["status"], 2) for r in results}
    for c in (3, 1, 2):
        if c in codes:
            return c
    return 0


def with_where(rule: Rule, conds: tuple) -> Rule:
    return replace(rule, where=conds)
