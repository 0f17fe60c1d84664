"""Runs last INSIDE the VM (guest.sh passes it after the other cases): the
kernel log of the whole run holds no warning, BUG or refcount complaint."""

import re
import subprocess

BAD = re.compile(r"WARNING:|\bBUG\b|refcount_t|refcount:|Oops|general protection|"
                 r"use-after-free|KASAN|list_(add|del) corruption|"
                 r"scheduling while atomic|sleeping function called")


def test_dmesg_is_clean_after_the_run():
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    bad = [line for line in log.splitlines() if BAD.search(line)]
    assert not bad, "kernel log:\n" + "\n".join(bad)
    assert "camex: loaded" in log     # the module did run in this boot
