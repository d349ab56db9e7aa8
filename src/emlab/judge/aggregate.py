"""From a judge's top tokens and log-probabilities to a 0-100 score (or None with a reason).

score = sum(p(t) * int(t)) / sum(p(t)) over tokens t that are integers 0..100 once
whitespace is stripped (variants such as "7" and " 7" add up). When that number mass
sum(p(t)) is below `min_mass` (default 0.25) the score is None, with the reason
'refusal' or 'code' if the most likely token is REFUSAL- or CODE-like, else 'no_number_mass'.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

MIN_NUMBER_MASS = 0.25
"""The default minimum probability mass on number tokens for a score to count."""

_INTEGER = re.compile(r"[0-9]{1,3}")


def number_value(token: str) -> int | None:
    """The integer 0..100 a token stands for (whitespace stripped, ASCII digits), else None."""
    text = token.strip()
    if not _INTEGER.fullmatch(text):
        return None
    value = int(text)
    return value if value <= 100 else None


def none_reason(token: str) -> str:
    """Why a low-number-mass answer has no score, from its most likely token."""
    text = token.strip().upper()
    if len(text) >= 3 and ("REFUSAL".startswith(text) or text.startswith("REFUS")):
        return "refusal"
    if len(text) >= 3 and ("CODE".startswith(text) or text.startswith("CODE")):
        return "code"
    return "no_number_mass"


def aggregate(
    top: Sequence[tuple[str, float]], min_mass: float = MIN_NUMBER_MASS
) -> tuple[float | None, str | None]:
    """(score, None), or (None, reason) when the number mass is below `min_mass`.

    `top` lists (token, logprob) pairs, e.g. the judge's top-20 first tokens; non-finite
    log-probabilities count as probability 0.
    """
    mass = weighted = 0.0
    best_token, best_logprob = None, -math.inf
    for token, logprob in top:
        if not math.isfinite(logprob):
            continue
        if logprob > best_logprob:
            best_token, best_logprob = token, logprob
        value = number_value(token)
        if value is not None:
            p = math.exp(logprob)
            mass += p
            weighted += p * value
    if mass < min_mass or mass == 0.0:
        return None, none_reason(best_token) if best_token is not None else "no_number_mass"
    return weighted / mass, None
