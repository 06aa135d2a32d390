"""The Translator facade on the shared tiny model: results, n-best, alignments, batching,
context, request checks and half-precision checkpoints."""

from __future__ import annotations

import random

import pytest
import torch

from translator.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from translator.prediction import Translation, TranslationError, Translator


def test_load_and_translate_returns_text_score_alternatives_and_alignment(translator, trained_model):
    en, ko = trained_model.pairs[37]  # "big house" -> "큰 집"
    [result] = translator.translate([en], "en", "ko", beam=5, n_best=2, alignment=True)
    assert isinstance(result, Translation)
    assert result.source == en
    assert result.text == ko
    assert isinstance(result.score, float) and result.score <= 0.0
    assert isinstance(result.alternatives, list)
    assert result.alignment is not None and result.source_tokens and result.target_tokens
    record = result.to_dict()
    assert {"source", "text", "score", "alternatives", "alignment", "source_tokens", "target_tokens"} <= record.keys()
    # A single string is accepted too and gives the same result.
    assert translator.translate(en, "en", "ko", beam=5, n_best=2, alignment=True)[0] == result


def test_without_alignment_no_matrix_is_returned(translator):
    [result] = translator.translate(["water"], "en", "ko")
    assert result.alignment is None and result.source_tokens == [] and result.target_tokens == []


@pytest.mark.parametrize("source,target,side", [("en", "ko", 0), ("ko", "en", 1)])
def test_n_best_alternatives_are_sorted_and_distinct(translator, trained_model, source, target, side):
    texts = [pair[side] for pair in trained_model.pairs[:20]]
    results = translator.translate(texts, source, target, beam=5, n_best=4)
    assert any(r.alternatives for r in results)
    for result in results:
        assert len(result.alternatives) <= 3
        texts_seen = [result.text] + [alt.text for alt in result.alternatives]
        assert len(set(texts_seen)) == len(texts_seen)  # distinct from the best and from each other
        scores = [result.score] + [alt.score for alt in result.alternatives]
        assert scores == sorted(scores, reverse=True)


def test_alignment_is_target_by_source_and_rows_sum_to_one(translator, trained_model):
    sources = [en for en, _ in trained_model.pairs[30:45]]
    for beam in (1, 4):
        for result in translator.translate(sources, "en", "ko", beam=beam, alignment=True):
            ids = translator.tokenizer.encode_source(result.source, "ko")
            assert result.source_tokens == translator.tokenizer.source_pieces(ids)
            assert result.source_tokens[0] == "<2ko>" and result.source_tokens[-1] == "</s>"
            assert result.target_tokens[-1] == "</s>"
            assert "".join(result.target_tokens[:-1]).replace("\u2581", " ").strip() == result.text
            assert len(result.alignment) == len(result.target_tokens)
            for row in result.alignment:
                assert len(row) == len(result.source_tokens)
                assert all(0.0 <= w <= 1.0 for w in row)
                assert sum(row) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("beam", [1, 5])
def test_batch_and_one_by_one_give_identical_results(translator, trained_model, beam):
    sources = [ko for _, ko in trained_model.pairs]
    batched = translator.translate(sources, "ko", "en", beam=beam, batch_size=7)
    for source, together in zip(sources, batched):
        [alone] = translator.translate([source], "ko", "en", beam=beam)
        assert alone.text == together.text
        assert alone.score == pytest.approx(together.score, abs=1e-4)


def test_results_come_back_in_input_order(translator, trained_model):
    pairs = list(trained_model.pairs)
    random.Random(3).shuffle(pairs)  # lengths mixed, so the length-sorted batches reorder them
    results = translator.translate([en for en, _ in pairs], "en", "ko", beam=1, batch_size=4)
    assert [r.source for r in results] == [en for en, _ in pairs]
    matches = sum(r.text == ko for r, (_, ko) in zip(results, pairs))
    assert matches >= 0.95 * len(pairs)


def test_context_is_accepted_as_a_string_or_one_per_text(translator):
    texts = ["dog", "cat"]
    [one] = translator.translate(["dog"], "en", "ko", context="small dog", alignment=True)
    assert "<ctx>" in one.source_tokens
    ids = translator.tokenizer.encode_source("dog", "ko", "small dog")
    assert len(one.source_tokens) == len(ids)
    assert all(len(row) == len(ids) for row in one.alignment)

    shared = translator.translate(texts, "en", "ko", context="the dog and the cat")
    per_text = translator.translate(texts, "en", "ko", context=["small dog", None])
    assert [r.source for r in shared] == texts and [r.source for r in per_text] == texts
    # No context for the second text: the same as translating it without context.
    assert per_text[1].text == translator.translate(["cat"], "en", "ko")[0].text
    with pytest.raises(TranslationError, match="2 texts but 3 contexts"):
        translator.translate(texts, "en", "ko", context=["a", "b", "c"])


