"""The origin's runtime (``ai-dynamo-runtime``) as a peer: scripts run by its own virtual environment's Python.

Nothing here is imported by the project or by the harness: ``server.py`` and ``client.py`` run as
``<peer venv>/bin/python -m benchmarks.peer.server`` (or ``.client``) from the repository root, and the
harness (:mod:`benchmarks.peer_runtime`) talks to them over pipes. They are not type-checked by ``make lint``:
the peer's package is not installed in the project's environment, so mypy could not see its types.
"""
