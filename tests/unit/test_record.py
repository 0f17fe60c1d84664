"""camex.record: the daemon's stand-in for @dataclass behaves like it for
what camex uses (defaults, factories, repr=False, __post_init__, equality)."""

import pytest

from camex.record import dataclass, field


@dataclass
class Rec:
    a: int
    b: str = "x"
    items: list = field(default_factory=list)
    secret: bytes | None = field(default=None, repr=False)

    def __post_init__(self):
        self.a = int(self.a)


@dataclass
class Custom:
    v: int = 0

    def __repr__(self):
        return "Custom(hidden)"


def test_init_defaults_factories_and_post_init():
    r = Rec("3")
    assert (r.a, r.b, r.items, r.secret) == (3, "x", [], None)
    assert Rec(1).items is not Rec(1).items  # a fresh list each
    r2 = Rec(1, "y", [5], b"k")
    assert (r2.b, r2.items, r2.secret) == ("y", [5], b"k")
    assert Rec(a=2, secret=b"s").secret == b"s"
    with pytest.raises(TypeError):
        Rec()
    assert Rec.b == "x"  # class attribute keeps a plain default, as dataclasses does


def test_repr_eq_and_hash_like_dataclasses():
    assert repr(Rec(1, items=[2], secret=b"pw")) == "Rec(a=1, b='x', items=[2])"
    assert repr(Custom(4)) == "Custom(hidden)"
    assert Rec(1, "y") == Rec(1, "y") and Rec(1) != Rec(2) and Rec(1) != Custom(1)
    with pytest.raises(TypeError):
        hash(Rec(1))


def test_declaration_errors():
    with pytest.raises(TypeError, match="non-default field 'b'"):
        @dataclass
        class Bad:
            a: int = 0
            b: int
    with pytest.raises(ValueError, match="mutable default"):
        @dataclass
        class Mutable:
            a: list = []
