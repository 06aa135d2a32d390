# The HTTP translation service with the shipped default model (models/default/model.pt must exist).
#   docker build -t koen-translator .
#   docker run --rm -p 8000:8000 koen-translator
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU torch first, from PyTorch's CPU index, so installing the project never pulls a CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /app
# The project (library + service + the web page's static files); the model comes last, as it changes most.
COPY pyproject.toml README.md ./
COPY translator ./translator
COPY service ./service
RUN pip install . && python -c "import service.app, translator.prediction"
COPY models/default ./models/default

RUN useradd --create-home --uid 10001 translator
USER translator

EXPOSE 8000
# Liveness only (/healthz); orchestrators that route traffic should also poll /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# translator serve replaces itself with the gunicorn master (PID 1 here), so `docker stop` (SIGTERM)
# drains in-flight requests and `docker kill -s HUP` reloads the model file. One worker per CPU the
# container sees; with a CPU quota (--cpus) set TRANSLATOR_WORKERS to match it.
CMD ["translator", "serve", "--model", "/app/models/default/model.pt", "--bind", "0.0.0.0:8000"]
