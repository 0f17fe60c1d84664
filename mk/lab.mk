# Namespace lab (lab/netns.py): housekeeping targets. `make demo` and
# `make test-integration` live in the top Makefile.
#
#   make lab-list        lab namespaces (cx<pid>-*) and whether their owner lives
#   make lab-clean       delete lab namespaces whose owner process is gone
#                        (left behind by a SIGKILLed demo or test run)
#   make lab-clean-all   delete every lab namespace, also of running labs

.PHONY: lab-list lab-clean lab-clean-all

lab-list: venv
	$(PY) -m lab.netns list

lab-clean: venv
	$(PY) -m lab.netns clean

lab-clean-all: venv
	$(PY) -m lab.netns clean --all
