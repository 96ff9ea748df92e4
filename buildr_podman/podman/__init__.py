"""The Podman executor backend."""
