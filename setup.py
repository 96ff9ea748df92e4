"""Build hook for the optional compiled parts (the S2 block decoder, the tar reader's headers);
metadata lives in setup.cfg."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: without a C compiler the install still succeeds and
        # buildr_podman.s2 falls back to its pure-Python block decoder.
        Extension(
            "buildr_podman.s2._s2block",
            sources=["buildr_podman/s2/_s2block.c"],
            optional=True,
        ),
        # optional too: the tar reader's headers in the usual form; buildr_podman.archive's
        # pure-Python parser is the reference and the fallback.
        Extension(
            "buildr_podman.archive._tarhead",
            sources=["buildr_podman/archive/_tarhead.c"],
            optional=True,
        ),
        # optional too: the agent's small regular files written as tar members in C;
        # buildr_podman.agent.tarwriter is the reference and the fallback.
        Extension(
            "buildr_podman.agent._tarpack",
            sources=["buildr_podman/agent/_tarpack.c"],
            optional=True,
        ),
    ],
)
