"""The errors buildr-podman raises, chosen by what the caller does next.

                                exit code when it reaches the command line
    BuildrError                 1  catch this to catch everything; str() is one line for the user
    ├── UsageError              2  the command line asks for something that is not there
    │   └── ConfigError         2  a .buildr/*.hcl file is wrong: names file, line, column
    ├── EnvironmentProblem      3  this machine cannot run tasks: the fix is outside the repository
    │   ├── PluginError         3  a plugin failed to load or misbehaved
    │   ├── BackendError        3  Podman refused or failed (names the pod when there is one)
    │   └── AgentError          3  the in-container agent failed or spoke an unknown protocol
    ├── ArchiveError            1  an archive from a container is unsafe or broken
    │   └── UnsafeArchiveMember 1  one member was refused (names the member and why)
    └── CodecError              1  an S2 stream is corrupt (names the byte offset)

As click's exceptions do, each class carries its `exit_code`: the command line turns any
BuildrError into one line on stderr and that code, in one place (cli.main); nothing else
should ever reach the user as a traceback. An error inside a task (its image is missing, its
agent died) does not reach the command line: the task fails, and a failed task exits 1.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "ArchiveError",
    "BackendError",
    "BuildrError",
    "CodecError",
    "ConfigError",
    "EnvironmentProblem",
    "PluginError",
    "UnsafeArchiveMember",
    "UsageError",
]


class BuildrError(Exception):
    """Base of every error the user should see as one clear line."""

    exit_code = 1


class UsageError(BuildrError):
    """The command asks for something that is not there: a task, an executor, a module type."""

    exit_code = 2


class EnvironmentProblem(BuildrError):
    """This machine cannot do the job (Podman, the agent, a plugin): the fix is outside the
    repository, and `buildr-podman doctor` names it."""

    exit_code = 3


class ConfigError(UsageError):
    """A configuration file is wrong; the message says what to change."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path or ""
        if where and self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}" if where else self.message


class PluginError(EnvironmentProblem):
    """A plugin could not be loaded or broke a hook's contract."""


class BackendError(EnvironmentProblem):
    """The container engine failed; `pod` names the pod involved, if any."""

    def __init__(self, message: str, pod: str | None = None) -> None:
        self.pod = pod
        super().__init__(f"pod {pod}: {message}" if pod else message)


class AgentError(EnvironmentProblem):
    """The in-container agent failed, died, or speaks another protocol version."""


class ArchiveError(BuildrError):
    """An archive produced by a container is broken or unsafe; nothing was written."""


class UnsafeArchiveMember(ArchiveError):
    """One archive member was refused; `name` is the member, `reason` says why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"archive member {name!r} refused: {reason}")


class CodecError(BuildrError):
    """An S2/Snappy stream is corrupt or truncated at byte `offset` of the stream."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(f"{message} (at byte {offset})" if offset is not None else message)


def printable(text: str, keep: str = "") -> str:
    """text with each character that is not printable (a control, an escape, C1) written as
    its escape, as repr does but without quotes ("\\x1b[2J"): a name or message that came from
    a task then cannot act on the terminal it is shown on. Characters in `keep` stay."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)
