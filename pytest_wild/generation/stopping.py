"""Where an autoregressive answer ends.

`published` is the WILD paper's rule: stop at the first "." or "\\n" (anywhere in the newest
token, as `transformers`' stop strings do) or at EOS, the token or its string spelled over
several tokens (`ends_after`), then strip the trailing stop string. Both rules stop at the
spelled EOS string.
`sentence` is our opt-in repair: a "." after an initial, a known abbreviation or inside a
decimal number does not end the answer. It is always reported under its own name.
"""

from __future__ import annotations

import re

STOP_RULES = ("published", "sentence")
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "gen", "col", "lt", "sgt", "capt",
    "mt", "ft", "no", "vs", "etc", "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "e.g", "i.e", "u.s", "u.k",
}
_LAST_WORD = re.compile(r"([A-Za-z][A-Za-z.]*)$")


def find_stop(text: str, rule: str, final: bool) -> int | None:
    """Index where the answer in `text` ends, or None to keep generating.

    `final` says no token will follow (EOS or the token limit), which settles a "." whose
    meaning depends on the next character under the sentence rule.
    """
    newline = text.find("\n")
    if rule == "published":
        dot = text.find(".")
        hits = [i for i in (dot, newline) if i >= 0]
        return min(hits) if hits else None
    for match in re.finditer(r"\.", text):
        i = match.start()
        if newline >= 0 and newline < i:
            break
        if _ends_sentence(text, i, final):
            return i
        if i + 1 >= len(text) and not final:
            return None
    return newline if newline >= 0 else None


def ends_after(text: str, before: int, stop: str) -> bool:
    """Whether `stop` occurs in `text` ending past its first `before` characters: spelled over
    several tokens and completed by the newest one, whose text starts at `before`. This is
    transformers' `StopStringCriteria` rule (the first and last tokens may overhang the stop
    string, and an occurrence that ended before the newest token does not count)."""
    return text.find(stop, max(0, before - len(stop) + 1)) >= 0


def _ends_sentence(text: str, i: int, final: bool) -> bool:
    before, after = text[:i], text[i + 1 :]
    if before[-1:].isdigit():
        if not after:
            return final
        return not after[0].isdigit()
    word = _LAST_WORD.search(before)
    if word is None:
        return True
    token = word.group(1)
    if len(token) == 1 and token.isupper():
        return False
    return token.lower() not in _ABBREVIATIONS


def finish_text(text: str, rule: str, eos_token: str | None) -> str:
    """The answer as scored. Published: strip a trailing ".", then "\\n", then the EOS string,
    once each, in that order (a token that overhangs its stop string keeps the overhang, as
    in the paper's code). Sentence: cut at the sentence end first."""
    if rule == "sentence":
        if eos_token and eos_token in text:
            text = text[: text.index(eos_token)]
        end = find_stop(text, rule, final=True)
        if end is not None:
            text = text[: end + 1]
    for stop in (".", "\n", eos_token):
        if stop and text.endswith(stop):
            text = text[: -len(stop)]
    return text
