"""The pure parts of the Joey NMT comparison (benchmarks/run.py): table and ratios, FLOP counts, log
parsing, RESULTS.md editing and the conversion of our config into Joey's. No peer install needed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import suite
from benchmarks.peer import prepare
from benchmarks.run import main, parse_args, table_rows
from translator.config import config_from_dict, load_config
from translator.data import normalize
from translator.model import build_model

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK_CONFIG = ROOT / "configs" / "benchmark-koen.yaml"


# --- table and ratios ---------------------------------------------------------------------------------
def test_ratio_kinds():
    assert suite.Row("tokens/s", 3000, 1000).ratio == 3.0
    assert suite.Row("p50", 10, 40, "lower").ratio == 0.25
    assert suite.Row("BLEU", 3.1, 2.6, "delta").ratio == pytest.approx(0.5)
    assert suite.Row("info", 1, 2, "info").ratio is None
    assert suite.Row("no peer", 1.0).ratio is None
    assert suite.Row("peer zero", 1.0, 0.0).ratio is None


def test_format_ratio_and_numbers():
    assert suite.format_ratio(suite.Row("a", 3000, 1000)) == "3.00×"
    assert suite.format_ratio(suite.Row("a", 25, 1)) == "25.0×"
    assert suite.format_ratio(suite.Row("b", 2.0, 2.5, "delta")) == "-0.50"
    assert suite.format_ratio(suite.Row("b", 2.5, 2.0, "delta")) == "+0.50"
    assert suite.format_number(1234.5) == "1,234"
    assert suite.format_number(3.14159, 2) == "3.14"
    assert suite.format_number(None) == "—"
    assert suite.format_number(float("nan")) == "—"


def test_met_ratio():
    assert suite.met_ratio(3000, 1000, at_least=3.0) is True
    assert suite.met_ratio(2999, 1000, at_least=3.0) is False
    assert suite.met_ratio(10, 30, at_most=1 / 3) is True
    assert suite.met_ratio(11, 30, at_most=1 / 3) is False
    assert suite.met_ratio(None, 30, at_most=1 / 3) is None
    assert suite.met_ratio(1, 0, at_least=1) is None


def test_render_table():
    rows = [suite.Row("training tokens/s", 3900, 1300, "higher", "≥ 3×", True, digits=0),
            suite.Row("dev BLEU", 2.5, 2.69, "delta", "≥ Joey", False, digits=2, note="greedy"),
            suite.Row("GFLOP/s", 42.0, None, "info", ours_text="42 of 80")]
    table = suite.render_table(rows).splitlines()
    assert table[0] == "| metric | ours | Joey NMT | ratio | target | met? |"
    assert table[2] == "| training tokens/s | 3,900 | 1,300 | 3.00× | ≥ 3× | **yes** |"
    assert table[3] == "| dev BLEU (greedy) | 2.50 | 2.69 | -0.19 | ≥ Joey | no |"
    assert table[4] == "| GFLOP/s | 42 of 80 | — | — | — | — |"


def test_percentile_matches_linear_interpolation():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert suite.percentile(values, 50) == 3.0
    assert suite.percentile(values, 0) == 1.0
    assert suite.percentile(values, 100) == 5.0
    assert suite.percentile(values, 95) == pytest.approx(4.8)
    assert suite.percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        suite.percentile([], 50)


# --- throughput from logs ----------------------------------------------------------------------------
def test_window_throughput_skips_the_warmup_window_and_weights_by_duration():
    windows = [suite.Window(100.0, 10, 50.0),  # warm-up: excluded
               suite.Window(101.0, 20, 1000.0),  # 1 s at 1000 tok/s
               suite.Window(104.0, 30, 2000.0)]  # 3 s at 2000 tok/s
    figures = suite.window_throughput(windows)
    assert figures["tokens_per_sec"] == pytest.approx((1000 + 6000) / 4)
    assert figures["steps"] == 20 and figures["first_step"] == 11 and figures["last_step"] == 30
    assert figures["seconds_per_step"] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        suite.window_throughput(windows[:1])


JOEY_LOG = """\
2026-11-22 07:38:43,380 - INFO - joeynmt.training - EPOCH 1
2026-11-22 07:38:45,247 - INFO - joeynmt.training - Epoch   1, Step:        5, Batch Loss:     6.956782, Batch Acc: 0.083568, Tokens per Sec:     1520, Lr: 0.001000
2026-11-22 07:38:47,668 - INFO - joeynmt.training - Epoch   1, Step:       10, Batch Loss:     5.567197, Batch Acc: 0.109552, Tokens per Sec:     1207, Lr: 0.001000
2026-11-22 07:38:49,456 - INFO - joeynmt.training - Epoch   1, Step:       15, Batch Loss:     5.047778, Batch Acc: 0.110117, Tokens per Sec:     1626, Lr: 0.001000
2026-11-22 07:38:50,000 - INFO - joeynmt.training - Interrupt at epoch 1, step 17.
"""


def test_joey_log_parsing():
    windows = suite.joey_windows(JOEY_LOG)
    assert [w.step for w in windows] == [5, 10, 15]
    assert [w.tokens_per_sec for w in windows] == [1520.0, 1207.0, 1626.0]
    assert windows[1].time - windows[0].time == pytest.approx(2.421)
    assert windows[0].time - suite.joey_training_started(JOEY_LOG) == pytest.approx(1.867)
    assert suite.joey_interrupted_at(JOEY_LOG) == 17
    assert suite.joey_interrupted_at("... Training ended since maximum num. of updates 30 was reached.") == 30
    assert suite.joey_training_started("nothing yet") is None
    figures = suite.window_throughput(windows)
    assert figures["tokens_per_sec"] == pytest.approx((1207 * 2.421 + 1626 * 1.788) / (2.421 + 1.788))


def test_joey_validations():
    text = ("Steps: 100\tloss: 4.1\tbleu: 0.51230\tchrf: 0.1\tLR: 0.00100000\t*\n"
            "Steps: 200\tloss: 3.9\tbleu: 1.25000\tchrf: 0.2\tLR: 0.00100000\t*\n")
    assert suite.joey_validations(text) == [(100, 0.5123), (200, 1.25)]


# --- FLOPs -----------------------------------------------------------------------------------------------
def _dims(input_feeding: bool = True) -> suite.Dims:
    raw = yaml.safe_load(BENCHMARK_CONFIG.read_text(encoding="utf-8"))
    raw["model"]["input_feeding"] = input_feeding
    return suite.Dims.from_config(raw["model"], vocab=5575)


def test_flops_by_hand():
    d = suite.Dims(embedding=4, hidden=8, encoder_layers=1, decoder_layers=1, vocab=10, input_feeding=False)
    batch, src, tgt = 2, 3, 5
    by_name = {g.name: g.flops for g in suite.forward_gemms(d, batch, src, tgt)}
    assert by_name["encoder 1 input"] == 2 * (batch * src) * 4 * 32 * 2  # both directions
    assert by_name["encoder 1 recurrent"] == 2 * (batch * src) * 8 * 32 * 2
    assert by_name["output layer"] == 2 * batch * tgt * 8 * 10
    assert by_name["attention context"] == 2 * batch * tgt * src * 16
    total = sum(by_name.values())
    assert suite.training_step_flops(d, batch, src, tgt) == 3 * total


def test_flops_are_the_same_with_and_without_input_feeding_except_the_fed_input():
    fed = {g.name: g.flops for g in suite.forward_gemms(_dims(True), 64, 11, 13, 600)}
    plain = {g.name: g.flops for g in suite.forward_gemms(_dims(False), 64, 11, 13, 600)}
    assert fed.keys() == plain.keys()
    assert fed["decoder 1 input"] == pytest.approx(plain["decoder 1 input"] * (256 + 256) / 256)
    for name in fed.keys() - {"decoder 1 input"}:
        assert fed[name] == pytest.approx(plain[name]), name


def test_flops_agree_with_torch_for_the_non_recurrent_products():
    """torch's FlopCounterMode counts mm/addmm/bmm but not the fused LSTM kernels: compare those."""
    from torch.utils.flop_counter import FlopCounterMode

    config = load_config(BENCHMARK_CONFIG)
    config.model.input_feeding = False
    model = build_model(config.model, 500, 0, seed=1)
    batch, src_len, tgt_len = 4, 7, 6
    src = torch.randint(5, 500, (batch, src_len))
    with FlopCounterMode(display=False) as counter:
        model(src, torch.full((batch,), src_len), torch.randint(5, 500, (batch, tgt_len)))
    d = suite.Dims.from_config(config.to_dict()["model"], vocab=500)
    ours = sum(g.flops for g in suite.forward_gemms(d, batch, src_len, tgt_len) if "encoder" not in g.name
               and not g.name.startswith(("decoder", "bridge")))
    bridge = next(g.flops for g in suite.forward_gemms(d, batch, src_len, tgt_len) if g.name == "bridge")
    assert counter.get_total_flops() == pytest.approx(ours + bridge, rel=0.01)


