#!/usr/bin/env python
"""Where does an onnxsmith command reach its peak memory? Runs the CLI in this process and
samples the resident size every 20 ms with the main thread's Python stack; prints the peak
and the stack at that moment.

    python bench/peak_stack.py optimize MODEL -o OUT.onnx --passes '...' --calib DATA.npz

(Linux: reads /proc/self/status.) The stack says which step held the memory, not who
allocated it; run it again after a change to see where the peak moved.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback

from onnxsmith.cli.main import app

INTERVAL_S = 0.02


def resident_mib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def main(argv: list[str]) -> int:
    peak: list = [0, []]
    main_thread = threading.main_thread().ident

    def sample() -> None:
        while True:
            resident = resident_mib()
            if resident > peak[0]:
                frame = sys._current_frames().get(main_thread)
                peak[0], peak[1] = resident, traceback.format_stack(frame)[-12:] if frame else []
            time.sleep(INTERVAL_S)

    threading.Thread(target=sample, daemon=True).start()
    code = 0
    try:
        app(argv)
    except SystemExit as done:
        code = int(done.code or 0)
    print(f"peak resident {peak[0]} MiB (sampled every {INTERVAL_S * 1000:.0f} ms), at:", file=sys.stderr)
    print("".join(peak[1]), file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
