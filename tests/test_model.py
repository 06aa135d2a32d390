"""The seq2seq model: shapes, packing and masking, fused vs stepwise decoding, tying, bridge, learning."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import random_padded_batch
from conftest import reverse_task as shared_reverse_task
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from translator.config import ModelConfig  # noqa: E402
from translator.model import CELL_FUNCTIONS, RNN_CELLS, Seq2Seq, build_model, cell_step, count_parameters  # noqa: E402

VOCAB, PAD, BOS, EOS = 40, 0, 1, 2
CELLS = ("rnn", "lstm", "gru")
HIDDEN = 12
# (attention, luong_score, decoder_hidden); Luong "dot" compares decoder states with the 2H-wide
# encoder states directly, so it needs decoder_hidden = 2 * hidden.
ATTENTIONS = (("bahdanau", "general", 0), ("luong", "general", 0), ("luong", "dot", 2 * HIDDEN))


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides) -> ModelConfig:
    base = dict(
        cell="lstm",
        embedding=16,
        hidden=HIDDEN,
        encoder_layers=2,
        decoder_layers=2,
        dropout=0.0,
        embedding_dropout=0.0,
    )
    base.update(overrides)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, **overrides) -> Seq2Seq:
    model = build_model(tiny_config(**overrides), VOCAB, PAD, seed=seed)
    return model.eval()


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return random_padded_batch(lengths, seed, VOCAB, PAD)


def targets(batch: int, steps: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    tgt = torch.randint(3, VOCAB, (batch, steps), generator=gen)
    tgt[:, 0] = BOS
    return tgt


# ---------------------------------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("input_feeding", [False, True], ids=["nofeed", "feed"])
@pytest.mark.parametrize("attention,score,decoder_hidden", ATTENTIONS, ids=["bahdanau", "luong-general", "luong-dot"])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_shapes_every_variant(cell, attention, score, decoder_hidden, input_feeding, residual):
    model = tiny_model(
        cell=cell,
        attention=attention,
        luong_score=score,
        decoder_hidden=decoder_hidden,
        input_feeding=input_feeding,
        residual=residual,
    )
    src, lengths = padded_batch([5, 3, 1])
    tgt_in = targets(3, 4)
    logits, attn = model(src, lengths, tgt_in)
    assert logits.shape == (3, 4, VOCAB)
    assert attn.shape == (3, 4, 5)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 4))
    assert (attn[1, :, 3:] == 0).all() and (attn[2, :, 1:] == 0).all()
    # The decoder really is the configured width.
    dec_hidden = decoder_hidden or HIDDEN
    assert model.decoder.hidden == dec_hidden
    assert model.decoder.rnn.hidden_size == dec_hidden
    enc = model.encode(src, lengths)
    assert enc.states.shape == (3, 5, 2 * HIDDEN)
    h = enc.final[0] if cell == "lstm" else enc.final
    assert h.shape == (2, 3, dec_hidden)


def test_scheduled_sampling_forward_shapes_and_zero_rate_feeds_own_predictions():
    torch.manual_seed(0)
    model = tiny_model(cell="gru")
    src, lengths = padded_batch([4, 2])
    tgt_in = targets(2, 5)
    logits, attn = model(src, lengths, tgt_in, teacher_forcing=0.0)
    assert logits.shape == (2, 5, VOCAB) and attn.shape == (2, 5, 4)
    # With rate 0 every step after the first is fed the previous argmax: replay that by hand.
    enc = model.encode(src, lengths)
    state = model.initial_state(enc)
    prev = tgt_in[:, 0]
    for t in range(5):
        log_probs, state, _ = model.decode_step(prev, state, enc)
        torch.testing.assert_close(log_probs, F.log_softmax(logits[:, t], -1), atol=1e-5, rtol=1e-5)
        prev = log_probs.argmax(-1)


# ---------------------------------------------------------------------------------------------------
# encoder: packing and padding


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("cell", CELLS)
def test_encoding_alone_equals_encoding_in_padded_batch(cell, residual):
    model = tiny_model(cell=cell, residual=residual)
    src, lengths = padded_batch([3, 7], seed=3)
    alone = model.encode(src[:1, :3], lengths[:1])
    batched = model.encode(src, lengths)
    torch.testing.assert_close(batched.states[0, :3], alone.states[0], atol=1e-5, rtol=0)
    # Padded positions carry no state.
    assert (batched.states[0, 3:] == 0).all()
    # The final state (hence the bridged decoder state) is taken at the true end, not after padding.
    finals_alone = alone.final if isinstance(alone.final, tuple) else (alone.final,)
    finals_batch = batched.final if isinstance(batched.final, tuple) else (batched.final,)
    for a, b in zip(finals_alone, finals_batch):
        torch.testing.assert_close(b[:, 0], a[:, 0], atol=1e-5, rtol=0)
    assert batched.mask.tolist()[0] == [True] * 3 + [False] * 4


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("cell", CELLS)
def test_padded_positions_do_not_influence_valid_states(cell, residual):
    model = tiny_model(cell=cell, residual=residual)
    torch.manual_seed(5)
    lengths = torch.tensor([2, 6, 4])
    embedded = torch.randn(3, 6, 16)
    noisy = embedded.clone()
    for i, n in enumerate(lengths.tolist()):
        noisy[i, n:] = 100 * torch.randn(6 - n, 16)  # garbage where the padding is
    states, final = model.encoder(embedded, lengths)
    states_noisy, final_noisy = model.encoder(noisy, lengths)
    torch.testing.assert_close(states_noisy, states, atol=1e-6, rtol=0)
    for a, b in zip(final if isinstance(final, tuple) else (final,), final_noisy if isinstance(final_noisy, tuple) else (final_noisy,)):
        assert a.shape == (3, 2 * HIDDEN)
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_translation_logits_do_not_depend_on_batch_neighbours(cell):
    """The whole model (encoder, attention mask, bridge) gives a sentence the same output padded or not."""
    model = tiny_model(cell=cell, attention="luong")
    src, lengths = padded_batch([2, 6], seed=7)
    tgt_in = targets(2, 3)
    logits_alone, attn_alone = model(src[:1, :2], lengths[:1], tgt_in[:1])
    logits, attn = model(src, lengths, tgt_in)
    torch.testing.assert_close(logits[0], logits_alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(attn[0, :, :2], attn_alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention,score,decoder_hidden", ATTENTIONS, ids=["bahdanau", "luong-general", "luong-dot"])
def test_attention_is_exactly_zero_on_padding_and_rows_sum_to_one(attention, score, decoder_hidden):
    model = tiny_model(attention=attention, luong_score=score, decoder_hidden=decoder_hidden, input_feeding=True)
    src, lengths = padded_batch([6, 2, 4, 1], seed=11)
    _, attn = model(src, lengths, targets(4, 3))
    for i, n in enumerate(lengths.tolist()):
        assert (attn[i, :, n:] == 0).all()
        assert (attn[i, :, :n] > 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(4, 3))


@pytest.mark.parametrize("cell", CELLS)
def test_encoder_final_state_is_the_top_layer_at_each_sentence_end(cell):
    """Forward direction ends at the last real token, backward direction at the first one."""
    model = tiny_model(cell=cell, encoder_layers=3)
    src, lengths = padded_batch([2, 5, 3], seed=8)
    states, final = model.encoder(model.src_embed(src), lengths)
    h = final[0] if cell == "lstm" else final
    assert h.shape == (3, 2 * HIDDEN)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(h[i, :HIDDEN], states[i, n - 1, :HIDDEN])
        torch.testing.assert_close(h[i, HIDDEN:], states[i, 0, HIDDEN:])


def test_residual_encoder_adds_each_layer_input_to_its_output():
    """With layer 2's weights zeroed its RNN outputs zeros, so a residual stack returns layer 1's output
    (a plain stack would return zeros)."""
    for cell in CELLS:
        model = tiny_model(cell=cell, residual=True, encoder_layers=2)
        assert len(model.encoder.layers) == 2
        with torch.no_grad():
            for p in model.encoder.layers[1].parameters():
                p.zero_()
        src, lengths = padded_batch([4, 3])
        embedded = model.src_embed(src)
        states, _ = model.encoder(embedded, lengths)
        first, _ = model.encoder._run(model.encoder.layers[0], embedded, lengths, 4)
        assert first.abs().sum() > 0
        torch.testing.assert_close(states, first)


# ---------------------------------------------------------------------------------------------------
# fused vs stepwise decoding


@pytest.mark.parametrize("attention,score,decoder_hidden", ATTENTIONS, ids=["bahdanau", "luong-general", "luong-dot"])
@pytest.mark.parametrize("cell", CELLS)
def test_fused_decoder_without_input_feeding_equals_step_loop(cell, attention, score, decoder_hidden):
    model = tiny_model(cell=cell, attention=attention, luong_score=score, decoder_hidden=decoder_hidden, input_feeding=False)
    src, lengths = padded_batch([5, 2, 4], seed=2)
    tgt_in = targets(3, 6)
    enc = model.encode(src, lengths)
    embedded = model.tgt_embed(tgt_in)
    vectors, weights = model.decoder(embedded, enc)
    state = model.decoder.initial_state(enc)
    for t in range(6):
        vector, state, weight = model.decoder.step(embedded[:, t], state, enc)
        torch.testing.assert_close(vectors[:, t], vector, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(weights[:, t], weight, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("input_feeding", [True, False], ids=["feed", "nofeed"])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_equals_decode_step_with_gold_tokens(cell, input_feeding):
    model = tiny_model(cell=cell, input_feeding=input_feeding, embedding=10)  # 10 != hidden: pre_output path too
    src, lengths = padded_batch([3, 5], seed=4)
    tgt_in = targets(2, 5)
    logits, attn = model(src, lengths, tgt_in)
    enc = model.encode(src, lengths)
    state = model.initial_state(enc)
    for t in range(5):
        log_probs, state, weights = model.decode_step(tgt_in[:, t], state, enc)
        torch.testing.assert_close(log_probs, F.log_softmax(logits[:, t], dim=-1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(weights, attn[:, t], atol=1e-5, rtol=1e-5)


def test_input_feeding_changes_the_decoder_input():
    """With input feeding the decoder RNN reads [embedding; previous attentional vector]."""
    fed = tiny_model(input_feeding=True)
    plain = tiny_model(input_feeding=False)
    assert fed.decoder.rnn.input_size == 16 + HIDDEN
    assert plain.decoder.rnn.input_size == 16
    src, lengths = padded_batch([3])
    enc = fed.encode(src, lengths)
    state = fed.initial_state(enc)
    assert (state.feed == 0).all()
    vector, state, _ = fed.decoder.step(fed.tgt_embed(torch.tensor([BOS])), state, enc)
    torch.testing.assert_close(state.feed, vector)  # the next step is fed this step's vector
    assert vector.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# embeddings, tying, bridge, modules


def test_tied_and_shared_embeddings_are_one_parameter():
    model = tiny_model(embedding=HIDDEN, tie_embeddings=True, share_embeddings=True)
    assert model.src_embed.weight is model.tgt_embed.weight
    assert model.output.weight is model.tgt_embed.weight
    assert model.pre_output is None  # sizes match, no projection needed
    untied = tiny_model(embedding=HIDDEN, tie_embeddings=False, share_embeddings=False)
    assert untied.output.weight is not untied.tgt_embed.weight
    assert untied.src_embed.weight is not untied.tgt_embed.weight
    # Tying and sharing remove two V x E matrices from the parameter count.
    assert count_parameters(untied) - count_parameters(model) == 2 * VOCAB * HIDDEN


@pytest.mark.parametrize("decoder_hidden", [0, 20])
def test_tying_with_different_sizes_adds_a_pre_output_projection(decoder_hidden):
    model = tiny_model(embedding=10, decoder_hidden=decoder_hidden, tie_embeddings=True, share_embeddings=False)
    width = decoder_hidden or HIDDEN
    assert isinstance(model.pre_output, nn.Linear)
    assert (model.pre_output.in_features, model.pre_output.out_features) == (width, 10)
    assert model.output.weight is model.tgt_embed.weight
    assert model.output.weight is not model.src_embed.weight
    src, lengths = padded_batch([3, 2])
    logits, _ = model(src, lengths, targets(2, 3))
    assert logits.shape == (2, 3, VOCAB)
    # The tie is live: changing the target embedding changes the output layer.
    with torch.no_grad():
        model.tgt_embed.weight[5].add_(1.0)
    logits2, _ = model(src, lengths, targets(2, 3))
    assert not torch.allclose(logits2[..., 5], logits[..., 5])
    # Untied with the same sizes: no projection.
    assert tiny_model(embedding=10, decoder_hidden=decoder_hidden, tie_embeddings=False).pre_output is None


@pytest.mark.parametrize("cell", CELLS)
def test_disabled_bridge_gives_zero_initial_state(cell):
    model = tiny_model(cell=cell, bridge=False, decoder_layers=3)
    src, lengths = padded_batch([4, 2])
    enc = model.encode(src, lengths)
    parts = enc.final if cell == "lstm" else (enc.final,)
    assert len(parts) == (2 if cell == "lstm" else 1)
    for part in parts:
        assert part.shape == (3, 2, HIDDEN)
        assert (part == 0).all()


@pytest.mark.parametrize("cell", CELLS)
def test_enabled_bridge_initialises_decoder_from_the_source(cell):
    model = tiny_model(cell=cell, bridge=True, decoder_layers=3, decoder_hidden=20)
    src, lengths = padded_batch([4, 4], seed=9)
    enc = model.encode(src, lengths)
    parts = enc.final if cell == "lstm" else (enc.final,)
    for part in parts:
        assert part.shape == (3, 2, 20)
        assert part.abs().sum() > 0
        assert not torch.allclose(part[:, 0], part[:, 1])  # different sources, different states
        assert not torch.allclose(part[0], part[1])  # each decoder layer gets its own projection


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("cell", CELLS)
def test_recurrences_are_torch_fused_rnn_modules(cell, residual):
    model = tiny_model(cell=cell, residual=residual, encoder_layers=3, decoder_layers=2)
    kind = RNN_CELLS[cell]
    if residual:
        assert len(model.encoder.layers) == 3
        for layer in model.encoder.layers:
            assert type(layer) is kind and layer.bidirectional and layer.num_layers == 1 and layer.batch_first
    else:
        rnn = model.encoder.rnn
        assert type(rnn) is kind and rnn.bidirectional and rnn.num_layers == 3 and rnn.batch_first
    dec = model.decoder.rnn
    assert type(dec) is kind and not dec.bidirectional and dec.num_layers == 2
    assert not any(isinstance(m, nn.RNNCellBase) for m in model.modules())
    if cell == "rnn":
        assert dec.nonlinearity == "tanh"


def test_build_model_seed_makes_weights_reproducible():
    a = build_model(tiny_config(), VOCAB, PAD, seed=3)
    b = build_model(tiny_config(), VOCAB, PAD, seed=3)
    c = build_model(tiny_config(), VOCAB, PAD, seed=4)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))


def test_dropout_is_active_in_training_and_off_in_eval():
    model = tiny_model(dropout=0.5, embedding_dropout=0.3)
    src, lengths = padded_batch([4, 3])
    tgt_in = targets(2, 3)
    torch.manual_seed(0)
    eval_a, _ = model(src, lengths, tgt_in)
    eval_b, _ = model(src, lengths, tgt_in)
    torch.testing.assert_close(eval_a, eval_b, rtol=0, atol=0)
    model.train()
    train_a, _ = model(src, lengths, tgt_in)
    train_b, _ = model(src, lengths, tgt_in)
    assert not torch.allclose(train_a, train_b)


def test_pad_embedding_is_zero():
    model = tiny_model(share_embeddings=False, tie_embeddings=False)
    assert (model.src_embed.weight[PAD] == 0).all() and (model.tgt_embed.weight[PAD] == 0).all()


# ---------------------------------------------------------------------------------------------------
# learning


def loss_of(model: Seq2Seq, src, lengths, tgt_in, tgt_out) -> torch.Tensor:
    logits, _ = model(src, lengths, tgt_in)
    return F.cross_entropy(logits.reshape(-1, VOCAB), tgt_out.reshape(-1), ignore_index=PAD)


def reverse_task(n: int, seed: int):
    return shared_reverse_task(n, seed, VOCAB, 2, 5, PAD, BOS, EOS)


@pytest.mark.parametrize("cell,input_feeding", [("lstm", False), ("gru", True)])
def test_tiny_model_overfits_a_reverse_task(cell, input_feeding):
    torch.manual_seed(0)
    model = build_model(
        tiny_config(cell=cell, embedding=32, hidden=32, encoder_layers=1, decoder_layers=1, input_feeding=input_feeding),
        VOCAB,
        PAD,
        seed=0,
    ).train()
    data = reverse_task(30, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        initial = float(loss_of(model, *data))
    for _ in range(200):
        optimizer.zero_grad()
        loss = loss_of(model, *data)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = float(loss_of(model, *data))
        logits, _ = model(*data[:3])
    src, lengths, tgt_in, tgt_out = data
    assert initial > 3.0  # about ln(40) before training
    assert final < initial / 20
    real = tgt_out != PAD
    accuracy = (logits.argmax(-1)[real] == tgt_out[real]).float().mean()
    assert accuracy > 0.95


@pytest.mark.parametrize("share", [True, False], ids=["shared", "separate"])
def test_gradients_reach_the_embeddings(share):
    model = tiny_model(share_embeddings=share, tie_embeddings=False)
    src, lengths, tgt_in, tgt_out = reverse_task(4, seed=2)
    loss_of(model, src, lengths, tgt_in, tgt_out).backward()
    for embed, tokens in ((model.src_embed, src), (model.tgt_embed, tgt_in)):
        grad = embed.weight.grad
        assert grad is not None
        used = tokens[tokens != PAD].unique()
        assert (grad[used].abs().sum(-1) > 0).all()  # every token that was read gets a gradient
        assert (grad[PAD] == 0).all()  # padding_idx never learns
    # Every parameter is used in a teacher-forced pass.
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------------
# truncated BPTT


def decoder_input_reach(model: Seq2Seq, steps: int, teacher_forcing: float, truncate: int) -> list[list[bool]]:
    """reach[s][t]: does the logit at target step s send a gradient to the decoder input at step t?

    The decoder inputs are the target-embedding outputs, captured by a hook (one [B, T, E] tensor under
    teacher forcing, one [B, E] tensor per step with scheduled sampling)."""
    captured: list[torch.Tensor] = []

    def keep(module, inputs, output):
        output.retain_grad()
        captured.append(output)

    hook = model.tgt_embed.register_forward_hook(keep)
    src, lengths = padded_batch([4, 6], seed=5)
    tgt_in = targets(2, steps)
    reach = []
    try:
        for s in range(steps):
            captured.clear()
            model.zero_grad()
            torch.manual_seed(0)  # the same scheduled-sampling draws for every s
            logits, _ = model(src, lengths, tgt_in, teacher_forcing, truncate)
            logits[:, s].sum().backward()
            if len(captured) == 1:  # teacher forcing: one call for all steps
                grads = [captured[0].grad[:, t] for t in range(steps)]
            else:
                grads = [x.grad if x.grad is not None else torch.zeros(1) for x in captured]
            reach.append([bool(g.abs().sum() > 0) for g in grads])
    finally:
        hook.remove()
    return reach


@pytest.mark.parametrize("cell,input_feeding,teacher_forcing", [
    ("lstm", True, 1.0), ("lstm", False, 1.0), ("gru", True, 0.5), ("rnn", False, 1.0),
], ids=["lstm-feed", "lstm-fused", "gru-scheduled-sampling", "rnn-fused"])
def test_truncated_bptt_stops_gradients_after_k_decoder_steps(cell, input_feeding, teacher_forcing):
    """With K = 3 the loss at step s reaches the inputs of its own chunk only: steps t <= s with
    t // K == s // K. So nothing flows back K or more steps (s >= t + K); without truncation all of
    t <= s is reached."""
    steps, k = 8, 3
    # Separate source embeddings: the hook must see the decoder's inputs only.
    model = tiny_model(cell=cell, input_feeding=input_feeding, share_embeddings=False).train()
    truncated = decoder_input_reach(model, steps, teacher_forcing, truncate=k)
    full = decoder_input_reach(model, steps, teacher_forcing, truncate=0)
    for s in range(steps):
        assert full[s] == [t <= s for t in range(steps)], f"untruncated step {s}"
        assert truncated[s] == [t <= s and t // k == s // k for t in range(steps)], f"truncated step {s}"
        assert not any(truncated[s][t] for t in range(steps) if s >= t + k)


@pytest.mark.parametrize("input_feeding", [True, False], ids=["feed", "fused"])
def test_truncated_bptt_leaves_the_forward_values_unchanged(input_feeding):
    model = tiny_model(input_feeding=input_feeding).train()
    src, lengths = padded_batch([4, 6], seed=5)
    tgt_in = targets(2, 7)
    full, _ = model(src, lengths, tgt_in)
    cut, _ = model(src, lengths, tgt_in, truncate=2)
    longer, _ = model(src, lengths, tgt_in, truncate=7)  # K >= T: one chunk, plain BPTT
    torch.testing.assert_close(cut, full, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(longer, full, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------
# One decoder step through torch's cell functions (training under bf16 autocast)


@pytest.mark.parametrize("cell", sorted(RNN_CELLS))
@pytest.mark.parametrize("layers", [1, 3])
def test_cell_step_equals_the_fused_module_step(cell, layers):
    torch.manual_seed(0)
    rnn = RNN_CELLS[cell](6, 5, num_layers=layers, batch_first=True).eval()
    assert type(rnn) in CELL_FUNCTIONS
    inputs = torch.randn(4, 6)
    h = torch.randn(layers, 4, 5)
    state = (h, torch.randn(layers, 4, 5)) if cell == "lstm" else h
    expected_out, expected_state = rnn(inputs.unsqueeze(1), state)
    out, new_state = cell_step(rnn, inputs, state)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(new_state, expected_state)  # h, or the (h, c) pair


def test_cell_step_applies_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    rnn = nn.LSTM(6, 5, num_layers=2, dropout=0.9, batch_first=True)
    inputs, state = torch.randn(8, 6), (torch.zeros(2, 8, 5), torch.zeros(2, 8, 5))
    rnn.eval()
    evaluated = cell_step(rnn, inputs, state)[0]
    rnn.train()
    trained = [cell_step(rnn, inputs, state)[0] for _ in range(2)]
    assert not torch.allclose(trained[0], evaluated) and not torch.allclose(trained[0], trained[1])


def test_training_under_bf16_autocast_takes_the_cell_path_with_float32_gradients(monkeypatch):
    import translator.model as model_module

    calls = []
    monkeypatch.setattr(model_module, "cell_step", lambda *args: calls.append(1) or cell_step(*args))
    model = tiny_model(input_feeding=True).train()
    src, lengths = padded_batch([5, 3])
    tgt = targets(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(src, lengths, tgt)
    assert logits.dtype == torch.bfloat16 and len(calls) == tgt.size(1)
    F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), tgt.reshape(-1)).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    model.eval()  # inference keeps the fused module (the int8 model has no cell weights)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        model(src, lengths, tgt)
    assert len(calls) == tgt.size(1)
