"""Checkpoints: round trip, safe loading, atomic writes and readable errors for bad files."""

from __future__ import annotations

import random
import struct
import sys
import zipfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from translator.checkpoint import FORMAT, FORMAT_VERSION, CheckpointError, load_checkpoint, load_weights, save_checkpoint  # noqa: E402
from translator.config import Config, config_from_dict  # noqa: E402
from translator.model import build_model  # noqa: E402

TOKENIZER = bytes(range(256)) * 3 + "한국어 ▁piece".encode("utf-8")  # arbitrary binary, like a sentencepiece proto


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config() -> Config:
    return config_from_dict(
        {
            "name": "ckpt-test",
            "data": {"train": ["train.tsv"]},
            "model": {"cell": "gru", "embedding": 8, "hidden": 8, "encoder_layers": 1, "decoder_layers": 1},
            "training": {"betas": [0.8, 0.9]},
        }
    )


def tiny_model(seed: int = 0):
    return build_model(tiny_config().model, 40, 0, seed=seed)


def training_state(model) -> dict:
    """What the trainer stores for --resume: optimizer, scheduler, counters and RNG states."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.tensor([[5, 6, 7]]), torch.tensor([3]), torch.tensor([[1, 8]]))[0].sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": {"step": 12, "epoch": 1, "best_bleu": 3.5, "best_checkpoints": [[3.5, 12, "step-0000012.pt"]]},
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
    }


def save_good(path: Path, seed: int = 0, metrics=None):
    model = tiny_model(seed)
    config = tiny_config().to_dict()
    save_checkpoint(path, model.state_dict(), config, TOKENIZER, training_state(model), metrics or {"step": 12, "bleu": 3.5})
    return model, config


def assert_one_line_error(path: Path, match: str | None = None) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message
    if match is not None:
        assert match in message, message
    return message


# ---------------------------------------------------------------------------------------------------
# round trip


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "model.pt"
    model, config = save_good(path)
    payload = load_checkpoint(path)
    assert payload["format"] == FORMAT and payload["format_version"] == FORMAT_VERSION
    assert payload["tokenizer"] == TOKENIZER
    assert payload["config"] == config
    assert config_from_dict(payload["config"]) == tiny_config()
    assert payload["metrics"] == {"step": 12, "bleu": 3.5}
    state = model.state_dict()
    assert payload["model"].keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(payload["model"][name], tensor), name
    # The weights load into a fresh model of the same config, which then computes the same thing.
    fresh = tiny_model(seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), state.values()))
    fresh.load_state_dict(payload["model"])
    src, lengths, tgt = torch.tensor([[4, 5, 6]]), torch.tensor([3]), torch.tensor([[1, 7, 8]])
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(src, lengths, tgt)[0], model(src, lengths, tgt)[0])


def test_training_state_round_trips_and_restores(tmp_path):
    path = tmp_path / "resume.pt"
    model = tiny_model()
    training = training_state(model)
    save_checkpoint(path, model.state_dict(), tiny_config().to_dict(), TOKENIZER, training)
    loaded = load_checkpoint(path)["training"]
    assert loaded["state"] == training["state"]
    assert torch.equal(loaded["rng"]["torch"], training["rng"]["torch"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    optimizer.load_state_dict(loaded["optimizer"])
    for saved, restored in zip(training["optimizer"]["state"].values(), optimizer.state_dict()["state"].values()):
        assert torch.equal(saved["exp_avg"], restored["exp_avg"])
    torch.set_rng_state(loaded["rng"]["torch"])
    a = torch.rand(3)
    torch.set_rng_state(training["rng"]["torch"])
    assert torch.equal(a, torch.rand(3))


def test_inference_only_checkpoint_has_no_training_state_and_empty_metrics(tmp_path):
    path = tmp_path / "infer.pt"
    model = tiny_model()
    save_checkpoint(path, model.state_dict(), tiny_config().to_dict(), TOKENIZER)
    payload = load_checkpoint(path)
    assert payload["training"] is None
    assert payload["metrics"] == {}


def test_file_loads_with_plain_weights_only_torch_load(tmp_path):
    path = tmp_path / "model.pt"
    model, _ = save_good(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format"] == FORMAT
    assert payload["tokenizer"] == TOKENIZER
    assert torch.equal(payload["model"]["output.weight"], model.state_dict()["output.weight"])


def test_save_accepts_str_paths_and_overwrites(tmp_path):
    path = tmp_path / "model.pt"
    save_good(path, seed=0, metrics={"step": 1})
    save_good(str(path), seed=1, metrics={"step": 2})
    assert load_checkpoint(str(path))["metrics"] == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_save_creates_missing_directories(tmp_path):
    path = tmp_path / "runs" / "a" / "best.pt"
    save_good(path)
    assert load_checkpoint(path)["tokenizer"] == TOKENIZER


# ---------------------------------------------------------------------------------------------------
# atomic saves


def test_failed_save_keeps_the_previous_checkpoint_when_torch_save_dies_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    model, _ = save_good(path, metrics={"step": 1})
    good_bytes = path.read_bytes()

    def dies_mid_write(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip file")
        handle.flush()
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, tiny_model(seed=5).state_dict(), tiny_config().to_dict(), TOKENIZER, metrics={"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == good_bytes
    payload = load_checkpoint(path)
    assert payload["metrics"] == {"step": 1}
    assert torch.equal(payload["model"]["output.weight"], model.state_dict()["output.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file left behind


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot serialise this")


def test_failed_save_keeps_the_previous_checkpoint_when_serialisation_raises(tmp_path):
    path = tmp_path / "model.pt"
    save_good(path, metrics={"step": 1})
    good_bytes = path.read_bytes()
    bad_state = dict(tiny_model(seed=5).state_dict())
    bad_state["zzz"] = Unpicklable()  # serialised after the real tensors
    with pytest.raises(RuntimeError, match="cannot serialise"):
        save_checkpoint(path, bad_state, tiny_config().to_dict(), TOKENIZER)
    assert path.read_bytes() == good_bytes
    assert load_checkpoint(path)["metrics"] == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_failed_first_save_leaves_nothing(tmp_path):
    path = tmp_path / "model.pt"
    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"w": Unpicklable()}, {}, TOKENIZER)
    assert list(tmp_path.iterdir()) == []
    assert_one_line_error(path, "no such checkpoint")


# ---------------------------------------------------------------------------------------------------
# bad files


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path):
    good = tmp_path / "good.pt"
    save_good(good)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 100):
        path = tmp_path / f"cut-{cut}.pt"
        path.write_bytes(data[:cut])
        assert_one_line_error(path, "not a readable checkpoint")


def test_flipped_bytes_inside_the_weights_are_a_checkpoint_error(tmp_path):
    """torch.load does not check the archive's CRCs: damaged weights used to load as other numbers."""
    good = tmp_path / "good.pt"
    save_good(good)
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        member = next(info for info in archive.infolist() if "/data/" in info.filename and info.file_size >= 64)
        header = data[member.header_offset : member.header_offset + 30]
        name_length, extra_length = struct.unpack("<HH", header[26:30])  # the local header's own lengths
        start = member.header_offset + 30 + name_length + extra_length
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)  # what the guard is for: torch itself accepts the file
    assert_one_line_error(path, "checksum mismatch")


