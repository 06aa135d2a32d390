"""Decoding: greedy, batched beam search with length penalty and n-best, and sampling.

All three take an encoded batch and return, per sentence, a list of `Hypothesis` (best first) with
token ids (without BOS/EOS), a log-probability score and the attention weights [T, S].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from translator.model import EncoderOutput, Seq2Seq


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float  # beam: length-normalised log-probability; greedy/sampling: summed log-probability
    log_prob: float  # summed log-probability of the tokens (and EOS when produced)
    attention: Tensor  # [len(tokens) (+1 for EOS), S] weights over the source positions


def max_lengths(src_lengths: Tensor, max_ratio: float, margin: int = 5) -> Tensor:
    """Output length limit per sentence: ratio × source length, plus a margin so that one-word
    inputs can still produce multi-piece outputs."""
    return (src_lengths.float() * max_ratio).ceil().long() + margin


def length_penalty(length: int, alpha: float) -> float:
    """Wu et al. (2016): ((5 + |Y|) / 6) ** alpha; alpha = 0 disables normalisation."""
    return ((5.0 + length) / 6.0) ** alpha


def greedy_search(model: Seq2Seq, enc: EncoderOutput, limits: Tensor, bos_id: int, eos_id: int) -> list[list[Hypothesis]]:
    return _step_search(model, enc, limits, bos_id, eos_id, pick=lambda log_probs: log_probs.argmax(-1))


def sample(
    model: Seq2Seq,
    enc: EncoderOutput,
    limits: Tensor,
    bos_id: int,
    eos_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: Optional[torch.Generator] = None,
) -> list[list[Hypothesis]]:
    """Ancestral sampling from softmax(logits / temperature), optionally restricted to the top k."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")

    def pick(log_probs: Tensor) -> Tensor:
        logits = log_probs / temperature
        if top_k > 0:
            kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)

    return _step_search(model, enc, limits, bos_id, eos_id, pick)


def _step_search(model: Seq2Seq, enc: EncoderOutput, limits: Tensor, bos_id: int, eos_id: int, pick) -> list[list[Hypothesis]]:
    """One path per sentence: choose a token per step with `pick` until EOS or the length limit."""
    batch = enc.states.size(0)
    state = model.initial_state(enc)
    prev = torch.full((batch,), bos_id, dtype=torch.long, device=enc.states.device)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    log_prob = [0.0] * batch
    attention: list[list[Tensor]] = [[] for _ in range(batch)]
    alive = list(range(batch))  # original batch rows still decoding, in the order of the tensors
    for step in range(int(limits.max())):
        step_log_probs, state, weights = model.decode_step(prev, state, enc)
        chosen = pick(step_log_probs)
        chosen_log_probs = step_log_probs.gather(1, chosen.unsqueeze(1)).squeeze(1).tolist()
        keep = []
        for row, b in enumerate(alive):
            token = int(chosen[row])
            log_prob[b] += chosen_log_probs[row]
            attention[b].append(weights[row])
            if token == eos_id:
                continue
            tokens[b].append(token)
            if step + 1 < int(limits[b]):
                keep.append(row)
        if not keep:
            break
        if len(keep) < len(alive):  # drop finished sentences from the batch
            index = torch.tensor(keep, device=chosen.device)
            enc, state, chosen = enc.select(index), state.select(index), chosen.index_select(0, index)
            alive = [alive[row] for row in keep]
        prev = chosen
    return [[Hypothesis(tokens[b], log_prob[b], log_prob[b], torch.stack(attention[b]))] for b in range(batch)]


