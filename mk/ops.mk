# Operations (owner: ops): install targets, example systemd units, and the
# ops/fault/attack/load lab suites.
#
#   make install                 the package into a venv at $(CAMEX_HOME), camex in $(PREFIX)/bin
#   make install-units           example units + env files (DESTDIR, SYSTEMD_DIR, CAMEX_ETC)
#   make test-ops                lab suites (root); prints the measured figures (-rP)
#   make flood                   the junk flood with a million datagrams
#
# A venv is not relocatable, so `install` honours PREFIX/CAMEX_HOME but not
# DESTDIR; `install-units` honours DESTDIR (packaging, tests).

PREFIX ?= /usr/local
CAMEX_HOME ?= $(PREFIX)/lib/camex
SYSTEMD_DIR ?= /etc/systemd/system
CAMEX_ETC ?= /etc/camex
DOC_DIR ?= $(PREFIX)/share/doc/camex
DESTDIR ?=

OPS_SUITES := tests/integration/test_ops_*.py tests/integration/test_attack_*.py \
              tests/integration/test_fault_*.py tests/integration/test_load_*.py
OPS_PYTEST_FLAGS ?= -q -rP -n 2

# `make test-integration` runs the lab suites of others; ours run in test-ops.
INTEGRATION_EXCLUDE += $(foreach s,$(OPS_SUITES),--ignore-glob=$(s))

.PHONY: install install-units uninstall-units test-ops flood ops-deps node-exporter

ops-deps: node-exporter
	sh scripts/install-deps.sh nftables iputils-ping util-linux systemd strace

# Debian's node_exporter, unpacked rather than installed (its package would
# start a service on port 9100): test_ops_metrics.py runs its textfile
# collector on `camex status --prometheus` output in a lab namespace.
NODE_EXPORTER_DIR := lab/cache/node-exporter
NODE_EXPORTER := $(NODE_EXPORTER_DIR)/usr/bin/prometheus-node-exporter
node-exporter: $(NODE_EXPORTER)
$(NODE_EXPORTER):
	rm -rf $(NODE_EXPORTER_DIR) && mkdir -p $(NODE_EXPORTER_DIR)
	cd $(NODE_EXPORTER_DIR) && { apt-get download prometheus-node-exporter 2>/dev/null || \
		{ apt-get update -qq && apt-get download prometheus-node-exporter; }; } && \
		dpkg-deb -x prometheus-node-exporter_*.deb . && rm prometheus-node-exporter_*.deb
	test -x $@

install:
	$(PYTHON) -m venv $(CAMEX_HOME)
	$(CAMEX_HOME)/bin/pip install -q .
	install -d $(PREFIX)/bin
	ln -sf $(CAMEX_HOME)/bin/camex $(PREFIX)/bin/camex
	install -d $(DOC_DIR)
	install -m 644 docs/OPERATIONS.md $(DOC_DIR)/OPERATIONS.md
	@echo "camex installed in $(CAMEX_HOME); units: make install-units"

install-units:
	install -d $(DESTDIR)$(SYSTEMD_DIR)
	sed 's#/usr/local/bin/camex#$(PREFIX)/bin/camex#g; s#/usr/local/share/doc/camex#$(DOC_DIR)#g' \
		systemd/camex-server.service > $(DESTDIR)$(SYSTEMD_DIR)/camex-server.service
	sed 's#/usr/local/bin/camex#$(PREFIX)/bin/camex#g; s#/usr/local/share/doc/camex#$(DOC_DIR)#g' \
		systemd/camex-client@.service > $(DESTDIR)$(SYSTEMD_DIR)/camex-client@.service
	chmod 644 $(DESTDIR)$(SYSTEMD_DIR)/camex-server.service $(DESTDIR)$(SYSTEMD_DIR)/camex-client@.service
	install -d -m 700 $(DESTDIR)$(CAMEX_ETC)
	test -e $(DESTDIR)$(CAMEX_ETC)/server.env || install -m 600 systemd/server.env $(DESTDIR)$(CAMEX_ETC)/server.env
	install -m 600 systemd/client-example.env $(DESTDIR)$(CAMEX_ETC)/client-example.env
	@echo "units in $(DESTDIR)$(SYSTEMD_DIR); put the passphrase in $(CAMEX_ETC)/server.psk (chmod 600),"
	@echo "then: systemctl daemon-reload && systemctl enable --now camex-server"

uninstall-units:
	rm -f $(DESTDIR)$(SYSTEMD_DIR)/camex-server.service $(DESTDIR)$(SYSTEMD_DIR)/camex-client@.service

test-ops: deps ops-deps venv
	$(PYTEST) $(OPS_PYTEST_FLAGS) $(OPS_SUITES)

flood: deps ops-deps venv
	CAMEX_FLOOD_N=1000000 $(PYTEST) -q -rP tests/integration/test_attack_flood.py -k junk

TEST_SUITES += test-ops
