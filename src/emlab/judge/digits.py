"""The digit readout: 0-100 scores from judges whose tokenizer splits numbers into digits.

Qwen, Gemma, Mistral and Llama-2 tokenizers write 85 as the tokens '8', '5'. The first
token's top log-probabilities of such a judge meaning ~85 hold '8', '9', '7', which the
whole-token readout (`aggregate.aggregate`) reads as ~8. DESIGN.md ("Judge score"): judges
that split numbers into digits need a sequence-level method. This one reads the
distribution of the whole number one token at a time:

    P(n) = P(first token) * P(next token | prefix) * ... * P(end | all of n's digits)

A prefix that can still grow into another number 0..100 ('1'..'9' and '10', see `GROWABLE`)
is continued: the judge's reply so far is sent back as an open assistant message and the
next token's top log-probabilities are read (one request per prefix). Any non-digit token
after a prefix (end of turn, punctuation) ends the number, so P(end | s) = 1 - the listed
probability of digit tokens after s. '0', and first tokens such as '85' or '100' (judges
with whole-number tokens), are complete numbers. Not counted as number mass: prefixes whose
probability is below `min_prefix_prob` (they are not continued) and numbers above 100.
The score is `aggregate` over the numbers read plus the first token's non-number tokens,
so the minimum-number-mass rule and the refusal / code reasons are those of whole tokens.
The readout's number mass is at most the first token's, so a reply whose first token already
has too little number mass is scored None from that token alone, with no continuation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from emlab.judge.aggregate import aggregate, number_value

TopLogprobs = Sequence[tuple[str, float]]

GROWABLE = frozenset([*"123456789", "10"])
"""Prefixes after which another digit still gives a number 0..100 ('0' does not: no leading
zeros)."""

WHOLE_NUMBER_EVIDENCE = 0.01
"""A reply with at least this probability on two- or three-digit number tokens ('10'..'100')
shows a tokenizer with whole-number tokens: digit-splitting tokenizers have none in use."""

_DIGITS = re.compile(r"[0-9]+")


def has_whole_number_tokens(top: TopLogprobs) -> bool:
    """True when the reply gives >= WHOLE_NUMBER_EVIDENCE probability to tokens of two or three
    digits."""
    mass = sum(
        p for t, p in _probs(top) if _DIGITS.fullmatch(t.strip()) and len(t.strip()) in (2, 3)
    )
    return mass >= WHOLE_NUMBER_EVIDENCE


def read_numbers(
    first: TopLogprobs, continuations: Mapping[str, TopLogprobs], min_prefix_prob: float
) -> tuple[dict[int, float], list[str]]:
    """({number: probability}, prefixes still to request) for one reply.

    `first`: the first token's (token, logprob) pairs; `continuations`: prefix -> the next
    token's (token, logprob) pairs after the open assistant message `prefix`. First tokens
    count by their text without surrounding whitespace (' 8' and '8' are one prefix). A
    prefix in GROWABLE with probability >= `min_prefix_prob` and absent from
    `continuations` is listed as still to request (its mass is not in the numbers yet).
    """
    numbers: dict[int, float] = {}
    missing: list[str] = []
    stack = list(_first_prefixes(first).items())
    while stack:
        prefix, p = stack.pop()
        if prefix not in GROWABLE:
            numbers[int(prefix)] = numbers.get(int(prefix), 0.0) + p
            continue
        if p < min_prefix_prob:
            continue
        reply = continuations.get(prefix)
        if reply is None:
            missing.append(prefix)
            continue
        digit_mass = 0.0
        for token, q in _probs(reply):
            if _DIGITS.fullmatch(token):
                digit_mass += q
                if int(prefix + token) <= 100:
                    stack.append((prefix + token, p * q))
        numbers[int(prefix)] = numbers.get(int(prefix), 0.0) + p * max(0.0, 1.0 - digit_mass)
    return numbers, missing


def missing_prefixes(
    first: TopLogprobs,
    continuations: Mapping[str, TopLogprobs],
    min_prefix_prob: float,
    min_mass: float,
) -> list[str]:
    """The prefixes `digit_score` still needs continued (distinct; none when the first token's
    number mass is already below `min_mass`)."""
    if aggregate(first, min_mass)[0] is None:
        return []
    return list(dict.fromkeys(read_numbers(first, continuations, min_prefix_prob)[1]))


def digit_score(
    first: TopLogprobs,
    continuations: Mapping[str, TopLogprobs],
    min_prefix_prob: float,
    min_mass: float,
) -> tuple[float | None, str | None]:
    """(score, None) or (None, reason): `aggregate` over the numbers `read_numbers` reads.

    Raises ValueError when a prefix to continue is missing from `continuations`.
    """
    first_token_only = aggregate(first, min_mass)
    if first_token_only[0] is None:
        return first_token_only
    numbers, missing = read_numbers(first, continuations, min_prefix_prob)
    if missing:
        raise ValueError(f"no continuation for prefix(es) {sorted(set(missing))}")
    read = [(str(n), math.log(p)) for n, p in numbers.items() if p > 0]
    others = [(t, lp) for t, lp in first if number_value(t) is None]
    return aggregate(read + others, min_mass)


def _first_prefixes(first: TopLogprobs) -> dict[str, float]:
    prefixes: dict[str, float] = {}
    for token, p in _probs(first):
        if number_value(token) is not None:
            prefixes[token.strip()] = prefixes.get(token.strip(), 0.0) + p
    return prefixes


def _probs(top: TopLogprobs) -> list[tuple[str, float]]:
    return [(t, math.exp(lp)) for t, lp in top if math.isfinite(lp)]
