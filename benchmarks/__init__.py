"""pytest-benchmark runs of adjust: end-to-end tokens/s and per-kernel timings against their floors.

    PYTHONPATH=. python -m pytest benchmarks/ --benchmark-only --benchmark-min-rounds 3

See ``docs/performance.md``; results land in ``benchmarks/results/`` (``report.py``).
"""
