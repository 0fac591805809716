# civicbot: `make run` serves the bot with the embedded SQLite database, `make test` runs
# ruff, mypy and the whole test suite. Both create .venv on first use (and rebuild the PB
# tally's C kernel, flows/pb/_mes.c, when it changes; it is optional: without a C compiler
# civicbot installs and tallies without it, more slowly, and CI fails if it was not built).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-admin clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "civicbot needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml flows/pb/_mes.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml flows/pb/_mes.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/civicbot db upgrade
	$(BIN)/civicbot wards load --if-empty admin/data/demo_wards.csv
	@echo "The civicbot command is $(BIN)/civicbot (or run: source $(BIN)/activate)"
	@echo "Admin web app: http://127.0.0.1:8000/admin. Create the first admin account first:"
	@echo "    $(BIN)/civicbot admin create-user you@example.org --role admin"
	$(BIN)/civicbot serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: $(VENV)/.installed-test
	$(BIN)/python bench/tally.py

# The admin pages with 100,000 contacts and 1,000,000 messages on PostgreSQL (a throwaway
# database on CIVICBOT_TEST_POSTGRES_URL's server); prints each page's time and the plans.
bench-admin: $(VENV)/.installed-test
	$(BIN)/python bench/admin.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build flows/pb/*.so
