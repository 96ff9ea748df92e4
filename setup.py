"""Build hook for the optional compiled S2 block decoder; metadata lives in setup.cfg."""

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
    ],
)
