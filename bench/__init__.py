"""Benchmark of the generations handler against a naive handler (``make bench``, ``python -m bench``).

Parts: ``cases`` (what is asked and how an answer is checked), ``naive`` (the reference handler a user would
write in ten minutes), ``servers`` (embedded S3 and the zero-latency upstream simulator, in a process of
their own), ``measure`` (one fresh process per case, both handlers interleaved), ``coldstart`` (fresh
processes in a venv holding only the layer's requirements), ``report`` (tables and the ``ratio`` lines).

This package imports nothing at the top: ``bench.naive`` is imported alone in cold-start processes.
"""
