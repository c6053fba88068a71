# The two commands of the README, plus benchmarks. Each target bootstraps itself
# idempotently on a fresh Debian 12 machine (as root): apt packages, a virtualenv,
# the package with its dev extras.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := bubblewrap iproute2 nftables openssh-client openssh-server autossh libseccomp2 \
	python3 python3-venv python3-dev gcc curl socat netcat-openbsd dnsutils procps \
	chromium ca-certificates openssl \
	skopeo umoci busybox-static
# The gateway benchmark compares against proxy.py and mitmproxy, kept out of the project's
# virtualenv because mitmproxy pins its own cryptography.
BENCH_VENV ?= /var/tmp/bastion-bench-venv
STAMP := $(VENV)/.bootstrap-stamp

.PHONY: bootstrap demo test bench clean lint

bootstrap: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh "$(VENV)" $(APT_PACKAGES)
	touch $(STAMP)

demo: bootstrap
	$(VENV)/bin/bastion demo

# --durations: the slowest tests in every log, to see where a slow machine spends its time
test: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests ran: failing"; exit 1; fi; exit $$rc

bench: bootstrap
	test -x $(BENCH_VENV)/bin/mitmdump || (python3 -m venv $(BENCH_VENV) && \
		$(BENCH_VENV)/bin/pip install -q proxy.py mitmproxy)
	$(PY) benchmarks/run_all.py

lint: bootstrap
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
