"""The built-in `script` module type, in every category: a shell script, or lines that must each succeed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from buildr_podman.hookspecs import hookimpl
from buildr_podman.model import CATEGORIES
from buildr_podman.moduletype import ModuleSpecError, ModuleType

__all__ = ["SCRIPT_TYPES", "buildr_module_types", "expand_script"]

EXAMPLE = '''{category} "script" "hello" {{
  container {{
    image = "localhost/buildr-gcc:bookworm"
  }}
  script = <<-EOT
    make
    ./hello > greeting.txt
  EOT
}}'''

EXAMPLE_INLINE = '''{category} "script" "lines" {{
  container {{ image = "localhost/buildr-busybox:latest" }}
  inline = ["mkdir -p out", "date > out/when.txt"]
}}'''


def expand_script(spec: Mapping[str, Any]) -> str:
    """`script` as written, or the `inline` lines under `set -e`; exactly one must be set."""
    script, inline = spec.get("script"), spec.get("inline")
    if (script is None) == (inline is None):
        raise ModuleSpecError('needs either script = "..." or inline = [...], '
                              "not both and not neither")
    if script is not None:
        return str(script)
    # Like Packer's inline: each line must succeed for the next to run.
    return "set -e\n" + "\n".join(list(inline or ()))


SCRIPT_TYPES = tuple(
    ModuleType(name="script", category=category,
               summary="a shell script, or inline lines that must each succeed",
               attributes={"script": "string", "inline": "list(string)"},
               expand=expand_script,
               examples=(EXAMPLE.format(category=category),
                         EXAMPLE_INLINE.format(category=category)))
    for category in CATEGORIES)


@hookimpl
def buildr_module_types() -> list[ModuleType]:
    return list(SCRIPT_TYPES)
