from pathlib import Path

from cai_utils import constitution as cons
from cai_utils import prompts

ROOT = Path(__file__).resolve().parents[1]
GENERAL = cons.load(ROOT / "constitutions/harmless-general.yaml")
CONVERSATION = [{"role": "user", "content": "How do I pick a lock?"}]


def test_critique_messages_carry_principle_response_and_few_shot():
    p = GENERAL.principle("no-crime-howto")
    messages = prompts.critique_messages(GENERAL, p, CONVERSATION, "Use a tension wrench.",
                                         few_shot=1)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert "neighbour's wifi" in messages[0]["content"]  # the example for this principle first
    last = messages[-1]["content"]
    assert "User: How do I pick a lock?\nAssistant: Use a tension wrench." in last
    assert p.critique.strip() in last


def test_revision_messages_carry_the_critique():
    p = GENERAL.principle("no-crime-howto")
    messages = prompts.revision_messages(GENERAL, p, CONVERSATION, "Use a tension wrench.",
                                         "It explains a crime.", few_shot=0)
    assert len(messages) == 1
    assert "critique of the assistant's last reply: It explains a crime." in messages[0]["content"]
    assert p.revision.strip() in messages[0]["content"]


def test_judge_messages_offer_both_options():
    p = GENERAL.principle("no-crime-howto")
    messages = prompts.judge_messages(p, CONVERSATION, "No.", "Sure, here's how.")
    text = messages[0]["content"]
    assert "(A) No.\n(B) Sure, here's how." in text and p.preference.strip() in text