# --- RESULTS.md ---------------------------------------------------------------------------------------------
def test_replace_section_appends_then_replaces_and_keeps_the_rest():
    document = "# Load benchmark results\n\nintro\n\n## Memory\n\nflat\n"
    first = suite.replace_section(document, suite.SECTION_HEADING, f"{suite.SECTION_HEADING}\n\nrun 1\n")
    assert first.startswith(document.rstrip("\n") + "\n\n")
    assert first.endswith("## Side by side with Joey NMT\n\nrun 1\n")
    second = suite.replace_section(first + "\n## Later\n\nkept\n", suite.SECTION_HEADING, f"{suite.SECTION_HEADING}\n\nrun 2\n")
    assert "run 1" not in second and "run 2" in second
    assert second.count(suite.SECTION_HEADING) == 1
    assert "## Memory\n\nflat\n" in second and second.endswith("## Later\n\nkept\n")


def test_replace_section_ignores_headings_inside_code_blocks():
    document = f"# T\n\n{suite.SECTION_HEADING}\n\nold\n\n```\n## not a heading\n```\n\nstill old\n\n## Next\n\nkept\n"
    result = suite.replace_section(document, suite.SECTION_HEADING, f"{suite.SECTION_HEADING}\n\nnew\n")
    assert result == f"# T\n\n{suite.SECTION_HEADING}\n\nnew\n\n## Next\n\nkept\n"


