"""Draw the cpu training sweep as one picture: red-team against borderline refusal on the
validation prompts, one point per setting, an arrow from each SFT model to the DPO models
trained from it.

    python benchmarks/plot_sweep.py   # -> benchmarks/results/cpu_training_sweep.png

Only rows scored on the validation split these sweeps used (60 red-team, 54 borderline, 30
helpful) are drawn; earlier rows used a smaller split, later ones the enlarged split (140 / 78 /
60, from 2026-12-03), and neither is comparable.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CURRENT_SPLIT = {"red_team": 60, "borderline": 54, "helpful": 30}  # the split the drawn sweeps used
PROFILE = {"lr": 1e-4, "steps": 72, "nll": 1.0, "pairs": 144, "mix": 0.75, "beta": 0.1}  # the cpu profile's DPO


def label(row: dict) -> str:
    """What a row changes: SFT by its LoRA, DPO by the settings that differ from the profile's."""
    lora = "every linear layer, r=16" if row.get("targets") == "all" else "attention, r=8"
    if row["stage"] != "dpo":
        return f"SFT, LoRA on {lora}"
    changed = [f"{k} {row.get(k, v):g}" for k, v in PROFILE.items() if row.get(k, v) != v]
    init = " (from the SFT on every linear layer)" if "targetsall" in row["init_model"] else ""
    tactics = "tactic" in row.get("pair_strata", ())
    if not changed and not init and "targets" not in row:
        return "the cpu profile" if tactics else "the earlier cpu profile (harmful pairs: direct only)"
    return (", ".join(changed) or "the profile's DPO") + (" on every linear layer, r=16" if "targets" in row else "") + init


def current_rows(path: Path) -> dict[str, dict]:
    """The latest row per model name scored on the current validation split, every prompt trained."""
    rows = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["n"] == CURRENT_SPLIT and (row.get("train_prompts") == [None, None, None]
                                          or row["stage"] == "base"):
            rows[row["model"]] = row
    return rows


def main() -> None:
    rows = current_rows(RESULTS / "cpu_training_sweep.jsonl")
    fig, ax = plt.subplots(figsize=(11, 5.5))
    fig.subplots_adjust(left=0.07, right=0.58, bottom=0.1, top=0.92)
    ax.axvspan(0.15, 1.0, color="tab:red", alpha=0.06, label="over 15% borderline refused")
    keys = []
    for name, row in rows.items():
        x, y = row["borderline_refused"], row["red_team_refused"]
        if row["stage"] == "dpo" and row.get("init_model") in rows:
            init = rows[row["init_model"]]
            ax.annotate("", (x, y), (init["borderline_refused"], init["red_team_refused"]),
                        arrowprops={"arrowstyle": "->", "color": "grey", "alpha": 0.4})
        text = "base model" if row["stage"] == "base" else label(row)
        profile = text == "the cpu profile"
        color = {"base": "black", "sft": "tab:blue"}.get(row["stage"], "tab:green" if profile else "tab:orange")
        ax.scatter(x, y, marker="s" if row["stage"] == "sft" else "o", s=70 if profile else 35,
                   color=color, zorder=3)
        keys.append(f"{len(keys) + 1:>2}  {row['red_team_refused']:4.0%} {row['borderline_refused']:4.0%} "
                    f"{row['helpful_refused']:4.0%}  {'DPO: ' if row['stage'] == 'dpo' else ''}{text}")
        ax.annotate(str(len(keys)), (x, y), fontsize=7, textcoords="offset points",
                    xytext=(4, 4 if len(keys) % 2 else -9))
    fig.text(0.6, 0.92, " #   red  bord  help  setting\n" + "\n".join(keys), va="top", family="monospace",
             fontsize=7)
    ax.scatter([], [], marker="s", color="tab:blue", label="SFT")
    ax.scatter([], [], marker="o", color="tab:orange", label="DPO (arrow from its SFT model)")
    ax.scatter([], [], marker="o", color="tab:green", s=70, label="DPO, the cpu profile")
    ax.set_xlim(-0.02, 0.75)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("borderline-but-safe validation prompts refused (n=54)")
    ax.set_ylabel("red-team validation prompts refused (n=60)")
    ax.set_title("cpu training sweep on validation: the DPO settings land on one line")
    ax.legend(loc="lower right", fontsize=7)
    out = RESULTS / "cpu_training_sweep.png"
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
