#!/usr/bin/env python3
"""Writes a man page (troff, man macros) from a program's GLib --help output, at build time.

Usage: help2man.py --name NAME --section N --version V --summary TEXT --output FILE
                   [--sub WORD]... [--commands] [--see-also PAGE]... [--file PATH=TEXT]... -- PROGRAM

--sub WORD adds `PROGRAM WORD --help` as a section of its own (oakuk-cluster join); --commands adds
every command `PROGRAM --help` lists under "Commands:" (the oakuk CLI). Nothing is downloaded and
nothing but the built program is run."""
import argparse
import os
import re
import subprocess
import sys

OPTION = re.compile(r"^\s{2}(-\w, )?(--\S+?)(=\S+)?\s{2,}(\S.*)$")


def esc(text):
    text = text.replace("\\", "\\e").replace("\u2026", "...").replace("[OPTION?]", "[OPTION...]")
    text = text.replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def help_text(argv):
    env = dict(os.environ, LC_ALL="C.UTF-8", NO_COLOR="1")
    env.pop("OAKUK_URL", None)
    proc = subprocess.run(argv + ["--help"], capture_output=True, text=True, env=env, timeout=30)
    text = proc.stdout or proc.stderr
    if not text.strip():
        sys.exit(f"help2man: {' '.join(argv)} --help printed nothing (exit {proc.returncode})")
    return text


def render(text, heading):
    """Troff for one --help text: synopsis, description paragraphs, options as tagged paragraphs."""
    out, usage, mode, options_seen = [], [], None, False
    for line in text.splitlines():
        if line.startswith("Usage:"):
            mode = "usage"
            rest = line[len("Usage:"):].strip()
            if rest:
                usage.append(rest)
            continue
        if re.match(r"^[A-Z][\w ]*Options:$", line) or line.strip() == "Commands:":
            mode = "options" if line.endswith("Options:") else "commands"
            if mode == "commands":
                out.append(".PP\nCommands:")
            elif not options_seen:
                out.append(".SH OPTIONS" if heading == "SH" else ".PP\nOptions:")
            options_seen |= mode == "options"
            continue
        if not line.strip():
            if mode == "usage":
                mode = "text"
            elif mode in ("options", "commands"):
                mode = "text"
            out.append(".PP") if mode == "text" and out and out[-1] != ".PP" else None
            continue
        if mode == "usage":
            usage.append(line.strip())
        elif mode == "options":
            m = OPTION.match(line)
            if m is None:
                out.append(esc(line.strip()))
                continue
            short, long_, arg, desc = m.groups()
            tag = (f"\\fB{esc(short.strip(', '))}\\fR, " if short else "") + f"\\fB{esc(long_)}\\fR"
            if arg:
                tag += f"=\\fI{esc(arg[1:])}\\fR"
            out += [".TP", tag, esc(desc)]
        elif mode == "commands":
            m = re.match(r"^\s+(\S+)\s+(\S.*)$", line)
            out += [".TP", f"\\fB{esc(m.group(1))}\\fR", esc(m.group(2))] if m else [esc(line.strip())]
        else:
            mode = "text"
            out.append(esc(line.strip()))
    return usage, out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--section", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--sub", action="append", default=[])
    p.add_argument("--commands", action="store_true")
    p.add_argument("--see-also", action="append", default=[])
    p.add_argument("--file", action="append", default=[])
    p.add_argument("program", nargs=1)
    a = p.parse_args()
    prog = a.program[0]
    usage, body = render(help_text([prog]), "SH")
    lines = [f'.TH {a.name.upper()} {a.section} "" "liboakuk {a.version}" "liboakuk manual"',
             ".SH NAME", f"{esc(a.name)} \\- {esc(a.summary)}", ".SH SYNOPSIS"]
    subs = list(a.sub)
    if a.commands:
        listing = help_text([prog])
        block = listing.split("Commands:", 1)[1].split("\n\n", 1)[0] if "Commands:" in listing else ""
        subs += [m.group(1) for m in re.finditer(r"^\s+(\S+)\s", block, re.M)]
    sub_usage, sub_bodies = [], []
    for sub in subs:
        u, b = render(help_text([prog, sub]), "SS")
        sub_usage += u
        sub_bodies += [f".SH {esc(sub.upper())}" if not a.commands else f".SS {esc(a.name + ' ' + sub)}"]
        sub_bodies += [".nf", *(f"\\fB{esc(x)}\\fR" for x in u), ".fi", ".PP", *b]
    for u in usage + (sub_usage if not a.commands else []):
        lines += [f"\\fB{esc(u)}\\fR", ".br"]
    lines += [".SH DESCRIPTION", *body]
    if a.commands:
        lines += [".SH COMMANDS"]
    lines += sub_bodies
    if a.file:
        lines += [".SH FILES"]
        for f in a.file:
            path, _, text = f.partition("=")
            lines += [".TP", f"\\fI{esc(path)}\\fR", esc(text)]
    if a.see_also:
        pages = [re.match(r"^(.*)\((\w+)\)$", s).groups() for s in a.see_also]
        lines += [".SH SEE ALSO", ",\n".join(f"\\fB{esc(n)}\\fR({sec})" for n, sec in pages)]
    text = "\n".join(x for x in lines if x is not None) + "\n"
    text = re.sub(r"(\.PP\n)+", ".PP\n", text)
    with open(a.output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
