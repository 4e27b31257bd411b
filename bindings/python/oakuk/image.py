"""Unikernel images (<oakuk/image.h>): a cache that fetches over http(s)/file, verifies sha256 and
unpacks safely; kernel inspection."""

from __future__ import annotations

import ctypes
import os
from typing import Callable, Optional, Sequence, Tuple, Union

from ._base import Handle, OakukError, raise_error
from ._lib import PROGRESS_CB, byref, c_void_p, fs_bytes, lib, take_string, text, to_bytes

__all__ = ["ImageCache", "Image", "code_is_oci", "kernel_arch", "kernel_format",
           "kernel_unikraft_version"]

PathLike = Union[str, bytes, "os.PathLike[str]"]
Progress = Callable[[int, int], None]

OPTIONS_VERSION = 3


class _Options(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint),
                ("max_download_bytes", ctypes.c_uint64),
                ("max_unpacked_bytes", ctypes.c_uint64),
                ("max_entries", ctypes.c_uint64),
                ("timeout_s", ctypes.c_uint32),
                ("max_redirects", ctypes.c_uint32),
                ("connect_timeout_s", ctypes.c_uint32),
                ("stall_timeout_s", ctypes.c_uint32),
                ("file_allowed_dirs", ctypes.c_char_p),
                ("max_cache_bytes", ctypes.c_uint64),
                ("insecure_registries", ctypes.c_char_p)]


_OPTION_NAMES = ("max_download_bytes", "max_unpacked_bytes", "max_entries", "timeout_s",
                 "max_redirects", "connect_timeout_s", "stall_timeout_s", "max_cache_bytes")


class Image(Handle):
    """An unpacked image in the cache; it stays in the cache (is not pruned) while this object
    lives."""

    _unref_fn = lib.oakuk_image_unref
    _ref_fn = lib.oakuk_image_ref

    @property
    def dir(self) -> str:
        """The image's cache directory."""
        return text(lib.oakuk_image_dir(self))

    @property
    def kernel(self) -> str:
        """Absolute path of the kernel (readable by every user)."""
        return text(lib.oakuk_image_kernel(self))

    @property
    def initrd(self) -> Optional[str]:
        """Absolute path of the initrd, or None."""
        return text(lib.oakuk_image_initrd(self))

    @property
    def files_dir(self) -> Optional[str]:
        """Absolute path of the image's files/ directory, or None."""
        return text(lib.oakuk_image_files_dir(self))

    @property
    def flavor(self) -> str:
        """"unikraft", "linux" or "unknown" (oakuk.json, else the kernel's contents)."""
        return text(lib.oakuk_image_flavor(self))

    @property
    def version(self) -> Optional[str]:
        """The flavor's version ("0.16.3", "6.1.0-56-amd64"), or None."""
        return text(lib.oakuk_image_version(self))

    @property
    def cmdline_style(self) -> Optional[str]:
        """oakuk.json's cmdline_style, or None."""
        return text(lib.oakuk_image_cmdline_style(self))

    @property
    def cmdline_extra(self) -> Optional[str]:
        """oakuk.json's cmdline_extra (kernel arguments, e.g. "console=ttyS0"), or None."""
        return text(lib.oakuk_image_cmdline_extra(self))

    @property
    def arch(self) -> Optional[str]:
        """GOARCH of the kernel, or None when not recognised."""
        return text(lib.oakuk_image_arch(self))

    @property
    def sha256(self) -> str:
        """Lower-case hex sha256 of the downloaded artifact."""
        return text(lib.oakuk_image_sha256(self))

    @property
    def url(self) -> str:
        """The URL (or OCI reference) the image was fetched from."""
        return text(lib.oakuk_image_url(self))

    @property
    def digest(self) -> Optional[str]:
        """"sha256:<hex>" of an OCI image's platform manifest; None for a URL's image."""
        return text(lib.oakuk_image_digest(self))

    @property
    def args(self) -> list[str]:
        """The image's own kernel arguments (OCI images); [] for a tarball."""
        return [text(lib.oakuk_image_arg(self, i)) for i in range(lib.oakuk_image_arg_count(self))]

    @property
    def env(self) -> list[str]:
        """The image's environment ("KEY=value"); [] for a tarball."""
        return [text(lib.oakuk_image_env(self, i)) for i in range(lib.oakuk_image_env_count(self))]

    def __repr__(self) -> str:
        return "<oakuk.Image %s %s %s>" % (self.url, self.flavor, self.arch)


def _progress(progress: Optional[Progress]) -> Tuple[Optional[object], list]:
    """A C progress callback calling progress(bytes, total); the list collects what it raised."""
    if progress is None:
        return None, []
    raised: list = []

    def trampoline(done: int, total: int, _data: Optional[int]) -> None:
        if raised:
            return
        try:
            progress(done, total)
        except BaseException as exc:  # re-raised after the C call returns
            raised.append(exc)

    return PROGRESS_CB(trampoline), raised


