# The README's two commands: `make demo` and `make test`. Both create the
# virtualenv on first use and install eskit (editable) with what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.eskit-installed
# Every published extra, and the unpublished `dev` dependency group (test, lint and
# example tools; `--group` needs pip >= 25.1, hence the upgrade first).
EXTRAS := cli,crypto,docs,fastapi,metrics,nats,otel,postgres,rabbitmq,redis,sqlalchemy,web

.PHONY: demo serve-example test wheel-smoke lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' --group dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/eskit demo

# The bank as an HTTP API (examples/bank_api) on http://127.0.0.1:8000, /docs for
# its OpenAPI page; the store is $$ESKIT_DSN, else the SQLite file bank-api.db.
serve-example: $(STAMP)
	$(BIN)/python -m uvicorn examples.bank_api.app:app --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(BIN)/python -m pytest

# Build the sdist and wheel, install the wheel into fresh virtualenvs outside the
# checkout (Python 3.11, 3.12, 3.13) and run tests/smoke there; see .ci/wheel-smoke.
wheel-smoke:
	.ci/wheel-smoke

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks compare

# The documentation site (mkdocs.yml) into site/, strictly: a warning or a broken link fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
