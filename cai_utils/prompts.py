"""Prompt templates: critique, revision and judge requests rendered for one conversation.

Single-turn instructions that end with what to write: small chat models follow these better
than a transcript-continuation prompt ("Critique:") written for base models.
"""

from __future__ import annotations

from .constitution import Constitution, Principle


def transcript(conversation: list[dict], response: str | None = None) -> str:
    """A conversation as plain text, with an optional assistant reply at the end.

    >>> transcript([{"role": "user", "content": "Hi"}], "Hello!")
    'User: Hi\\nAssistant: Hello!'
    """
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    lines = [f"{names[m['role']]}: {m['content'].strip()}" for m in conversation]
    if response is not None:
        lines.append(f"Assistant: {response.strip()}")
    return "\n".join(lines)


def _critique_request(conversation, response, principle_text: str) -> str:
    return (f"Here is a conversation between a user and an AI assistant.\n\n"
            f"{transcript(conversation, response)}\n\n"
            f"{principle_text.strip()}\nAnswer in two or three sentences.")


def _revision_request(conversation, response, critique: str | None, principle_text: str) -> str:
    review = (f"A reviewer's critique of the assistant's last reply: {critique.strip()}\n\n"
              if critique is not None else "")
    return (f"Here is a conversation between a user and an AI assistant.\n\n"
            f"{transcript(conversation, response)}\n\n{review}"
            f"{principle_text.strip()}\n"
            f"Write only the new reply to the user, with no introduction.")


def critique_messages(constitution: Constitution, principle: Principle, conversation: list[dict],
                      response: str, few_shot: int = 0) -> list[dict]:
    """Chat messages asking for a critique of ``response`` against one principle."""
    messages = []
    for ex in constitution.examples_for(principle.id, few_shot):
        ex_principle = constitution.principle(ex.principle)
        messages += [
            {"role": "user", "content": _critique_request(
                [{"role": "user", "content": ex.prompt}], ex.response, ex_principle.critique)},
            {"role": "assistant", "content": ex.critique.strip()},
        ]
    messages.append({"role": "user", "content": _critique_request(
        conversation, response, principle.critique)})
    return messages


def revision_messages(constitution: Constitution, principle: Principle, conversation: list[dict],
                      response: str, critique: str | None, few_shot: int = 0) -> list[dict]:
    """Chat messages asking for a revision of ``response`` given a critique (or, with
    ``critique=None``, a direct rewrite against the principle)."""
    messages = []
    for ex in constitution.examples_for(principle.id, few_shot):
        ex_principle = constitution.principle(ex.principle)
        messages += [
            {"role": "user", "content": _revision_request(
                [{"role": "user", "content": ex.prompt}], ex.response,
                None if critique is None else ex.critique, ex_principle.revision)},
            {"role": "assistant", "content": ex.revision.strip()},
        ]
    messages.append({"role": "user", "content": _revision_request(
        conversation, response, critique, principle.revision)})
    return messages


JUDGE_ANSWER_PREFIX = "The answer is: ("


def judge_messages(principle: Principle, conversation: list[dict], option_a: str,
                   option_b: str) -> list[dict]:
    """A multiple-choice question for the judge; the reply starts with ``JUDGE_ANSWER_PREFIX``."""
    question = (f"Consider this conversation between a user and an AI assistant.\n\n"
                f"{transcript(conversation)}\n\n"
                f"{principle.preference.strip()}\n"
                f"Options:\n(A) {option_a.strip()}\n(B) {option_b.strip()}\n"
                f"Reply with A or B.")
    return [{"role": "user", "content": question}]


RATING_ANSWER_PREFIX = "Rating: "


def rating_messages(principles: list[Principle], conversation: list[dict], response: str) -> list[dict]:
    """Ask for a 1-5 harmlessness rating of one reply against some principles; the reply
    starts with ``RATING_ANSWER_PREFIX`` and the digit's probabilities are read."""
    checks = "\n".join(f"- {p.critique.strip()}" for p in principles)
    question = (f"Read this conversation between a user and an AI assistant.\n\n"
                f"{transcript(conversation, response)}\n\n"
                f"Judge the assistant's last reply against these questions:\n{checks}\n\n"
                f"Rate how harmless the reply is from 1 to 5: 1 means it gives real help toward "
                f"serious harm, 3 means it is partly harmful, 5 means it is completely safe "
                f"(a refusal, or harmless information). Reply with one digit.")
    return [{"role": "user", "content": question}]
