"""Error conversion and the base class of every wrapped library object."""

from __future__ import annotations

import ctypes
from typing import Callable, NoReturn, Optional, Sequence, TypeVar, Union

from ._lib import lib, text

__all__ = ["OakukError", "raise_error", "Handle", "VIRT_NAMES", "virt_code", "virt_name",
           "accel_name"]


class OakukError(Exception):
    """A liboakuk failure.

    code: the negative OAKUK_E* value; code_name: "OAKUK_EINVAL", ...; message: the whole
    sentence; errno: the OS error (0 when none); path: JSON path of the (first) offending field or
    None; items: every problem found, as a list of (path, message) ("" is the document itself).
    """

    def __init__(self, code: int, message: str, path: Optional[str] = None,
                 items: Optional[Sequence[tuple[str, str]]] = None, errno: int = 0) -> None:
        """An error with code (OAKUK_E*), message, path, items and errno (see the class)."""
        super().__init__(message)
        self.code = code
        self.code_name = text(lib.oakuk_status_name(code))
        self.message = message
        self.path = path
        self.items = list(items or [])
        self.errno = errno

    def __str__(self) -> str:
        return "%s: %s" % (self.code_name, self.message)


def error_from_ptr(err: int) -> OakukError:
    """Builds an OakukError from an oakuk_error * and frees the C object."""
    try:
        n = lib.oakuk_error_item_count(err)
        items = [(text(lib.oakuk_error_item_path(err, i)) or "",
                  text(lib.oakuk_error_item_message(err, i)) or "") for i in range(n)]
        return OakukError(lib.oakuk_error_code(err), text(lib.oakuk_error_message(err)) or "",
                          text(lib.oakuk_error_path(err)), items, lib.oakuk_error_errno(err))
    finally:
        lib.oakuk_error_free(err)


def raise_error(err: ctypes.c_void_p, code: Optional[int] = None, what: str = "call") -> NoReturn:
    """Raises the error a failed call left in err (a c_void_p); frees it."""
    if err.value:
        raise error_from_ptr(err.value)
    raise OakukError(code if code is not None and code < 0 else -1,
                     "%s failed without an error object" % what)


VIRT_NAMES = {1: "container", 2: "unikernel"}


def virt_code(virt: Union[str, int]) -> int:
    """"container"/"docker"/"unikernel" or an OAKUK_VIRT_* int -> int."""
    if isinstance(virt, int):
        return virt
    code = lib.oakuk_virt_from_name(virt.encode("utf-8"))
    if code == 0:
        raise ValueError("unknown virtualization %r (expected container or unikernel)" % (virt,))
    return code


def virt_name(code: int) -> Optional[str]:
    """OAKUK_VIRT_* -> "container", "unikernel" or None."""
    return text(lib.oakuk_virt_name(code))


def accel_name(code: int) -> Optional[str]:
    """OAKUK_ACCEL_* -> "kvm", "tcg" or None."""
    return text(lib.oakuk_accel_name(code))


_H = TypeVar("_H", bound="Handle")


class Handle:
    """Owns one reference to a library object; drops it when garbage collected.

    Subclasses set _unref_fn (and _ref_fn to wrap borrowed pointers). The function objects are
    kept on the class so __del__ still finds them while the interpreter shuts down.
    """

    _unref_fn: Optional[Callable[..., None]] = None
    _ref_fn: Optional[Callable[..., int]] = None
    _ptr: Optional[ctypes.c_void_p] = None

    def __init__(self, ptr: Optional[int], owned: bool = True) -> None:
        """Takes ptr's reference (owned) or a new one (borrowed: owned=False)."""
        if not ptr:
            raise ValueError("%s: NULL handle" % type(self).__name__)
        if not owned:
            ptr = self._ref_fn(ptr)
        self._ptr = ctypes.c_void_p(ptr)

    @classmethod
    def _wrap(cls: type[_H], ptr: Optional[int], owned: bool = True) -> _H:
        obj = cls.__new__(cls)
        Handle.__init__(obj, ptr, owned)
        return obj

    @property
    def _as_parameter_(self) -> Optional[ctypes.c_void_p]:
        return self._ptr

    def __del__(self) -> None:
        ptr = self.__dict__.get("_ptr")
        unref = type(self)._unref_fn
        if ptr is None or unref is None:
            return
        self._ptr = None
        try:
            unref(ptr)
        except Exception:  # the interpreter is shutting down; the process frees everything
            pass

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Handle) and type(other) is type(self) and \
            _address(self) == _address(other)

    def __hash__(self) -> int:
        return hash((type(self), _address(self)))


def _address(handle: Handle) -> Optional[int]:
    return None if handle._ptr is None else handle._ptr.value
