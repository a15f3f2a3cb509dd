"""How far the sizing estimate lands from a measured run: the estimate of `cai_utils.sizing` for
the run's profile on this CPU beside the seconds the run recorded, stage by stage.

    python benchmarks/sizing.py runs/demo   # -> benchmarks/results/sizing.txt

The run's stage seconds come from its pipeline.json (a stage skipped as already complete keeps
the seconds of the run that made it); the answers' seconds from the report's answer manifests,
and the judge's from the last evaluate, less any answers it had to write.
"""

import json
import sys
from pathlib import Path

from cai_utils import sizing
from cai_utils.profiles import get_profile

RESULTS = Path(__file__).resolve().parent / "results"


def measured(run: Path) -> dict[str, float]:
    stages = json.loads((run / "pipeline.json").read_text())["stages"]
    seconds = {k: v.get("earlier_seconds", v["seconds"]) for k, v in stages.items()}
    report = json.loads((run / "report" / "report.json").read_text())["seconds"]
    answers = sum(report["per_model"].values())
    fresh = [json.loads(p.read_text()) for p in (run / "report" / "answers").glob("*.manifest.json")]
    written = sum(m["seconds"] for m in fresh if m.get("complete")) if seconds["evaluate"] > answers else 0.0
    return {"critique": seconds["critique"] + seconds["self_critique"], "label": seconds["label"],
            "sft": seconds["sft"], "dpo": seconds["dpo"], "answers": answers,
            "judge": seconds["evaluate"] - written}


def main(run: str = "runs/demo") -> None:
    folder = Path(run)
    profile = get_profile(json.loads((folder / "pipeline.json").read_text())["profile"])
    seen = measured(folder)
    rows = sizing.plan(profile, sizing.DEVICES["cpu"])
    lines = [f"Sizing estimate against a measured run ({folder}, profile {profile.name}, this 2-core CPU)",
             "", f"{'stage':10} {'estimate s':>11} {'measured s':>11} {'estimate/measured':>18}"]
    for r in rows:
        if r["stage"] in seen:
            m = seen[r["stage"]]
            lines.append(f"{r['stage']:10} {r['seconds']:11.0f} {m:11.0f} {r['seconds'] / m:18.2f}")
    total_e = sum(r["seconds"] for r in rows if r["stage"] in seen)
    total_m = sum(seen[r["stage"]] for r in rows if r["stage"] in seen)
    lines.append(f"{'total':10} {total_e:11.0f} {total_m:11.0f} {total_e / total_m:18.2f}")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sizing.txt").write_text(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
