"""A stall probe for the bench's child processes: ``PYTHONPATH=bench/lagprobe`` and
``CMT_BENCH_LAGPROBE=DIR`` make every Python process started so (``cloudmeta api`` and its
exec'd workers) write ``DIR/lag-<pid>.jsonl``.

A daemon thread sleeps 1 ms at a time; when it wakes more than ``THRESHOLD`` late, the main
thread held the interpreter (a long callback, a garbage collection) or the process was not on a
CPU, and the line says how late, the main thread's stack at that moment and whether a garbage
collection (``gc.callbacks``, its generation and duration) overlapped. A diagnostic for a p99
(``python -m bench --only scale`` with both variables set), never loaded by the product.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import traceback

THRESHOLD = 0.002


def _start(out_dir: str) -> None:
    path = os.path.join(out_dir, f"lag-{os.getpid()}.jsonl")
    main = threading.main_thread().ident
    gcs: list[tuple[float, float, int]] = []  # (start, end, generation)
    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started["t"] = time.monotonic()
        elif "t" in started:
            gcs.append((started.pop("t"), time.monotonic(), info["generation"]))
            del gcs[:-64]

    gc.callbacks.append(on_gc)

    def probe() -> None:
        with open(path, "a", buffering=1) as out:
            out.write(json.dumps({"argv": sys.argv, "t": time.monotonic()}) + "\n")
            last = time.monotonic()
            while True:
                time.sleep(0.001)
                now = time.monotonic()
                late = now - last - 0.001
                last = now
                if late < THRESHOLD:
                    continue
                frame = sys._current_frames().get(main or 0)
                stack = traceback.format_stack(frame, limit=12) if frame else []
                overlapping = [g for g in gcs if g[1] >= now - late - 0.001]
                out.write(
                    json.dumps(
                        {
                            "t": now,
                            "late_ms": round(late * 1000, 2),
                            "gc": [(round((e - s) * 1000, 2), gen) for s, e, gen in overlapping],
                            "stack": [line.strip().splitlines()[0] for line in stack[-8:]],
                        }
                    )
                    + "\n"
                )
                last = time.monotonic()

    threading.Thread(target=probe, name="cmt-lagprobe", daemon=True).start()


if os.environ.get("CMT_BENCH_LAGPROBE"):
    _start(os.environ["CMT_BENCH_LAGPROBE"])
