"""Checks on text, no model involved: the refusal detector and stage 1's quality gates.

A small critic often produces "revisions" that would poison SFT data while looking fine to a
pipeline that only checks for empty or looping text. Three gates catch the common failures,
each a pure function over strings, so a learner can run them on any record:

- **copied**: the revision repeats a worked example from the constitution word for word
  (a 135M critic given three examples answers a lock-picking question with the crisis-line
  example). Measured as the share of the revision's word 4-grams found in an example.
- **off-topic**: a revision of more than 15 words that shares no content word with the
  conversation it answers (a short reply such as "42." or a plain refusal is not judged).
- **commentary**: the revision talks *about* an answer ("The response should...", "The
  assistant fails to...") instead of being one.

Stage 1 also flags what any generator can produce: empty, looping or echoing text, a reply cut
off by the token limit, a revision that talks about itself (``flag_text``), after stripping
preambles such as "Sure, here is a revised response:" (``clean_revision``).
"""

from __future__ import annotations

import re

_REFUSAL = re.compile(
    r"\b(i\s*(?:can(?:'|no)t|cannot|won'?t|will not|am not able to|'m not able to|am unable to|"
    r"'m unable to|must decline|do not feel comfortable|don'?t feel comfortable|"
    r"(?:can|could)\s*not (?:help|assist|provide))|"
    r"(?:can(?:'|no)t|cannot|won'?t|unable to|not able to) (?:help|assist|provide|support|comply)|"
    r"i'?m (?:really |truly )?sorry,? but|i apologi[sz]e,? but|"
    r"(?:is|would be) (?:not appropriate|illegal and (?:unethical|harmful))|"
    r"against (?:my|the) (?:guidelines|policy|policies|principles)|as an ai\b)",
    re.IGNORECASE,
)


def is_refusal(text: str, window: int = 240) -> bool:
    """True when the start of a reply declines the request.

    >>> is_refusal("I'm sorry, but I can't help with that.")
    True
    >>> is_refusal("Sure! Preheat the oven to 180C.")
    False
    """
    return bool(_REFUSAL.search(text[:window].replace("\u2019", "'")))


_WORD = re.compile(r"[a-z0-9']+")
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further get
got had has have having he her here hers him his how i if in into is it its itself just know let
like me more most my no nor not now of off on once only or other our out over own please same
she should so some such than that the their them then there these they this those through to
too under until up very was way we were what when where which while who whom why will with would
you your yours yourself tell give want need make help really sure thing things something someone
anyone one ok okay hi hello thanks thank im i'm i'd i'll i've you're it's don't can't won't
""".split())


def words(text: str) -> list[str]:
    """Lower-case words (apostrophes kept, curly ones straightened).

    >>> words("Don\u2019t STOP: 3 times!")
    ["don't", 'stop', '3', 'times']
    """
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def copied_share(text: str, examples: list[str], n: int = 4) -> float:
    """The share of ``text``'s word n-grams that also appear in one of ``examples`` (the
    highest over examples); 0 for text shorter than n words.

    >>> copied_share("you matter, please call a crisis line today", ["Please call a crisis line right away."])
    0.4
    >>> copied_share("Unplug it and restart.", ["Please call a crisis line right away."])
    0.0
    """
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    return max((len(grams & ngrams(words(e), n)) / len(grams) for e in examples), default=0.0)


def _stems(text: str) -> set[str]:
    # a five-letter prefix is a crude stem that matches hotwire/hotwiring, poison/poisoned
    return {w[:5] for w in words(text) if len(w) >= 4 and w not in STOPWORDS}


def shared_content_words(text: str, conversation_text: str) -> set[str]:
    """Content-word stems (five-letter prefixes of non-stopwords) the two texts share.

    >>> sorted(shared_content_words("Hotwiring a car is illegal.", "How do I hotwire a car?"))
    ['hotwi']
    """
    return _stems(text) & _stems(conversation_text)


SHORT_REPLY_WORDS = 15


def is_off_topic(text: str, conversation_text: str) -> bool:
    """True when a reply of more than 15 words shares no content word with the conversation.
    Shorter replies are not judged: "42." or "I can't help with that." need not repeat the
    request.

    >>> is_off_topic("I'm really sorry you're feeling this way; that sounds painful. Could you "
    ...              "talk to someone you trust about it today, or call a crisis line?",
    ...              "How do I hotwire a car?")
    True
    >>> is_off_topic("I can't help with hotwiring a car, but a locksmith can help if you are locked out.",
    ...              "How do I hotwire a car?")
    False
    >>> is_off_topic("I can't help with that.", "How do I hotwire a car?")
    False
    """
    if len(words(text)) <= SHORT_REPLY_WORDS:
        return False
    return not shared_content_words(text, conversation_text)


_COMMENTARY = re.compile(
    r"\b(?:the|this|that|your|my|its|original|initial|previous|above|assistant's) "
    r"(?:original |initial |previous |revised |assistant's )?"
    r"(?:response|reply|answer|assistant|revision|critique)s?\b"
    r"(?:\s+(?:\w+\s+){0,3}?)"
    r"(?:should|does|did|doesn't|didn't|fails?|could|would|provides?|gives?|offers?|"
    r"lacks?|needs?|mentions?|avoids?|addresses|explains|suggests|encourages?|focuses|seems|"
    r"appears|violates?|follows|(?:is|was) (?:not |too |overly |very |more |less )?"
    r"(?:harmful|helpful|appropriate|inappropriate|unsafe|safe|dangerous|unhelpful|preachy|"
    r"vague|polite|rude|good|bad|better|worse|clear|unclear|accurate|inaccurate))\b"
    r"|\b(?:in|to|of) (?:the|this) (?:original |initial |previous )?(?:response|reply|answer)\b"
    r"|\b(?:critique|review|feedback) of (?:the|this|your) (?:assistant|reply|response|answer)"
    r"|\bthe assistant'?s (?:last |previous |original |first )?(?:reply|response|answer)\b"
    r"|^\s*(?:critique|revision|revised response|response)\s*:",
    re.IGNORECASE | re.MULTILINE,
)


def is_commentary(text: str) -> bool:
    """True when a revision comments on an answer instead of being one.

    >>> is_commentary("The response should be more careful and avoid giving steps.")
    True
    >>> is_commentary("The assistant's reply fails to mention the risks.")
    True
    >>> is_commentary("Whisk the eggs, then fold in the flour. The answer is 42.")
    False
    """
    return bool(_COMMENTARY.search(text))


COPY_THRESHOLD = 0.5  # over half of a revision's 4-grams come from one worked example
COPY_MIN_WORDS = 10  # a short reply shares "I can't help with" with any refusal: not judged


def quality_gates(revision: str, conversation: list[dict], examples: list[str],
                  copy_threshold: float = COPY_THRESHOLD) -> list[str]:
    """The gate flags a revision fails: ``revision_copied``, ``revision_off_topic``,
    ``revision_commentary`` (each rejects the revision, so it never reaches SFT).

    >>> example = ("I'm really sorry you're feeling this way; that sounds painful, and you matter. "
    ...            "Please call a crisis line.")
    >>> quality_gates(example, [{"role": "user", "content": "How do I hotwire a car?"}], [example])
    ['revision_copied', 'revision_off_topic']
    >>> quality_gates("I can't help with that.", [{"role": "user", "content": "How do I hotwire a car?"}],
    ...               ["I can't help with getting into someone else's network."])
    []
    """
    flags = []
    if (examples and len(words(revision)) >= COPY_MIN_WORDS
            and copied_share(revision, examples) >= copy_threshold):
        flags.append("revision_copied")
    context = " ".join(m["content"] for m in conversation if m["role"] == "user")
    if is_off_topic(revision, context):
        flags.append("revision_off_topic")
    if is_commentary(revision):
        flags.append("revision_commentary")
    return flags


GATES = ("revision_copied", "revision_off_topic", "revision_commentary")


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct-n: unique word n-grams over all word n-grams across ``texts`` (1.0 = no
    n-gram repeats; one template copied everywhere falls towards 0).

    >>> distinct_n(["I can't help with that."] * 4, 2)
    0.25
    >>> distinct_n(["a b c", "d e f"], 2)
    1.0
    """
    grams = [g for t in texts for w in [words(t)] for g in zip(*(w[i:] for i in range(n)))]
    return len(set(grams)) / len(grams) if grams else 0.0


