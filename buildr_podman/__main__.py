"""`python -m buildr_podman` is the `buildr-podman` command."""

from buildr_podman.cli import command

if __name__ == "__main__":
    command()
