"""The Flask app factory. Routes stay thin: validate (validation.py), translate (engine.py), serialise."""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

import torch
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from service.config import ServiceConfig
from service.engine import TranslationEngine
from service.errors import ApiError, register_error_handlers
from service.metrics import Metrics
from service.openapi import build_openapi
from service.validation import LANGUAGE_NAMES, Job, check_decode_work, parse_translate_request, read_json_body
from translator.config import LANGUAGES
from translator.prediction import Translation, TranslationError

log = logging.getLogger("service")
access_log = logging.getLogger("service.access")
routes = Blueprint("routes", __name__)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # a client's X-Request-ID is kept only if it is this tame


@dataclass
class ServiceState:
    """What the routes need, stored in app.extensions (no module globals, so tests can build many apps)."""

    config: ServiceConfig
    engine: TranslationEngine
    metrics: Metrics
    openapi: dict


def create_app(config: ServiceConfig, engine: Optional[TranslationEngine] = None) -> Flask:
    """Build the service for `config`; the model is loaded here unless a ready `engine` is given."""
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes  # larger bodies get a JSON 413
    app.json.ensure_ascii = False  # Korean stays readable in responses
    app.json.sort_keys = False
    engine = engine or TranslationEngine(config.model_path, config.cache_size, config.batching, config.quantize)
    app.extensions["translator"] = ServiceState(config, engine, Metrics(), build_openapi(config))
    _log_model(engine)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    register_error_handlers(app)
    app.register_blueprint(routes)
    return app


def reload_model(app: Flask) -> bool:
    """Re-read the model file (gunicorn's on_reload calls this on SIGHUP); keeps the old model on failure."""
    engine = _state(app).engine
    try:
        engine.reload()
    except Exception:
        log.exception("model reload failed; still serving the previous model", extra={"model_path": str(engine.model_path)})
        return False
    _log_model(engine)
    return True


def _log_model(engine: TranslationEngine) -> None:
    loaded = engine.current
    log.info("model loaded", extra={"model": loaded.model_id, "model_sha256": loaded.sha256,
                                    "model_path": str(engine.model_path), "directions": sorted(engine.directions)})


def _state(app: Optional[Flask] = None) -> ServiceState:
    return (app or current_app).extensions["translator"]


# --- request bookkeeping: id, timing, metrics, one access-log line -----------------------------------
def _start_request() -> None:
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
    g.started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule else "unmatched"  # raw paths would explode label counts
    _state().metrics.observe_request(route, request.method, response.status_code, seconds)
    response.headers["X-Request-ID"] = g.get("request_id", "")
    access_log.info("request", extra={"request_id": g.get("request_id"), "method": request.method, "route": route,
                                      "status": response.status_code, "duration_ms": round(seconds * 1000, 2)})
    return response


def _elapsed_ms() -> float:
    return round((time.perf_counter() - g.started) * 1000, 2)


# --- routes ------------------------------------------------------------------------------------------
@routes.post("/v1/translate")
def translate() -> Response:
    state = _state()
    jobs = parse_translate_request(read_json_body(request), state.config, state.engine.directions)
    check_decode_work(jobs, state.engine.source_lengths(jobs), state.config.max_decode_work)
    try:
        outcome = state.engine.translate(jobs)
    except TranslationError as err:  # e.g. the model was swapped for one without this direction
        raise ApiError(400, "invalid_request", str(err)) from None
    state.metrics.observe_translations([job.direction for job in jobs], outcome.cache_hits)
    return jsonify({
        "model": outcome.model_id,
        "time_ms": _elapsed_ms(),
        "translations": [_translation_json(job, result) for job, result in zip(jobs, outcome.translations)],
    })


def _translation_json(job: Job, result: Translation) -> dict:
    item = {
        "text": job.text,
        "source": job.source,
        "target": job.target,
        "translation": result.text,
        "score": result.score,
        "alternatives": [{"text": alt.text, "score": alt.score} for alt in result.alternatives],
    }
    if job.alignment:
        item["alignment"] = {"source_tokens": result.source_tokens, "target_tokens": result.target_tokens,
                             "weights": result.alignment}
    return item


@routes.get("/v1/languages")
def languages() -> Response:
    state = _state()
    directions = sorted(state.engine.directions)
    return jsonify({
        "model": state.engine.current.model_id,
        "languages": [{"code": code, "name": LANGUAGE_NAMES[code]} for code in LANGUAGES],
        "directions": [dict(zip(("source", "target"), direction.split("-"))) for direction in directions],
    })


@routes.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})  # the process answers; /readyz checks the model


@routes.get("/readyz")
def readyz() -> Response:
    engine = _state().engine
    try:
        engine.probe()
    except Exception:
        log.exception("readiness probe failed", extra={"request_id": g.request_id})
        raise ApiError(503, "not_ready", "the model is not answering yet; retry shortly or check the server log") from None
    current = engine.current
    return jsonify({
        "status": "ready",
        "model": current.model_id,
        "model_sha256": current.sha256,
        "loaded_at": datetime.fromtimestamp(current.loaded_at, timezone.utc).isoformat(timespec="seconds"),
    })


@routes.get("/metrics")
def metrics() -> Response:
    body, content_type = _state().metrics.render()
    return Response(body, content_type=content_type)


@routes.get("/openapi.json")
def openapi() -> Response:
    return jsonify(_state().openapi)


@routes.get("/")
def index() -> Response:
    return current_app.send_static_file("index.html")
