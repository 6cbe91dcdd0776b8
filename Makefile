# The two commands of the README: `make demo` and `make test`.  Each sets up what is missing
# (Debian packages when root, a .venv, an editable install that builds the C core) and is safe
# to run again: the second run only checks.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages streamcore needs on the machine (see README, "What gets installed").
DEB_PACKAGES := libportaudio2 libcap-dev jackd2 dbus polkitd rtkit libsndfile1 rt-tests sox alsa-utils ffmpeg pv \
	pipewire pipewire-bin pipewire-jack xdg-desktop-portal
# PipeWire's ALSA plugin is unpacked here, never installed: the pipewire-alsa package makes ALSA's
# "default" device PipeWire for every process on the machine.  Only the PipeWire tests' child
# processes see it (ALSA_CONFIG_PATH, tests/services/pipewire.py).
PW_ALSA_DIR := build/pipewire-alsa
# The editable install is redone only when what it builds from changes.
INSTALL_INPUTS := pyproject.toml setup.py $(wildcard native/*.c native/*.h native/*.py native/testing/*.c native/testing/*.h)
STAMP := $(VENV)/.streamcore-installed

.PHONY: demo test bench lint tsan system-packages pipewire-alsa clean

demo: $(STAMP)
	$(PY) -m streamcore demo

test: $(STAMP) pipewire-alsa
	$(PY) -m pytest

# The peers the benchmarks compare against (rtmixer) and the plots (matplotlib): the `bench`
# extra, installed only when missing.  BENCH_ARGS=--quick for the 4-minute run.
bench: $(STAMP)
	@$(PY) -c "import rtmixer, matplotlib" 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check streamcore tests bench demos native

# ThreadSanitizer on the lock-free parts of the C core: it cannot run inside the uninstrumented
# CPython, so small C drivers (tests/native/, one producer and one consumer thread each) carry
# the ring and the SPSC queue.  Each driver's seconds: TSAN_SECONDS (default 2).
# A run that dies with "FATAL: ThreadSanitizer: unexpected memory mapping" is repeated with
# address-space randomisation off for that process (setarch -R): gcc 12's TSan expects the
# program and its libraries in fixed ranges, which kernels with more mmap randomisation bits
# (vm.mmap_rnd_bits > 28, the default of some newer kernels) violate.  Only then: setarch -R
# needs personality(ADDR_NO_RANDOMIZE), which some container seccomp profiles refuse.
TSAN_DIR := build/tsan
TSAN_BINS := $(TSAN_DIR)/tsan_ring $(TSAN_DIR)/tsan_spsc
TSAN_CFLAGS := -std=gnu11 -fsanitize=thread -g -O1 -pthread -Wall -Wextra -Werror -Inative
TSAN_SECONDS ?= 2

tsan: $(TSAN_BINS)
	@export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 $$TSAN_OPTIONS"; \
	status=0; for bin in $(TSAN_BINS); do \
	  $$bin $(TSAN_SECONDS) 2>$$bin.stderr; rc=$$?; \
	  if grep -q "unexpected memory mapping" $$bin.stderr; then \
	    echo "$$bin: TSan's memory layout needs ASLR off here: again under setarch -R" >&2; \
	    setarch "$$(uname -m)" -R $$bin $(TSAN_SECONDS) 2>$$bin.stderr; rc=$$?; \
	  fi; \
	  cat $$bin.stderr >&2; \
	  if [ $$rc != 0 ]; then echo "$$bin: exit status $$rc" >&2; status=1; fi; \
	done; exit $$status

# ring.c is built alone with its driver: it needs nothing from the other native/*.c files.
$(TSAN_DIR)/tsan_ring: tests/native/tsan_ring.c native/ring.c $(wildcard native/*.h)
	@mkdir -p $(TSAN_DIR)
	$(CC) $(TSAN_CFLAGS) -o $@ tests/native/tsan_ring.c native/ring.c

$(TSAN_DIR)/tsan_spsc: tests/native/tsan_spsc.c $(wildcard native/*.h)
	@mkdir -p $(TSAN_DIR)
	$(CC) $(TSAN_CFLAGS) -o $@ tests/native/tsan_spsc.c

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

# The plugin of the same version as the installed pipewire (the package pins it exactly), again
# when pipewire changes.  Only root with apt can fetch it; anyone else goes on without it: the
# ALSA-through-PipeWire tests then skip (and fail under CI=true, saying why).
pipewire-alsa: | system-packages
	@version=$$(dpkg-query -W -f='$${Version}' pipewire 2>/dev/null); [ -n "$$version" ] || exit 0; \
	if [ "$$(cat $(PW_ALSA_DIR)/.version 2>/dev/null)" = "$$version" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then exit 0; fi; \
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT; \
	fetch() { (cd "$$tmp" && apt-get download -qq -o APT::Sandbox::User=root \
	                           "pipewire-alsa=$$version") >/dev/null 2>&1; }; \
	fetch || { apt-get update -qq >/dev/null 2>&1 && fetch; } || { \
	  echo "could not download pipewire-alsa $$version: the ALSA-through-PipeWire tests will skip (fail with CI=true)" >&2; \
	  exit 0; }; \
	rm -rf $(PW_ALSA_DIR) && mkdir -p $(PW_ALSA_DIR) && \
	dpkg-deb -x "$$tmp"/pipewire-alsa_*.deb $(PW_ALSA_DIR) && \
	echo "$$version" > $(PW_ALSA_DIR)/.version && \
	echo "unpacked pipewire-alsa $$version into $(PW_ALSA_DIR)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

$(STAMP): $(INSTALL_INPUTS) | system-packages $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info streamcore/_native*.so streamcore/_native.c
