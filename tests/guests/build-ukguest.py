#!/usr/bin/env python3
"""Builds the oakuk test kernel (tests/guests/ukguest) as one imitated Unikraft x86_64 QEMU image:
a 32-bit multiboot ELF, like Unikraft's *_qemu-x86_64 kernels, with the C compiler meson uses.

Usage: build-ukguest.py --version X.Y.Z --src DIR --out-kernel K --out-image I.tar.gz -- CC...

The image is in the Oakestra format: a tar.gz holding just `kernel`, with no oakuk.json, so that
the runtime has to tell the Unikraft version from the kernel itself.
"""
import argparse
import gzip
import io
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile

CODENAMES = {"0.16.3": "Telesto", "0.15.0": "Pandora"}
# Unikraft takes its address from netdev.ip= since 0.16.1, from netdev.ipv4_* before.
NETDEV_IP_SINCE = (0, 16, 1)
# Freestanding, no libgcc (nothing here divides 64-bit numbers) and no 32-bit libc headers, so a
# plain x86_64 gcc builds it without gcc-multilib. No SSE/x87: nothing sets them up.
CFLAGS = ["-m32", "-march=i686", "-ffreestanding", "-fno-pic", "-fno-pie", "-fno-stack-protector",
          "-fno-asynchronous-unwind-tables", "-mgeneral-regs-only", "-nostdinc", "-O2", "-std=gnu11",
          "-Wall", "-Wextra", "-Werror"]
# gcc turns copy and fill loops into memcpy/memset calls even when freestanding, and nothing here
# provides those; clang does not (and does not know the flag).
GCC_CFLAGS = ["-fno-tree-loop-distribute-patterns"]
LDFLAGS = ["-m32", "-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none", "-Wl,-z,max-page-size=0x1000"]


def die(msg):
    print(f"build-ukguest: {msg}", file=sys.stderr)
    sys.exit(1)


def run(argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"{' '.join(argv)} failed:\n{r.stdout}{r.stderr}")


def is_clang(cc):
    r = subprocess.run(cc + ["-dM", "-E", "-x", "c", os.devnull], capture_output=True, text=True)
    return "__clang__" in r.stdout


def build_kernel(cc, src, version, out):
    codename = CODENAMES[version]
    netdev_ip = tuple(int(x) for x in version.split(".")) >= NETDEV_IP_SINCE
    defines = [f'-DUKGUEST_VERSION="{version}"', f'-DUKGUEST_CODENAME="{codename}"',
               f"-DUKGUEST_NETDEV_IP={int(netdev_ip)}"]
    cflags = CFLAGS + ([] if is_clang(cc) else GCC_CFLAGS)
    with tempfile.TemporaryDirectory(prefix=f".ukguest-{version}-", dir=out.parent) as tmp:
        objs = []
        for name in ("start.S", "main.c"):
            obj = os.path.join(tmp, name + ".o")
            run(cc + cflags + defines + ["-c", str(src / name), "-o", obj])
            objs.append(obj)
        elf = os.path.join(tmp, "kernel")
        run(cc + LDFLAGS + [f"-Wl,-T,{src / 'link.ld'}"] + objs + ["-o", elf])
        data = pathlib.Path(elf).read_bytes()
    if f"Unikraft {codename} {version}".encode() not in data:
        die(f"{out}: the version string did not make it into the kernel")
    return data


def write_atomic(path, data):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def image(kernel):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        ti = tarfile.TarInfo("kernel")
        ti.size, ti.mode, ti.mtime = len(kernel), 0o755, 0
        t.addfile(ti, io.BytesIO(kernel))
    return gzip.compress(buf.getvalue(), 9, mtime=0)  # the same bytes on every build


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", required=True, choices=sorted(CODENAMES))
    ap.add_argument("--src", required=True, type=pathlib.Path)
    ap.add_argument("--out-kernel", required=True, type=pathlib.Path)
    ap.add_argument("--out-image", required=True, type=pathlib.Path)
    ap.add_argument("cc", nargs="+", help="the C compiler command, after --")
    a = ap.parse_args()
    kernel = build_kernel(a.cc, a.src, a.version, a.out_kernel)
    write_atomic(a.out_kernel, kernel)
    write_atomic(a.out_image, image(kernel))


if __name__ == "__main__":
    main()
