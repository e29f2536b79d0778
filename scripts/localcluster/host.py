"""Running commands, installing Debian packages and owning processes by pid.

A pid file holds ``pid starttime`` (field 22 of /proc/PID/stat), so a recycled pid is never
taken for one of ours.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


class ClusterError(RuntimeError):
    """A step of build/start/stop failed; the message says which and where its log is."""


def log(msg: str) -> None:
    print(f"[local-cluster] {msg}", file=sys.stderr, flush=True)


def run(cmd: list, *, check: bool = True, timeout: float = 600, env: dict | None = None,
        cwd: str | os.PathLike | None = None, quiet: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=quiet, text=True, timeout=timeout,
                       env={**os.environ, **env} if env else None, cwd=cwd)
    if check and r.returncode != 0:
        err = (r.stderr or "")[-2000:] if quiet else ""
        raise ClusterError(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {err.strip()}")
    return r


def installed(pkg: str) -> bool:
    r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg], check=False)
    return r.returncode == 0 and r.stdout.startswith("ii")


def ensure_packages(*pkgs: str) -> None:
    """Install the Debian packages that are missing; ``apt-get update`` only if that fails."""
    if not shutil.which("dpkg-query"):
        raise ClusterError("the local cluster needs Debian 12 (bookworm): dpkg/apt not found")
    missing = [p for p in pkgs if not installed(p)]
    if not missing:
        return
    log(f"apt-get install {' '.join(missing)}")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if run(cmd, check=False, env=env, timeout=1200).returncode != 0:
        run(["apt-get", "update", "-q"], timeout=600)
        run(cmd, env=env, timeout=1200)


# ------------------------------------------------------------------------------------ processes
def _stat(pid: int) -> list[str] | None:
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()  # fields 3.. (state is index 0)


def alive(pid: int, start: str | None = None) -> bool:
    f = _stat(pid)
    return f is not None and f[0] != "Z" and (start is None or f[19] == start)


def recorded(node: Path, name: str) -> int | None:
    """The pid of ``name`` if the process recorded for it is still the one running."""
    try:
        pid, start = (node / f"{name}.pid").read_text().split()
    except (OSError, ValueError):
        return None
    return int(pid) if alive(int(pid), start) else None


def launch(node: Path, name: str, cmd: list, env: dict | None = None) -> int:
    """Start ``cmd`` in a session of its own, output to NODE/NAME.log, pid to NODE/NAME.pid."""
    logf = open(node / f"{name}.log", "ab")
    p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                         start_new_session=True, env={**os.environ, **(env or {})})
    logf.close()
    f = _stat(p.pid)
    (node / f"{name}.pid").write_text(f"{p.pid} {f[19] if f else 'gone'}\n")
    return p.pid


def stop(node: Path, name: str, grace: float = 20) -> None:
    """SIGTERM the process group ``name`` leads, SIGKILL after ``grace`` seconds."""
    pid = recorded(node, name)
    if pid is None:
        (node / f"{name}.pid").unlink(missing_ok=True)
        return
    def send(sig):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, sig)
    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while recorded(node, name) and time.monotonic() < deadline:
        time.sleep(0.1)
    if recorded(node, name):
        log(f"{name} (pid {pid}) ignored SIGTERM for {grace:.0f} s: SIGKILL")
        send(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while recorded(node, name) and time.monotonic() < deadline:
            time.sleep(0.1)
    # the rest of its group (shims, children) goes too
    send(signal.SIGKILL)
    (node / f"{name}.pid").unlink(missing_ok=True)


def wait_for(what: str, ok, timeout: float, node: Path | None = None, name: str | None = None,
             interval: float = 0.2):
    """Poll ``ok()`` until it returns a true value; fail at ``timeout`` or once ``name`` died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = ok()
        except Exception:  # noqa: BLE001 - not up yet
            v = None
        if v:
            return v
        if name and node and recorded(node, name) is None:
            tail = _tail(node / f"{name}.log")
            raise ClusterError(f"{name} exited while waiting for {what}; its log ({node / (name + '.log')}) ends:\n{tail}")
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _tail(p: Path, n: int = 15) -> str:
    try:
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
