"""BLAKE2b, BLAKE2s and MAC comparison for the data path, without a
second OpenSSL.

`hashlib` loads CPython's OpenSSL binding (about 4 MB resident) next to the
one `cryptography` already carries; the BLAKE2 functions themselves live in
the small built-in `_blake2` module, which is what hashlib hands out too.
`cryptography` cannot replace them: it has no keyed BLAKE2 and no digest
sizes other than 64 (BLAKE2b) and 32 (BLAKE2s), which both protocols use.
"""

try:
    from _blake2 import blake2b, blake2s
except ImportError:  # another Python implementation
    from hashlib import blake2b, blake2s

# Constant-time comparison of MACs: hmac.compare_digest (and cryptography's
# constant_time, which imports hmac) pull in the same OpenSSL binding; the
# function itself is the interpreter's own.
try:
    from _operator import _compare_digest as compare_digest
except ImportError:
    from hmac import compare_digest  # type: ignore[no-redef]

__all__ = ["blake2b", "blake2s", "compare_digest"]
