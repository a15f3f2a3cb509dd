"""Stage 1: answer, then R rounds of critique and revision; the last good revision is the target.

Work is batched across prompts (every step of a chunk is one batched call), records are appended
per chunk, and a rerun skips ids already written. Bad critiques and revisions are flagged, never
silently kept: a revision flagged empty, degenerate or meta is not accepted, and the answer
carried into the next round stays the last accepted one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from . import prompts as P
from .constitution import Constitution
from .data import DataError, JsonlAppender, file_sha256, load_prompts, read_jsonl
from .locks import writes_to
from .manifest import check_resume, ids_digest, read_manifest, write_manifest
from .stats import proportion_ci
from .generation import Generator, SamplingParams
from .text_checks import GATES, REJECTING, clean_revision, flag_text, is_refusal, quality_gates

def example_texts(constitution: Constitution) -> list[str]:
    """Every worked example's text (response, critique, revision): what a revision must not copy."""
    return [t for e in constitution.few_shot for t in (e.response, e.critique, e.revision) if t]


def round_temperature(r: int, rounds: int, schedule: tuple[float, float]) -> float:
    """Linear from schedule[0] in the first round to schedule[1] in the last.

    >>> [round_temperature(r, 3, (0.9, 0.4)) for r in range(3)]
    [0.9, 0.65, 0.4]
    """
    start, end = schedule
    return start if rounds == 1 else round(start + (end - start) * r / (rounds - 1), 4)


@dataclass(frozen=True)
class CritiqueSettings:
    rounds: int = 1
    few_shot: int = 1
    max_new_tokens: int = 64
    critique_max_new_tokens: int = 48
    answer_temperature: float = 0.7
    top_p: float = 0.92
    round_temperatures: tuple[float, float] = (0.0, 0.0)
    seed: int = 0
    # "critique-revise": critique, then revise given the critique (the paper);
    # "direct": revise against the principle without a written critique.
    prompt_format: str = "critique-revise"


def critique_revise(items: list[dict], constitution: Constitution, answerer: Generator,
                    critic: Generator, settings: CritiqueSettings) -> list[dict]:
    """Run stage 1 on a chunk of prompt records, all steps batched; returns one record each."""
    s = settings
    keys = [item["id"] for item in items]
    convs = [item["messages"] for item in items]
    answer_params = SamplingParams(s.max_new_tokens, s.answer_temperature, s.top_p, seed=s.seed)
    answers = answerer.chat(convs, answer_params, keys, desc="answers")
    current = [a.text for a in answers]
    rounds = [[] for _ in items]
    flags = [["answer_truncated"] if not a.finished else [] for a in answers]
    examples = example_texts(constitution)
    for r in range(s.rounds):
        temp = round_temperature(r, s.rounds, s.round_temperatures)
        principles = [constitution.sample_principle(f"{k}:{r}", s.seed) for k in keys]
        if s.prompt_format == "direct":
            critiques = [None] * len(items)
        else:
            crit_in = [P.critique_messages(constitution, p, c, cur, s.few_shot)
                       for p, c, cur in zip(principles, convs, current)]
            crit_params = SamplingParams(s.critique_max_new_tokens, temp, s.top_p,
                                         seed=s.seed + r + 1)
            critiques = critic.chat(crit_in, crit_params, [f"{k}:c{r}" for k in keys],
                                    desc=f"critiques {r + 1}/{s.rounds}")
        rev_in = [P.revision_messages(constitution, p, c, cur, cr and cr.text, s.few_shot)
                  for p, c, cur, cr in zip(principles, convs, current, critiques)]
        rev_params = SamplingParams(s.max_new_tokens, temp, s.top_p, seed=s.seed + r + 101)
        revisions = critic.chat(rev_in, rev_params, [f"{k}:r{r}" for k in keys],
                                desc=f"revisions {r + 1}/{s.rounds}")
        for i, (p, cr, rv) in enumerate(zip(principles, critiques, revisions)):
            revision = clean_revision(rv.text)
            round_flags = ([] if cr is None else flag_text(cr.text, current[i], cr.finished, "critique"))
            round_flags += flag_text(revision, current[i], rv.finished, "revision")
            if revision.strip():
                round_flags += quality_gates(revision, convs[i], examples)
            accepted = not any(f in REJECTING for f in round_flags)
            rounds[i].append({"principle_id": p.id, "temperature": temp,
                              "critique": None if cr is None else cr.text,
                              "revision": revision, "raw_revision": rv.text,
                              "accepted": accepted, "flags": round_flags})
            flags[i] += [f for f in round_flags if f not in flags[i]]
            if accepted:
                current[i] = revision
    records = []
    for item, answer, final, item_rounds, item_flags in zip(items, answers, current, rounds, flags):
        if not any(r["accepted"] for r in item_rounds):
            item_flags.append("unrevised")
        extra = {k: v for k, v in item.items() if k not in ("id", "messages")}
        completion = [{"role": "assistant", "content": final}]
        records.append({
            "id": item["id"], **extra,
            "prompt": item["messages"], "completion": completion,
            "messages": item["messages"] + completion,
            "initial_response": answer.text, "rounds": item_rounds, "flags": item_flags,
        })
    return records


