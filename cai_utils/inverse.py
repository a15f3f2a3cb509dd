"""Inverse Constitutional AI: from preference pairs back to the principles that explain them.

Constitutional AI turns principles into preference labels; Findeis et al. (2024) go back. Here
the candidates are every shipped constitution's principles and a few distractors (plausible but
wrong, ``data/inverse/distractors.yaml``), deduplicated on their normalised judge question. The
log-prob judge is told one candidate at a time and judges every pair in both orders, as stage 2
does (``judge_pairs``). A candidate's **agreement** is the share of pairs where it puts more than
half its probability on the labelled chosen answer; its **mean margin** is mean(P(chosen)) - 0.5.

A greedy search then picks the few candidates that together explain the most pairs. A set
explains a pair when the **mean** of its members' P(chosen) is above 0.5: the ensemble stage 2
uses under ``judge_mode="all"``. Each step adds the candidate that raises the explained share
most (ties: the larger mean margin, then the higher-ranked candidate); the search stops at
``top_k`` or when no candidate raises it. The first pick is always made: a constitution needs
a principle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import fmean
from typing import Callable, Iterable

from .constitution import Constitution, Principle, as_constitution, from_dict
from .data import DataError, iter_jsonl, project_root, write_json_atomic
from .judge import calibration_sample, judge_pairs
from .stats import proportion_ci

DISTRACTORS = "data/inverse/distractors.yaml"
RULE = "mean"  # how a set of principles votes on a pair (see the module docstring)
Pair = tuple[list, str, str]  # (conversation, chosen, rejected), the shape judge_pairs takes


@dataclass(frozen=True)
class Candidate:
    principle: Principle
    source: str  # the name of the constitution it comes from


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: the key candidates dedupe on.

    >>> normalise("  Which reply is LESS preachy?\\n")
    'which reply is less preachy'
    """
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def default_pool() -> list[Path]:
    """Every shipped constitution (``constitutions/*.yaml``; the course's default first, so it
    keeps its ids), then the distractors."""
    from .workspace import DEFAULT_CONSTITUTION

    root = project_root()
    shipped = sorted((root / "constitutions").glob("*.yaml"),
                     key=lambda path: (path != root / DEFAULT_CONSTITUTION, path.name))
    return shipped + [root / DISTRACTORS]


def candidate_pool(sources: Iterable) -> list[Candidate]:
    """The principles of each constitution (a Constitution or a file), in order, without those
    whose judge question normalises to one already taken. An id already taken gets its
    constitution's name in front, so the ids stay unique (the first file keeps its ids)."""
    pool: list[Candidate] = []
    questions: set[str] = set()
    ids: set[str] = set()
    for source in sources:
        const = as_constitution(source)
        for p in const.principles:
            if normalise(p.preference) in questions:
                continue
            questions.add(normalise(p.preference))
            if p.id in ids:
                p = replace(p, id=f"{const.name}-{p.id}")
            ids.add(p.id)
            pool.append(Candidate(p, const.name))
    return pool


def _text(value, where: str) -> str:
    """A string, or the last message's content of a conversation."""
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content")
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: expected a string or a list of messages")
    return value


def load_pairs(path, limit: int | None = None) -> list[Pair]:
    """``(conversation, chosen, rejected)`` from a JSONL file of ``{prompt, chosen, rejected}``
    (stage 2's output; a string prompt becomes one user message), ``limit`` of them spread
    evenly over the file (None or 0: all)."""
    pairs = []
    for number, row in iter_jsonl(path):
        missing = [k for k in ("prompt", "chosen", "rejected") if not row.get(k)]
        if missing:
            raise DataError(f"{path}:{number}: missing {', '.join(missing)}")
        prompt = row["prompt"]
        conversation = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        pairs.append((conversation, _text(row["chosen"], f"{path}:{number}: chosen"),
                      _text(row["rejected"], f"{path}:{number}: rejected")))
    if not pairs:
        raise DataError(f"{path}: no preference pairs")
    return calibration_sample(pairs, limit)


