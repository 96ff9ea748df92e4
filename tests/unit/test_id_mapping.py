"""Files whose owner or group rootless Podman cannot map: found, named, with the fix."""

from __future__ import annotations

import os
from pathlib import Path

from buildr_podman.podman.id_mapping import explain_unmapped, mapped_ids, unmapped_files


def test_the_mapped_ids_are_ones_own_and_the_subordinate_ranges(tmp_path: Path) -> None:
    listing = tmp_path / "subuid"
    listing.write_text("alice:100000:65536\nbob:200000:10\nbroken line\n")
    assert mapped_ids(str(listing), 1000, "alice") == [range(1000, 1001),
                                                       range(100000, 165536)]
    assert mapped_ids(str(tmp_path / "missing"), 7, "alice") == [range(7, 8)]


def test_unmapped_files_are_named_outside_the_tools_own_directories(tmp_path: Path) -> None:
    for rel in ("src/a.c", "src/b.c", ".buildr/out/t/x", ".git/HEAD", "top"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    mine = os.getuid(), os.getgid()
    nobody_maps_mine = ([range(mine[0] + 1, mine[0] + 2)], [range(mine[1], mine[1] + 1)])
    found, total = unmapped_files(tmp_path, limit=2, mapped=nobody_maps_mine)
    assert total == 4  # src, src/a.c, src/b.c and top: .buildr/ and .git/ are skipped
    assert len(found) == 2
    assert unmapped_files(tmp_path, mapped=([range(mine[0], mine[0] + 1)],
                                            [range(mine[1], mine[1] + 1)])) == ([], 0)
    line = explain_unmapped(found, total)
    assert f"(uid {mine[0]}, gid {mine[1]})" in line and "and 2 more" in line
    assert "Value too large for defined data type" in line and 'inputs = "copy"' in line
