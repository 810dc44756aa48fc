# FCtL for QGIS: one-command set-up, tests, demo, benchmark and packaging.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv xvfb xauth
STAMP := $(VENV)/.requirements.stamp
export HF_HUB_OFFLINE := 1
export QT_QPA_PLATFORM := offscreen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test demo bench package deploy clean

setup: $(STAMP)

# apt runs only when a package is missing, so a second `make setup` costs a dpkg query.
.apt.stamp:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

$(VENV)/bin/python: | .apt.stamp
	/usr/bin/python3 -m venv --system-site-packages $(VENV)

$(STAMP): $(VENV)/bin/python requirements.txt constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	@touch $@

test: setup
	$(PY) -m pytest tests

demo: setup
	$(PY) tools/demo.py

bench: setup
	$(PY) -m model_core bench --out bench

package: setup
	$(PY) tools/package.py --out dist/fctl_qgis.zip

deploy: package
	$(PY) tools/package.py --deploy dist/fctl_qgis.zip

clean:
	rm -rf dist build .pytest_cache
