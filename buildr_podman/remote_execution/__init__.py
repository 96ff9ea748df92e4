"""Remote execution: the selected tasks run on a REAPI v2 cluster (BuildGrid, Buildbarn, ...)
whose workers are `buildr-podman worker`s, and land here as a local run's would.

settings.py is read with the configuration (no gRPC); the rest is imported only by a run
that has a remote.
"""
