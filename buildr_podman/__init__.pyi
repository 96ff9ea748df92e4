# What type checkers see of buildr_podman: __init__.py re-exports these lazily at run time.
from buildr_podman.errors import BuildrError as BuildrError
from buildr_podman.errors import ConfigError as ConfigError
from buildr_podman.hookspecs import hookimpl as hookimpl
from buildr_podman.model import ContainerSpec as ContainerSpec
from buildr_podman.model import Project as Project
from buildr_podman.model import RunReport as RunReport
from buildr_podman.model import Task as Task
from buildr_podman.model import TaskOutcome as TaskOutcome
from buildr_podman.model import TaskResult as TaskResult
from buildr_podman.moduletype import ModuleSpecError as ModuleSpecError
from buildr_podman.moduletype import ModuleType as ModuleType
from buildr_podman.phases import PhaseUpdate as PhaseUpdate

__version__: str
__all__: list[str]
_EXPORTS: dict[str, str]
