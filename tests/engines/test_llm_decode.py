"""LLM path: prefill with fused video tokens + KV-cache decode, greedy/sampled, streaming, cancel."""
import pytest
import torch

from ros2_spatial_mllm.backends import get_backend
from ros2_spatial_mllm.backends.llm import GenerationSettings, LLMDecoder, select_next_token
from ros2_spatial_mllm.model.processing import VideoProcessingConfig, patchify_video


@pytest.fixture(scope="module")
def prompt(tiny_model):
    cfg = tiny_model.config
    frames = torch.rand(1, 4, 3, 112, 168, generator=torch.Generator().manual_seed(1))
    pixel_values, grid = patchify_video(frames[0], VideoProcessingConfig())
    fused = get_backend("torch", tiny_model).fuse_video(frames)
    n = fused.shape[0]
    ids = torch.tensor([[20, 21, cfg.vision_start_token_id] + [cfg.video_token_id] * n
                        + [cfg.vision_end_token_id, 30, 31, 32]])
    return dict(ids=ids, fused=fused, grid=grid, frames=frames, pixel_values=pixel_values)


def full_forward_logits(model, ids, prompt):
    """Reference: one uncached forward of the whole sequence through the model's own path."""
    types = (ids == model.config.video_token_id).to(torch.int32) * 2
    model.model.rope_deltas = None
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values_videos=prompt["pixel_values"],
                    video_grid_thw=prompt["grid"], spatial_pixel_values=prompt["frames"],
                    mm_token_type_ids=types, use_cache=False)
    return out.logits[0]


@pytest.mark.parametrize("static_cache", [False, True])
def test_incremental_logits_match_full_forward(tiny_model, prompt, static_cache):
    decoder = LLMDecoder(tiny_model, static_cache=static_cache, max_cache_len=256)
    forced = [100, 7, 2000, 55, 901]
    cache = decoder.new_cache()
    with torch.no_grad():
        pos, delta = decoder.positions(prompt["ids"], prompt["grid"])
        logits = [decoder._forward(decoder.prompt_embeddings(prompt["ids"], prompt["fused"]), pos,
                                   cache)]
        length = prompt["ids"].shape[1]
        for step, token in enumerate(forced[:-1]):
            position = (torch.tensor([[length + step]]) + delta).view(1, 1, 1).expand(3, 1, 1)
            logits.append(decoder._decode_step(torch.tensor([[token]]), position, cache))
    ref = full_forward_logits(tiny_model, torch.cat([prompt["ids"], torch.tensor([forced[:-1]])], 1),
                              prompt)
    ours = torch.cat(logits)  # [len(forced), V]
    torch.testing.assert_close(ours, ref[length - 1:], atol=2e-5, rtol=1e-4)


def test_greedy_matches_transformers_generate_and_streams(tiny_model, prompt):
    streamed = []
    out = LLMDecoder(tiny_model).generate(prompt["ids"], prompt["fused"], prompt["grid"],
                                          GenerationSettings(max_new_tokens=6),
                                          on_token=streamed.append)
    types = (prompt["ids"] == tiny_model.config.video_token_id).to(torch.int32) * 2
    tiny_model.model.rope_deltas = None
    with torch.no_grad():
        ref = tiny_model.generate(input_ids=prompt["ids"], attention_mask=torch.ones_like(prompt["ids"]),
                                  pixel_values_videos=prompt["pixel_values"],
                                  video_grid_thw=prompt["grid"], mm_token_type_ids=types,
                                  spatial_pixel_values=prompt["frames"], max_new_tokens=6,
                                  do_sample=False, eos_token_id=None)
    assert out.token_ids == ref[0, prompt["ids"].shape[1]:].tolist()
    assert streamed == out.token_ids and out.finish_reason == "length"
    assert out.prefill_ms > 0 and out.decode_ms > 0 and out.decode_tokens_per_s > 0


def test_static_cache_generate_equals_dynamic(tiny_model, prompt):
    args = (prompt["ids"], prompt["fused"], prompt["grid"])
    settings = GenerationSettings(max_new_tokens=6, do_sample=True, temperature=3.0, seed=11)
    dynamic = LLMDecoder(tiny_model).generate(*args, settings).token_ids
    static = LLMDecoder(tiny_model, static_cache=True, max_cache_len=256).generate(*args, settings)
    assert static.token_ids == dynamic
    with pytest.raises(ValueError, match="exceed the static cache"):
        LLMDecoder(tiny_model, static_cache=True, max_cache_len=32).generate(*args, settings)


