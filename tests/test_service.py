"""The HTTP service through Flask's test client: every route and every kind of bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from service.app import create_app, reload_model
from service.config import ServiceConfig
from service.logs import JsonFormatter
from service.validation import detect_language


@pytest.fixture(scope="module")
def app(trained_model):
    return create_app(ServiceConfig(model_path=trained_model.path))


@pytest.fixture
def client(app):
    return app.test_client()


def translate(client, body, **kwargs):
    return client.post("/v1/translate", json=body, **kwargs)


def assert_error(response, status: int, code: str) -> dict:
    """An error is JSON {"error": {"code", "message", "request_id"}} with the request id of the response."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"] and "Traceback" not in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


# --- POST /v1/translate ------------------------------------------------------------------------------
def test_translates_one_text(client, trained_model):
    response = translate(client, {"text": "good friend", "source": "en", "target": "ko"})
    assert response.status_code == 200
    data = response.get_json()
    assert data["model"] == "tiny@250"
    assert data["time_ms"] >= 0
    [result] = data["translations"]
    assert result == {"text": "good friend", "source": "en", "target": "ko", "translation": "좋은 친구",
                      "score": result["score"], "alternatives": []}
    assert result["score"] <= 0  # a log-probability


def test_beam_returns_alternatives_with_scores(client):
    [result] = translate(client, {"text": "cold water", "source": "en", "target": "ko", "beam": 5, "n_best": 5}
                         ).get_json()["translations"]
    assert result["translation"] == "차가운 물"
    assert 1 <= len(result["alternatives"]) <= 4
    for alternative in result["alternatives"]:
        assert alternative["text"] != result["translation"]
        assert alternative["score"] <= result["score"]


def test_batch_detects_each_language_and_keeps_order(client):
    response = translate(client, {"texts": ["water", "물", "big house", "빨간 차"], "source": "auto", "beam": 1})
    results = response.get_json()["translations"]
    assert [(r["source"], r["target"], r["translation"]) for r in results] == [
        ("en", "ko", "물"), ("ko", "en", "water"), ("en", "ko", "큰 집"), ("ko", "en", "red car")]


def test_target_defaults_to_the_other_language(client):
    [result] = translate(client, {"text": "학교", "source": "ko"}).get_json()["translations"]
    assert (result["target"], result["translation"]) == ("en", "school")


def test_context_is_accepted_as_one_string_or_one_per_text(client):
    one = translate(client, {"text": "water", "source": "en", "target": "ko", "context": "cold water please"})
    assert one.status_code == 200 and one.get_json()["translations"][0]["translation"]
    each = translate(client, {"texts": ["water", "book"], "target": "ko", "context": ["cold water", None]})
    assert each.status_code == 200 and len(each.get_json()["translations"]) == 2
    empty = translate(client, {"text": "book", "target": "ko", "context": "  "})  # blank = no context
    assert empty.get_json()["translations"][0]["translation"] == "책"


def test_alignment_is_a_target_by_source_matrix(client):
    [result] = translate(client, {"text": "hot coffee", "source": "en", "target": "ko", "beam": 1, "alignment": True}
                         ).get_json()["translations"]
    alignment = result["alignment"]
    assert alignment["source_tokens"][-1] == "</s>" and alignment["target_tokens"][-1] == "</s>"
    assert len(alignment["weights"]) == len(alignment["target_tokens"])
    for row in alignment["weights"]:
        assert len(row) == len(alignment["source_tokens"])
        assert sum(row) == pytest.approx(1.0, abs=0.01)  # attention is a distribution over the source


def test_alignment_is_only_sent_when_asked(client):
    [result] = translate(client, {"text": "tree", "target": "ko"}).get_json()["translations"]
    assert "alignment" not in result


def test_repeated_requests_are_served_from_the_cache(client, app):
    engine = app.extensions["translator"].engine
    body = {"text": "new book", "source": "en", "target": "ko", "beam": 3}
    first = translate(client, body).get_json()["translations"]
    calls = []
    engine.current.translator.translate = lambda *args, **kwargs: calls.append(args)  # would break if called
    try:
        second = translate(client, body).get_json()["translations"]
    finally:
        del engine.current.translator.translate
    assert second == first and calls == []
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'translator_cache_lookups_total{result="hit"}' in metrics


def test_cache_key_includes_the_search_options(client):
    greedy = translate(client, {"text": "flower", "target": "ko", "beam": 1, "n_best": 1}).get_json()
    beam = translate(client, {"text": "flower", "target": "ko", "beam": 4, "n_best": 4}).get_json()
    assert greedy["translations"][0]["alternatives"] == []
    assert beam["translations"][0]["alternatives"]  # not the cached greedy result


