"""Tokenizer, chat template and processor files of the tiny preset (deterministic).

A byte-level BPE (vocab 3072) trained with `tokenizers` on a generated corpus of spatial
questions/answers (counts, distances in m, sizes in cm, option letters, object categories,
VSI-Bench prompt suffixes), with Qwen's special tokens first (ids 0..13, Qwen's order) and a
Qwen-format chat template. Written by `presets.write_tiny_assets`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from .processing import CLIP_MEAN, CLIP_STD

__all__ = ["SPECIAL_TOKENS", "TINY_SPECIAL_IDS", "TINY_VOCAB_SIZE", "CHAT_TEMPLATE", "write_tokenizer_files"]

TINY_VOCAB_SIZE = 3072
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
TINY_SPECIAL_IDS = dict(
    bos_token_id=0,
    eos_token_id=2,
    vision_start_token_id=9,
    vision_end_token_id=10,
    image_token_id=12,
    video_token_id=13,
)
# Qwen2's pre-tokenizer split: letters runs, single digits, punctuation runs, newlines, spaces
_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' or 'video' in item %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'image' or 'image' in item %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_OBJECTS = (
    "chair table sofa bed door window lamp tv monitor desk cabinet shelf bookshelf refrigerator sink toilet "
    "bathtub stool trash can pillow backpack box plant picture mirror radiator keyboard laptop printer oven "
    "microwave washing machine counter ceiling light fireplace piano stove kettle towel curtain rug clock "
    "exit person robot cup bottle bag suitcase"
).split()
_WORDS = (
    "the a an of to in on at by for from with without between behind front back left right above below under "
    "over near far next beside inside outside around through along across toward away up down north south east "
    "west is are was were be been being have has had do does did will would can could should may might must "
    "what which who whom whose where when why how many much long wide tall high low large small big little "
    "closest farthest nearest furthest first last second third fourth fifth next previous same different "
    "room kitchen bedroom bathroom living office hallway corridor garage warehouse lab classroom store "
    "floor wall corner ceiling doorway stairs staircase entrance hall shelf aisle rack pallet forklift "
    "camera robot video frame frames image images scene view viewpoint position pose rotation translation "
    "distance size height width length depth area volume count number total object objects category "
    "meter meters centimeter centimeters square degree degrees second seconds minute minutes "
    "move moved moving turn turned turning walk walked go going stand standing face facing look looking "
    "see seen saw appear appears appearance order navigate navigation route plan path step steps "
    "red green blue yellow white black gray grey brown orange purple pink wooden metal plastic glass "
    "one two three four five six seven eight nine ten eleven twelve twenty thirty hundred thousand "
    "yes no true false maybe approximately about roughly exactly estimate estimated answer question "
    "option options choice choices letter directly single word phrase please using given following "
    "relative absolute direction directions clockwise counterclockwise straight forward backward "
    "this that these those there here it its they them their your my our we you i he she "
    "and or but not if then than so because while after before during until since also only "
    "nearby adjacent opposite center middle edge top bottom side sides surface open closed empty full "
    "picked placed put carried holding held sitting lying hanging mounted attached standing leaning"
).split()
_MC = "Answer with the option's letter from the given choices directly."
_NUM = "Please answer the question using a single word or phrase."


def _inflect(word: str, rng: random.Random) -> str:
    """Random surface form: plain, plural, -ing, -ed, Capitalised or UPPER."""
    form = rng.randrange(8)
    if form == 1:
        return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")
    if form == 2:
        return word + "ing"
    if form == 3:
        return word + "ed"
    if form == 4:
        return word.capitalize()
    if form == 5:
        return word.upper()
    return word


def _number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return str(rng.randint(0, 30))
    if kind < 0.8:
        return f"{rng.uniform(0.1, 12.0):.1f}"
    return str(rng.randint(5, 400))


def corpus(num_lines: int = 20000, seed: int = 0) -> Iterator[str]:
    """Deterministic spatial-QA text for training the tiny BPE."""
    rng = random.Random(seed)
    for _ in range(num_lines):
        a, b, c, d = rng.sample(_OBJECTS, 4)
        kind = rng.randrange(10)
        if kind == 0:
            yield f"How many {a}(s) are in this room?\n{_NUM}\n{rng.randint(0, 12)}"
        elif kind == 1:
            yield (f"Measuring from the closest point of each object, what is the direct distance between the {a} "
                   f"and the {b} (in meters)?\n{_NUM}\n{_number(rng)} m")
        elif kind == 2:
            yield (f"What is the length of the longest dimension (length, width, or height) of the {a}, measured in "
                   f"centimeters?\n{_NUM}\n{rng.randint(10, 350)} cm")
        elif kind == 3:
            yield (f"What is the size of this room (in square meters)? If multiple rooms are shown, estimate the size "
                   f"of the combined space.\n{_NUM}\n{rng.uniform(8, 80):.1f}")
        elif kind == 4:
            yield (f"Measuring from the closest point of each object, which of these objects ({a}, {b}, {c}, {d}) is "
                   f"the closest to the {rng.choice(_OBJECTS)}?\nOptions:\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n{_MC}\n"
                   f"{rng.choice('ABCD')}.")
        elif kind == 5:
            yield (f"If I am standing by the {a} and facing the {b}, is the {c} to my front-left, front-right, "
                   f"back-left, or back-right?\nOptions:\nA. front-left\nB. front-right\nC. back-left\n"
                   f"D. back-right\n{_MC}\n{rng.choice('ABCD')}")
        elif kind == 6:
            yield (f"What will be the first-time appearance order of the following categories in the video: {a}, "
                   f"{b}, {c}, {d}?\nOptions:\nA. {a}, {b}, {c}, {d}\nB. {b}, {a}, {d}, {c}\n{_MC}\nA")
        elif kind == 7:
            yield (f"You are a robot beginning at the {a} facing the {b}. You want to navigate to the {c}. "
                   f"Go forward until the {d}, turn left, then turn right. <answer>{rng.choice('ABCD')}</answer>")
        elif kind == 8:
            words = [_inflect(w, rng) for w in rng.sample(_WORDS + _OBJECTS, 12)]
            yield " ".join(words).capitalize() + rng.choice([".", "?", "!", ","]) + f" {_number(rng)}"
        else:
            yield (f"How far did the camera move between the first and the last frame? The camera moved "
                   f"{_number(rng)} meters and turned {rng.randint(0, 180)} degrees to the {rng.choice(['left', 'right'])}.")


def train_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus()), trainer=trainer)
    return tokenizer


def write_tokenizer_files(out_dir: Path) -> Tuple[int, Dict[str, int]]:
    """Write tokenizer.json, tokenizer_config.json, vocab.json, merges.txt, chat_template.jinja/json,
    (video_)preprocessor_config.json, generation_config.json. Returns (vocab_size, token ids)."""
    out_dir = Path(out_dir)
    tokenizer = train_tiny_tokenizer()
    for token, expected in (("<|endoftext|>", 0), ("<|im_end|>", 2), ("<|video_pad|>", 13)):
        if tokenizer.token_to_id(token) != expected:
            raise RuntimeError(f"special token {token} got id {tokenizer.token_to_id(token)}, expected {expected}")
    tokenizer.save(str(out_dir / "tokenizer.json"))
    model_json = json.loads(tokenizer.to_str())["model"]
    (out_dir / "vocab.json").write_text(json.dumps(model_json["vocab"], ensure_ascii=False) + "\n")
    merges: List[str] = [m if isinstance(m, str) else " ".join(m) for m in model_json["merges"]]
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    tokenizer_config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "model_max_length": 8192,
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE + "\n")
    _write_json(out_dir / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    pixels = dict(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)  # 16 frames of <= 112x112
    common = dict(
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        do_convert_rgb=True,
        rescale_factor=1 / 255,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"]},
        processor_class="Qwen2_5_VLProcessor",
        **pixels,
    )
    _write_json(out_dir / "preprocessor_config.json", {"image_processor_type": "Qwen2VLImageProcessor", **common})
    _write_json(out_dir / "video_preprocessor_config.json", {"video_processor_type": "Qwen2VLVideoProcessor", **common})
    _write_json(
        out_dir / "generation_config.json",
        {"bos_token_id": 0, "eos_token_id": [2, 0], "pad_token_id": 0, "do_sample": False},
    )
    return tokenizer.get_vocab_size(), dict(TINY_SPECIAL_IDS)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
