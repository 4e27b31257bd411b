#!/usr/bin/env python3
"""Checks that liboakuk.so exports exactly the symbols of lib/liboakuk.sym, that every one of them
is declared OAKUK_API in a public header, and that every OAKUK_API declaration is exported."""
import pathlib
import re
import subprocess
import sys

lib, symfile, incdir = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])

out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True, capture_output=True, text=True).stdout
exported = set()
for line in out.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "TDBRWV" and not parts[2].startswith("LIBOAKUK_"):
        exported.add(parts[2].split("@")[0])

text = pathlib.Path(symfile).read_text()
text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
listed = set(re.findall(r"^\s*(oakuk_[a-z0-9_]+);", text, flags=re.M))

declared = set()
for h in sorted(incdir.glob("*.h")):
    src = re.sub(r"/\*.*?\*/", "", h.read_text(), flags=re.S)
    for decl in re.findall(r"OAKUK_API\b([^;{]*)", src):
        m = re.search(r"\b(oakuk_[a-z0-9_]+)\s*\(", decl)
        if m:
            declared.add(m.group(1))

ok = True
for name, a, b in (("exported but not in liboakuk.sym", exported, listed),
                   ("in liboakuk.sym but not exported", listed, exported),
                   ("in liboakuk.sym but not declared OAKUK_API in a header", listed, declared),
                   ("declared OAKUK_API but not in liboakuk.sym", declared, listed)):
    diff = sorted(a - b)
    if diff:
        ok = False
        print(f"{name}: {', '.join(diff)}")
if not exported:
    ok = False
    print("no symbols exported at all")
print(f"{len(exported)} exported, {len(listed)} listed, {len(declared)} declared")
sys.exit(0 if ok else 1)
