"""`python -m buildr_podman` is the `buildr-podman` command."""

from buildr_podman.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
