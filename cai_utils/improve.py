"""``improve``: iterative self-improvement, the textbook's loop, with early stopping.

Each round runs critique-revision data, preferences, SFT and DPO from the last kept model; the
start model and every round are scored on the **validation** prompts (``refusal_quality``),
and a round whose score falls too far ends the loop. The test sets are left to the report.
"""

from __future__ import annotations

from pathlib import Path

from .data import project_root
from .profiles import Profile


def self_improve(round_fn, evaluate, start_model: str, rounds: int = 1,
                 tolerance: float = 0.05) -> list[dict]:
    """Rounds of data generation and training, with early stopping (the textbook's loop).

    ``round_fn(r, model) -> new model`` runs one round from a model; ``evaluate(model) ->
    float`` scores one. The start model is scored first; a round whose score falls more than
    ``tolerance`` below the previous one stops the loop, and its model is not kept. Returns
    one entry per scored model, the last kept one marked ``"best": True``.
    """
    history = [{"round": 0, "model": start_model, "quality": evaluate(start_model)}]
    kept = 0
    for r in range(1, rounds + 1):
        model = round_fn(r, history[kept]["model"])
        history.append({"round": r, "model": model, "quality": evaluate(model)})
        if history[-1]["quality"] < history[kept]["quality"] * (1 - tolerance):
            history[-1]["stopped"] = "quality fell more than {:.0%}".format(tolerance)
            break
        kept = r
    history[kept]["best"] = True
    return history


def cai_round(r: int, model: str, constitution, out, profile: Profile) -> str:
    """One round: critique-revision data, preferences, SFT and DPO, from ``model``; each step
    is skipped when its output is complete, so an interrupted round resumes."""
    from .critique import run_critique
    from .preferences import run_label
    from .adapters import is_done
    from .training import train_dpo, train_sft

    prompts = project_root() / "data" / "prompts"
    folder = Path(out) / f"round-{r}"
    sft_data, prefs = folder / "sft.jsonl", folder / "prefs.jsonl"
    run_critique(constitution, [prompts / "red_team_train.jsonl", prompts / "helpful_train.jsonl"],
                 sft_data, model=model, profile=profile,
                 limit=[profile.n_red_team, profile.n_helpful])
    run_label(constitution, sft_data, prefs, model=model, profile=profile)
    if not is_done(folder / "sft"):
        train_sft(sft_data, folder / "sft", model=model, profile=profile)
    if not is_done(folder / "dpo"):
        train_dpo(prefs, folder / "dpo", init=folder / "sft", profile=profile)
    return str(folder / "dpo")
