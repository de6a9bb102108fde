"""``python -m benchmarks``: run the benchmark harness."""

import sys

from benchmarks.runner import main

if __name__ == "__main__":  # not when a spawned worker process imports this module
    if sys.argv[1:2] == ["snapshots"]:  # python -m benchmarks snapshots [options]
        from benchmarks.snapshots import main as snapshots_main

        raise SystemExit(snapshots_main(sys.argv[2:]))
    if sys.argv[1:2] == ["sse"]:  # python -m benchmarks sse [--events N]
        from benchmarks.http_sse import main as sse_main

        raise SystemExit(sse_main(sys.argv[2:]))
    if sys.argv[1:2] == ["compare"]:  # python -m benchmarks compare [options]
        from benchmarks.compare import main as compare_main

        raise SystemExit(compare_main(sys.argv[2:]))
    if sys.argv[1:2] == ["filtered_read"]:  # python -m benchmarks filtered_read [options]
        from benchmarks.filtered_read import main as filtered_main

        raise SystemExit(filtered_main(sys.argv[2:]))
    raise SystemExit(main())
