"""Instance consoles as text (<oakuk/console.h>): cleaning, tails and crash detection."""

from __future__ import annotations

import os
from typing import Optional, Tuple, Union

from ._base import raise_error
from ._lib import byref, c_void_p, fs_bytes, lib, take_string, to_bytes

__all__ = ["Console", "tail", "crash", "line_crash", "SKIP_EMPTY", "STRIP", "CRASH_KINDS"]

SKIP_EMPTY = 1
"""oakuk_console_tail flag: leave out empty and blank lines."""
STRIP = 2
"""oakuk_console_tail flag: strip leading and trailing white space of each line."""
CRASH_KINDS = {0: None, 1: "unikraft", 2: "linux"}
"""OAKUK_CONSOLE_CRASH_* -> None (no crash), "unikraft", "linux"."""

PathLike = Union[str, bytes, "os.PathLike[str]"]


class Console:
    """A streaming cleaner: feed raw console bytes, get clean UTF-8 text (escape sequences,
    control characters and NULs removed, "\\r\\n" and lone "\\r" turned into "\\n")."""

    def __init__(self) -> None:
        """A new cleaner with nothing held back."""
        self._ptr: Optional[int] = lib.oakuk_console_new()
        if not self._ptr:
            raise MemoryError("oakuk_console_new")

    def feed(self, data: Union[bytes, bytearray, str]) -> str:
        """Cleans the next chunk; returns the text it completes (possibly "")."""
        if self._ptr is None:
            raise ValueError("Console: already finished")
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return take_string(lib.oakuk_console_feed(self._ptr, raw, len(raw))) or ""

    def finish(self) -> str:
        """Ends the stream and returns what was held back; the cleaner cannot be fed after."""
        if self._ptr is None:
            return ""
        try:
            return take_string(lib.oakuk_console_finish(self._ptr)) or ""
        finally:
            lib.oakuk_console_free(self._ptr)
            self._ptr = None

    def __del__(self) -> None:
        ptr = self.__dict__.get("_ptr")
        if ptr:
            self._ptr = None
            try:
                lib.oakuk_console_free(ptr)
            except Exception:  # interpreter shutdown
                pass


def tail(path: PathLike, max_lines: int = 50, max_bytes: int = 65536, flags: int = 0) -> str:
    """The last max_lines lines of the console file at path (from at most its last max_bytes
    bytes), cleaned and joined by "\\n". flags: SKIP_EMPTY | STRIP. Raises OakukError
    (OAKUK_ENOTFOUND for a missing file)."""
    out = c_void_p()
    err = c_void_p()
    rc = lib.oakuk_console_tail(byref(out), fs_bytes(path), int(max_lines), int(max_bytes), int(flags),
                                byref(err))
    if rc != 0:
        raise_error(err, rc, "oakuk_console_tail")
    return take_string(out.value) or ""


def crash(path: PathLike) -> Tuple[Optional[str], Optional[str]]:
    """What the end of the console file at path says about a crash: (kind, line), kind None,
    "unikraft" or "linux"; line the cleaned line that best names it (None without a crash)."""
    line = c_void_p()
    kind = lib.oakuk_console_crash(byref(line), fs_bytes(path))
    return CRASH_KINDS.get(kind, "unknown"), take_string(line.value)


def line_crash(line: str) -> Optional[str]:
    """The same judgement for one line of clean text: None, "unikraft" or "linux"."""
    return CRASH_KINDS.get(lib.oakuk_console_line_crash(to_bytes(line, "line")), "unknown")