def test_weights_that_do_not_fit_the_model_are_a_checkpoint_error(tmp_path):
    other = build_model(config_from_dict({**tiny_config().to_dict(), "model": {**tiny_config().to_dict()["model"], "hidden": 12}}).model, 40, 0)
    for state in (other.state_dict(), {k: v for k, v in tiny_model().state_dict().items() if "encoder" not in k}):
        with pytest.raises(CheckpointError) as info:
            load_weights(tiny_model(), state, "some.pt")
        message = str(info.value)
        assert message.startswith("some.pt: the weights do not fit") and "\n" not in message, message


@pytest.mark.parametrize(
    "content",
    [bytes(random.Random(0).getrandbits(8) for _ in range(4096)), b"", b"hello, this is text\n"],
    ids=["random", "empty", "text"],
)
def test_garbage_files_are_checkpoint_errors(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    assert_one_line_error(path, "not a readable checkpoint")


def test_torch_file_without_our_format_marker_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": tiny_model().state_dict(), "config": {}, "tokenizer": TOKENIZER}, path)
    assert_one_line_error(path, FORMAT)
    plain = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), plain)  # not even a dict
    assert_one_line_error(plain, FORMAT)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, None, "1"])
def test_wrong_format_version_is_refused(tmp_path, version):
    path = tmp_path / "future.pt"
    payload = {"format": FORMAT, "format_version": version, "config": {}, "tokenizer": TOKENIZER, "model": {}}
    torch.save(payload, path)
    message = assert_one_line_error(path, "version")
    assert repr(version) in message or str(version) in message


@pytest.mark.parametrize("missing", ["config", "tokenizer", "model"])
def test_checkpoint_missing_a_part_is_refused(tmp_path, missing):
    path = tmp_path / "partial.pt"
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": {}, "tokenizer": TOKENIZER, "model": {}}
    del payload[missing]
    torch.save(payload, path)
    assert_one_line_error(path, missing)


def test_missing_path_and_directory_are_checkpoint_errors(tmp_path):
    assert_one_line_error(tmp_path / "nope.pt", "no such checkpoint")
    assert_one_line_error(tmp_path, "no such checkpoint")


