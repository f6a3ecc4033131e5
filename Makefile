# Command-line harness of the iot_base Odoo 18.0 addon. See scripts/*.sh.
#   make test   install iot_base with its tests in a throwaway database;
#               last line "N passed, N failed" (TEST_TAGS=... for a subset)
#   make run    serve Odoo with iot_base on http://127.0.0.1:8069 (admin/admin)
#   make stop   stop what make run started (Odoo, the listener, the broker)
#   make lint   ruff + pylint-odoo (OCA mandatory checks), eslint + prettier (JS)
#   make bench  benchmark /iot/auth and /iot/acl against an Odoo floor (~4 min)
#   make pot    regenerate iot_base/i18n/iot_base.pot (the terms to translate)
SHELL := /bin/bash
# the interpreter that runs Odoo (as scripts/odoo_env.sh)
PYTHON ?= python3

.PHONY: help test run stop lint bench pot

help:
	@sed -n '2,8s/^# \{0,1\}//p' Makefile

test:
	@bash scripts/test.sh

run:
	@bash scripts/run.sh

stop:
	@bash scripts/stop.sh

lint:
	@bash scripts/lint.sh

# docs/iot_app.png: the MQTT console with live messages, taken from the Odoo and
# broker of a running `make run` (IOT_URL, IOT_DB to point elsewhere).
.PHONY: screenshot
screenshot:
	@"$(PYTHON)" scripts/screenshot.py

bench:
	@"$(PYTHON)" bench/bench_auth.py

pot:
	@bash scripts/pot.sh