def test_replace_section_on_the_real_results_file_keeps_the_load_benchmark():
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    updated = suite.replace_section(results, suite.SECTION_HEADING, f"{suite.SECTION_HEADING}\n\nfigures\n")
    load_part = results.split(suite.SECTION_HEADING)[0].rstrip("\n")
    assert updated.startswith(load_part)
    assert "## Targets (issue #4)" in updated and updated.count(suite.SECTION_HEADING) == 1


def test_parse_lscpu():
    text = "Architecture: x86_64\nCPU(s):   2\nModel name:   AMD EPYC\nThread(s) per core:  1\n"
    assert suite.parse_lscpu(text) == ("AMD EPYC", 2, 1)
    assert suite.Machine("AMD EPYC", 2, 1, 23.5).describe() == "AMD EPYC, 2 cores, 23.5 GB RAM"


# --- config conversion and data preparation --------------------------------------------------------------
def test_benchmark_config_is_valid_and_ko_en():
    config = load_config(BENCHMARK_CONFIG)
    assert config.data.directions == ["ko-en"]
    m = config.model
    assert (m.cell, m.embedding, m.hidden, m.encoder_layers, m.decoder_layers, m.attention, m.dropout) == \
        ("lstm", 256, 256, 2, 2, "bahdanau", 0.3)
    t = config.training
    assert (t.learning_rate, t.label_smoothing, t.clip_norm, t.scheduler) == (1e-3, 0.1, 1.0, "none")


