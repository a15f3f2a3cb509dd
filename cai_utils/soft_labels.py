"""Soft labels: train the reward model on the judge's probabilities instead of 0/1 labels,
and compare against hard labels on the course's hand-labelled pairs.

A log-prob judge gives each pair a probability, P(chosen), not a verdict. Hard labels keep only
which side of 0.5 it fell on; a soft label keeps how sure the judge was, so a pair it could not
tell apart (P near 0.5) pulls the reward model hardly at all. ``compare_labels`` trains three
reward models on the same pairs (the rule's 0/1 labels, the judge's 0/1 labels, the judge's
probabilities) and scores each on ``data/calibration/pairs.jsonl``, which none was trained on.
"""

from __future__ import annotations

import time
from pathlib import Path

from .data import DataError, read_jsonl, write_json_atomic, write_jsonl_atomic
from .profiles import Profile, get_profile


def soft_bradley_terry(margin, p_chosen):
    """The Bradley-Terry loss against a soft label: with r = reward(chosen) - reward(rejected)
    and p the judge's probability that ``chosen`` is better,
    -[p log sigma(r) + (1 - p) log sigma(-r)], averaged. At p = 1 it is the usual hard loss,
    -log sigma(r); at p = 0.5 it is smallest at r = 0 (the judge could not tell: no preference).

    >>> import torch
    >>> r = torch.tensor([2.0, 0.0])
    >>> round(soft_bradley_terry(r, torch.tensor([1.0, 1.0])).item(), 4) == round(
    ...     -torch.nn.functional.logsigmoid(r).mean().item(), 4)
    True
    >>> r = torch.zeros(1, requires_grad=True)
    >>> soft_bradley_terry(r, torch.tensor([0.5])).backward(); r.grad.item()
    0.0
    """
    from torch.nn.functional import logsigmoid

    return -(p_chosen * logsigmoid(margin) + (1 - p_chosen) * logsigmoid(-margin)).mean()


def soft_label_records(path, records: list[dict]) -> list[dict]:
    """``records`` (prompt, chosen, rejected) with the judge's P(chosen) from the stage-2 file,
    carried in TRL's ``margin`` column (``SoftRewardTrainer`` reads it as the soft label)."""
    from .data import read_jsonl

    rows = read_jsonl(path)
    missing = [n for n, r in enumerate(rows, start=1) if (r.get("judge") or {}).get("p_chosen") is None]
    if missing:
        raise DataError(f"{path}: record {missing[0]} has no judge p_chosen: soft labels need pairs "
                        "labelled with the judge's probabilities (stage 2's `label` writes them)")
    return [{**r, "margin": float(row["judge"]["p_chosen"])} for r, row in zip(records, rows)]


def soft_trainer_class():
    from trl import RewardTrainer

    class SoftRewardTrainer(RewardTrainer):
        """TRL's RewardTrainer with the soft Bradley-Terry loss: each pair's ``margin`` column
        holds the judge's P(chosen) instead of a margin. TRL's own step (its reward metrics
        and logging) runs unchanged; only the loss it returns is replaced."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            p_chosen = inputs.pop("margin")
            _, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                              num_items_in_batch=num_items_in_batch)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1).float(), chunks=2)
            loss = soft_bradley_terry(chosen - rejected, p_chosen.to(chosen.device))
            if self.args.center_rewards_coefficient is not None:
                loss = loss + self.args.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
            return (loss, outputs) if return_outputs else loss

    return SoftRewardTrainer


def hand_label_accuracy(folder: str | Path, profile: Profile, pairs=None) -> dict:
    """How often a trained reward model scores the hand-preferred answer above the other on
    the course's hand-labelled pairs (``data/calibration/pairs.jsonl``, never trained on):
    ``{"share", "ci95", "n", "correct"}`` with a Wilson interval and per-pair outcomes."""
    from .data import project_root, read_jsonl
    from .stats import share_ci

    rows = read_jsonl(pairs or project_root() / "data" / "calibration" / "pairs.jsonl")
    from .rl import load_reward_model, reward_scores

    model, tokenizer = load_reward_model(folder, profile)
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    say = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    good = reward_scores(model, tokenizer, prompts, [say(r["preferred"]) for r in rows])
    other = reward_scores(model, tokenizer, prompts, [say(r["other"]) for r in rows])
    correct = [float(g > o) for g, o in zip(good, other)]
    ci = share_ci(correct)
    return {"share": ci["mean"], "ci95": ci["ci95"], "n": ci["n"], "correct": correct}


def compare_labels(prefs, out, profile: str | Profile | None = None, pairs=None) -> dict:
    """Three reward models on the same stage-2 pairs: ``rule`` (the rule's 0/1 labels),
    ``judge`` (the judge's favourite as 0/1) and ``soft`` (the judge's P(chosen)), each with
    the profile's reward settings, scored on the hand-labelled pairs. Returns ``{arm:
    {"share", "ci95", "n", "correct", "trained", "seconds"}, "soft_vs_judge": paired difference,
    "judge_vs_rule": ...}``, also written to ``out/compare.json``. A model already trained on
    the same file is not trained again."""
    from .preferences import as_judge_labels
    from .rl import train_reward
    from .stats import newcombe_paired
    from .training import is_current

    prof, out = get_profile(profile), Path(out)
    judged = out / "judge_labels.jsonl"
    write_jsonl_atomic(judged, as_judge_labels(read_jsonl(prefs)))
    results = {}
    for arm, data, soft in (("rule", Path(prefs), False), ("judge", judged, False), ("soft", judged, True)):
        folder = out / f"reward-{arm}"
        start = time.perf_counter()
        trained = not is_current(folder, data)
        if trained:
            train_reward(data, folder, model=prof.policy_model, profile=prof, soft_labels=soft)
        results[arm] = {**hand_label_accuracy(folder, prof, pairs), "trained": trained,
                        "seconds": round(time.perf_counter() - start, 1)}
    results["soft_vs_judge"] = newcombe_paired(results["judge"]["correct"], results["soft"]["correct"])
    results["judge_vs_rule"] = newcombe_paired(results["rule"]["correct"], results["judge"]["correct"])
    write_json_atomic(out / "compare.json", results)
    return results
