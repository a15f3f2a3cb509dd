"""The principle ablation: the full constitution against copies without one principle each,
every variant regenerating a small SFT set and training briefly, rated on held-out red-team
prompts by the full constitution's judge (``python -m cai_utils ablate``, notebook 07).
"""

from __future__ import annotations

from pathlib import Path

from .data import write_json_atomic
from .locks import writes_to
from .pipeline import train_prompt_files
from .profiles import Profile, get_profile


@writes_to("out")
def ablate(constitution, out, principle_ids: list[str], profile: str | Profile | None = None,
           n_prompts: int | None = None, sft_steps: int | None = None,
           eval_limit: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Principle ablation: for the full constitution and for each one without a principle,
    regenerate a small SFT set, train briefly, and rate the model's answers to held-out
    red-team prompts with the full constitution's judge (a fixed yardstick).

    Returns ``{"variants": {name: {"harmlessness", "refusal", "drop_pct", "vs_full", ...}}}``
    where ``drop_pct`` is the relative fall in mean harmlessness against the full constitution
    (positive: removing the principle made the model less harmless) and ``vs_full`` the paired
    difference in rating with its 95% interval. Resumable per variant. ``seed`` changes the
    critique step's principle sampling (a control run: the full constitution with another
    seed, into another ``out``).
    """
    from . import constitution as cons
    from .critique import run_critique
    from .evaluation import HarmRater, held_out_sets
    from .stats import bootstrap_ci, paired_bootstrap, share_ci
    from .text_checks import is_refusal
    from .generation import HFGenerator, SamplingParams
    from .models import load_for_inference
    from .adapters import is_done
    from .training import train_sft

    prof = get_profile(profile)
    full = cons.as_constitution(constitution)
    variants = {"full": full, **{f"without {pid}": full.without(pid) for pid in principle_ids}}
    out = Path(out)
    red = train_prompt_files()[0]
    tests = held_out_sets(prof, eval_limit)["red_team"]
    judge, judge_tok = load_for_inference(prof.model_for("judge"), prof)
    rater = HarmRater(judge, judge_tok, full, batch_size=prof.batch_size, progress=progress)
    results = {}
    for name, const in variants.items():
        folder = out / name.replace(" ", "-")
        run_critique(const, [red], folder / "sft.jsonl", profile=prof,
                     limit=n_prompts or prof.n_red_team, seed=seed)
        if not is_done(folder / "sft"):
            train_sft(folder / "sft.jsonl", folder / "sft", model=prof.policy_model,
                      max_steps=sft_steps, profile=prof)
        model, tokenizer = load_for_inference(str(folder / "sft"), prof, load_in_4bit=False)
        answers = [c.text for c in HFGenerator(model, tokenizer, prof.batch_size, progress=progress).chat(
            [t["messages"] for t in tests], SamplingParams(max_new_tokens=prof.max_new_tokens),
            desc=f"answers ({name})")]
        ratings = rater.rate([(t.get("category"), t["messages"], a) for t, a in zip(tests, answers)])
        results[name] = {"harmlessness": bootstrap_ci(ratings),
                         "refusal": share_ci([float(is_refusal(a)) for a in answers]),
                         "constitution": const.ref, "ratings": ratings}
    full_ratings = results["full"]["ratings"]
    base = results["full"]["harmlessness"]["mean"]
    for r in results.values():
        r["drop_pct"] = round((base - r["harmlessness"]["mean"]) / base * 100, 2)
        # the same held-out prompts for every variant: a paired interval for the change
        r["vs_full"] = paired_bootstrap(full_ratings, r["ratings"])
    summary = {"profile": prof.name, "constitution": full.ref, "n_prompts": n_prompts or prof.n_red_team,
               "n_test": len(tests), "variants": results}
    write_json_atomic(out / "ablation.json", summary)
    return summary
