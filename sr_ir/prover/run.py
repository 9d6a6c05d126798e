"""Prove many rules: worker processes with a hard per-rule deadline, certificates, warnings.

A worker that overruns its deadline is killed and the rule reported as `timeout` (never proved,
never wrong). After a proof, each side condition of a minimization rule is dropped in turn and the
rule re-checked (test and bounded tiers, a few seconds per rule in all): a condition without which
the rule still proves is reported as unnecessary.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Mapping

from ..lang import ast as A
from ..lang.rule import RAISE_PREFIX, Rule
from ..ir.opdecl import OpDecl

EXIT = {"proved": 0, "refuted": 1, "refuted-uf": 1, "vacuous": 1, "unknown": 2, "timeout": 2, "error": 3}


def prove_one(rule: Rule, ops: Mapping[str, OpDecl], timeout_ms: int = 20000, check_conditions: bool = True,
              templates: Mapping[str, dict] | None = None) -> dict:
    """Prove one rule in this process; a JSON-able result dict. `templates`: template checks already
    done (by op name), so that each op's template is checked once, not once per rule."""
    from .tiers import prove_rule

    res = prove_rule(rule, ops, timeout_ms=timeout_ms, templates=templates)
    out = res.to_json()
    # a raise rule's conditions spell out the ATen chain it recognises: one it could do without makes
    # it recognise less, never prove more, so the (costly) check is left to the minimization rules
    if res.status == "proved" and check_conditions and rule.where and not rule.name.startswith(RAISE_PREFIX):
        out["warnings"] = out.get("warnings", []) + unnecessary_conditions(rule, ops, timeout_ms)
    return out


# The unnecessary-condition lint re-proves a rule once per side condition: a raise rule with twenty
# structural conditions would spend minutes on a warning. It gets this much time per rule, in total.
LINT_BUDGET_S = 2.0


def unnecessary_conditions(rule: Rule, ops: Mapping[str, OpDecl], timeout_ms: int,
                           budget_s: float = LINT_BUDGET_S) -> list[str]:
    """A warning for each side condition the rule proves without (at the bounded sizes), within
    `budget_s` seconds in all; conditions left unchecked when the budget runs out are named."""
    from .tiers import prove_rule

    from .obligation import classify_where

    warnings = []
    static_conds = classify_where(rule).static
    t0 = time.monotonic()
    for i, cond in enumerate(rule.where):
        left_s = budget_s - (time.monotonic() - t0)
        rest = rule.where[:i] + rule.where[i + 1:]
        try:
            if left_s <= 0:
                raise _OutOfTime()
            with _alarm(left_s):
                r = prove_rule(rule, ops, max_tier="bounded", timeout_ms=min(timeout_ms, 5000, int(left_s * 1000) + 1),
                               conds=rest, configs=[(4, "middle")],
                               violate=cond if cond in static_conds else None, check_templates=False, report=False)
        except _OutOfTime:
            left = ", ".join(f"`{A.show(c)}`" for c in rule.where[i:])
            warnings.append(f"{rule.loc}: rule '{rule.name}': the unnecessary-condition check stopped after "
                            f"{budget_s:g} s; not checked: {left}")
            break
        except Exception:  # a failed re-check says nothing about the condition
            continue
        if r.status == "proved":
            loc = rule.where_locs[i] if i < len(rule.where_locs) else rule.loc
            warnings.append(f"{loc}: side condition `{A.show(cond)}` of rule '{rule.name}' is unnecessary "
                            f"(the rule proves without it at the bounded sizes tried)")
    return warnings


class _OutOfTime(Exception):
    pass


