"""Return once every process a script started is gone (each carries the script's
VISUAL_CUES_SESSION mark, processes that left its process tree included); after a minute, kill
what is left and name it. test.sh and demo.sh run it as they exit."""

from __future__ import annotations

import os
import sys

from core.procs import MARK, wait_marked_gone

if __name__ == "__main__":
    if left := wait_marked_gone(os.environ[MARK]):
        print(f"{sys.argv[1] if len(sys.argv) > 1 else 'wait_gone'}: killed {left}, still running", file=sys.stderr)
