"""Child processes that never outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

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


def _stat(pid: int | str) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a process from /proc, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm) ": state, ppid, pgrp, ...
    except OSError:
        return None
    return fields[0].decode(), int(fields[1]), int(fields[2])


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _poll(alive: Callable[[], list[int]], timeout: float, step: float) -> list[int]:
    """Call `alive` until it returns nothing or `timeout` s have passed; what it last returned."""
    deadline = time.monotonic() + timeout
    while (left := alive()) and time.monotonic() <= deadline:
        time.sleep(step)
    return left


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (zombies, already dead, left out): read from
    /proc, so it works on any Linux whoever reaps them."""
    return [pid for pid in _pids() if (st := _stat(pid)) is not None and st[0] != "Z" and st[2] == pgid]


def wait_group_gone(pgid: int, timeout: float = 30.0) -> bool:
    """Wait until no live process of group `pgid` is left (True), or `timeout` s (False)."""
    return not _poll(lambda: group_members(pgid), timeout, 0.05)


MARK = "VISUAL_CUES_SESSION"  # set by test.sh and demo.sh: every process they start inherits it


def marked(value: str) -> list[int]:
    """The live processes whose environment has MARK=`value`, but this one and its ancestors
    (the script waiting for the others)."""
    needle = f"\0{MARK}={value}\0".encode()
    found, mine = [], _ancestors()
    for pid in _pids():
        if pid in mine:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = b"\0" + f.read() + b"\0"
        except OSError:
            continue
        if needle in env and (st := _stat(pid)) is not None and st[0] != "Z":
            found.append(pid)
    return found


def _ancestors() -> set[int]:
    """This process and every process above it."""
    chain, pid = set(), os.getpid()
    while pid > 1 and pid not in chain:
        chain.add(pid)
        st = _stat(pid)
        if st is None:
            break
        pid = st[1]
    return chain


def wait_marked_gone(value: str, timeout: float = 60.0) -> list[int]:
    """Wait until no process carrying MARK=`value` is left; SIGKILL what is still there after
    `timeout` s and return those pids."""
    left = _poll(lambda: marked(value), timeout, 0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
