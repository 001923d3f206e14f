"""Reports whether it owns the terminal's foreground, then waits for Ctrl-C."""

import os
import signal
import sys
import time


def on_int(signum: int, frame: object) -> None:
    print("got SIGINT", flush=True)
    sys.exit(0)


signal.signal(signal.SIGINT, on_int)
print("foreground", os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp(), flush=True)
time.sleep(20)
