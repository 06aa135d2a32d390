"""The `translator` command, run in-process through `main()` and as a real subprocess."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from translator.checkpoint import load_checkpoint
from translator.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMMANDS = ["train", "translate", "evaluate"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("translator: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("translator")
    if script.exists():
        return [str(script)]
    found = shutil.which("translator")
    return [found] if found else [sys.executable, "-m", "translator"]


# ---------------------------------------------------------------------------------------------------
# help


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_of_every_command_exits_zero(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: translator")
    if command:
        assert command[0] in out.splitlines()[0]


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# translate


def test_translate_text_arguments_one_line_each(capsys, trained_model):
    pairs = trained_model.pairs[:4]
    code, out, err = run(capsys, "translate", *[en for en, _ in pairs], "--model", trained_model.path,
                         "--source", "en", "--target", "ko", "--beam", "1")
    assert code == 0
    assert out.splitlines() == [ko for _, ko in pairs]


def test_translate_stdin_lines_skipping_blank_ones(capsys, monkeypatch, trained_model):
    pairs = trained_model.pairs[10:13]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(ko + "\n" for _, ko in pairs) + "\n  \n"))
    code, out, _ = run(capsys, "translate", "--model", trained_model.path, "--source", "ko", "--target", "en")
    assert code == 0
    assert out.splitlines() == [en for en, _ in pairs]


def test_translate_jsonl_records_parse_as_json(capsys, trained_model):
    code, out, _ = run(capsys, "translate", "water", "big house", "--model", trained_model.path,
                       "--source", "en", "--target", "ko", "--format", "jsonl")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["source"] for r in records] == ["water", "big house"]
    assert [r["text"] for r in records] == ["물", "큰 집"]
    for record in records:
        assert isinstance(record["score"], float) and isinstance(record["alternatives"], list)
        assert "alignment" not in record

    code, out, _ = run(capsys, "translate", "water", "--model", trained_model.path, "--source", "en", "--target", "ko",
                       "--format", "jsonl", "--alignment")
    [record] = [json.loads(line) for line in out.splitlines()]
    assert len(record["alignment"]) == len(record["target_tokens"])
    assert all(len(row) == len(record["source_tokens"]) for row in record["alignment"])


def test_translate_n_best_prints_index_text_score_lines(capsys, trained_model):
    sources = ["hot coffee", "mountain"]
    code, out, _ = run(capsys, "translate", *sources, "--model", trained_model.path, "--source", "en", "--target", "ko",
                       "--n-best", "3")
    assert code == 0
    lines = [line.split(" ||| ") for line in out.splitlines()]
    assert all(len(fields) == 3 for fields in lines)
    indices = [int(fields[0]) for fields in lines]
    assert indices == sorted(indices) and set(indices) == {0, 1}
    for i, expected in enumerate(["뜨거운 커피", "산"]):
        group = [fields for fields in lines if int(fields[0]) == i]
        assert 1 <= len(group) <= 3
        assert group[0][1] == expected  # the best first
        scores = [float(fields[2]) for fields in group]
        assert scores == sorted(scores, reverse=True)
        assert len({fields[1] for fields in group}) == len(group)


def test_translate_plot_attention_writes_one_png_per_input(capsys, trained_model, tmp_path):
    plots = tmp_path / "plots"
    code, out, _ = run(capsys, "translate", "red car", "차가운 물", "--model", trained_model.path,
                       "--source", "en", "--target", "ko", "--plot-attention", plots)
    assert code == 0 and len(out.splitlines()) == 2
    files = sorted(p.name for p in plots.iterdir())
    assert files == ["attention-0.png", "attention-1.png"]
    for name in files:
        assert (plots / name).read_bytes()[:8] == PNG_MAGIC


def test_translate_console_script_reads_stdin_in_a_subprocess(trained_model, tmp_path):
    pairs = trained_model.pairs[20:23]
    proc = subprocess.run(
        [*console_script(), "translate", "--model", str(trained_model.path), "--source", "en", "--target", "ko", "--beam", "1"],
        input="".join(en + "\n" for en, _ in pairs), capture_output=True, text=True, encoding="utf-8",
        env=subprocess_env(), cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [ko for _, ko in pairs]
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------------
# evaluate


def test_evaluate_test_file_scores_both_directions_in_one_call(capsys, trained_model, tsv, tmp_path):
    test = tsv(tmp_path / "test.tsv", trained_model.pairs[:12])
    report_path = tmp_path / "out" / "report.json"
    code, out, _ = run(capsys, "evaluate", "--model", trained_model.path, "--test", test, "--beam", "2",
                       "--output", report_path)
    assert code == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert set(report["directions"]) == {"en-ko", "ko-en"}
    for direction, result in report["directions"].items():
        assert {"bleu", "chrf", "bleu_signature", "chrf_signature", "sentences", "hypotheses"} <= result.keys()
        assert result["sentences"] == 12
        hyp_path = tmp_path / "out" / f"report.{direction}.hyp"
        assert Path(result["hypotheses"]) == hyp_path
        assert len(hyp_path.read_text(encoding="utf-8").splitlines()) == 12
        # Memorised pairs; chrF, because corpus BLEU of one- and two-word lines has no 4-grams and is 0.
        assert result["chrf"] > 80
        assert f"{direction}: BLEU {result['bleu']:.2f}" in out
        assert result["bleu_signature"] in out
    assert f"report: {report_path}" in out


def test_evaluate_src_ref_files(capsys, trained_model, tmp_path):
    pairs = trained_model.pairs[5:15]
    (tmp_path / "src.txt").write_text("".join(en + "\n" for en, _ in pairs), encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(ko + "\n" for _, ko in pairs), encoding="utf-8")
    report_path = tmp_path / "eval.json"
    code, out, _ = run(capsys, "evaluate", "--model", trained_model.path, "--src", tmp_path / "src.txt",
                       "--ref", tmp_path / "ref.txt", "--source", "en", "--target", "ko", "--output", report_path)
    assert code == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert list(report["directions"]) == ["en-ko"]
    assert report["directions"]["en-ko"]["sentences"] == 10
    assert (tmp_path / "eval.en-ko.hyp").is_file()


# ---------------------------------------------------------------------------------------------------
# train


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_train_then_resume_via_cli(capsys, make_config_dict, tmp_path):
    config = make_config_dict(training={"max_steps": 6, "validate_every": 3, "save_every": 3,
                                                                   "log_every": 3})
    first = write_yaml(tmp_path / "tiny.yaml", config)
    output = tmp_path / "run"
    code, out, _ = run(capsys, "train", "--config", first, "--output", output)
    assert code == 0
    assert "done (max_steps) after 6 steps" in out
    assert load_checkpoint(output / "last.pt")["training"]["state"]["step"] == 6
    for name in ("best.pt", "config.yaml", "metrics.jsonl", "summary.json", "training_curves.png"):
        assert (output / name).is_file(), name

    config["training"]["max_steps"] = 9
    longer = write_yaml(tmp_path / "longer.yaml", config)
    code, out, _ = run(capsys, "train", "--config", longer, "--resume", output / "last.pt")
    assert code == 0  # --output defaults to the resumed checkpoint's directory
    assert "done (max_steps) after 9 steps" in out
    assert load_checkpoint(output / "last.pt")["training"]["state"]["step"] == 9
    assert json.loads((output / "summary.json").read_text(encoding="utf-8"))["steps"] == 9

    config["model"]["cell"] = "gru"
    changed = write_yaml(tmp_path / "changed.yaml", config)
    code, _, err = run(capsys, "train", "--config", changed, "--resume", output / "last.pt")
    assert_user_error(code, err, "model.cell", "only training settings may change")


# ---------------------------------------------------------------------------------------------------
# user errors: exit code 2, one line on stderr, no traceback


def test_missing_model_file(capsys, tmp_path):
    code, _, err = run(capsys, "translate", "water", "--model", tmp_path / "nope.pt", "--source", "en", "--target", "ko")
    assert_user_error(code, err, "nope.pt", "no such checkpoint")


@pytest.mark.parametrize("kind", ["text", "binary", "truncated"])
def test_corrupt_model_file(capsys, trained_model, tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "text":
        path.write_bytes(b"this is not a checkpoint\n" * 40)
    elif kind == "binary":
        path.write_bytes(b"\x80\x02J")  # a pickle opcode cut short
    else:
        data = trained_model.path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "translate", "water", "--model", path, "--source", "en", "--target", "ko")
    assert_user_error(code, err, "model.pt", "not a readable checkpoint")


def test_config_with_unknown_cell(capsys, make_config_dict, tmp_path):
    config = write_yaml(tmp_path / "bad.yaml", make_config_dict(model={"cell": "lstmm"}))
    code, _, err = run(capsys, "train", "--config", config, "--output", tmp_path / "run")
    assert_user_error(code, err, "model.cell", "'lstmm' is not one of rnn, lstm, gru")
    assert not (tmp_path / "run").exists()


def test_missing_config_file(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--config", tmp_path / "missing.yaml", "--output", tmp_path / "run")
    assert_user_error(code, err, "missing.yaml", "cannot read config")


def test_test_file_with_bad_utf8(capsys, trained_model, tmp_path):
    test = tmp_path / "bad.tsv"
    test.write_bytes("water\t물\n".encode("utf-8") + b"bread\t\xff\xfe\n")
    code, _, err = run(capsys, "evaluate", "--model", trained_model.path, "--test", test, "--output", tmp_path / "r.json")
    assert_user_error(code, err, "bad.tsv line 2", "not valid UTF-8")
    assert not (tmp_path / "r.json").exists()


def test_src_and_ref_with_different_line_counts(capsys, trained_model, tmp_path):
    (tmp_path / "src.txt").write_text("water\nbread\nmilk\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("물\n빵\n", encoding="utf-8")
    code, _, err = run(capsys, "evaluate", "--model", trained_model.path, "--src", tmp_path / "src.txt",
                       "--ref", tmp_path / "ref.txt", "--source", "en", "--target", "ko", "--output", tmp_path / "r.json")
    assert_user_error(code, err, "3 lines", "has 2")


def test_source_without_target(capsys, trained_model, tsv, tmp_path):
    test = tsv(tmp_path / "t.tsv", trained_model.pairs[:3])
    code, _, err = run(capsys, "evaluate", "--model", trained_model.path, "--test", test, "--source", "en",
                       "--output", tmp_path / "r.json")
    assert_user_error(code, err, "both --source and --target")


def test_unsupported_direction(capsys, en_ko_only_model, tsv, tmp_path):
    code, _, err = run(capsys, "translate", "물", "--model", en_ko_only_model, "--source", "ko", "--target", "en")
    assert_user_error(code, err, "trained for en-ko, not ko-en")
    code, _, err = run(capsys, "translate", "water", "--model", en_ko_only_model, "--source", "en", "--target", "en")
    assert_user_error(code, err, "both 'en'")
    test = tsv(tmp_path / "t.tsv", [("water", "물")])
    code, _, err = run(capsys, "evaluate", "--model", en_ko_only_model, "--test", test, "--source", "ko",
                       "--target", "en", "--output", tmp_path / "r.json")
    assert_user_error(code, err, "not ko-en")


def test_user_error_in_a_subprocess_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "translator", "evaluate", "--model", str(tmp_path / "absent.pt"), "--test", "x.tsv"],
        capture_output=True, text=True, encoding="utf-8", env=subprocess_env(), cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_user_error(proc.returncode, proc.stderr, "absent.pt")


def test_average_writes_a_model_that_translates_and_refuses_a_single_checkpoint(capsys, trained_model, tmp_path):
    sources = sorted(trained_model.path.parent.glob("step-*.pt"))[-2:]
    code, out, _ = run(capsys, "average", *sources, "--output", tmp_path / "avg.pt")
    assert code == 0 and "the mean of 2 checkpoints" in out
    # A step given twice (as best.pt or last.pt often is) is averaged once, and the message says so.
    code, out, _ = run(capsys, "average", *sources, sources[-1], "--output", tmp_path / "avg3.pt")
    assert code == 0 and "the mean of 2 checkpoints (steps " in out, out
    code, out, _ = run(capsys, "translate", "--model", tmp_path / "avg.pt", "--source", "en", "--target", "ko",
                       trained_model.pairs[0][0])
    assert code == 0 and out.strip()
    code, _, err = run(capsys, "average", sources[0], "--output", tmp_path / "one.pt")
    assert_user_error(code, err, "at least two")


def test_translate_and_evaluate_accept_quantize_int8(capsys, trained_model, tmp_path):
    en, ko = trained_model.pairs[0]
    code, out, _ = run(capsys, "translate", "--model", trained_model.path, "--quantize", "int8",
                       "--source", "en", "--target", "ko", "--format", "jsonl", en)
    assert code == 0 and out.strip()
    test = tmp_path / "test.tsv"
    test.write_text("".join(f"{e}\t{k}\n" for e, k in trained_model.pairs[:10]), encoding="utf-8")
    code, out, _ = run(capsys, "evaluate", "--model", trained_model.path, "--quantize", "int8", "--test", test,
                       "--beam", "1", "--output", tmp_path / "eval.json")
    assert code == 0
    assert json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))["model_id"].endswith("+int8")
