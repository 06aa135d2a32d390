"""Decoding: greedy, beam search (n-best, length penalty), sampling and the `decode` dispatcher."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import random_padded_batch, reverse_task
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from translator.config import ModelConfig  # noqa: E402
from translator.model import Seq2Seq, build_model  # noqa: E402
from translator.search import (  # noqa: E402
    Hypothesis,
    beam_search,
    decode,
    greedy_search,
    length_penalty,
    max_lengths,
    sample,
)

VOCAB, PAD, BOS, EOS = 40, 0, 1, 2
# Sentences of different lengths in one padded batch.
LENGTHS = [2, 5, 3, 6, 1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def no_grad():
    """Searches run without autograd, as `decode` runs them."""
    with torch.no_grad():
        yield


def tiny_config(**overrides) -> ModelConfig:
    base = dict(embedding=16, hidden=16, encoder_layers=1, decoder_layers=1, dropout=0.0, embedding_dropout=0.0)
    base.update(overrides)
    return ModelConfig(**base)


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return random_padded_batch(lengths, seed, VOCAB, PAD)


def train_briefly(model: Seq2Seq, steps: int, seed: int) -> Seq2Seq:
    """A few Adam steps on a reverse task: enough for the model to emit EOS at length-dependent places
    (so some hypotheses end early and some run into the limit), not enough to make it certain."""
    src, lengths, tgt_in, tgt_out = reverse_task(30, seed, VOCAB, 1, 6, PAD, BOS, EOS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            logits, _ = model(src, lengths, tgt_in)
            F.cross_entropy(logits.reshape(-1, VOCAB), tgt_out.reshape(-1), ignore_index=PAD).backward()
            optimizer.step()
    return model.eval()


MODEL_SPECS = {
    "lstm-bahdanau-feed": (dict(cell="lstm", attention="bahdanau", input_feeding=True), 40),
    "gru-luong-nofeed": (dict(cell="gru", attention="luong", input_feeding=False), 60),
    "rnn-luongdot-2layer": (dict(cell="rnn", attention="luong", luong_score="dot", decoder_hidden=32, decoder_layers=2), 30),
}


@pytest.fixture(scope="module")
def models() -> dict[str, Seq2Seq]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        built = {}
        for seed, (name, (overrides, steps)) in enumerate(MODEL_SPECS.items()):
            built[name] = train_briefly(build_model(tiny_config(**overrides), VOCAB, PAD, seed=seed), steps, seed)
        return built
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(params=list(MODEL_SPECS))
def model(request, models) -> Seq2Seq:
    return models[request.param]


def prepare(model: Seq2Seq, seed: int = 0, lengths: list[int] = LENGTHS, ratio: float = 1.0, margin: int = 1):
    src, src_lengths = padded_batch(lengths, seed)
    enc = model.encode(src, src_lengths)
    return src, src_lengths, enc, max_lengths(src_lengths, ratio, margin)


def ended_with_eos(hyp: Hypothesis, limit: int) -> bool:
    """Without EOS a hypothesis runs exactly to its limit; anything shorter stopped at EOS."""
    assert len(hyp.tokens) <= limit
    return len(hyp.tokens) < limit


def rescore(model: Seq2Seq, src: torch.Tensor, length: int, tokens: list[int], eos: bool):
    """Teacher-force `tokens` (+ EOS) through `decode_step` for one unpadded sentence: the summed
    log-probability, the attention rows and each step's log-probabilities."""
    enc = model.encode(src[:length].unsqueeze(0), torch.tensor([length]))
    state = model.initial_state(enc)
    prev = torch.tensor([BOS])
    total, rows, steps = 0.0, [], []
    for token in tokens + ([EOS] if eos else []):
        log_probs, state, weights = model.decode_step(prev, state, enc)
        total += float(log_probs[0, token])
        rows.append(weights[0])
        steps.append(log_probs[0])
        prev = torch.tensor([token])
    return total, torch.stack(rows), steps


def token_lists(results: list[list[Hypothesis]]) -> list[list[list[int]]]:
    return [[h.tokens for h in hyps] for hyps in results]


# ---------------------------------------------------------------------------------------------------
# limits and length penalty


def test_max_lengths_is_ratio_times_source_rounded_up_plus_margin():
    lengths = torch.tensor([1, 3, 4, 10])
    assert max_lengths(lengths, 1.5).tolist() == [2 + 5, 5 + 5, 6 + 5, 15 + 5]
    assert max_lengths(lengths, 1.0, margin=0).tolist() == [1, 3, 4, 10]
    assert max_lengths(lengths, 2.0, margin=1).dtype == torch.long