def judge_matrix(judge, candidates: list[Candidate], pairs: list[Pair]) -> list[list[float]]:
    """P(chosen better) under each candidate (rows) for each pair (columns), both orders
    averaged. ``judge`` is anything with ``prob_first`` (a ``LogProbJudge``)."""
    verdicts = judge_pairs(judge, pairs, [[c.principle for c in candidates]] * len(pairs))
    orders = [[v.by_principle[c.principle.id] for v in verdicts] for c in candidates]
    return [[(o["x_as_A"] + o["x_as_B"]) / 2 for o in row] for row in orders]


def score(row: list[float]) -> dict:
    """One candidate's agreement with the labels (Wilson 95% interval), mean margin and n.

    >>> s = score([0.9, 0.6, 0.4, 0.7])
    >>> s["agreement"], round(s["mean_margin"], 3), s["n"]
    (0.75, 0.15, 4)
    """
    share, low, high = proportion_ci(sum(p > 0.5 for p in row), len(row))
    return {"agreement": share, "ci95": [low, high], "mean_margin": fmean(row) - 0.5,
            "n": len(row)}


def ranking(matrix: list[list[float]], candidates: list[Candidate]) -> list[dict]:
    """One row per candidate, best first (agreement, then mean margin), with its rank."""
    rows = [{"id": c.principle.id, "source": c.source, **score(r)}
            for c, r in zip(candidates, matrix)]
    rows.sort(key=lambda r: (-r["agreement"], -r["mean_margin"]))
    return [{"rank": i + 1, **r} for i, r in enumerate(rows)]


def explained(matrix: list[list[float]], chosen: list[int]) -> list[bool]:
    """For each pair: does the mean P(chosen) of the rows ``chosen`` exceed 0.5?

    >>> explained([[0.9, 0.2], [0.3, 0.9]], [0, 1])
    [True, True]
    """
    return [fmean(matrix[i][j] for i in chosen) > 0.5 for j in range(len(matrix[0]))]


def greedy_select(matrix: list[list[float]], top_k: int) -> list[tuple[int, float]]:
    """``(row, share of pairs the set explains once it is added)`` for each pick, in order."""
    picks: list[tuple[int, float]] = []
    share = 0.0
    order = sorted(range(len(matrix)), key=lambda i: (-fmean(p > 0.5 for p in matrix[i]),
                                                      -fmean(matrix[i])))
    while len(picks) < min(top_k, len(matrix)):
        taken = [i for i, _ in picks]
        best, best_key = None, None
        for i in order:
            if i in taken:
                continue
            rows = taken + [i]
            key = (fmean(explained(matrix, rows)),
                   fmean(fmean(matrix[r][j] for r in rows) for j in range(len(matrix[0]))))
            if best_key is None or key > best_key:
                best, best_key = i, key
        if picks and best_key[0] <= share:
            break
        share = best_key[0]
        picks.append((best, share))
    return picks


def relabel(pairs: list[Pair], prefer: Callable[[str, str], bool]) -> tuple[list[Pair], list[bool]]:
    """The same pairs labelled by another rule (``prefer(a, b)``: a is the better answer), and
    for each whether its label flipped (see ``reorient``)."""
    out, flipped = [], []
    for conversation, chosen, rejected in pairs:
        keep = prefer(chosen, rejected)
        out.append((conversation, chosen, rejected) if keep else (conversation, rejected, chosen))
        flipped.append(not keep)
    return out, flipped


def longer(a: str, b: str) -> bool:
    """The rule "longer is better", in characters (a tie keeps the first)."""
    return len(a) >= len(b)


def reorient(matrix: list[list[float]], flipped: list[bool]) -> list[list[float]]:
    """The judge matrix for relabelled pairs, with no new judging: P(new chosen) = 1 - P(old)."""
    return [[1 - p if f else p for p, f in zip(row, flipped)] for row in matrix]


def infer(matrix: list[list[float]], candidates: list[Candidate], top_k: int) -> dict:
    """The ranking and the greedy selection: ``{"ranking", "selected", "n"}``."""
    table = ranking(matrix, candidates)
    by_id = {r["id"]: r for r in table}
    selected, before = [], 0.0
    for i, share in greedy_select(matrix, top_k):
        row = by_id[candidates[i].principle.id]
        selected.append({**row, "explained": share, "gain": share - before})
        before = share
    return {"ranking": table, "selected": selected, "n": len(matrix[0])}


