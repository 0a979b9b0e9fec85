"""Question-answer record shared by all generators and the dataset writer."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Sequence

LETTERS = "ABCDEFGH"

# answer_type: how the scorer compares: choice (exact letter), number (VSI MRA), or the
# MultiSPA rules: number_rel20 (|pred-gt| <= 0.2|gt|), vector (||pred-gt|| <= 0.2||gt||),
# pixel (within 5 % of the image width, coordinates normalised to 0-1000).
ANSWER_TYPES = ("choice", "number", "number_rel20", "vector", "pixel")


@dataclass
class QA:
    question: str
    answer: str                              # letter for choice; number / "(x, y)" / "(x, y, z)" text otherwise
    task_type: str
    answer_type: str
    options: List[str] = field(default_factory=list)   # ["A. table", ...] for multiple choice
    ground_truth: str = ""                   # the answer in words/numbers (option text for choice)
    family: str = "vsibench"                 # "vsibench" | "multispa"
    scene_id: str = ""
    frame_indices: List[int] = field(default_factory=list)
    frames_path: str = ""
    extra: Dict = field(default_factory=dict)

    def to_record(self) -> Dict:
        rec = asdict(self)
        rec["extra"] = dict(self.extra)
        return rec


def multiple_choice(rng: random.Random, correct: str, distractors: Sequence[str]) -> tuple[List[str], str]:
    """Shuffle ``correct`` among ``distractors`` -> (["A. x", ...], letter of correct)."""
    opts = [correct] + [d for d in distractors if d != correct]
    rng.shuffle(opts)
    letter = LETTERS[opts.index(correct)]
    return [f"{LETTERS[i]}. {o}" for i, o in enumerate(opts)], letter
