"""The contiguous ``lm_head`` input (``cai_utils.models.contiguous_lm_head``) against torch's
default, side by side in one run: greedy answers and judge probabilities of a merged adapter
(weights that do not require grad; default the demo's DPO adapter), same prompts (the
validation red-team prompts), same batch size, the two settings alternated twice.

    python benchmarks/prefill_lm_head.py [model] [n]   # -> benchmarks/results/prefill_lm_head.txt

Without the hook, the last-position slice that ``logits_to_keep=1`` hands the output projection
is multiplied by the weight expanded per row, which copies the vocabulary matrix once per row.
"""

import sys
import time
from pathlib import Path

import torch

from cai_utils import prompts as P
from cai_utils.evaluation import held_out_sets
from cai_utils.generation import HFGenerator, SamplingParams
from cai_utils.judge import option_probs, option_token_ids
from cai_utils.models import load_for_inference
from cai_utils.profiles import get_profile

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(name: str = "runs/demo/dpo", n: int = 128) -> None:
    profile = get_profile("cpu")
    convs = [i["messages"] for i in held_out_sets(profile, split="val")["red_team"]][:n]
    model, tokenizer = load_for_inference(name, profile)  # load_model adds the hook
    assert not any(p.requires_grad for p in model.parameters()), "expected a merged adapter"
    head = model.get_output_embeddings()
    hooks = dict(head._forward_pre_hooks)
    params = SamplingParams(max_new_tokens=profile.eval_max_new_tokens)
    engine = HFGenerator(model, tokenizer, batch_size=profile.batch_size, progress=False)
    texts = [tokenizer.apply_chat_template(c + [{"role": "assistant", "content": "Sure."}], tokenize=False)
             for c in convs]
    ids = option_token_ids(tokenizer, P.RATING_ANSWER_PREFIX, "12345")
    engine.chat(convs[:profile.batch_size], SamplingParams(max_new_tokens=4))  # warm-up, untimed
    results: dict[str, list] = {}
    for setting in ("contiguous input", "torch default") * 2:
        head._forward_pre_hooks.clear()
        if setting == "contiguous input":
            head._forward_pre_hooks.update(hooks)
        answers, gen_s = timed(lambda: engine.chat(convs, params))
        probs, judge_s = timed(lambda: option_probs(model, tokenizer, texts, ids, profile.batch_size, False))
        runs = results.setdefault(setting, [answers, 0.0, probs, 0.0])
        runs[1] += gen_s / 2
        runs[3] += judge_s / 2
        assert [a.text for a in answers] == [a.text for a in runs[0]]  # the same texts each time
    (a0, g0, p0, j0), (a1, g1, p1, j1) = results["torch default"], results["contiguous input"]
    same = sum(x.text == y.text for x, y in zip(a0, a1))
    diff = max(abs(x - y) for r0, r1 in zip(p0, p1) for x, y in zip(r0, r1))
    lines = [f"lm_head input, torch default vs contiguous: {name} merged ({profile.name} profile, "
             f"{model.dtype}, {torch.get_num_threads()} threads, batch {profile.batch_size}, {len(convs)} "
             "validation red-team prompts; one run, each setting twice, mean seconds)",
             "",
             f"{'':15} {'torch default s':>16} {'contiguous s':>13} {'speed-up':>9}",
             f"{'greedy answers':15} {g0:16.1f} {g1:13.1f} {g0 / g1:8.2f}x   ({profile.eval_max_new_tokens} new "
             f"tokens; identical texts: {same}/{len(a0)})",
             f"{'judge forwards':15} {j0:16.1f} {j1:13.1f} {j0 / j1:8.2f}x   (largest difference in a "
             f"probability: {diff:.1e})"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prefill_lm_head.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["runs/demo/dpo"]), *[int(a) for a in sys.argv[2:3]])
