"""The benchmark harness: engine-server against a bare grpc.aio server in the same run, reported as ratios.

``make bench`` (or ``python -m benchmarks [--quick] [--only NAME] [--out DIR] [--loop L]``) runs the figures
of docs/performance.md and writes ``benchmarks/results/bench-<time>.json`` and a ``.png`` chart beside it. See
docs/performance.md for what each figure measures and the numbers of a full run.
"""
