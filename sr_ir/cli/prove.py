"""`sr-ir prove`: prove rewrite rules function-preserving, write certificates, or check them.

Exit codes: 0 all proved (or, with --check, all certificates current), 1 some rule refuted, vacuous,
an op's torch template that disagrees with its means, or (with --check) a rule without a current
certificate, 2 unknown / timeout, 3 parse or type errors.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "prove",
        help="prove rule files (tiers: test, bounded, parametric) and write certificates in proofs/",
        description="Prove rewrite rules function-preserving: a random exact-rational test, a z3 proof at "
        "several concrete sizes, and a sympy proof for symbolic sizes. Proved rules get a certificate "
        "(proofs/<rule>.<hash>.json); the minimization engine applies only rules with a current one.",
    )
    p.add_argument("paths", nargs="*", type=Path, metavar="FILES|DIRS",
                   help="rule files or directories to prove (default: the bundled rules/ and every --rules DIR)")
    p.add_argument("--rules", action="append", type=Path, default=[], metavar="DIR",
                   help="an extra rule directory (its ops and rules are loaded; certificates go to DIR/proofs)")
    p.add_argument("--check", action="store_true",
                   help="no solver: verify that every selected rule has a current certificate")
    p.add_argument("--force", action="store_true", help="prove again even where a current certificate exists")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument("--match", action="append", default=[], metavar="NAME",
                   help="only rules whose name matches this glob (or contains it); repeatable")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="hard deadline per rule in seconds (default 60); a timeout is never a proof")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--axioms", action="store_true",
                   help="validate the declared axioms (bundled, --rules DIRs and FILES|DIRS) against the functions' "
                        "definitions, each function's means against its torch spelling, and all axioms "
                        "together for consistency")
    p.add_argument("--no-condition-check", action="store_true",
                   help="skip the search for unnecessary side conditions (faster)")
    p.set_defaults(func=run)


def _selected(args: argparse.Namespace):
    from ..lang.loader import load_rules
    from ..resources import data_dir

    bundled = data_dir("rules").resolve()
    extra = [d for d in args.rules]
    targets = [p.resolve() for p in args.paths]
    for t in targets:
        if not t.exists():
            from ..errors import ParseError

            raise ParseError(f"no such rule file or directory: {t}")
    outside = [t for t in targets if not (t == bundled or bundled in t.parents)
               and not any(t == d.resolve() or d.resolve() in t.parents for d in extra)]
    rs = load_rules(extra=[*extra, *outside])
    rules = rs.rules
    if targets:
        def inside(r) -> bool:
            f = Path(r.loc.file).resolve() if r.loc else None
            return f is not None and any(f == t or t in f.parents for t in targets)

        rules = [r for r in rules if inside(r)]
    if args.match:
        rules = [r for r in rules if any(fnmatch.fnmatch(r.name, m) or m in r.name for m in args.match)]
    return rs, rules


def run(args: argparse.Namespace) -> int:
    from ..errors import SrIrError

    try:
        rs, rules = _selected(args)
        if args.axioms:
            return _axioms(args, rs)
    except SrIrError as e:
        e.exit_code = 3
        raise
    if args.check:
        return _check(args, rs, rules)
    return _prove(args, rs, rules)


def _axioms(args: argparse.Namespace, rs) -> int:
    """Validate exactly the declarations the prover reads (the loaded rule set's vocabulary)."""
    from ..prover.axioms import validate

    rows = validate(rs.vocabulary)
    if args.json:
        print(json.dumps([r._asdict() for r in rows], indent=1))
    else:
        for r in rows:
            print(f"{r.loc + ': ' if r.loc and not r.ok else ''}{'ok ' if r.ok else 'BAD'}  {r.name:22} "
                  f"{r.statement if not r.name.startswith('function ') else '':48} {r.detail}")
        bad = sum(1 for r in rows if not r.ok)
        print(f"{len(rs.axioms)} axioms, {len(rs.functions)} functions: "
              + ("all checks pass" if not bad else f"{bad} check(s) FAILED"))
    return 0 if all(r.ok for r in rows) else 1


def _check(args: argparse.Namespace, rs, rules) -> int:
    from ..prover.certificates import certificate_status

    rows = []
    for r in rules:
        st = certificate_status(r, rs)
        rows.append({"rule": r.name, "state": st.state, "certificate": str(st.path) if st.path else None,
                     "reason": st.reason, "loc": str(r.loc or "")})
    bad = [x for x in rows if x["state"] != "current"]
    if args.json:
        print(json.dumps({"rules": rows, "ok": not bad}, indent=1))
    else:
        for x in rows:
            if x["state"] != "current":
                print(f"{x['loc']}: rule '{x['rule']}': certificate {x['state']} ({x['reason']})")
        print(f"{len(rows) - len(bad)}/{len(rows)} rules have a current certificate"
              + ("" if not bad else "; run `sr-ir prove` to prove the others"))
    return 1 if bad else 0


def _template_ops(args: argparse.Namespace, rs, rules) -> list:
    """The ops whose torch templates this run checks: those the selected rules use, and (without
    --match) every op declared in the selected files (all ops when no path is given)."""
    names = {op for r in rules for op in r.ops_used}
    if not args.match:
        targets = [p.resolve() for p in args.paths]
        for d in rs.ops.values():
            f = Path(d.loc.file).resolve() if d.loc else None
            if not targets or (f is not None and any(f == t or t in f.parents for t in targets)):
                names.add(d.name)
    return [rs.ops[n] for n in sorted(names) if n in rs.ops and rs.ops[n].torch is not None]


def _prove(args: argparse.Namespace, rs, rules) -> int:
    from ..prover import certificates
    from ..prover.run import exit_code, prove_all
    from ..prover.templates import checkable

    todo, skipped = [], []
    for r in rules:
        if not args.force and certificates.certificate_status(r, rs).ok:
            skipped.append(r)
        else:
            todo.append(r)
    t0 = time.perf_counter()
    by_name = {r.name: r for r in todo}
    live = not args.json and sys.stderr.isatty()

    def on_result(res: dict) -> None:
        if live:
            print(f"  {res['rule']}: {res['status']}", file=sys.stderr)

    with_template = _template_ops(args, rs, rules)
    no_means = [d.name for d in with_template if not checkable(d)]
    known: dict[str, dict] = {}
    to_check = []
    for d in with_template:
        if not checkable(d):
            continue
        cert = None if args.force else certificates.template_certificate(d, rs.vocabulary)
        if cert is not None:
            known[d.name] = cert
        else:
            to_check.append(d)
    template_results: list[dict] = []
    results = prove_all(todo, rs.ops, jobs=args.jobs, deadline_s=args.timeout,
                        timeout_ms=int(min(args.timeout, 30) * 1000), check_conditions=not args.no_condition_check,
                        on_result=on_result, template_ops=to_check, known_templates=known,
                        template_results=template_results, vocabulary=rs.vocabulary)
    for t in template_results:
        certificates.write_template(rs.ops[t["op"]], t, rs.vocabulary)
    for res in results:
        r = by_name[res["rule"]]
        if res["status"] == "proved":
            certificates.write(r, rs.ops, res)
        else:
            certificates.remove_stale(r, rs.ops, keep_current=False)
    for r in skipped:
        results.append({"rule": r.name, "status": "proved", "tier": "certificate", "seconds": 0.0,
                        "loc": str(r.loc or ""), "message": "current certificate (use --force to prove again)"})
    order = {r.name: i for i, r in enumerate(rules)}
    results.sort(key=lambda x: order.get(x["rule"], 0))
    wall = time.perf_counter() - t0
    code = exit_code(results, template_results)
    templates = {"checked": template_results, "current": sorted(known), "no_means": no_means}
    if args.json:
        print(json.dumps({"results": results, "templates": templates, "seconds": round(wall, 3), "exit": code},
                         indent=1, default=str))
        return code
    _print_report(results, wall, templates)
    return code


def _print_report(results: list[dict], wall: float, templates: dict | None = None) -> None:
    out = sys.stdout
    templates = templates or {"checked": [], "current": [], "no_means": []}
    for t in templates["checked"]:
        if t["status"] == "proved":
            continue
        what = {"refuted": "is wrong", "unchecked": "was not checked", "timeout": "was not checked (timeout)",
                "error": "could not be checked"}
        print(f"{t.get('loc', '')}: op '{t['op']}': torch template {what.get(t['status'], t['status'])}"
              + (f": {t['message']}" if t.get("message") else ""), file=out)
        if t.get("counterexample"):
            _print_cex(t["counterexample"], out, template=True)
    for res in results:
        if res["status"] in ("proved",):
            continue
        loc = res.get("loc", "")
        print(f"{loc}: rule '{res['rule']}' is {_verdict(res)}" + (f": {res['message']}" if res.get("message") else ""),
              file=out)
        cex = res.get("counterexample")
        if cex:
            _print_cex(cex, out, template=res.get("tier") == "template")
    warnings = [w for res in results for w in res.get("warnings", []) or []]
    for w in warnings:
        print(f"warning: {w}", file=out)
    w1 = max([len(r["rule"]) for r in results] + [4])
    print(f"{'rule':{w1}}  {'result':10}  {'tier':11}  {'time':>7}", file=out)
    for res in results:
        tier = res.get("tier") or "-"
        print(f"{res['rule']:{w1}}  {res['status']:10}  {tier:11}  {res.get('seconds', 0):7.2f}s", file=out)
    counts: dict[str, int] = {}
    for res in results:
        counts[res["status"]] = counts.get(res["status"], 0) + 1
    print(f"{len(results)} rules: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + f" in {wall:.1f} s" + (f"; {len(warnings)} warnings" if warnings else ""), file=out)
    checked = templates["checked"]
    wrong = [t["op"] for t in checked if t["status"] == "refuted"]
    other = [t["op"] for t in checked if t["status"] not in ("proved", "refuted")]
    n_ok = len(checked) - len(wrong) - len(other) + len(templates["current"])
    line = f"torch templates: {n_ok} agree with their means"
    if wrong:
        line += f", {len(wrong)} do not ({', '.join(wrong)})"
    if other:
        line += f", {len(other)} could not be compared ({', '.join(other)})"
    if templates["no_means"]:
        line += (f"; {len(templates['no_means'])} ops have a template but no means, so it is not checked: "
                 f"{', '.join(templates['no_means'])}")
    print(line, file=out)


def _verdict(res: dict) -> str:
    return {"refuted": "wrong", "refuted-uf": "not proved (refuted for an arbitrary function)",
            "vacuous": "vacuous (its side conditions cannot hold)", "unknown": "unknown",
            "timeout": "unknown (timeout)", "error": "not checkable"}.get(res["status"], res["status"])


def _print_cex(cex: dict, out: Any, template: bool = False) -> None:
    print(f"  counterexample at {cex.get('instance')}" + ("" if cex.get("real") else
          " (with arbitrary function values; none found with the real definitions)"), file=out)
    for k, v in (cex.get("values") or {}).items():
        print(f"    {k} = {v}", file=out)
    for k, v in (cex.get("inputs") or {}).items():
        print(f"    {k} = {_short(v)}", file=out)
    for k, v in (cex.get("intermediates") or {}).items():
        print(f"    (intermediate) {k} = {_short(v)}", file=out)
    if "at" in cex:
        sides = ("means", "template") if template else ("left side", "right side")
        print(f"    at {cex['at']}: {sides[0]} {cex.get('lhs')}, {sides[1]} {cex.get('rhs')}", file=out)
    if cex.get("report_error"):
        print(f"    (reporting the counterexample failed: {cex['report_error']})", file=out)
    for k, v in list((cex.get("model") or {}).items())[:12]:
        print(f"    (model) {k} = {v}", file=out)
    rp = cex.get("replay")
    if rp:
        if "error" in rp:
            print(f"    float64 replay failed: {rp['error']}", file=out)
        else:
            print("    float64 replay through the emitted PyTorch code"
                  + (" (lhs: the op's means, rhs: its template):" if template else ":"), file=out)
            for ln in rp["code"]:
                print(f"      {ln}", file=out)
            print(f"      lhs = {_short(rp['lhs'])}", file=out)
            print(f"      rhs = {_short(rp['rhs'])}", file=out)
            print(f"      max |lhs - rhs| = {rp['max_abs_diff']:.6g}", file=out)


def _short(v: Any, limit: int = 160) -> str:
    s = json.dumps(v)
    return s if len(s) <= limit else s[:limit] + " ..."
