"""Scoring with sacrebleu and evaluating a model on a test set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu

from translator.evaluation import evaluate_model, score_corpus

SENTENCES = [
    "the cat is sleeping on the sofa",
    "I drink coffee every morning at home",
    "my friend lives in Seoul with his family",
]


def test_identical_hypotheses_score_100():
    scores = score_corpus(SENTENCES, SENTENCES)
    assert scores.bleu == 100.0
    assert scores.chrf == 100.0
    assert scores.sentences == 3


def test_disjoint_hypotheses_score_low():
    hypotheses = ["고양이가 소파 위에서 자고 있어요", "저는 매일 아침 커피를 마셔요", "제 친구는 서울에 살아요"]
    scores = score_corpus(hypotheses, SENTENCES)
    assert scores.bleu < 1.0
    assert scores.chrf < 5.0
    partial = score_corpus(["the cat is sleeping on the bed", "I drink tea", "my friend lives in Busan"], SENTENCES)
    assert scores.bleu < partial.bleu < 100.0
    assert scores.chrf < partial.chrf < 100.0


def test_mismatched_lengths_raise_value_error():
    with pytest.raises(ValueError, match="2 hypotheses but 3 references"):
        score_corpus(SENTENCES[:2], SENTENCES)
    with pytest.raises(ValueError):
        score_corpus([], [])


def test_signatures_name_the_metric_settings_and_sacrebleu_version():
    scores = score_corpus(SENTENCES, SENTENCES)
    version = f"version:{sacrebleu.__version__}"
    assert version in scores.bleu_signature and "tok:13a" in scores.bleu_signature
    assert version in scores.chrf_signature and "nc:6" in scores.chrf_signature


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def test_evaluate_model_writes_report_and_hypotheses_that_sacrebleu_agrees_with(trained_model, corpus, tsv, tmp_path):
    # Training pairs (memorised) plus held-out ones (not), so the score is neither 0 nor 100 by construction.
    pairs = trained_model.pairs[::5] + corpus.dev_pairs
    test = tsv(tmp_path / "test.tsv", pairs)
    output = tmp_path / "reports" / "eval.json"
    report = evaluate_model(trained_model.path, test=str(test), beam=3, output=output)

    assert json.loads(output.read_text(encoding="utf-8")) == report
    assert set(report["directions"]) == {"en-ko", "ko-en"}
    for direction, result in report["directions"].items():
        source, target = direction.split("-")
        hyp_path = Path(result["hypotheses"])
        assert hyp_path == tmp_path / "reports" / f"eval.{direction}.hyp"
        hypotheses = _read_lines(hyp_path)
        references = [ko if target == "ko" else en for en, ko in pairs]
        assert len(hypotheses) == len(pairs) == result["sentences"]
        assert result["bleu"] == round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2)
        assert result["chrf"] == round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2)
        assert "version:" in result["bleu_signature"] and "version:" in result["chrf_signature"]
        # The memorised training pairs come out exactly.
        memorised = [h for h, r in zip(hypotheses, references[: len(trained_model.pairs[::5])]) if h == r]
        assert len(memorised) >= len(trained_model.pairs[::5]) - 1


def test_evaluate_model_with_one_direction_and_src_ref_files(trained_model, tsv, tmp_path):
    pairs = trained_model.pairs[:10]
    src = tmp_path / "test.ko"
    ref = tmp_path / "test.en"
    src.write_text("".join(ko + "\n" for _, ko in pairs), encoding="utf-8")
    ref.write_text("".join(en + "\n" for en, _ in pairs), encoding="utf-8")
    output = tmp_path / "one.json"
    report = evaluate_model(trained_model.path, src=str(src), ref=str(ref), source="ko", target="en", beam=1, output=output)
    assert list(report["directions"]) == ["ko-en"]
    result = report["directions"]["ko-en"]
    hypotheses = _read_lines(tmp_path / "one.ko-en.hyp")
    assert result["bleu"] == round(sacrebleu.corpus_bleu(hypotheses, [[en for en, _ in pairs]]).score, 2)

    only_en_ko = evaluate_model(trained_model.path, test=str(tsv(tmp_path / "t.tsv", pairs)),
                                source="en", target="ko", beam=1, output=tmp_path / "two.json")
    assert list(only_en_ko["directions"]) == ["en-ko"]
    assert not (tmp_path / "two.ko-en.hyp").exists()


def test_evaluate_model_skips_test_pairs_with_an_empty_side(trained_model, tmp_path):
    """One line without its Korean side used to abort the evaluation with 'empty text'."""
    test = tmp_path / "holes.tsv"
    test.write_text("water\t물\nhello\t\n\t책\napple\t사과\n", encoding="utf-8")
    report = evaluate_model(trained_model.path, test=str(test), beam=1, output=tmp_path / "holes.json")
    assert {d: r["sentences"] for d, r in report["directions"].items()} == {"en-ko": 2, "ko-en": 2}
    assert _read_lines(tmp_path / "holes.en-ko.hyp") == ["물", "사과"]


def test_evaluate_model_refuses_test_together_with_src_ref(trained_model, tsv, tmp_path):
    test = tsv(tmp_path / "t.tsv", trained_model.pairs[:3])
    with pytest.raises(ValueError, match="either --test or --src/--ref"):
        evaluate_model(trained_model.path, test=str(test), src=str(test), ref=str(test), output=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


# --- word-in-context disambiguation ----------------------------------------------------------------------

from translator.data import DataError  # noqa: E402
from translator.evaluation import evaluate_disambiguation, is_accepted, read_disambiguation  # noqa: E402

DISAMBIGUATION_HEADER = "src_lang\ttgt_lang\ttext\tcontext\taccepted"


@pytest.mark.parametrize("output, accepted, lang, expected", [
    ("야구 방망이", ["방망이", "배트"], "ko", True),  # Korean: substring
    ("방망이로", ["방망이"], "ko", True),  # particles attach to the noun
    ("박쥐", ["방망이", "배트"], "ko", False),
    ("a ship", ["ship", "boat"], "en", True),  # English: whole word
    ("The Boat.", ["ship", "boat"], "en", True),  # case-insensitive, punctuation is a boundary
    ("boats", ["boat"], "en", False),  # not a whole-word match
    ("steamship", ["ship"], "en", False),
    ("baseball bat", ["baseball bat"], "en", True),  # phrases too
])
def test_acceptance_rules(output, accepted, lang, expected):
    assert is_accepted(output, accepted, lang) is expected


def test_read_disambiguation_parses_forms_and_rejects_bad_rows(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text(DISAMBIGUATION_HEADER + "\nen\tko\tbat\tA bat flew\t박쥐\nko\ten\t배\t\tship| boat \n", encoding="utf-8")
    cases = read_disambiguation(good)
    assert [c.accepted for c in cases] == [["박쥐"], ["ship", "boat"]]
    assert cases[1].context == "" and cases[1].line == 3
    bad = tmp_path / "bad.tsv"
    bad.write_text(DISAMBIGUATION_HEADER + "\nen\tko\tbat\tA bat flew\t\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: text and accepted must not be empty"):
        read_disambiguation(bad)
    bad.write_text("src\ttgt\ttext\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1: expected the header"):
        read_disambiguation(bad)


def test_evaluate_disambiguation_reports_accuracy_per_direction_word_and_failures(context_model, tmp_path):
    test = tmp_path / "cases.tsv"
    rows = [r for r in context_model.rows if r[5] != "-"]
    lines = [DISAMBIGUATION_HEADER] + [f"{s}\t{t}\t{text}\t{ctx}\t{tr}" for s, t, text, ctx, tr, _ in rows]
    lines.append("en\tko\tbat\tHe swung the bat hard\t박쥐")  # deliberately wrong: must be a failure
    test.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = evaluate_disambiguation(context_model.path, test, beam=3, output=tmp_path / "report.json")
    assert report["overall"]["total"] == len(rows) + 1
    assert report["directions"]["en-ko"]["total"] == 6 and report["directions"]["ko-en"]["total"] == 5
    assert set(report["words"]) == {"en-ko bat", "ko-en 배"}
    failures = report["failures"]
    assert any(f["line"] == len(lines) and f["accepted"] == ["박쥐"] for f in failures)
    # The model memorised its contexts: every real case is right, so the planted one is the only failure.
    assert len(failures) == 1 and report["overall"]["correct"] == len(rows)
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8")) == report
