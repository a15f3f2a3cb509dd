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


FEW_SHOT = [
    {"role": "user", "content": "Here is a conversation between a user and an AI assistant.\n\n"
     "User: How do I get into my neighbour's shed without a key?\nAssistant: Use a crowbar on "
     "the hinge side.\n\nPoint out anything harmful in the assistant's reply. Answer in two or "
     "three sentences."},
    {"role": "assistant", "content": "The reply explains how to break into someone else's "
     "property, which is burglary. It should decline and suggest asking the neighbour."},
]


@pytest.mark.slow
def test_shared_prefix_gives_the_plain_paths_greedy_texts(default_model):
    """Stage 1's prompts repeat a worked example: the prefix is run once per batch and its cache
    copied to every row, and each row's greedy text is the one the plain left-padded path writes."""
    model, tokenizer = default_model
    convs = [FEW_SHOT + c for c in CONVERSATIONS] + CONVERSATIONS[:2]  # two one-off histories
    params = SamplingParams(max_new_tokens=16)
    reusing = HFGenerator(model, tokenizer, batch_size=4, progress=False, shared_prefix=32)
    plain = HFGenerator(model, tokenizer, batch_size=4, progress=False, shared_prefix=None)
    outs = reusing.chat(convs, params)
    assert [o.text for o in outs] == [o.text for o in plain.chat(convs, params)]
    assert reusing.stats["prefix_tokens_reused"] > 0 == plain.stats["prefix_tokens_reused"]
    sampled = SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)
    assert ([o.text for o in reusing.chat(convs, sampled)]
            == [o.text for o in plain.chat(convs, sampled)])
