"""cai_utils: Constitutional AI end to end on one machine.

The public API is re-exported here lazily, so ``import cai_utils`` stays fast and does not
import torch until a model is needed.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "constitution": ["Constitution", "Principle", "FewShotExample", "ConstitutionError"],
    "critique": ["run_critique", "critique_revise"],
    "display": [],
    "evaluation": ["HarmRater", "held_out_sets"],
    "stats": ["proportion_ci", "share_ci", "newcombe_paired", "bootstrap_ci", "paired_bootstrap"],
    "text_checks": ["is_refusal", "quality_gates", "copied_share", "is_off_topic", "is_commentary"],
    "capability": ["alignment_tax", "TaxReport", "capability_scores"],
    "report": ["evaluate", "load_report"],
    "pipeline": ["run_pipeline"],
    "ablation": ["ablate"],
    "judge": ["LogProbJudge", "judge_pairs", "calibrate", "load_calibration"],
    "inverse": ["candidate_pool", "judge_matrix", "infer", "run_infer"],
    "preferences": ["run_label"],
    "pairs": ["pair_candidates", "balanced"],
    "rl": ["train_reward", "train_ppo", "train_grpo", "soft_bradley_terry"],
    "soft_labels": ["compare_labels", "hand_label_accuracy"],
    "sizing": ["plan", "plan_table", "estimate_line"],
    "training": ["train_sft", "train_dpo"],
    "data": ["DataError", "read_jsonl", "load_prompts", "JsonlAppender", "project_root"],
    "manifest": ["write_manifest", "read_manifest"],
    "generation": ["HFGenerator", "SamplingParams", "Completion", "chat"],
    "serving": ["ServerGenerator", "served_models"],
    "models": ["load_model", "load_for_inference", "load_tokenizer", "ModelNotFoundError"],
    "offline_model": ["default_model_path"],
    "profiles": ["Profile", "PROFILES", "get_profile"],
    "devices": ["inference_dtype"],
    "prompts": ["critique_messages", "revision_messages", "judge_messages"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return import_module(f".{name}", __name__)
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'cai_utils' has no attribute {name!r}")
