"""Scoring translations with sacrebleu (BLEU and chrF), reported with their signatures."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import sacrebleu

from translator.config import LANGUAGES, CorpusSpec
from translator.data import DataError, normalize, read_aligned_lines, read_corpus
from translator.io import atomic_write_text
from translator.phrases import read_table


@dataclass
class Scores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    sentences: int

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return f"BLEU {self.bleu:.2f}  chrF {self.chrf:.2f}  ({self.sentences} sentences)"


def score_corpus(hypotheses: list[str], references: list[str]) -> Scores:
    """Corpus BLEU (13a tokenisation; Korean words are space-separated) and chrF (character n-grams,
    the more telling metric for Korean's agglutinative words)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not references:
        raise ValueError("nothing to score: no references")
    bleu_metric = sacrebleu.BLEU()
    chrf_metric = sacrebleu.CHRF()
    bleu = bleu_metric.corpus_score(hypotheses, [references])
    chrf = chrf_metric.corpus_score(hypotheses, [references])
    return Scores(
        bleu=round(bleu.score, 2),
        chrf=round(chrf.score, 2),
        bleu_signature=str(bleu_metric.get_signature()),
        chrf_signature=str(chrf_metric.get_signature()),
        sentences=len(references),
    )


def evaluate_model(
    model_path: str | Path,
    test: Optional[str] = None,
    src: Optional[str] = None,
    ref: Optional[str] = None,
    source: Optional[str] = None,
    target: Optional[str] = None,
    beam: int = 5,
    alpha: float = 1.0,
    max_ratio: float = 2.0,
    batch_size: int = 64,
    output: str | Path = "evaluation.json",
    quantize: Optional[str] = None,
) -> dict[str, Any]:
    """Translate a test set and score it; writes hypotheses and a JSON report, returns the report.

    `test` is any parallel corpus the data module reads; without source/target every direction the
    model knows is evaluated in one call. `src`/`ref` are two line-aligned files for one direction.
    """
    from translator.prediction import Translator

    output = Path(output)
    translator = Translator.load(model_path, quantize=quantize)
    if test is not None:
        if src is not None or ref is not None:
            raise ValueError("give either --test or --src/--ref, not both")
        # A pair with an empty side has nothing to translate or nothing to score against (training
        # drops such pairs too); translating it used to abort the whole evaluation.
        pairs = [pair for pair in read_corpus(CorpusSpec(path=test)) if pair.en and pair.ko]
        directions = [(source, target)] if source else [tuple(d.split("-")) for d in translator.config.data.directions]
        sets = {f"{s}-{t}": ([getattr(p, s) for p in pairs], [getattr(p, t) for p in pairs]) for s, t in directions}
    else:
        if src is None or ref is None or source is None:
            raise ValueError("give --test FILE, or --src FILE --ref FILE with --source and --target")
        sets = {f"{source}-{target}": read_aligned_lines(src, ref)}
    report: dict[str, Any] = {"model": str(model_path), "model_id": translator.model_id, "test": test or [src, ref],
                              "beam": beam, "length_penalty": alpha, "directions": {}}
    for direction, (sources, references) in sets.items():
        s, t = direction.split("-")
        translator.check_direction(s, t)
        started = time.perf_counter()
        results = translator.translate(sources, s, t, beam=beam, alpha=alpha, max_ratio=max_ratio, batch_size=batch_size)
        seconds = time.perf_counter() - started
        hypotheses = [r.text for r in results]
        hyp_path = output.with_name(f"{output.stem}.{direction}.hyp")
        atomic_write_text(hyp_path, "".join(h + "\n" for h in hypotheses))
        scores = score_corpus(hypotheses, [normalize(r) for r in references])
        report["directions"][direction] = {**scores.to_dict(), "hypotheses": str(hyp_path),
                                           "seconds": round(seconds, 2),
                                           "sentences_per_second": round(len(sources) / max(seconds, 1e-9), 1)}
    atomic_write_text(output, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


# --- word-in-context disambiguation ------------------------------------------------------------------

DISAMBIGUATION_COLUMNS = ("src_lang", "tgt_lang", "text", "context", "accepted")


@dataclass
class DisambiguationCase:
    src_lang: str
    tgt_lang: str
    text: str
    context: str
    accepted: list[str]  # any of these in the output makes the case correct
    line: int = 0


def read_disambiguation(path: str | Path) -> list[DisambiguationCase]:
    """A test file with the header src_lang, tgt_lang, text, context, accepted (`|`-separated forms)."""
    cases = []
    for number, fields in read_table(CorpusSpec(path=str(path)), DISAMBIGUATION_COLUMNS):
        src_lang, tgt_lang, text, context, accepted = (f.strip() for f in fields)
        forms = [form.strip() for form in accepted.split("|") if form.strip()]
        if src_lang not in LANGUAGES or tgt_lang not in LANGUAGES or src_lang == tgt_lang:
            raise DataError(f"{path} line {number}: languages must be en and ko, got {src_lang!r} → {tgt_lang!r}")
        if not text or not forms:
            raise DataError(f"{path} line {number}: text and accepted must not be empty")
        cases.append(DisambiguationCase(src_lang, tgt_lang, text, context, forms, number))
    return cases


def is_accepted(output: str, accepted: list[str], target_lang: str) -> bool:
    """Korean: an accepted form occurs as a substring (particles attach to nouns). English: as a
    whole word or phrase, case-insensitive ('bat' matches 'a bat' but not 'bath')."""
    output = normalize(output)
    for form in accepted:
        form = normalize(form)
        if target_lang == "ko":
            if form in output:
                return True
        elif re.search(rf"(?<![A-Za-z]){re.escape(form)}(?![A-Za-z])", output, flags=re.IGNORECASE):
            return True
    return False


def evaluate_disambiguation(
    model_path: str | Path, test: str | Path, beam: int = 5, output: str | Path = "disambiguation.json",
    quantize: Optional[str] = None,
) -> dict[str, Any]:
    """Translate every case (with its context) and report accuracy overall, per direction and per
    word, with the failures; writes the JSON report."""
    from translator.prediction import Translator

    translator = Translator.load(model_path, quantize=quantize)
    cases = read_disambiguation(test)
    outputs: list[str] = [""] * len(cases)
    groups: dict[tuple[str, str, bool], list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault((case.src_lang, case.tgt_lang, bool(case.context)), []).append(i)
    for (source, target, _), indices in groups.items():
        translator.check_direction(source, target)
        results = translator.translate([cases[i].text for i in indices], source, target, beam=beam,
                                       context=[cases[i].context or None for i in indices])
        for i, result in zip(indices, results):
            outputs[i] = result.text
    correct = [is_accepted(outputs[i], case.accepted, case.tgt_lang) for i, case in enumerate(cases)]

    def accuracy(indices: list[int]) -> dict[str, Any]:
        right = sum(correct[i] for i in indices)
        return {"correct": right, "total": len(indices), "accuracy": round(100.0 * right / len(indices), 2)}

    by_direction: dict[str, list[int]] = {}
    by_word: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        by_direction.setdefault(f"{case.src_lang}-{case.tgt_lang}", []).append(i)
        by_word.setdefault(f"{case.src_lang}-{case.tgt_lang} {case.text.lower()}", []).append(i)
    report = {
        "model": str(model_path),
        "model_id": translator.model_id,
        "test": str(test),
        "beam": beam,
        "overall": accuracy(list(range(len(cases)))),
        "directions": {d: accuracy(ix) for d, ix in sorted(by_direction.items())},
        "words": {w: accuracy(ix) for w, ix in sorted(by_word.items())},
        "failures": [
            {"line": case.line, "direction": f"{case.src_lang}-{case.tgt_lang}", "text": case.text,
             "context": case.context, "output": outputs[i], "accepted": case.accepted}
            for i, case in enumerate(cases) if not correct[i]
        ],
    }
    atomic_write_text(Path(output), json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report
