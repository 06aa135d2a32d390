"""The training loop: memorising a tiny corpus, exact resume, checkpoints, metrics, clipping,
early stopping, Ctrl-C, schedulers and the --resume config check."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch

from translator.checkpoint import load_checkpoint
from translator.config import ConfigError, config_from_dict, load_config
from translator.data import make_batches
from translator.training import MetricsLog, Trainer, cpu_has_bf16, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_metrics(output_dir: Path) -> tuple[list[dict], list[dict]]:
    entries = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [e for e in entries if e["kind"] == "train"], [e for e in entries if e["kind"] == "dev"]


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_bitwise_equal(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"tensors differ: {different}"


# ---------------------------------------------------------------------------------------------------
# Learning: a tiny model memorises 50 pairs in both directions


def test_tiny_model_memorises_training_pairs_in_both_directions(trained_model, translator):
    pairs = trained_model.pairs
    exact = 0
    for source, target, src_side, tgt_side in (("en", "ko", 0, 1), ("ko", "en", 1, 0)):
        results = translator.translate([p[src_side] for p in pairs], source, target, beam=1)
        exact += sum(r.text == p[tgt_side] for r, p in zip(results, pairs))
    assert exact >= 0.95 * 2 * len(pairs), f"only {exact} of {2 * len(pairs)} training pairs reproduced"


def test_training_loss_falls_and_dev_scores_are_logged_per_direction(trained_model):
    train_entries, dev_entries = read_metrics(trained_model.output_dir)
    losses = [e["loss"] for e in train_entries]
    assert len(losses) == trained_model.config.training.max_steps // trained_model.config.training.log_every
    assert losses[-1] < 0.1 * losses[0]
    assert max(losses[-3:]) < 0.5
    for entry in train_entries:
        assert math.isfinite(entry["grad_norm"]) and entry["grad_norm"] > 0
        assert entry["lr"] == pytest.approx(0.01)
    assert [e["step"] for e in dev_entries] == [50, 100, 150, 200, 250]
    for entry in dev_entries:
        for key in ("bleu_en-ko", "chrf_en-ko", "bleu_ko-en", "chrf_ko-en", "bleu", "chrf", "dev_loss"):
            assert isinstance(entry[key], (int, float)) and math.isfinite(entry[key]), key
        assert 0 <= entry["chrf_en-ko"] <= 100 and 0 <= entry["bleu_ko-en"] <= 100


def test_training_writes_checkpoints_config_plot_and_summary(trained_model):
    out = trained_model.output_dir
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary == trained_model.summary
    assert summary["stop_reason"] == "max_steps" and summary["steps"] == trained_model.config.training.max_steps
    assert {"bleu_en-ko", "chrf_ko-en"} <= summary["final"].keys()

    assert load_config(out / "config.yaml").to_dict() == trained_model.config.to_dict()
    assert (out / "training_curves.png").read_bytes()[:8] == PNG_MAGIC

    last = load_checkpoint(out / "last.pt")
    assert last["training"]["state"]["step"] == summary["steps"]
    assert last["metrics"]["step"] == summary["steps"]

    # best.pt holds the first validation reaching the best dev BLEU.
    _, dev_entries = read_metrics(out)
    best_bleu = max(e["bleu"] for e in dev_entries)
    first_best_step = min(e["step"] for e in dev_entries if e["bleu"] == best_bleu)
    best = load_checkpoint(out / "best.pt")
    assert best["metrics"]["best_score"] == best_bleu == summary["best_score"]
    assert best["training"]["state"]["step"] == first_best_step

    # keep_best: 5 validations, but only the 2 best step checkpoints remain (the ones the state lists).
    keep_best = trained_model.config.training.keep_best
    step_files = sorted(p.name for p in out.glob("step-*.pt"))
    assert len(dev_entries) > keep_best
    assert len(step_files) == keep_best
    assert step_files == sorted(name for _, _, name in last["training"]["state"]["best_checkpoints"])
    for name in step_files:
        step = int(name[len("step-"):-len(".pt")])
        assert load_checkpoint(out / name)["training"]["state"]["step"] == step


# ---------------------------------------------------------------------------------------------------
# Exact resume


RESUME_STEPS = 8  # N: validate_every and save_every divide it; an epoch is 5 batches


@pytest.fixture
def resume_config(make_config):
    def make(max_steps: int):
        return make_config(
            model={"dropout": 0.3, "embedding_dropout": 0.2},
            training={"teacher_forcing": 0.5, "batch_tokens": 400, "max_steps": max_steps, "validate_every": 4,
                      "save_every": 4, "log_every": 2, "scheduler": "plateau", "plateau_patience": 0},
        )

    return make


def test_resume_gives_bitwise_the_same_weights_as_a_straight_run(tmp_path, resume_config):
    n = RESUME_STEPS
    first = train(resume_config(n), tmp_path / "a")
    assert first["steps"] == n
    checkpoint = load_checkpoint(tmp_path / "a" / "last.pt")
    state = checkpoint["training"]["state"]
    # An epoch boundary was crossed inside the first N steps and the resume starts mid-epoch.
    assert state["epoch"] >= 1 and state["batch_in_epoch"] > 0

    resumed = train(resume_config(2 * n), tmp_path / "a", resume=tmp_path / "a" / "last.pt")
    straight = train(resume_config(2 * n), tmp_path / "b")
    assert resumed["steps"] == straight["steps"] == 2 * n
    assert resumed["epochs_completed"] == straight["epochs_completed"] > state["epoch"]
    assert_bitwise_equal(model_weights(tmp_path / "a" / "last.pt"), model_weights(tmp_path / "b" / "last.pt"))

    # The metrics log of the resumed run tells one history, the same as the straight run's.
    resumed_train, resumed_dev = read_metrics(tmp_path / "a")
    straight_train, straight_dev = read_metrics(tmp_path / "b")
    assert [(e["step"], e["loss"], e["lr"]) for e in resumed_train] == [(e["step"], e["loss"], e["lr"]) for e in straight_train]
    assert [(e["step"], e["dev_loss"]) for e in resumed_dev] == [(e["step"], e["dev_loss"]) for e in straight_dev]


def test_resume_without_restoring_random_state_would_differ(tmp_path, resume_config, monkeypatch):
    """Guards the test above: with dropout and scheduled sampling, the RNG state does matter."""
    n = RESUME_STEPS
    train(resume_config(n), tmp_path / "a")
    train(resume_config(2 * n), tmp_path / "b")
    monkeypatch.setattr("translator.training.restore_rng_states", lambda states: None)
    train(resume_config(2 * n), tmp_path / "a", resume=tmp_path / "a" / "last.pt")
    first, second = model_weights(tmp_path / "a" / "last.pt"), model_weights(tmp_path / "b" / "last.pt")
    assert any(not torch.equal(first[name], second[name]) for name in first)


def test_context_word_dropout_resumes_exactly_and_changes_only_context_words(tmp_path, make_config, monkeypatch):
    from conftest import CONTEXT_ROWS, write_phrases

    from translator.training import EncodedSet

    # One context lacks its text: it falls back to the separator form, whose context words also drop.
    lacking = ("en", "ko", "bats", "a dark cave", "박쥐", "bat/animal")
    phrases = write_phrases(tmp_path / "phrases.tsv", [*CONTEXT_ROWS, lacking])
    pairs = []  # (source as encoded, source as trained on) for every dropped-out batch row
    original_batch = EncodedSet.batch

    def recording_batch(self, indices, tokenizer, context_word_dropout=0.0, rng=None):
        batch = original_batch(self, indices, tokenizer, context_word_dropout, rng)
        if context_word_dropout:
            pairs.extend(zip((self.sources[i] for i in indices), batch.src.tolist()))
            recording_batch.tokenizer = tokenizer
        return batch

    monkeypatch.setattr(EncodedSet, "batch", recording_batch)

    def config(max_steps: int, rate: float = 0.5):
        return make_config(
            data={"phrases": [str(phrases)], "context_encoding": "inline"},
            model={"dropout": 0.3},
            training={"batch_tokens": 400, "max_steps": max_steps, "validate_every": 4, "save_every": 4,
                      "context_word_dropout": rate},
        )

    n = RESUME_STEPS
    train(config(n), tmp_path / "a")
    train(config(2 * n), tmp_path / "a", resume=tmp_path / "a" / "last.pt")
    train(config(2 * n), tmp_path / "b")
    assert_bitwise_equal(model_weights(tmp_path / "a" / "last.pt"), model_weights(tmp_path / "b" / "last.pt"))
    train(config(2 * n, rate=0.0), tmp_path / "c")
    dropped, undropped = model_weights(tmp_path / "b" / "last.pt"), model_weights(tmp_path / "c" / "last.pt")
    assert any(not torch.equal(dropped[name], undropped[name]) for name in dropped)

    # Whole context words became <unk>; everything else (tag, marked text, sources without context) is kept.
    tokenizer = recording_batch.tokenizer
    n_unk = 0
    assert any(tokenizer.separator_id in source for source, _ in pairs)
    for source, trained in pairs:
        trained = [i for i in trained if i != tokenizer.pad_id]
        n_unk += trained.count(tokenizer.unk_id)
        spans = tokenizer.context_words(source)
        if not spans:
            assert trained == source
            continue
        assert len(trained) == len(source)
        assert all(trained[i] == source[i] for i in range(len(source)) if not any(a <= i < b for a, b in spans))
        assert all(trained[a:b] in (source[a:b], [tokenizer.unk_id] * (b - a)) for a, b in spans)
    assert n_unk > 0


def test_resume_with_a_different_model_section_names_the_key(trained_model, make_config, tmp_path):
    changed = make_config(model={"hidden": 48})
    with pytest.raises(ConfigError) as info:
        train(changed, tmp_path / "out", resume=trained_model.path)
    message = str(info.value)
    assert message.startswith("model.hidden:") and "48" in message and "32" in message
    assert "\n" not in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key,value", [
    ("scheduler", "plateau"),  # used to load one scheduler's state into another: KeyError or silent garbage
    ("learning_rate", 0.001),  # used to be ignored silently: the optimizer state brings back the old rate
    ("weight_decay", 0.1),
    ("seed", 2),  # would re-split dev from train: dev pairs already trained on
    ("best_metric", "chrf"),  # the saved best score is a BLEU value
])
def test_resume_refuses_training_settings_it_could_not_honour(trained_model, make_config, tmp_path, key, value):
    changed = make_config(training={"max_steps": 400, key: value})
    with pytest.raises(ConfigError) as info:
        train(changed, tmp_path / "out", resume=trained_model.path)
    message = str(info.value)
    assert message.startswith(f"training.{key}:") and "cannot change on --resume" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_metrics_log_on_resume_drops_later_and_torn_lines(tmp_path):
    """A hard kill can leave half a JSON line; resuming used to fail on it with a JSONDecodeError."""
    path = tmp_path / "metrics.jsonl"
    lines = ['{"kind": "train", "step": 2, "loss": 1.0}', "", '{"kind": "train", "step": 4, "loss": 0.9}',
             '{"kind": "dev", "step": 6, "dev_loss": 0.8}', '{"kind": "train", "step": 7, "lo']
    path.write_text("\n".join(lines), encoding="utf-8")
    log = MetricsLog(tmp_path, resume_step=4)
    log.write("train", {"step": 5, "loss": 0.85})
    log.close()
    assert [json.loads(line)["step"] for line in path.read_text(encoding="utf-8").splitlines()] == [2, 4, 5]


def test_resume_from_an_inference_only_checkpoint_is_refused(en_ko_only_model, tmp_path):
    from translator.config import config_from_dict

    config = config_from_dict(load_checkpoint(en_ko_only_model)["config"])
    with pytest.raises(ConfigError, match="no training state"):
        train(config, tmp_path / "out", resume=en_ko_only_model)


# ---------------------------------------------------------------------------------------------------
# Model variants


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_every_cell_and_attention_trains_with_a_finite_loss(tmp_path, make_config, cell, attention):
    config = make_config(model={"cell": cell, "attention": attention, "dropout": 0.1}, training={"teacher_forcing": 0.8})
    trainer = Trainer(config, tmp_path)
    batches = make_batches(trainer.train_set.lengths, config.training.batch_tokens, config.training.seed, 0)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for indices in batches[:3]:
        loss, norm = trainer.train_step(trainer.train_set.batch(indices, trainer.tokenizer))
        assert math.isfinite(loss) and loss > 0
        assert math.isfinite(norm) and norm > 0
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    result = trainer.validate()
    assert math.isfinite(result["dev_loss"])
    assert {"bleu_en-ko", "bleu_ko-en", "chrf_en-ko", "chrf_ko-en"} <= result.keys()


@pytest.mark.parametrize("model", [
    {"cell": "lstm", "attention": "luong", "luong_score": "dot", "decoder_hidden": 64},
    {"cell": "gru", "input_feeding": False, "encoder_layers": 2, "decoder_layers": 2, "residual": True,
     "bridge": False, "tie_embeddings": False, "share_embeddings": False, "dropout": 0.2},
])
def test_other_architecture_options_train_with_a_finite_loss(tmp_path, make_config, model):
    trainer = Trainer(make_config(model=model), tmp_path)
    batch = trainer.train_set.batch(list(range(8)), trainer.tokenizer)
    losses = [trainer.train_step(batch)[0] for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]  # the same batch three times: the loss goes down


# ---------------------------------------------------------------------------------------------------
# Gradient clipping


def _grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm())


def test_grad_norm_is_logged_before_clipping_and_the_update_uses_clipped_gradients(tmp_path, make_config):
    clip = 1e-3
    clipped = Trainer(make_config(training={"clip_norm": clip}), tmp_path / "clipped")
    unclipped = Trainer(make_config(training={"clip_norm": 0.0}), tmp_path / "unclipped")
    batch = clipped.train_set.batch(list(range(16)), clipped.tokenizer)

    loss_c, norm_c = clipped.train_step(batch)
    loss_u, norm_u = unclipped.train_step(batch)
    # Same seed, same batch: the same gradients, so the same logged (pre-clipping) norm.
    assert loss_c == pytest.approx(loss_u, rel=1e-6)
    assert norm_c == pytest.approx(norm_u, rel=1e-5)
    assert norm_c > clip
    # The gradients the optimizer used were clipped to clip_norm; without clipping they were not.
    assert _grad_norm(clipped.model) <= clip * 1.001
    assert _grad_norm(unclipped.model) == pytest.approx(norm_u, rel=1e-4)


# ---------------------------------------------------------------------------------------------------
# Stopping: early stopping and Ctrl-C


def test_early_stopping_stops_before_max_steps(tmp_path, make_config):
    config = make_config(training={"max_steps": 200, "validate_every": 2, "save_every": 2, "patience": 2, "log_every": 2})
    summary = train(config, tmp_path)
    assert summary["stop_reason"] == "early_stopping"
    assert summary["steps"] < config.training.max_steps
    assert summary["steps"] % config.training.validate_every == 0
    state = load_checkpoint(tmp_path / "last.pt")["training"]["state"]
    assert state["step"] == summary["steps"]
    assert state["validations_without_improvement"] == config.training.patience
    _, dev_entries = read_metrics(tmp_path)
    assert dev_entries[-1]["step"] == summary["steps"]  # no extra final validation was needed


def test_ctrl_c_stops_after_the_current_step_saves_and_resumes(tmp_path, make_config, monkeypatch):
    config = make_config(training={"max_steps": 10, "validate_every": 100, "save_every": 100})
    original = Trainer.train_step
    calls = []
    k = 3

    def train_step(self, batch):
        result = original(self, batch)
        calls.append(1)
        if len(calls) == k:
            self._request_stop(signal.SIGINT, None)
        return result

    monkeypatch.setattr(Trainer, "train_step", train_step)
    trainer = Trainer(config, tmp_path)
    summary = trainer.train()
    assert summary["stop_reason"] == "interrupted"
    assert summary["steps"] == k and len(calls) == k
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["training"]["state"]["step"] == k
    assert signal.getsignal(signal.SIGINT) != trainer._request_stop  # the previous handler is back
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C aborts at once
        trainer._request_stop(signal.SIGINT, None)

    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = train(config, tmp_path, resume=tmp_path / "last.pt")
    assert resumed["stop_reason"] == "max_steps"
    assert resumed["steps"] == config.training.max_steps
    train_entries, dev_entries = read_metrics(tmp_path)
    assert [e["step"] for e in train_entries] == list(range(1, config.training.max_steps + 1))
    assert [e["step"] for e in dev_entries] == [config.training.max_steps]


# ---------------------------------------------------------------------------------------------------
# Learning-rate schedulers


def test_warmup_scheduler_rises_linearly_then_decays_with_inverse_square_root(tmp_path, make_config):
    base, warmup = 0.01, 4
    config = make_config(training={"scheduler": "warmup", "learning_rate": base, "warmup_steps": warmup,
                                   "max_steps": 16, "validate_every": 100, "save_every": 100})
    train(config, tmp_path)
    train_entries, _ = read_metrics(tmp_path)
    lr = {e["step"]: e["lr"] for e in train_entries}  # the rate after `step` updates
    assert lr[1] == pytest.approx(base * 2 / warmup)
    assert lr[1] < lr[2] < lr[3]
    assert lr[3] == pytest.approx(base)  # peak at the end of warmup
    assert all(lr[s] > lr[s + 1] for s in range(3, 16 - 1))
    assert lr[15] == pytest.approx(base / 2)  # sqrt(warmup / (4 * warmup)) = 1/2


def test_plateau_scheduler_cuts_the_rate_at_validations_down_to_the_floor(tmp_path, make_config):
    base, floor = 0.01, 0.0025
    config = make_config(training={"scheduler": "plateau", "learning_rate": base, "plateau_factor": 0.5,
                                   "plateau_patience": 0, "min_learning_rate": floor, "max_steps": 10,
                                   "validate_every": 2, "save_every": 10})
    train(config, tmp_path)
    train_entries, dev_entries = read_metrics(tmp_path)
    assert [e["step"] for e in dev_entries] == [2, 4, 6, 8, 10]
    lrs = [e["lr"] for e in train_entries]
    assert lrs[0] == pytest.approx(base)
    assert lrs[-1] == pytest.approx(floor)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert {round(x, 8) for x in lrs} == {base, base / 2, floor}
    validation_steps = {e["step"] for e in dev_entries}
    for previous, current in zip(train_entries, train_entries[1:]):
        if current["lr"] != previous["lr"]:
            assert previous["step"] in validation_steps  # cut only right after a validation


def test_load_examples_merges_corpora_phrases_and_glossary_and_holds_out_dev(tmp_path, corpus):
    from conftest import tiny_config_dict, write_phrases

    from translator.training import load_examples

    phrases = write_phrases(tmp_path / "p.tsv", [
        ("en", "ko", "bat", "A bat flew out of the cave", "박쥐", "bat/animal"),
        ("en", "ko", "river bank", "", "강둑", "-"),
    ])
    phrases_dev = write_phrases(tmp_path / "d.tsv", [("en", "ko", "bat", "a bat in the attic", "박쥐", "bat/animal")])
    glossary = tmp_path / "g.tsv"
    glossary.write_text("korean\tenglish_gloss\tpos_code\tlevel\n수도꼭지\tA faucet,tap\t1\tC\n배트\tBat\t1\tC\n",
                        encoding="utf-8")
    config = config_from_dict(tiny_config_dict(corpus.train, corpus.dev, data={
        "phrases": [str(phrases)], "phrases_dev": [str(phrases_dev)], "glossary": [str(glossary)], "phrase_repeat": 3}))
    train, dev = load_examples(config.data, seed=1)
    assert sum(e.src == "river bank" for e in train) == 3  # repeated phrase_repeat times
    assert sum(e.src == "강둑" and e.tgt_lang == "en" for e in train) == 3  # plain phrases train both ways
    assert any(e.src == "faucet" and e.tgt == "수도꼭지" for e in train)
    assert not any("배트" in (e.src, e.tgt) for e in train)  # 'bat' is taught in context, not by the glossary
    assert any(e.context == "a bat in the attic" for e in dev) and not any(e.context == "a bat in the attic" for e in train)
    assert len([e for e in dev if not e.context]) == 2 * len(corpus.dev_pairs)


def test_init_from_warm_starts_weights_and_tokenizer_with_new_data(trained_model, tmp_path, corpus):
    """Fine-tuning: the first step starts from the checkpoint's weights (so the loss starts low) and
    the tokenizer is the checkpoint's even though the data changed."""
    from conftest import tiny_config_dict, write_tsv

    extra = write_tsv(tmp_path / "extra.tsv", corpus.pairs + [("green tea", "녹차"), ("black tea", "홍차")])
    overrides = {"data": {"train": str(extra)}, "training": {"max_steps": 3, "validate_every": 3, "save_every": 3,
                                                             "log_every": 1, "learning_rate": 0.001}}
    config = config_from_dict(tiny_config_dict(corpus.train, corpus.dev, **overrides))
    summary = train(config, tmp_path / "warm", init_from=trained_model.path)
    assert summary["steps"] == 3
    warm = load_checkpoint(tmp_path / "warm" / "last.pt")
    assert warm["tokenizer"] == load_checkpoint(trained_model.path)["tokenizer"]
    cold_summary = train(config, tmp_path / "cold")
    warm_loss = read_metrics(tmp_path / "warm")[0][0]["loss"]
    cold_loss = read_metrics(tmp_path / "cold")[0][0]["loss"]
    assert warm_loss < cold_loss / 3 and cold_summary["steps"] == 3
    # The model shape must match; resume and init-from exclude each other.
    other = config_from_dict(tiny_config_dict(corpus.train, corpus.dev, model={"hidden": 48}, **overrides))
    with pytest.raises(ConfigError, match="model.hidden"):
        train(other, tmp_path / "bad", init_from=trained_model.path)
    with pytest.raises(ConfigError, match="exclude each other"):
        train(config, tmp_path / "both", resume=trained_model.path, init_from=trained_model.path)


