#!/usr/bin/python3
"""Check the shape of estream's C modules (issue 13), after `make`:

- every call between modules goes down the order of docs/architecture.md
  ("Source layout", "C"): a module uses only symbols of the modules it may
  call (read from the built objects with nm), plus the GUC variables of
  estream.c;
- no C function is 150 lines or longer (from the line of its return type
  to its closing brace).

Usage: scripts/check_modules.py   (from the top of the tree; exit 1 on a
violation, listing each)
"""
import glob
import os
import re
import subprocess
import sys

# module -> the modules it may call (docs/architecture.md)
MAY_CALL = {
    "estream": "*",
    "worker": {"cdc_apply", "shmem", "topic", "acl", "schema"},
    "cdc_apply": {"cdc_plugin", "cdc_envelope", "schema"},
    "produce": {"shmem", "topic", "acl", "murmur2", "schema"},
    "fetch": {"shmem", "topic", "acl", "murmur2", "schema"},
    "compact": {"shmem", "topic", "acl", "murmur2", "schema"},
    "cdc_plugin": {"cdc_envelope"},
    "shmem": {"topic", "acl"},
    "cdc_envelope": set(),
    "topic": {"acl", "schema"},
    "acl": {"schema"},
    "murmur2": set(),
    "schema": set(),
}
MAX_LINES = 150


def nm(obj, *flags):
    out = subprocess.run(["nm", *flags, obj], check=True, capture_output=True,
                         text=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def check_calls():
    errors = []
    defined = {}
    gucs = set()                # variables of estream.c: every module may read them
    objs = sorted(glob.glob("src/*.o"))
    if not objs:
        sys.exit("no src/*.o: run make first")
    for obj in objs:
        mod = os.path.basename(obj)[:-2]
        for f in nm(obj, "--defined-only"):
            if len(f) == 3 and f[1] in "TDBR":
                defined[f[2]] = mod
                if mod == "estream" and f[1] in "DB":
                    gucs.add(f[2])
    for obj in objs:
        mod = os.path.basename(obj)[:-2]
        allowed = MAY_CALL.get(mod)
        if allowed is None:
            errors.append(f"{mod}: not in the module order")
            continue
        for f in nm(obj, "-u"):
            sym = f[-1]
            other = defined.get(sym)
            if other is None or other == mod or allowed == "*":
                continue
            if sym in gucs:
                continue
            if other not in allowed:
                errors.append(f"{mod} uses {sym} of {other}, which it may not call")
    return errors


def check_lengths():
    errors = []
    for path in sorted(glob.glob("src/*.c")):
        lines = open(path).read().split("\n")
        i = 0
        while i < len(lines):
            if lines[i] == "{":
                j = i - 1
                while j >= 0 and not re.match(r"^[A-Za-z_]\w*\s*\(", lines[j]):
                    if lines[j] == "" or lines[j].startswith("}") or lines[j].endswith(";"):
                        j = -1
                        break
                    j -= 1
                k = i + 1
                while k < len(lines) and lines[k] != "}":
                    k += 1
                if j >= 0:
                    name = re.match(r"^([A-Za-z_]\w*)", lines[j]).group(1)
                    start = j - 1 if j > 0 and re.match(r"^[A-Za-z_]", lines[j - 1]) \
                        and not lines[j - 1].endswith((";", "}")) else j
                    n = k - start + 1
                    if n >= MAX_LINES:
                        errors.append(f"{path}:{start + 1}: {name} is {n} lines")
                i = k
            i += 1
    return errors


def main():
    errors = check_calls() + check_lengths()
    for e in errors:
        print(e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
