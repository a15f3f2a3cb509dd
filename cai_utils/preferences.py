"""Stage 2, RLAIF: preference pairs labelled by the constitutional judge (``judge.py``).

Pairs come from stage 1 (``candidates="mix"``: the revision against the first answer on
harmful prompts, and the policy's answer against a needless refusal on benign ones, as the paper
mixes helpfulness data in; ``"revision"``: the first kind only) or from two policy samples
(``"samples"``). The judge labels every pair in both orders; the rule label (the pair's
construction) is recorded beside it with their agreement, and the profile's ``label_source``
says which one trains DPO and the reward model.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from .constitution import Constitution, Principle
from .text_checks import is_refusal
from .locks import writes_to
from .judge import LogProbJudge, Verdict, judge_pairs


def principles_for(constitution: Constitution, key: str, mode: str, seed: int = 0,
                   kind: str | None = None, category: str | None = None) -> list[Principle]:
    """The principle(s) the judge asks about a pair: one sampled from the key (the paper), or
    every one (``mode="all"``). With ``kind`` (a pair from the mix) the pool is the principles
    that fit it: a harmful pair is judged on its harm category's principles, a benign pair on
    the helpfulness principles (those of category ``helpfulness``)."""
    from .evaluation import helpfulness_principle, principles_for_category

    if mode not in ("sampled", "all"):
        raise ValueError(f"unknown judge mode {mode!r}: use sampled or all")
    if kind is None:
        pool = list(constitution.principles)
    elif kind == "harmful":
        pool = principles_for_category(constitution, category)
    else:
        pool = ([p for p in constitution.principles if p.category == "helpfulness"]
                or [helpfulness_principle()])
    if mode == "all":
        return pool
    if kind is None:
        return [constitution.sample_principle(f"judge:{key}", seed)]
    from .generation import item_seed

    return [pool[item_seed(seed, f"judge:{key}") % len(pool)]]


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


def preference_record(item_id: str, conversation: list, x: str, y: str, verdict: Verdict,
                      label_source: str, threshold: float, rule: bool = True) -> tuple[dict, bool]:
    """A record in TRL's explicit, conversational preference format, and whether it is a tie.

    ``x`` is the answer the rule prefers (the revision, the helpful answer) when ``rule`` is
    True; samples have no rule. With ``label_source="judge"`` the judge's favourite is chosen
    (a tie when closer to 0.5 than ``threshold``); with ``"rule"`` x is chosen whatever the
    judge says. Both views are recorded.
    """
    if label_source not in ("judge", "rule"):
        raise ValueError(f"unknown label source {label_source!r}: use judge or rule")
    x_wins = verdict.p_first >= 0.5 if label_source == "judge" else True
    chosen, rejected = (x, y) if x_wins else (y, x)
    p_chosen = verdict.p_first if x_wins else 1 - verdict.p_first
    tie = label_source == "judge" and abs(verdict.p_first - 0.5) < threshold
    record = {
        "id": item_id,
        "prompt": conversation,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "judge": {
            "principle_ids": list(verdict.by_principle),
            "p_chosen": round(p_chosen, 4),
            "judge_agrees": p_chosen > 0.5,
            # the judge's P(the rule's answer wins), and whether it agrees with the rule
            "p_rule": round(verdict.p_first, 4) if rule else None,
            "agrees_with_rule": verdict.p_first > 0.5 if rule else None,
            # P(the chosen answer wins) when shown as option A, and when shown as option B
            "orders": {pid: ({"chosen_as_A": v["x_as_A"], "chosen_as_B": v["x_as_B"]} if x_wins
                             else {"chosen_as_A": round(1 - v["x_as_B"], 4),
                                   "chosen_as_B": round(1 - v["x_as_A"], 4)})
                       for pid, v in verdict.by_principle.items()},
            "position_consistent": verdict.position_consistent,
            "label_source": label_source,
            "tie": tie,
        },
    }
    return record, tie


def as_judge_labels(rows: list[dict]) -> list[dict]:
    """Stage-2 records relabelled by the judge's favourite: a pair whose chosen answer the judge
    gave less than half its probability is swapped, with ``p_chosen`` now the winner's. The
    judge's probabilities are unchanged, so soft labels are the same either way; only the hard
    (0/1) labels differ from the rule's.

    >>> row = {"chosen": "a", "rejected": "b", "judge": {"p_chosen": 0.3, "label_source": "rule"}}
    >>> r = as_judge_labels([row])[0]
    >>> (r["chosen"], r["rejected"], r["judge"]["p_chosen"], r["judge"]["label_source"])
    ('b', 'a', 0.7, 'judge')
    """
    out = []
    for row in rows:
        p = row["judge"]["p_chosen"]
        swap = p < 0.5
        out.append({**row, "chosen": row["rejected"] if swap else row["chosen"],
                    "rejected": row["chosen"] if swap else row["rejected"],
                    "judge": {**row["judge"], "p_chosen": round(1 - p, 4) if swap else p,
                              "label_source": "judge"}})
    return out


def label_stats(rows: list[dict], ties: list[dict]) -> dict:
    """Counts and shares over labelled pairs: position consistency, the judge's agreement with
    the rule labels (overall and per kind of pair), mean p(chosen)."""
    everything = rows + ties
    n = max(len(everything), 1)
    ruled = [r for r in everything if r["judge"].get("agrees_with_rule") is not None]
    by_kind = {}
    for r in ruled:
        by_kind.setdefault(r.get("kind", "pair"), []).append(r["judge"]["agrees_with_rule"])
    return {
        "pairs": len(rows), "ties": len(ties),
        "kinds": {k: sum(1 for r in rows if r.get("kind") == k) for k in sorted({r.get("kind") for r in rows} - {None})},
        "position_consistent": sum(r["judge"]["position_consistent"] for r in everything) / n,
        "judge_agrees_with_rule": (sum(r["judge"]["agrees_with_rule"] for r in ruled) / len(ruled)
                                   if ruled else None),
        "judge_agrees_with_rule_by_kind": {k: sum(v) / len(v) for k, v in by_kind.items()},
        "mean_p_chosen": sum(r["judge"]["p_chosen"] for r in everything) / n,
    }


@writes_to("out")
def run_label(constitution, prompts, out, model: str | None = None,
              judge_model: str | None = None, mode: str | None = None,
              candidates: str | None = None, profile: str | None = None,
              limit: int | None = None, batch_size: int | None = None, seed: int = 0,
              label_source: str | None = None, models: dict | None = None) -> str:
    """Files to files: stage 2. ``prompts`` is stage-1 records (``candidates="mix"`` or
    ``"revision"``, see ``pair_candidates``) or a prompt file (``"samples"``: two policy samples).

    ``limit`` (default: the profile's ``n_pairs``) caps the pairs, ``benign_pair_share`` of them benign.
    Writes ``out`` (training pairs), ``out``'s ``.ties.jsonl`` (pairs too close to call) and a
    manifest; resumes an interrupted run. Returns a one-line summary.
    """
    import json
    import time
    from pathlib import Path

    from . import constitution as cons
    from .course_critic import with_needless_refusals
    from .data import DataError, JsonlAppender, file_sha256, load_prompts, read_jsonl
    from .manifest import check_resume, write_manifest
    from .generation import HFGenerator, SamplingParams
    from .models import load_for_inference
    from .profiles import get_profile

    prof = get_profile(profile)
    const = cons.as_constitution(constitution)
    out, prompts = Path(out), Path(prompts)
    candidates = candidates or prof.candidate_mode
    mode = mode or prof.judge_mode
    source = label_source or prof.label_source
    model = model or prof.policy_model
    judge_model = judge_model or prof.model_for("judge")
    limit = prof.n_pairs if limit is None else limit
    if candidates in ("mix", "revision"):
        records = [r for r in read_jsonl(prompts) if "initial_response" in r]
        if not records:
            raise DataError(f"{prompts}: no stage-1 records (with 'initial_response'); "
                            "pass the critique output, or use --candidates samples")
        items = balanced(pair_candidates(with_needless_refusals(records), candidates), limit, prof.benign_pair_share,
                         prof.pair_tactics)
    elif candidates == "samples":
        items = load_prompts(prompts, limit or None)
        source = "judge"  # two samples have no rule
    else:
        raise DataError(f"unknown candidate mode {candidates!r}: use mix, revision or samples")
    ties_path = out.with_name(out.stem + ".ties.jsonl")
    provenance = json.loads(json.dumps({
        "constitution": const.ref, "model": model, "judge_model": judge_model,
        "candidates": candidates, "judge_mode": mode, "label_source": source,
        "tie_threshold": prof.tie_threshold, "seed": seed}))
    check_resume(out, provenance)
    writer, ties = JsonlAppender(out), JsonlAppender(ties_path)
    todo = [r for r in items if r["id"] not in writer.done_ids | ties.done_ids]
    inputs = {str(p): file_sha256(p) for p in [prompts] + ([Path(const.path)] if const.path else [])}
    write_manifest(out, complete=False, profile=prof.name, inputs=inputs, **provenance)
    loaded = dict(models or {})
    batch = batch_size or prof.batch_size
    start = time.perf_counter()
    if todo:
        needed = {judge_model} | ({model} if candidates == "samples" else set())
        for name in needed - loaded.keys():
            loaded[name] = load_for_inference(name, prof)
        judge = LogProbJudge(*loaded[judge_model], batch_size=batch)
        policy = HFGenerator(*loaded[model], batch_size=batch) if candidates == "samples" else None
        with writer, ties, tqdm(total=len(items), initial=len(items) - len(todo),
                                desc="stage 2", unit="pair") as bar:
            for at in range(0, len(todo), batch):
                chunk = todo[at:at + batch]
                if candidates == "samples":
                    params = SamplingParams(prof.max_new_tokens, prof.candidate_temperature,
                                            prof.top_p, seed=seed)
                    convs = [r["messages"] for r in chunk]
                    xs = policy.chat(convs, params, [f"{r['id']}:x" for r in chunk], "candidates x")
                    ys = policy.chat(convs, params, [f"{r['id']}:y" for r in chunk], "candidates y")
                    pairs = [(c, x.text, y.text) for c, x, y in zip(convs, xs, ys)]
                else:
                    pairs = [(r["prompt"], r["x"], r["y"]) for r in chunk]
                verdicts = judge_pairs(judge, pairs, [
                    principles_for(const, r["id"], mode, seed, r.get("kind"), r.get("category"))
                    for r in chunk])
                kept, tied = [], []
                for r, (conv, x, y), v in zip(chunk, pairs, verdicts):
                    record, tie = preference_record(r["id"], conv, x, y, v, source,
                                                    prof.tie_threshold, rule=candidates != "samples")
                    extra = ({k: r[k] for k in ("set", "category", "kind") if k in r}
                             | ({"tactic": r["tactic"]} if r.get("tactic") else {}))
                    (tied if tie else kept).append({**record, **extra, **provenance})
                writer.write(kept)
                ties.write(tied)
                bar.update(len(chunk))
    done = {r["id"] for r in items}
    # every pair may have been a tie (a judge near 0.5 under a tie threshold): no file then
    rows = [r for r in read_jsonl(out) if r["id"] in done] if out.exists() else []
    tie_rows = [r for r in read_jsonl(ties_path) if r["id"] in done] if ties_path.exists() else []
    stats = label_stats(rows, tie_rows)
    write_manifest(out, complete=len(rows) + len(tie_rows) == len(items), profile=prof.name,
                   inputs=inputs, **provenance,
                   counts={"requested": len(items), "written_this_run": len(todo), **stats},
                   seconds=round(time.perf_counter() - start, 1))
    agree = stats["judge_agrees_with_rule"]
    kinds = ", ".join(f"{n} {k}" for k, n in stats["kinds"].items())
    return (f"{out}: {len(rows)} pairs ({kinds or 'no kinds'}), {len(tie_rows)} ties ({len(todo)} new); "
            + (f"the judge agrees with the rule labels on {agree:.0%} ("
               + ", ".join(f"{k} {v:.0%}" for k, v in stats["judge_agrees_with_rule_by_kind"].items())
               + "); " if agree is not None else "")
            + f"position-consistent {stats['position_consistent']:.0%}; "
            f"DPO and the reward model train on the {source} labels")
