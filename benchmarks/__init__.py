"""On-demand benchmarks for eskit (not part of the test suite).

Run them with ``python -m benchmarks`` (or ``make bench``); ``--quick`` is a
smoke run in seconds. Each scenario times eskit and a raw driver doing the same
work in the same run (the standard-library ``sqlite3`` for the SQLite and memory
backends, psycopg 3 for PostgreSQL), alternating the two, and reports events per
second and their ratio. See ``benchmarks/README.md``.
"""
