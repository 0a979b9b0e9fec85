"""Prompt construction for spatial questions, following the VSI-Bench conventions.

Multiple-choice prompt (options given)::

    <question>
    Options:
    A. <option 1>
    B. <option 2>
    Answer with the option's letter from the given choices directly.

Numeric / free-form prompt (no options)::

    <question>
    Please answer the question using a single word or phrase.

Options may be passed bare (``["chair", "table"]``) or already lettered
(``["A. chair", "B. table"]``, also ``"A) x"``, ``"(A) x"``, ``"A: x"``); they are
normalised to ``"A. chair"`` lines. Invalid input raises ``ValueError`` with a message that
names the problem (the CLI and the ROS node show it to the user as is).
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence

__all__ = [
    "MULTIPLE_CHOICE_SUFFIX",
    "NUMERIC_SUFFIX",
    "MAX_QUESTION_CHARS",
    "MAX_OPTION_CHARS",
    "MAX_OPTIONS",
    "OPTION_LETTERS",
    "build_prompt",
    "normalize_options",
    "option_letters",
    "split_option_prefix",
    "check_text",
]

MULTIPLE_CHOICE_SUFFIX = "Answer with the option's letter from the given choices directly."
NUMERIC_SUFFIX = "Please answer the question using a single word or phrase."

MAX_QUESTION_CHARS = 2000
MAX_OPTION_CHARS = 500
MAX_OPTIONS = 26
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# "A. text", "A) text", "(A) text", "A: text", "[A] text" (upper-case letter only, so that a bare
# option starting with the article "a " is never mistaken for a prefix).
_OPTION_PREFIX = re.compile(r"^\s*(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])[.):])\s*(.*)$", re.DOTALL)


# Chat-template control tokens (<|im_start|>, <|video_pad|>, ...): user text must never carry
# them, or it could close the user turn or add video placeholders the frames do not fill.
_CONTROL_TOKEN = re.compile(r"<\|[^|<>]{1,40}\|>")


def check_text(text: str, what: str) -> None:
    """Raise ValueError if ``text`` cannot be encoded as UTF-8 (e.g. a lone surrogate from a
    broken client) or contains a chat-template control token; ``what`` names it in the message."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid UTF-8 text (character at position {exc.start})") from None
    match = _CONTROL_TOKEN.search(text)
    if match is not None:
        raise ValueError(f"{what} contains the reserved control token {match.group(0)!r}")


def option_letters(count: int) -> List[str]:
    """Letters for ``count`` options: ``option_letters(3) == ["A", "B", "C"]``."""
    if count < 0 or count > MAX_OPTIONS:
        raise ValueError(f"number of options must be between 0 and {MAX_OPTIONS}, got {count}")
    return list(OPTION_LETTERS[:count])


def split_option_prefix(option: str):
    """Split ``"B. table"`` into ``("B", "table")``; a bare option gives ``(None, option)``."""
    match = _OPTION_PREFIX.match(option)
    if match is None:
        return None, option.strip()
    letter = match.group(1) or match.group(2) or match.group(3)
    return letter, match.group(4).strip()


def normalize_options(options: Sequence[str]) -> List[str]:
    """Return the option texts without letter prefixes, validated.

    Either every option carries a letter prefix, in order A, B, C, ..., or none does (an option
    whose own text starts like a prefix, e.g. ``"A) ..."`` among bare options, is a mixed list and
    is rejected rather than guessed).

    Raises:
        ValueError: not a list of strings, fewer than 2 or more than 26 options, an empty or
            over-long option, duplicate options, or mixed/out-of-order letter prefixes.
    """
    if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
        raise ValueError("options must be a list of strings, e.g. ['A. chair', 'B. table']")
    if len(options) < 2:
        raise ValueError(f"a multiple-choice question needs at least 2 options, got {len(options)}")
    if len(options) > MAX_OPTIONS:
        raise ValueError(f"at most {MAX_OPTIONS} options are supported, got {len(options)}")
    letters, texts = [], []
    for position, option in enumerate(options):
        if not isinstance(option, str):
            raise ValueError(f"option {position + 1} is not a string: {option!r}")
        letter, text = split_option_prefix(option)
        if not text:
            raise ValueError(f"option {position + 1} is empty: {option!r}")
        if len(text) > MAX_OPTION_CHARS:
            raise ValueError(f"option {position + 1} is longer than {MAX_OPTION_CHARS} characters")
        if "\n" in text or "\r" in text:
            raise ValueError(f"option {position + 1} contains a line break: {option!r}")
        check_text(text, f"option {position + 1}")
        letters.append(letter)
        texts.append(text)
    prefixed = [letter is not None for letter in letters]
    if any(prefixed):
        expected = option_letters(len(options))
        if not all(prefixed) or letters != expected:
            raise ValueError(
                "options must either all carry letter prefixes in order "
                f"({', '.join(expected)}) or none; got prefixes {letters}"
            )
    lowered = [text.casefold() for text in texts]
    if len(set(lowered)) != len(lowered):
        raise ValueError(f"options must be distinct, got {texts}")
    return texts


def build_prompt(question: str, options: Optional[Sequence[str]] = None) -> str:
    """Build the text prompt for one question (VSI-Bench format, see module docstring).

    Args:
        question: the question; surrounding whitespace is stripped.
        options: None or empty for numeric/free-form questions; otherwise 2-26 options, bare or
            already lettered.

    Returns:
        The prompt string (no chat template; the model's processor adds that).

    Raises:
        ValueError: empty or over-long question, malformed options.
    """
    if not isinstance(question, str):
        raise ValueError(f"question must be a string, got {type(question).__name__}")
    question = question.strip()
    if not question:
        raise ValueError("question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(
            f"question is too long ({len(question)} characters, limit {MAX_QUESTION_CHARS})"
        )
    check_text(question, "question")
    if options is None or (not isinstance(options, str) and len(options) == 0):
        return f"{question}\n{NUMERIC_SUFFIX}"
    texts = normalize_options(options)
    lines = [f"{letter}. {text}" for letter, text in zip(option_letters(len(texts)), texts)]
    return "\n".join([question, "Options:", *lines, MULTIPLE_CHOICE_SUFFIX])