# ---------------------------------------------------------------------------------------------------
# The `sense` dev metric: word-in-context accuracy, scored like `evaluate --disambiguation`


def test_sense_accuracy_scores_only_rows_with_a_context_by_the_disambiguation_rule():
    from translator.data import Example
    from translator.training import sense_accuracy

    examples = [
        Example("bat", "박쥐", "en", "ko", context="A bat flew out of the cave"),
        Example("배", "ship", "ko", "en", context="배를 타고 섬에 갔다"),
        Example("bank", "은행", "en", "ko", context="She works at a bank"),
        Example("배", "pear", "ko", "en", context="배를 깎아 먹었다"),
        Example("hello", "안녕", "en", "ko"),  # no context: a sentence pair, not scored
    ]
    hypotheses = ["박쥐가", "a ship", "둑", "pearl", "틀림"]
    # Korean substring (박쥐가 contains 박쥐), English whole word ("a ship" yes, "pearl" is not "pear").
    assert sense_accuracy(examples, hypotheses) == 50.0
    assert sense_accuracy(examples[4:], hypotheses[4:]) == 0.0


def test_best_metric_sense_needs_dev_rows_with_a_context(make_config, tmp_path):
    config = make_config(training={"best_metric": "sense"})
    with pytest.raises(ConfigError, match="sense needs dev rows with a context"):
        Trainer(config, tmp_path / "run")


