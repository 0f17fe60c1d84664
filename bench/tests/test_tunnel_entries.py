"""Every bench entry's set-up reads only attributes its entry has.

The lab runs of the harness test start a few cheap entries; the peers'
set-ups (fastd, OpenVPN, tinc, wireguard-go) run only in `make bench`, where
an AttributeError costs a row of the report. This reads each entry class's
methods for `self.<name>` and requires every name to exist on the entry.
"""

import inspect
import re

from bench.tunnels import ENTRIES

_SELF_ATTR = re.compile(r"\bself\.([A-Za-z_]\w*)")


def test_every_entry_reads_only_attributes_it_has():
    missing = []
    for entry in ENTRIES:
        for klass in type(entry).__mro__:
            if klass is object:
                continue
            try:
                source = inspect.getsource(klass)
            except (OSError, TypeError):
                continue
            for name in set(_SELF_ATTR.findall(source)):
                if not hasattr(entry, name):
                    missing.append(f"{entry.name} ({klass.__name__}): self.{name}")
    assert not missing, missing


def test_the_check_sees_a_missing_attribute():
    # What the test above looks for, on a class it can read.
    class Probe:
        def up(self):
            return self.mode
    names = set(_SELF_ATTR.findall(inspect.getsource(Probe)))
    assert "mode" in names and not hasattr(Probe(), "mode")
