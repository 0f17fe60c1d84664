"""Scapy fields for camex's text control messages.

The control line `CX2P VERB KEY=VALUE ...\\n` is tokenised by spaces. These
fields take exactly the bytes they describe and never fail on odd input, so a
dissected message always rebuilds to the same bytes (the fuzz tests rely on
that), however many spaces or strange characters it holds.
"""

from __future__ import annotations

from scapy.fields import StrField


class SpaceRunField(StrField):
    """A run of spaces (the separator before a token); default one space."""

    def getfield(self, pkt, s):
        n = len(s) - len(s.lstrip(b" "))
        return s[n:], s[:n]


class TokenField(StrField):
    """Bytes up to (not including) the first byte of `stops`, or to the end."""

    __slots__ = ["stops"]

    def __init__(self, name, default, stops=b" \n"):
        super().__init__(name, default)
        self.stops = stops

    def getfield(self, pkt, s):
        end = len(s)
        for ch in self.stops:
            i = s.find(bytes([ch]))
            if 0 <= i < end:
                end = i
        return s[end:], s[:end]


class EqualsField(StrField):
    """The `=` between key and value: b"=" if present, b"" for a bare token."""

    def getfield(self, pkt, s):
        if s[:1] == b"=":
            return s[1:], b"="
        return s, b""


class TailField(StrField):
    """Everything except the last `tail` bytes (ciphertext before the tag).

    The AEAD authenticates whatever sits between the header and the last 16
    bytes, so that is what the layer shows as ciphertext, even when the
    header's length field disagrees (a malformed datagram still dissects).
    """

    __slots__ = ["tail"]

    def __init__(self, name, default, tail):
        super().__init__(name, default)
        self.tail = tail

    def getfield(self, pkt, s):
        n = max(0, len(s) - self.tail)
        return s[n:], s[:n]
