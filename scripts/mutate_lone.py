"""Break one check of camex/v2/lone.py at a time and run the test that
holds the flat paths to the full paths' answers: every check it does not
catch is printed NOT CAUGHT. Restores the file however it ends.

    python scripts/mutate_lone.py      (from the repository root, ~2 min)

Four are expected NOT CAUGHT: they cannot change an answer (see the
docstring of tests/unit/test_v2_lone_path.py). A mutation whose text no
longer matches lone.py stops the script: update it with the code.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = os.path.join(ROOT, "camex", "v2", "lone.py")
TEST = os.path.join(ROOT, "tests", "unit", "test_v2_lone_path.py")
# (what is broken, the text of the check, the text that replaces it)
M = [
    ('client rx: flags',
     'if s is not None and not flags and s.local_index == receiver \\',
     'if s is not None and s.local_index == receiver \\'),
    ('client rx: receiver index',
     'if s is not None and not flags and s.local_index == receiver \\',
     'if s is not None and not flags \\'),
    ('client rx: reject age',
     'and now - s.created < t.reject_after_time and counter < s.recv_limit \\\n                    and counter > s.window.top:',
     'and counter < s.recv_limit \\\n                    and counter > s.window.top:'),
    ('client rx: recv limit',
     'and now - s.created < t.reject_after_time and counter < s.recv_limit \\\n                    and counter > s.window.top:',
     'and now - s.created < t.reject_after_time \\\n                    and counter > s.window.top:'),
    ('client rx: replay (>= top)',
     '                    and counter > s.window.top:',
     '                    and counter >= s.window.top:'),
    ('client rx: window not moved',
     '                s.window.update(counter)\n                s.last_received = now\n                cs.first',
     '                s.last_received = now\n                cs.first'),
    ('client rx: last_received',
     '                s.last_received = now\n                cs.first_unanswered = None',
     '                cs.first_unanswered = None'),
    ('client rx: first_unanswered',
     '                cs.first_unanswered = None\n                n = len',
     '                n = len'),
    ('client rx: passive keepalive',
     '                    if cs.ack_due is None:\n                        cs._ack_later(now)\n',
     ''),
    ('client tx: rekey count off by one',
     'if counter + 1 < t.rekey_after_messages',
     'if counter < t.rekey_after_messages'),
    ('client tx: send limit',
     'if counter + 1 < t.rekey_after_messages and counter < s.send_limit \\',
     'if counter + 1 < t.rekey_after_messages \\'),
    ('client tx: rekey age',
     'and age < t.rekey_after_time and age < t.reject_after_time:',
     'and age < t.reject_after_time:'),
    ('client tx: reject age',
     'and age < t.rekey_after_time and age < t.reject_after_time:',
     'and age < t.rekey_after_time:'),
    ('client tx: confirmed',
     'p[0] >> 4 == 4 and s.confirmed \\',
     'p[0] >> 4 == 4 \\'),
    ('client tx: ack_due reset',
     '                cs.ack_due = None\n                if cs.first',
     '                if cs.first'),
    ('server rx: flags',
     'if type(peer) is Peer and not flags and addr == peer.endpoint:',
     'if type(peer) is Peer and addr == peer.endpoint:'),
    ('server rx: endpoint (roaming)',
     'if type(peer) is Peer and not flags and addr == peer.endpoint:',
     'if type(peer) is Peer and not flags:'),
    ('server rx: receiver index (previous session)',
     'if s is not None and s.local_index == receiver and counter < s.recv_limit \\',
     'if s is not None and counter < s.recv_limit \\'),
    ('server rx: recv limit',
     'if s is not None and s.local_index == receiver and counter < s.recv_limit \\',
     'if s is not None and s.local_index == receiver \\'),
    ('server rx: reject age',
     'and now - s.created < t.reject_after_time and counter > s.window.top:\n                    key',
     'and counter > s.window.top:\n                    key'),
    ('server rx: replay (>= top)',
     'and now - s.created < t.reject_after_time and counter > s.window.top:\n                    key',
     'and now - s.created < t.reject_after_time and counter >= s.window.top:\n                    key'),
    ('server rx: window not moved',
     '                    s.window.update(counter)\n                    s.last_received = now\n                    n = len',
     '                    s.last_received = now\n                    n = len'),
    ('server rx: inner source',
     '                            if src & mask == net:',
     '                            if True:'),
    ('server rx: passive keepalive',
     '                                if peer.ack_due is None:\n                                    server._ack_later(peer, now)\n',
     ''),
    ('server rx: stats',
     '                                st["rx"] += 1\n',
     ''),
    ('server tx: confirmed',
     '        if s is not None and s.confirmed:\n            counter = s.send_counter\n            age',
     '        if s is not None:\n            counter = s.send_counter\n            age'),
    ('server tx: rekey count',
     'if counter < t.rekey_after_messages and counter < s.send_limit \\',
     'if counter < s.send_limit \\'),
    ('server tx: send limit',
     'if counter < t.rekey_after_messages and counter < s.send_limit \\',
     'if counter < t.rekey_after_messages \\'),
    ('server tx: reject age',
     '                    and age < t.reject_after_time \\\n                    and age < t.rekey_after_time + 2',
     '                    and age < t.rekey_after_time + 2'),
    ('server tx: rekey age',
     '                    and age < t.rekey_after_time + 2 * t.handshake_retry:',
     '                    and True:'),
    ('server tx: ack_due reset',
     '                peer.ack_due = None\n                st = peer.stats',
     '                st = peer.stats'),
]


def main() -> int:
    with open(P) as f:
        orig = f.read()
    missed = 0
    try:
        for name, old, new in M:
            if orig.count(old) != 1:
                print(f"{name}: its text is not once in {P}; update this script", file=sys.stderr)
                return 2
            with open(P, "w") as f:
                f.write(orig.replace(old, new))
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "-o", "addopts=", TEST], capture_output=True, text=True, cwd=ROOT)
            failed = sorted({line.split("::")[1].split(" ")[0] for line in r.stdout.splitlines()
                             if line.startswith("FAILED")})
            missed += not failed
            print(f"{name:45} {'caught by ' + ', '.join(failed) if failed else 'NOT CAUGHT'}",
                  flush=True)
    finally:
        with open(P, "w") as f:
            f.write(orig)
    print(f"{len(M) - missed} of {len(M)} broken checks caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