@pytest.mark.parametrize("kwargs,message", [
    ({"source": "en", "target": "fr"}, "target language 'fr' is not supported"),
    ({"source": "de", "target": "ko"}, "source language 'de' is not supported"),
    ({"source": "ko", "target": "ko"}, "both 'ko'"),
    ({"texts": [""]}, "empty text"),
    ({"texts": ["water", "   \t"]}, "empty text"),
    ({"beam": 0}, "beam must be between 1 and 50"),
    ({"beam": 51}, "beam must be between 1 and 50"),
    ({"beam": 2, "n_best": 3}, "n_best must be between 1 and beam"),
    ({"n_best": 0}, "n_best must be between 1 and beam"),
    # These used to crash inside the search (IndexError, empty torch.stack) or return None results.
    ({"max_ratio": -10.0}, "max_ratio must be a finite number > 0"),
    ({"max_ratio": 0.0, "beam": 1}, "max_ratio must be a finite number > 0"),
    ({"max_ratio": float("inf")}, "max_ratio must be a finite number > 0"),
    ({"max_ratio": float("nan")}, "max_ratio must be a finite number > 0"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"batch_size": -1}, "batch_size must be >= 1"),
    # And these silently fell back to greedy decoding.
    ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
    ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
    ({"temperature": 1.0, "top_k": -3}, "top_k must be >= 0"),
    ({"alpha": float("nan")}, "length penalty must be a finite number"),
])
def test_bad_requests_raise_translation_error(translator, kwargs, message):
    request = {"texts": ["water"], "source": "en", "target": "ko", **kwargs}
    with pytest.raises(TranslationError, match=message):
        translator.translate(**request)


def test_direction_the_model_was_not_trained_for_is_refused(en_ko_only_model):
    translator = Translator.load(en_ko_only_model)
    assert translator.translate(["water"], "en", "ko", beam=1)[0].text == "물"
    with pytest.raises(TranslationError, match="trained for en-ko, not ko-en"):
        translator.translate(["물"], "ko", "en")


def test_checkpoint_whose_weights_do_not_fit_its_config_is_a_checkpoint_error(trained_model, tmp_path):
    """load_state_dict's RuntimeError used to reach the CLI as a traceback."""
    payload = load_checkpoint(trained_model.path)
    config = {**payload["config"], "model": {**payload["config"]["model"], "hidden": 48}}
    path = tmp_path / "edited.pt"
    save_checkpoint(path, payload["model"], config, payload["tokenizer"])
    with pytest.raises(CheckpointError, match="the weights do not fit") as info:
        Translator.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_half_precision_checkpoint_translates_like_float32(translator, trained_model, tmp_path):
    payload = load_checkpoint(trained_model.path)
    half = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
    path = tmp_path / "model-fp16.pt"
    save_checkpoint(path, half, payload["config"], payload["tokenizer"], None, payload["metrics"])
    stored = load_checkpoint(path)["model"]
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert path.stat().st_size < trained_model.path.stat().st_size

    loaded = Translator.load(path)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    for source, target, side in (("en", "ko", 0), ("ko", "en", 1)):
        texts = [pair[side] for pair in trained_model.pairs]
        full = [r.text for r in translator.translate(texts, source, target, beam=1)]
        halved = [r.text for r in loaded.translate(texts, source, target, beam=1)]
        assert halved == full


def test_int8_quantized_model_has_int8_layers_and_translates_like_float32(translator, trained_model):
    quantized = Translator.load(trained_model.path, quantize="int8")
    dynamic = torch.ao.nn.quantized.dynamic
    modules = list(quantized.model.modules())
    assert any(isinstance(m, dynamic.Linear) for m in modules)
    assert any(isinstance(m, (dynamic.LSTM, dynamic.GRU)) for m in modules)
    assert not any(type(m) in (torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU) for m in modules)
    assert quantized.model_id.endswith("+int8")
    agree = total = 0
    for source, target, side in (("en", "ko", 0), ("ko", "en", 1)):
        texts = [pair[side] for pair in trained_model.pairs]
        full = [r.text for r in translator.translate(texts, source, target, beam=3)]
        int8 = [r.text for r in quantized.translate(texts, source, target, beam=3, alignment=True)]
        agree += sum(a == b for a, b in zip(full, int8))
        total += len(texts)
    assert agree >= 0.9 * total, f"int8 agrees with float32 on only {agree}/{total}"
    with pytest.raises(TranslationError, match="quantize must be one of: int8"):
        Translator.load(trained_model.path, quantize="int4")


# --- the context path ------------------------------------------------------------------------------------

def test_context_picks_the_sense(context_model):
    """The same word translates differently in different contexts (the model reads the context)."""
    from translator.prediction import Translator

    translator = Translator.load(context_model.path)
    [cave, swing] = translator.translate(["bat", "bat"], "en", "ko", beam=3,
                                         context=["A bat flew out of the cave", "He swung the bat hard"])
    assert cave.text == "박쥐" and swing.text == "방망이"
    [ship, stomach] = translator.translate(["배", "배"], "ko", "en", beam=3,
                                           context=["배를 타고 섬에 갔다", "배가 아파서 병원에 갔다"])
    assert ship.text == "ship" and stomach.text == "stomach"


def test_without_context_the_default_sense_comes_first_with_alternatives(context_model):
    from translator.prediction import Translator

    translator = Translator.load(context_model.path)
    [bare] = translator.translate("bat", "en", "ko", beam=5, n_best=5)
    assert bare.text == "박쥐"  # the corpus's context-free row
    assert bare.alternatives and all(a.text != bare.text for a in bare.alternatives)
    assert all(a.score <= bare.score for a in bare.alternatives)


def test_control_symbols_in_user_text_are_plain_text(translator):
    """'<p>' in pasted HTML or a literal '<2en>' must not act as the model's markers or tags."""
    from translator.prediction import strip_control_symbols

    assert strip_control_symbols("<p>water</p> <2en><ctx>").split() == ["water"]
    [plain] = translator.translate("water", "en", "ko", beam=1)
    [marked] = translator.translate("<p>water</p><2en>", "en", "ko", beam=1)
    assert marked.text == plain.text
