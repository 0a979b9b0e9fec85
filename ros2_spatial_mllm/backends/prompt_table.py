"""Inputs for an LLM runtime that takes visual embeddings as a "prompt table" (TensorRT-LLM
p-tuning convention; the way its Qwen2-VL/Qwen2.5-VL pipeline feeds vision features).

Convention: every placeholder token is replaced by a "virtual" id >= vocab_size; virtual id
vocab_size + i selects row i of the prompt embedding table. For the Spatial-MLLM the table is
the fused video tokens (video_embeds + connector(spatial)), so the 2D + 3D fusion happens before
the engine and the LLM engine itself is a plain Qwen2.5 decoder. Qwen2.5-VL's 3D RoPE still
needs the per-token (t, h, w) positions or, for decode, the rope delta (LLMDecoder.positions).

Only this mapping is implemented and tested here; running it through TensorRT-LLM / TensorRT
Edge-LLM is not verified in this repository (see docs/jetson.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PromptTableInputs:
    input_ids: torch.Tensor          # [1, L] with placeholders -> vocab_size + row
    prompt_table: torch.Tensor       # [N, hidden] fused video tokens (LLM dtype)
    task_vocab_size: int             # N (rows of the table)


def build_prompt_table_inputs(input_ids: torch.Tensor, fused_video: torch.Tensor,
                              placeholder_id: int, vocab_size: int) -> PromptTableInputs:
    """input_ids [1, L] with N `placeholder_id` tokens + fused_video [N, hidden] -> inputs."""
    slots = input_ids == placeholder_id
    count = int(slots.sum())
    if count != fused_video.shape[0]:
        raise ValueError(f"{count} placeholder tokens but {fused_video.shape[0]} table rows")
    ids = input_ids.clone()
    ids[slots] = vocab_size + torch.arange(count, device=ids.device, dtype=ids.dtype)
    return PromptTableInputs(ids, fused_video, count)


def embed_with_prompt_table(inputs: PromptTableInputs, embedding: torch.nn.Embedding
                            ) -> torch.Tensor:
    """Reference lookup of the convention: [1, L, hidden] (what the runtime computes)."""
    ids = inputs.input_ids
    vocab = embedding.num_embeddings
    virtual = ids >= vocab
    out = embedding(ids.clamp(max=vocab - 1))
    out[virtual] = inputs.prompt_table[ids[virtual] - vocab].to(out.dtype)
    return out
