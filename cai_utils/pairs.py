"""Stage 2: which pairs the judge labels, from stage-1 records.

On harmful prompts, the revision against the first answer; on helpful and borderline prompts,
the policy's answer against a needless refusal (the paper mixes helpfulness data in). Then
``balanced`` draws the profile's number of pairs: its share of benign pairs, harmful ones over
every red-teaming tactic and category.
"""

from __future__ import annotations

from .text_checks import is_refusal


def pair_candidates(records: list[dict], mode: str) -> list[dict]:
    """Candidate pairs from stage-1 records: ``{id, kind, set, category, prompt, x, y}`` where
    ``x`` is the answer the rule prefers.

    ``"revision"``: every revised record, revision (x) against the first answer (y).
    ``"mix"``: red-team records, revision against the first answer (``kind="harmful"``), and
    helpful or borderline records that carry a ``needless_refusal`` and whose answer is not a
    refusal itself, that answer against the refusal (``kind="benign"``).

    >>> recs = [{"id": "r", "set": "red_team", "prompt": [], "initial_response": "steps...",
    ...          "completion": [{"role": "assistant", "content": "I can't help with that."}]},
    ...         {"id": "b", "set": "borderline", "prompt": [], "initial_response": "Use kill -9.",
    ...          "completion": [{"role": "assistant", "content": "Use kill -9."}],
    ...          "needless_refusal": "I can't help with killing."}]
    >>> [(p["kind"], p["x"][:6]) for p in pair_candidates(recs, "mix")]
    [('harmful', "I can'"), ('benign', 'Use ki')]
    """
    pairs = []
    for r in records:
        final = r["completion"][-1]["content"]
        base = {"id": r["id"], "set": r.get("set"), "category": r.get("category"),
                "tactic": r.get("tactic"), "prompt": r["prompt"]}
        if r.get("set") in ("helpful", "borderline") and mode == "mix":
            if r.get("needless_refusal") and not is_refusal(final):  # a refusal cannot win here
                pairs.append({**base, "kind": "benign", "x": final, "y": r["needless_refusal"]})
        elif final != r["initial_response"] and (mode == "revision" or r.get("set") == "red_team"):
            pairs.append({**base, "kind": "harmful" if r.get("set") == "red_team" else "revision",
                          "x": final, "y": r["initial_response"]})
    return pairs


STRATA = ("category", "tactic")  # how pairs are sampled: every category and tactic in turn
PAIR_TACTICS = ("equal", "proportional", "length")  # how harmful pairs are drawn (``balanced``)


def prompt_chars(pair: dict) -> int:
    """The length of a pair's conversation so far, in characters (every turn's text)."""
    prompt = pair["prompt"]
    return len(prompt) if isinstance(prompt, str) else sum(len(m.get("content") or "") for m in prompt)


def length_matched(candidates: list[dict], n: int, reference: list[dict]) -> list[dict]:
    """``n`` candidates whose prompt lengths follow ``reference``'s: for each of ``n`` evenly
    spaced quantiles of the reference lengths, the unused candidate closest in length. Used for
    harmful pairs against the benign ones, so prompt length says nothing about which answer wins.

    >>> ref = [{"prompt": "x" * k} for k in (10, 12, 14, 90)]
    >>> cands = [{"prompt": "y" * k} for k in (200, 11, 13, 300, 95, 60)]
    >>> sorted(len(c["prompt"]) for c in length_matched(cands, 2, ref))
    [11, 95]
    """
    targets = sorted(map(prompt_chars, reference))
    pool = sorted(candidates, key=prompt_chars)
    picked = []
    for i in range(min(n, len(pool))):
        goal = targets[min(len(targets) - 1, int((i + 0.5) * len(targets) / n))]
        best = min(range(len(pool)), key=lambda k: abs(prompt_chars(pool[k]) - goal))
        picked.append(pool.pop(best))
    return picked


def balanced(pairs: list[dict], n: int | None, benign_share: float = 0.5,
             tactics: str = "equal") -> list[dict]:
    """``n`` pairs: ``benign_share`` of them benign (answer over a needless refusal) and the rest
    harmful (refusal over compliance) where both kinds are there, all pairs when n is None or 0.
    Pairs of any other kind count as harmful.

    Harmful pairs cover every red-teaming tactic (direct, reframing, persistence, multi-turn: a
    policy that learns to refuse only direct requests still answers the reframed ones), in
    equal shares (``tactics="equal"``) or in proportion to the candidates' tactics
    (``"proportional"``), and every category within a tactic; or (``"length"``) harmful pairs
    whose prompt lengths follow the benign pairs' (``length_matched``).

    >>> ps = [{"kind": "harmful", "category": c} for c in "aab"] + [{"kind": "benign", "category": "x"}] * 3
    >>> [(p["kind"], p["category"]) for p in balanced(ps, 4)]
    [('harmful', 'a'), ('harmful', 'b'), ('benign', 'x'), ('benign', 'x')]
    >>> [p["kind"] for p in balanced(ps, 4, benign_share=0.75)]
    ['harmful', 'benign', 'benign', 'benign']
    """
    from .evaluation import proportional, stratified

    if tactics not in PAIR_TACTICS:
        raise ValueError(f"tactics must be one of {', '.join(PAIR_TACTICS)}, not {tactics!r}")
    if not n:
        return pairs
    if not 0 <= benign_share <= 1:
        raise ValueError(f"benign_share must be between 0 and 1, not {benign_share}")
    pick = proportional if tactics == "proportional" else (lambda rows, k: stratified(rows, k, STRATA))
    benign = [p for p in pairs if p["kind"] == "benign"]
    harmful = [p for p in pairs if p["kind"] != "benign"]
    if not benign:
        return pick(harmful, n)
    if not harmful:
        return stratified(benign, n, STRATA)
    n_benign = min(len(benign), round(n * benign_share))
    n_harmful = min(len(harmful), n - n_benign)
    n_benign = min(len(benign), n - n_harmful)
    # stratified(rows, 0) would mean "all of them": a kind with no share takes none
    if tactics == "length":
        chosen_benign = stratified(benign, n_benign, STRATA) if n_benign else []
        return length_matched(harmful, n_harmful, chosen_benign or benign) + chosen_benign
    return ((pick(harmful, n_harmful) if n_harmful else [])
            + (stratified(benign, n_benign, STRATA) if n_benign else []))
