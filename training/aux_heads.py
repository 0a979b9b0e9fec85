"""Training-only heads for the auxiliary grounding targets (training/aux_targets.py).

    token head    on the fused visual tokens (the LLM's input): category mix + 3-D position;
                  teaches the connector to put geometry where the LLM can read it linearly
    time head     on the video tokens' hidden states after `time_layer` LLM layers: the token's
                  temporal position (t / (T - 1)). Nothing in a visual token's content says when
                  it was seen (neither encoder embeds time; only the LLM's rotary positions do,
                  and relative rotary phases cannot be read from a question at a variable
                  distance), so an early layer must write it in before "which came first" can
                  be answered
    mention head  on the LLM's hidden state at layer `layer`, at each category word of the prompt:
                  seen / visible count / first sampled frame / centroid / longest side; teaches
                  the LLM's early layers to fetch that object from the visual tokens, which every
                  spatial answer needs first
    room head     on the last prompt token's final hidden state: log floor area
    pair head     on the hidden state at layer `pair_layer`, at every category word after the
                  prompt's first (option lines included, where the previous one is the sibling
                  option): that object's offset from the first-named object and from the
                  previous one (sideways, depth, distance; PAIR_FIELDS). The mention head
                  teaches where each object is; this one asks for the comparison two-object
                  answers (distances, directions, routes) are made of

The heads are plain Linear layers, saved next to the checkpoint for resume (aux_heads.pt,
`torch.load(weights_only=True)`) and never exported: the shipped model is the Spatial-MLLM alone.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.aux_targets import CLASS_NAMES, MENTION_FIELDS, NUM_CLASSES, category_targets, mention_positions, \
    mention_spans, option_spans, room_target, token_targets


# The pair head's targets, in the mention head's normalised units (aux_targets.XYZ_SCALE).
PAIR_FIELDS = ("dx_first", "dz_first", "dist_first", "dx_prev", "dz_prev", "dist_prev")


def pair_offsets(first: np.ndarray, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Mention rows (MENTION_FIELDS) of the first-named, previous and current object -> [6]
    PAIR_FIELDS: the current object's centroid minus the other's, sideways (x) and in depth (z),
    and their 3-D distance; NaN where either object is not in the frames."""
    out = []
    for ref in (first, prev):
        d = cur[3:6] - ref[3:6]                                         # [3] x, y, z
        out += [d[0], d[2], float(np.sqrt((d ** 2).sum()))]
    return np.asarray(out, np.float32)


class AuxHeads(nn.Module):
    """Hidden-state indices (0 = the LLM's input embeddings, n = its last layer): `layer` for the
    mention head, `time_layer` for the video tokens' time (0 = off), `order_layer` for the
    in-order step of option lists, `option_layer` for option correctness and `pair_layer` for
    the offsets between named objects (0 = off)."""

    def __init__(self, hidden: int, layer: int, time_layer: int = 0, order_layer: int = 0, option_layer: int = 0,
                 pair_layer: int = 0):
        super().__init__()
        self.layer = layer
        self.time_layer = time_layer
        self.order_layer = order_layer
        self.option_layer = option_layer
        self.pair_layer = pair_layer
        self.token = nn.Linear(hidden, NUM_CLASSES + 3)
        self.mention = nn.Linear(hidden, len(MENTION_FIELDS))
        self.room = nn.Linear(hidden, 1)
        self.time = nn.Linear(hidden, 1)
        self.order = nn.Linear(hidden, 1)
        self.option = nn.Linear(hidden, 1)
        if pair_layer:  # built only when used: the default recipe's random draws stay as they were
            self.pair = nn.Linear(hidden, len(PAIR_FIELDS))


