"""Soft labels against hard labels for the reward model, on the course's hand-labelled pairs.

Three reward models on the same stage-2 pairs with one profile's reward settings (rule 0/1
labels, the judge's favourite as 0/1, the judge's probability), each scored on
data/calibration/pairs.jsonl, which none was trained on (``cai_utils.soft_labels``). The pairs
come from a `run` folder, e.g. the one `make demo` writes:

    python benchmarks/soft_labels.py --prefs runs/demo/prefs.jsonl --out runs/soft-labels --profile cpu

Writes benchmarks/results/soft_labels.json and prints a table.
"""

import argparse
import json
from pathlib import Path

from cai_utils.data import project_root, read_jsonl
from cai_utils.manifest import read_manifest
from cai_utils.soft_labels import compare_labels
from cai_utils.text_checks import is_refusal

RESULTS = Path(__file__).resolve().parent / "results" / "soft_labels.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefs", required=True, help="stage-2 pairs with the judge's p_chosen")
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    rows = read_jsonl(args.prefs)
    p = [r["judge"]["p_chosen"] for r in rows]
    result = compare_labels(args.prefs, args.out, profile=args.profile)
    hand = read_jsonl(project_root() / "data" / "calibration" / "pairs.jsonl")
    refusal_wins = [is_refusal(r["preferred"]) for r in hand]  # the hand-preferred answer declines
    summary = {
        "profile": args.profile, "prefs": args.prefs, "pairs": len(rows),
        "label_source": (read_manifest(args.prefs) or {}).get("label_source"),
        "judge_agrees_with_rule": sum(x > 0.5 for x in p) / len(p),
        "mean_confidence": sum(abs(x - 0.5) for x in p) / len(p),
        "arms": {a: {**{k: result[a][k] for k in ("share", "ci95", "n", "trained", "seconds")},
                     "right_where_a_refusal_is_preferred": [
                         int(sum(c for c, f in zip(result[a]["correct"], refusal_wins) if f)), sum(refusal_wins)],
                     "right_elsewhere": [int(sum(c for c, f in zip(result[a]["correct"], refusal_wins) if not f)),
                                         len(hand) - sum(refusal_wins)]}
                 for a in ("rule", "judge", "soft")},
        "judge_vs_rule": {k: result["judge_vs_rule"][k] for k in ("diff", "ci95", "significant")},
        "soft_vs_judge": {k: result["soft_vs_judge"][k] for k in ("diff", "ci95", "significant")},
    }
    RESULTS.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{len(rows)} pairs; the judge gives the rule's answer > 0.5 on "
          f"{summary['judge_agrees_with_rule']:.0%}; mean |p - 0.5| = {summary['mean_confidence']:.3f}")
    print("| labels | agrees with hand labels [95%] | where a refusal is preferred | elsewhere | seconds |\n"
          "|---|---|---|---|---|")
    print("(seconds: training and scoring, or scoring only where an earlier run had trained it)")
    for arm, r in summary["arms"].items():
        (a, b), (c, d) = r["right_where_a_refusal_is_preferred"], r["right_elsewhere"]
        print(f"| {arm} | {r['share']:.1%} [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}] | {a} / {b} | {c} / {d} | {r['seconds']} |")
    for name in ("judge_vs_rule", "soft_vs_judge"):
        d = summary[name]
        print(f"{name}: {d['diff'] * 100:+.1f} pts [{d['ci95'][0] * 100:+.1f}, {d['ci95'][1] * 100:+.1f}]")


if __name__ == "__main__":
    main()
