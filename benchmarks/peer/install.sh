#!/usr/bin/env bash
# Install Joey NMT 2.3.0 (the peer of benchmarks/run.py) into its own virtualenv, or reuse it.
#
#   benchmarks/peer/install.sh            # → $PEER_VENV (default: ../peer-venv beside the repository)
#   PEER_VENV=/opt/joey benchmarks/peer/install.sh
#
# CPU torch 2.13.0 goes in first so that nothing pulls a CUDA build. Known Joey 2.3.0 quirks handled
# here: it imports importlib_metadata without declaring it, and it needs sentencepiece 0.2.0 (0.2.3
# lacks SetVocabulary). The project's own virtualenv is never touched. Prints the venv's python.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$(realpath -m "${PEER_VENV:-$repo/../peer-venv}")"
python="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

installed() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as m
want = {"joeynmt": "2.3.0", "torch": "2.13.0", "sentencepiece": "0.2.0"}
for name, version in want.items():
    if not m.version(name).startswith(version):
        raise SystemExit(1)
m.version("importlib_metadata")
import joeynmt.training, joeynmt.hub_interface  # noqa: F401 - the modules the benchmark uses
EOF
}

if installed; then
    echo "peer: Joey NMT 2.3.0 already installed in $venv" >&2
else
    echo "peer: installing Joey NMT 2.3.0 into $venv (a few minutes)" >&2
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet torch==2.13.0
    "$venv/bin/pip" install --quiet joeynmt==2.3.0 sentencepiece==0.2.0 importlib_metadata
    if ! installed; then
        echo "peer: error: Joey NMT did not install correctly into $venv" >&2
        exit 1
    fi
fi
echo "$venv/bin/python"
