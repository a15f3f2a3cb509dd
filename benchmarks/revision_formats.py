"""Which stage-1 prompt format works best for a small model? Compared on the quality measures.

Runs the critique-revision loop on the same red-team and helpful prompts with each format and
prints, per format: red-team revisions that decline, helpful revisions that stay helpful,
answers changed, records flagged, and revisions never accepted (95% intervals in brackets).

    python benchmarks/revision_formats.py [--prompts 16] [--model default]
"""

import argparse
import time

import cai_utils as cai
from cai_utils import constitution as cons
from cai_utils.critique import CritiqueSettings, critique_revise, quality
from cai_utils.data import load_prompts, project_root
from cai_utils.generation import HFGenerator

FORMATS = {
    "critique-revise, 0 few-shot": dict(prompt_format="critique-revise", few_shot=0),
    "critique-revise, 1 few-shot": dict(prompt_format="critique-revise", few_shot=1),
    "critique-revise, 3 few-shot": dict(prompt_format="critique-revise", few_shot=3),
    "direct, 0 few-shot": dict(prompt_format="direct", few_shot=0),
    "direct, 1 few-shot": dict(prompt_format="direct", few_shot=1),
}
MEASURES = ["red_team_revision_declines", "helpful_revisions_stay_helpful", "changed",
            "flagged", "unrevised"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="per set")
    parser.add_argument("--model", default="default")
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    profile = cai.get_profile(args.profile)
    root = project_root()
    constitution = cons.load(root / "constitutions" / "harmless-general.yaml")
    items = (load_prompts(root / "data/prompts/red_team_train.jsonl", args.prompts)
             + load_prompts(root / "data/prompts/helpful_train.jsonl", args.prompts))
    model, tokenizer = cai.load_model(args.model)
    gen = HFGenerator(model, tokenizer, batch_size=profile.batch_size, progress=False)
    print(f"{args.model}, {len(items)} prompts ({args.prompts} red-team + {args.prompts} helpful), "
          f"1 round, greedy, {profile.max_new_tokens} tokens\n")
    header = f"{'format':<30}" + "".join(f"{m.replace('_', ' ')[:22]:>26}" for m in MEASURES)
    print(header)
    for name, options in FORMATS.items():
        settings = CritiqueSettings(rounds=1, max_new_tokens=profile.max_new_tokens,
                                    critique_max_new_tokens=profile.critique_max_new_tokens,
                                    **options)
        start = time.perf_counter()
        stats = quality(critique_revise(items, constitution, gen, gen, settings))
        cells = "".join(f"{stats[m]['share']:>9.0%} [{stats[m]['ci95'][0]:.2f}-{stats[m]['ci95'][1]:.2f}]  "
                        for m in MEASURES)
        print(f"{name:<30}{cells} {time.perf_counter() - start:.0f}s", flush=True)
    print(f"\nfor reference, red-team first answers that decline: "
          f"{stats['red_team_initial_declines']['share']:.0%}")


if __name__ == "__main__":
    main()
