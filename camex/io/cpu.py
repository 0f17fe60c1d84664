"""What the CPU offers camex: AES instructions, for the v2 data cipher.

A v2 session runs AES-256-GCM instead of ChaCha20-Poly1305 only where both
ends have AES and carry-less multiply instructions (x86: "aes" and
"pclmulqdq"; 64-bit ARM: "aes" and "pmull"). There OpenSSL's AES-256-GCM
seals a 64 KB frame in about 8 us against ChaCha20-Poly1305's 19 (this
project's x86 test machine); without them AES runs in constant-time
software, several times slower than ChaCha20, which is why the small SoCs
of cameras keep ChaCha20-Poly1305.
"""

from __future__ import annotations

# The flag pairs that make AES-GCM fast, by the cpuinfo line that lists them.
_NEEDED = {"flags": {"aes", "pclmulqdq"}, "Features": {"aes", "pmull"}}


def hardware_aes(path: str = "/proc/cpuinfo") -> bool:
    """Does this CPU have AES and carry-less multiply instructions? False
    where /proc/cpuinfo cannot be read or does not say."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                name, sep, value = line.partition(":")
                needed = _NEEDED.get(name.strip()) if sep else None
                if needed is not None:
                    return needed <= set(value.split())
    except OSError:
        pass
    return False
