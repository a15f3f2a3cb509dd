"""The log-prob constitutional judge: A/B (and 1-5 ratings) from next-token probabilities.

The judge sees a principle's preference question, the conversation and two options, then
"The answer is: (" and one forward pass gives P(A) and P(B); no text is generated. Every pair
is judged in both orders and averaged, which cancels position bias; a verdict keeps both
orders and whether they agree. ``calibrate`` measures the judge against hand labels.

The soft label from two token probabilities (what ``option_probs`` computes): with logits
z_A and z_B at the answer position, P(A) = exp(z_A) / (exp(z_A) + exp(z_B)); a pair's verdict
averages P(x wins) over both orders: (P(A | x first) + 1 - P(A | y first)) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from . import prompts as P
from .constitution import Constitution, Principle
from .stats import proportion_ci


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


def calibration_sample(rows: list[dict], n: int | None) -> list[dict]:
    """``n`` hand-labelled pairs spread evenly over the file (which mixes clear and subtle pairs
    and every principle), or all of them when ``n`` is None or 0 or at least the file's size.

    >>> [r["id"] for r in calibration_sample([{"id": i} for i in range(10)], 3)]
    [0, 3, 6]
    >>> len(calibration_sample([{"id": i} for i in range(10)], None))
    10
    """
    if not n or n >= len(rows):
        return rows
    return rows[::len(rows) // n][:n]


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
