#!/usr/bin/env python3
"""Idle RSS of offpath, broken down by mapping kind (run by idle-rss.sh; see README.md here).

Starts the release offpath on its defaults (UDP on a free port, status on a free port) twice: in local
mode (no API key) and with an API key and DD_DD_URL at the fake intake (self-telemetry then ships every
flush), waits `--seconds` (past the first flushes), and reads /proc/<pid>/smaps. Thread stacks are found
from each thread's stack pointer (/proc/<pid>/task/*/syscall).
"""

import argparse
import glob
import os
import re
import tempfile
import time

from loss_curve import FakeIntake, Offpath, offpath_env


def thread_sps(pid):
    sps = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            name = open(f"{task}/comm").read().strip()
            fields = open(f"{task}/syscall").read().split()
        except OSError:
            continue
        if len(fields) >= 3:
            sps[int(fields[-2], 16)] = name
    return sps


def breakdown(pid, exe):
    maps, cur = [], None
    for line in open(f"/proc/{pid}/smaps"):
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$", line)
        if m:
            cur = {"lo": int(m[1], 16), "hi": int(m[2], 16), "perm": m[3], "path": m[4].strip(), "kb": {}}
            maps.append(cur)
        elif cur is not None:
            key, _, value = line.partition(":")
            if value.split() and value.split()[0].isdigit():
                cur["kb"][key] = int(value.split()[0])
    sps = thread_sps(pid)
    kinds = {}
    for m in maps:
        path, perm = m["path"], m["perm"]
        if path == "[stack]":
            kind = "main thread stack"
        elif any(m["lo"] <= sp < m["hi"] for sp in sps):
            kind = "thread stacks"
        elif path == "[heap]":
            kind = "heap (brk: main arena)"
        elif path.startswith("/") and os.path.realpath(path) == os.path.realpath(exe):
            kind = {"r-xp": "binary code", "rw-p": "binary data/bss"}.get(perm, "binary read-only (rodata, relro)")
        elif path.startswith("/"):
            kind = "shared libraries" + (" code" if "x" in perm else " data")
        elif path == "" and perm == "rw-p":
            kind = "anonymous (thread arenas, large allocations)"
        else:
            kind = "other"
        anon, rss = m["kb"].get("Anonymous", 0), m["kb"].get("Rss", 0)
        total = kinds.setdefault(kind, [0, 0])
        total[0] += rss
        total[1] += anon
    return kinds


def status(pid):
    return {k: v.strip() for k, _, v in (line.partition(":") for line in open(f"/proc/{pid}/status"))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--seconds", type=float, default=35.0, help="idle time before measuring (default %(default)s)")
    args = p.parse_args()
    offpath = os.path.join(args.bin_dir, "offpath")
    for mode in ("local", "intake"):
        with tempfile.TemporaryDirectory(prefix="offpath-idle-") as work:
            intake = FakeIntake(os.path.join(args.bin_dir, "offpath-fake-intake")) if mode == "intake" else None
            env = offpath_env(intake.url if intake else "http://127.0.0.1:9", {})
            for key in ("OFFPATH_SELF_TELEMETRY", "OFFPATH_FALLBACK", "OFFPATH_SHUTDOWN_TIMEOUT"):
                del env[key]  # the defaults
            if not intake:
                del env["DD_API_KEY"], env["DD_DD_URL"]
            op = Offpath(offpath, env, work)
            try:
                time.sleep(args.seconds)
                st = status(op.pid)
                kinds = breakdown(op.pid, offpath)
            finally:
                op.stop()
                op.kill()
                if intake:
                    intake.stop()
        print(f"{mode}: VmRSS {st['VmRSS']} (anonymous {st['RssAnon']}, file-backed {st['RssFile']}), "
              f"threads {st['Threads']}, after {args.seconds:.0f} s")
        for kind, (rss, anon) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
            if rss:
                print(f"  {rss:6d} kB  {kind}" + (f" ({anon} kB anonymous)" if anon and anon != rss else ""))


if __name__ == "__main__":
    main()
