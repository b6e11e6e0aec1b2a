"""Child processes that never outlive their parent."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """On Linux, have this process sent `sig` when its parent dies (even by SIGKILL); exit at
    once if `parent` is already gone. Call it in the child: a pool initializer, or a
    `preexec_fn` (the setting survives exec)."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
