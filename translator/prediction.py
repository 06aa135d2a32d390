"""The `Translator` facade: load a checkpoint once, translate batches of texts.

This is what the CLI and the HTTP service sit on.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from translator.checkpoint import load_checkpoint, load_weights
from translator.config import LANGUAGES, Config, config_from_dict
from translator.data import collate, normalize
from translator.model import Seq2Seq, build_model
from translator.search import Hypothesis, decode
from translator.tokenizer import USER_SYMBOLS, Tokenizer

# The shipped model (models/default in the repository); TRANSLATOR_MODEL overrides it, e.g. in Docker.
DEFAULT_MODEL = Path(os.environ.get("TRANSLATOR_MODEL") or Path(__file__).resolve().parent.parent / "models" / "default" / "model.pt")


QUANTIZATIONS = ("int8",)


def quantize_int8(model: Seq2Seq) -> Seq2Seq:
    """Dynamic int8 quantization of every LSTM/GRU and Linear layer (weights stored as int8, activations
    quantized on the fly; embeddings stay float). Inference only. On 2 CPU cores it decodes a phrase
    about 4× faster than float32: fbgemm's int8 kernels beat the float ones at these small shapes."""
    import warnings

    with warnings.catch_warnings():  # eager-mode quantization warns that it is moving to torchao
        warnings.simplefilter("ignore")
        try:
            return torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.LSTM, torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8, inplace=False).eval()
        except RuntimeError as err:  # e.g. no quantized engine (fbgemm/qnnpack) on this platform
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise TranslationError(f"int8 quantization is not available here: {first[:160]}") from None


class TranslationError(ValueError):
    """A request the model cannot serve (unknown language, unsupported direction, bad options)."""


@dataclass
class Alternative:
    text: str
    score: float


@dataclass
class Translation:
    source: str
    text: str
    score: float  # beam: length-normalised log-probability; greedy: summed log-probability
    alternatives: list[Alternative] = field(default_factory=list)
    source_tokens: list[str] = field(default_factory=list)
    target_tokens: list[str] = field(default_factory=list)
    alignment: Optional[list[list[float]]] = None  # [target token][source token] attention weights

    def to_dict(self) -> dict:
        return asdict(self)