def test_joey_config_reproduces_our_model(tmp_path):
    ours = yaml.safe_load(BENCHMARK_CONFIG.read_text(encoding="utf-8"))
    joey = prepare.joey_config(ours, tmp_path / "data", tmp_path / "model", steps=30, logging_freq=5,
                               validation_freq=30, beam=5, load_model=tmp_path / "model" / "best.ckpt")
    enc, dec = joey["model"]["encoder"], joey["model"]["decoder"]
    assert (enc["type"], enc["rnn_type"], enc["hidden_size"], enc["num_layers"], enc["bidirectional"]) == ("recurrent", "lstm", 256, 2, True)
    assert (dec["type"], dec["rnn_type"], dec["hidden_size"], dec["num_layers"]) == ("recurrent", "lstm", 256, 2)
    assert (dec["attention"], dec["input_feeding"], dec["init_hidden"]) == ("bahdanau", True, "bridge")
    assert enc["embeddings"]["embedding_dim"] == dec["embeddings"]["embedding_dim"] == 256
    assert enc["dropout"] == dec["dropout"] == dec["hidden_dropout"] == 0.3
    assert joey["model"]["tied_embeddings"] and joey["model"]["tied_softmax"]
    tr = joey["training"]
    assert (tr["optimizer"], tr["learning_rate"], tr["label_smoothing"], tr["clip_grad_norm"]) == ("adam", 0.001, 0.1, 1.0)
    assert (tr["scheduling"], tr["decrease_factor"]) == ("exponential", 1.0)  # constant: plateau breaks on torch 2.13
    assert (tr["batch_size"], tr["batch_type"], tr["updates"]) == (64, "sentence", 30)
    assert tr["logging_freq"] < tr["validation_freq"] and tr["validation_freq"] % tr["logging_freq"] == 0
    assert (joey["data"]["src"]["lang"], joey["data"]["trg"]["lang"]) == ("ko", "en")
    assert joey["data"]["src"]["voc_file"] == joey["data"]["trg"]["voc_file"]  # one joint vocabulary
    assert joey["testing"]["beam_size"] == 5 and joey["testing"]["load_model"].endswith("best.ckpt")
    assert joey["model_dir"] == (tmp_path / "model").as_posix()
    yaml.safe_load(yaml.safe_dump(joey))  # plain data only

    ours["model"]["input_feeding"] = False
    assert prepare.joey_config(ours, tmp_path, tmp_path)["model"]["decoder"]["input_feeding"] is False


def test_joey_config_refuses_what_joey_cannot_express(tmp_path):
    ours = yaml.safe_load(BENCHMARK_CONFIG.read_text(encoding="utf-8"))
    for section, key, value in (("model", "residual", True), ("model", "cell", "rnn"), ("training", "scheduler", "plateau"),
                                ("training", "teacher_forcing", 0.5)):
        broken = yaml.safe_load(yaml.safe_dump(ours))
        broken[section][key] = value
        with pytest.raises(ValueError, match=key.split("_")[0]):
            prepare.joey_config(broken, tmp_path, tmp_path)
    with pytest.raises(ValueError, match="multiple"):
        prepare.joey_config(ours, tmp_path, tmp_path, logging_freq=30, validation_freq=100)


@pytest.mark.parametrize("text", ["  Ｈｅｌｌｏ\u200b  world ", "한국어\tkeyboard", "a\u00a0b\u2028c", "이건\x07 벨"])
def test_peer_normalisation_matches_ours(text):
    assert prepare.normalize(text) == normalize(text)


