"""Inside a grading kernel: record what student code does, then start the kernel.

`python -m fcnkit.course._guard -f CONNECTION_FILE ...` installs a Python audit
hook (PEP 578; it cannot be removed once installed) and then starts an IPython
kernel with the remaining arguments. The hook writes one JSON line per event
that deserves the instructor's look to the file descriptor named by
`FCNKIT_EVENTS_FD`, opened by the launcher outside the sandbox:

- a file opened, listed, removed or renamed outside the working copy and the
  allowed folders (`FCNKIT_READ_ROOTS` may be read, `FCNKIT_WRITE_ROOTS` also
  written), or anywhere in `FCNKIT_PROTECTED_ROOTS` (the grading folder: the
  gradebook, the solutions, the other students) but the working copy;
- a program started, a process signalled, a network connection;
- a new audit hook.

Each event carries the kernel's execution count, so the grader can name the
notebook cell that ran it. The sandbox, not this hook, is what keeps files out
of reach: the hook only reports, and code in the kernel can silence it (its
findings are advice for the instructor). Standard library only: it runs before the
kernel imports anything.
"""

from __future__ import annotations

import json
import os
import signal
import sys

_FILE_EVENTS = {
    "open": "opens",
    "os.listdir": "lists",
    "os.scandir": "lists",
    "os.remove": "removes",
    "os.rmdir": "removes",
    "shutil.rmtree": "removes",
    "os.rename": "renames",
    "os.mkdir": "creates",
    "os.chmod": "changes",
    "os.symlink": "links",
    "os.link": "links",
    "os.truncate": "changes",
}
_WRITE_VERBS = {"removes", "renames", "creates", "changes", "links"}
_PROCESS_EVENTS = {
    "subprocess.Popen": "starts a program",
    "os.system": "starts a program",
    "os.exec": "starts a program",
    "os.posix_spawn": "starts a program",
    "os.spawn": "starts a program",
    "os.fork": "forks the kernel",
    "os.kill": "signals a process",
    "os.killpg": "signals a process",
    "signal.pthread_kill": "signals a process",
    "socket.connect": "opens a network connection",
    "socket.bind": "opens a network socket",
    "sys.addaudithook": "installs an audit hook",
}


def _roots(variable: str) -> tuple[str, ...]:
    return tuple(p for p in os.environ.get(variable, "").split(os.pathsep) if p)


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _opens_for_writing(args) -> bool:
    mode, flags = (args[1], args[2]) if len(args) >= 3 else ("r", 0)
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


class _Recorder:
    def __init__(self, fd: int, read_roots, write_roots, protected, cwd: str):
        self.fd = fd
        self.read_roots = read_roots
        self.write_roots = write_roots
        self.protected = protected
        self.cwd = cwd
        self.busy = False

    def path(self, value) -> str | None:
        if isinstance(value, int) or value is None:
            return None
        try:
            value = os.fsdecode(value)
        except TypeError:
            return None
        return os.path.normpath(os.path.join(self.cwd, value))

    def __call__(self, event: str, args) -> None:
        if self.busy or (event not in _FILE_EVENTS and event not in _PROCESS_EVENTS):
            return
        self.busy = True
        try:
            record = self.describe(event, args)
            cell, by_library = _caller_cell(sys._getframe(1)) if record else (None, False)
            # A program, a signal or a socket of a library the student merely called
            # (matplotlib runs fc-list) is not the student's doing; a file outside
            # the folder is worth a look whoever opens it.
            if record is not None and cell is not None and not (
                    by_library and record["kind"] == "process"):
                record["cell"] = cell
                os.write(self.fd, (json.dumps(record) + "\n").encode("utf-8"))
        except Exception:  # a broken pipe or odd arguments must not break the kernel
            pass
        finally:
            self.busy = False

    def describe(self, event: str, args) -> dict | None:
        if event in _PROCESS_EVENTS:
            what = _PROCESS_EVENTS[event]
            detail = ""
            if event in ("os.kill", "os.killpg", "signal.pthread_kill"):
                if len(args) >= 2 and args[1] == signal.SIGINT:
                    return None  # how the kernel interrupts itself on a timeout
                detail = f"signal {args[1]}" if len(args) >= 2 else ""
            elif event == "socket.connect" and len(args) >= 2:
                detail = repr(args[1])[:200]
            elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn"):
                detail = repr(args[0])[:200] if args else ""
            return {"kind": "process", "what": what, "detail": detail}
        verb = _FILE_EVENTS[event]
        paths = [self.path(a) for a in (args[:2] if event == "os.rename" else args[:1])]
        if event == "open" and _opens_for_writing(args):
            verb = "writes"
        roots = self.write_roots if verb in _WRITE_VERBS or verb == "writes" else self.read_roots
        outside = [
            p for p in paths
            if p is not None and not _inside(p, (self.cwd,))
            and (_inside(p, self.protected) or not _inside(p, roots))
        ]
        if not outside:
            return None
        return {"kind": "file", "what": verb, "detail": outside[0]}


_STDLIB = os.path.dirname(os.__file__)


def _caller_cell(frame):
    """(execution count of the innermost notebook cell on the stack, whether code of an
    installed library stands between it and the event). (None, False) outside cells."""
    shell_module = sys.modules.get("IPython.core.getipython")
    shell = shell_module.get_ipython() if shell_module else None
    cells = getattr(getattr(shell, "compile", None), "_filename_map", {})
    by_library = False
    while frame is not None:
        name = frame.f_code.co_filename
        if name in cells:
            return cells[name], by_library
        if not (name == __file__ or name.startswith(_STDLIB + os.sep) and "-packages" not in name
                or name.startswith("<frozen")):
            by_library = True
        frame = frame.f_back
    return None, False


def main(argv: list[str] | None = None) -> None:
    """Install the audit hook, then run the IPython kernel with `argv`."""
    argv = sys.argv[1:] if argv is None else argv
    fd = os.environ.get("FCNKIT_EVENTS_FD")
    if fd is not None:
        cwd = os.getcwd()
        write_roots = (cwd, *_roots("FCNKIT_WRITE_ROOTS"))
        read_roots = write_roots + _roots("FCNKIT_READ_ROOTS")
        protected = _roots("FCNKIT_PROTECTED_ROOTS")
        sys.addaudithook(_Recorder(int(fd), read_roots, write_roots, protected, cwd))
    sys.argv = ["ipykernel_launcher", *argv]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