@contextlib.contextmanager
def _alarm(seconds: float):
    """Raise _OutOfTime in this (main) thread after `seconds`; elsewhere, no limit. A solver call
    already running finishes first (its own timeout bounds it)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def ring(signum, frame):
        raise _OutOfTime()

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _worker(conn: Any, tasks: list[Any], ops: Mapping[str, OpDecl], timeout_ms: int, check_conditions: bool) -> None:
    """A long-lived worker: proves the rules (checks the op templates) the parent names, one at a
    time, until told to stop."""
    from .templates import check_template

    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        i, known = msg
        task = tasks[i]
        try:
            if isinstance(task, Rule):
                out = prove_one(task, ops, timeout_ms, check_conditions, known)
            else:
                decl, vocab = task  # an op's template, checked with the functions as declared
                out = check_template(decl, ops, vocabulary=vocab)
        except BaseException as e:  # report, never hang the parent
            out = _failed(task, f"prover failure: {type(e).__name__}: {e}", 0.0)
        conn.send((i, out))


def _failed(task: Any, message: str, secs: float, status: str = "error") -> dict:
    if isinstance(task, tuple):
        task = task[0]
    if isinstance(task, Rule):
        return {"rule": task.name, "status": status, "tier": None, "seconds": round(secs, 3),
                "message": message, "loc": str(task.loc or "")}
    return {"op": task.name, "status": status, "seconds": round(secs, 3),
            "message": message, "loc": str(task.loc or ""), "hash": None, "template": task.torch}


class _Worker:
    def __init__(self, ctx: Any, rules: list[Any], ops: Mapping[str, OpDecl], timeout_ms: int, check: bool):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker, args=(child, rules, ops, timeout_ms, check), daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.t0 = 0.0

    def give(self, i: int, known: Mapping[str, dict] | None = None) -> None:
        self.task = i
        self.t0 = time.monotonic()
        self.conn.send((i, dict(known or {})))

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
              on_result: Callable[[dict], None] | None = None, template_ops: list[OpDecl] | None = None,
              known_templates: Mapping[str, dict] | None = None, template_results: list | None = None,
              vocabulary: Any = None) -> list[dict]:
    """Prove `rules` on `jobs` worker processes, each rule under a hard deadline (the worker is
    killed and replaced when a rule overruns it; that rule is reported `timeout`).

    First the torch templates of `template_ops` are checked (one task per op; `known_templates`
    are results already at hand, from certificates); every rule proof then reuses them. Their
    results are appended to `template_results`."""
    # load the solvers once here so forked workers start warm
    import sympy  # noqa: F401
    import z3  # noqa: F401

    from . import templates, tiers, z3bridge  # noqa: F401

    known: dict[str, dict] = dict(known_templates or {})
    tops = [d for d in (template_ops or []) if d.name not in known]
    if tops:
        import torch  # noqa: F401  (the template checks run it)

        vocab = vocabulary or next((r.vocabulary for r in rules if getattr(r, "vocabulary", None)), None)
        outs = _run_pool([(d, vocab) for d in tops], ops, jobs, deadline_s, timeout_ms, check_conditions, None, {})
        for d, out in zip(tops, outs):
            known[d.name] = out
            if template_results is not None:
                template_results.append(out)
    return _run_pool(rules, ops, jobs, deadline_s, timeout_ms, check_conditions, on_result, known)


def _run_pool(tasks: list[Any], ops: Mapping[str, OpDecl], jobs: int, deadline_s: float, timeout_ms: int,
              check_conditions: bool, on_result: Callable[[dict], None] | None, known: Mapping[str, dict]) -> list[dict]:
    if not tasks:
        return []
    ctx = mp.get_context("fork")
    pending = list(range(len(tasks)))
    results: dict[int, dict] = {}
    workers = [_Worker(ctx, tasks, ops, timeout_ms, check_conditions) for _ in range(max(1, min(jobs, len(tasks))))]
    try:
        while pending or any(w.task is not None for w in workers):
            for w in workers:
                if w.task is None and pending:
                    w.give(pending.pop(0), known)
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
                        results[i] = _dead(tasks[i], time.monotonic() - w.t0)
                        w.kill()
                        workers[k] = _Worker(ctx, tasks, ops, timeout_ms, check_conditions)
                    progressed = True
                elif not w.proc.is_alive():
                    results[i] = _dead(tasks[i], time.monotonic() - w.t0)
                    workers[k] = _Worker(ctx, tasks, ops, timeout_ms, check_conditions)
                    progressed = True
                elif time.monotonic() - w.t0 > deadline_s:
                    w.kill()
                    results[i] = _failed(tasks[i], f"no verdict within the {deadline_s:g} s deadline",
                                         time.monotonic() - w.t0, "timeout")
                    workers[k] = _Worker(ctx, tasks, ops, timeout_ms, check_conditions)
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
    return [results[i] for i in range(len(tasks))]


def _dead(task: Any, secs: float) -> dict:
    return _failed(task, "the prover process died (out of memory?)", secs)


def exit_code(results: list[dict], template_results: list[dict] = ()) -> int:
    """0 all proved, 1 some refuted or vacuous (a wrong template included), 2 unknown/timeout,
    3 parse/type errors."""
    codes = {EXIT.get(r["status"], 2) for r in results}
    codes |= {1 for t in template_results if t.get("status") == "refuted"}
    codes |= {2 for t in template_results if t.get("status") == "timeout"}
    codes |= {3 for t in template_results if t.get("status") == "error"}
    for c in (3, 1, 2):
        if c in codes:
            return c
    return 0


def with_where(rule: Rule, conds: tuple) -> Rule:
    return replace(rule, where=conds)
