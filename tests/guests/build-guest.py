#!/usr/bin/env python3
"""Builds the "Linux single-application microVM" test guest for one architecture from Debian
packages only: Debian's kernel + a static busybox initramfs running tests/guests/init.

Usage: build-guest.py --arch amd64|arm64 --init INIT --out-with-files A.tar.gz --out-plain B.tar.gz
                      --workdir DIR

amd64 uses the host's installed linux-image-amd64 and busybox-static; arm64 packages are fetched
once with `apt-get download` (needs `dpkg --add-architecture arm64`, see scripts/install-deps.sh)
and cached in DIR/debs. Each output is an image in the oakuk format: kernel, initrd, oakuk.json and
(for the -with-files one) files/hello.txt.
"""
import argparse
import glob
import gzip
import io
import json
import lzma
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

# Modules the guest needs, loaded in dependency order (each after what it depends on).
WANTED = ["virtio_pci", "virtio_net", "9pnet_virtio", "9p"]
CONSOLE = {"amd64": "ttyS0", "arm64": "ttyAMA0"}
# Kernel parameters that shorten a TCG boot: skip the TSC re-checks and the timer check (the
# emulated clock is what it is), probe one UART and no PS/2 mouse/keyboard, no speculation
# mitigations (nothing to protect inside a test guest).
FAST_BOOT = {"amd64": "tsc=reliable no_timer_check i8042.noaux i8042.nokbd 8250.nr_uarts=1 mitigations=off",
             "arm64": "mitigations=off"}
HELLO = "hello from the oakuk test guest\n"


def die(msg):
    print(f"build-guest: {msg}", file=sys.stderr)
    sys.exit(1)


def host_kernel():
    """The host's Debian amd64 kernel and its module tree."""
    mods = sorted(glob.glob("/lib/modules/*-amd64"))
    for m in reversed(mods):
        ver = os.path.basename(m)
        vmlinuz = f"/boot/vmlinuz-{ver}"
        if os.path.exists(vmlinuz):
            return pathlib.Path(vmlinuz), pathlib.Path(m)
    die("no /boot/vmlinuz-*-amd64 with matching /lib/modules (install linux-image-amd64)")


def fetch_debs(debs, packages):
    debs.mkdir(parents=True, exist_ok=True)
    for pkg, pattern in packages:
        if not list(debs.glob(pattern)):
            r = subprocess.run(["apt-get", "download", pkg], cwd=debs, capture_output=True, text=True)
            if r.returncode != 0 or not list(debs.glob(pattern)):
                die(f"apt-get download {pkg} failed (is the arm64 architecture added? run "
                    f"scripts/install-deps.sh as root): {r.stderr.strip()}")
    return [sorted(debs.glob(p))[-1] for _, p in packages]


def arm64_tree(workdir):
    """Extracts Debian's arm64 kernel and static busybox; returns (kernel, modules dir, busybox)."""
    kver = os.path.basename(host_kernel()[1]).replace("-amd64", "-arm64")
    debs = workdir / "debs"
    kdeb, bdeb = fetch_debs(debs, [(f"linux-image-{kver}:arm64", f"linux-image-{kver}_*_arm64.deb"),
                                   ("busybox-static:arm64", "busybox-static_*_arm64.deb")])
    root = workdir / "root-arm64"
    stamp = root / ".stamp"
    want = f"{kdeb.name} {bdeb.name}"
    if not stamp.exists() or stamp.read_text() != want:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for d in (kdeb, bdeb):
            subprocess.run(["dpkg-deb", "-x", str(d), str(root)], check=True)
        stamp.write_text(want)
    return root / f"boot/vmlinuz-{kver}", root / f"lib/modules/{kver}", root / "bin/busybox"


def modinfo(data):
    info = {}
    for field in data.split(b"\0"):
        for key in (b"depends=", b"name="):
            if field.startswith(key) and key.decode()[:-1] not in info:
                info[key.decode()[:-1]] = field[len(key):].decode(errors="replace")
    return info


def read_module(path):
    data = path.read_bytes()
    if path.suffix == ".xz":
        data = lzma.decompress(data)
    elif path.suffix == ".zst":
        die(f"{path}: zstd-compressed modules are not supported")
    return data


def resolve_modules(moddir):
    """Returns [(name, bytes)] for WANTED and their dependencies, dependencies first, skipping
    modules built into the kernel."""
    builtin = set()
    bfile = moddir / "modules.builtin"
    if bfile.exists():
        for line in bfile.read_text().split():
            builtin.add(pathlib.Path(line).name.split(".ko")[0].replace("-", "_"))
    index = {}
    for p in (moddir / "kernel").rglob("*.ko*"):
        index[p.name.split(".ko")[0].replace("-", "_")] = p
    order, seen = [], set()

    def visit(name):
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in index:
            die(f"module {name} is neither built in nor in {moddir}")
        data = read_module(index[name])
        deps = modinfo(data).get("depends", "")
        for d in filter(None, deps.split(",")):
            visit(d)
        order.append((name, data))

    for w in WANTED:
        visit(w)
    return order