def test_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "x": Exploit()}, path)
    message = assert_one_line_error(path, "not a readable checkpoint")
    assert not marker.exists()
    assert "open" in message  # the reason names what was refused, not just torch's generic advice


def test_export_drops_training_state_and_stores_fp16(tmp_path, trained_model):
    from translator.checkpoint import export_checkpoint
    from translator.prediction import Translator

    target = tmp_path / "exported.pt"
    export_checkpoint(trained_model.path, target, "float16")
    payload = load_checkpoint(target)
    assert payload["training"] is None
    assert all(v.dtype == torch.float16 for v in payload["model"].values() if v.is_floating_point())
    assert target.stat().st_size < 0.6 * trained_model.path.stat().st_size
    texts = [en for en, _ in trained_model.pairs[:20]]
    original = Translator.load(trained_model.path).translate(texts, "en", "ko", beam=1)
    exported = Translator.load(target).translate(texts, "en", "ko", beam=1)
    assert [r.text for r in exported] == [r.text for r in original]
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_checkpoint(trained_model.path, tmp_path / "x.pt", "int4")


def test_export_stores_tied_weights_once(tmp_path, trained_model):
    from translator.checkpoint import export_checkpoint

    target = tmp_path / "exported.pt"
    export_checkpoint(trained_model.path, target, "float16")
    model = load_checkpoint(target)["model"]
    assert model["output.weight"].data_ptr() == model["src_embed.weight"].data_ptr() == model["tgt_embed.weight"].data_ptr()


# ---------------------------------------------------------------------------------------------------
# averaging


def test_average_is_the_element_wise_mean_and_keeps_tied_weights_once(tmp_path, trained_model):
    from translator.checkpoint import average_checkpoints

    run = trained_model.path.parent
    sources = sorted(run.glob("step-*.pt"))[-2:] + [trained_model.path]
    assert len(sources) == 3
    target = tmp_path / "average.pt"
    average_checkpoints(sources, target)
    averaged = load_checkpoint(target)
    assert averaged["training"] is None
    weights = [load_checkpoint(path)["model"] for path in sources]
    for name, tensor in averaged["model"].items():
        expected = sum(w[name].double() for w in weights) / 3
        assert torch.allclose(tensor.double(), expected, atol=1e-6), name
    assert not torch.equal(averaged["model"]["output.weight"], weights[0]["output.weight"])
    model = averaged["model"]
    assert model["output.weight"].data_ptr() == model["src_embed.weight"].data_ptr()


def test_average_refuses_checkpoints_of_different_models(tmp_path, trained_model):
    from translator.checkpoint import average_checkpoints

    save_good(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="a different model or vocabulary"):
        average_checkpoints([trained_model.path, tmp_path / "other.pt"], tmp_path / "average.pt")
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([trained_model.path], tmp_path / "average.pt")
    assert not (tmp_path / "average.pt").exists()


def test_average_counts_identical_weights_once_and_keeps_the_latest_step(tmp_path, trained_model):
    from translator.checkpoint import average_checkpoints

    run = trained_model.path.parent
    steps = sorted(run.glob("step-*.pt"))[-2:]
    last_step = load_checkpoint(trained_model.path)["metrics"]["step"]
    copy = tmp_path / "copy-of-last.pt"
    copy.write_bytes(trained_model.path.read_bytes())
    distinct = {load_checkpoint(path)["metrics"]["step"] for path in [*steps, trained_model.path]}
    metrics = average_checkpoints([*steps, trained_model.path, copy], tmp_path / "average.pt")
    assert sorted(metrics["averaged_steps"]) == sorted(distinct)  # the copy of last.pt is not counted again
    assert metrics["step"] == max(metrics["averaged_steps"]) == last_step
    with pytest.raises(ValueError, match="at least two different checkpoints"):
        average_checkpoints([trained_model.path, copy], tmp_path / "again.pt")


def test_average_keeps_checkpoints_of_the_same_step_from_different_runs(tmp_path, trained_model):
    """Two fine-tuning runs of one model reach the same step numbers with different weights (a model
    soup): both count."""
    from translator.checkpoint import average_checkpoints

    payload = load_checkpoint(trained_model.path)
    other = {name: t + 0.5 if t.is_floating_point() else t for name, t in payload["model"].items()}
    save_checkpoint(tmp_path / "other-run.pt", other, payload["config"], payload["tokenizer"], None, payload["metrics"])
    metrics = average_checkpoints([trained_model.path, tmp_path / "other-run.pt"], tmp_path / "soup.pt")
    assert len(metrics["averaged_steps"]) == 2 and len(set(metrics["averaged_steps"])) == 1
    soup = load_checkpoint(tmp_path / "soup.pt")["model"]
    name = "src_embed.weight"
    assert torch.allclose(soup[name], payload["model"][name] + 0.25, atol=1e-6)