# ---------------------------------------------------------------------------------------------------
# Truncated BPTT


def smoke_config(**training) -> dict:
    """configs/smoke.yaml on data/smoke.tsv, a 32-wide model, a high learning rate, a log line every 5
    steps and no validation: the loss curve of a minute-long run, as a raw config dict."""
    repo = Path(__file__).resolve().parents[1]
    raw = load_config(repo / "configs" / "smoke.yaml").to_dict()
    raw["data"]["train"] = [{"path": str(repo / "data" / "smoke.tsv"), "format": "auto"}]
    raw["model"].update(embedding=32, hidden=32)
    raw["training"].update(learning_rate=0.01, validate_every=1000, save_every=1000, log_every=5, num_threads=1, **training)
    return raw


def test_truncated_bptt_still_learns_the_smoke_corpus(tmp_path):
    """K = 2 cuts the smoke corpus's targets (up to ~20 pieces) into many chunks; the loss still falls
    (measured about 5.7 → 1.3 in 60 steps, as with full back-propagation)."""
    train(config_from_dict(smoke_config(truncated_bptt=2, max_steps=60)), tmp_path)
    losses = [e["loss"] for e in read_metrics(tmp_path)[0]]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.35 * losses[0], losses


# ---------------------------------------------------------------------------------------------------
# Mixed precision


def test_bfloat16_training_learns_like_float32(tmp_path):
    """training.precision: bfloat16 (autocast; float32 weights and loss) tracks the float32 run on the
    smoke corpus: the same falling loss, to within a few percent."""
    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions: bfloat16 is refused (see the test below)")
    raw = smoke_config(max_steps=40)
    losses = {}
    for precision in ("float32", "bfloat16"):
        raw["training"]["precision"] = precision
        train(config_from_dict(raw), tmp_path / precision)
        losses[precision] = [e["loss"] for e in read_metrics(tmp_path / precision)[0]]
        assert load_checkpoint(tmp_path / precision / "last.pt")["model"]["src_embed.weight"].dtype == torch.float32
    low, full = losses["bfloat16"], losses["float32"]
    assert low != full  # the forward pass really ran in bf16
    assert sum(low[-3:]) / 3 < 0.5 * low[0], low
    assert abs(sum(low[-3:]) - sum(full[-3:])) / sum(full[-3:]) < 0.1, (low, full)


def test_bfloat16_without_cpu_support_is_a_config_error(make_config, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(ConfigError, match="training.precision: bfloat16 needs a CPU with bf16"):
        train(make_config(training={"precision": "bfloat16"}), tmp_path)
