"""Stage 2, RLAIF: a constitutional judge reads A/B from next-token log-probabilities.

The judge sees a principle's preference question, the conversation and two options, then
"The answer is: (" and one forward pass gives P(A) and P(B); no text is generated. Every pair
is judged in both orders and averaged, which cancels position bias; the record keeps both
orders and whether they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from . import prompts as P
from .constitution import Constitution, Principle
from .evaluation import proportion_ci


def option_token_ids(tokenizer, prefix: str, options: str = "AB") -> list[int]:
    """Token ids of each option (a letter or digit) as it follows the answer prefix.

    >>> from cai_utils.models import load_tokenizer
    >>> len(option_token_ids(load_tokenizer(), "Rating: ", "12345"))
    5
    """
    base = tokenizer.encode(prefix, add_special_tokens=False)
    ids = []
    for option in options:
        full = tokenizer.encode(prefix + option, add_special_tokens=False)
        if full[:-1] != base:
            raise ValueError(f"the tokenizer merges {option!r} into the answer prefix "
                             f"{prefix!r}; use a judge model whose tokenizer keeps them apart")
        ids.append(full[-1])
    return ids


def option_probs(model, tokenizer, texts: list[str], ids: list[int], batch_size: int = 8,
                 progress: bool = True, desc: str = "judging") -> list[list[float]]:
    """For each text, the next-token probabilities of the option tokens, normalised over them.

    One forward pass per batch, shortest texts together, only the last position's logits.
    Returns one list per text, in input order.
    """
    import torch

    tokenizer.padding_side = "left"
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs: list[list[float]] = [[] for _ in texts]
    device = next(model.parameters()).device
    with tqdm(total=len(texts), desc=desc, unit="question", disable=not progress,
              leave=False) as bar:
        for at in range(0, len(order), batch_size):
            batch = order[at:at + batch_size]
            enc = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            with torch.inference_mode():
                # only the last position: full-vocabulary logits everywhere cost more than the model
                logits = model(**enc, logits_to_keep=1).logits[:, -1, :].float()
            chosen = torch.log_softmax(logits[:, list(ids)], dim=-1).exp()
            for i, row in zip(batch, chosen.tolist()):
                probs[i] = row
            bar.update(len(batch))
    return probs


class LogProbJudge:
    """``prob_first(...)`` -> P(option A) normalised over {A, B}, batched forward passes."""

    def __init__(self, model, tokenizer, batch_size: int = 8, progress: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.progress = batch_size, progress
        self.tokenizer.padding_side = "left"
        self.ids = tuple(option_token_ids(tokenizer, P.JUDGE_ANSWER_PREFIX))

    def render(self, principle: Principle, conversation, option_a: str, option_b: str) -> str:
        messages = P.judge_messages(principle, conversation, option_a, option_b)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        return text + P.JUDGE_ANSWER_PREFIX

    def prob_first(self, questions: list[tuple[Principle, list, str, str]],
                   desc: str = "judging") -> list[float]:
        """P(A) for each ``(principle, conversation, option_a, option_b)``, in input order."""
        texts = [self.render(*q) for q in questions]
        return [p[0] for p in option_probs(self.model, self.tokenizer, texts, list(self.ids),
                                           self.batch_size, self.progress, desc)]


@dataclass(frozen=True)
class Verdict:
    """The judge on one pair (x, y): the probability that x is better, under each principle."""

    p_first: float  # P(x better), averaged over both orders and over principles
    by_principle: dict  # principle id -> {"x_as_A": P(A), "x_as_B": 1 - P(A) in swapped order}
    position_consistent: bool  # every principle's two orders agree on the winner


def judge_pairs(judge: LogProbJudge, pairs: list[tuple[list, str, str]],
                principle_sets: list[list[Principle]]) -> list[Verdict]:
    """Judge each ``(conversation, x, y)`` under its principles, in both orders, batched."""
    questions, index = [], []
    for n, ((conversation, x, y), principles) in enumerate(zip(pairs, principle_sets)):
        for principle in principles:
            questions += [(principle, conversation, x, y), (principle, conversation, y, x)]
            index.append((n, principle.id))
    probs = judge.prob_first(questions)
    per_pair: list[dict] = [{} for _ in pairs]
    for k, (n, pid) in enumerate(index):
        x_as_a, y_as_a = probs[2 * k], probs[2 * k + 1]
        per_pair[n][pid] = {"x_as_A": round(x_as_a, 4), "x_as_B": round(1 - y_as_a, 4)}
    verdicts = []
    for by in per_pair:
        means = [(v["x_as_A"] + v["x_as_B"]) / 2 for v in by.values()]
        consistent = all((v["x_as_A"] > 0.5) == (v["x_as_B"] > 0.5) for v in by.values())
        verdicts.append(Verdict(round(sum(means) / len(means), 4), by, consistent))
    return verdicts


def principles_for(constitution: Constitution, key: str, mode: str, seed: int = 0) -> list[Principle]:
    """One principle sampled from the key (the paper), or every principle (``mode="all"``)."""
    if mode == "all":
        return list(constitution.principles)
    if mode == "sampled":
        return [constitution.sample_principle(f"judge:{key}", seed)]
    raise ValueError(f"unknown judge mode {mode!r}: use sampled or all")


def preference_record(item_id: str, conversation: list, x: str, y: str, verdict: Verdict,
                      label_source: str, threshold: float) -> tuple[dict, bool]:
    """A record in TRL's explicit, conversational preference format, and whether it is a tie.

    With ``label_source="judge"`` the judge's favourite is chosen; with ``"construction"`` x
    (say, a revision) is chosen whatever the judge says, and the judge's view is recorded.
    """
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


def agreement(verdicts: list[Verdict]) -> dict:
    """How often the judge prefers the first option (the hand label's choice), with a 95%
    interval, and how often its verdict flips with the order."""
    n = len(verdicts)
    right = sum(v.p_first > 0.5 for v in verdicts)
    flips = sum(not v.position_consistent for v in verdicts)
    share, low, high = proportion_ci(right, n)
    flip, flow, fhigh = proportion_ci(flips, n)
    return {"n": n, "agreement": share, "ci95": [low, high], "flip_rate": flip,
            "flip_ci95": [flow, fhigh],
            "mean_margin": sum(abs(v.p_first - 0.5) for v in verdicts) / max(n, 1)}


def run_label(constitution, prompts, out, model: str | None = None,
              judge_model: str | None = None, mode: str | None = None,
              candidates: str | None = None, profile: str | None = None,
              limit: int | None = None, batch_size: int | None = None, seed: int = 0,
              models: dict | None = None) -> str:
    """Files to files: stage 2. ``prompts`` is a prompt file (``candidates="samples"``) or
    stage-1 records (``"revision"``: the first answer against the final revision).

    Writes ``out`` (training pairs), ``out``'s ``.ties.jsonl`` (pairs too close to call) and a
    manifest; resumes an interrupted run. Returns a one-line summary.
    """
    import json
    import time
    from pathlib import Path

    from . import constitution as cons
    from .data import (DataError, JsonlAppender, check_resume, file_sha256, load_prompts,
                       read_jsonl, write_manifest)
    from .generation import HFGenerator, SamplingParams
    from .models import load_model
    from .profiles import get_profile

    prof = get_profile(profile)
    const = cons.as_constitution(constitution)
    out, prompts = Path(out), Path(prompts)
    candidates = candidates or prof.candidate_mode
    mode = mode or prof.judge_mode
    model = model or prof.policy_model
    judge_model = judge_model or prof.model_for("judge")
    if candidates == "revision":
        items = [r for r in read_jsonl(prompts) if "initial_response" in r][:limit]
        if not items:
            raise DataError(f"{prompts}: no stage-1 records (with 'initial_response'); "
                            "pass the critique output, or use --candidates samples")
        items = [r for r in items if r["completion"][-1]["content"] != r["initial_response"]]
    elif candidates == "samples":
        items = load_prompts(prompts, limit)
    else:
        raise DataError(f"unknown candidate mode {candidates!r}: use revision or samples")
    ties_path = out.with_name(out.stem + ".ties.jsonl")
    provenance = json.loads(json.dumps({
        "constitution": const.ref, "model": model, "judge_model": judge_model,
        "candidates": candidates, "judge_mode": mode, "tie_threshold": prof.tie_threshold,
        "seed": seed}))
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
            loaded[name] = load_model(name, load_in_4bit=prof.load_in_4bit, dtype=prof.dtype)
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
                    pairs = [(r["prompt"], r["completion"][-1]["content"], r["initial_response"])
                             for r in chunk]
                verdicts = judge_pairs(judge, pairs, [principles_for(const, r["id"], mode, seed)
                                                      for r in chunk])
                source = "construction" if candidates == "revision" else "judge"
                kept, tied = [], []
                for r, (conv, x, y), v in zip(chunk, pairs, verdicts):
                    record, tie = preference_record(r["id"], conv, x, y, v, source,
                                                    prof.tie_threshold)
                    extra = {k: r[k] for k in ("set", "category") if k in r}
                    (tied if tie else kept).append({**record, **extra, **provenance})
                writer.write(kept)
                ties.write(tied)
                bar.update(len(chunk))
    done = {r["id"] for r in items}
    rows = [r for r in read_jsonl(out) if r["id"] in done]
    tie_rows = [r for r in read_jsonl(ties_path) if r["id"] in done] if ties_path.exists() else []
    everything = rows + tie_rows
    n = len(everything)
    stats = {
        "pairs": len(rows), "ties": len(tie_rows),
        "position_consistent": sum(r["judge"]["position_consistent"] for r in everything) / max(n, 1),
        "judge_agrees_with_label": sum(r["judge"]["judge_agrees"] for r in everything) / max(n, 1),
        "mean_p_chosen": sum(r["judge"]["p_chosen"] for r in everything) / max(n, 1),
    }
    write_manifest(out, complete=n == len(items), profile=prof.name, inputs=inputs, **provenance,
                   counts={"requested": len(items), "written_this_run": len(todo), **stats},
                   seconds=round(time.perf_counter() - start, 1))
    return (f"{out}: {len(rows)} pairs, {len(tie_rows)} ties ({len(todo)} new); "
            f"position-consistent {stats['position_consistent']:.0%}, judge agrees with the label "
            f"{stats['judge_agrees_with_label']:.0%}, mean p(chosen) {stats['mean_p_chosen']:.2f}")


def load_calibration(path, constitution: Constitution) -> list[dict]:
    """Hand-labelled pairs: ``{id, principle, kind, prompt, preferred, other}`` per line."""
    from .data import DataError, iter_jsonl

    ids = {p.id for p in constitution.principles}
    rows = []
    for number, row in iter_jsonl(path):
        missing = [k for k in ("id", "principle", "prompt", "preferred", "other") if not row.get(k)]
        if missing:
            raise DataError(f"{path}:{number}: missing {', '.join(missing)}")
        if row["principle"] not in ids:
            raise DataError(f"{path}:{number}: principle {row['principle']!r} is not in "
                            f"{constitution.name}")
        rows.append(row)
    return rows


def calibrate(judge: LogProbJudge, constitution: Constitution, rows: list[dict]) -> dict:
    """The judge against hand labels, each pair under the principle it tests, both orders."""
    pairs = [([{"role": "user", "content": r["prompt"]}], r["preferred"], r["other"]) for r in rows]
    verdicts = judge_pairs(judge, pairs, [[constitution.principle(r["principle"])] for r in rows])
    result = {"all": agreement(verdicts)}
    for kind in sorted({r.get("kind", "all") for r in rows} - {"all"}):
        result[kind] = agreement([v for v, r in zip(verdicts, rows) if r.get("kind") == kind])
    result["bias_towards_A"] = sum(
        (o["x_as_A"] + (1 - o["x_as_B"])) / 2 for v in verdicts for o in v.by_principle.values()
    ) / len(verdicts)
    result["verdicts"] = [{"id": r["id"], "principle": r["principle"], "kind": r.get("kind"),
                           "p_preferred": v.p_first, **next(iter(v.by_principle.values())),
                           "position_consistent": v.position_consistent}
                          for r, v in zip(rows, verdicts)]
    return result
