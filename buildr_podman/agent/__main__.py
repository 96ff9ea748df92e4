"""Entry point of the frozen agent executable and of `python -m buildr_podman.agent`."""

from buildr_podman.agent.main import main

if __name__ == "__main__":
    raise SystemExit(main())
