"""The shipped default model (models/default): it loads, fits the size budget and answers the
examples the product is specified by."""

from __future__ import annotations

import pytest

from translator.prediction import DEFAULT_MODEL, Translator


@pytest.fixture(scope="module")
def default_translator() -> Translator:
    return Translator.load()  # no path: the library's default is the shipped model


def test_shipped_model_is_the_default_and_small():
    assert DEFAULT_MODEL.is_file()
    assert DEFAULT_MODEL.stat().st_size <= 20 * 1024 * 1024


def test_both_directions(default_translator):
    assert default_translator.directions == {"en-ko", "ko-en"}


@pytest.mark.parametrize("text, source, target, accepted", [
    ("baseball bat", "en", "ko", ("야구 방망이", "야구 배트")),
    ("river bank", "en", "ko", ("강둑",)),
    ("야구 방망이", "ko", "en", ("baseball bat",)),
])
def test_phrases(default_translator, text, source, target, accepted):
    [result] = default_translator.translate(text, source, target, beam=5)
    assert result.text in accepted


@pytest.mark.parametrize("text, context, source, target, accepted", [
    ("bat", "He swung the bat at the fastball", "en", "ko", ("방망이", "배트")),
    ("bat", "A bat flew out of the cave", "en", "ko", ("박쥐",)),
    ("배", "배를 타고 섬에 갔다", "ko", "en", ("ship", "boat")),
    ("배", "배가 아파서 병원에 갔다", "ko", "en", ("stomach", "belly")),
])
def test_context_picks_the_sense(default_translator, text, context, source, target, accepted):
    [result] = default_translator.translate(text, source, target, beam=5, context=context)
    assert any(form in result.text for form in accepted), result.text


def test_without_context_other_senses_are_alternatives(default_translator):
    [result] = default_translator.translate("bat", "en", "ko", beam=5, n_best=5)
    texts = [result.text] + [a.text for a in result.alternatives]
    assert any("박쥐" in t for t in texts) and any("방망이" in t or "배트" in t for t in texts)
    assert [a.score for a in result.alternatives] == sorted((a.score for a in result.alternatives), reverse=True)
