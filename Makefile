PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= etc/ctd.toml

.PHONY: run test bench clean venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

## make run: venv, install, run the daemon in the foreground on the demo config (state under ./var/)
run: venv
	mkdir -p var
	$(VENV)/bin/ctd run --config $(CONFIG)

## make test: venv, install with test extras, run the whole suite
test: venv
	$(PY) -m pytest -q

## make bench: the ingest benchmark (N=1,000,000 by default)
bench: venv
	$(PY) bench/ingest.py --n $${N:-1000000}

clean:
	rm -rf $(VENV) var build *.egg-info