def quality(records: list[dict]) -> dict:
    """How capable the critic was: declines on red-team prompts, helpful answers kept helpful,
    answers changed, records flagged (other than for running out of tokens), revisions never
    accepted; shares with 95% Wilson intervals."""
    def share(hits, n):
        if n == 0:
            return {"share": None, "ci95": None, "n": 0}
        p, lo, hi = proportion_ci(hits, n)
        return {"share": round(p, 4), "ci95": [round(lo, 4), round(hi, 4)], "n": n}

    final = lambda r: r["completion"][-1]["content"]  # noqa: E731
    red = [r for r in records if r.get("set") == "red_team"]
    helpful = [r for r in records if r.get("set") == "helpful"]
    return {
        "red_team_initial_declines": share(sum(is_refusal(r["initial_response"]) for r in red), len(red)),
        "red_team_revision_declines": share(sum(is_refusal(final(r)) for r in red), len(red)),
        "helpful_revisions_stay_helpful": share(
            sum(not is_refusal(final(r)) and "unrevised" not in r["flags"] for r in helpful),
            len(helpful)),
        "changed": share(sum(final(r) != r["initial_response"] for r in records), len(records)),
        "flagged": share(sum(any(not f.endswith("_truncated") for f in r["flags"])
                             for r in records), len(records)),
        "truncated": share(sum(any(f.endswith("_truncated") for f in r["flags"])
                               for r in records), len(records)),
        "unrevised": share(sum("unrevised" in r["flags"] for r in records), len(records)),
        # each quality gate: the share of revisions (all rounds) it rejected
        "gates": gate_shares(records),
    }


def gate_shares(records: list[dict]) -> dict:
    """Per gate, the share of revisions it caught, over every round of every record, with
    the number of revisions; plus the share accepted.

    >>> recs = [{"rounds": [{"flags": ["revision_copied"], "accepted": False}]},
    ...         {"rounds": [{"flags": [], "accepted": True}]}]
    >>> gate_shares(recs)["revision_copied"], gate_shares(recs)["accepted"]
    (0.5, 0.5)
    """
    rounds = [r for rec in records for r in rec.get("rounds", [])]
    n = len(rounds)
    out = {gate: round(sum(gate in r["flags"] for r in rounds) / n, 4) if n else None
           for gate in GATES}
    out["accepted"] = round(sum(r["accepted"] for r in rounds) / n, 4) if n else None
    out["n_revisions"] = n
    return out


