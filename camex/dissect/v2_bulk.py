"""Reassembly of camex v2 BULK frames for camex-dissect (camex.dissect.v2).

A BULK frame (docs/V2-BULK.md) is one AEAD over a frame's records, cut
into up to 64 fragments, one per datagram, all with the same receiver
index and counter (the key here) and fragment count; byte 3 says which
slice a datagram carries. A capture shows them in any order, with losses
and duplicates, so the fragments of a frame are held until the last one
arrives; then the frame is decrypted once (dissect_v2 does that).

What is reported, per fragment: held (waiting for the others), the one
that completes the frame, a duplicate of a fragment already held (or of a
frame already complete: a replay), or one that contradicts the frame's
other fragments (another count or flags: it cannot belong to it). As the
daemons do (docs/PROTOCOL.md §4.7), a fragment with other content at an
index already held replaces it, and a frame that does not open
(`reopen`) waits for MEND_TRIES more such replacements: a forgery sent
ahead of the sender's own fragment is shown, and the frame still opens. Frames
still missing fragments when the capture ends - or FRAME_TIMEOUT capture
seconds after their first fragment, or when more than MAX_OPEN frames are
open - are listed as incomplete, with the indices they lack.

Memory is bounded whatever the capture holds: MAX_OPEN open frames
holding at most MAX_HELD bytes of slices together (a forged capture may
carry 64 KiB slices; the oldest frames are given up first), DONE_KEYS
completed keys, MAX_REPORTED incomplete frames described (all are
counted).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

MAX_OPEN = 256          # frames waiting for fragments
MAX_HELD = 64 << 20     # bytes of slices they hold together
FRAME_TIMEOUT = 5.0     # capture seconds a frame may wait for its fragments
DONE_KEYS = 65536       # completed (receiver, counter) remembered for duplicates
MAX_REPORTED = 1000     # incomplete frames described in the summary
MEND_TRIES = 2          # as camex.v2.framing.Reassembly: opens after a failed one


@dataclass
class OpenFrame:
    receiver: int
    counter: int
    count: int
    flags: int
    header: bytes                   # the first fragment's 20 header bytes
    first_time: float
    first_frame: int                # capture frame number of its first fragment
    session: str | None = None      # "client index/server index" label
    slices: dict = field(default_factory=dict)   # index -> slice bytes
    frames: dict = field(default_factory=dict)   # index -> capture frame number
    failed: bool = False            # complete once, did not open: waits for a mend
    tries: int = MEND_TRIES

    @property
    def label(self) -> str:
        return f"{self.receiver:08x}/{self.counter}"

    def missing(self) -> list:
        return [i for i in range(self.count) if i not in self.slices]

    def ciphertext(self) -> bytes:
        return b"".join(self.slices[i] for i in range(self.count))

    def report(self) -> dict:
        return {"frame": self.label, "receiver": f"{self.receiver:08x}",
                "counter": self.counter, "count": self.count,
                "have": sorted(self.slices), "missing": self.missing(),
                "first_frame": self.first_frame, "time": round(self.first_time, 6),
                "session": self.session}


@dataclass
class Added:
    """What became of one fragment."""
    what: str                       # held | complete | duplicate | replay | conflict
    frame: OpenFrame | None = None
    detail: str = ""


class BulkFrames:
    """The BULK frames of one camex-dissect run."""

    def __init__(self, max_open: int = MAX_OPEN, timeout: float = FRAME_TIMEOUT,
                 max_held: int = MAX_HELD):
        self.max_open = max_open
        self.timeout = timeout
        self.max_held = max_held
        self.held = 0                            # bytes of slices in open frames
        self.open: OrderedDict = OrderedDict()   # (receiver, counter) -> OpenFrame
        self.done: OrderedDict = OrderedDict()   # (receiver, counter) -> frame number
        self.fragments = 0
        self.complete = 0
        self.incomplete = 0
        self.reported: list[dict] = []
        self.now = 0.0

    def add(self, flags, index, receiver, counter, count, data, header, frame_no,
            time, session=None) -> Added:
        """One well-formed fragment (the fields wire.parse_bulk returns)."""
        self.fragments += 1
        self.now = max(self.now, time)
        self._expire()
        key = (receiver, counter)
        if key in self.done:
            return Added("replay", detail=(
                f"fragment {index} of frame {receiver:08x}/{counter}, which was complete "
                f"at capture frame {self.done[key]}"))
        fr = self.open.get(key)
        if fr is None:
            fr = OpenFrame(receiver, counter, count, flags, bytes(header), time, frame_no,
                           session)
            self.open[key] = fr
            if len(self.open) > self.max_open:
                self._give_up(next(iter(self.open)))
        elif count != fr.count or flags != fr.flags:
            return Added("conflict", fr, (
                f"count {count}, flags 0x{flags:02x} differ from the frame's other "
                f"fragments (count {fr.count}, flags 0x{fr.flags:02x}): not part of it"))
        elif index in fr.slices:
            if fr.slices[index] == bytes(data):
                return Added("duplicate", fr, (
                    f"fragment {index} again (first in capture frame {fr.frames[index]})"))
            note = (f"replaces fragment {index} of capture frame {fr.frames[index]}, which "
                    "had other content: one of the two is not the sender's")
            self.held += len(data) - len(fr.slices[index])
            fr.slices[index] = bytes(data)
            fr.frames[index] = frame_no
            if not fr.failed:
                return Added("held", fr, note)
            del self.open[key]                 # a mended frame: try it again
            self.held -= sum(len(x) for x in fr.slices.values())
            self.done[key] = frame_no
            return Added("complete", fr, note)
        fr.slices[index] = bytes(data)
        fr.frames[index] = frame_no
        if len(fr.slices) < fr.count:
            self.held += len(data)
            while self.held > self.max_held and self.open:
                self._give_up(next(iter(self.open)))
            return Added("held", fr)
        del self.open[key]
        self.held -= sum(len(x) for x in fr.slices.values()) - len(data)
        self.done[key] = frame_no
        if len(self.done) > DONE_KEYS:
            self.done.popitem(last=False)
        self.complete += 1
        return Added("complete", fr)

    def reopen(self, fr: OpenFrame) -> None:
        """The frame add() just completed did not open: keep it for a
        fragment that replaces one of its slices (MEND_TRIES times)."""
        key = (fr.receiver, fr.counter)
        if fr.tries <= 0 or key in self.open:
            return
        fr.tries -= 1
        fr.failed = True
        self.done.pop(key, None)
        self.open[key] = fr
        self.held += sum(len(x) for x in fr.slices.values())

    def _expire(self):
        while self.open:
            key, fr = next(iter(self.open.items()))
            if self.now - fr.first_time <= self.timeout:
                return
            self._give_up(key)

    def _give_up(self, key):
        fr = self.open.pop(key)
        self.held -= sum(len(x) for x in fr.slices.values())
        if fr.failed:
            return              # it was complete (and reported as not opening)
        self.incomplete += 1
        if len(self.reported) < MAX_REPORTED:
            self.reported.append(fr.report())

    def finish(self) -> None:
        """The capture ended: every frame still open is incomplete."""
        while self.open:
            self._give_up(next(iter(self.open)))

    def as_dict(self) -> dict:
        return {"fragments": self.fragments, "complete": self.complete,
                "incomplete": self.incomplete, "incomplete_frames": self.reported}

    def summary_lines(self) -> list:
        if not self.fragments:
            return []
        out = [f"  v2 BULK: {self.fragments} fragments, {self.complete} complete frames, "
               f"{self.incomplete} incomplete"]
        for r in self.reported:
            missing = ", ".join(map(str, r["missing"]))
            out.append(f"  v2 BULK frame {r['frame']} INCOMPLETE: {len(r['have'])} of "
                       f"{r['count']} fragments (missing {missing}), first in capture frame "
                       f"{r['first_frame']}")
        if self.incomplete > len(self.reported):
            out.append(f"  ... and {self.incomplete - len(self.reported)} more incomplete frames")
        return out
