#!/usr/bin/env python3
"""Compiles a consumer of <oakuk/oakuk.h> with -std=c99 -Wall -Werror -pedantic, links it against
liboakuk.so and runs it; also checks that a sub-header refuses direct inclusion."""
import os
import subprocess
import sys

cc, incdir, src, lib, outdir = sys.argv[1:6]
exe = os.path.join(outdir, "c99-consumer")
libdir = os.path.dirname(lib)
flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", incdir]
subprocess.run([cc, *flags, src, "-o", exe, lib, f"-Wl,-rpath,{libdir}"], check=True)
subprocess.run([exe], check=True)

bad = os.path.join(outdir, "c99-direct.c")
with open(bad, "w") as f:
    f.write("#include <oakuk/sched.h>\nint main(void) { return 0; }\n")
r = subprocess.run([cc, *flags, "-c", bad, "-o", os.devnull], capture_output=True, text=True)
if r.returncode == 0 or "Only <oakuk/oakuk.h>" not in r.stderr:
    print("including <oakuk/sched.h> directly was not refused", file=sys.stderr)
    sys.exit(1)
print("ok")