@writes_to("out")
def run_critique(constitution, prompts: str | Path | list, out: str | Path,
                 model: str | None = None, critic_model: str | None = None,
                 profile: str | None = None, rounds: int | None = None,
                 limit: int | list[int] | None = None,
                 batch_size: int | None = None, max_new_tokens: int | None = None,
                 seed: int = 0, models: dict | None = None, items: list[dict] | None = None) -> str:
    """Files to files: the CLI's and the pipeline's stage 1. Resumes an interrupted run.

    ``limit`` caps the prompts taken from each file (one number, or one per file); ``items``
    gives the prompt records directly (already picked from ``prompts``, which are then only
    recorded with their hashes). ``models`` may map model names to already loaded
    ``(model, tokenizer)`` pairs (notebooks). With ``$CAI_GENERATION_SERVER`` set, the other models
    that the server lists answer there (``serving.py``). Returns a one-line summary.
    """
    from . import constitution as cons
    from .generation import HFGenerator
    from .models import load_for_inference
    from .profiles import get_profile
    from .serving import engines_for

    prof = get_profile(profile)
    const = cons.as_constitution(constitution)
    prompt_files = [Path(p) for p in (prompts if isinstance(prompts, (list, tuple)) else [prompts])]
    limits = limit if isinstance(limit, (list, tuple)) else [limit] * len(prompt_files)
    if len(limits) != len(prompt_files):
        raise DataError(f"{len(limits)} limits for {len(prompt_files)} prompt files")
    if items is None:
        items = [item for path, n in zip(prompt_files, limits) for item in load_prompts(path, n)]
    out = Path(out)
    model = model or prof.policy_model
    if critic_model is None:  # the profile's critic goes with the profile's policy
        critic_model = prof.model_for("critic") if model == prof.policy_model else model
    settings = CritiqueSettings(
        rounds=rounds if rounds is not None else prof.rounds, few_shot=prof.few_shot,
        max_new_tokens=max_new_tokens or prof.max_new_tokens,
        critique_max_new_tokens=prof.critique_max_new_tokens,
        answer_temperature=prof.answer_temperature, top_p=prof.top_p,
        round_temperatures=prof.round_temperatures, seed=seed, prompt_format=prof.prompt_format)
    provenance = json.loads(json.dumps({"constitution": const.ref, "model": model,
                                        "critic_model": critic_model, "generation": asdict(settings)}))
    check_resume(out, provenance)

    writer = JsonlAppender(out)
    todo = [item for item in items if item["id"] not in writer.done_ids]
    used = (read_manifest(out) or {}).get("engines", {})  # which engines wrote earlier records
    loaded = dict(models or {})
    served, line = engines_for([n for n in (model, critic_model) if n not in loaded]) if todo else ({}, "")
    for name in (model, critic_model) if todo else ():  # $CAI_GENERATION_SERVER's models, if set
        where = served[name].url if name in served else "transformers"
        used[name] = sorted({*used.get(name, []), where})
    write_manifest(out, complete=False, profile=prof.name, **provenance, engines=used,
                   inputs={str(p): file_sha256(p) for p in prompt_files + ([Path(const.path)] if const.path else [])})
    batch = batch_size or prof.batch_size
    step = max(batch, 64) if served else batch  # a server batches many requests at once
    start = time.perf_counter()
    if todo:
        if line:
            print(line)
        for name in {model, critic_model} - loaded.keys() - served.keys():
            loaded[name] = load_for_inference(name, prof)
        engine = lambda name: served.get(name) or HFGenerator(*loaded[name], batch_size=batch)  # noqa: E731
        answerer = engine(model)
        critic = answerer if critic_model == model else engine(critic_model)
        with writer, tqdm(total=len(items), initial=len(items) - len(todo), desc="stage 1",
                          unit="prompt") as bar:
            for at in range(0, len(todo), step):
                chunk = critique_revise(todo[at:at + step], const, answerer, critic, settings)
                writer.write({**r, **provenance} for r in chunk)
                bar.update(len(chunk))
    records = read_jsonl(out)
    wanted = {item["id"] for item in items}
    done = [r for r in records if r["id"] in wanted]
    stats = quality(done)
    write_manifest(out, complete=len(done) == len(items), profile=prof.name, **provenance,
                   prompts=ids_digest(items),
                   inputs={str(p): file_sha256(p) for p in prompt_files + ([Path(const.path)] if const.path else [])},
                   counts={"records": len(records), "requested": len(items),
                           "written_this_run": len(todo)},
                   seconds=round(time.perf_counter() - start, 1), quality=stats, engines=used)
    pct = lambda key: "n/a" if stats[key]["share"] is None else f"{stats[key]['share']:.0%}"  # noqa: E731
    return (f"{out}: {len(done)}/{len(items)} records ({len(todo)} new); red-team declines "
            f"{pct('red_team_initial_declines')} -> {pct('red_team_revision_declines')}, "
            f"helpful kept helpful {pct('helpful_revisions_stay_helpful')}, "
            f"changed {pct('changed')}, flagged {pct('flagged')}; gates: "
            + gate_summary(stats["gates"]))


def gate_summary(gates: dict) -> str:
    """One line: what each gate caught and what was accepted.

    >>> gate_summary({"revision_copied": 0.25, "revision_off_topic": 0.5,
    ...               "revision_commentary": 0.0, "accepted": 0.5, "n_revisions": 4})
    'copied 25%, off-topic 50%, commentary 0%, accepted 50% of 4 revisions'
    """
    if not gates.get("n_revisions"):
        return "no revisions"
    return (f"copied {gates['revision_copied']:.0%}, off-topic {gates['revision_off_topic']:.0%}, "
            f"commentary {gates['revision_commentary']:.0%}, accepted {gates['accepted']:.0%} "
            f"of {gates['n_revisions']} revisions")


def arm_summary(records: list[dict], constitution: Constitution) -> dict:
    """One critic arm's stage-1 data measured with one yardstick, for setting arms side by
    side: every round's revision put through the quality gates again (whoever wrote it), the
    share of red-team records whose final answer declines, and the distinct-2 of the red-team
    revisions that were kept (one template copied everywhere falls towards 0).
    """
    from .text_checks import distinct_n

    examples = example_texts(constitution)
    red = [r for r in records if r.get("set") == "red_team"]
    revisions = [(rec, rnd["revision"]) for rec in records for rnd in rec.get("rounds", [])
                 if (rnd.get("revision") or "").strip()]
    caught = {gate: 0 for gate in GATES}
    for rec, text in revisions:
        for flag in quality_gates(text, rec["prompt"], examples):
            caught[flag] += 1
    n = len(revisions)
    kept = [r["completion"][-1]["content"] for r in red
            if r["completion"][-1]["content"] != r["initial_response"]]
    declines = proportion_ci(sum(is_refusal(r["completion"][-1]["content"]) for r in red), len(red))
    return {"critic": sorted({str(r.get("critic_model")) for r in records}),
            "records": len(records), "red_team": len(red), "revisions": n,
            "gates": {gate: (round(c / n, 4) if n else None) for gate, c in caught.items()},
            "passed_gates": (round(sum(not quality_gates(t, rec["prompt"], examples)
                                       for rec, t in revisions) / n, 4) if n else None),
            "red_team_revised": len(kept),
            "red_team_final_declines": {"share": round(declines[0], 4) if red else None,
                                        "ci95": [round(declines[1], 4), round(declines[2], 4)] if red else None},
            "distinct_2_revisions": round(distinct_n(kept, 2), 4)}
