"""The service under real gunicorn, started the way users start it (`translator serve`), over real HTTP:
translations, metrics across workers, JSON logs, SIGHUP model reload and graceful SIGTERM shutdown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from translator.cli import main

STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`translator serve` in a subprocess on a free localhost port; its JSON log goes to a file."""

    def __init__(self, model: Path, log: Path, workers: int = 2, threads: int = 2):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "translator", "serve", "--model", str(model),
                   "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), "--threads", str(threads)]
        environment = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
        with open(log, "wb") as handle:
            self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"gunicorn not ready after {STARTUP_SECONDS} s:\n{self.log.read_text()}")

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=30)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=30)

    def log_entries(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line.strip()]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_model):
    root = tmp_path_factory.mktemp("gunicorn")
    running = Server(trained_model.path, root / "server.log")
    yield running
    running.stop()


def start_slow_request(server: Server, body: dict) -> tuple[socket.socket, bytes]:
    """Send the headers and half the body of a request, so it is in flight until `finish_slow_request`."""
    payload = json.dumps(body).encode()
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    connection.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                       b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload[: len(payload) // 2])
    return connection, payload[len(payload) // 2:]


def finish_slow_request(connection: socket.socket, rest: bytes) -> tuple[int, dict]:
    connection.sendall(rest)
    response = b""
    while chunk := connection.recv(65536):
        response += chunk
    connection.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


# --- requests ----------------------------------------------------------------------------------------
def test_single(server):
    response = server.post("/v1/translate", {"text": "good friend", "source": "en", "target": "ko"})
    assert response.status_code == 200
    assert response.json()["translations"][0]["translation"] == "좋은 친구"
    assert response.headers["X-Request-ID"]


def test_batch(server):
    response = server.post("/v1/translate", {"texts": ["school", "고양이", "thank you"], "beam": 3, "n_best": 2})
    results = response.json()["translations"]
    assert [(r["source"], r["translation"]) for r in results] == [("en", "학교"), ("ko", "cat"), ("en", "감사합니다")]


def test_context(server):
    response = server.post("/v1/translate", {"texts": ["water", "tree"], "target": "ko",
                                             "context": ["I want cold water", "the tree is tall"]})
    assert response.status_code == 200 and len(response.json()["translations"]) == 2


def test_alignment(server):
    [result] = server.post("/v1/translate", {"text": "red car", "target": "ko", "alignment": True}).json()["translations"]
    alignment = result["alignment"]
    assert result["translation"] == "빨간 차"
    assert len(alignment["weights"]) == len(alignment["target_tokens"])
    assert all(len(row) == len(alignment["source_tokens"]) for row in alignment["weights"])


def test_errors_are_json_over_real_http(server):
    not_found = server.get("/nope")
    assert not_found.status_code == 404 and not_found.json()["error"]["code"] == "not_found"
    too_large = requests.post(f"{server.url}/v1/translate", data=b"x" * (65 * 1024),
                              headers={"Content-Type": "application/json"}, timeout=30)
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "request_too_large"
    chunks = (b'{"text": "' if i == 0 else b"a" * 1024 for i in range(70))  # chunked: no Content-Length
    chunked = requests.post(f"{server.url}/v1/translate", data=chunks, headers={"Content-Type": "application/json"},
                            timeout=30)
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"
    bad_utf8 = requests.post(f"{server.url}/v1/translate", data=b'{"text": "\xff"}',
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert bad_utf8.status_code == 400 and bad_utf8.json()["error"]["code"] == "invalid_utf8"


def test_metrics_add_up_all_workers(server):
    def served() -> float:
        for line in server.get("/metrics").text.splitlines():
            if line.startswith('translator_http_requests_total{method="GET",route="/v1/languages",status="200"}'):
                return float(line.split()[-1])
        return 0.0

    before = served()
    for _ in range(20):  # fresh connections: spread over both workers
        assert server.get("/v1/languages").status_code == 200
    assert served() - before == 20  # one worker alone would have seen only its share


def test_logs_are_json_lines_with_request_ids(server):
    server.get("/healthz")
    entries = server.log_entries()  # every line parses as JSON
    assert any("Booting worker" in entry["message"] for entry in entries)
    requests_logged = [entry for entry in entries if entry["logger"] == "service.access"]
    assert requests_logged and all(len(entry["request_id"]) >= 1 for entry in requests_logged)
    cores = len(os.sched_getaffinity(0))
    threads = [entry["torch_threads"] for entry in entries if entry["message"] == "worker started"]
    assert threads == [max(1, cores // 2)] * 2  # workers × torch threads fit the cores


# --- SIGHUP reload and SIGTERM shutdown ----------------------------------------------------------------
def test_sighup_reloads_the_model_file_without_failing_requests(tmp_path, trained_model, en_ko_only_model):
    model = tmp_path / "model.pt"
    shutil.copy(trained_model.path, model)
    server = Server(model, tmp_path / "server.log")
    try:
        assert len(server.get("/v1/languages").json()["directions"]) == 2
        old_sha = server.get("/readyz").json()["model_sha256"]
        failures, done, stop = [], [], threading.Event()

        def keep_translating() -> None:
            while not stop.is_set():
                try:
                    response = server.post("/v1/translate", {"text": "water", "source": "en", "target": "ko", "beam": 1})
                    (done if response.status_code == 200 else failures).append(response.status_code)
                except requests.RequestException as err:
                    failures.append(repr(err))

        clients = [threading.Thread(target=keep_translating) for _ in range(2)]
        for client in clients:
            client.start()
        in_flight = start_slow_request(server, {"text": "water", "source": "en", "target": "ko"})
        time.sleep(0.5)
        staged = tmp_path / "model.pt.new"
        shutil.copy(en_ko_only_model, staged)
        os.replace(staged, model)  # atomic: a worker never sees half a file
        server.process.send_signal(signal.SIGHUP)

        deadline = time.monotonic() + 60
        while server.get("/v1/languages").json()["directions"] != [{"source": "en", "target": "ko"}]:
            assert time.monotonic() < deadline, "the new model was not picked up after SIGHUP"
            time.sleep(0.2)
        time.sleep(1.0)  # and keep serving a little on the new workers
        status, body = finish_slow_request(*in_flight)  # started on an old worker before the reload
        stop.set()
        for client in clients:
            client.join()

        assert status == 200 and body["translations"][0]["translation"] == "물"
        assert failures == [] and len(done) > 10
        assert server.get("/readyz").json()["model_sha256"] != old_sha
        loaded = [entry for entry in server.log_entries() if entry["message"] == "model loaded"]
        assert [entry["directions"] for entry in loaded] == [["en-ko", "ko-en"], ["en-ko"]]  # start, then the reload
        ko_en = server.post("/v1/translate", {"text": "물", "source": "ko", "target": "en"})
        assert ko_en.json()["error"]["code"] == "unsupported_direction"
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_requests_and_exits_cleanly(tmp_path, trained_model):
    server = Server(trained_model.path, tmp_path / "server.log")
    in_flight = start_slow_request(server, {"text": "big house", "source": "en", "target": "ko"})
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    status, body = finish_slow_request(*in_flight)
    assert status == 200 and body["translations"][0]["translation"] == "큰 집"
    assert server.process.wait(30) == 0
    messages = [entry["message"] for entry in server.log_entries()]
    assert any("Shutting down: Master" in message for message in messages)
    assert not any(entry["level"] in ("ERROR", "CRITICAL") for entry in server.log_entries())
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/healthz", timeout=2)


# --- the serve command refuses what it cannot serve ---------------------------------------------------
def test_serve_refuses_a_missing_model(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing.pt")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err


def test_serve_refuses_zero_workers(trained_model, capsys):
    assert main(["serve", "--model", str(trained_model.path), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_serve_with_a_bad_environment_setting_exits_with_one_line(trained_model):
    environment = dict(os.environ, TRANSLATOR_QUANTIZE="int4")
    done = subprocess.run([sys.executable, "-m", "translator", "serve", "--model", str(trained_model.path),
                           "--bind", f"127.0.0.1:{free_port()}"], env=environment, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "translator serve: error: TRANSLATOR_QUANTIZE='int4' is not one of: none, int8" in done.stderr
    assert "Traceback" not in done.stderr
