"""Numeric answers chosen by expected relative accuracy under the model's own distribution.

Greedy decoding writes a number one digit token at a time, each the most likely given the ones
before. The result is neither the likeliest number nor the one the model expects to be closest:
the first digit fixes the scale before any later digit is weighed, and a narrow spike beats a
broad hill of nearby values. VSI-Bench scores numbers by mean relative accuracy (MRA), and a
robot wants the estimate with the smallest expected relative error, so `expected_mra` mode
enumerates the numbers the model can write (every token path
with probability >= `min_prob`, the `top_k` likeliest tokens at each step) and answers the one
whose expected MRA over that enumerated distribution is highest. Minimum-Bayes-risk decoding
with MRA as the utility; the candidates and their weights come from the model alone.

Pure logic: the model is reached through `expand(prefixes) -> log-probs [F, V]` (see
backends.llm.DecodeSession.branch_logits). No rclpy, no training imports; torch is imported
where it is used, so the CLI and the node's parameters can read NUMERIC_ANSWER_MODES cheaply.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from ros2_spatial_mllm.parsing import first_word

__all__ = ["NUMERIC_ANSWER_MODES", "NumberChoice", "NumberHold", "SearchOutOfTime", "answer_number",
           "check_numeric_answers", "choose_number", "enumerate_numbers", "is_lone_number", "mra_table", "token_pieces"]

if TYPE_CHECKING:
    import torch

NUMERIC_ANSWER_MODES = ("expected_mra", "greedy")
_NUMBER_PREFIX = re.compile(r"^[-+]?\d*\.?\d*$")  # what a number may look like while being written
_LONE_PREFIX = re.compile(r"^[-+]?\d*\.?\d*\.?$")  # ... or a lone reply, which may end in a full stop
_LONE_NUMBER = re.compile(r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)\.?\s*$")


class SearchOutOfTime(Exception):
    """The number search would run past its deadline: the caller keeps the greedy reply."""


def is_lone_number(text: str) -> bool:
    """True for a reply that is one bare number ("3", "2.5", "-1", "4."), nothing else: vectors,
    units, pixel pairs and words keep their greedy text."""
    return bool(_LONE_NUMBER.match(text or ""))


class NumberHold:
    """on_token wrapper for expected_mra: pieces are held back while the reply could still be a
    lone number (which may be replaced), and flow through unchanged, one call per piece, from the
    first piece that makes it something else. finish(pieces) sends what is still held: the
    replacement reply's pieces when given, else the held ones."""

    def __init__(self, on_token: Optional[Callable[[str], None]]):
        self.on_token, self.holding = on_token, True
        self._held: List[str] = []

    def __call__(self, piece: str) -> None:
        self._held.append(piece)
        if self.holding and _LONE_PREFIX.match("".join(self._held).strip()):
            return
        self.holding = False
        self._send(self._held)

    def finish(self, pieces: Optional[Sequence[str]] = None) -> None:
        if self.holding:
            self._send(self._held if pieces is None else pieces)

    def _send(self, pieces: Sequence[str]) -> None:
        for piece in pieces:
            if piece and self.on_token is not None:
                self.on_token(piece)
        self._held = []


def token_pieces(decode: Callable[[Sequence[int]], str], tokens: Sequence[int]) -> List[str]:
    """The text each token adds, in order ("".join of them == decode(tokens))."""
    pieces, before = [], ""
    for end in range(1, len(tokens) + 1):
        text = decode(list(tokens[:end]))
        pieces.append(text[len(before):])
        before = text
    return pieces


def check_numeric_answers(mode: str) -> str:
    """Validated numeric answer mode; ValueError (one line) otherwise."""
    name = str(mode or "").strip().lower()
    if name not in NUMERIC_ANSWER_MODES:
        raise ValueError(f"unknown numeric_answers {mode!r}; choose one of {', '.join(NUMERIC_ANSWER_MODES)}")
    return name


@dataclass
class NumberChoice:
    """The enumerated numbers and the one chosen.

    text: the chosen number as the model writes it (its likeliest path); value: its float;
    expected_mra: its expected MRA over the enumerated numbers; numeric_mass: the probability
    those numbers hold together; tokens: the token ids of that path."""

    text: str
    value: float
    expected_mra: float
    numeric_mass: float
    tokens: Tuple[int, ...] = ()