def test_length_penalty_follows_wu_et_al():
    assert length_penalty(7, 0.0) == 1.0
    assert length_penalty(1, 1.0) == pytest.approx(1.0)
    assert length_penalty(7, 1.0) == pytest.approx(2.0)
    assert length_penalty(13, 0.5) == pytest.approx(3.0**0.5)
    assert length_penalty(10, 0.6) > length_penalty(5, 0.6)


# ---------------------------------------------------------------------------------------------------
# the test models are meaningful


def test_models_end_some_hypotheses_with_eos_and_run_others_into_the_limit(models):
    ended = limited = 0
    for model in models.values():
        _, _, enc, limits = prepare(model)
        for b, hyps in enumerate(greedy_search(model, enc, limits, BOS, EOS)):
            if ended_with_eos(hyps[0], int(limits[b])):
                ended += 1
            else:
                limited += 1
    assert ended >= 3 and limited >= 3


# ---------------------------------------------------------------------------------------------------
# greedy


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_picks_the_argmax_and_reports_its_log_prob_and_attention(model, seed):
    src, src_lengths, enc, limits = prepare(model, seed)
    results = greedy_search(model, enc, limits, BOS, EOS)
    assert len(results) == len(LENGTHS)
    for b, hyps in enumerate(results):
        assert len(hyps) == 1
        hyp, n = hyps[0], LENGTHS[b]
        assert EOS not in hyp.tokens and BOS not in hyp.tokens
        eos = ended_with_eos(hyp, int(limits[b]))
        total, rows, steps = rescore(model, src[b], n, hyp.tokens, eos)
        for token, log_probs in zip(hyp.tokens + ([EOS] if eos else []), steps):
            assert int(log_probs.argmax()) == token
        assert hyp.log_prob == pytest.approx(total, abs=1e-4)
        assert hyp.score == pytest.approx(hyp.log_prob)  # greedy scores are not length-normalised
        # Attention: one row per step over the padded source, zero on padding, rows summing to 1.
        assert hyp.attention.shape == (len(hyp.tokens) + eos, max(LENGTHS))
        torch.testing.assert_close(hyp.attention.sum(-1), torch.ones(len(hyp.tokens) + eos))
        assert (hyp.attention[:, n:] == 0).all()
        torch.testing.assert_close(hyp.attention[:, :n], rows, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_is_exactly_greedy(model, seed):
    _, _, enc, limits = prepare(model, seed)
    greedy = greedy_search(model, enc, limits, BOS, EOS)
    beam = beam_search(model, enc, limits, BOS, EOS, beam_size=1, n_best=1, alpha=0.0)
    assert token_lists(beam) == token_lists(greedy)
    for g, b in zip(greedy, beam):
        assert b[0].log_prob == pytest.approx(g[0].log_prob, abs=1e-4)
        torch.testing.assert_close(b[0].attention, g[0].attention)


def test_beam_size_one_is_greedy_for_untrained_models_too():
    for seed, cell in enumerate(["lstm", "gru", "rnn"]):
        model = build_model(tiny_config(cell=cell), VOCAB, PAD, seed=10 + seed).eval()
        _, _, enc, limits = prepare(model, seed, ratio=2.0, margin=2)
        greedy = greedy_search(model, enc, limits, BOS, EOS)
        beam = beam_search(model, enc, limits, BOS, EOS, beam_size=1)
        assert token_lists(beam) == token_lists(greedy)


# ---------------------------------------------------------------------------------------------------
# beam search


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_n_best_lists_are_sorted_rescored_and_length_normalised(model, alpha):
    src, _, enc, limits = prepare(model, seed=3)
    n_best = 3
    results = beam_search(model, enc, limits, BOS, EOS, beam_size=4, n_best=n_best, alpha=alpha)
    assert len(results) == len(LENGTHS)
    for b, hyps in enumerate(results):
        assert len(hyps) == n_best
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == n_best  # distinct hypotheses
        n = LENGTHS[b]
        for hyp in hyps:
            assert EOS not in hyp.tokens
            eos = ended_with_eos(hyp, int(limits[b]))
            total, rows, _ = rescore(model, src[b], n, hyp.tokens, eos)
            assert hyp.log_prob == pytest.approx(total, abs=1e-4)
            steps = len(hyp.tokens) + eos
            assert hyp.score == pytest.approx(hyp.log_prob / length_penalty(steps, alpha), abs=1e-5)
            assert hyp.attention.shape == (steps, max(LENGTHS))
            assert (hyp.attention[:, n:] == 0).all()
            torch.testing.assert_close(hyp.attention[:, :n], rows, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("beam_size,n_best", [(3, 2), (5, 5)])
def test_beam_batch_equals_one_by_one(model, beam_size, n_best):
    src, src_lengths, enc, limits = prepare(model, seed=5)
    batched = beam_search(model, enc, limits, BOS, EOS, beam_size, n_best, alpha=0.6)
    for b, n in enumerate(LENGTHS):
        alone_enc = model.encode(src[b : b + 1, :n], src_lengths[b : b + 1])
        alone = beam_search(model, alone_enc, limits[b : b + 1], BOS, EOS, beam_size, n_best, alpha=0.6)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[b]]
        for x, y in zip(alone, batched[b]):
            assert x.score == pytest.approx(y.score, abs=1e-4)
            torch.testing.assert_close(y.attention[:, :n], x.attention, atol=1e-5, rtol=1e-5)


def test_greedy_batch_equals_one_by_one(model):
    src, src_lengths, enc, limits = prepare(model, seed=6)
    batched = greedy_search(model, enc, limits, BOS, EOS)
    for b, n in enumerate(LENGTHS):
        alone_enc = model.encode(src[b : b + 1, :n], src_lengths[b : b + 1])
        alone = greedy_search(model, alone_enc, limits[b : b + 1], BOS, EOS)[0]
        assert alone[0].tokens == batched[b][0].tokens
        assert alone[0].log_prob == pytest.approx(batched[b][0].log_prob, abs=1e-4)


def test_n_best_must_be_between_one_and_the_beam_size(models):
    model = next(iter(models.values()))
    _, _, enc, limits = prepare(model)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(model, enc, limits, BOS, EOS, beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(model, enc, limits, BOS, EOS, beam_size=2, n_best=0)


# ---------------------------------------------------------------------------------------------------
# length limits


def never_ending(seed: int = 0) -> Seq2Seq:
    """An untrained model whose EOS logit is pushed far down, so only the limit stops decoding."""
    model = build_model(tiny_config(tie_embeddings=False), VOCAB, PAD, seed=seed).eval()
    bias = torch.zeros(VOCAB)
    bias[EOS] = -1e4
    model.output.bias = nn.Parameter(bias)
    return model


def test_every_search_stops_exactly_at_each_sentences_limit():
    model = never_ending()
    _, src_lengths, enc, limits = prepare(model, ratio=1.5, margin=2)
    expected = max_lengths(src_lengths, 1.5, 2).tolist()
    assert len(set(expected)) > 1  # different limits in one batch
    gen = torch.Generator().manual_seed(0)
    runs = {
        "greedy": greedy_search(model, enc, limits, BOS, EOS),
        "beam": beam_search(model, enc, limits, BOS, EOS, beam_size=3, n_best=3),
        "sample": sample(model, enc, limits, BOS, EOS, temperature=1.0, generator=gen),
    }
    for name, results in runs.items():
        for b, hyps in enumerate(results):
            for hyp in hyps:
                assert len(hyp.tokens) == expected[b], name
                assert hyp.attention.shape[0] == expected[b], name


def test_decode_limits_output_length_by_max_ratio():
    model = never_ending(seed=1)
    src, src_lengths = padded_batch(LENGTHS, seed=7)
    for max_ratio in (0.5, 1.0):
        expected = max_lengths(src_lengths, max_ratio).tolist()
        for beam_size in (1, 3):
            results = decode(model, src, src_lengths, BOS, EOS, beam_size=beam_size, max_ratio=max_ratio)
            assert [len(hyps[0].tokens) for hyps in results] == expected


@pytest.mark.parametrize("max_ratio", [0.0, -10.0, float("inf"), float("nan")])
def test_decode_refuses_a_max_ratio_that_allows_no_output(max_ratio):
    """Limits <= 0 used to run no step: greedy crashed on an empty stack, beam returned no hypothesis."""
    model = never_ending(seed=1)
    src, src_lengths = padded_batch(LENGTHS, seed=7)
    for beam_size in (1, 3):
        with pytest.raises(ValueError, match="max_ratio"):
            decode(model, src, src_lengths, BOS, EOS, beam_size=beam_size, max_ratio=max_ratio)


# ---------------------------------------------------------------------------------------------------
# sampling


def test_sampling_with_a_seeded_generator_is_reproducible(model):
    _, _, enc, limits = prepare(model, seed=8, ratio=2.0, margin=3)
    runs = []
    for global_seed in (1, 2):  # the global RNG must not matter, only the generator
        torch.manual_seed(global_seed)
        gen = torch.Generator().manual_seed(123)
        runs.append(sample(model, enc, limits, BOS, EOS, temperature=1.5, generator=gen))
    assert token_lists(runs[0]) == token_lists(runs[1])
    assert [h[0].log_prob for h in runs[0]] == pytest.approx([h[0].log_prob for h in runs[1]])
    others = {
        str(token_lists(sample(model, enc, limits, BOS, EOS, temperature=1.5, generator=torch.Generator().manual_seed(s))))
        for s in range(4)
    }
    assert len(others) > 1  # different seeds sample different translations


def test_top_k_one_sampling_equals_greedy(model):
    _, _, enc, limits = prepare(model, seed=9)
    greedy = greedy_search(model, enc, limits, BOS, EOS)
    gen = torch.Generator().manual_seed(0)
    sampled = sample(model, enc, limits, BOS, EOS, temperature=3.0, top_k=1, generator=gen)
    assert token_lists(sampled) == token_lists(greedy)


def test_top_k_sampling_only_picks_among_the_k_most_likely(models):
    model = models["gru-luong-nofeed"]
    src, _, enc, limits = prepare(model, seed=10, ratio=2.0, margin=3)
    picked_below_top = 0
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        results = sample(model, enc, limits, BOS, EOS, temperature=5.0, top_k=3, generator=gen)
        for b, hyps in enumerate(results):
            hyp = hyps[0]
            eos = ended_with_eos(hyp, int(limits[b]))
            total, _, steps = rescore(model, src[b], LENGTHS[b], hyp.tokens, eos)
            assert hyp.log_prob == pytest.approx(total, abs=1e-4)  # log-prob of the model, not of the tempered distribution
            for token, log_probs in zip(hyp.tokens + ([EOS] if eos else []), steps):
                rank = int((log_probs > log_probs[token]).sum())
                assert rank < 3
                picked_below_top += rank > 0
    assert picked_below_top > 0  # it did sample, not just take the argmax


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_sampling_temperature_must_be_positive(models, temperature):
    model = next(iter(models.values()))
    _, _, enc, limits = prepare(model)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, enc, limits, BOS, EOS, temperature=temperature)


# ---------------------------------------------------------------------------------------------------
# decode


def test_decode_dispatches_to_greedy_beam_and_sampling(model):
    src, src_lengths = padded_batch(LENGTHS, seed=11)
    enc = model.encode(src, src_lengths)
    limits = max_lengths(src_lengths, 1.0)

    greedy = greedy_search(model, enc, limits, BOS, EOS)
    as_greedy = decode(model, src, src_lengths, BOS, EOS, beam_size=1, n_best=1, alpha=1.0, max_ratio=1.0)
    assert token_lists(as_greedy) == token_lists(greedy)
    # Greedy's score is the plain log-prob; beam search would have divided it by a length penalty.
    for hyps in as_greedy:
        assert hyps[0].score == pytest.approx(hyps[0].log_prob)

    beam = beam_search(model, enc, limits, BOS, EOS, beam_size=3, n_best=2, alpha=0.6)
    as_beam = decode(model, src, src_lengths, BOS, EOS, beam_size=3, n_best=2, alpha=0.6, max_ratio=1.0)
    assert token_lists(as_beam) == token_lists(beam)
    for got, want in zip(as_beam, beam):
        assert [h.score for h in got] == pytest.approx([h.score for h in want])

    # beam_size 1 with n_best 1 is greedy; n_best > 1 needs a beam.
    with pytest.raises(ValueError):
        decode(model, src, src_lengths, BOS, EOS, beam_size=1, n_best=2)

    sampled = sample(model, enc, limits, BOS, EOS, temperature=1.3, generator=torch.Generator().manual_seed(5))
    as_sampled = decode(
        model, src, src_lengths, BOS, EOS, beam_size=4, temperature=1.3, max_ratio=1.0, generator=torch.Generator().manual_seed(5)
    )
    assert token_lists(as_sampled) == token_lists(sampled)


def test_decode_runs_without_building_a_graph(models):
    model = next(iter(models.values()))
    src, src_lengths = padded_batch(LENGTHS)
    with torch.enable_grad():
        results = decode(model, src, src_lengths, BOS, EOS, beam_size=2)
    attention = results[0][0].attention
    assert not attention.requires_grad and torch.is_inference(attention)