def test_a_text_of_exactly_the_limit_is_accepted(client):
    text = ("water " * 100)[:512]
    assert translate(client, {"text": text, "source": "en", "target": "ko", "beam": 1}).status_code == 200


# --- bad input: always a 4xx JSON error that says what to fix -----------------------------------------
BAD_BODIES = [
    # (body, status, code, words the message must contain)
    ([1, 2], 400, "invalid_body", "JSON object"),
    ({}, 400, "missing_field", "'text'"),
    ({"source": "en", "target": "ko"}, 400, "missing_field", "'texts'"),
    ({"text": "a", "texts": ["b"]}, 400, "conflicting_fields", "not both"),
    ({"text": "water", "beams": 3}, 400, "unknown_field", "'beams'"),
    ({"text": 5}, 400, "invalid_type", "must be a string"),
    ({"text": None}, 400, "invalid_type", "got null"),
    ({"texts": "water"}, 400, "invalid_type", "list of strings"),
    ({"texts": ["water", 3]}, 400, "invalid_type", "texts[1]"),
    ({"text": "water", "source": 1}, 400, "invalid_type", "'source'"),
    ({"text": "water", "beam": "5"}, 400, "invalid_type", "integer"),
    ({"text": "water", "beam": True}, 400, "invalid_type", "integer"),
    ({"text": "water", "beam": 2.0}, 400, "invalid_type", "integer"),
    ({"text": "water", "alignment": "yes"}, 400, "invalid_type", "true or false"),
    ({"text": "water", "context": 5}, 400, "invalid_type", "'context'"),
    ({"text": "water", "context": [1]}, 400, "invalid_type", "context[0]"),
    ({"texts": ["water", "tree"], "context": ["a"]}, 400, "context_mismatch", "one per text"),
    ({"text": "water", "source": "fr", "target": "ko"}, 400, "unknown_language", "'fr'"),
    ({"text": "water", "source": "en", "target": "ja"}, 400, "unknown_language", "en, ko"),
    ({"text": "water", "target": "auto"}, 400, "unknown_language", "'auto'"),
    ({"text": "water", "source": "en", "target": "en"}, 400, "same_language", "both 'en'"),
    ({"text": "물", "source": "auto", "target": "ko"}, 400, "same_language", "Hangul"),
    ({"text": ""}, 400, "empty_text", "empty"),
    ({"text": " \t\n "}, 400, "empty_text", "whitespace"),
    ({"text": "\u200b\u200b"}, 400, "empty_text", "whitespace"),
    ({"text": "<2en> <ctx>"}, 400, "empty_text", "tags"),  # only the model's control tags
    ({"texts": ["water", "   "]}, 400, "empty_text", "texts[1]"),
    ({"text": "a" * 513}, 400, "text_too_long", "513 characters"),
    ({"text": "water", "context": "b" * 513}, 400, "text_too_long", "'context'"),
    ({"texts": []}, 400, "empty_batch", "1 to 64"),
    ({"texts": ["water"] * 65}, 400, "batch_too_large", "at most 64"),
    ({"text": "water", "beam": 0}, 400, "out_of_range", "between 1 and 10"),
    ({"text": "water", "beam": 11}, 400, "out_of_range", "between 1 and 10"),
    ({"text": "water", "beam": 2, "n_best": 3}, 400, "out_of_range", "beam (2)"),
    ({"texts": ["water " * 85] * 64, "beam": 10}, 400, "too_much_work", "lower 'beam'"),
]


@pytest.mark.parametrize("body, status, code, words", BAD_BODIES, ids=[case[2] for case in BAD_BODIES])
def test_bad_bodies_get_a_json_error(client, body, status, code, words):
    error = assert_error(translate(client, body), status, code)
    assert words in error["message"]


BAD_RAW = [
    # (raw body, content type, status, code)
    (b'{"text": "water"', "application/json", 400, "malformed_json"),
    (b"", "application/json", 400, "malformed_json"),
    (b'{"text": NaN}', "application/json", 400, "malformed_json"),
    (b'{"text": "water\\ud800"}', "application/json", 400, "invalid_text"),  # a lone surrogate escape
    (b"[" * 20000 + b"]" * 20000, "application/json", 400, "malformed_json"),
    ('{"text": "물"}'.encode("euc-kr"), "application/json", 400, "invalid_utf8"),
    (b'{"text": "water"}', "text/plain", 415, "unsupported_media_type"),
    (b"text=water", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b'{"text": "water"}', None, 415, "unsupported_media_type"),
    (b'{"texts": ["' + b"a" * (64 * 1024) + b'"]}', "application/json", 413, "request_too_large"),
]