class ImageCache(Handle):
    """A cache of unpacked images in a directory (created if missing).

    file_allowed_dirs lists the directories file:// URLs may read (none by default: every
    file:// URL is refused). The other keyword arguments are the fields of
    oakuk_image_cache_options (max_download_bytes, max_unpacked_bytes, max_entries, timeout_s,
    max_redirects, connect_timeout_s, stall_timeout_s, max_cache_bytes) and insecure_registries.
    """

    _unref_fn = lib.oakuk_image_cache_unref
    _ref_fn = lib.oakuk_image_cache_ref

    def __init__(self, dir: PathLike, file_allowed_dirs: Optional[Sequence[PathLike]] = None,
                 insecure_registries: Optional[str] = None, **limits: int) -> None:
        """Opens (creating it if missing) the cache at dir; raises OakukError naming an invalid
        option."""
        opts = _Options()
        rc = lib.oakuk_image_cache_options_init(byref(opts), OPTIONS_VERSION)
        if rc != 0:
            raise OakukError(rc, "oakuk_image_cache_options_init: version %d unknown to the library"
                             % OPTIONS_VERSION)
        for key, value in limits.items():
            if key not in _OPTION_NAMES:
                raise TypeError("ImageCache: unknown option %r" % key)
            setattr(opts, key, int(value))
        allowed = None
        if file_allowed_dirs:
            allowed = b":".join(fs_bytes(d, "file_allowed_dirs") for d in file_allowed_dirs)
        opts.file_allowed_dirs = allowed
        opts.insecure_registries = to_bytes(insecure_registries, "insecure_registries")
        err = c_void_p()
        ptr = lib.oakuk_image_cache_new(fs_bytes(dir, "dir"), byref(opts), byref(err))
        if not ptr:
            raise_error(err, what="oakuk_image_cache_new")
        Handle.__init__(self, ptr)

    @property
    def dir(self) -> str:
        """The cache's directory."""
        return text(lib.oakuk_image_cache_dir(self))

    def fetch(self, url: str, sha256: Optional[str] = None,
              progress: Optional[Progress] = None) -> Image:
        """Fetches url (http://, https://, file://) into the cache, or reuses a finished entry;
        blocks. sha256 (64 hex digits) is checked when given. progress(bytes, total) is called on
        this thread (total -1 when unknown). Raises OakukError: OAKUK_EVERIFY (mismatch),
        OAKUK_EPERM (file:// outside file_allowed_dirs, unsafe entry), OAKUK_ENOTFOUND, ..."""
        cb, raised = _progress(progress)
        err = c_void_p()
        ptr = lib.oakuk_image_cache_fetch_sync(self, to_bytes(url, "url"), to_bytes(sha256, "sha256"),
                                               cb, None, byref(err))
        if raised:
            if ptr:
                lib.oakuk_image_unref(ptr)
            if err.value:
                lib.oakuk_error_free(err)
            raise raised[0]
        if not ptr:
            raise_error(err, what="oakuk_image_cache_fetch_sync")
        return Image._wrap(ptr)

    def fetch_oci(self, reference: str, arch: Optional[str] = None, username: Optional[str] = None,
                  password: Optional[str] = None, progress: Optional[Progress] = None) -> Image:
        """Fetches an OCI unikernel image ("registry/name:tag", "oci-archive:<url>") for arch
        (None: this machine's); blocks. Raises OakukError as fetch, and OAKUK_EUNSUPPORTED."""
        cb, raised = _progress(progress)
        err = c_void_p()
        ptr = lib.oakuk_image_cache_fetch_oci_sync(self, to_bytes(reference, "reference"),
                                                   to_bytes(arch, "arch"), to_bytes(username, "username"),
                                                   to_bytes(password, "password"), cb, None, byref(err))
        if raised:
            if ptr:
                lib.oakuk_image_unref(ptr)
            if err.value:
                lib.oakuk_error_free(err)
            raise raised[0]
        if not ptr:
            raise_error(err, what="oakuk_image_cache_fetch_oci_sync")
        return Image._wrap(ptr)

    @property
    def size(self) -> int:
        """Bytes the cache holds (unpacked images and OCI blobs)."""
        return int(lib.oakuk_image_cache_size(self))

    def prune(self, keep_bytes: int = 0) -> int:
        """Removes unused images, least recently used first, until at most keep_bytes remain
        (0: every unused image); returns the bytes freed."""
        freed = ctypes.c_uint64()
        err = c_void_p()
        rc = lib.oakuk_image_cache_prune(byref(freed), self, int(keep_bytes), byref(err))
        if rc != 0:
            raise_error(err, rc, "oakuk_image_cache_prune")
        return freed.value

    def __repr__(self) -> str:
        return "<oakuk.ImageCache %s>" % self.dir


def code_is_oci(code: str) -> bool:
    """Whether code is an OCI reference rather than an http(s)/file URL."""
    return bool(lib.oakuk_image_code_is_oci(to_bytes(code, "code")))


def kernel_arch(path: PathLike) -> str:
    """GOARCH of the kernel file at path, judged by content; raises OakukError (OAKUK_EIO
    unreadable, OAKUK_EINVAL not a kernel QEMU boots, with the reason)."""
    err = c_void_p()
    arch = lib.oakuk_image_kernel_arch(fs_bytes(path), byref(err))
    if arch is None:
        raise_error(err, what="oakuk_image_kernel_arch")
    return text(arch)


def kernel_format(path: PathLike) -> str:
    """How QEMU boots the kernel at path ("bzImage", "multiboot (32-bit ELF)", ...); raises
    OakukError as kernel_arch."""
    err = c_void_p()
    fmt = lib.oakuk_image_kernel_format(fs_bytes(path), byref(err))
    if fmt is None:
        raise_error(err, what="oakuk_image_kernel_format")
    return text(fmt)


def kernel_unikraft_version(path: PathLike) -> Tuple[str, Optional[str]]:
    """(flavor, version) found in the kernel at path: ("unikraft", "0.16.3"), ("linux", ...),
    or ("unknown", None)."""
    flavor = ctypes.c_char_p()
    version = c_void_p()
    err = c_void_p()
    rc = lib.oakuk_image_kernel_unikraft_version(byref(flavor), byref(version), fs_bytes(path),
                                                 byref(err))
    if rc != 0:
        raise_error(err, rc, "oakuk_image_kernel_unikraft_version")
    return text(flavor.value), take_string(version.value)
