"""File helpers: path-or-URL resolution and atomic writes."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from translator.io import atomic_write, atomic_write_bytes, atomic_write_text, resolve_location  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# resolve_location


def test_plain_paths_are_returned_as_paths(tmp_path):
    assert resolve_location("data/train.tsv") == Path("data/train.tsv")
    assert resolve_location("/abs/dir/file.tsv") == Path("/abs/dir/file.tsv")
    assert resolve_location(tmp_path / "x.tsv") == tmp_path / "x.tsv"
    assert isinstance(resolve_location("a"), Path)


def test_plain_paths_are_not_url_decoded():
    assert resolve_location("data/a%20b.tsv") == Path("data/a%20b.tsv")
    assert resolve_location("말뭉치/훈련.tsv") == Path("말뭉치/훈련.tsv")


def test_home_directory_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_location("~/corpus.tsv") == tmp_path / "corpus.tsv"


def test_file_urls_become_local_paths():
    assert resolve_location("file:///data/train.tsv") == Path("/data/train.tsv")
    assert resolve_location("file://localhost/data/train.tsv") == Path("/data/train.tsv")


def test_file_urls_are_percent_decoded():
    assert resolve_location("file:///data/my%20corpus.tsv") == Path("/data/my corpus.tsv")
    assert resolve_location("file:///data/%ED%95%9C%EA%B5%AD%EC%96%B4.tsv") == Path("/data/한국어.tsv")
    assert resolve_location("file:///data/100%25.tsv") == Path("/data/100%.tsv")


def test_a_file_url_reads_the_same_file_as_its_path(tmp_path):
    target = tmp_path / "my corpus.tsv"
    target.write_text("hello\t안녕\n", encoding="utf-8")
    resolved = resolve_location(target.as_uri())
    assert target.as_uri().count("%20") == 1
    assert resolved == target
    assert resolved.read_text(encoding="utf-8") == "hello\t안녕\n"


@pytest.mark.parametrize(
    "url,scheme",
    [
        ("http://example.com/corpus.tsv", "http"),
        ("https://example.com/corpus.tsv", "https"),
        ("HTTPS://example.com/corpus.tsv", "https"),
        ("ftp://example.com/corpus.tsv", "ftp"),
        ("s3://bucket/corpus.tsv", "s3"),
    ],
)
def test_remote_urls_are_refused(url, scheme):
    with pytest.raises(ValueError) as info:
        resolve_location(url)
    message = str(info.value)
    assert url in message and scheme in message.lower() and "\n" not in message


def test_file_urls_on_other_hosts_are_refused():
    with pytest.raises(ValueError, match="local"):
        resolve_location("file://fileserver/share/corpus.tsv")


def test_windows_drive_letters_are_not_mistaken_for_schemes():
    assert resolve_location("C:/data/train.tsv") == Path("C:/data/train.tsv")


# ---------------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_write_creates_and_replaces(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, lambda handle: handle.write(b"first"))
    assert path.read_bytes() == b"first"
    atomic_write(str(path), lambda handle: handle.write(b"second, longer"))
    assert path.read_bytes() == b"second, longer"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_creates_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(path, "안녕하세요\n")
    assert path.read_bytes() == "안녕하세요\n".encode("utf-8")


def test_atomic_write_bytes_and_text(tmp_path):
    atomic_write_bytes(tmp_path / "b", b"\x00\xff")
    atomic_write_text(tmp_path / "t", "é\n")
    assert (tmp_path / "b").read_bytes() == b"\x00\xff"
    assert (tmp_path / "t").read_bytes() == b"\xc3\xa9\n"


def test_writer_that_raises_leaves_old_content_and_no_temp_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old content", encoding="utf-8")

    def fails_halfway(handle):
        handle.write(b"new but incomp")
        handle.flush()
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(path, fails_halfway)
    assert path.read_text(encoding="utf-8") == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_interrupt_during_write_also_cleans_up(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"good")

    def interrupted(handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_failed_first_write_creates_nothing(tmp_path):
    path = tmp_path / "new.txt"

    def fails(handle):
        raise OSError("no space left")

    with pytest.raises(OSError):
        atomic_write(path, fails)
    assert list(tmp_path.iterdir()) == []


def test_temp_file_lives_next_to_the_target(tmp_path):
    """The rename is only atomic within one file system, so the temp file must be in the same directory;
    readers of the target never see it half-written."""
    path = tmp_path / "sub" / "out.txt"
    path.parent.mkdir()
    path.write_bytes(b"old")
    during = []

    def spy(handle):
        handle.write(b"new")
        handle.flush()
        during.append((sorted(p.name for p in path.parent.iterdir()), path.read_bytes()))

    atomic_write(path, spy)
    names, content_during = during[0]
    assert content_during == b"old"
    assert len(names) == 2 and "out.txt" in names  # the temp file sits beside the target
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]
    assert path.read_bytes() == b"new"


def test_atomic_write_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o644