class AuxTargetCache:
    """Per frame set: token targets; per record: mention positions and targets (both cached)."""

    def __init__(self, tokenizer, temporal_patch: int = 2):
        self.tokenizer = tokenizer
        self.temporal_patch = temporal_patch
        self.tokens: dict[tuple, dict] = {}
        self.cats: dict[tuple, dict] = {}
        self.mentions: dict[str, list] = {}

    def token(self, key: tuple) -> dict:
        if key not in self.tokens:
            t = token_targets(key, self.temporal_patch)
            self.tokens[key] = {k: torch.from_numpy(v) for k, v in t.items()}
        return self.tokens[key]

    def category(self, key: tuple) -> dict:
        if key not in self.cats:
            self.cats[key] = {**category_targets(key), "_room": room_target(key)}
        return self.cats[key]

    def layout(self, rec_id: str, prompt_text: str) -> dict:
        """Token positions (same tokenisation as the record) of the category words
        ('mentions': [(pos, category)]), of each option line's last token ('options':
        [(pos, letter)]) and the mentions inside each option line ('lines': [[index into
        mentions, ...] per option])."""
        if rec_id not in self.mentions:
            enc = self.tokenizer(prompt_text, add_special_tokens=False, return_offsets_mapping=True)
            spans = mention_spans(prompt_text)
            mentions = mention_positions(enc["offset_mapping"], spans)
            starts = [a for a, _, _ in spans][: len(mentions)]
            opts = option_spans(prompt_text)
            ends = mention_positions(enc["offset_mapping"], [(a, b, letter) for letter, a, b in opts])
            lines = [[i for i, st in enumerate(starts) if a <= st < b] for _, a, b in opts]
            self.mentions[rec_id] = {"mentions": mentions, "options": ends, "lines": lines}
        return self.mentions[rec_id]

    def batch(self, recs: list[dict], keys: list[tuple], prompts: list[str], prompt_lens: list[int],
              grids: torch.Tensor | None = None) -> dict:
        """tok_cat [sum N, C+1], tok_xyz [sum N, 3], tok_time [sum N] (from grids [B, 3] =
        video_grid_thw, merged tokens in (t, h, w) order), men_b / men_pos [M], men_y [M, F],
        room_pos [B], room_y [B]."""
        tok = [self.token(k) for k in keys]
        times = []
        for t, h, w in (grids.tolist() if grids is not None else []):
            per_t = (h // 2) * (w // 2)
            times.append(torch.arange(t).repeat_interleave(per_t).float() / max(t - 1, 1))
        men_b, men_pos, men_c, men_y = [], [], [], []
        opt_b, opt_pos, opt_y, ord_b, ord_pos, ord_y = [], [], [], [], [], []
        pair_b, pair_pos, pair_y = [], [], []
        for b, (rec, key, text) in enumerate(zip(recs, keys, prompts)):
            cats = self.category(key)
            lay = self.layout(str(rec.get("id", id(rec))), text)
            for pos, cat in lay["mentions"]:
                men_b.append(b)
                men_pos.append(pos)
                men_c.append(CLASS_NAMES.index(cat))
                men_y.append(cats[cat])
            named = lay["mentions"]
            for i in range(1, len(named)):  # offsets from the first-named and the previous object
                pair_b.append(b)
                pair_pos.append(named[i][0])
                pair_y.append(pair_offsets(cats[named[0][1]], cats[named[i - 1][1]], cats[named[i][1]]))
            answer = str(rec.get("answer", "")).strip()
            for pos, letter in lay["options"]:
                opt_b.append(b)
                opt_pos.append(pos)
                opt_y.append(float(letter == answer))
            for line in lay["lines"]:  # first seen later than the previous category of the line?
                for prev, cur in zip(line, line[1:]):
                    f0, f1 = cats[lay["mentions"][prev][1]][2], cats[lay["mentions"][cur][1]][2]
                    if np.isfinite(f0) and np.isfinite(f1) and f0 != f1:
                        ord_b.append(b)
                        ord_pos.append(lay["mentions"][cur][0])
                        ord_y.append(float(f1 > f0))
        return {"tok_cat": torch.cat([t["tok_cat"] for t in tok]), "tok_xyz": torch.cat([t["tok_xyz"] for t in tok]),
                "tok_time": torch.cat(times) if times else torch.zeros(0),
                "men_b": torch.tensor(men_b, dtype=torch.long), "men_pos": torch.tensor(men_pos, dtype=torch.long),
                "men_c": torch.tensor(men_c, dtype=torch.long),
                "tok_count": torch.tensor([len(t["tok_cat"]) for t in tok], dtype=torch.long),
                "men_y": torch.from_numpy(np.stack(men_y)) if men_y else torch.zeros(0, len(MENTION_FIELDS)),
                "opt_b": torch.tensor(opt_b, dtype=torch.long), "opt_pos": torch.tensor(opt_pos, dtype=torch.long),
                "opt_y": torch.tensor(opt_y, dtype=torch.float32),
                "ord_b": torch.tensor(ord_b, dtype=torch.long), "ord_pos": torch.tensor(ord_pos, dtype=torch.long),
                "ord_y": torch.tensor(ord_y, dtype=torch.float32),
                "pair_b": torch.tensor(pair_b, dtype=torch.long), "pair_pos": torch.tensor(pair_pos, dtype=torch.long),
                "pair_y": torch.from_numpy(np.stack(pair_y)) if pair_y else torch.zeros(0, len(PAIR_FIELDS)),
                "room_pos": torch.tensor([n - 1 for n in prompt_lens], dtype=torch.long),
                "room_y": torch.tensor([self.category(k)["_room"] for k in keys], dtype=torch.float32)}


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean squared error over the entries where `target` is not NaN (a zero that still carries
    the graph when none is), with the squared errors and the mask [same shape as target]."""
    mask = ~torch.isnan(target)
    sq = (pred - torch.nan_to_num(target)) ** 2
    return (sq[mask].mean() if mask.any() else pred.sum() * 0.0), sq, mask


def aux_losses(heads: AuxHeads, fused: torch.Tensor, hidden_states: tuple, aux: dict,
               video_mask: torch.Tensor | None = None) -> dict:
    """Loss terms (scalars): token_cat (soft cross-entropy), token_xyz, token_time (MSE; with
    heads.time_layer and video_mask [B, L], True at the video tokens), mention_seen (BCE),
    mention_reg (masked MSE over the other fields), option and order (BCE, with their layers
    set and rows in the batch), pair (masked MSE, with heads.pair_layer set), room (MSE).

    fused [sum N, H] (the visual tokens in batch order), hidden_states: the LLM's
    (embeddings, layer 1, ..., last) each [B, L, H]."""
    out = {}
    pred = heads.token(fused.float())
    out["token_cat"] = -(aux["tok_cat"] * F.log_softmax(pred[:, :NUM_CLASSES], -1)).sum(-1).mean()
    out["token_xyz"] = F.mse_loss(pred[:, NUM_CLASSES:], aux["tok_xyz"])
    if heads.time_layer and video_mask is not None and len(aux["tok_time"]):
        video = hidden_states[heads.time_layer][video_mask].float()        # [sum N, H], batch order
        out["token_time"] = F.mse_loss(heads.time(video)[:, 0], aux["tok_time"])
    if len(aux["men_b"]):
        h = hidden_states[heads.layer][aux["men_b"], aux["men_pos"]].float()
        p, y = heads.mention(h), aux["men_y"]
        out["mention_seen"] = F.binary_cross_entropy_with_logits(p[:, 0], y[:, 0])
        out["mention_reg"], sq, mask = masked_mse(p[:, 1:], y[:, 1:])
        with torch.no_grad():  # per-field errors, logged only (MENTION_FIELDS[1:])
            out["fields"] = {f: float(sq[:, j][mask[:, j]].mean()) if mask[:, j].any() else float("nan")
                             for j, f in enumerate(MENTION_FIELDS[1:])}
    for name, layer, head, pre in (("option", heads.option_layer, heads.option, "opt"),
                                   ("order", heads.order_layer, heads.order, "ord")):
        if layer and len(aux[f"{pre}_b"]):
            h = hidden_states[layer][aux[f"{pre}_b"], aux[f"{pre}_pos"]].float()
            out[name] = F.binary_cross_entropy_with_logits(head(h)[:, 0], aux[f"{pre}_y"])
    if heads.pair_layer and len(aux.get("pair_b", ())):
        h = hidden_states[heads.pair_layer][aux["pair_b"], aux["pair_pos"]].float()
        out["pair"] = masked_mse(heads.pair(h), aux["pair_y"])[0]           # [P, 6] PAIR_FIELDS
    last = hidden_states[-1][torch.arange(len(aux["room_pos"])), aux["room_pos"]].float()
    out["room"] = F.mse_loss(heads.room(last)[:, 0], aux["room_y"])
    return out


class AttentionCapture:
    """Attention probabilities [B, heads, L, L] of the first `heads` query heads of one LLM
    decoder layer, recomputed from that layer's own query/key projections and rotary positions
    on forward (the fused attention kernels the model runs return no weights; recomputing two
    heads costs a fraction of switching every layer to eager attention). It records only while
    `mask` [B, L] (1 = token, 0 = padding) is set to the batch's attention mask; other forwards
    (evaluation, decoding) pass through untouched."""

    def __init__(self, model, layer_index: int, heads: int = 2):
        self.heads = heads
        self.mask: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None
        model.model.language_model.layers[layer_index].self_attn.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output) -> None:
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        b, length, _ = x.shape
        if self.mask is None or tuple(self.mask.shape) != (b, length):
            self.weights = None
            return
        d = module.head_dim
        group = module.config.num_attention_heads // module.config.num_key_value_heads
        q = module.q_proj(x).view(b, length, -1, d)[:, :, : self.heads].transpose(1, 2)        # [B, h, L, d]
        k = module.k_proj(x).view(b, length, -1, d)[:, :, : (self.heads + group - 1) // group].transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(group, dim=1)[:, : self.heads]
        scores = (q @ k.transpose(-1, -2)) * module.scaling                                    # [B, h, L, L]
        allowed = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        if self.mask is not None:
            allowed = allowed & self.mask[:, None, None, :].bool()
        self.weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)


def mention_attention_loss(weights: torch.Tensor, aux: dict, video_mask: torch.Tensor, early: float = 3.0) -> torch.Tensor:
    """Cross-entropy from where two query heads of the mention layer attend, at each category
    word, to where that category is in the video: head 0 to its tokens weighted towards the
    earliest (exp(-early * t)), head 1 to all of its tokens (by pixel share). Mentions of a
    category the frames do not show are not supervised.

    weights [B, heads, L, L]; video_mask [B, L]; aux from AuxTargetCache.batch."""
    if not len(aux["men_b"]):
        return weights.sum() * 0.0
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), aux["tok_count"].cumsum(0)])
    positions = [torch.nonzero(row, as_tuple=False)[:, 0] for row in video_mask]
    m, length = len(aux["men_b"]), weights.shape[-1]
    target = torch.zeros(m, 2, length)
    keep = torch.zeros(m, dtype=torch.bool)
    for i, (b, c) in enumerate(zip(aux["men_b"].tolist(), aux["men_c"].tolist())):
        share = aux["tok_cat"][offsets[b]:offsets[b + 1], c]
        if float(share.sum()) < 0.05 or len(positions[b]) != len(share):
            continue
        t = aux["tok_time"][offsets[b]:offsets[b + 1]]
        for h, w in enumerate((share * torch.exp(-early * t), share)):
            target[i, h, positions[b]] = w / w.sum()
        keep[i] = True
    if not keep.any():
        return weights.sum() * 0.0
    attn = weights[aux["men_b"], :2, aux["men_pos"]].float()                      # [M, 2, L]
    ce = -(target * torch.log(attn + 1e-6)).sum(-1).mean(-1)                       # [M]
    return ce[keep].mean()
