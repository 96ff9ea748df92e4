from buildr_podman._protos.buildr.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HelloRequest(_message.Message):
    __slots__ = ("protocol_version", "host_version", "accepted_compressions")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_COMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: _common_pb2.ProtocolVersion
    host_version: str
    accepted_compressions: _containers.RepeatedScalarFieldContainer[_common_pb2.Compression]
    def __init__(self, protocol_version: _Optional[_Union[_common_pb2.ProtocolVersion, str]] = ..., host_version: _Optional[str] = ..., accepted_compressions: _Optional[_Iterable[_Union[_common_pb2.Compression, str]]] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("protocol_version", "agent_version", "compression")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: _common_pb2.ProtocolVersion
    agent_version: str
    compression: _common_pb2.Compression
    def __init__(self, protocol_version: _Optional[_Union[_common_pb2.ProtocolVersion, str]] = ..., agent_version: _Optional[str] = ..., compression: _Optional[_Union[_common_pb2.Compression, str]] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("task_name", "argv", "environment", "working_dir", "workspace", "user", "compression", "timeout_seconds", "baseline", "layers", "workspace_inode")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_INODE_FIELD_NUMBER: _ClassVar[int]
    task_name: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    environment: _containers.ScalarMap[str, str]
    working_dir: str
    workspace: str
    user: str
    compression: _common_pb2.Compression
    timeout_seconds: float
    baseline: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    workspace_inode: int
    def __init__(self, task_name: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., environment: _Optional[_Mapping[str, str]] = ..., working_dir: _Optional[str] = ..., workspace: _Optional[str] = ..., user: _Optional[str] = ..., compression: _Optional[_Union[_common_pb2.Compression, str]] = ..., timeout_seconds: _Optional[float] = ..., baseline: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., workspace_inode: _Optional[int] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("log", "output", "archive", "result", "deleted")
    LOG_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    log: LogLine
    output: OutputChunk
    archive: ArchiveChunk
    result: TaskResult
    deleted: DeletedPaths
    def __init__(self, log: _Optional[_Union[LogLine, _Mapping]] = ..., output: _Optional[_Union[OutputChunk, _Mapping]] = ..., archive: _Optional[_Union[ArchiveChunk, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., deleted: _Optional[_Union[DeletedPaths, _Mapping]] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("level", "message")
    class Level(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LEVEL_UNSPECIFIED: _ClassVar[LogLine.Level]
        LEVEL_DEBUG: _ClassVar[LogLine.Level]
        LEVEL_INFO: _ClassVar[LogLine.Level]
        LEVEL_WARNING: _ClassVar[LogLine.Level]
        LEVEL_ERROR: _ClassVar[LogLine.Level]
    LEVEL_UNSPECIFIED: LogLine.Level
    LEVEL_DEBUG: LogLine.Level
    LEVEL_INFO: LogLine.Level
    LEVEL_WARNING: LogLine.Level
    LEVEL_ERROR: LogLine.Level
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    level: LogLine.Level
    message: str
    def __init__(self, level: _Optional[_Union[LogLine.Level, str]] = ..., message: _Optional[str] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("stream", "data")
    class Stream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STREAM_UNSPECIFIED: _ClassVar[OutputChunk.Stream]
        STREAM_STDOUT: _ClassVar[OutputChunk.Stream]
        STREAM_STDERR: _ClassVar[OutputChunk.Stream]
    STREAM_UNSPECIFIED: OutputChunk.Stream
    STREAM_STDOUT: OutputChunk.Stream
    STREAM_STDERR: OutputChunk.Stream
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: OutputChunk.Stream
    data: bytes
    def __init__(self, stream: _Optional[_Union[OutputChunk.Stream, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ArchiveChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class DeletedPaths(_message.Message):
    __slots__ = ("paths",)
    PATHS_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, paths: _Optional[_Iterable[bytes]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("exit_code", "error", "files_returned", "bytes_returned", "tracking", "timed_out", "duration_seconds", "watched_directories", "tracking_setup_seconds", "tracking_resolve_seconds")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FILES_RETURNED_FIELD_NUMBER: _ClassVar[int]
    BYTES_RETURNED_FIELD_NUMBER: _ClassVar[int]
    TRACKING_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WATCHED_DIRECTORIES_FIELD_NUMBER: _ClassVar[int]
    TRACKING_SETUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRACKING_RESOLVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    error: str
    files_returned: int
    bytes_returned: int
    tracking: str
    timed_out: bool
    duration_seconds: float
    watched_directories: int
    tracking_setup_seconds: float
    tracking_resolve_seconds: float
    def __init__(self, exit_code: _Optional[int] = ..., error: _Optional[str] = ..., files_returned: _Optional[int] = ..., bytes_returned: _Optional[int] = ..., tracking: _Optional[str] = ..., timed_out: _Optional[bool] = ..., duration_seconds: _Optional[float] = ..., watched_directories: _Optional[int] = ..., tracking_setup_seconds: _Optional[float] = ..., tracking_resolve_seconds: _Optional[float] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShutdownResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
