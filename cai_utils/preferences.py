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
from .locks import writes_to
from .judge import LogProbJudge, Verdict, judge_pairs
from .pairs import balanced, pair_candidates


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
        "tie_threshold": prof.tie_threshold, "seed": seed, "n_pairs": limit,
        "benign_pair_share": prof.benign_pair_share, "pair_tactics": prof.pair_tactics,
        "source_sha256": file_sha256(prompts)}))  # pairs from another stage-1 file are refused
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
