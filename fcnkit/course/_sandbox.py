"""Running student code where it cannot reach the solutions: the grading kernel.

While grading, every student notebook runs in a kernel started through this
module's `launch` (with `-f CONNECTION_FILE`), named
by the kernelspec that `install_kernelspec` writes into the grading folder. The
launcher runs outside the sandbox; it opens the student's event log, then
replaces itself with the kernel, confined by one of three sandboxes:

- `"bwrap"` (bubblewrap, from Debian's `bubblewrap` package; chosen when it is
  installed and works): the kernel sees a new, empty root with, read-only, the
  system folders (`/usr`, `/etc`, ...), the Python installation and the
  `fcnkit` package; read-write, only the student's working copy, a private
  `/tmp` and the kernel's connection folder. It has no network (the kernel talks
  to the grader over Unix sockets), its own process ids, and dies with the
  grader. The solutions, the gradebook and the other students' files are not
  in its file system at all.
- `"user"` (grading as root, without bubblewrap): the kernel runs as the
  unprivileged user `nobody`; the grading folder is private to root, only the
  student's working copy is given to `nobody`. It needs a Python installation
  that `nobody` can run, and keeps out only what other users cannot read:
  `grade` warns when the course's `solutions/` is readable by them.
- `"none"`: no confinement; `grade` says so in its report.

`detect()` picks the first that works. Whatever the sandbox, the kernel runs
`fcnkit.course._guard`, which records file access outside the working copy,
programs started and processes signalled (the instructor report lists them).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pwd
import resource
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

SANDBOXES = ("bwrap", "user", "none")
KERNEL_NAME = "fcnkit-grading"
# What the grading kernelspec runs (`-m` would warn: the package imports this module).
LAUNCHER = "import sys; from fcnkit.course._sandbox import launch; launch(sys.argv[1:])"
INSTALL_HINT = (
    "Install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`, or `make sandbox`)"
)
# Environment read by the launcher (set by `grade` for the nbgrader process).
ENV_MODE = "FCNKIT_SANDBOX"
ENV_WORK = "FCNKIT_GRADING_DIR"
ENV_PROTECTED = "FCNKIT_PROTECTED_ROOTS"
ENV_RUNTIME = "FCNKIT_RUNTIME_DIR"
ENV_NOTEBOOK = "FCNKIT_NOTEBOOK"  # set per kernel by GradingExecute
TMP_BYTES = 1 << 30  # the private /tmp of a bubblewrap kernel (it lives in memory)
FILE_BYTES = 1 << 30  # the largest file a grading kernel may write
UNPRIVILEGED_USER = "nobody"

# What the grading folder holds besides nbgrader's own folders.
KERNELS_DIR = "jupyter"  # JUPYTER_PATH with the grading kernelspec
RECORDS_DIR = "records"  # per student and notebook: <nb>.events.jsonl (guard), <nb>.json (run)
SCRATCH_DIR = "scratch"  # the kernels' working copies: <student>/<assignment>/<notebook>/

_SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def python_roots() -> list[str]:
    """The folders the kernel's Python needs, read-only: installation, venv, fcnkit."""
    roots = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    roots += [sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    roots += site.getsitepackages() + [site.getusersitepackages()]
    roots.append(str(Path(os.path.realpath(sys.executable)).parent.parent))
    spec = importlib.util.find_spec("fcnkit")
    roots += list(spec.submodule_search_locations or [])
    found = []
    for root in roots:
        real = os.path.realpath(root)
        for path in {root, real}:
            if os.path.isdir(path) and path not in found:
                found.append(path)
    # Keep only the outermost folders.
    return sorted(p for p in found if not any(p != q and p.startswith(q + os.sep) for q in found))


def _bwrap_command(
    cwd: str, runtime: str, inner: list[str], connection_file: str | None = None
) -> list[str]:
    command = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all"]
    for folder in _SYSTEM_DIRS:
        if os.path.islink(folder):
            command += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            command += ["--ro-bind", folder, folder]
    command += ["--proc", "/proc", "--dev", "/dev", "--ro-bind-try", "/sys", "/sys"]
    command += ["--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--dir", "/tmp/home"]
    for root in python_roots():
        command += ["--ro-bind", root, root]
    if connection_file is not None:
        command += ["--ro-bind", connection_file, connection_file]
    command += ["--bind", runtime, runtime, "--bind", cwd, cwd, "--chdir", cwd]
    command += ["--setenv", "HOME", "/tmp/home", "--setenv", "TMPDIR", "/tmp"]
    return command + inner


@functools.lru_cache(maxsize=None)
def _bwrap_works() -> str:
    """"" if bubblewrap can start a sandboxed Python here, else why not."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed"
    probe = _bwrap_command(os.getcwd(), os.getcwd(), [sys.executable, "-c", "import fcnkit"])
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap failed to start: {error}"
    if result.returncode != 0:
        return f"bubblewrap cannot create a sandbox here: {result.stderr.strip()[-300:]}"
    return ""


@functools.lru_cache(maxsize=None)
def _user_works() -> str:
    """"" if the kernel can run as the unprivileged user, else why not."""
    if os.geteuid() != 0:
        return "grading does not run as root, so it cannot switch to another user"
    try:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        return f"there is no user {UNPRIVILEGED_USER!r}"
    probe = [sys.executable, "-c", "import fcnkit, ipykernel"]
    try:
        result = subprocess.run(
            probe, capture_output=True, text=True, timeout=60, cwd="/",
            preexec_fn=functools.partial(_drop_privileges, user.pw_uid, user.pw_gid),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"Python cannot start as {UNPRIVILEGED_USER}: {error}"
    if result.returncode != 0:
        return (
            f"the user {UNPRIVILEGED_USER!r} cannot run this Python installation "
            f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no output'})"
        )
    return ""


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def detect(requested: str = "auto") -> tuple[str, list[str]]:
    """The sandbox to grade with, and why each better one was not used.

    Args:
        requested: `"auto"` (the first of `SANDBOXES` that works) or one of them.

    Raises:
        ValueError: if `requested` is unknown, or names a sandbox that does not work here.
    """
    if requested not in ("auto", *SANDBOXES):
        raise ValueError(
            f"Unknown sandbox {requested!r}. Expected one of: auto, {', '.join(SANDBOXES)}."
        )
    reasons = []
    for mode, check in (("bwrap", _bwrap_works), ("user", _user_works)):
        if requested not in ("auto", mode):
            continue
        problem = check()
        if not problem:
            return mode, reasons
        reasons.append(f"{mode}: {problem}")
        if requested == mode:
            raise ValueError(f"The {mode!r} sandbox does not work here: {problem}. {INSTALL_HINT}.")
    return "none", reasons


def exposed(folder: Path) -> str:
    """A warning if other users may enter `folder` (what the "user" sandbox relies on)."""
    if folder.exists() and folder.stat().st_mode & 0o005:
        return (
            f"{folder} is open to other users, so the unprivileged kernel may read what it "
            f"holds: make the course private (chmod -R go-rwx {folder})"
        )
    return ""


def inside_python_roots(folder: Path) -> str:
    """The folder shown to sandboxed kernels that holds `folder`, or ""."""
    folder = os.path.realpath(folder)
    for root in [*python_roots(), *_SYSTEM_DIRS]:
        if folder == root or folder.startswith(root.rstrip(os.sep) + os.sep):
            return root
    return ""


def install_kernelspec(work: Path, mode: str, runtime: Path, protected: list[Path] = ()) -> Path:
    """Write the grading kernelspec into `work/jupyter/kernels/` and make the folders.

    Args:
        work: the grading folder (nbgrader's course copy).
        mode: one of `SANDBOXES`.
        runtime: the folder of the kernels' connection files and sockets (a
            short path: a Unix socket's path has at most 107 characters).
        protected: more folders whose access the guard reports (the course's
            `solutions/`); the grading folder itself always is.
    """
    (work / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o711)  # the user sandbox's kernel reaches its home there
    folder = work / KERNELS_DIR / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-c", LAUNCHER, "-f", "{connection_file}"],
        "display_name": f"fcnkit grading ({mode})",
        "language": "python",
        # Interrupts travel as messages: the launcher is replaced by the sandbox,
        # and a signal to bubblewrap would not reach the kernel inside.
        "interrupt_mode": "message",
        "env": {
            ENV_MODE: mode,
            ENV_WORK: str(work),
            ENV_RUNTIME: str(runtime),
            ENV_PROTECTED: os.pathsep.join(str(p) for p in protected),
        },
    }
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    return folder


def grading_environment(work: Path, runtime: Path) -> dict[str, str]:
    """Environment entries the nbgrader process needs to start grading kernels."""
    return {"JUPYTER_PATH": str(work / KERNELS_DIR), "JUPYTER_RUNTIME_DIR": str(runtime)}


def nbgrader_arguments(mode: str, runtime: Path) -> list[str]:
    """nbgrader command-line settings that make it start grading kernels."""
    arguments = [f"--GradingExecute.kernel_name={KERNEL_NAME}"]
    if mode == "bwrap":  # no network in the sandbox: the kernel listens on Unix sockets
        arguments += ["--KernelManager.transport=ipc", f"--KernelManager.ip={runtime / 'kernel'}"]
    return arguments


def records_folder(work: Path, student: str, assignment: str) -> Path:
    return work / RECORDS_DIR / student / assignment


def events_file(notebook: str) -> str:
    """The name of the event log of one notebook's kernel, in its records folder."""
    return f"{notebook}.events.jsonl"


def launch(argv: list[str]) -> None:
    """Replace this process by the kernel, inside the sandbox named by the environment."""
    mode = os.environ.get(ENV_MODE, "none")
    work = Path(os.environ[ENV_WORK])
    cwd = os.getcwd()
    try:
        student, assignment = Path(cwd).relative_to(work / SCRATCH_DIR).parts[:2]
    except ValueError:
        sys.exit(f"fcnkit grading kernel: {cwd} is not a working copy under "
                 f"{work / SCRATCH_DIR}; refusing to start.")
    records = records_folder(work, student, assignment)
    records.mkdir(parents=True, exist_ok=True)
    events = os.open(records / events_file(os.environ.pop(ENV_NOTEBOOK, "notebook")),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.set_inheritable(events, True)
    runtime = os.environ.pop(ENV_RUNTIME)
    os.environ.pop(ENV_WORK, None)
    os.environ["FCNKIT_EVENTS_FD"] = str(events)
    os.environ["FCNKIT_READ_ROOTS"] = os.pathsep.join(
        [*python_roots(), *_SYSTEM_DIRS, "/proc", "/sys", "/dev"]
    )
    os.environ["FCNKIT_WRITE_ROOTS"] = os.pathsep.join(["/tmp", "/dev/null", runtime])
    os.environ["FCNKIT_PROTECTED_ROOTS"] = os.pathsep.join(
        [str(work), *os.environ.get(ENV_PROTECTED, "").split(os.pathsep)]
    ).rstrip(os.pathsep)
    inner = [sys.executable, "-m", "fcnkit.course._guard", *argv]
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    if mode == "bwrap":
        # The grader is outside the sandbox's process ids: bubblewrap ends the
        # kernel when the grader goes (--die-with-parent), not the kernel's poller.
        os.environ.pop("JPY_PARENT_PID", None)
        connection_file = os.path.abspath(argv[argv.index("-f") + 1])
        command = _bwrap_command(cwd, runtime, inner, connection_file)
        os.execvp(command[0], command)
    if mode == "user":
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        for path in [Path(cwd), *Path(cwd).rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        # The grading folder is private to root: the kernel reaches its working copy
        # only as its current folder. It gets a home of its own, which also holds a
        # copy of the connection file.
        # A home inside the runtime folder (traversable, not listable; removed with it).
        home = Path(tempfile.mkdtemp(prefix="home-", dir=runtime))
        index = argv.index("-f") + 1
        private = home / "kernel-connection.json"
        shutil.copyfile(argv[index], private)
        for path in (home, private):
            os.chown(path, user.pw_uid, user.pw_gid)
        inner[inner.index(argv[index], 3)] = str(private)
        for name in ("HOME", "TMPDIR", "JUPYTER_RUNTIME_DIR"):
            os.environ[name] = str(home)
        _drop_privileges(user.pw_uid, user.pw_gid)
    os.execv(inner[0], inner)


