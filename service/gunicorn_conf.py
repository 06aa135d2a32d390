"""gunicorn settings for the translation service; `translator serve` starts gunicorn with this module.

Environment: TRANSLATOR_BIND, TRANSLATOR_WORKERS, TRANSLATOR_THREADS, TRANSLATOR_TORCH_THREADS,
TRANSLATOR_MKLDNN, TRANSLATOR_LOG_LEVEL (and TRANSLATOR_MODEL, TRANSLATOR_QUANTIZE, TRANSLATOR_CACHE_SIZE, TRANSLATOR_BATCHING,
read by service/wsgi.py). Command-line flags win.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import torch


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

wsgi_app = "service.wsgi:app"
bind = os.environ.get("TRANSLATOR_BIND", "127.0.0.1:8000")
workers = _env_int("TRANSLATOR_WORKERS", CORES)  # decoding is CPU-bound: one process per core
worker_class = "gthread"
# Request threads mostly wait for the worker's one decoding thread, which decodes whatever they have
# queued as one batch (service/batching.py): more threads, bigger batches under load.
threads = _env_int("TRANSLATOR_THREADS", 8)
preload_app = True  # load the weights once in the master; forked workers share them copy-on-write
timeout = 120  # a worker silent this long (a stuck decode) is killed and replaced
graceful_timeout = 30  # on SIGTERM/SIGHUP, in-flight requests get this long to finish
keepalive = 5
control_socket_disable = True  # gunicorn >= 25 would otherwise share one control socket in $HOME
accesslog = None  # the app logs every request itself, as JSON with its request id

# One JSON object per line for gunicorn's own messages too.
loglevel = os.environ.get("TRANSLATOR_LOG_LEVEL", "info")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "service.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": loglevel.upper(), "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
    },
}

# Workers are separate processes: prometheus_client adds up their metrics through files in this folder.
# It must be set before prometheus_client is first imported, i.e. before the app is preloaded.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="translator-metrics-")
    os.environ["TRANSLATOR_OWNS_METRICS_DIR"] = "1"

# The master only loads weights: keep it single-threaded so no OpenMP pool exists at fork time.
torch.set_num_threads(1)


def torch_threads_per_worker(worker_count: int) -> int:
    """Intra-op threads per worker so that workers × threads fits the cores."""
    return _env_int("TRANSLATOR_TORCH_THREADS", 0) or max(1, CORES // max(1, worker_count))


def post_fork(server, worker) -> None:
    threads = torch_threads_per_worker(server.cfg.workers)
    torch.set_num_threads(threads)
    # oneDNN's LSTM rebuilds its primitive on every call: for the small batches a word service decodes
    # that doubles latency (measured: 12 → 6 ms per word), so workers use torch's own kernels.
    torch.backends.mkldnn.enabled = os.environ.get("TRANSLATOR_MKLDNN", "0") == "1"
    server.log.info("worker started", extra={"torch_threads": threads, "mkldnn": torch.backends.mkldnn.enabled})


def on_reload(server) -> None:
    """SIGHUP: re-read the model file in the master before gunicorn forks the new workers.

    With preload_app the app object survives a reload, so without this the new workers would
    inherit the old weights. The old workers finish their in-flight requests before they exit.
    """
    app = server.app.callable  # None unless the app was preloaded in the master
    if app is not None:
        from service.app import reload_model

        reload_model(app)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if os.environ.pop("TRANSLATOR_OWNS_METRICS_DIR", None):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
