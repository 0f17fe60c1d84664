# mypy over the I/O-free packages (base, legacy, v2, tunnel) and the
# contract's conformance test, which holds every core and the fake TUN to
# the Protocols of camex/base/contract.py. Part of `make check`; settings in
# pyproject.toml ([tool.mypy]).
#
#   make typecheck

TYPECHECK_TARGETS := camex/base camex/legacy camex/v2 camex/tunnel tests/unit/test_contract.py

.PHONY: typecheck

typecheck: venv
	$(VENV)/bin/mypy $(TYPECHECK_TARGETS)

CHECK_SUITES += typecheck
