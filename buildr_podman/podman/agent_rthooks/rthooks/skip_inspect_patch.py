# Stands in for PyInstaller's own run-time hook of `inspect` (agent_build.py passes this
# directory with --additional-hooks-dir, and a hook directory named first wins). That hook
# imports inspect and zipfile and reads base_library.zip's index before the agent's first line,
# to make inspect.getsourcefile() find frozen sources: the agent never asks for source, and
# its start-up is on the path of every cold run.
