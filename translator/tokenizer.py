"""A joint English–Korean SentencePiece tokenizer kept as its serialized model proto.

The proto bytes are the whole state: they go into the checkpoint, so a model can never be paired
with the wrong vocabulary, and no tokenizer file has to travel next to it.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any, Iterable, Iterator, Sequence

import sentencepiece as spm

from translator.config import TokenizerConfig
from translator.data import CONTEXT_SEPARATOR, PHRASE_END, PHRASE_START, TAGS

logger = logging.getLogger(__name__)

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# Registered as user-defined symbols: always one piece, never split, even if they occur in text.
USER_SYMBOLS = (TAGS["en"], TAGS["ko"], CONTEXT_SEPARATOR, PHRASE_START, PHRASE_END)

_REQUIRED_CHARS = re.compile(r"smaller than required_chars\. (\d+) vs (\d+)")


class TokenizerError(ValueError):
    """The tokenizer cannot be trained or loaded, or was asked for something it does not have."""


class Tokenizer:
    PAD_ID, UNK_ID, BOS_ID, EOS_ID = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, proto: bytes) -> None:
        """Load and check a serialized model; prefer `Tokenizer.from_proto` / `Tokenizer.train`."""
        if not isinstance(proto, (bytes, bytearray)) or not proto:
            raise TokenizerError("tokenizer model is empty or not bytes")
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(bytes(proto))
        except (RuntimeError, OSError, TypeError):
            raise TokenizerError("tokenizer model is not a valid SentencePiece model (corrupt or truncated bytes)") from None
        self._proto = bytes(proto)
        self._sp = processor
        self._check()
        self._tag_ids = {lang: self._sp.piece_to_id(tag) for lang, tag in TAGS.items()}
        self._separator_id = self._sp.piece_to_id(CONTEXT_SEPARATOR)
        # Ids that never show up in decoded text.
        self._marker_ids = (self._sp.piece_to_id(PHRASE_START), self._sp.piece_to_id(PHRASE_END))
        self._hidden = {PAD_ID, BOS_ID, EOS_ID, self._separator_id, *self._tag_ids.values(), *self._marker_ids}
        self._word_start = [self._sp.id_to_piece(i).startswith("\u2581") for i in range(self.vocab_size)]

    def _check(self) -> None:
        # A model trained elsewhere would silently shift every id the network learned.
        sp = self._sp
        size = sp.get_piece_size()
        if size == 0:
            raise TokenizerError("tokenizer model has an empty vocabulary")
        found = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
        if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise TokenizerError(
                f"tokenizer model has special ids pad/unk/bos/eos = {found}, expected {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}"
            )
        for symbol in USER_SYMBOLS:
            i = sp.piece_to_id(symbol)
            if i == UNK_ID or sp.id_to_piece(i) != symbol or i not in sp.encode(symbol):
                raise TokenizerError(f"tokenizer model lacks the user-defined symbol {symbol}")

    # -----------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_proto(cls, proto: bytes) -> Tokenizer:
        """Rebuild a tokenizer from `Tokenizer.proto` bytes (e.g. read from a checkpoint)."""
        return cls(proto)

    @classmethod
    def train(cls, texts: Iterable[str], config: TokenizerConfig, seed: int = 1) -> Tokenizer:
        """Train a joint model in memory on both languages' sentences.

        `vocab_size` is a soft target: a small corpus yields fewer pieces, and a size below what
        the characters (plus 256 byte-fallback pieces) need is raised to that minimum with a warning.
        """
        sentences = [text for text in texts if text and not text.isspace()]
        if not sentences:
            raise TokenizerError("no text to train the tokenizer on")
        try:
            return cls(_train_proto(sentences, config, config.vocab_size, seed))
        except RuntimeError as err:
            match = _REQUIRED_CHARS.search(str(err))
            if match is None:
                raise TokenizerError(f"tokenizer training failed: {_first_line(err)}") from None
            needed = int(match.group(2))
        logger.warning(
            "tokenizer.vocab_size %d is below the %d pieces the characters of the corpus need; using %d",
            config.vocab_size, needed, needed,
        )
        try:
            return cls(_train_proto(sentences, config, needed, seed))
        except RuntimeError as err:
            raise TokenizerError(f"tokenizer training failed: {_first_line(err)}") from None

    # -----------------------------------------------------------------------------------------------
    # Vocabulary

    @property
    def proto(self) -> bytes:
        return self._proto

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def separator_id(self) -> int:
        return self._separator_id

    def tag_id(self, lang: str) -> int:
        """The id of the tag asking for output in `lang` ("en" or "ko")."""
        try:
            return self._tag_ids[lang]
        except KeyError:
            raise TokenizerError(f"no tag for language {lang!r} (expected one of: {', '.join(TAGS)})") from None

    def id_to_piece(self, i: int) -> str:
        i = int(i)
        if not 0 <= i < self.vocab_size:
            raise TokenizerError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return self._sp.id_to_piece(i)

    # -----------------------------------------------------------------------------------------------
    # Encoding and decoding

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text; pad/bos/eos, tags and the context separator are dropped."""
        kept = []
        for i in ids:
            i = int(i)  # also accepts 0-d tensors and numpy integers
            if not 0 <= i < self.vocab_size:
                raise TokenizerError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
            if i not in self._hidden:
                kept.append(i)
        return self._sp.decode(kept)

    def encode_source(self, text: str, target_lang: str, context: str | None = None,
                      context_encoding: str = "separator") -> list[int]:
        """The source side: [target tag] + text + optional context + [eos].

        "separator": text [<ctx>] context. "inline": the context with the text marked in place,
        before <p> text </p> after; when the context does not contain the text, "separator" is used.
        """
        ids = [self.tag_id(target_lang)]
        start = context.lower().find(text.lower()) if context and context_encoding == "inline" else -1
        if start >= 0:
            end = start + len(text)
            ids += [*self.encode(context[:start]), self._marker_ids[0], *self.encode(text), self._marker_ids[1],
                    *self.encode(context[end:])]
        else:
            ids += self.encode(text)
            if context:
                ids += [self._separator_id, *self.encode(context)]
        ids.append(EOS_ID)
        return ids

    def context_words(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """The context's words in a source from `encode_source`, as [start, end) index spans: the words
        around the marked text ("inline") or after the separator; none when there is no context.
        A word starts at a piece with SentencePiece's word-boundary mark. With "inline" and a Korean
        text (a source tagged for English), the first word after the text is left out: it may be the
        text's own ending (배 + 를 in 배를 타고). English texts are given as they appear, so nothing is
        glued to them."""
        ids = list(ids)
        if self._marker_ids[0] in ids and self._marker_ids[1] in ids:
            regions = [(1, ids.index(self._marker_ids[0])), (ids.index(self._marker_ids[1]) + 1, len(ids))]
            skip_first_after = ids[0] == self._tag_ids["en"]
        elif self._separator_id in ids:
            regions = [(ids.index(self._separator_id) + 1, len(ids))]
            skip_first_after = False
        else:
            return []
        spans: list[list[int]] = []
        for region, (start, end) in enumerate(regions):
            words: list[list[int]] = []
            for i in range(start, end):
                if ids[i] in (EOS_ID, PAD_ID):
                    break
                if not words or self._word_start[ids[i]]:
                    words.append([i, i + 1])
                else:
                    words[-1][1] = i + 1
            spans += words[1:] if region == 1 and skip_first_after else words
        return [(a, b) for a, b in spans]

    def encode_target(self, text: str) -> list[int]:
        """Bare target ids; `collate` adds bos (decoder input) and eos (decoder output)."""
        return self.encode(text)

    def source_pieces(self, ids: Sequence[int]) -> list[str]:
        """One display string per id (e.g. attention-matrix labels): pieces, with specials named."""
        return [self.id_to_piece(i) for i in ids]

    # -----------------------------------------------------------------------------------------------
    # Pickling: the proto bytes are the whole state (the C++ processor is rebuilt from them).

    def __getstate__(self) -> dict[str, Any]:
        return {"proto": self._proto}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["proto"])

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


def _train_proto(sentences: list[str], config: TokenizerConfig, vocab_size: int, seed: int) -> bytes:
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=_iterate(sentences),
        model_writer=model,
        model_type=config.type,
        vocab_size=vocab_size,
        character_coverage=config.character_coverage,
        hard_vocab_limit=False,  # a small corpus may not support vocab_size pieces
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        user_defined_symbols=list(USER_SYMBOLS),
        split_digits=True,  # numbers are copied digit by digit instead of memorised
        byte_fallback=True,  # unseen characters become UTF-8 byte pieces, not <unk>
        input_sentence_size=0,  # use every sentence (no sampling)
        max_sentence_length=1 << 16,  # bytes; longer lines would be skipped silently
        num_threads=1,  # multi-threaded EM can sum in different orders: keep training reproducible
        minloglevel=2,  # errors only: training should not flood stdout/stderr
    )
    return model.getvalue()


def _iterate(sentences: list[str]) -> Iterator[str]:
    # The trainer reads line by line; a newline inside a sentence would be a second sentence.
    for sentence in sentences:
        yield sentence.replace("\n", " ")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
