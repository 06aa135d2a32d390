"""The sequence-to-sequence model, in one plain file.

embedding → stacked bidirectional RNN encoder (packed) → bridge → attention decoder with input
feeding → output projection. Cells are torch's fused `nn.RNN` / `nn.LSTM` / `nn.GRU`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from translator.config import ModelConfig

RNN_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
# torch's one-step cell functions, which take the fused modules' own weights.
CELL_FUNCTIONS = {nn.RNN: torch.rnn_tanh_cell, nn.LSTM: torch.lstm_cell, nn.GRU: torch.gru_cell}

# An RNN state: h, or (h, c) for LSTM; each [layers, batch, hidden].
RNNState = Tensor | tuple[Tensor, Tensor]


def make_rnn(cell: str, input_size: int, hidden: int, layers: int, dropout: float, bidirectional: bool) -> nn.RNNBase:
    kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
    return RNN_CELLS[cell](
        input_size,
        hidden,
        num_layers=layers,
        dropout=dropout if layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=True,
        **kwargs,
    )


@dataclass
class EncoderOutput:
    """What the decoder attends to; `select` picks/repeats batch rows (beam search, finished sentences)."""

    states: Tensor  # [B, S, 2H] top-layer encoder states
    mask: Tensor  # [B, S] True at real (non-pad) positions
    keys: Tensor  # [B, S, A] attention keys, precomputed once per source
    final: RNNState  # bridged initial decoder state

    def select(self, index: Tensor) -> "EncoderOutput":
        return EncoderOutput(
            self.states.index_select(0, index),
            self.mask.index_select(0, index),
            self.keys.index_select(0, index),
            select_state(self.final, index),
        )


def select_state(state: RNNState, index: Tensor) -> RNNState:
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)  # type: ignore[return-value]
    return state.index_select(1, index)


def detach_state(state: RNNState) -> RNNState:
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


def starts_chunk(t: int, truncate: int) -> bool:
    """True where truncated BPTT cuts the gradient: at steps K, 2K, ... (never with truncate = 0)."""
    return truncate > 0 and t > 0 and t % truncate == 0


@dataclass
class DecoderState:
    rnn: RNNState
    feed: Tensor  # [B, H] previous attentional vector (input feeding); zeros at the start

    def select(self, index: Tensor) -> "DecoderState":
        return DecoderState(select_state(self.rnn, index), self.feed.index_select(0, index))

    def detach(self) -> "DecoderState":
        """The same values cut from the graph: truncated BPTT carries the state on, not its gradient."""
        return DecoderState(detach_state(self.rnn), self.feed.detach())


class BiRNNEncoder(nn.Module):
    """Stacked bidirectional RNN over packed sequences.

    Without residual connections the whole stack is one fused multi-layer RNN call. With them each
    layer is its own bidirectional RNN and layer l > 0 adds its input to its output.
    """

    def __init__(self, cell: str, input_size: int, hidden: int, layers: int, dropout: float, residual: bool):
        super().__init__()
        self.cell, self.hidden, self.residual = cell, hidden, residual
        self.output_size = 2 * hidden
        self.dropout = nn.Dropout(dropout)
        if residual:
            sizes = [input_size] + [2 * hidden] * (layers - 1)
            self.layers = nn.ModuleList(make_rnn(cell, size, hidden, 1, 0.0, True) for size in sizes)
        else:
            self.rnn = make_rnn(cell, input_size, hidden, layers, dropout, True)

    def forward(self, embedded: Tensor, lengths: Tensor) -> tuple[Tensor, RNNState]:
        """Encode [B, S, E] inputs; returns states [B, S, 2H] and the top layer's final state [B, 2H]
        (fwd and bwd concatenated; a (h, c) pair for LSTM)."""
        total = embedded.size(1)
        if not self.residual:
            states, final = self._run(self.rnn, embedded, lengths, total)
        else:
            states = embedded
            for i, rnn in enumerate(self.layers):
                inputs = self.dropout(states) if i > 0 else states
                out, final = self._run(rnn, inputs, lengths, total)
                states = out + states if i > 0 else out
        return states, _top_layer(final)

    @staticmethod
    def _run(rnn: nn.RNNBase, inputs: Tensor, lengths: Tensor, total: int) -> tuple[Tensor, RNNState]:
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=total)
        return out, final


def _top_layer(final: RNNState) -> RNNState:
    """[2*layers, B, H] final states → the top layer's [B, 2H] (forward ‖ backward)."""
    if isinstance(final, tuple):
        return tuple(_top_layer(f) for f in final)  # type: ignore[return-value]
    return torch.cat([final[-2], final[-1]], dim=-1)