class Translator:
    def __init__(self, model: Seq2Seq, tokenizer: Tokenizer, config: Config, model_id: str = "model"):
        self.model, self.tokenizer, self.config, self.model_id = model.eval(), tokenizer, config, model_id
        self.directions = set(config.data.directions)

    @classmethod
    def load(cls, path: str | Path | None = None, quantize: Optional[str] = None) -> "Translator":
        """Load a checkpoint, by default the shipped model (any floating dtype stored; computed in
        float32 on the CPU, or with `quantize="int8"` in dynamically quantized int8)."""
        if quantize is not None and quantize not in QUANTIZATIONS:
            raise TranslationError(f"quantize must be one of: {', '.join(QUANTIZATIONS)} (got {quantize!r})")
        path = path if path is not None else DEFAULT_MODEL
        payload = load_checkpoint(path)
        config = config_from_dict(payload["config"])
        tokenizer = Tokenizer.from_proto(payload["tokenizer"])
        model = build_model(config.model, tokenizer.vocab_size, tokenizer.pad_id)
        load_weights(model, payload["model"], path)
        model_id = f"{config.name}@{payload.get('metrics', {}).get('step', 0)}"
        if quantize == "int8":
            model, model_id = quantize_int8(model.eval()), f"{model_id}+int8"
        return cls(model, tokenizer, config, model_id=model_id)

    def check_direction(self, source: str, target: str) -> None:
        for name, lang in (("source", source), ("target", target)):
            if lang not in LANGUAGES:
                raise TranslationError(f"{name} language {lang!r} is not supported (use one of: {', '.join(LANGUAGES)})")
        if source == target:
            raise TranslationError(f"source and target are both {source!r}")
        if f"{source}-{target}" not in self.directions:
            raise TranslationError(f"this model was trained for {', '.join(sorted(self.directions))}, not {source}-{target}")

    @torch.inference_mode()
    def translate(
        self,
        texts: str | Sequence[str],
        source: str,
        target: str,
        beam: int = 5,
        n_best: int = 1,
        context: Optional[str | Sequence[Optional[str]]] = None,
        alignment: bool = False,
        max_ratio: float = 2.0,
        alpha: float = 1.0,
        temperature: float = 0.0,
        top_k: int = 0,
        seed: Optional[int] = None,
        batch_size: int = 64,
    ) -> list[Translation]:
        """Translate texts (optionally each with a context sentence that contains it).

        Inputs are sorted by length and decoded in batches; results come back in input order.
        `n_best` hypotheses are searched; the best is the translation, the rest its alternatives.
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        contexts = _broadcast_context(context, len(items))
        self.check_direction(source, target)
        if not 1 <= beam <= 50:
            raise TranslationError(f"beam must be between 1 and 50, got {beam}")
        if not 1 <= n_best <= beam and temperature <= 0:
            raise TranslationError(f"n_best must be between 1 and beam ({beam}), got {n_best}")
        _check_search_options(max_ratio, alpha, temperature, top_k, batch_size)
        lowercase = self.config.data.lowercase
        cleaned = [normalize(strip_control_symbols(text), lowercase) for text in items]
        if any(not text for text in cleaned):
            raise TranslationError("empty text: nothing to translate")
        encoded = [
            self.tokenizer.encode_source(text, target, normalize(strip_control_symbols(ctx), lowercase) if ctx else None,
                                         self.config.data.context_encoding)
            for text, ctx in zip(cleaned, contexts)
        ]
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        results: list[Optional[Translation]] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            batch = collate([encoded[i] for i in indices], None, self.tokenizer.pad_id, self.tokenizer.bos_id,
                            self.tokenizer.eos_id, indices)
            nbest_lists = decode(
                self.model, batch.src, batch.src_lengths, self.tokenizer.bos_id, self.tokenizer.eos_id,
                beam_size=beam, n_best=n_best, alpha=alpha, max_ratio=max_ratio,
                temperature=temperature, top_k=top_k, generator=generator,
            )
            for i, hyps in zip(indices, nbest_lists):
                results[i] = self._result(items[i], encoded[i], hyps, alignment)
        return results  # type: ignore[return-value]

    def _result(self, text: str, source_ids: list[int], hyps: list[Hypothesis], alignment: bool) -> Translation:
        best = hyps[0]
        seen = {self.tokenizer.decode(best.tokens)}
        alternatives = []
        for hyp in hyps[1:]:
            decoded = self.tokenizer.decode(hyp.tokens)
            if decoded not in seen:  # different piece sequences may spell the same text
                seen.add(decoded)
                alternatives.append(Alternative(decoded, round(hyp.score, 4)))
        translation = Translation(source=text, text=self.tokenizer.decode(best.tokens), score=round(best.score, 4),
                                  alternatives=alternatives)
        if alignment:
            translation.source_tokens = self.tokenizer.source_pieces(source_ids)
            translation.target_tokens = self.tokenizer.source_pieces(best.tokens) + ["</s>"]
            weights = best.attention[:, : len(source_ids)]
            rows = weights.tolist()
            translation.alignment = [[round(w, 4) for w in row] for row in rows[: len(translation.target_tokens)]]
            translation.target_tokens = translation.target_tokens[: len(translation.alignment)]
        return translation


_CONTROL_SYMBOLS = re.compile("|".join(re.escape(s) for s in USER_SYMBOLS))


def strip_control_symbols(text: str) -> str:
    """User text must not smuggle in the model's control tokens (e.g. HTML '<p>' or a '<2en>' tag)."""
    return _CONTROL_SYMBOLS.sub(" ", text)


def _check_search_options(max_ratio: float, alpha: float, temperature: float, top_k: int, batch_size: int) -> None:
    # Out-of-range values would otherwise crash deep in the search or silently fall back to greedy.
    if not (math.isfinite(max_ratio) and max_ratio > 0):
        raise TranslationError(f"max_ratio must be a finite number > 0, got {max_ratio}")
    if not math.isfinite(alpha):
        raise TranslationError(f"the length penalty must be a finite number, got {alpha}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise TranslationError(f"temperature must be a finite number >= 0 (0 = no sampling), got {temperature}")
    if top_k < 0:
        raise TranslationError(f"top_k must be >= 0 (0 = no limit), got {top_k}")
    if batch_size < 1:
        raise TranslationError(f"batch_size must be >= 1, got {batch_size}")


def _broadcast_context(context: Optional[str | Sequence[Optional[str]]], count: int) -> list[Optional[str]]:
    if context is None or isinstance(context, str):
        return [context] * count
    contexts = list(context)
    if len(contexts) != count:
        raise TranslationError(f"{count} texts but {len(contexts)} contexts")
    return contexts