class Cpio:
    """A newc cpio archive built in memory (device nodes without needing mknod)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def _pad(self):
        self.buf.write(b"\0" * ((4 - self.buf.tell() % 4) % 4))

    def add(self, name, mode, data=b"", rdev=(0, 0)):
        nameb = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0]
        self.buf.write(b"070701" + b"".join(b"%08x" % f for f in fields))
        self.buf.write(nameb)
        self._pad()
        self.buf.write(data)
        self._pad()
        self.ino += 1

    def dir(self, name):
        self.add(name, 0o040755)

    def file(self, name, data, mode=0o644):
        self.add(name, 0o100000 | mode, data)

    def symlink(self, name, target):
        self.add(name, 0o120777, target.encode())

    def chardev(self, name, major, minor):
        self.add(name, 0o020600, rdev=(major, minor))

    def finish(self):
        self.add("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initrd(busybox, init, modules):
    c = Cpio()
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "run", "files", "www", "www/cgi-bin", "etc",
              "lib", "lib/modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    c.symlink("bin/sh", "busybox")
    c.file("init", init.read_bytes(), 0o755)
    names = []
    for name, data in modules:
        c.file(f"lib/modules/{name}.ko", data)
        names.append(name)
    c.file("etc/modules", ("\n".join(names) + "\n").encode())
    return gzip.compress(c.finish(), 9, mtime=0)


def bzimage_to_vmlinux(data):
    """The ELF vmlinux inside an x86 bzImage. Under TCG the bzImage's own xz decompressor takes
    4-6 s of the boot; QEMU loads an uncompressed vmlinux directly through its PVH entry point
    (Debian builds CONFIG_PVH=y), so the guest starts at once."""
    for magic, fmt in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip")):
        at = data.find(magic)
        while at >= 0:
            try:
                if fmt == "xz":
                    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[at:])
                else:
                    out = gzip.GzipFile(fileobj=io.BytesIO(data[at:])).read()
            except (lzma.LZMAError, OSError, EOFError):
                out = b""
            if out[:4] == b"\x7fELF":
                return out
            at = data.find(magic, at + 1)
    die("no xz or gzip compressed ELF vmlinux found in the amd64 bzImage")


def write_image(out, kernel, initrd, meta, with_files):
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:gz", format=tarfile.GNU_FORMAT, compresslevel=6) as t:
        def add(name, data, mode=0o644):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, 0
            t.addfile(ti, io.BytesIO(data))
        add("kernel", kernel)
        add("initrd", initrd)
        add("oakuk.json", (json.dumps(meta, indent=2) + "\n").encode())
        if with_files:
            ti = tarfile.TarInfo("files")
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            t.addfile(ti)
            add("files/hello.txt", HELLO.encode())
    os.replace(tmp, out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True, choices=["amd64", "arm64"])
    ap.add_argument("--init", required=True, type=pathlib.Path)
    ap.add_argument("--out-with-files", required=True, type=pathlib.Path)
    ap.add_argument("--out-plain", required=True, type=pathlib.Path)
    ap.add_argument("--workdir", required=True, type=pathlib.Path)
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    if a.arch == "amd64":
        kernel, moddir = host_kernel()
        busybox = pathlib.Path("/bin/busybox")
        if not busybox.exists():
            die("/bin/busybox missing (install busybox-static)")
    else:
        kernel, moddir, busybox = arm64_tree(a.workdir)
    try:
        kdata = kernel.read_bytes()
    except PermissionError:
        die(f"cannot read {kernel} (Debian installs it mode 0600: build as root)")
    if kdata[:2] == b"\x1f\x8b":
        kdata = gzip.decompress(kdata)  # arm64 Image.gz: store the raw Image (its header names the arch)
    if a.arch == "amd64":
        kdata = bzimage_to_vmlinux(kdata)
    initrd = build_initrd(busybox, a.init, resolve_modules(moddir))
    kver = moddir.name
    meta = {"flavor": "linux", "version": kver,
            "cmdline_extra": f"console={CONSOLE[a.arch]} quiet panic=-1 {FAST_BOOT[a.arch]}"}
    write_image(a.out_with_files, kdata, initrd, meta, True)
    write_image(a.out_plain, kdata, initrd, meta, False)
    # Loose copies for tests that boot QEMU directly.
    for name, data in (("kernel", kdata), ("initrd", initrd)):
        (a.workdir / f"{a.arch}-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