class Bridge(nn.Module):
    """Maps the top encoder layer's final state to every decoder layer's initial state."""

    def __init__(self, cell: str, encoder_size: int, hidden: int, layers: int, enabled: bool):
        super().__init__()
        self.cell, self.hidden, self.layers, self.enabled = cell, hidden, layers, enabled
        if enabled:
            self.h = nn.Linear(encoder_size, layers * hidden)
            self.c = nn.Linear(encoder_size, layers * hidden) if cell == "lstm" else None

    def forward(self, final: RNNState, batch: int, device: torch.device) -> RNNState:
        if not self.enabled:
            zeros = torch.zeros(self.layers, batch, self.hidden, device=device)
            return (zeros, zeros.clone()) if self.cell == "lstm" else zeros
        h_final, c_final = final if isinstance(final, tuple) else (final, final)
        h = self._project(self.h, h_final)
        if self.cell != "lstm":
            return h
        return h, self._project(self.c, c_final)

    def _project(self, layer: nn.Linear, final: Tensor) -> Tensor:
        out = torch.tanh(layer(final))  # [B, layers * H]
        return out.view(-1, self.layers, self.hidden).transpose(0, 1).contiguous()


class BahdanauAttention(nn.Module):
    """Additive attention: score(q, k) = vᵀ tanh(W_q q + W_k k)."""

    def __init__(self, key_size: int, query_size: int, size: int):
        super().__init__()
        self.key_layer = nn.Linear(key_size, size, bias=False)
        self.query_layer = nn.Linear(query_size, size, bias=False)
        self.energy = nn.Linear(size, 1, bias=False)

    def keys(self, states: Tensor) -> Tensor:
        return self.key_layer(states)

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        """query [B, T, Q], keys [B, S, A] → [B, T, S]."""
        hidden = torch.tanh(self.query_layer(query).unsqueeze(2) + keys.unsqueeze(1))
        return self.energy(hidden).squeeze(-1)


class LuongAttention(nn.Module):
    """Multiplicative attention: 'general' score(q, k) = qᵀ W k, 'dot' score(q, k) = qᵀ k."""

    def __init__(self, key_size: int, query_size: int, score: str):
        super().__init__()
        self.key_layer = nn.Linear(key_size, query_size, bias=False) if score == "general" else None

    def keys(self, states: Tensor) -> Tensor:
        return self.key_layer(states) if self.key_layer is not None else states

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))


