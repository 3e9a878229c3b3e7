#!/usr/bin/python3
"""alternate.py — runs two commands in turns of a slice of wall-clock time,
so that both see the same phases of a shared machine, and prints the
seconds each one ran.

  alternate.py SLICE -- A [ARGS...] -- B [ARGS...]

Only one of the two runs at a time: the first slice goes to A, the next to
B, and so on, the one whose turn is over stopped with SIGSTOP and the
other continued with SIGCONT (each is started at its first turn); once one
has exited, the other runs to its end. A command's seconds are the wall
clock of its turns. A line "ready" on a command's standard output ends its
set-up: the seconds before it are not counted (a peer that imports a
framework first prints it when the timed work begins), and the line is not
passed on.

Output: a line "seconds A B", then A's standard output, then B's (each
captured while it ran). Exit status: 0 when both exited with 0, else 1; a
command that cannot be started is an error naming it. Standard error goes
through as it comes. Interrupted, it ends both commands.
"""
import os
import signal
import subprocess
import sys
import threading
import time


class Side:
    def __init__(self, argv):
        self.argv = argv
        self.proc = None
        self.lines = []
        self.spent = 0.0      # seconds of wall clock in its turns
        self.since = None     # start of the running turn, None when stopped
        self.setup = 0.0      # seconds before its "ready" line
        self.lock = threading.Lock()

    def ran(self):
        with self.lock:
            return self.spent + (time.monotonic() - self.since if self.since is not None else 0.0)

    def read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            if line.rstrip("\n") == "ready" and not self.setup:
                self.setup = self.ran()
            else:
                self.lines.append(line)

    def start(self):
        try:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE)
        except OSError as e:
            sys.exit(f"alternate.py: cannot start {self.argv[0]}: {e.strerror}")
        self.reader = threading.Thread(target=self.read, daemon=True)

    def turn(self, slice_s):
        """Runs one turn (to the end when slice_s is None); True once exited."""
        with self.lock:
            self.since = time.monotonic()
        if self.proc is None:
            self.start()
            self.reader.start()
        else:
            self.proc.send_signal(signal.SIGCONT)
        try:
            self.proc.wait(timeout=slice_s)
            done = True
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGSTOP)
            done = False
        with self.lock:
            self.spent += time.monotonic() - self.since
            self.since = None
        return done


def end(sides):
    for s in sides:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.send_signal(signal.SIGCONT)
            s.proc.terminate()


def main(argv):
    if len(argv) < 5 or argv[1] != "--" or "--" not in argv[3:]:
        sys.stderr.write(__doc__)
        return 2
    try:
        slice_s = float(argv[0])
    except ValueError:
        slice_s = 0.0
    if not slice_s > 0:
        sys.exit(f"alternate.py: the slice must be a positive number of seconds, not '{argv[0]}'")
    cut = argv.index("--", 2)
    sides = [Side(argv[2:cut]), Side(argv[cut + 1:])]
    if not sides[0].argv or not sides[1].argv:
        sys.exit("alternate.py: a command is empty")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    done = [False, False]
    try:
        i = 0
        while not all(done):
            if not done[i]:
                done[i] = sides[i].turn(None if done[1 - i] else slice_s)
            i = 1 - i
    except (KeyboardInterrupt, SystemExit):
        end(sides)
        raise
    for s in sides:
        s.reader.join()
    print("seconds %.3f %.3f" % (sides[0].ran() - sides[0].setup, sides[1].ran() - sides[1].setup))
    for s in sides:
        sys.stdout.write("".join(s.lines))
    return 0 if all(s.proc.returncode == 0 for s in sides) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
