"""Rules: turn the analysis's gradient and scoring events into named findings and a verdict.

Every gradient on validation tokens (g) is paired with every scoring of validation tokens (s):
  * g before s within one iteration of their shared loops -> violation (C3: adapted, then scored);
  * s before g, and some shared loop L over which g's or s's data does not vary -> violation: a later
    iteration of L scores tokens already trained on. When both vary with every shared loop (score chunk
    i, then train on chunk i; the same per document) the pattern is score-first and legal.
Findings name the pattern:
  `C3-grad-before-score`  a chunk gets gradient steps before it is scored, inside the chunk loop;
  `C4-rescore`            tokens scored, trained on, then scored again; or `min`/`max`/`if` choosing
                          among the results of different scoring passes;
  `multi-epoch-val`       repeated gradient epochs over the same validation tokens before (or between)
                          scoring them;
  `score-after-adapt`     a scoring pass after a single gradient pass over the validation tokens.
`legal` needs validation data named, a scoring pass found, no finding and nothing hidden from the
analysis; otherwise `unknown` with the reasons, or `illegal` as soon as one finding stands (what the
checker can see already breaks the rules, whatever it cannot see).
"""

from __future__ import annotations

import ast

from golf.check.analysis import Analyzer


def _shared(a: tuple, b: tuple) -> tuple:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def judge(an: Analyzer) -> tuple[list[dict], str | None]:
    """Pair every validation gradient with every validation score; name each violating pattern."""
    grads = [e for e in an.events if e.kind == "grad"]
    scores = [e for e in an.events if e.kind == "score"]
    groups: dict[tuple, dict] = {}

    def add(rule, g, s, why):
        key = (rule, g.function, s.function)
        group = groups.setdefault(
            key, {"rule": rule, "function": g.function, "lines": set(), "explanation": why}
        )
        group["lines"].update((g.line, s.line))

    for g in grads:
        for s in scores:
            shared = _shared(g.loops, s.loops)
            if g.pos < s.pos:  # in one iteration, the gradient comes first
                both_vary = [L for L in shared if ("iter", L) in g.data and ("iter", L) in s.data]
                earlier = [
                    s1 for s1 in scores if s1.pos < g.pos and len(_shared(s1.loops, g.loops)) > len(shared)
                ]
                repeated = [L for L in g.loops[len(shared) :] if ("iter", L) not in g.data]
                if both_vary:
                    add(
                        "C3-grad-before-score",
                        g,
                        s,
                        f"inside the loop at line {an.loop_lines[both_vary[-1]]} each validation chunk gets "
                        f"a gradient step (line {g.line}) before it is scored (line {s.line}, {s.function})",
                    )
                elif earlier:
                    add(
                        "C4-rescore",
                        g,
                        s,
                        f"validation tokens scored at line {earlier[0].line}, trained on at line {g.line}, "
                        f"then scored again at line {s.line} ({s.function}): a second pass after adaptation",
                    )
                elif repeated:
                    add(
                        "multi-epoch-val",
                        g,
                        s,
                        f"gradient epochs over the same validation tokens (loop at line "
                        f"{an.loop_lines[repeated[0]]}, backward at line {g.line}) before they are scored "
                        f"at line {s.line} ({s.function}); breaks C3, score before update",
                    )
                else:
                    add(
                        "score-after-adapt",
                        g,
                        s,
                        f"a gradient pass over validation tokens (backward at line {g.line}) runs before "
                        f"they are scored at line {s.line} ({s.function}); breaks C3, score before update",
                    )
                continue
            for L in shared:  # s first; a later iteration of L may score what g trained on
                g_varies, s_varies = ("iter", L) in g.data, ("iter", L) in s.data
                if g_varies and s_varies:
                    continue
                rule = "multi-epoch-val" if not g_varies else "C4-rescore"
                add(
                    rule,
                    g,
                    s,
                    f"the loop at line {an.loop_lines[L]} scores validation tokens (line {s.line}) and takes "
                    f"gradient steps on them (line {g.line}); its next iteration scores tokens already "
                    "trained on",
                )
                break
    for line, function, n in an.choices:
        groups[("C4-rescore", function, line)] = {
            "rule": "C4-rescore",
            "function": function,
            "lines": {line},
            "explanation": f"chooses among {n} scoring passes over the validation data (min/max/comparison)",
        }
    findings = [dict(g, lines=sorted(g["lines"])) for g in groups.values()]
    findings.sort(key=lambda f: (f["lines"][0], f["rule"]))
    return findings, (findings[0]["explanation"] if findings else None)


def analyse(tree: ast.Module, hidden: list[str]) -> dict:
    """Verdict for one parsed (and unwrapped) script; `hidden` lists reasons from unwrapping."""
    an = Analyzer(tree)
    an.run()
    findings, first = judge(an)
    reasons = list(hidden) + [r for r in an.reasons if r not in hidden]
    scores = [e for e in an.events if e.kind == "score"]
    grads = [e for e in an.events if e.kind == "grad"]
    if findings:
        verdict, reason = "illegal", first
    elif reasons:
        verdict, reason = "unknown", "; ".join(reasons)
    elif not an.val_lines:
        verdict, reason = "unknown", "no validation data identified (no literal naming validation shards)"
    elif not scores:
        verdict = "unknown"
        reason = "no scoring pass over validation data found (no no_grad/inference_mode model call on it)"
    else:
        passes = len({e.pass_id for e in scores})
        how = (
            "gradient steps on validation tokens only after they are scored (score-first)"
            if grads
            else "no gradient steps on validation tokens"
        )
        verdict = "legal"
        reason = f"validation data named at line {min(an.val_lines)}; {passes} scoring pass(es) found; {how}"
    return {"verdict": verdict, "findings": findings, "reason": reason}
