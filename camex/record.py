"""`@dataclass` and `field()` for the daemon's plain records, without the
standard `dataclasses` module.

`dataclasses` imports `inspect` (with ast, dis, tokenize, linecache):
1.4 MiB of the daemon's resident memory, 7% of its 20 MiB budget
(issue 6), for what camex uses of it: fields in order, defaults and
default factories, `repr=False`, `__post_init__`, a generated `__init__`,
`__repr__` and `__eq__` (and no `__hash__`, as dataclasses does for a
mutable record with `__eq__`). Nothing else (no frozen, order, slots,
asdict/fields/replace); a class that asks for more should use `dataclasses`.

The `__init__` is generated as source and compiled, as dataclasses does, so
creating a record costs the same.
"""

from __future__ import annotations

__all__ = ["dataclass", "field"]


class _Missing:
    def __repr__(self):
        return "MISSING"


MISSING = _Missing()


class Field:
    __slots__ = ("name", "default", "default_factory", "repr", "compare")

    def __init__(self, default=MISSING, default_factory=MISSING, repr=True, compare=True):
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = None
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare


def field(*, default=MISSING, default_factory=MISSING, repr=True, compare=True) -> Field:
    return Field(default, default_factory, repr, compare)


def _fields_of(cls) -> list:
    fields = {}
    for base in reversed(cls.__mro__[1:]):
        for f in getattr(base, "__record_fields__", ()):
            fields[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if "ClassVar" in str(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        if isinstance(f.default, (list, dict, set)):
            raise ValueError(f"mutable default for field {name}: use default_factory")
        f.name = name
        fields[name] = f
        if f.default is MISSING:
            if name in cls.__dict__:
                delattr(cls, name)  # a Field with a factory: no class attribute
        else:
            setattr(cls, name, f.default)
    return list(fields.values())


def _make_init(cls, fields):
    names = {"_MISSING": MISSING}
    params, body = [], []
    seen_default = False
    for f in fields:
        if f.default is not MISSING:
            names[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
            body.append(f"self.{f.name} = {f.name}")
            seen_default = True
        elif f.default_factory is not MISSING:
            names[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            body.append(f"self.{f.name} = _f_{f.name}() if {f.name} is _MISSING else {f.name}")
            seen_default = True
        else:
            if seen_default:
                raise TypeError(f"non-default field {f.name!r} follows a default field")
            params.append(f.name)
            body.append(f"self.{f.name} = {f.name}")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    src = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body or ["pass"])
    exec(src, names)  # noqa: S102 - source built from the class's own field names
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def dataclass(cls=None, /):
    """Turn a class with annotated fields into a record (see the module doc)."""
    if cls is None:
        return dataclass
    fields = _fields_of(cls)
    cls.__record_fields__ = tuple(fields)
    cls.__init__ = _make_init(cls, fields)
    shown = tuple(f.name for f in fields if f.repr)
    compared = tuple(f.name for f in fields if f.compare)

    if "__repr__" not in cls.__dict__:
        def __repr__(self):
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
            return f"{type(self).__qualname__}({inner})"
        cls.__repr__ = __repr__

    if "__eq__" not in cls.__dict__:
        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in compared)
        cls.__eq__ = __eq__
        if "__hash__" not in cls.__dict__:
            cls.__hash__ = None  # mutable and compared by value: unhashable
    return cls
