"""``python -m benchmarks``: run the benchmark harness."""

from benchmarks.runner import main

raise SystemExit(main())
