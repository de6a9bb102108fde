"""TestClient for the FastAPI tests: it runs the app's lifespan in-process."""

import warnings

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its test client; the dev extra
    # installs httpx, which still works (see tests/aio/test_http_api.py).
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

__all__ = ["TestClient"]
