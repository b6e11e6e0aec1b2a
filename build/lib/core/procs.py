"""Child processes that never outlive their parent."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading

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


def die_with(pid: int) -> None:
    """Exit this process as soon as process `pid` ends, whoever its parent is (a thread waiting
    on a pidfd, Linux); at once if `pid` is already gone."""
    if sys.platform != "linux":
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)

    def watch() -> None:
        select.select([fd], [], [])
        os._exit(1)

    threading.Thread(target=watch, name=f"die-with-{pid}", daemon=True).start()
