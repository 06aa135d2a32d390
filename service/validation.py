"""Turn a request body into translation jobs, or an `ApiError` that says exactly what to fix.

Everything a client can get wrong is checked here, before the model sees anything, so bad input
never reaches torch and never becomes a 500.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from service.config import ServiceConfig
from service.errors import ApiError
from translator.config import LANGUAGES
from translator.data import normalize
from translator.prediction import strip_control_symbols

LANGUAGE_NAMES = {"en": "English", "ko": "Korean"}
FIELDS = ("text", "texts", "source", "target", "context", "beam", "n_best", "alignment")
DEFAULT_BEAM = 5
# Hangul syllables and jamo (modern, archaic and compatibility): any of them means the text is Korean.
HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff]")
EXAMPLE = '{"text": "baseball bat", "source": "en", "target": "ko"}'


@dataclass(frozen=True)
class Job:
    """One text to translate with every parameter that changes the result (so it is also a cache key)."""

    text: str
    source: str
    target: str
    context: Optional[str]
    beam: int
    n_best: int
    alignment: bool

    @property
    def direction(self) -> str:
        return f"{self.source}-{self.target}"


def model_text(text: str, lowercase: bool = False) -> str:
    """The text as the model will see it (the library strips its control tags and normalises)."""
    return normalize(strip_control_symbols(text), lowercase)


def detect_language(text: str) -> str:
    return "ko" if HANGUL.search(text) else "en"


def read_json_body(request: Request) -> Any:
    """The body as JSON: 415 unless it is declared JSON, 400 unless it is UTF-8 JSON (413 past the limit)."""
    if not request.is_json:
        given = request.mimetype or "none"
        raise ApiError(415, "unsupported_media_type",
                       f"send a JSON body with 'Content-Type: application/json' (got {given!r}), e.g. {EXAMPLE}")
    raw = request.get_data(cache=False)  # werkzeug raises 413 when Content-Length is past MAX_CONTENT_LENGTH
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(raw) >= limit:
        raise RequestEntityTooLarge()  # a chunked body is silently cut at the limit: reaching it means too large
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, "invalid_utf8", f"the body is not valid UTF-8 (bad byte at offset {err.start})") from None
    if not text.strip():
        raise ApiError(400, "malformed_json", f"the body is empty; send a JSON object such as {EXAMPLE}")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise ApiError(400, "malformed_json",
                       f"the body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except (ValueError, RecursionError) as err:  # NaN/Infinity, or nesting deeper than the parser allows
        reason = "it is nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {reason}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_translate_request(body: Any, config: ServiceConfig, directions: set[str]) -> list[Job]:
    """Validate a /v1/translate body against the limits and the loaded model's directions."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", f"the body must be a JSON object such as {EXAMPLE}")
    unknown = [name for name in body if name not in FIELDS]
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
    texts = _texts(body, config)
    source = _language(body, "source", allowed=(*LANGUAGES, "auto")) or "auto"
    target = _language(body, "target", allowed=LANGUAGES)
    contexts = _contexts(body.get("context"), len(texts), config.max_chars)
    beam = _integer(body, "beam", DEFAULT_BEAM, 1, config.max_beam)
    n_best = _integer(body, "n_best", 1, 1, beam)
    alignment = body.get("alignment", False)
    if not isinstance(alignment, bool):
        raise ApiError(400, "invalid_type", f"'alignment' must be true or false, got {_json_type(alignment)}")
    if source != "auto" and source == target:
        raise ApiError(400, "same_language", f"source and target are both {source!r}: choose a different target")
    jobs = []
    for i, (text, context) in enumerate(zip(texts, contexts)):
        src, tgt = _direction(text, _name(body, i), source, target, directions)
        jobs.append(Job(text, src, tgt, context, beam, n_best, alignment))
    return jobs


def check_decode_work(jobs: list[Job], source_lengths: list[int], limit: int) -> None:
    """Refuse requests whose worst-case decoding would hold a worker for too long (see MAX_DECODE_WORK)."""
    work = sum(job.beam * length * length for job, length in zip(jobs, source_lengths))
    if work > limit:
        longest = max(source_lengths)
        raise ApiError(400, "too_much_work",
                       f"this request is too much work to decode at once ({len(jobs)} texts of up to {longest} pieces "
                       f"at beam {jobs[0].beam}: beam × Σ pieces² = {work:,} > {limit:,}); "
                       "lower 'beam', or send fewer or shorter texts per request")