def test_peer_data_is_our_training_data(tmp_path):
    train = tmp_path / "train.en-ko.tsv"
    dev = tmp_path / "dev.en-ko.tsv"
    train.write_text("Run!\t뛰어!\nWow!\t우와!\nRun!\t뛰어!\nHi.\t안녕.\n\t빈\n" + "x" * 201 + "\t길다\n", encoding="utf-8")
    dev.write_text("Hi.\t안녕.\nBye.\t잘 가.\n", encoding="utf-8")
    peer_train, peer_dev = prepare.split_sets(train, dev)
    from translator.data import load_training_data

    config = config_from_dict({"data": {"train": {"path": str(train), "format": "tsv"}, "dev": {"path": str(dev), "format": "tsv"}}})
    our_train, our_dev = load_training_data(config.data, seed=1)
    assert peer_train == [(p.en, p.ko) for p in our_train] == [("Run!", "뛰어!"), ("Wow!", "우와!")]
    assert peer_dev == [(p.en, p.ko) for p in our_dev]


def test_write_plain(tmp_path):
    prepare.write_plain([("Hello.", "안녕."), ("Yes.", "네.")], tmp_path / "train")
    assert (tmp_path / "train.en").read_text(encoding="utf-8") == "Hello.\nYes.\n"
    assert (tmp_path / "train.ko").read_text(encoding="utf-8") == "안녕.\n네.\n"


# --- modes ----------------------------------------------------------------------------------------------------
def test_modes_default_sensibly():
    quick = parse_args(["--quick"])
    assert quick.both_variants is False and quick.write_results is False and quick.mkldnn == "off"
    assert quick.work.name == "benchmark-quick"
    full = parse_args([])
    assert full.both_variants is True and full.write_results is True and full.mkldnn == "both"
    assert full.latency_threads == [1, 0]
    assert parse_args(["--quick", "--write-results", "--variant", "no-feed"]).write_results is True


# A full run's results.json, trimmed (per-input latencies and outputs, log windows dropped): what
# --report-from and the table are checked against.
RESULTS_FIXTURE = ROOT / "tests" / "data" / "benchmark-results.json"


def test_table_rows_follow_the_measured_figures():
    import json

    results = json.loads(RESULTS_FIXTURE.read_text(encoding="utf-8"))
    rows = {row.metric.split(" (")[0]: row for row in table_rows(results)}
    training = rows["training, target tokens/s over 200 steps after 20 warm-up steps"]
    ours, joey = results["throughput"]["ours-feed"]["tokens_per_sec"], results["throughput"]["joey"]["tokens_per_sec"]
    assert (training.ours, training.peer) == (ours, joey) and training.met == (ours / joey >= 3)
    int8 = rows["test set, beam 5, sentences/s, int8"]
    int8_run = next(r for r in results["translation"]["ours-feed-int8"] if r["beam"] == 5)
    joey_bleu = next(r for r in results["translation"]["joey"] if r["beam"] == 5)["bleu"]
    assert int8.ours == int8_run["sentences_per_sec"] and int8.met == (int8.ours / int8.peer >= 3 and int8_run["bleu"] >= joey_bleu)
    # Every other trained variant gets its throughput, memory and BLEU rows.
    for label in ("without input feeding", "with input feeding, float32 training"):
        assert {f"ours {label}: training tokens/s", f"ours {label}: peak RSS, training, MB"} <= rows.keys()


def test_report_from_renders_a_finished_run_without_measuring(tmp_path, capsys):
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Results\n\n## Load\n\nkept\n", encoding="utf-8")
    assert main(["--report-from", str(RESULTS_FIXTURE), "--results", str(results_md), "--work", str(tmp_path / "w")]) == 0
    printed = capsys.readouterr().out
    written = results_md.read_text(encoding="utf-8")
    assert "| test set, beam 5, sentences/s, int8 (whole command)" in printed
    assert suite.SECTION_HEADING in written and "## Load\n\nkept" in written
    assert not (tmp_path / "w").exists()  # nothing was measured
    with pytest.raises(SystemExit):
        parse_args(["--report-from", str(tmp_path / "absent.json")])
    capsys.readouterr()
    for name, text in (("broken.json", "{not json"), ("other.json", '{"mode": "full"}')):
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert main(["--report-from", str(tmp_path / name), "--no-write-results"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a results.json written by benchmarks/run.py" in err, err
