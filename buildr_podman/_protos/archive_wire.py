"""The message that carries archive bytes, written and read without protobuf's copies.

`RunEvent{archive: ArchiveChunk{data}}` (agent to host) carries every byte of an archive.
Built by protobuf, each megabyte is copied into the message and again when it is serialized;
parsed, into the message and again when `.data` is read. Its encoding is a few bytes of tags
and lengths in front of the data, so the packer writes that prefix in front of each message
(`archive_event_prefix`), and the receiver takes the data as a view of
the received bytes (`archive_event_data`). Both sides still speak plain protobuf: the reader
returns None for any other encoding of any other message, which then goes to protobuf's own
parser, and a protobuf reader reads what the prefix makes.
"""

from __future__ import annotations

from typing import Final

from buildr_podman._protos.buildr.remote.v1 import agent_pb2

__all__ = [
    "AGENT_SERVICE",
    "archive_event_data",
    "archive_event_prefix",
    "parse_run_event",
    "serialize",
]

# The service whose Run call carries these messages: both ends register that call with the
# functions below instead of the generated ones.
AGENT_SERVICE: Final = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name
# Field tags: (field number << 3) | wire type 2 (length-delimited). See agent.proto.
_RUN_EVENT_ARCHIVE: Final = 3 << 3 | 2
_ARCHIVE_CHUNK_DATA: Final = 1 << 3 | 2


def archive_event_prefix(length: int) -> bytes:
    """What precedes `length` bytes of data in a serialized RunEvent{archive{data}}."""
    inner = bytes((_ARCHIVE_CHUNK_DATA,)) + _varint(length)
    return bytes((_RUN_EVENT_ARCHIVE,)) + _varint(len(inner) + length) + inner


def archive_event_data(message: bytes) -> memoryview | None:
    """The data of a serialized RunEvent that is exactly an archive chunk, as a view of
    `message`; None for anything else (parse that with protobuf)."""
    inner = _only_field(message, 0, _RUN_EVENT_ARCHIVE)
    if inner is None:
        return None
    start = _only_field(message, inner, _ARCHIVE_CHUNK_DATA)
    return None if start is None else memoryview(message)[start:]


def serialize(message: agent_pb2.RunEvent | bytes) -> bytes:
    """gRPC's serializer for RunEvents: what a packer made is serialized already."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def parse_run_event(message: bytes) -> agent_pb2.RunEvent | memoryview:
    """gRPC's deserializer for RunEvents: an archive chunk is its data alone."""
    data = archive_event_data(message)
    return agent_pb2.RunEvent.FromString(message) if data is None else data


def _only_field(message: bytes, position: int, tag: int) -> int | None:
    """Where the value starts when message[position:] is exactly one `tag` field; else None."""
    if position >= len(message) or message[position] != tag:
        return None
    parsed = _read_varint(message, position + 1)
    if parsed is None:
        return None
    length, start = parsed
    return start if start + length == len(message) else None


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int] | None:
    """(value, position after it); None if it runs off the end or past 5 bytes."""
    value = shift = 0
    for index in range(position, min(position + 5, len(data))):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    return None
