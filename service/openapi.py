"""The OpenAPI 3 document served at /openapi.json, built from the same limits the validation uses.

tests/test_openapi.py checks that its paths are exactly the app's routes and fuzzes the app with it.
"""

from __future__ import annotations

from typing import Any

from service.config import ServiceConfig
from service.validation import DEFAULT_BEAM

JSON = "application/json"


def build_openapi(config: ServiceConfig) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Korean–English translation service",
            "version": "1",
            "description": "Word and phrase translation between English and Korean with a BiRNN attention model. "
                           "Every error is JSON: {\"error\": {\"code\", \"message\", \"request_id\"}}.",
        },
        "paths": {
            "/v1/translate": {"post": _translate_operation(config)},
            "/v1/languages": {"get": _get("Languages and directions the loaded model translates", "Languages")},
            "/healthz": {"get": _get("Liveness: the process answers", "Health")},
            "/readyz": {"get": {**_get("Readiness: the model is loaded and translates a probe word", "Ready"),
                                "responses": {"200": _json_response("Ready", "Ready"),
                                              "503": _json_response("The model is not answering", "Error")}}},
            "/metrics": {"get": _get("Prometheus metrics (text exposition format)", media="text/plain")},
            "/openapi.json": {"get": _get("This document", "Document")},
            "/": {"get": _get("The web page", media="text/html")},
        },
        "components": {"schemas": _schemas(config)},
    }


def _translate_operation(config: ServiceConfig) -> dict[str, Any]:
    errors = {
        "400": "Invalid request: malformed JSON, invalid UTF-8, wrong types, missing or unknown fields, unknown or "
               "same language, a direction the model lacks, empty or too long text, too many texts, or more "
               f"decoding work than one request may ask for (beam × Σ source pieces² > {config.max_decode_work:,})",
        "413": f"Body larger than {config.max_body_bytes // 1024} KB",
        "415": "Body is not declared as application/json",
    }
    return {
        "summary": "Translate one text or a batch",
        "operationId": "translate",
        "requestBody": {
            "required": True,
            "content": {JSON: {
                "schema": {"$ref": "#/components/schemas/TranslateRequest"},
                "example": {"text": "baseball bat", "source": "en", "target": "ko", "beam": 5, "n_best": 3},
            }},
        },
        "responses": {
            "200": _json_response("One result per input text, in input order", "TranslateResponse"),
            **{status: _json_response(description, "Error") for status, description in errors.items()},
        },
    }


def _get(summary: str, schema: str = "", media: str = JSON) -> dict[str, Any]:
    content = {media: {"schema": {"$ref": f"#/components/schemas/{schema}"}}} if schema else {media: {"schema": {"type": "string"}}}
    return {"summary": summary, "responses": {"200": {"description": summary, "content": content}}}


def _json_response(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _schemas(config: ServiceConfig) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1, "maxLength": config.max_chars,
            "description": "A word or phrase; must contain more than whitespace"}
    context = {"type": "string", "nullable": True, "maxLength": config.max_chars,
               "description": "A sentence containing the text, to pick the right sense (empty = none)"}
    language = {"type": "string", "enum": ["en", "ko"]}
    score = {"type": "number"}
    return {
        "TranslateRequest": {
            "type": "object",
            "additionalProperties": False,
            "oneOf": [{"required": ["text"]}, {"required": ["texts"]}],
            "properties": {
                "text": text,
                "texts": {"type": "array", "minItems": 1, "maxItems": config.max_texts, "items": text},
                "source": {"type": "string", "enum": ["en", "ko", "auto"], "default": "auto",
                           "description": "auto: Korean if the text contains Hangul, else English"},
                "target": {**language, "description": "default: the other language"},
                "context": {"oneOf": [context, {"type": "array", "maxItems": config.max_texts, "items": context,
                                                "description": "one context per text"}]},
                "beam": {"type": "integer", "minimum": 1, "maximum": config.max_beam, "default": DEFAULT_BEAM,
                         "description": "beam size; 1 = greedy"},
                "n_best": {"type": "integer", "minimum": 1, "maximum": config.max_beam, "default": 1,
                           "description": "hypotheses returned per text (at most beam): the best plus alternatives"},
                "alignment": {"type": "boolean", "default": False,
                              "description": "include the attention matrix (target × source tokens)"},
            },
        },
        "TranslateResponse": {
            "type": "object",
            "required": ["model", "time_ms", "translations"],
            "properties": {
                "model": {"type": "string"},
                "time_ms": {"type": "number", "minimum": 0},
                "translations": {"type": "array", "items": {"$ref": "#/components/schemas/Translation"}},
            },
        },
        "Translation": {
            "type": "object",
            "required": ["text", "source", "target", "translation", "score", "alternatives"],
            "properties": {
                "text": {"type": "string"},
                "source": language,
                "target": language,
                "translation": {"type": "string"},
                "score": score,
                "alternatives": {"type": "array", "items": {
                    "type": "object", "required": ["text", "score"],
                    "properties": {"text": {"type": "string"}, "score": score},
                }},
                "alignment": {
                    "type": "object",
                    "required": ["source_tokens", "target_tokens", "weights"],
                    "properties": {
                        "source_tokens": {"type": "array", "items": {"type": "string"}},
                        "target_tokens": {"type": "array", "items": {"type": "string"}},
                        "weights": {"type": "array", "description": "[target token][source token] attention weights",
                                    "items": {"type": "array", "items": {"type": "number"}}},
                    },
                },
            },
        },
        "Languages": {
            "type": "object",
            "required": ["model", "languages", "directions"],
            "properties": {
                "model": {"type": "string"},
                "languages": {"type": "array", "items": {
                    "type": "object", "required": ["code", "name"],
                    "properties": {"code": language, "name": {"type": "string"}},
                }},
                "directions": {"type": "array", "items": {
                    "type": "object", "required": ["source", "target"],
                    "properties": {"source": language, "target": language},
                }},
            },
        },
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}},
        "Ready": {
            "type": "object",
            "required": ["status", "model", "model_sha256", "loaded_at"],
            "properties": {"status": {"type": "string", "enum": ["ready"]}, "model": {"type": "string"},
                           "model_sha256": {"type": "string"}, "loaded_at": {"type": "string", "format": "date-time"}},
        },
        "Document": {"type": "object", "required": ["openapi", "paths"]},
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                               "request_id": {"type": "string"}},
            }},
        },
    }