@pytest.mark.parametrize("data, content_type, status, code", BAD_RAW, ids=[f"{case[3]}-{i}" for i, case in enumerate(BAD_RAW)])
def test_bad_raw_bodies_get_a_json_error(client, data, content_type, status, code):
    headers = {"Content-Type": content_type} if content_type else {}
    assert_error(client.post("/v1/translate", data=data, headers=headers), status, code)


def test_a_direction_the_model_lacks_is_refused(en_ko_only_model):
    client = create_app(ServiceConfig(model_path=en_ko_only_model)).test_client()
    error = assert_error(translate(client, {"text": "물", "source": "ko", "target": "en"}), 400, "unsupported_direction")
    assert "en-ko" in error["message"]
    assert translate(client, {"text": "water", "target": "ko"}).status_code == 200


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "/v2/translate", 404, "not_found"),
    ("GET", "/static/missing.js", 404, "not_found"),
    ("DELETE", "/v1/translate", 405, "method_not_allowed"),
    ("GET", "/v1/translate", 405, "method_not_allowed"),
    ("POST", "/healthz", 405, "method_not_allowed"),
    ("PUT", "/v1/languages", 405, "method_not_allowed"),
])
def test_unknown_routes_and_methods_get_a_json_error(client, method, path, status, code):
    response = client.open(path, method=method)
    assert_error(response, status, code)
    if status == 405:
        assert method not in response.headers["Allow"]


def test_an_internal_error_is_a_json_500_without_details_and_is_logged(client, app, monkeypatch, caplog):
    def explode(jobs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.extensions["translator"].engine, "translate", explode)
    with caplog.at_level(logging.ERROR, logger="service"):
        response = translate(client, {"text": "water", "target": "ko"}, headers={"X-Request-ID": "req-42"})
    error = assert_error(response, 500, "internal_error")
    assert error["request_id"] == "req-42" and "req-42" in error["message"]
    assert "secret" not in response.get_data(as_text=True)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.request_id == "req-42" and record.exc_info[0] is RuntimeError


def test_request_ids_are_echoed_only_when_tame(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    generated = client.get("/healthz", headers={"X-Request-ID": "<script>"}).headers["X-Request-ID"]
    assert generated != "<script>" and len(generated) == 32


# --- the other routes --------------------------------------------------------------------------------
def test_languages_lists_languages_and_the_models_directions(client):
    data = client.get("/v1/languages").get_json()
    assert data["model"] == "tiny@250"
    assert data["languages"] == [{"code": "en", "name": "English"}, {"code": "ko", "name": "Korean"}]
    assert data["directions"] == [{"source": "en", "target": "ko"}, {"source": "ko", "target": "en"}]


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_answers_with_the_loaded_model(client):
    data = client.get("/readyz").get_json()
    assert data["status"] == "ready" and data["model"] == "tiny@250" and len(data["model_sha256"]) == 64


def test_readyz_is_503_when_the_model_does_not_answer(client, app, monkeypatch):
    def broken():
        raise RuntimeError("model gone")

    monkeypatch.setattr(app.extensions["translator"].engine, "probe", broken)
    assert_error(client.get("/readyz"), 503, "not_ready")


def test_metrics_count_requests_latency_and_translations_by_route_and_status(client):
    translate(client, {"text": "summer", "source": "en", "target": "ko"})
    translate(client, {"text": "", "source": "en", "target": "ko"})
    client.get("/no-such-page")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert 'translator_http_requests_total{method="POST",route="/v1/translate",status="200"}' in text
    assert 'translator_http_requests_total{method="POST",route="/v1/translate",status="400"}' in text
    assert 'translator_http_requests_total{method="GET",route="unmatched",status="404"}' in text
    assert 'translator_http_request_duration_seconds_bucket{le="0.05",route="/v1/translate",status="200"}' in text
    assert 'translator_translations_total{direction="en-ko"}' in text


def test_openapi_json_is_served(client):
    data = client.get("/openapi.json").get_json()
    assert data["openapi"].startswith("3.") and "/v1/translate" in data["paths"]


def test_the_web_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for part in ('id="text"', 'id="context"', 'name="direction"', 'id="translate"', "<canvas", "/static/app.js"):
        assert part in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
    for asset, mimetype in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        response = client.get(asset)
        assert response.status_code == 200 and response.mimetype == mimetype


# --- reload, logging, language detection -------------------------------------------------------------
def test_reload_picks_up_a_new_model_file_and_survives_a_broken_one(tmp_path, trained_model, en_ko_only_model):
    model = tmp_path / "model.pt"
    shutil.copy(trained_model.path, model)
    app = create_app(ServiceConfig(model_path=model))
    client = app.test_client()
    shutil.copy(en_ko_only_model, model)
    assert reload_model(app)
    assert client.get("/v1/languages").get_json()["directions"] == [{"source": "en", "target": "ko"}]
    model.write_bytes(b"not a checkpoint")
    assert not reload_model(app)  # logged; the previous model keeps serving
    assert translate(client, {"text": "water", "target": "ko"}).status_code == 200


def test_logs_are_one_json_object_per_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="service.access"):
        client.get("/healthz", headers={"X-Request-ID": "log-1"})
    [record] = [r for r in caplog.records if r.name == "service.access"]
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "request" and entry["request_id"] == "log-1"
    assert entry["route"] == "/healthz" and entry["status"] == 200 and entry["duration_ms"] >= 0


