"""The header offsets are kept between starts, for the headers they were found in only."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from exporter.headers import CACHE_FILE, HeadersSource, cache_dir, cache_offsets, cached_offsets

OFFSETS = {"task_struct.pid": 2416, "request.q": None}


@pytest.fixture
def source(tmp_path: Path) -> HeadersSource:
    (tmp_path / "headers" / "include").mkdir(parents=True)
    return HeadersSource(str(tmp_path / "headers"), "6.1.0-56-amd64", "6.18.44")


def test_offsets_come_back_for_the_same_headers(source: HeadersSource, tmp_path: Path):
    cache = tmp_path / "cache"
    assert cached_offsets(source, directory=cache) is None
    cache_offsets(source, OFFSETS, directory=cache)
    assert cached_offsets(source, directory=cache) == OFFSETS
    assert (cache.stat().st_mode & 0o777, (cache / CACHE_FILE).stat().st_mode & 0o777) == (
        0o700,
        0o600,
    )


def test_other_headers_or_fields_miss(source: HeadersSource, tmp_path: Path):
    cache = tmp_path / "cache"
    cache_offsets(source, OFFSETS, directory=cache)
    other = dataclasses.replace(source, release="6.1.0-57-amd64")
    assert cached_offsets(other, directory=cache) is None
    assert cached_offsets(source, [("task_struct", "pid")], directory=cache) is None
    # A package upgrade replaces files under include/: the directory's mtime moves.
    include = Path(source.path) / "include"
    os.utime(include, ns=(0, include.stat().st_mtime_ns + 1))
    assert cached_offsets(source, directory=cache) is None


def test_a_cache_file_others_could_write_is_not_trusted(source: HeadersSource, tmp_path: Path):
    cache = tmp_path / "cache"
    cache_offsets(source, OFFSETS, directory=cache)
    (cache / CACHE_FILE).chmod(0o622)
    assert cached_offsets(source, directory=cache) is None


def test_an_unwritable_or_garbled_cache_is_no_cache(source: HeadersSource, tmp_path: Path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    cache_offsets(source, OFFSETS, directory=blocked / "cache")  # no error: just not kept
    assert cached_offsets(source, directory=blocked / "cache") is None
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    for garbage in ("not json", "[]", '{"key": 1}'):
        (cache / CACHE_FILE).write_text(garbage)
        assert cached_offsets(source, directory=cache) is None


def test_systemd_names_the_cache_directory(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/bcc_exporter_a:/var/cache/other")
    assert cache_dir() == Path("/var/cache/bcc_exporter_a")
    monkeypatch.delenv("CACHE_DIRECTORY")
    assert cache_dir() == Path("/var/cache/bcc_exporter")
