"""Reading and checking YAML run configurations."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from translator.config import (  # noqa: E402
    Config,
    ConfigError,
    CorpusSpec,
    ModelConfig,
    config_from_dict,
    load_config,
    save_config,
)

VALID_YAML = """\
name: tiny
data:
  train:
    - corpus/train.tsv
    - {path: corpus/tatoeba.tsv, format: tatoeba}
  dev: {path: "file:///data/dev%20set.tsv", format: tsv}
  directions: [ko-en]
  max_tokens: 40
tokenizer:
  type: bpe
  vocab_size: 500
model:
  cell: gru
  embedding: 32
  hidden: 16
  decoder_hidden: 32
  attention: luong
  luong_score: dot
  residual: true
  input_feeding: false
training:
  learning_rate: 0.005
  betas: [0.8, 0.98]
  label_smoothing: 0.0
  max_steps: 7
"""


def minimal(**sections) -> dict:
    """The smallest valid raw config, with extra sections merged in."""
    raw = {"data": {"train": ["train.tsv"]}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def config_error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------------------
# loading


def test_load_valid_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(VALID_YAML, encoding="utf-8")
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.name == "tiny"
    assert config.data.train == [CorpusSpec("corpus/train.tsv", "auto"), CorpusSpec("corpus/tatoeba.tsv", "tatoeba")]
    assert config.data.dev == [CorpusSpec("file:///data/dev%20set.tsv", "tsv")]  # a single mapping is a one-item list
    assert config.data.directions == ["ko-en"]
    assert config.data.max_tokens == 40
    assert config.tokenizer.type == "bpe" and config.tokenizer.vocab_size == 500
    m = config.model
    assert (m.cell, m.embedding, m.hidden, m.decoder_hidden) == ("gru", 32, 16, 32)
    assert (m.attention, m.luong_score, m.residual, m.input_feeding) == ("luong", "dot", True, False)
    assert config.training.learning_rate == 0.005
    assert config.training.betas == (0.8, 0.98)
    assert config.training.max_steps == 7
    # Keys not given keep their defaults.
    assert m.encoder_layers == ModelConfig().encoder_layers
    assert config.training.seed == Config().training.seed


def test_load_accepts_a_str_path(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: {train: a.tsv}\n", encoding="utf-8")
    assert load_config(str(path)).data.train == [CorpusSpec("a.tsv")]


def test_integer_is_accepted_where_a_number_is_expected():
    config = config_from_dict(minimal(training={"learning_rate": 1, "label_smoothing": 0}))
    assert config.training.learning_rate == 1.0 and isinstance(config.training.learning_rate, float)
    assert isinstance(config.training.label_smoothing, float)


def test_bare_string_corpus_path_becomes_a_corpus_spec():
    config = config_from_dict({"data": {"train": "one.tsv", "dev": ["two.tsv", {"path": "three", "format": "aligned"}]}})
    assert config.data.train == [CorpusSpec(path="one.tsv", format="auto")]
    assert config.data.dev == [CorpusSpec("two.tsv", "auto"), CorpusSpec("three", "aligned")]
    assert all(isinstance(spec, CorpusSpec) for spec in config.data.train + config.data.dev)


def test_empty_file_is_an_empty_config_which_lacks_training_data(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="data.train"):
        load_config(path)


def test_invalid_yaml_is_a_config_error_naming_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel:\n  cell: [lstm\n  hidden: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "YAML" in message and "line" in message


def test_missing_file_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    path = tmp_path / "odd.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


# ---------------------------------------------------------------------------------------------------
# errors name the key


@pytest.mark.parametrize(
    "raw,key",
    [
        (minimal(modle={"cell": "lstm"}), "modle"),
        (minimal(model={"hiden": 3}), "model.hiden"),
        (minimal(training={"lr": 0.1}), "training.lr"),
        ({"data": {"train": [{"path": "a.tsv", "fromat": "tsv"}]}}, "data.train[0].fromat"),
    ],
)
def test_unknown_keys_are_named(raw, key):
    message = config_error(raw)
    assert message.startswith(f"{key}: unknown key")
    assert "expected one of" in message


def test_unknown_nested_key_lists_the_known_ones():
    message = config_error(minimal(model={"hiden": 3}))
    assert "hidden" in message and "cell" in message


@pytest.mark.parametrize(
    "raw,key",
    [
        (minimal(model={"hidden": "big"}), "model.hidden"),
        (minimal(model={"hidden": 3.5}), "model.hidden"),
        (minimal(model={"hidden": True}), "model.hidden"),  # a bool is not an integer here
        (minimal(model={"residual": 3}), "model.residual"),
        (minimal(model={"residual": "yes"}), "model.residual"),
        (minimal(training={"learning_rate": "fast"}), "training.learning_rate"),
        (minimal(training={"learning_rate": False}), "training.learning_rate"),
        (minimal(training={"betas": [0.9]}), "training.betas"),
        (minimal(training={"betas": 0.9}), "training.betas"),
        (minimal(data={"directions": 3}), "data.directions"),
        ({"data": {"train": ["a"]}, "model": ["cell"]}, "model"),
        ({"name": "", "data": {"train": ["a"]}}, "name"),
        ({"name": 5, "data": {"train": ["a"]}}, "name"),
        ({"data": {"train": [3]}}, "data.train[0]"),
        ({"data": {"train": [{"format": "tsv"}]}}, "data.train[0]"),  # no path
    ],
)
def test_wrong_types_are_named(raw, key):
    message = config_error(raw)
    assert message.startswith(f"{key}: ") or message.startswith(f"{key}."), message


def test_corpus_without_a_path_is_a_config_error():
    message = config_error({"data": {"train": [{"format": "tsv"}]}})
    assert message.startswith("data.train[0]: ") and "path" in message


def test_wrong_type_message_says_what_was_expected():
    assert "integer" in config_error(minimal(model={"hidden": "big"}))
    assert "true or false" in config_error(minimal(model={"residual": 3}))


@pytest.mark.parametrize(
    "raw,key",
    [
        (minimal(model={"cell": "lstmm"}), "model.cell"),
        (minimal(model={"attention": "dot"}), "model.attention"),
        (minimal(model={"encoder_layers": 0}), "model.encoder_layers"),
        (minimal(model={"decoder_layers": -1}), "model.decoder_layers"),
        (minimal(model={"dropout": 1.0}), "model.dropout"),
        (minimal(training={"label_smoothing": 1.5}), "training.label_smoothing"),
        (minimal(training={"label_smoothing": -0.1}), "training.label_smoothing"),
        (minimal(training={"teacher_forcing": 1.01}), "training.teacher_forcing"),
        (minimal(training={"truncated_bptt": -1}), "training.truncated_bptt"),
        (minimal(training={"truncated_bptt": 2.5}), "training.truncated_bptt"),
        (minimal(training={"scheduler": "cosine"}), "training.scheduler"),
        (minimal(training={"betas": [0.9, 1.0]}), "training.betas"),
        (minimal(data={"directions": ["en-ko", "en-ko"]}), "data.directions"),
        (minimal(data={"directions": []}), "data.directions"),
        (minimal(data={"directions": ["en-fr"]}), "data.directions[0]"),
        (minimal(data={"dev_fraction": 1.0}), "data.dev_fraction"),
        (minimal(tokenizer={"vocab_size": 10}), "tokenizer.vocab_size"),
        (minimal(tokenizer={"type": "wordpiece"}), "tokenizer.type"),
        ({"data": {"train": [{"path": "a", "format": "csv"}]}}, "data.train[0].format"),
        # YAML .inf/.nan: infinity passed "> 0" rules and trained NaNs without a word.
        (minimal(training={"learning_rate": float("inf")}), "training.learning_rate"),
        (minimal(training={"dev_max_ratio": float("inf")}), "training.dev_max_ratio"),
        (minimal(training={"clip_norm": float("nan")}), "training.clip_norm"),
        (minimal(training={"betas": [0.9, float("nan")]}), "training.betas[1]"),
    ],
)
def test_impossible_values_are_named(raw, key):
    message = config_error(raw)
    assert message.startswith(f"{key}: "), message


def test_literal_error_lists_the_choices():
    message = config_error(minimal(model={"cell": "lstmm"}))
    assert "'lstmm'" in message and all(cell in message for cell in ("rnn", "lstm", "gru"))


@pytest.mark.parametrize("decoder_hidden", [0, 16, 64])
def test_luong_dot_needs_decoder_hidden_twice_the_encoder_hidden(decoder_hidden):
    model = {"attention": "luong", "luong_score": "dot", "hidden": 16, "decoder_hidden": decoder_hidden}
    message = config_error(minimal(model=model))
    assert message.startswith("model.luong_score:") and "32" in message


def test_luong_dot_with_matching_sizes_and_general_with_any_sizes_are_fine():
    dot = config_from_dict(minimal(model={"attention": "luong", "luong_score": "dot", "hidden": 16, "decoder_hidden": 32}))
    assert dot.model.luong_score == "dot"
    general = config_from_dict(minimal(model={"attention": "luong", "luong_score": "general", "hidden": 16, "decoder_hidden": 24}))
    assert general.model.decoder_hidden == 24
    # The dot check only concerns Luong attention.
    config_from_dict(minimal(model={"attention": "bahdanau", "luong_score": "dot", "hidden": 16}))


@pytest.mark.parametrize("raw", [{}, {"data": {}}, {"data": {"train": []}}, {"model": {"cell": "gru"}}])
def test_training_data_is_required(raw):
    message = config_error(raw)
    assert message.startswith("data.train:")


def test_config_from_dict_rejects_a_non_mapping():
    assert "expected a mapping" in config_error(["data"])
    assert "expected a mapping" in config_error(None)


def test_config_from_dict_does_not_modify_its_input():
    raw = yaml.safe_load(VALID_YAML)
    before = copy.deepcopy(raw)
    config_from_dict(raw)
    assert raw == before


# ---------------------------------------------------------------------------------------------------
# round trips


def non_default_config() -> Config:
    return config_from_dict(yaml.safe_load(VALID_YAML))


def test_to_dict_round_trips_to_an_equal_config():
    config = non_default_config()
    assert config != Config()  # the round trip below is not trivially true
    plain = config.to_dict()
    assert isinstance(plain["training"]["betas"], list)  # plain YAML data, no tuples
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain
    again = config_from_dict(plain)
    assert again == config
    assert again.data.train[1] == CorpusSpec("corpus/tatoeba.tsv", "tatoeba")
    assert again.training.betas == (0.8, 0.98)


def test_save_config_writes_yaml_that_loads_back_equal(tmp_path):
    config = non_default_config()
    path = tmp_path / "out" / "effective.yaml"
    save_config(config, path)
    assert load_config(path) == config
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == config.to_dict()
    assert [p.name for p in path.parent.iterdir()] == ["effective.yaml"]  # no temp files left


def test_save_config_keeps_korean_text_readable(tmp_path):
    config = config_from_dict({"name": "한영", "data": {"train": ["말뭉치.tsv"]}})
    path = tmp_path / "ko.yaml"
    save_config(config, path)
    text = path.read_text(encoding="utf-8")
    assert "한영" in text and "말뭉치.tsv" in text
    assert load_config(path) == config


@pytest.mark.parametrize("path", sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")))
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.name == Path(path).stem