def test_exceptions_are_logged_on_one_line():
    try:
        raise ValueError("two\nlines")
    except ValueError:
        record = logging.LogRecord("service", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError" in json.loads(line)["exception"]


@pytest.mark.parametrize("text, language", [("baseball bat", "en"), ("야구 방망이", "ko"), ("ㅋㅋ", "ko"),
                                            ("I like 김치", "ko"), ("123", "en")])
def test_detect_language_by_hangul(text, language):
    assert detect_language(text) == language


def test_the_library_does_not_import_the_service():
    root = Path(__file__).resolve().parent.parent / "translator"
    for source in root.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "import service" not in text and "from service" not in text, source


# --- micro-batching ----------------------------------------------------------------------------------
def test_concurrent_requests_are_decoded_together_and_each_gets_its_own_results():
    from service.batching import MicroBatcher

    calls: list[list[int]] = []
    started, release = threading.Event(), threading.Event()

    def decode(items: list[int]) -> list[int]:
        calls.append(list(items))
        started.set()
        release.wait(5)  # the first decode blocks, so the other requests queue up meanwhile
        return [item * 10 for item in items]

    batcher = MicroBatcher(decode, max_items=64)
    results: dict[int, list[int]] = {}

    def request(n: int) -> None:
        results[n] = batcher.submit([n, n + 100])

    first = threading.Thread(target=request, args=(0,))
    first.start()
    started.wait(5)
    others = [threading.Thread(target=request, args=(n,)) for n in (1, 2, 3)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 5
    while batcher._queue.qsize() < 3 and time.monotonic() < deadline:  # all three queue behind the running decode
        time.sleep(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join(5)
    assert results == {n: [n * 10, (n + 100) * 10] for n in range(4)}
    assert calls[0] == [0, 100] and sorted(calls[1]) == [1, 2, 3, 101, 102, 103]  # one decode for the three


def test_a_failing_request_does_not_fail_the_others_in_its_batch():
    from service.batching import MicroBatcher, _Pending

    decoded: list[list[str]] = []

    def decode(items: list[str]) -> list[str]:
        decoded.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    batcher = MicroBatcher(decode)
    bad, good = _Pending(["bad"]), _Pending(["ok", "fine"])
    batcher._pid = os.getpid()  # queue both before the decoding thread starts, so that they form one batch
    batcher._queue.put(bad)
    batcher._queue.put(good)
    batcher._ensure_thread()
    assert good.done.wait(5) and bad.done.wait(5)
    assert good.results == ["OK", "FINE"] and good.error is None
    assert isinstance(bad.error, ValueError)
    assert decoded[0] == ["bad", "ok", "fine"]  # tried together first, then one by one


# --- int8 serving --------------------------------------------------------------------------------------


def test_int8_service_answers_with_a_quantized_model_id(trained_model):
    config = ServiceConfig.from_env({"TRANSLATOR_MODEL": str(trained_model.path), "TRANSLATOR_QUANTIZE": "int8"})
    assert config.quantize == "int8"
    client = create_app(config).test_client()
    response = client.post("/v1/translate", json={"text": trained_model.pairs[0][0], "source": "en", "target": "ko"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"].endswith("+int8") and body["translations"][0]["translation"]
    assert ServiceConfig.from_env({}).quantize == "int8"  # the service default
    assert ServiceConfig.from_env({"TRANSLATOR_QUANTIZE": "none"}).quantize is None
    with pytest.raises(ValueError, match="TRANSLATOR_QUANTIZE='int4' is not one of"):
        ServiceConfig.from_env({"TRANSLATOR_QUANTIZE": "int4"})