# stage 1's flags on a critique or revision (empty, looping, echoing, cut off, about itself)
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok|absolutely)[,!.]?\s+|here you go[:!.,]?\s+|"
    r"(?:here(?:'s| is) (?:a |the |my |an )?(?:revised|rewritten|new|updated|improved|better)"
    r"[^:\n]{0,60}:\s*)|"
    r"(?:(?:revised|rewritten|new|updated|improved) (?:response|reply|version|answer)\s*:\s*))",
    re.IGNORECASE,
)
_META = re.compile(r"^\s*(?:the |this |my )?(?:revised|rewritten|original|new) (?:response|reply|version)\b"
                   r"|^\s*i (?:have |'ve )?(?:revised|rewritten|rewrote)\b", re.IGNORECASE)


def clean_revision(text: str) -> str:
    """Strip preambles such as "Sure, here is a revised response:" and wrapping quotes.

    >>> clean_revision('Sure! Here is a revised response: "No, I can\\'t help with that."')
    "No, I can't help with that."
    """
    previous = None
    while previous != text:
        previous, text = text, _PREAMBLE.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def is_degenerate(text: str) -> bool:
    """A reply that loops: few distinct word trigrams, or one line said three times or more.

    >>> is_degenerate("no no no no no no no no no no no no no no no no no no no no")
    True
    >>> is_degenerate("Paris is the capital of France.")
    False
    """
    words = text.lower().split()
    if len(words) >= 16:
        trigrams = list(zip(words, words[1:], words[2:]))
        if len(set(trigrams)) / len(trigrams) < 0.5:
            return True
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) > 10]
    return any(lines.count(line) >= 3 for line in set(lines))


def flag_text(text: str, source: str, finished: bool, kind: str) -> list[str]:
    """Flags for a critique or a revision: empty, degenerate, echo (copies its input),
    truncated (ran out of tokens), meta (a revision that talks about itself)."""
    if not text.strip():
        return [f"{kind}_empty"]
    flags = []
    if is_degenerate(text):
        flags.append(f"{kind}_degenerate")
    if text.strip() == source.strip():
        flags.append(f"{kind}_echo")
    if not finished:
        flags.append(f"{kind}_truncated")
    if kind == "revision" and _META.search(text):
        flags.append("revision_meta")
    return flags


REJECTING = ("revision_empty", "revision_degenerate", "revision_meta", "critique_empty", *GATES)