def enumerate_numbers(first_logprobs: torch.Tensor, expand: Callable[[List[Tuple[int, ...]]], torch.Tensor],
                      decode: Callable[[Sequence[int]], str], stop_ids: Sequence[int], min_prob: float = 1e-3,
                      top_k: int = 10, max_tokens: int = 8, max_paths: int = 256,
                      should_stop: Optional[Callable[[], bool]] = None, deadline: Optional[float] = None,
                      row_cost_s: float = 0.0) -> Dict[float, Tuple[float, Tuple[int, ...]]]:
    """Breadth-first walk of the replies that start with a number.

    first_logprobs [V]: log-probs of the reply's first token. expand(prefixes) -> [F, V]
    log-probs of the token after each prefix (all prefixes of one call have the same length).
    A path ends at a stop token or at a token that cannot continue a number (a space, a letter);
    its number is the first word of its text. Paths below min_prob, paths
    still writing digits at max_tokens (their number is unknown) and all but the max_paths
    likeliest paths of each length are dropped. Returns number -> (probability, tokens of its
    likeliest path). Raises InterruptedError when should_stop() turns True between depths.

    deadline (time.monotonic() seconds): before each expand the walk estimates its cost as the
    frontier's rows times the last measured cost per row (row_cost_s before the first) and raises
    SearchOutOfTime when it would end past the deadline, so the caller can still answer in time.
    """
    import torch

    stops = set(int(i) for i in stop_ids)
    floor = math.log(min_prob)
    found: Dict[float, Tuple[float, Tuple[int, ...], float]] = {}  # value -> (mass, best path, its logp)

    def add(path: Tuple[int, ...], logp: float) -> None:
        word = first_word(decode(list(path)))
        try:
            value = float(word)
        except ValueError:
            return
        if not math.isfinite(value):
            return
        mass, best, best_lp = found.get(value, (0.0, path, -math.inf))
        found[value] = (mass + math.exp(logp), path if logp > best_lp else best, max(logp, best_lp))

    frontier: List[Tuple[Tuple[int, ...], float]] = [((), 0.0)]
    logprobs = first_logprobs[None]  # [F, V]
    while frontier:
        grown: List[Tuple[Tuple[int, ...], float]] = []
        for (path, logp), row in zip(frontier, logprobs):
            top = torch.topk(row.float(), min(top_k, row.shape[-1]))
            for lp, token in zip(top.values.tolist(), top.indices.tolist()):
                total = logp + lp
                if math.isnan(total):
                    continue
                if total < floor:
                    break  # sorted: the rest are less likely still
                if token in stops:
                    add(path, total)
                    continue
                longer = path + (token,)
                if not _NUMBER_PREFIX.match(decode(list(longer)).lstrip()):
                    add(path, total)  # the number ended before this token ("3 m", "3\n")
                elif len(longer) < max_tokens:
                    grown.append((longer, total))
        if not grown:
            break
        if should_stop is not None and should_stop():
            raise InterruptedError("cancelled")
        frontier = sorted(grown, key=lambda item: -item[1])[:max_paths]
        began = time.monotonic()
        if deadline is not None and began + row_cost_s * len(frontier) > deadline:
            raise SearchOutOfTime(f"{len(frontier)} paths to expand, {max(0.0, deadline - began):.3f} s left")
        logprobs = expand([path for path, _ in frontier])
        row_cost_s = (time.monotonic() - began) / len(frontier)
    return {value: (mass, path) for value, (mass, path, _) in found.items()}


def mra_table(values: Sequence[float]) -> torch.Tensor:
    """[C, T] MRA of candidate values[c] were the truth values[t]: parsing.mean_relative_accuracy
    for every pair at once (same margins, same 12-decimal rounding, truth 0 exact only)."""
    import torch

    v = torch.tensor(list(values), dtype=torch.float64)
    truth = v[None, :]
    error = torch.round((v[:, None] - truth).abs() / truth.abs(), decimals=12)  # [C, T]
    margins = torch.arange(10, 0, -1, dtype=torch.float64) / 20.0  # 1 - θ, exactly as parsing builds them
    table = (error[..., None] < margins).double().mean(-1)
    exact = (v[:, None] == truth).double()
    return torch.where(truth == 0, exact, table)


def choose_number(numbers: Dict[float, Tuple[float, Tuple[int, ...]]],
                  decode: Callable[[Sequence[int]], str]) -> Optional[NumberChoice]:
    """The number with the highest expected MRA over `numbers` (from enumerate_numbers), each
    candidate scored against every enumerated number as ground truth, weights renormalised to 1.
    None when nothing numeric was found. Ties go to the more probable number."""
    import torch

    if not numbers:
        return None
    values = sorted(numbers)
    mass = torch.tensor([numbers[v][0] for v in values], dtype=torch.float64)
    total = float(mass.sum())
    weights = mass / total
    expected = mra_table(values) @ weights  # [C]
    best = max(range(len(values)), key=lambda i: (round(float(expected[i]), 12), float(mass[i])))
    value = values[best]
    tokens = numbers[value][1]
    return NumberChoice(text=decode(list(tokens)), value=value, expected_mra=float(expected[best]),
                        numeric_mass=total, tokens=tuple(tokens))


def answer_number(session, first_logits: torch.Tensor, decode: Callable[[Sequence[int]], str],
                  stop_ids: Sequence[int], max_tokens: int = 8,
                  should_stop: Optional[Callable[[], bool]] = None, deadline: Optional[float] = None,
                  row_cost_s: float = 0.0) -> Optional[NumberChoice]:
    """expected_mra answer for an eager decode session (backends.llm.DecodeSession) standing at
    the end of the prompt, whose first token's logits [V] are `first_logits`, once the caller has
    seen that the greedy reply is a lone number. None when no number was enumerated.
    InterruptedError when should_stop() fires; SearchOutOfTime before a step that would pass
    `deadline` (enumerate_numbers)."""
    import torch

    numbers = enumerate_numbers(
        torch.log_softmax(first_logits.float(), -1),
        lambda prefixes: torch.log_softmax(session.branch_logits(prefixes).float(), -1),
        decode, stop_ids, max_tokens=max_tokens, should_stop=should_stop, deadline=deadline, row_cost_s=row_cost_s)
    return choose_number(numbers, decode)
