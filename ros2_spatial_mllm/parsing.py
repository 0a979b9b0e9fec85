"""Answer parsing and scoring helpers (VSI-Bench conventions, plus robustness for real replies).

Public API (the data engine, evaluation, rewards and the node import these; never re-write them):

- ``strip_answer_tags(text)``: drop ``<think>...</think>`` blocks and return the content of the
  first ``<answer>...</answer>`` (or the whole remaining text when there is no tag).
- ``first_word(text)``: VSI-Bench's own parse: first whitespace-separated word, trailing '.'
  stripped (``"3.5 meters."`` -> ``"3.5"``; ``"B."`` -> ``"B"``).
- ``parse_answer(text, options=None, unit=None) -> ParsedAnswer``: option letter, number (+ unit,
  optionally converted to a canonical unit) or free text.
- ``parse_number(text) -> (value, unit) | None`` and ``convert_unit(value, from_unit, to_unit)``.
- ``mean_relative_accuracy(pred, gt)``: VSI-Bench MRA.

Parsing rules of ``parse_answer`` (the reply first goes through ``strip_answer_tags``):

With ``options`` (multiple choice), the first rule that gives a letter inside the option range wins:
  1. a leading letter, optionally after "Answer:"/"The answer is"/"Option": ``B``, ``B.``,
     ``(B)``, ``[B]``, ``B) chair``, ``Answer: B``; a capital ``A``/``I`` followed by a lower-case
     word is read as the English word, not a letter ("A chair is ...");
  2. "answer/option/choice (is) X" anywhere in the reply;
  3. exactly one distinct parenthesised letter "(C)" anywhere, else a lone capital letter as the
     reply's last word ("I think B");
  4. option text: the reply equals one option's text (case/punctuation-insensitive) or contains
     exactly one option's text as whole words (options contained in a longer matched option,
     e.g. "left" inside "front-left", are discarded first).
  No match -> ``kind="text"``.

Without options: the first number in the reply (digits, "1,234" thousands, "2,5" decimal comma,
"three" for zero..twenty when no digit is present) with the unit written right after it
(m, cm, mm, km, ft, inch, m²/m2/m^2/sq m/square meters, cm², ft²); ranges such as "3-4 m" give the
first number. No number but the whole reply is a lone letter ("B", "(B)", "Answer: B") ->
``kind="choice"``. Otherwise ``kind="text"`` (free text passes through).

``unit`` ("m", "cm", "m²" or any alias) asks for conversion to that canonical unit: a reply unit
of the same dimension is converted ("120cm" -> 1.2 with unit="m"); a reply without a unit is
assumed to be in the canonical unit already; a unit of another dimension is left unconverted and
reported in ``unit`` so the caller sees the mismatch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ros2_spatial_mllm.prompts import normalize_options, option_letters

__all__ = [
    "ParsedAnswer",
    "MRA_THRESHOLDS",
    "strip_answer_tags",
    "answer_tag_content",
    "first_word",
    "parse_answer",
    "parse_choice",
    "parse_number",
    "canonical_unit",
    "convert_unit",
    "mean_relative_accuracy",
]


@dataclass(frozen=True)
class ParsedAnswer:
    """Result of ``parse_answer``.

    kind: "choice" | "number" | "text"; choice: option letter ("A".."Z") or None;
    value: the number (converted when a canonical unit was asked) or None;
    unit: the unit of ``value`` (canonical name, e.g. "m", "cm", "m²") or None;
    text: the answer text after tag stripping; raw_unit: the unit as written in the reply.
    """

    kind: str
    choice: Optional[str]
    value: Optional[float]
    unit: Optional[str]
    text: str
    raw_unit: Optional[str] = None


# ---------------------------------------------------------------------------------------- tags
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ANY_TAG = re.compile(r"</?(?:answer|think)>", re.IGNORECASE)


def answer_tag_content(text: str) -> Optional[str]:
    """Content of the first complete ``<answer>...</answer>`` outside ``<think>``, else None."""
    if not text:
        return None
    match = _ANSWER_BLOCK.search(_THINK_BLOCK.sub("", text))
    return match.group(1).strip() if match else None


def strip_answer_tags(text: Optional[str]) -> str:
    """Remove reasoning and answer tags and return the answer text, stripped.

    ``"<think>...</think><answer> B </answer>"`` -> ``"B"``. A stray ``</think>`` (template put
    the opening tag in the prompt) keeps only what follows it; an unclosed ``<think>`` (generation
    cut off) drops everything after it unless an ``<answer>`` follows; an unclosed ``<answer>``
    keeps everything after it.
    """
    if not text:
        return ""
    remaining = _THINK_BLOCK.sub("", text)
    lowered = remaining.lower()
    if "</think>" in lowered:
        remaining = remaining[lowered.rindex("</think>") + len("</think>"):]
        lowered = remaining.lower()
    if "<think>" in lowered:
        start = lowered.index("<think>")
        after = lowered.find("<answer>", start)
        remaining = remaining[:start] + (remaining[after:] if after >= 0 else "")
    match = _ANSWER_BLOCK.search(remaining)
    if match:
        return match.group(1).strip()
    lowered = remaining.lower()
    if "<answer>" in lowered:
        remaining = remaining[lowered.index("<answer>") + len("<answer>"):]
    return _ANY_TAG.sub("", remaining).strip()


def first_word(text: Optional[str]) -> str:
    """VSI-Bench parse: first whitespace-separated word with trailing '.' stripped ('' if none)."""
    if not text:
        return ""
    words = text.split()
    return words[0].rstrip(".").strip() if words else ""


# ------------------------------------------------------------------------------------- numbers
# canonical unit -> (dimension, factor to SI base: metres or square metres)
_UNIT_INFO: Dict[str, Tuple[str, float]] = {
    "m": ("length", 1.0), "cm": ("length", 0.01), "mm": ("length", 0.001),
    "km": ("length", 1000.0), "ft": ("length", 0.3048), "inch": ("length", 0.0254),
    "m²": ("area", 1.0), "cm²": ("area", 1e-4), "ft²": ("area", 0.09290304),
}
_METRE = r"(?:met(?:er|re)s?)"
# (regex, canonical) — order matters: area forms and long names before short ones.
_UNIT_PATTERNS = [
    (rf"(?:square|sq\.?)\s*(?:{_METRE}|m)|m\s*(?:²|\^2|2)|sqm|{_METRE}\s*(?:²|\^2|squared)", "m²"),
    (r"(?:square|sq\.?)\s*(?:centi" + _METRE + r"|cm)|cm\s*(?:²|\^2|2)", "cm²"),
    (r"(?:square|sq\.?)\s*(?:feet|foot|ft)|ft\s*(?:²|\^2|2)|sqft", "ft²"),
    (r"centi" + _METRE + r"|cm", "cm"),
    (r"milli" + _METRE + r"|mm", "mm"),
    (r"kilo" + _METRE + r"|km", "km"),
    (_METRE + r"|m", "m"),
    (r"feet|foot|ft", "ft"),
    (r"inch(?:es)?", "inch"),
]
_UNIT_AFTER_NUMBER = re.compile(
    r"\s*-?\s*(?:" + "|".join(f"(?P<u{i}>{pattern})" for i, (pattern, _) in enumerate(_UNIT_PATTERNS))
    + r")(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_UNIT_ALIASES = {
    "m": "m", "meter": "m", "meters": "m", "metre": "m", "metres": "m",
    "cm": "cm", "mm": "mm", "km": "km", "ft": "ft", "feet": "ft", "inch": "inch", "in": "inch",
    "m²": "m²", "m2": "m²", "m^2": "m²", "sq m": "m²", "sqm": "m²", "square meters": "m²",
    "cm²": "cm²", "cm2": "cm²", "ft²": "ft²", "ft2": "ft²", "sq ft": "ft²",
}
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-+\u2212]?)"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:[.,]\d+)?|\.\d+)"
    r"(?P<exp>[eE][-+]?\d+)?"
)
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20,
}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


def canonical_unit(name: str) -> str:
    """Canonical unit name for an alias ("metres" -> "m", "sq m" -> "m²"); ValueError if unknown."""
    key = " ".join(str(name).strip().lower().split())
    if key in _UNIT_ALIASES:
        return _UNIT_ALIASES[key]
    if key in _UNIT_INFO:
        return key
    raise ValueError(f"unknown unit {name!r}; known: {sorted(set(_UNIT_ALIASES.values()))}")


def convert_unit(value: float, from_unit: str, to_unit: str) -> float:
    """Convert ``value`` between units of the same dimension (length or area); ValueError if not."""
    source, target = canonical_unit(from_unit), canonical_unit(to_unit)
    (source_dim, source_factor), (target_dim, target_factor) = _UNIT_INFO[source], _UNIT_INFO[target]
    if source_dim != target_dim:
        raise ValueError(f"cannot convert {source} ({source_dim}) to {target} ({target_dim})")
    return value * source_factor / target_factor


_RANGE_TAIL = re.compile(r"\s*(?:-|\u2013|to)\s*(?:\d+(?:[.,]\d+)?)", re.IGNORECASE)


def _unit_at(text: str, position: int) -> Optional[str]:
    """Unit written at ``position`` (right after a number, or after a range "3-4 m" / "3 to 4 m")."""
    match = _UNIT_AFTER_NUMBER.match(text, position)
    if match is None:
        tail = _RANGE_TAIL.match(text, position)
        match = _UNIT_AFTER_NUMBER.match(text, tail.end()) if tail else None
    if match is None:
        return None
    for i, (_, canonical) in enumerate(_UNIT_PATTERNS):
        if match.group(f"u{i}") is not None:
            return canonical
    return None


def parse_number(text: Optional[str]) -> Optional[Tuple[float, Optional[str]]]:
    """First number in ``text`` and the unit written right after it, or None.

    ``"about 3.5 m"`` -> ``(3.5, "m")``; ``"120cm"`` -> ``(120.0, "cm")``; ``"2,5"`` -> ``(2.5, None)``;
    ``"1,234"`` -> ``(1234.0, None)``; ``"three chairs"`` -> ``(3.0, None)``; ``"12 m²"`` -> ``(12.0, "m²")``.
    """
    if not text:
        return None
    match = _NUMBER.search(text)
    if match is not None:
        digits = match.group("num")
        if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", digits):
            digits = digits.replace(",", "")
        else:
            digits = digits.replace(",", ".")
        value = float(digits + (match.group("exp") or ""))
        if match.group("sign") in ("-", "\u2212"):
            value = -value
        if not math.isfinite(value):
            return None
        return value, _unit_at(text, match.end())
    word = _NUMBER_WORD.search(text)
    if word is not None:
        return float(_NUMBER_WORDS[word.group(1).lower()]), _unit_at(text, word.end())
    return None


# ------------------------------------------------------------------------------------- choices
_LEAD_PHRASE = re.compile(
    r"^\s*(?:the\s+)?(?:final\s+|correct\s+|best\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*",
    re.IGNORECASE,
)
_LEAD_LETTER = re.compile(r"^[\(\[]?([A-Z])(?:[\)\]]|(?=$|[\s.,:;!]))")
_LONE_LOWER_LETTER = re.compile(r"^[\(\[]?([a-z])[\)\]]?\.?$")
_KEYWORD_LETTER = re.compile(
    r"(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:\-]?\s*[\(\[]?([A-Z])(?![A-Za-z0-9])"
)
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_LAST_LETTER = re.compile(r"(?:^|\s)([A-Z])[.)]?\s*$")


def _normalise_words(text: str) -> str:
    return " ".join(re.sub(r"[^\w²]+", " ", text.casefold()).split())


def _leading_letter(text: str) -> Optional[str]:
    body = _LEAD_PHRASE.sub("", text, count=1)
    match = _LEAD_LETTER.match(body)
    if match:
        letter = match.group(1)
        rest = body[match.end():]
        # "A chair is closer" / "I think" -> English words, not letters.
        if letter in "AI" and re.match(r"\s+[a-z]", rest) and not body.startswith(("(", "[")):
            return None
        return letter
    lower = _LONE_LOWER_LETTER.match(body.strip())
    return lower.group(1).upper() if lower else None


def parse_choice(text: str, options: Sequence[str]) -> Optional[str]:
    """Option letter chosen by ``text`` (already tag-stripped), or None. Rules: module docstring."""
    texts = normalize_options(options)
    valid = set(option_letters(len(texts)))
    letter = _leading_letter(text)
    if letter in valid:
        return letter
    for match in _KEYWORD_LETTER.finditer(text):
        if match.group(1) in valid:
            return match.group(1)
    parenthesised = {m.group(1) for m in _PAREN_LETTER.finditer(text)} & valid
    if len(parenthesised) == 1:
        return parenthesised.pop()
    last = _LAST_LETTER.search(text)
    if last and last.group(1) in valid:
        return last.group(1)
    reply = _normalise_words(text)
    option_words = [_normalise_words(option) for option in texts]
    for index, words in enumerate(option_words):
        if words and reply == words:
            return option_letters(len(texts))[index]
    padded = f" {reply} "
    found = [i for i, words in enumerate(option_words) if words and f" {words} " in padded]
    found = [i for i in found if not any(
        j != i and f" {option_words[i]} " in f" {option_words[j]} " for j in found)]
    if len(found) == 1:
        return option_letters(len(texts))[found[0]]
    return None


def parse_answer(text: Optional[str], options: Optional[Sequence[str]] = None,
                 unit: Optional[str] = None) -> ParsedAnswer:
    """Parse a model reply into a choice, a number or free text (rules: module docstring).

    Args:
        text: raw model reply (may contain <think>/<answer> tags); None counts as "".
        options: the question's options (bare or lettered) for multiple choice, else None.
        unit: canonical unit to convert numbers to ("m", "cm", "m²", aliases accepted), or None.
    """
    answer = strip_answer_tags(text)
    target_unit = canonical_unit(unit) if unit is not None else None
    if options:
        choice = parse_choice(answer, options)
        if choice is not None:
            return ParsedAnswer("choice", choice, None, None, answer)
        return ParsedAnswer("text", None, None, None, answer)
    number = parse_number(answer)
    if number is not None:
        value, raw_unit = number
        out_unit = raw_unit
        if target_unit is not None:
            if raw_unit is None:
                out_unit = target_unit
            elif _UNIT_INFO[raw_unit][0] == _UNIT_INFO[target_unit][0]:
                value, out_unit = convert_unit(value, raw_unit, target_unit), target_unit
        return ParsedAnswer("number", None, float(value), out_unit, answer, raw_unit)
    letter = _leading_letter(answer)
    if letter is not None and re.fullmatch(
            r"\s*(?:(?i:the\s+)?(?i:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"
            r"[\(\[]?[A-Za-z][\)\]]?\.?\s*", answer):
        return ParsedAnswer("choice", letter, None, None, answer)
    return ParsedAnswer("text", None, None, None, answer)


# ------------------------------------------------------------------------------------- scoring
MRA_THRESHOLDS = tuple(round(0.50 + 0.05 * i, 2) for i in range(10))  # 0.50, 0.55, ..., 0.95
# 1 - θ as exact twentieths (0.50, 0.45, ..., 0.05) so that e.g. a 5 % error is *not* < 0.05.
_MRA_MARGINS = np.arange(10, 0, -1, dtype=np.float64) / 20.0


def mean_relative_accuracy(pred, gt, official_code: bool = False) -> float:
    """VSI-Bench Mean Relative Accuracy of one prediction.

    MRA = mean over θ ∈ {0.50, 0.55, ..., 0.95} of 1[|ŷ−y|/|y| < 1−θ] (paper definition; the
    relative error is rounded to 12 decimals so float noise cannot flip a boundary case).
    ``pred`` None / NaN / non-numeric -> 0.0. ``gt == 0``: 1.0 if ``pred == 0`` else 0.0.

    ``official_code=True`` reproduces the released lmms-eval scorer instead: thresholds
    ``linspace(0.5, 0.95, int((0.95-0.5)/0.05 + 2))`` (float rounding makes that 10 points, the
    same θ values) compared with ``<=`` and no rounding; it differs from the paper only on
    boundary cases (a 5 % error scores 1.0 there and 0.9 here).
    """
    try:
        pred_value = float(pred)
        gt_value = float(gt)
    except (TypeError, ValueError):
        return 0.0
    if not (math.isfinite(pred_value) and math.isfinite(gt_value)):
        return 0.0
    if gt_value == 0.0:
        return 1.0 if pred_value == 0.0 else 0.0
    relative_error = abs(pred_value - gt_value) / abs(gt_value)
    if official_code:
        thresholds = np.linspace(0.5, 0.95, int((0.95 - 0.5) / 0.05 + 2))
        return float(np.mean(relative_error <= 1 - thresholds))
    return float(np.mean(round(relative_error, 12) < _MRA_MARGINS))
