"""`python -m buildr_podman.s2`: compress stdin to stdout as S2, or decompress with -d."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import BinaryIO

from ..errors import CodecError
from ._format import DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE
from ._io import S2Reader, S2Writer

_COPY_SIZE = 1 << 20
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20}


def _block_size(text: str) -> int:
    """Parse sizes like the reference tool's -blocksize: 65536, 64K, 4M."""
    unit = text[-1:].upper() if text[-1:].isalpha() else ""
    try:
        size = int(text[:len(text) - len(unit)]) * _SUFFIXES[unit]
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if not 1 <= size <= MAX_BLOCK_SIZE:
        raise argparse.ArgumentTypeError(f"block size must be 1 to {MAX_BLOCK_SIZE} bytes")
    return size


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m buildr_podman.s2",
        description="Compress standard input to standard output in the S2 stream format.")
    parser.add_argument("-d", "--decompress", action="store_true",
                        help="decompress an S2 or Snappy-framed stream instead")
    parser.add_argument("--blocksize", type=_block_size, default=DEFAULT_BLOCK_SIZE,
                        help="uncompressed bytes per block, e.g. 64K or 4M (default 1M)")
    parser.add_argument("--store", action="store_true",
                        help="store blocks uncompressed (still a valid S2 stream)")
    return parser


def _run(args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO) -> None:
    if args.decompress:
        with S2Reader(stdin) as reader:
            shutil.copyfileobj(reader, stdout, _COPY_SIZE)  # type: ignore[misc]
    else:
        with S2Writer(stdout, args.blocksize, compress=not args.store) as writer:
            shutil.copyfileobj(stdin, writer, _COPY_SIZE)
    stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the tool; errors become one `s2: ...` line on stderr and exit status 1."""
    args = _parser().parse_args(argv)
    try:
        _run(args, sys.stdin.buffer, sys.stdout.buffer)
    except CodecError as err:
        print(f"s2: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): nothing to report, but stop quietly,
        # including the flush Python attempts at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:
        print(f"s2: {err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
