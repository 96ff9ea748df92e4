"""The cache of parsed HCL: a hit gives back exactly what the parser gave, a miss parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildr_podman import hcl_cache
from buildr_podman.errors import ConfigError
from buildr_podman.hcl import HclFile

TEXT = '''
locals { names = ["a", "b"] }
task "script" "hello" {
  container { image = "img" }
  environment = { N = 1, F = 1.5, ON = true, NONE = null }
  script = <<-EOT
    echo hi
  EOT
}
'''


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return hcl_cache.cache_dir()


def read(tmp_path: Path, text: str) -> HclFile:
    (tmp_path / ".buildr").mkdir(exist_ok=True)
    path = tmp_path / ".buildr" / "tasks.hcl"
    path.write_text(text)
    return HclFile.read(path, tmp_path)


class CountingParser:
    def __init__(self, text: str) -> None:
        self.calls = 0
        self.text = text

    def __call__(self):  # type: ignore[no-untyped-def]
        from buildr_podman.hcl import _parse

        self.calls += 1
        return _parse(self.text, "tasks.hcl")


def test_a_second_read_is_a_hit_equal_to_the_parse() -> None:
    parser = CountingParser(TEXT)
    first = hcl_cache.parse_cached(TEXT, parser)
    second = hcl_cache.parse_cached(TEXT, parser)
    assert parser.calls == 1
    assert second == first
    assert second.blocks_of("task")[0].attributes["environment"].value == {
        "N": 1, "F": 1.5, "ON": True, "NONE": None}


def test_another_text_is_a_miss() -> None:
    parser = CountingParser(TEXT)
    hcl_cache.parse_cached(TEXT, parser)
    other = TEXT.replace('"img"', '"other"')
    parsed = hcl_cache.parse_cached(other, CountingParser(other))
    assert parsed.blocks_of("task")[0].blocks[0].attributes["image"].value == "other"


def test_a_corrupt_entry_is_parsed_again_and_replaced(own_cache: Path) -> None:
    parser = CountingParser(TEXT)
    good = hcl_cache.parse_cached(TEXT, parser)
    (entry,) = own_cache.glob("*.json")
    entry.write_text('{"type": "", "labels": [')
    assert hcl_cache.parse_cached(TEXT, parser) == good
    assert parser.calls == 2
    assert hcl_cache.parse_cached(TEXT, parser) == good
    assert parser.calls == 2


def test_an_unwritable_cache_still_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    parser = CountingParser(TEXT)
    assert hcl_cache.parse_cached(TEXT, parser) == hcl_cache.parse_cached(TEXT, parser)
    assert parser.calls == 2


def test_an_error_is_never_cached_and_keeps_its_position(tmp_path: Path) -> None:
    broken = 'task "script" "x" {\n  script = "a"\n  script = "b"\n}\n'
    for _ in range(2):
        with pytest.raises(ConfigError) as raised:
            read(tmp_path, broken)
        assert raised.value.line == 3


def test_entries_beyond_the_limit_are_pruned(own_cache: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hcl_cache, "MAX_ENTRIES", 3)
    for number in range(6):
        text = f'task "script" "t{number}" {{\n  script = "true"\n}}\n'
        hcl_cache.parse_cached(text, CountingParser(text))
    assert len(list(own_cache.glob("*.json"))) == 3


def test_reading_a_file_goes_through_the_cache(tmp_path: Path, own_cache: Path) -> None:
    first = read(tmp_path, TEXT)
    assert len(list(own_cache.glob("*.json"))) == 1
    assert read(tmp_path, TEXT).body == first.body


def test_clean_all_removes_the_cache(own_cache: Path) -> None:
    from buildr_podman.commands.clean import _remove_parse_cache

    hcl_cache.parse_cached(TEXT, CountingParser(TEXT))
    assert _remove_parse_cache() is True
    assert not own_cache.exists()
    assert _remove_parse_cache() is False