def beam_search(
    model: Seq2Seq,
    enc: EncoderOutput,
    limits: Tensor,
    bos_id: int,
    eos_id: int,
    beam_size: int,
    n_best: int = 1,
    alpha: float = 1.0,
) -> list[list[Hypothesis]]:
    """Batched beam search. Finished sentences leave the batch; a sentence is done when its best
    beam has ended and it has at least `n_best` finished hypotheses, or at its length limit."""
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and the beam size ({beam_size}), got {n_best}")
    batch, device = enc.states.size(0), enc.states.device
    k = beam_size
    # Beams are rows b*k .. b*k+k-1; only the first beam of each sentence is live at the start.
    index = torch.arange(batch, device=device).repeat_interleave(k)
    enc = enc.select(index)
    state = model.initial_state(enc)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    prev = torch.full((batch * k,), bos_id, dtype=torch.long, device=device)
    history = torch.empty(batch * k, 0, dtype=torch.long, device=device)
    attn_history = enc.states.new_empty(batch * k, 0, enc.states.size(1))
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    alive = list(range(batch))
    for step in range(int(limits.max())):
        log_probs, state, weights = model.decode_step(prev, state, enc)
        vocab = log_probs.size(-1)
        candidates = (scores.view(-1, 1) + log_probs).view(len(alive), k * vocab)
        top_scores, top_ids = candidates.topk(k, dim=-1)
        origin = top_ids // vocab  # which beam each survivor extends
        tokens = top_ids % vocab
        rows = (origin + torch.arange(len(alive), device=device).unsqueeze(1) * k).view(-1)
        history = torch.cat([history.index_select(0, rows), tokens.view(-1, 1)], dim=1)
        attn_history = torch.cat([attn_history.index_select(0, rows), weights.index_select(0, rows).unsqueeze(1)], dim=1)
        state = state.select(rows)
        scores = top_scores.clone()
        ended = (tokens == eos_id) & torch.isfinite(top_scores)  # a -inf candidate is no hypothesis
        keep = []
        for i, b in enumerate(alive):
            at_limit = step + 1 >= int(limits[b])
            for j in range(k):
                if ended[i, j] or (at_limit and torch.isfinite(top_scores[i, j])):
                    row = i * k + j
                    seq = history[row].tolist()
                    length = len(seq)
                    if ended[i, j]:
                        seq = seq[:-1]
                    total = float(top_scores[i, j])
                    finished[b].append(Hypothesis(seq, total / length_penalty(length, alpha), total, attn_history[row, :length]))
                    scores[i, j] = float("-inf")  # an ended beam is not extended
            if not (at_limit or (bool(ended[i, 0]) and len(finished[b]) >= n_best)):
                keep.append(i)
        if not keep:
            break
        if len(keep) < len(alive):
            rows = torch.tensor([i * k + j for i in keep for j in range(k)], device=device)
            keep_index = torch.tensor(keep, device=device)
            enc, state = enc.select(rows), state.select(rows)
            history, attn_history, tokens = history.index_select(0, rows), attn_history.index_select(0, rows), tokens.index_select(0, keep_index)
            scores = scores.index_select(0, keep_index)
            alive = [alive[i] for i in keep]
        prev = tokens.reshape(-1)
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n_best] for hyps in finished]


@torch.inference_mode()
def decode(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    bos_id: int,
    eos_id: int,
    beam_size: int = 1,
    n_best: int = 1,
    alpha: float = 1.0,
    max_ratio: float = 2.0,
    temperature: float = 0.0,
    top_k: int = 0,
    generator: Optional[torch.Generator] = None,
) -> list[list[Hypothesis]]:
    """Encode a batch and decode it: sampling when temperature > 0, greedy for beam 1, else beam."""
    # A non-positive or non-finite ratio gives limits <= 0: no step would run and nothing be returned.
    if not (math.isfinite(max_ratio) and max_ratio > 0):
        raise ValueError(f"max_ratio must be a finite number > 0, got {max_ratio}")
    enc = model.encode(src, src_lengths)
    limits = max_lengths(src_lengths, max_ratio)
    if temperature > 0:
        return sample(model, enc, limits, bos_id, eos_id, temperature, top_k, generator)
    if beam_size == 1 and n_best == 1:
        return greedy_search(model, enc, limits, bos_id, eos_id)
    return beam_search(model, enc, limits, bos_id, eos_id, beam_size, n_best, alpha)