def test_eos_and_cancel(tiny_model, prompt):
    decoder = LLMDecoder(tiny_model)
    first = decoder.generate(prompt["ids"], prompt["fused"], prompt["grid"],
                             GenerationSettings(max_new_tokens=4)).token_ids[0]
    out = decoder.generate(prompt["ids"], prompt["fused"], prompt["grid"],
                           GenerationSettings(max_new_tokens=8, eos_token_ids=[first]))
    assert out.token_ids == [first] and out.finish_reason == "eos"
    polls = []
    out = decoder.generate(prompt["ids"], prompt["fused"], prompt["grid"],
                           GenerationSettings(max_new_tokens=8),
                           should_stop=lambda: polls.append(1) or len(polls) >= 2)
    assert len(out.token_ids) == 2 and out.finish_reason == "cancelled"


def test_sampling_is_seeded_and_topk1_is_greedy(tiny_model, prompt):
    decoder = LLMDecoder(tiny_model)
    args = (prompt["ids"], prompt["fused"], prompt["grid"])
    sampled = [decoder.generate(*args, GenerationSettings(max_new_tokens=6, do_sample=True,
                                                          temperature=5.0, seed=3)).token_ids
               for _ in range(2)]
    assert sampled[0] == sampled[1]
    other = decoder.generate(*args, GenerationSettings(max_new_tokens=6, do_sample=True,
                                                       temperature=5.0, seed=4)).token_ids
    assert other != sampled[0]
    greedy = decoder.generate(*args, GenerationSettings(max_new_tokens=6)).token_ids
    top1 = decoder.generate(*args, GenerationSettings(max_new_tokens=6, do_sample=True, top_k=1,
                                                      seed=5)).token_ids
    assert top1 == greedy


def test_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    settings = GenerationSettings(do_sample=True, top_p=0.7)
    g = torch.Generator().manual_seed(0)
    picks = {int(select_next_token(logits, settings, g)) for _ in range(200)}
    assert picks == {0, 1}


def test_video_token_count_mismatch_is_an_error(tiny_model, prompt):
    with pytest.raises(ValueError, match="video placeholder tokens"):
        LLMDecoder(tiny_model).generate(prompt["ids"], prompt["fused"][:-4], prompt["grid"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch.compile CUDA graphs)")
def test_compiled_static_decode_matches_eager_on_gpu(prompt):
    from engines.model_factory import build_model
    model = build_model("tiny", device="cuda")
    args = (prompt["ids"].cuda(), prompt["fused"].cuda(), prompt["grid"].cuda())
    eager = LLMDecoder(model).generate(*args, GenerationSettings(max_new_tokens=8))
    compiled = LLMDecoder(model, static_cache=True, compile_decode=True, max_cache_len=512)
    assert compiled.generate(*args, GenerationSettings(max_new_tokens=8)).token_ids == eager.token_ids


def test_compile_decode_refuses_cpu(tiny_model):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="needs CUDA"):
        LLMDecoder(tiny_model, static_cache=True, compile_decode=True)


def test_prompt_table_convention_reproduces_fused_embeddings(tiny_model, prompt):
    from ros2_spatial_mllm.backends.prompt_table import (build_prompt_table_inputs,
                                                        embed_with_prompt_table)
    cfg = tiny_model.config
    embedding = tiny_model.get_input_embeddings()
    vocab = embedding.num_embeddings
    inputs = build_prompt_table_inputs(prompt["ids"], prompt["fused"], cfg.video_token_id, vocab)
    assert int((inputs.input_ids >= vocab).sum()) == prompt["fused"].shape[0]
    assert inputs.input_ids[inputs.input_ids >= vocab].tolist() == list(
        range(vocab, vocab + prompt["fused"].shape[0]))
    with torch.no_grad():
        expected = LLMDecoder(tiny_model).prompt_embeddings(prompt["ids"], prompt["fused"])
        got = embed_with_prompt_table(inputs, embedding)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    with pytest.raises(ValueError, match="table rows"):
        build_prompt_table_inputs(prompt["ids"], prompt["fused"][:3], cfg.video_token_id, vocab)
