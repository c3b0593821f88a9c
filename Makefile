# cloudmeta: every target does its own set-up; run as root on Debian.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEB_STAMP := $(VENV)/.debs
STATE ?= $(CURDIR)/state
# Debian packages the real data plane and the end-to-end clients need.
DEB_PACKAGES := iproute2 iptables dnsmasq-base haproxy isc-dhcp-client cloud-init curl \
	wrk nginx-light dpkg-dev procps psmisc util-linux postgresql-client chromium \
	qemu-system-x86 qemu-utils mmdebstrap e2fsprogs
# The config drive (ISO 9660, label config-2; lab/vm/configdrive.py).
DEB_PACKAGES += xorriso

.PHONY: install run test test-vm lint typecheck pytest bench soak services clean

install: $(STAMP) $(DEB_STAMP)

$(DEB_STAMP): Makefile scripts/install-debs.sh | $(VENV)/bin/python
	scripts/install-debs.sh $(DEB_PACKAGES)
	touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

services:
	scripts/ensure-services.sh

# The lab: all-in-one, a demo cloud and instances booting real DHCP + cloud-init (Ctrl-C ends it).
run: install
	CLOUDMETA_STATE_PATH=$(STATE) $(BIN)/cloudmeta lab up $(LAB_ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy src/cloudmeta

# Both cores: tests spread over PYTEST_WORKERS processes; an xdist_group (the VM tests) stays on one.
PYTEST_WORKERS ?= 2
pytest: install services
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test: install services lint typecheck pytest

# Only the QEMU guest tests (make test runs them too; the image is built once per machine).
test-vm: install services
	$(BIN)/pytest -q tests/vm

bench: install services
	$(BIN)/python -m bench $(if $(QUICK),--quick,--raise-host-limits)

SOAK_REPORT := $(STATE)/soak-report.jsonl
soak: install services
	mkdir -p $(STATE) && rm -f $(SOAK_REPORT)
	CLOUDMETA_SOAK=1 CLOUDMETA_REPORT=$(SOAK_REPORT) $(BIN)/pytest -q -p no:logging -m soak tests; \
	status=$$?; $(BIN)/python tests/support/report.py $(SOAK_REPORT); exit $$status

clean:
	rm -rf $(VENV) $(STATE)
