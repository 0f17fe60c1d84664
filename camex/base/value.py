"""`Value`: the base of the daemon's small records that are compared by value.

Equality and repr over the class's `__slots__`, in order: what a dataclass
would generate, without importing `dataclasses` (it pulls in `inspect`,
1.2 MiB resident per daemon). Each subclass lists its fields in `__slots__`
and writes its own `__init__`.
"""

from __future__ import annotations


class Value:
    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
