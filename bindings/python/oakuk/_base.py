"""Error conversion and the base class of every wrapped library object."""

import ctypes

from ._lib import lib, text

__all__ = ["OakukError", "raise_error", "Handle", "VIRT_NAMES", "virt_code", "virt_name",
           "accel_name"]


class OakukError(Exception):
    """A liboakuk failure.

    code: the negative OAKUK_E* value; code_name: "OAKUK_EINVAL", ...; message: the whole
    sentence; errno: the OS error (0 when none); path: JSON path of the (first) offending field or
    None; items: every problem found, as a list of (path, message) ("" is the document itself).
    """

    def __init__(self, code, message, path=None, items=None, errno=0):
        super().__init__(message)
        self.code = code
        self.code_name = text(lib.oakuk_status_name(code))
        self.message = message
        self.path = path
        self.items = list(items or [])
        self.errno = errno

    def __str__(self):
        return "%s: %s" % (self.code_name, self.message)


def error_from_ptr(err):
    """Builds an OakukError from an oakuk_error * and frees the C object."""
    try:
        n = lib.oakuk_error_item_count(err)
        items = [(text(lib.oakuk_error_item_path(err, i)) or "",
                  text(lib.oakuk_error_item_message(err, i)) or "") for i in range(n)]
        return OakukError(lib.oakuk_error_code(err), text(lib.oakuk_error_message(err)) or "",
                          text(lib.oakuk_error_path(err)), items, lib.oakuk_error_errno(err))
    finally:
        lib.oakuk_error_free(err)


def raise_error(err, code=None, what="call"):
    """Raises the error a failed call left in err (a c_void_p); frees it."""
    if err.value:
        raise error_from_ptr(err.value)
    raise OakukError(code if code is not None and code < 0 else -1,
                     "%s failed without an error object" % what)


VIRT_NAMES = {1: "container", 2: "unikernel"}


def virt_code(virt):
    """"container"/"docker"/"unikernel" or an OAKUK_VIRT_* int -> int."""
    if isinstance(virt, int):
        return virt
    code = lib.oakuk_virt_from_name(virt.encode("utf-8"))
    if code == 0:
        raise ValueError("unknown virtualization %r (expected container or unikernel)" % (virt,))
    return code


def virt_name(code):
    return text(lib.oakuk_virt_name(code))


def accel_name(code):
    return text(lib.oakuk_accel_name(code))


class Handle:
    """Owns one reference to a library object; drops it when garbage collected.

    Subclasses set _unref_fn (and _ref_fn to wrap borrowed pointers). The function objects are
    kept on the class so __del__ still finds them while the interpreter shuts down.
    """

    _unref_fn = None
    _ref_fn = None
    _ptr = None

    def __init__(self, ptr, owned=True):
        if not ptr:
            raise ValueError("%s: NULL handle" % type(self).__name__)
        if not owned:
            ptr = self._ref_fn(ptr)
        self._ptr = ctypes.c_void_p(ptr)

    @classmethod
    def _wrap(cls, ptr, owned=True):
        obj = cls.__new__(cls)
        Handle.__init__(obj, ptr, owned)
        return obj

    @property
    def _as_parameter_(self):
        return self._ptr

    def __del__(self):
        ptr = self.__dict__.get("_ptr")
        unref = type(self)._unref_fn
        if ptr is None or unref is None:
            return
        self._ptr = None
        try:
            unref(ptr)
        except Exception:  # the interpreter is shutting down; the process frees everything
            pass

    def __eq__(self, other):
        return isinstance(other, Handle) and type(other) is type(self) and \
            self._ptr.value == other._ptr.value

    def __hash__(self):
        return hash((type(self), self._ptr.value))
