# The two commands of the README: `make demo` and `make test`.  Each sets up what is missing
# (Debian packages when root, a .venv, an editable install that builds the C core) and is safe
# to run again: the second run only checks.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages streamcore needs on the machine (see README, "What gets installed").
DEB_PACKAGES := libportaudio2 libcap-dev jackd2 dbus polkitd rtkit libsndfile1 rt-tests sox alsa-utils
# The editable install is redone only when what it builds from changes.
INSTALL_INPUTS := pyproject.toml setup.py $(wildcard native/*.c native/*.h native/*.py native/testing/*.c native/testing/*.h)
STAMP := $(VENV)/.streamcore-installed

.PHONY: demo test bench lint system-packages clean

demo: $(STAMP)
	$(PY) -m streamcore demo

test: $(STAMP)
	$(PY) -m pytest

# The peers the benchmarks compare against (rtmixer) and the plots (matplotlib): the `bench`
# extra, installed only when missing.  BENCH_ARGS=--quick for the 3-minute run.
bench: $(STAMP)
	@$(PY) -c "import rtmixer, matplotlib" 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check streamcore tests bench demos native

system-packages:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; \
	  done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
	  echo "streamcore needs these Debian packages; as root run:" >&2; \
	  echo "  apt-get install --no-install-recommends $$missing" >&2; \
	  exit 1; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

$(STAMP): $(INSTALL_INPUTS) | system-packages $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info streamcore/_native*.so streamcore/_native.c