def attend(attention: nn.Module, query: Tensor, enc: EncoderOutput) -> tuple[Tensor, Tensor]:
    """Masked attention of queries [B, T, Q] over the source → context [B, T, 2H], weights [B, T, S]."""
    scores = attention.scores(query, enc.keys)
    scores = scores.masked_fill(~enc.mask.unsqueeze(1), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.bmm(weights, enc.states), weights


class AttentionDecoder(nn.Module):
    """Stacked unidirectional RNN decoder; the attentional vector tanh(W[h; context]) feeds the output
    layer and, with input feeding, the next step's input."""

    def __init__(self, config: ModelConfig, encoder_size: int):
        super().__init__()
        hidden = config.decoder_hidden or config.hidden
        self.hidden, self.input_feeding = hidden, config.input_feeding
        input_size = config.embedding + (hidden if config.input_feeding else 0)
        self.rnn = make_rnn(config.cell, input_size, hidden, config.decoder_layers, config.dropout, False)
        if config.attention == "bahdanau":
            self.attention: nn.Module = BahdanauAttention(encoder_size, hidden, hidden)
        else:
            self.attention = LuongAttention(encoder_size, hidden, config.luong_score)
        self.combine = nn.Linear(hidden + encoder_size, hidden, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def initial_state(self, enc: EncoderOutput) -> DecoderState:
        feed = enc.states.new_zeros(enc.states.size(0), self.hidden)
        return DecoderState(enc.final, feed)

    def step(self, embedded: Tensor, state: DecoderState, enc: EncoderOutput) -> tuple[Tensor, DecoderState, Tensor]:
        """One step for inputs [B, E] → attentional vector [B, H], new state, weights [B, S]."""
        inputs = torch.cat([embedded, state.feed], dim=-1) if self.input_feeding else embedded
        # CPU only: on CUDA cuDNN's fused step is the fast path.
        if (self.training and inputs.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and type(self.rnn) in CELL_FUNCTIONS):
            out, rnn_state = cell_step(self.rnn, inputs, state.rnn)
        else:
            out, rnn_state = self.rnn(inputs.unsqueeze(1), state.rnn)
        vector, weights = self._attend(out, enc)
        return vector.squeeze(1), DecoderState(rnn_state, vector.squeeze(1)), weights.squeeze(1)

    def forward(self, embedded: Tensor, enc: EncoderOutput, truncate: int = 0) -> tuple[Tensor, Tensor]:
        """All steps under teacher forcing: inputs [B, T, E] → vectors [B, T, H], weights [B, T, S].

        Without input feeding no step depends on the previous attention, so the recurrence is one
        fused RNN call over the whole target (one per chunk of `truncate` steps) and attention is
        batched over all steps. With `truncate` = K > 0 the state (and the input-feeding vector) is
        detached every K steps: the loss at step s back-propagates through steps > s - K at most.
        """
        state = self.initial_state(enc)
        if not self.input_feeding:
            return self._attend(self._run_chunks(embedded, state.rnn, truncate), enc)
        vectors, weights = [], []
        for t in range(embedded.size(1)):
            if starts_chunk(t, truncate):
                state = state.detach()
            vector, state, weight = self.step(embedded[:, t], state, enc)
            vectors.append(vector)
            weights.append(weight)
        return torch.stack(vectors, dim=1), torch.stack(weights, dim=1)

    def _run_chunks(self, embedded: Tensor, rnn_state: RNNState, truncate: int) -> Tensor:
        if truncate <= 0 or truncate >= embedded.size(1):
            return self.rnn(embedded, rnn_state)[0]
        outs = []
        for start in range(0, embedded.size(1), truncate):
            if start:
                rnn_state = detach_state(rnn_state)
            out, rnn_state = self.rnn(embedded[:, start : start + truncate], rnn_state)
            outs.append(out)
        return torch.cat(outs, dim=1)

    def _attend(self, out: Tensor, enc: EncoderOutput) -> tuple[Tensor, Tensor]:
        context, weights = attend(self.attention, out, enc)
        vector = torch.tanh(self.combine(torch.cat([out, context], dim=-1)))
        return self.dropout(vector), weights


def cell_step(rnn: nn.RNNBase, inputs: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
    """One time step of a stacked unidirectional `rnn` through torch's cell functions, with its weights
    and its dropout between layers: the same computation as `rnn(inputs.unsqueeze(1), state)`.

    Used for training under bf16 autocast, where oneDNN's one-step RNN kernel is the bottleneck: on
    the benchmark model the cells train at 4,679 target tokens/s against 3,927 (float32: 2,941).
    """
    cell = torch.rnn_relu_cell if getattr(rnn, "nonlinearity", "tanh") == "relu" else CELL_FUNCTIONS[type(rnn)]
    lstm = isinstance(state, tuple)
    h0, c0 = state if lstm else (state, None)
    hs, cs, x = [], [], inputs
    for layer in range(rnn.num_layers):
        weights = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        out = cell(x, (h0[layer], c0[layer]) if lstm else h0[layer], *weights)
        h = out[0] if lstm else out
        hs.append(h)
        if lstm:
            cs.append(out[1])
        x = F.dropout(h, rnn.dropout, rnn.training) if layer + 1 < rnn.num_layers else h
    new_state = (torch.stack(hs), torch.stack(cs)) if lstm else torch.stack(hs)
    return x.unsqueeze(1), new_state


class Seq2Seq(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int, pad_id: int = 0):
        super().__init__()
        self.config, self.pad_id = config, pad_id
        self.src_embed = nn.Embedding(vocab_size, config.embedding, padding_idx=pad_id)
        self.tgt_embed = self.src_embed if config.share_embeddings else nn.Embedding(vocab_size, config.embedding, padding_idx=pad_id)
        self.embed_dropout = nn.Dropout(config.embedding_dropout)
        self.encoder = BiRNNEncoder(config.cell, config.embedding, config.hidden, config.encoder_layers, config.dropout, config.residual)
        decoder_hidden = config.decoder_hidden or config.hidden
        self.bridge = Bridge(config.cell, self.encoder.output_size, decoder_hidden, config.decoder_layers, config.bridge)
        self.decoder = AttentionDecoder(config, self.encoder.output_size)
        # Tying needs the output layer's input to be embedding-sized; project when the sizes differ.
        needs_projection = config.tie_embeddings and decoder_hidden != config.embedding
        self.pre_output = nn.Linear(decoder_hidden, config.embedding, bias=False) if needs_projection else None
        self.output = nn.Linear(config.embedding if needs_projection else decoder_hidden, vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tgt_embed.weight

    def encode(self, src: Tensor, lengths: Tensor, embedded: Optional[Tensor] = None) -> EncoderOutput:
        """Encode source ids; `embedded` [B, S, E] replaces their embeddings (gradient saliency needs a
        leaf tensor to differentiate against)."""
        if embedded is None:
            embedded = self.src_embed(src)
        states, final = self.encoder(self.embed_dropout(embedded), lengths)
        mask = src != self.pad_id
        return EncoderOutput(states, mask, self.decoder.attention.keys(states), self.bridge(final, src.size(0), src.device))

    def logits(self, vectors: Tensor) -> Tensor:
        if self.pre_output is not None:
            vectors = self.pre_output(vectors)
        return self.output(vectors)

    def forward(self, src: Tensor, lengths: Tensor, tgt_in: Tensor, teacher_forcing: float = 1.0,
                truncate: int = 0) -> tuple[Tensor, Tensor]:
        """Training pass: logits [B, T, V] and attention [B, T, S].

        With teacher_forcing < 1 each step feeds the gold previous token with that probability and
        the model's own prediction otherwise (scheduled sampling), which forces a step-by-step loop.
        `truncate` = K > 0 is truncated BPTT: the decoder state is detached every K target steps.
        """
        enc = self.encode(src, lengths)
        if teacher_forcing >= 1.0:
            vectors, weights = self.decoder(self.embed_dropout(self.tgt_embed(tgt_in)), enc, truncate)
            return self.logits(vectors), weights
        state = self.decoder.initial_state(enc)
        logits, weights, prev = [], [], tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            if starts_chunk(t, truncate):
                state = state.detach()
            vector, state, weight = self.decoder.step(self.embed_dropout(self.tgt_embed(prev)), state, enc)
            step_logits = self.logits(vector)
            logits.append(step_logits)
            weights.append(weight)
            if t + 1 < tgt_in.size(1):
                use_gold = torch.rand(src.size(0), device=src.device) < teacher_forcing
                prev = torch.where(use_gold, tgt_in[:, t + 1], step_logits.argmax(-1))
        return torch.stack(logits, dim=1), torch.stack(weights, dim=1)

    def initial_state(self, enc: EncoderOutput) -> DecoderState:
        return self.decoder.initial_state(enc)

    def decode_step(self, prev: Tensor, state: DecoderState, enc: EncoderOutput) -> tuple[Tensor, DecoderState, Tensor]:
        """Inference step: previous tokens [B] → log-probabilities [B, V], new state, attention [B, S]."""
        vector, state, weights = self.decoder.step(self.tgt_embed(prev), state, enc)
        return F.log_softmax(self.logits(vector), dim=-1), state, weights


def build_model(config: ModelConfig, vocab_size: int, pad_id: int = 0, seed: Optional[int] = None) -> Seq2Seq:
    """Build a model; with a seed, its initial weights are reproducible."""
    if seed is not None:
        torch.manual_seed(seed)
    return Seq2Seq(config, vocab_size, pad_id)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