def _texts(body: dict, config: ServiceConfig) -> list[str]:
    if "text" in body and "texts" in body:
        raise ApiError(400, "conflicting_fields", "give either 'text' (one string) or 'texts' (a list), not both")
    if "text" in body:
        return [_text(body["text"], "text", config.max_chars)]
    if "texts" not in body:
        raise ApiError(400, "missing_field", f"'text' (a string) or 'texts' (a list of strings) is required, e.g. {EXAMPLE}")
    texts = body["texts"]
    if not isinstance(texts, list):
        raise ApiError(400, "invalid_type", f"'texts' must be a list of strings, got {_json_type(texts)}")
    if not texts:
        raise ApiError(400, "empty_batch", f"'texts' is empty: give 1 to {config.max_texts} strings")
    if len(texts) > config.max_texts:
        raise ApiError(400, "batch_too_large", f"'texts' has {len(texts)} items; send at most {config.max_texts} per request")
    return [_text(text, f"texts[{i}]", config.max_chars) for i, text in enumerate(texts)]


def _text(value: Any, name: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "invalid_type", f"{name!r} must be a string, got {_json_type(value)}")
    _check_encodable(value, name)
    if len(value) > max_chars:
        raise ApiError(400, "text_too_long", f"{name!r} has {len(value)} characters; the limit is {max_chars}")
    if not model_text(value):  # whitespace, control characters and the model's own tags only
        raise ApiError(400, "empty_text", f"{name!r} is empty or only whitespace (or tags): give a word or phrase to translate")
    return value


def _contexts(value: Any, count: int, max_chars: int) -> list[Optional[str]]:
    """None, one string for every text, or one string/null per text; empty strings mean no context."""
    if value is None or isinstance(value, str):
        return [_context(value, "context", max_chars)] * count
    if not isinstance(value, list):
        raise ApiError(400, "invalid_type", f"'context' must be a string or a list of strings, got {_json_type(value)}")
    if len(value) != count:
        raise ApiError(400, "context_mismatch", f"'context' has {len(value)} items but there are {count} texts: give one per text")
    return [_context(item, f"context[{i}]", max_chars) for i, item in enumerate(value)]


def _context(value: Any, name: str, max_chars: int) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_type", f"{name!r} must be a string or null, got {_json_type(value)}")
    _check_encodable(value, name)
    if len(value) > max_chars:
        raise ApiError(400, "text_too_long", f"{name!r} has {len(value)} characters; the limit is {max_chars}")
    return value if model_text(value) else None


def _check_encodable(value: str, name: str) -> None:
    # JSON escapes can smuggle in lone surrogates ("\ud800"), which are not text and cannot be encoded.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_text", f"{name!r} contains an unpaired surrogate escape; send valid Unicode text") from None


def _language(body: dict, name: str, allowed: tuple[str, ...]) -> Optional[str]:
    if name not in body:
        return None
    value = body[name]
    if not isinstance(value, str):
        raise ApiError(400, "invalid_type", f"{name!r} must be a string, got {_json_type(value)}")
    if value not in allowed:
        raise ApiError(400, "unknown_language", f"{name} language {value!r} is not supported; use one of {', '.join(allowed)}")
    return value


def _integer(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if type(value) is not int:  # bool is an int subclass; 5.0 is not an integer here
        raise ApiError(400, "invalid_type", f"{name!r} must be an integer, got {_json_type(value)}")
    if not low <= value <= high:
        upper = f"beam ({high})" if name == "n_best" else str(high)
        raise ApiError(400, "out_of_range", f"{name!r} must be between {low} and {upper}, got {value}")
    return value


def _direction(text: str, name: str, source: str, target: Optional[str], directions: set[str]) -> tuple[str, str]:
    """Resolve `auto` by looking for Hangul; a missing target is the other language."""
    src = detect_language(text) if source == "auto" else source
    tgt = target or next(lang for lang in LANGUAGES if lang != src)
    if src == tgt:  # only reachable with source auto: an explicit same pair was refused earlier
        raise ApiError(400, "same_language",
                       f"{name!r} looks {LANGUAGE_NAMES[src]} (detected by {'' if src == 'ko' else 'no '}Hangul) "
                       f"and the target is {tgt!r}: set 'source' explicitly or choose the other target")
    if f"{src}-{tgt}" not in directions:
        raise ApiError(400, "unsupported_direction",
                       f"the loaded model translates {', '.join(sorted(directions))}, not {src}-{tgt} ({name!r})")
    return src, tgt


def _name(body: dict, index: int) -> str:
    return "text" if "text" in body else f"texts[{index}]"


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"
