"""archive_wire: the archive message written and read by hand agrees with protobuf's own."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildr_podman._protos.archive_wire import archive_event_data, archive_event_prefix
from buildr_podman._protos.buildr.remote.v1 import agent_pb2

SIZES = st.one_of(st.integers(0, 300), st.sampled_from([127, 128, 16383, 16384, 1 << 20]))


@given(size=SIZES)
def test_a_prefix_and_data_are_the_message_protobuf_writes(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    event = archive_event_prefix(len(data)) + data
    assert agent_pb2.RunEvent.FromString(event).archive.data == data
    if data:  # protobuf leaves an empty field out; then the prefix is merely valid
        assert event == agent_pb2.RunEvent(archive=agent_pb2.ArchiveChunk(data=data)) \
            .SerializeToString()


@given(data=st.binary(min_size=1, max_size=3000))
def test_the_data_is_read_from_what_protobuf_writes_without_a_copy(data: bytes) -> None:
    event = agent_pb2.RunEvent(archive=agent_pb2.ArchiveChunk(data=data)).SerializeToString()
    view = archive_event_data(event)
    assert view is not None and view == data and view.obj is event


@pytest.mark.parametrize("message", [
    agent_pb2.RunEvent(output=agent_pb2.OutputChunk(stream=1, data=b"hi")),
    agent_pb2.RunEvent(result=agent_pb2.TaskResult(exit_code=3)),
    agent_pb2.RunEvent(archive=agent_pb2.ArchiveChunk()),  # empty: tags alone
    agent_pb2.RunEvent(),
], ids=["output", "result", "empty archive", "nothing"])
def test_other_run_events_are_left_to_protobuf(message: agent_pb2.RunEvent) -> None:
    assert archive_event_data(message.SerializeToString()) is None


@pytest.mark.parametrize("message", [
    archive_event_prefix(10) + b"short",  # the lengths claim more than there is
    archive_event_prefix(3) + b"longer",  # or less
    b"\x1a\xff\xff\xff\xff\xff\xff",  # a length that never ends
    b"\x1a\x07\x12\x05hello",  # another field of ArchiveChunk
    archive_event_prefix(2) + b"ok" + b"\x20\x01",  # a second field after the archive
], ids=["truncated", "trailing", "endless varint", "other inner field", "two fields"])
def test_anything_unusual_is_left_to_protobuf(message: bytes) -> None:
    assert archive_event_data(message) is None
