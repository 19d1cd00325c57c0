# Two entry points that work on a fresh machine with Python 3.11:
#   make book   - create .venv, install, build the book on the embedded shapes data (profile quick)
#   make test   - create .venv if missing, run the tests
PYTHON ?= python3.11
VENV ?= .venv
PROFILE ?= quick
BIN := $(VENV)/bin

.PHONY: book test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

book: venv
	$(BIN)/ddnb book --profile $(PROFILE)

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf _build
