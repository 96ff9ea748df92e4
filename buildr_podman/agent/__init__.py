"""The in-container agent: serves gRPC on a unix socket, runs the task, returns its changes.

Nothing in this package may import podman-py, rich or the host modules: it is frozen
into a standalone executable that runs in images without Python (see agent_build).
"""
