"""Rules: turn the analysis's gradient and scoring events into named findings and a verdict.

Every gradient on validation tokens (g) is paired with every scoring of validation tokens (s) of the
same run (the default run, or the run with one environment switch flipped), except throw-away warm-up
gradients, and except pairs in different arms of one `if` (they then meet only in later iterations of
the loops outside that `if`):
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


def _apart(g, s) -> int | None:
    """How many of the shared loops lie outside an `if` that sends g and s down different arms (they
    then never run in one iteration of the loops inside it), or None if one run can reach both."""
    arms = {key: (arm, depth) for key, arm, depth in g.branch}
    depths = [depth for key, arm, depth in s.branch if key in arms and arms[key][0] != arm]
    return min(depths) if depths else None


def throwaway(an: Analyzer, g) -> bool:
    """A gradient whose optimizer step updates only objects deleted later and never used for scoring
    after it: a compile warm-up on a throw-away copy or adapter, not training on validation."""
    owners = an.grad_owners.get(g.pos)
    if not owners or not owners <= an.deleted:
        return False
    # a score in a loop shared with g may come in the next iteration, after the step
    return not any(
        e.kind == "score" and (e.pos > g.pos or _shared(e.loops, g.loops)) and e.refs & owners
        for e in an.events
    )


def judge(an: Analyzer, events: list) -> tuple[list[dict], str | None]:
    """Pair every validation gradient with every validation score; name each violating pattern."""
    grads = [e for e in events if e.kind == "grad" and not throwaway(an, e)]
    scores = [e for e in events if e.kind == "score"]
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
            apart = _apart(g, s)
            if apart is not None:  # alternatives: only later iterations of loops outside the `if` meet
                shared = shared[:apart]
            if g.pos < s.pos and apart is None:  # in one iteration, the gradient comes first
                both_vary = [L for L in shared if ("iter", L) in g.data and ("iter", L) in s.data]
                earlier = [
                    s1
                    for s1 in scores
                    if s1.pos < g.pos
                    and len(_shared(s1.loops, g.loops)) > len(shared)
                    and _apart(s1, g) is None
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


def _runs(events: list, flipped: str | None) -> list:
    """The events of the default run (flipped=None), or of the run with one environment switch flipped."""
    return [e for e in events if all((arm == default) != (name == flipped) for name, default, arm in e.conds)]


def _flip(name: str, default, line: int) -> str:
    """How to spell the flipped switch for a reader: TTT_ENABLED=1, or the test it flips."""
    if str(default) in ("0", "1"):
        return f"{name}={1 - int(default)}"
    if default is None:
        return f"{name} set"
    return f"{name} changed from {default!r} (the test at line {line} flipped)"


def verdict_of(an: Analyzer, events: list, hidden: list[str]) -> tuple[str, list[dict], str]:
    """(verdict, findings, reason) for one run (the events it reaches)."""
    findings, first = judge(an, events)
    reasons = list(hidden) + [r for r in an.reasons if r not in hidden]
    scores = [e for e in events if e.kind == "score"]
    grads = [e for e in events if e.kind == "grad" and not throwaway(an, e)]
    if findings:
        return "illegal", findings, first
    if reasons:
        return "unknown", findings, "; ".join(reasons)
    if not an.val_lines:
        return "unknown", findings, "no validation data identified (no literal naming validation shards)"
    if not scores:
        why = "no scoring pass over validation data found (no no_grad/inference_mode model call on it)"
        return "unknown", findings, why
    passes = len({e.pass_id for e in scores})
    how = (
        "gradient steps on validation tokens only after they are scored (score-first)"
        if grads
        else "no gradient steps on validation tokens"
    )
    warmups = len([e for e in events if e.kind == "grad" and throwaway(an, e)])
    if warmups:
        how += f" ({warmups} warm-up step(s) on throw-away copies ignored)"
    return (
        "legal",
        findings,
        f"validation data named at line {min(an.val_lines)}; {passes} scoring pass(es) found; {how}",
    )


def analyse(tree: ast.Module, hidden: list[str]) -> dict:
    """Verdict for one parsed (and unwrapped) script; `hidden` lists reasons from unwrapping.

    The verdict is the default run's (what the file does as submitted, environment switches at their
    literal defaults); `switches` says what flipping each switch that gates scoring or gradient code
    changes, and the reason names it: "legal by default; illegal with TTT_ENABLED=1 (...)".
    """
    an = Analyzer(tree)
    an.run()
    default_run = _runs(an.events, None)
    verdict, findings, reason = verdict_of(an, default_run, hidden)
    switches, notes = {}, []
    for name in sorted({name for e in an.events for name, _, _ in e.conds} | set(an.unfollowed)):
        run = _runs(an.events, name)
        if not any(e.kind == "score" for e in run) and name not in an.unfollowed:
            continue  # flipped, the script scores nothing (`if WORLD_SIZE <= 0: raise`): not a TTT switch
        flipped, _, flipped_reason = verdict_of(an, run, hidden)
        if name in an.unfollowed and flipped != "illegal":
            flipped = "unknown"
            flipped_reason = (
                f"line {an.unfollowed[name]} hands on validation data instead when it is flipped; "
                "the flipped run is not followed past it"
            )
        spelled = _flip(name, *an.switches.get(name, (None, 0)))
        switches[spelled] = flipped
        if flipped != verdict:
            shown = flipped == "illegal" or name in an.unfollowed
            notes.append(f"{flipped} with {spelled}" + (f" ({flipped_reason})" if shown else ""))
    if notes:
        reason = f"{verdict} by default ({reason}); " + "; ".join(notes)
    return {"verdict": verdict, "findings": findings, "reason": reason, "switches": switches}
