"""Code generated from protos/ by scripts/gen-protos; only agent.service and podman.agent_client import it."""
