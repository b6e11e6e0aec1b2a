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


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (zombies, already dead, left out): read from
    /proc, so it works on any Linux whoever reaps them."""
    alive = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(entry.name))
    return alive


def wait_group_gone(pgid: int, timeout: float = 30.0) -> bool:
    """Wait until no live process of group `pgid` is left (True), or `timeout` s (False)."""
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


MARK = "VISUAL_CUES_SESSION"  # set by test.sh and demo.sh: every process they start inherits it


def marked(value: str) -> list[int]:
    """The live processes whose environment has MARK=`value`, but this one and its ancestors
    (the script waiting for the others)."""
    needle = f"\0{MARK}={value}\0".encode()
    found, mine = [], _ancestors()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) in mine:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = b"\0" + f.read() + b"\0"
            with open(f"/proc/{pid}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        if needle in env and not zombie:
            found.append(int(pid))
    return found


def _ancestors() -> set[int]:
    """This process and every process above it."""
    chain, pid = set(), os.getpid()
    while pid > 1 and pid not in chain:
        chain.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except OSError:
            break
    return chain


def wait_marked_gone(value: str, timeout: float = 60.0) -> list[int]:
    """Wait until no process carrying MARK=`value` is left; SIGKILL what is still there after
    `timeout` s and return those pids."""
    deadline = time.monotonic() + timeout
    while (left := marked(value)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
