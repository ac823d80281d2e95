"""Helpers shared by the client drivers of tests/py_clients.rs (no client code here)."""

import sys
import time


def step(what, detail=""):
    """One progress line; tests/py_clients.rs checks for the `PYCLIENT` lines it needs."""
    print(f"PYCLIENT {what} {detail}".rstrip(), flush=True)


def fail(why):
    print(f"PYCLIENT FAIL {why}", flush=True)
    sys.exit(1)


def wait_for_text(path, needle, timeout, start=0):
    """Waits until the file at `path` (a guest console log) holds `needle` after
    offset `start`; returns the offset just past it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        at = data.find(needle.encode(), start)
        if at >= 0:
            return at + len(needle)
        time.sleep(0.5)
    return None


def gone(pid):
    """True once process `pid` has exited (a zombie not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.5)
    return False


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(lines[-n:])
