"""Caller's stdin -> COMMAND's stdin for `tools/testbed run --interactive`.

Two pieces, used by tools/testbed:

* RawTerminal puts a TTY in raw mode (no echo, no line buffering, no signal
  keys, so Ctrl-C reaches the guest) and restores the saved settings on
  `restore()`, which is idempotent and safe to call from a signal handler.
  Output post-processing (OPOST/ONLCR) stays on, as QEMU's `-serial stdio`
  does: the testbed's own messages and COMMAND's stderr are plain "\n" lines.
* StdinPump is a thread that copies the caller's stdin to the virtio-serial
  socket `shimvmm.stdin` once attached. A thread with blocking I/O works for
  every kind of stdin (TTY, pipe, regular file, /dev/null, which epoll can't
  watch) and gives natural back-pressure: QEMU reads the socket only while
  the port in L1 has room. EOF on stdin half-closes the socket (SHUT_WR, not
  close: a full close can make QEMU see HUP and drop unread bytes); QEMU then
  disconnects the port and COMMAND reads EOF.

On a TTY, the escape byte Ctrl-] (0x1d, as in telnet and `virsh console`) is
not forwarded: it asks the runner to kill L1, the way out of a hung guest now
that Ctrl-C belongs to it.

Self-test (a pseudo-terminal and a socketpair, no L1):
  python3 tools/testbed.d/stdin_forward.py
"""

import os
import socket
import termios
import threading

# Ctrl-]: leaves an interactive session (L1 is killed).
ESCAPE_BYTE = 0x1D
READ_CHUNK = 4096


def raw_attrs(attrs):
    """cfmakeraw() on a tcgetattr() list, but with output processing kept."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = attrs
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
               | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    cc = list(cc)
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    return [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]


class RawTerminal:
    """Raw mode on a TTY fd for the duration of an interactive session."""

    def __init__(self, fd):
        self.fd = fd
        self.saved = None

    def enter(self):
        self.saved = termios.tcgetattr(self.fd)
        # TCSAFLUSH drops what was typed (and echoed) in cooked mode before.
        termios.tcsetattr(self.fd, termios.TCSAFLUSH, raw_attrs(self.saved))

    def restore(self):
        saved, self.saved = self.saved, None
        if saved is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            except termios.error:
                pass  # the terminal went away (SIGHUP): nothing to restore


class StdinPump:
    """Copies `fd` to a socket handed over with attach(); see the module doc."""

    def __init__(self, fd, escape):
        self.fd = fd
        self.escape = escape
        self.escaped = False
        self.eof = False
        self._conn = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="stdin-pump", daemon=True)
        self._thread.start()

    def attach(self, conn):
        """Starts forwarding into `conn` (a connected, blocking stream socket)."""
        conn.setblocking(True)
        with self._cond:
            self._conn = conn
            self._cond.notify_all()

    def detach(self):
        """Stops forwarding (L1 is gone); a blocked send fails on its own."""
        with self._cond:
            self._conn = None

    def _target(self):
        with self._cond:
            while self._conn is None:
                self._cond.wait()
            return self._conn

    def _run(self):
        self._target()
        while True:
            try:
                data = os.read(self.fd, READ_CHUNK)
            except OSError:
                data = b""  # e.g. EIO: the terminal hung up
            if self.escape and ESCAPE_BYTE in data:
                data = data[:data.index(ESCAPE_BYTE)]
                self.escaped = True
            with self._cond:
                current = self._conn
            if current is None:
                return
            conn = current
            try:
                if data:
                    conn.sendall(data)
                if not data or self.escaped:
                    self.eof = not self.escaped
                    conn.shutdown(socket.SHUT_WR)
                    return
            except OSError:
                return  # QEMU is gone; the runner reports why


def _self_test():
    import pty
    import time

    def wait_for(cond, what):
        end = time.monotonic() + 5
        while not cond():
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def read_until_eof(sock):
        got = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk

    # Raw mode: flags off while active, the exact old settings back after.
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    term = RawTerminal(slave)
    term.enter()
    raw = termios.tcgetattr(slave)
    assert not raw[3] & (termios.ECHO | termios.ICANON | termios.ISIG), "lflag not raw"
    assert not raw[0] & termios.ICRNL, "ICRNL still on: Enter would arrive as \\n"
    assert raw[1] & termios.OPOST, "OPOST must stay on"
    term.restore()
    term.restore()  # idempotent
    assert termios.tcgetattr(slave) == before, "terminal not restored"

    # Pump from a raw pty: Ctrl-C (0x03) and Ctrl-D (0x04) pass as bytes,
    # Ctrl-] stops and is not forwarded.
    term.enter()
    a, b = socket.socketpair()
    pump = StdinPump(slave, escape=True)
    os.write(master, b"root\r\x03\x04")
    pump.attach(a)
    os.write(master, b"ab\x1dcd")
    got = read_until_eof(b)
    term.restore()
    assert got == b"root\r\x03\x04ab", got
    wait_for(lambda: pump.escaped, "escape flag")
    assert not pump.eof
    os.close(master)
    os.close(slave)
    a.close()
    b.close()

    # A pipe: everything arrives, then EOF (half-close) reaches the reader,
    # and large inputs get through a small socket buffer (back-pressure).
    r, w = os.pipe()
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    pump = StdinPump(r, escape=False)
    pump.attach(a)
    payload = bytes(range(256)) * 4096  # 1 MiB, includes 0x1d: no escape on pipes
    writer = threading.Thread(target=lambda: (os.write(w, payload), os.close(w)))
    writer.start()
    got = read_until_eof(b)
    writer.join()
    assert got == payload, f"pipe: got {len(got)} of {len(payload)} bytes"
    wait_for(lambda: pump.eof, "eof flag")
    os.close(r)
    a.close()
    b.close()

    # /dev/null: immediate EOF.
    fd = os.open(os.devnull, os.O_RDONLY)
    a, b = socket.socketpair()
    StdinPump(fd, escape=False).attach(a)
    assert read_until_eof(b) == b""
    os.close(fd)
    print("stdin_forward self-test: ok")


if __name__ == "__main__":
    _self_test()
