"""libc's functions for the few calls Python has no binding for (recvmmsg,
sendmmsg, prctl, malloc_trim): through cffi's C backend where it is
loaded already, else ctypes.

Every daemon with a passphrase has `_cffi_backend` loaded (`cryptography`
loads it); importing ctypes beside it costs ~0.45 MiB resident for the
daemon's lifetime (its module, its libffi types, the libc handle). A
plaintext daemon has no cffi: loading its backend there would cost 1.3
MiB, ctypes less.

The two backends offer the same few things, so that their callers hold
one implementation:

- `function(name, args)`: a C function with an int result, its
  arguments' C types spelled as struct's codes: 'i' int, 'I' unsigned int,
  'L' unsigned long (size_t too), 'P' a pointer. An integer goes as it is
  (ctypes passes it as a C int: it must fit one), a pointer as
  `pointer(address)` (`pointer(0)`: NULL). ctypes gets no argument types:
  declaring them tripled the cost of a call.
- `errno()` / `set_errno(e)`: errno as the last call through this module
  left it.
- `address(buffer)`: where a writable buffer (bytearray, mmap) is in
  memory. It stays there as long as the buffer lives and is not resized
  (a bytearray with a memoryview on it cannot be).
"""

from __future__ import annotations

import sys


class _CFFI:
    name = "cffi"

    def __init__(self, backend):
        self._b = backend
        self._lib = backend.load_library(None)
        prim = backend.new_primitive_type
        self._int = prim("int")
        self._void_p = backend.new_pointer_type(backend.new_void_type())
        self._types = {"i": self._int, "I": prim("unsigned int"),
                       "L": prim("unsigned long"), "P": self._void_p}
        self._uintptr = prim("uintptr_t")
        self._chars = backend.new_array_type(
            backend.new_pointer_type(backend.new_primitive_type("char")), None)
        self.errno = backend.get_errno
        self.set_errno = backend.set_errno

    def function(self, name: str, args: str):
        fn_type = self._b.new_function_type(tuple(self._types[c] for c in args),
                                            self._int, False)
        return self._lib.load_function(fn_type, name)

    def pointer(self, address: int):
        # (A void * cdata: passed for less than an int converted to an
        # unsigned long; recvmmsg's arguments with cffi 2.1, 508 against
        # 566 ns a call.)
        return self._b.cast(self._void_p, address)

    def address(self, buffer) -> int:
        b = self._b
        return int(b.cast(self._uintptr, b.from_buffer(self._chars, buffer, True)))


class _CTypes:
    name = "ctypes"

    def __init__(self):
        import ctypes
        self._ct = ctypes
        self._lib = ctypes.CDLL(None, use_errno=True)
        self.errno = ctypes.get_errno
        self.set_errno = ctypes.set_errno
        self._void_p = ctypes.c_void_p

    def pointer(self, address: int):
        # (None for NULL: ~25 ns a call less than a c_void_p of 0.)
        return self._void_p(address) if address else None

    def function(self, name: str, args: str):
        fn = getattr(self._lib, name)
        fn.restype = self._ct.c_int
        return fn

    def address(self, buffer) -> int:
        ct = self._ct
        return ct.addressof(ct.c_char.from_buffer(buffer))


_made: dict = {}


def backend(name: str | None = None):
    """The backend `name` ('cffi' or 'ctypes'); by default cffi's where
    `_cffi_backend` is loaded, else ctypes. One of each per process."""
    if name is None:
        name = "cffi" if "_cffi_backend" in sys.modules else "ctypes"
    made = _made.get(name)
    if made is None:
        if name == "cffi":
            import _cffi_backend
            made = _CFFI(_cffi_backend)
        elif name == "ctypes":
            made = _CTypes()
        else:
            raise ValueError(f"no libc backend {name!r}")
        _made[name] = made
    return made


def function(name: str, args: str):
    """libc's `name` through the default backend (raises AttributeError
    where libc has no such function, OSError where it cannot be loaded)."""
    return backend().function(name, args)
