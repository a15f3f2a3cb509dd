"""Soft labels against hard labels: reward models trained on the judge's probabilities
(``rl.train_reward(..., soft_labels=True)``, the loss ``rl.soft_bradley_terry``) or on 0/1
labels, compared on the course's hand-labelled pairs.

A log-prob judge gives each pair a probability, P(chosen), not a verdict. Hard labels keep only
which side of 0.5 it fell on; a soft label keeps how sure the judge was, so a pair it could not
tell apart (P near 0.5) pulls the reward model hardly at all. ``compare_labels`` trains three
reward models on the same pairs (the rule's 0/1 labels, the judge's 0/1 labels, the judge's
probabilities) and scores each on ``data/calibration/pairs.jsonl``, which none was trained on.
"""

from __future__ import annotations

import time
from pathlib import Path

from .data import read_jsonl, write_json_atomic, write_jsonl_atomic
from .manifest import read_manifest
from .profiles import Profile, get_profile
from .rl import load_reward_model, pairwise_outcomes, reward_is_current, train_reward


def hand_label_accuracy(folder: str | Path, profile: Profile, pairs=None) -> dict:
    """How often a trained reward model scores the hand-preferred answer above the other on
    the course's hand-labelled pairs (``data/calibration/pairs.jsonl``, never trained on):
    ``{"share", "ci95", "n", "correct"}`` with a Wilson interval and per-pair outcomes."""
    from .data import project_root
    from .stats import share_ci

    rows = read_jsonl(pairs or project_root() / "data" / "calibration" / "pairs.jsonl")
    model, tokenizer = load_reward_model(folder, profile)
    say = lambda role, text: [{"role": role, "content": text}]  # noqa: E731
    correct = pairwise_outcomes(model, tokenizer, [
        {"prompt": say("user", r["prompt"]), "chosen": say("assistant", r["preferred"]),
         "rejected": say("assistant", r["other"])} for r in rows])
    ci = share_ci(correct)
    return {"share": ci["mean"], "ci95": ci["ci95"], "n": ci["n"], "correct": correct}


def compare_labels(prefs, out, profile: str | Profile | None = None, pairs=None,
                   rule_model: str | Path | None = None) -> dict:
    """Three reward models on the same stage-2 pairs: ``rule`` (the rule's 0/1 labels),
    ``judge`` (the judge's favourite as 0/1) and ``soft`` (the judge's P(chosen)), each with
    the profile's reward settings, scored on the hand-labelled pairs. Returns ``{arm:
    {"share", "ci95", "n", "correct", "trained", "seconds", "folder", "labels"}, "soft_vs_judge":
    paired difference,
    "judge_vs_rule": ...}``, also written to ``out/compare.json``. A model already trained on
    the same file is not trained again, and ``rule_model`` (a reward model trained elsewhere,
    e.g. notebook 06's own) stands in for the ``rule`` arm when it was trained on ``prefs``'
    0/1 labels with these settings. ``labels`` says whose labels an arm learnt: the ``rule`` arm's
    are the judge's when the file's pairs were labelled by the judge (its manifest says so)."""
    from .preferences import as_judge_labels
    from .stats import newcombe_paired

    prof, out = get_profile(profile), Path(out)
    judged = out / "judge_labels.jsonl"
    write_jsonl_atomic(judged, as_judge_labels(read_jsonl(prefs)))
    results = {}
    from .adapters import training_settings

    settings = training_settings(prof, "reward")
    # the first arm trains on the file as labelled: the rule's labels, unless the file's pairs were
    # labelled by the judge (label_source="judge", or two samples), when it repeats the judge arm
    file_labels = (read_manifest(prefs) or {}).get("label_source", "rule")
    for arm, data, soft in (("rule", Path(prefs), False), ("judge", judged, False), ("soft", judged, True)):
        folder = out / f"reward-{arm}"
        if arm == "rule" and rule_model and reward_is_current(rule_model, data, soft, settings):
            folder = Path(rule_model)
        start = time.perf_counter()
        trained = not reward_is_current(folder, data, soft, settings)
        if trained:
            train_reward(data, folder, model=prof.policy_model, profile=prof, soft_labels=soft)
        results[arm] = {**hand_label_accuracy(folder, prof, pairs), "trained": trained,
                        "seconds": round(time.perf_counter() - start, 1), "folder": str(folder),
                        "labels": file_labels if arm == "rule" else "judge"}
    results["soft_vs_judge"] = newcombe_paired(results["judge"]["correct"], results["soft"]["correct"])
    results["judge_vs_rule"] = newcombe_paired(results["rule"]["correct"], results["judge"]["correct"])
    write_json_atomic(out / "compare.json", results)
    return results
