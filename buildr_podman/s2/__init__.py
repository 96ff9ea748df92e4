"""S2 compression (klauspost/compress's extension of Snappy): streams in and out.

The agent sends changed files to the host as an S2 stream; this package reads
any S2 or Snappy-framed stream (repeat offsets, padding, seek index, several
streams back to back) and writes S2 streams of Snappy-compatible blocks, or of
stored blocks when compressing would cost more than it saves (compress=False).

    compress(data) / decompress(data)          whole streams in memory
    S2Encoder / S2Decoder                      incremental, no I/O (encode_frames: by chunk)
    S2Writer(sink) / S2Reader(source)          file objects (io.RawIOBase)

Corrupt or truncated input raises buildr_podman.errors.CodecError naming the
byte offset. Memory is bounded by the block size (MAX_BLOCK_SIZE at most).
"""

from ..errors import CodecError
from ._block import accelerated
from ._decoder import S2Decoder, decompress
from ._encoder import Frame, S2Encoder, compress
from ._format import DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, STREAM_IDENTIFIER
from ._io import S2Reader, S2Writer

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "MAX_BLOCK_SIZE",
    "STREAM_IDENTIFIER",
    "CodecError",
    "Frame",
    "S2Decoder",
    "S2Encoder",
    "S2Reader",
    "S2Writer",
    "accelerated",
    "compress",
    "decompress",
]
