#!/usr/bin/env python3
"""Malformed-packet soak: random and mutated datagrams at a high rate against the running offpath.

Run by soak.sh; see README.md here. Two phases share the time (default 300 s in all):

  exact:  `offpath-loadgen --mode garbage` over a blocking Unix datagram socket (nothing is lost in a
          socket buffer), then the books must balance exactly: offpath read every datagram the generator
          sent, counted every one larger than its buffer as truncated, and parsed or rejected (with a
          reason) every line of the others; unless its queue overflowed, which must then be counted.
  flood:  the same garbage over UDP, flat out, with two sender threads.

Throughout, offpath must stay up and `/health` answer 200, and its RSS (sampled every second) must stay
flat within each phase once its working set is reached: in each phase, the last quarter's peak at most
`--rss-growth-mib` above the second quarter's. Between the phases RSS steps up once, by at most the
packet buffers the flood fills (`--queue-bound-mib`, see README.md): a full packet queue and a full free
list of buffers.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loss_curve import Offpath, offpath_env, status_kib  # noqa: E402


def get_json(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as r:
        return r.status, json.loads(r.read() or b"null")


def health(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/health", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def parsed_total(status):
    p = status["parse"]
    return p["metrics"] + p["events"] + p["service_checks"] + sum(p["errors"].values())


def settled_status(addr):
    """/status once the parser has caught up (two reads 0.5 s apart agree on the parse totals)."""
    _, prev = get_json(addr, "/status")
    for _ in range(120):
        time.sleep(0.5)
        _, cur = get_json(addr, "/status")
        if parsed_total(cur) == parsed_total(prev) and cur["packets_received"] == prev["packets_received"]:
            return cur
        prev = cur
    return prev


def listener(status, prefix):
    return next(lst for lst in status["listeners"] if lst["name"].startswith(prefix))


def loadgen(binary, args):
    out = subprocess.run([binary, "--mode", "garbage", *args], check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--duration", type=float, default=300.0, help="seconds in all (default %(default)s)")
    p.add_argument("--rate", type=int, default=200_000, help="lines/s of the exact phase (default %(default)s)")
    p.add_argument("--limit", type=int, default=10_000,
                   help="DD_AGGREGATE_CONTEXT_LIMIT (default %(default)s): small, so that memory held for contexts "
                        "(and the allocator's high-water marks of their flushes) stays small next to what a leak "
                        "would add; cardinality.sh measures the context-bound memory")
    p.add_argument("--rss-growth-mib", type=float, default=4.0,
                   help="growth allowed within a phase, last quarter vs second quarter (default %(default)s)")
    p.add_argument("--queue-bound-mib", type=float, default=None,
                   help="step allowed from the exact phase to the flood (default: "
                        "(2 x DD_DOGSTATSD_QUEUE_SIZE + 352) x DD_DOGSTATSD_BUFFER_SIZE, + 4 MiB)")
    args = p.parse_args()
    offpath = os.path.join(args.bin_dir, "offpath")
    gen = os.path.join(args.bin_dir, "offpath-loadgen")
    failures = []
    samples = []
    phase = ["exact"]
    with tempfile.TemporaryDirectory(prefix="offpath-soak-") as work:
        sock = os.path.join(work, "dsd.sock")
        # Local mode (no API key): flushed records go to stdout, which is discarded.
        env = offpath_env("http://127.0.0.1:9", {"DD_DOGSTATSD_SOCKET": sock,
                                                 "DD_AGGREGATE_CONTEXT_LIMIT": str(args.limit)})
        for key in ("DD_API_KEY", "DD_DD_URL", "OFFPATH_FALLBACK"):
            del env[key]
        op = Offpath(offpath, env, work)
        stop = threading.Event()
        t0 = time.monotonic()

        def sample():
            while not stop.is_set():
                try:
                    samples.append((time.monotonic() - t0, status_kib(op.pid, "VmRSS"), health(op.status), phase[0]))
                except OSError:
                    samples.append((time.monotonic() - t0, 0, 0, phase[0]))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            before = settled_status(op.status)
            half = str(args.duration / 2)
            exact = loadgen(gen, ["--transport", "unixgram", "--socket", sock, "--duration", half,
                                  "--rate", str(args.rate)])
            after = settled_status(op.status)
            ux_before, ux_after = listener(before, "unixgram"), listener(after, "unixgram")
            read = ux_after["packets"] - ux_before["packets"]
            dropped = {k: v - ux_before["dropped"].get(k, 0) for k, v in ux_after["dropped"].items()}
            parsed = parsed_total(after) - parsed_total(before)
            print(f"exact phase: sent {exact['packets']:,} datagrams ({exact['receiver']['oversize_packets']:,} over "
                  f"8 KiB), {exact['receiver']['lines']:,} lines in the others; offpath read {read:,}, "
                  f"dropped {dropped}, parsed or rejected {parsed:,} lines")
            print(f"  parse errors by reason: {after['parse']['errors']}")
            if read != exact["packets"]:
                failures.append(f"offpath read {read} datagrams of {exact['packets']}")
            if dropped.get("truncated", 0) != exact["receiver"]["oversize_packets"]:
                failures.append(f"truncated {dropped.get('truncated', 0)} != {exact['receiver']['oversize_packets']}")
            if dropped.get("queue_full", 0) == 0 and parsed != exact["receiver"]["lines"]:
                failures.append(f"lines parsed or rejected {parsed} != {exact['receiver']['lines']} sent")
            if dropped.get("queue_full", 0) > 0 and parsed > exact["receiver"]["lines"]:
                failures.append(f"more lines parsed ({parsed}) than sent ({exact['receiver']['lines']})")

            phase[0] = "flood"
            flood = loadgen(gen, ["--transport", "udp", "--addr", op.udp, "--duration", half, "--threads", "2"])
            final = settled_status(op.status)
            print(f"flood phase: sent {flood['packets']:,} UDP datagrams ({flood['packets_per_s']:,.0f}/s, "
                  f"{flood['lines_per_s']:,.0f} lines/s); offpath read {final['packets_received'] - after['packets_received']:,}, "
                  f"packets dropped {final['packets_dropped']}")
        finally:
            stop.set()
            sampler.join()
            alive = op.proc.poll() is None
            summary = op.stop() if alive else ""
            op.kill()
    if not alive:
        failures.append("offpath died")
    unhealthy = [t for t, _, code, _ in samples if code != 200]
    if unhealthy:
        failures.append(f"/health not 200 at {len(unhealthy)} samples (first at {unhealthy[0]:.0f} s)")
    # Garbage makes new contexts all the time: RSS rises until DD_AGGREGATE_CONTEXT_LIMIT live contexts
    # are held and the allocator has settled under their churn; the flood then fills the packet queue and
    # the free list of buffers once. Within each phase, after that, RSS must be flat: compare the phase's
    # second quarter's peak with its last quarter's.
    print("RSS (s:MiB): " + ", ".join(f"{t:.0f}:{kib / 1024:.1f}" for t, kib, _, _ in samples[::15]))
    plateau = {}
    for name in ("exact", "flood"):
        rss = [kib for _, kib, _, p in samples if kib and p == name]
        if not rss:
            continue
        q = max(len(rss) // 4, 1)
        first, last = max(rss[q:2 * q] or rss) / 1024, max(rss[-q:]) / 1024
        plateau[name] = last
        print(f"{name} phase RSS: second quarter peak {first:.1f} MiB, last quarter peak {last:.1f} MiB")
        if last - first > args.rss_growth_mib:
            failures.append(f"RSS grew {last - first:.1f} MiB within the {name} phase")
    if len(plateau) == 2:
        queue = int(env.get("DD_DOGSTATSD_QUEUE_SIZE", "1024"))
        buf = int(env.get("DD_DOGSTATSD_BUFFER_SIZE", "8192"))
        bound = args.queue_bound_mib
        if bound is None:
            # queue + free list (queue + 32 x (threads + 2)) + batches (32 x (threads + 1)), threads <= 4.
            bound = (2 * queue + 352) * buf / 2**20 + 4
        step = plateau["flood"] - plateau["exact"]
        print(f"flood vs exact plateau: {step:+.1f} MiB (packet queue and buffer pool bound {bound:.1f} MiB)")
        if step > bound:
            failures.append(f"RSS stepped up {step:.1f} MiB into the flood, over the {bound:.1f} MiB bound")
    print(f"offpath summary: {summary}")
    for f in failures:
        print(f"FAIL: {f}")
    if failures:
        sys.exit(1)
    print("OK: offpath stayed up, memory flat, every line accounted for")


if __name__ == "__main__":
    main()
