"""Rule-based rewards, each in [0, 1] with higher = better. Stdlib only.

They guard the bias reward against cheap hacks: a policy can look "unbiased" by saying nothing
(length), by refusing (refusal) or by emitting degenerate text the classifier has never seen (format).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class _Rule:
    name = "rule"

    def score(self, completion: str) -> float:
        raise NotImplementedError

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [self.score(c) for c in completions]

    def close(self) -> None:
        pass


class LengthReward(_Rule):
    """1 when the word count lies in [min_words, max_words]; a Gaussian fall-off outside.

    The fall-off width is `softness` times the band edge it left, so missing a band of 8..80 words by
    4 words costs as much as missing it by 40 at the top: relative, not absolute, distance matters.
    Smooth rather than a step so GRPO sees a gradient of preference between two too-short answers.
    """

    name = "length"

    def __init__(self, min_words: int = 8, max_words: int = 120, softness: float = 0.5) -> None:
        if min_words < 0 or max_words < max(min_words, 1):
            raise ValueError(f"length band [{min_words}, {max_words}] is empty: need 0 <= min_words <= max_words, "
                             "max_words >= 1")
        if softness <= 0:
            raise ValueError(f"softness must be > 0, got {softness}")
        self.min_words, self.max_words, self.softness = min_words, max_words, softness

    def score(self, completion: str) -> float:
        n = len(words(completion))
        if n < self.min_words:
            z = (self.min_words - n) / (self.softness * self.min_words)
        elif n > self.max_words:
            z = (n - self.max_words) / (self.softness * self.max_words)
        else:
            return 1.0
        return math.exp(-0.5 * z * z)


# Boilerplate that chat models use to decline. Matched case-insensitively; curly apostrophes are
# normalised first. Kept specific ("I can't help with") rather than bare "I can't" so a sentence like
# "I can't say that all nurses are women" still counts as an answer.
REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bi(?: am|'m)? (?:sorry|afraid),? but\b",
    r"\bi apologi[sz]e,? but\b",
    r"\bi (?:can ?not|can't|won't|will not|am unable to|'m unable to|am not able to|'m not able to|must not"
    r"|shouldn't|should not) (?:help|assist|provide|comply|answer|respond|do that|fulfil|fulfill|engage|generate"
    r"|create|write|produce|complete|continue|participate|support|make|share|discuss)\b",
    r"\bi (?:must|have to|need to) (?:decline|refuse)\b",
    r"\bi(?: do not|'m not| am not| don't) (?:feel )?comfortable\b",
    r"\bas an ai(?: language model| assistant| model)?\b",
    r"\bi(?: am|'m) (?:just |only )?an ai\b",
    r"\b(?:it is|it's|it would be) (?:not appropriate|inappropriate|not okay|harmful) (?:for me )?to\b",
    r"\bi (?:can ?not|can't|won't|will not) (?:engage in|promote|perpetuate|condone|endorse)\b",
    r"\bthis (?:request|question|prompt) (?:is|promotes|contains|perpetuates) (?:inappropriate|harmful|offensive"
    r"|stereotyp)",
)


class RefusalReward(_Rule):
    """1 for an answer, 0 for a refusal, `partial` when refusal boilerplate appears after a real answer.

    A refusal "opens" the completion when a pattern matches within its first `window` characters: the
    usual shape ("I'm sorry, but I can't ..."). Later hedges cost less because the answer is there.
    """

    name = "refusal"

    def __init__(self, window: int = 160, partial: float = 0.5, extra_patterns: Sequence[str] = ()) -> None:
        if not 0.0 <= partial <= 1.0:
            raise ValueError(f"partial must be in [0, 1], got {partial}")
        if window < 1:
            raise ValueError(f"window must be >= 1 character, got {window}")
        try:
            self._patterns = [re.compile(p, re.IGNORECASE) for p in (*REFUSAL_PATTERNS, *extra_patterns)]
        except re.error as exc:
            raise ValueError(f"an extra_patterns entry is not a valid regular expression: {exc}") from exc
        self.window, self.partial = window, partial

    def first_refusal(self, completion: str) -> int | None:
        """Character offset of the earliest refusal phrase, or None."""
        text = completion.replace("\u2019", "'").replace("\u2018", "'")
        starts = [m.start() for p in self._patterns if (m := p.search(text))]
        return min(starts) if starts else None

    def score(self, completion: str) -> float:
        at = self.first_refusal(completion)
        if at is None:
            return 1.0
        leading = len(completion) - len(completion.lstrip())
        return 0.0 if at - leading < self.window else self.partial


class FormatReward(_Rule):
    """Non-empty, non-degenerate text: the product of a repetition score and a "is it prose" score.

    repetition: the share r of word n-grams that repeat an earlier one; score max(0, 1 - r / max_repeat).
      "the the the the" and looping sentences drive r toward 1; normal prose of a few sentences is ~0.
    prose: the share of non-space characters that are letters; below min_alpha the score falls linearly
      to 0 (emoji walls, "!!!!", code dumps where prose was asked for).
    Empty or whitespace-only completions score 0.
    """

    name = "format"

    def __init__(self, n: int = 3, max_repeat: float = 0.5, min_alpha: float = 0.6) -> None:
        if n < 1:
            raise ValueError(f"n (n-gram size) must be >= 1, got {n}")
        if not 0.0 < max_repeat <= 1.0:
            raise ValueError(f"max_repeat must be in (0, 1], got {max_repeat}")
        if not 0.0 <= min_alpha <= 1.0:
            raise ValueError(f"min_alpha must be in [0, 1], got {min_alpha}")
        self.n, self.max_repeat, self.min_alpha = n, max_repeat, min_alpha

    def repeated_fraction(self, completion: str) -> float:
        toks = words(completion)
        grams = [tuple(toks[i : i + self.n]) for i in range(len(toks) - self.n + 1)]
        if not grams:
            return 0.0
        return 1.0 - len(set(grams)) / len(grams)

    def alpha_fraction(self, completion: str) -> float:
        chars = [c for c in completion if not c.isspace()]
        return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0

    def score(self, completion: str) -> float:
        if not completion.strip():
            return 0.0
        rep = max(0.0, 1.0 - self.repeated_fraction(completion) / self.max_repeat)
        alpha = self.alpha_fraction(completion)
        prose = 1.0 if alpha >= self.min_alpha or self.min_alpha == 0 else alpha / self.min_alpha
        return rep * prose
