"""Build data/eval/disambiguation.dev.tsv from the held-out sense-labelled dev rows.

The evaluation format is the fixed one `translator evaluate --disambiguation` reads:
src_lang, tgt_lang, text, context, accepted (`|`-separated). A sense's accepted forms are every
translation the corpus gives that sense (e.g. bat/club → 방망이|배트), so the test accepts exactly
the variants the corpus teaches. The issue's own examples are appended as fixed cases.

Run from the repository root:  python data/build_eval.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from translator.config import CorpusSpec  # noqa: E402
from translator.io import atomic_write_text  # noqa: E402
from translator.phrases import read_phrase_corpus  # noqa: E402

CORPUS = ROOT / "data" / "corpus"
EVAL = ROOT / "data" / "eval"
HEADER = "src_lang\ttgt_lang\ttext\tcontext\taccepted"

# The examples the product is specified by (never in training): text, context, accepted.
SPEC_CASES = [
    ("en", "ko", "bat", "He swung the bat at the fastball", "방망이|배트"),
    ("en", "ko", "bat", "A bat flew out of the cave", "박쥐"),
    ("ko", "en", "배", "배를 타고 섬에 갔다", "ship|boat"),
    ("ko", "en", "배", "배가 아파서 병원에 갔다", "stomach|belly"),
    ("en", "ko", "baseball bat", "", "야구 방망이|야구 배트"),
    ("en", "ko", "river bank", "", "강둑"),
    ("ko", "en", "야구 방망이", "", "baseball bat"),
]


def main() -> None:
    train = [row for path in sorted(CORPUS.glob("ambiguous-*.tsv")) for row in read_phrase_corpus(CorpusSpec(str(path)))]
    dev = [row for path in sorted(EVAL.glob("ambiguous-*.dev.tsv")) for row in read_phrase_corpus(CorpusSpec(str(path)))]
    forms: dict[str, list[str]] = {}
    for row in train + dev:
        variants = forms.setdefault(row.sense, [])
        if row.translation not in variants:
            variants.append(row.translation)
    seen = {(row.text.lower(), row.context.lower()) for row in train}
    lines = [HEADER]
    for row in dev:
        if (row.text.lower(), row.context.lower()) in seen:
            raise SystemExit(f"held-out context is also in training: {row.text!r} / {row.context!r}")
        lines.append("\t".join([row.src_lang, row.tgt_lang, row.text, row.context, "|".join(forms[row.sense])]))
    for case in SPEC_CASES:
        if (case[2].lower(), case[3].lower()) in seen:
            raise SystemExit(f"specification example is in training: {case}")
        lines.append("\t".join(case))
    out = EVAL / "disambiguation.dev.tsv"
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"{out.relative_to(ROOT)}: {len(lines) - 1} cases ({len(dev)} held-out contexts, {len(SPEC_CASES)} specification examples)")


if __name__ == "__main__":
    main()
