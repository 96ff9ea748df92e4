"""Generates the Python protocol modules from protos/ (needs grpcio-tools).

The generated modules import each other as `buildr.common.v1...`, `google.rpc...`; they are
rewritten to `buildr_podman._protos.buildr...` so that the generated code lives inside our
package instead of claiming top-level names (`google.rpc` and `google.longrunning` are
googleapis-common-protos's, and BuildGrid has its own copies of them all: they must never be
the modules our process loads). Every `google.*` package under protos/ is rewritten;
`google.protobuf` is protobuf's own and stays.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parents[1]
PROTO_ROOT = REPO_ROOT / "protos"
IMPORT_PREFIX = "buildr_podman._protos."


def proto_sources() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto into out_dir."""
    from grpc_tools import protoc  # only needed by developers regenerating

    # grpc_tools ships google/protobuf/*.proto (Duration, Timestamp, ... of the REAPI messages)
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as raw:
        args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={raw}", f"--pyi_out={raw}",
                f"--grpc_python_out={raw}", *map(str, proto_sources())]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed; see the message above")
        written = []
        for source in sorted(Path(raw).rglob("*.py*")):
            target = out_dir / source.relative_to(raw)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_rewrite_imports(source.read_text()))
            written.append(target)
    for package_dir in {p.parent for p in written} | {q for p in written for q in p.parents
                                                      if out_dir in q.parents}:
        (package_dir / "__init__.py").touch()
    return written


#: the google.* packages protos/ holds (google.protobuf is not among them)
OWN_GOOGLE_PACKAGES = ("rpc", "bytestream", "longrunning", "devtools")


def _rewrite_imports(code: str) -> str:
    google = "|".join(OWN_GOOGLE_PACKAGES)
    return re.sub(rf"^from ((?:buildr|build)\.|google\.(?:{google})\b)",
                  lambda match: f"from {IMPORT_PREFIX}{match.group(1)}", code, flags=re.M)


def main() -> int:
    for path in generate(PACKAGE_ROOT):
        print(path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
