"""buildr-podman: run build steps in rootless Podman pods and bring back only what they changed."""

__version__ = "0.1.0"
