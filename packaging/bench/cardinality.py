#!/usr/bin/env python3
"""Cardinality explosion: offer offpath 1,000,000 distinct contexts in a minute and sample its RSS.

Run by cardinality.sh; see README.md here. The generator sends every context exactly once (`--once`)
over a blocking Unix datagram socket, so all of them reach offpath (none is lost in a socket buffer),
at contexts/duration lines per second. offpath runs with DD_AGGREGATE_CONTEXT_LIMIT (default 100000);
what exceeds it must be dropped and counted (dropped.context_limit in offpath's shutdown summary) and
RSS must stay under the documented bound:

    bound = idle RSS + limit x bytes_per_context
            + workers x DD_DOGSTATSD_QUEUE_SIZE x DD_DOGSTATSD_BUFFER_SIZE

Exits 1 when the peak RSS exceeds the bound.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loss_curve import FakeIntake, Offpath, offpath_env, status_kib  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--contexts", type=int, default=1_000_000)
    p.add_argument("--duration", type=float, default=60.0, help="seconds to offer them in (default %(default)s)")
    p.add_argument("--limit", type=int, default=100_000, help="DD_AGGREGATE_CONTEXT_LIMIT (default %(default)s)")
    p.add_argument("--max-tags", type=int, default=6, help="tags per context at most (default %(default)s)")
    p.add_argument("--bytes-per-context", type=int, default=1200,
                   help="cost of one live context, measured (README.md), for the bound (default %(default)s)")
    p.add_argument("--queue-bytes", type=int, default=1024 * 8192,
                   help="DD_DOGSTATSD_QUEUE_SIZE x DD_DOGSTATSD_BUFFER_SIZE (default %(default)s)")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4),
                   help="OFFPATH_AGGREGATE_WORKERS, one packet queue each (default %(default)s: one per "
                        "core up to 4, offpath's own default)")
    args = p.parse_args()

    offpath = os.path.join(args.bin_dir, "offpath")
    loadgen = os.path.join(args.bin_dir, "offpath-loadgen")
    intake = FakeIntake(os.path.join(args.bin_dir, "offpath-fake-intake"))
    with tempfile.TemporaryDirectory(prefix="offpath-card-") as work:
        sock = os.path.join(work, "dsd.sock")
        env = offpath_env(intake.url, {"DD_DOGSTATSD_PORT": "0", "DD_DOGSTATSD_SOCKET": sock,
                                       "DD_AGGREGATE_CONTEXT_LIMIT": str(args.limit),
                                       "OFFPATH_AGGREGATE_WORKERS": str(args.workers)})
        samples = []
        op = None
        try:
            op = Offpath(offpath, env, work)
            idle = status_kib(op.pid, "VmRSS")
            rate = int(args.contexts / args.duration)
            gen = subprocess.Popen([loadgen, "--transport", "unixgram", "--socket", sock, "--once",
                                    "--contexts", str(args.contexts), "--rate", str(rate), "--max-tags",
                                    str(args.max_tags)], stdout=subprocess.PIPE, text=True)
            t0 = time.monotonic()
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    samples.append((time.monotonic() - t0, status_kib(op.pid, "VmRSS")))
                    stop.wait(0.5)

            sampler = threading.Thread(target=sample)
            sampler.start()
            out, _ = gen.communicate()
            report = json.loads(out)
            # Keep sampling through one bucket close and flush after the load ends.
            time.sleep(12)
            stop.set()
            sampler.join()
            peak = status_kib(op.pid, "VmHWM")
            summary = op.stop()
        finally:
            if op:
                op.kill()
            totals = intake.stop()

    bound = idle + (args.limit * args.bytes_per_context + args.workers * args.queue_bytes) // 1024
    print(f"contexts offered: {report['lines']:,} in {report['elapsed_s']:.1f} s "
          f"({report['lines_per_s']:,.0f}/s), distinct: {report['expected'].get('distinct_contexts')}")
    print(f"context limit: {args.limit:,}; contexts delivered to the intake: {totals.get('contexts', 0):,}")
    print(f"offpath summary: {summary or '(none found in stderr)'}")
    print("RSS over time (s, MiB): " + ", ".join(f"{t:.0f}:{kib / 1024:.1f}" for t, kib in samples[::10]))
    print(f"idle RSS {idle / 1024:.1f} MiB, peak RSS (VmHWM) {peak / 1024:.1f} MiB, bound {bound / 1024:.1f} MiB")
    if peak > bound:
        print("FAIL: peak RSS over the bound")
        sys.exit(1)
    print("OK: peak RSS under the bound")


if __name__ == "__main__":
    main()