def above_distractors(table: list[dict], source: str, distractors: str = "distractors") -> int:
    """How many of ``source``'s principles rank above every distractor."""
    first = min((r["rank"] for r in table if r["source"] == distractors), default=len(table) + 1)
    return sum(r["source"] == source and r["rank"] < first for r in table)


def slug(text: str) -> str:
    """A file stem as a lowercase slug, for the inferred constitution's name.

    >>> slug("Prefs_Length.v2")
    'prefs-length-v2'
    """
    return "-".join(normalise(text).split()) or "pairs"


def to_constitution(result: dict, candidates: list[Candidate], pairs_name: str) -> Constitution:
    """The selected principles as a validated constitution ``inferred-from-<pairs stem>``."""
    principles = {c.principle.id: c.principle for c in candidates}
    chosen = [principles[s["id"]] for s in result["selected"]]
    lines = "; ".join(f"{s['id']} ({s['source']}) agrees with {s['agreement']:.0%} alone, "
                      f"the set explains {s['explained']:.0%}" for s in result["selected"])
    data = {
        "name": f"inferred-from-{slug(Path(pairs_name).stem)}",
        "version": "1.0.0",
        "description": (f"Inferred, not written: the principles that best reproduce the labels of "
                        f"{Path(pairs_name).name} ({result['n']} pairs) under the log-prob judge, "
                        f"picked greedily from {len(candidates)} candidates. {lines}."),
        "principles": [{"id": p.id, **({"category": p.category} if p.category else {}),
                        "critique": p.critique, "revision": p.revision,
                        "preference": p.preference} for p in chosen],
        "meta": {"inferred_from": str(pairs_name), "pairs": result["n"], "rule": RULE,
                 "selected": [{k: s[k] for k in ("id", "source", "rank", "agreement",
                                                  "mean_margin", "explained", "gain")}
                              for s in result["selected"]]},
    }
    return from_dict(data, source=f"<{data['name']}>")


def run_infer(pairs, out, profile=None, top_k: int = 5, pool: list | None = None,
              limit: int | None = None, judge_model: str | None = None) -> str:
    """Files to files: the pairs, the candidate pool and the profile's judge to the inferred
    constitution at ``out``, and beside it ``*.scores.json`` (the ranking, the picks and every
    P(chosen), so another labelling of the same pairs needs no judging: ``reorient``).
    Returns a short report (the ranking and the picks)."""
    import time

    from .judge import LogProbJudge
    from .models import load_for_inference
    from .profiles import get_profile

    prof = get_profile(profile)
    candidates = candidate_pool(pool or default_pool())
    rows = load_pairs(pairs, prof.inverse_pairs if limit is None else limit)
    start = time.perf_counter()
    judge = LogProbJudge(*load_for_inference(judge_model or prof.model_for("judge"), prof),
                         batch_size=prof.batch_size)
    matrix = judge_matrix(judge, candidates, rows)
    seconds = time.perf_counter() - start
    result = infer(matrix, candidates, top_k)
    inferred = to_constitution(result, candidates, str(pairs))
    inferred.save(out)
    scores = Path(out).with_suffix(".scores.json")
    write_json_atomic(scores, {**result, "seconds": round(seconds, 1), "profile": prof.name,
                               "pairs": str(pairs), "p_chosen": {
                                   c.principle.id: [round(p, 4) for p in row]
                                   for c, row in zip(candidates, matrix)}})
    lines = [f"{len(candidates)} candidates judged on {len(rows)} pairs in {seconds:.0f}s "
             f"(profile {prof.name})",
             "rank  agreement  margin  principle"]
    lines += [f"{r['rank']:>4}  {r['agreement']:>9.0%}  {r['mean_margin']:+.3f}  "
              f"{r['id']} ({r['source']})" for r in result["ranking"]]
    lines += [f"picked {s['id']}: explains {s['explained']:.0%} (+{s['gain']:.0%})"
              for s in result["selected"]]
    return "\n".join(lines + [f"wrote {out}: {inferred.summary()}; the scores: {scores}"])
