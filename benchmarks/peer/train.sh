#!/usr/bin/env bash
# Joey NMT 2.3.0 on our Tatoeba data with our benchmark model, standalone (benchmarks/run.py does all
# of this itself and more): install (or reuse) the peer virtualenv, convert ../shared/data/tatoeba into
# Joey's format with a joint SentencePiece vocabulary, and train the configs/benchmark-koen.yaml model.
#
#   benchmarks/peer/train.sh [MINUTES] [OUT]     # default 25 minutes into runs/joey-koen
#
# Joey has no time limit, so it gets Ctrl-C (SIGINT) after MINUTES: it saves latest.ckpt and exits;
# best.ckpt is its best validation (greedy BLEU on the dev split). Translate with it afterwards:
#   $PEER_VENV/bin/python -m joeynmt translate OUT/joey.yaml < OUT/dev.ko > hyp.en   (not -o: it crashes)
# after setting testing.load_model in OUT/joey.yaml to OUT/model/best.ckpt.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
minutes="${1:-25}"
out="$(realpath -m "${2:-$repo/runs/joey-koen}")"
python="$("$repo/benchmarks/peer/install.sh")"
cd "$repo"

# The vocabulary size our tokenizer reaches on this data (Joey gets the same) when our package is
# importable by python3 (e.g. the project's virtualenv is active); else 8000 (Joey then gets ~5,770).
our_vocabulary() {
    python3 - 2>/dev/null <<'PY'
import yaml
from translator.config import config_from_dict
from translator.tokenizer import Tokenizer
from translator.training import load_examples
c = config_from_dict(yaml.safe_load(open("configs/benchmark-koen.yaml")))
train, _ = load_examples(c.data, c.training.seed)
print(Tokenizer.train([t for e in train for t in (e.src, e.tgt) if t], c.tokenizer, c.training.seed).vocab_size)
PY
}
vocab="$(our_vocabulary || echo 8000)"

"$python" benchmarks/peer/prepare.py --out "$out" --vocab-size "$vocab"
echo "peer: training Joey NMT for $minutes minutes into $out/model (log: $out/model/train.log)" >&2
status=0
timeout --signal=INT --kill-after=300 "${minutes}m" "$python" -m joeynmt train "$out/joey.yaml" --skip-test || status=$?
# 124: stopped by the time limit (Joey caught the SIGINT and saved its checkpoints).
if [ "$status" -ne 0 ] && [ "$status" -ne 124 ]; then
    exit "$status"
fi
grep -h "Best validation\|Interrupt at\|Training ended" "$out/model/train.log" >&2 || true
