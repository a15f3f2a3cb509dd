import pytest

from cai_utils.generation import HFGenerator, SamplingParams, item_seed

CONVERSATIONS = [[{"role": "user", "content": text}] for text in (
    "What is 2+2?", "Name a colour.", "Write one sentence about the moon and the tides.",
    "Hi", "List two fruits.")]


def test_item_seed_is_stable():
    assert item_seed(0, "a") == item_seed(0, "a")
    assert item_seed(0, "a") != item_seed(0, "b") != item_seed(1, "a")


@pytest.mark.slow
def test_greedy_batched_equals_one_at_a_time(default_model):
    model, tokenizer = default_model
    params = SamplingParams(max_new_tokens=20)
    batched = HFGenerator(model, tokenizer, batch_size=5, progress=False).chat(CONVERSATIONS, params)
    single = HFGenerator(model, tokenizer, batch_size=1, progress=False).chat(CONVERSATIONS, params)
    assert [b.text for b in batched] == [s.text for s in single]
    assert all(b.text for b in batched)


@pytest.mark.slow
def test_sampled_item_does_not_depend_on_its_batch(default_model):
    model, tokenizer = default_model
    params = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    keys = [f"k{i}" for i in range(len(CONVERSATIONS))]
    full = HFGenerator(model, tokenizer, batch_size=5, progress=False).chat(CONVERSATIONS, params, keys)
    reordered = HFGenerator(model, tokenizer, batch_size=2, progress=False).chat(
        CONVERSATIONS[::-1], params, keys[::-1])[::-1]
    assert [a.text for a in full] == [b.text for b in reordered]
    other_seed = HFGenerator(model, tokenizer, batch_size=5, progress=False).chat(
        CONVERSATIONS, SamplingParams(16, 1.0, 0.95, seed=8), keys)
    assert [a.text for a in full] != [b.text for b in other_seed]


@pytest.mark.slow
def test_results_in_input_order_and_token_budget(default_model):
    model, tokenizer = default_model
    gen = HFGenerator(model, tokenizer, batch_size=2, progress=False)
    outs = gen.chat(CONVERSATIONS, SamplingParams(max_new_tokens=6))
    alone = [gen.chat([c], SamplingParams(max_new_tokens=6))[0].text for c in CONVERSATIONS]
    assert [o.text for o in outs] == alone
    assert all(o.tokens <= 6 for o in outs)
    assert gen.stats["items"] == 2 * len(CONVERSATIONS) and gen.stats["new_tokens"] > 0
