"""This machine as a Ray cluster launcher's SSH host, for tests/test_cluster_jobs.py.

``SshHost`` is a real OpenSSH server of the test's own: sshd on 127.0.0.1 at a free port, with
a throwaway host key, a throwaway client key, its own config (no PAM, no strict modes) and a
home directory in a temporary folder (sshd's ``SetEnv HOME``), whose ``.bashrc`` puts this
checkout's Python environment first on PATH, as the setup commands of a real cluster do. Ray's
launcher has no SSH port setting: it reaches the server through ``auth.ssh_proxy_command``
(``nc 127.0.0.1 PORT``), the option it has for bastion hosts.

The server runs in a PID namespace of its own (``unshare --pid --mount-proc``), and with it
everything its sessions start: the Ray head, the jobs, their workers. That matters because
Ray's ``ray down`` (and ``ray up``'s first start command) run ``ray stop`` on the head, and
``ray stop`` ends every Ray process it can see, whoever started it: here it sees only the
namespace's, so Ray instances of other tests or users on this machine live on. It also makes
the cleanup total: killing the namespace's first process (sshd) makes the kernel kill
everything in it.

``Launcher`` runs the ``ray`` commands a user runs (``ray up``, ``ray submit``, ``ray job
submit``, ``ray down``) as subprocesses, each in a session of its own with a timeout that kills
the whole group.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from getpass import getuser

import psutil

SSHD = "/usr/sbin/sshd"
TOOLS = {"sshd": SSHD, "ssh": "ssh", "ssh-keygen": "ssh-keygen", "rsync": "rsync", "nc": "nc", "unshare": "unshare"}
INSTALL_HINT = "run `sudo bash scripts/install_cluster_test_deps.sh` (Debian openssh-server, rsync, netcat-openbsd)"
VENV_BIN = os.path.dirname(sys.executable)
RAY = os.path.join(VENV_BIN, "ray")


def missing_tools() -> list[str]:
    return [name for name, exe in TOOLS.items() if not (os.path.exists(exe) if os.path.isabs(exe) else shutil.which(exe))]


def unavailable() -> str | None:
    """Why this machine cannot be the test's SSH host, or None."""
    missing = missing_tools()
    if missing:
        return f"{', '.join(missing)} not installed: {INSTALL_HINT}"
    if not os.path.exists(RAY):
        return f"no `ray` command beside this Python ({RAY}): pip install -e '.[dev]' in a virtual environment"
    if os.geteuid() != 0:
        return ("needs root: sshd for the current user in a PID namespace of its own "
                "(so that `ray down`'s `ray stop` cannot reach other Ray instances); CI runs as root")
    try:
        probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], check=False,
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot make a PID namespace (unshare): {e}"
    if probe.returncode != 0:
        return f"cannot make a PID namespace (unshare --pid --mount-proc): {probe.stderr.strip()}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


@dataclass
class Completed:
    args: list[str]
    returncode: int
    output: str  # stdout and stderr, interleaved as they came
    seconds: float
    timed_out: bool = False

    def describe(self) -> str:
        tail = self.output[-6000:]
        state = "timed out" if self.timed_out else f"exit status {self.returncode}"
        return f"`{' '.join(self.args)}`: {state} after {self.seconds:.1f} s; output (tail):\n{tail}"


def run(args: list[str], timeout: float, env: dict[str, str] | None = None, cwd: str | None = None) -> Completed:
    """``args`` in a session of its own; past ``timeout`` the whole process group is killed."""
    start = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd, text=True, errors="replace", start_new_session=True)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out = ""
    finally:
        _kill_group(proc.pid)  # what it left in its session (an ssh it started, say)
    return Completed(args, proc.returncode if proc.returncode is not None else -9, out or "",
                     time.monotonic() - start, timed_out)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class SshHost:
    """sshd on 127.0.0.1:``port`` in a PID namespace of its own; logs in ``user`` with ``client_key``."""

    def __init__(self, root: str):
        self.root = root
        self.user = getuser()
        self.home = os.path.join(root, "home")
        self.host_key = os.path.join(root, "ssh_host_ed25519_key")
        self.client_key = os.path.join(root, "client_key")
        self.config = os.path.join(root, "sshd_config")
        self.log = os.path.join(root, "sshd.log")
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.init_pid: int | None = None  # sshd, the namespace's process 1
        self.namespace: str | None = None

    @property
    def proxy_command(self) -> str:
        return f"nc 127.0.0.1 {self.port}"

    def start(self) -> None:
        os.makedirs(self.home, exist_ok=True)
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "puffin-test", "-f", key],
                           check=True, timeout=30, capture_output=True)
        shutil.copy(self.client_key + ".pub", os.path.join(self.root, "authorized_keys"))
        with open(os.path.join(self.home, ".bashrc"), "w") as f:
            f.write("# The head's shell: this checkout's Python environment first, as a cluster's setup does.\n"
                    f"export PATH={VENV_BIN}:$PATH\n")
        with open(os.path.join(self.home, ".profile"), "w") as f:
            f.write('[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n')
        open(os.path.join(self.home, ".hushlogin"), "w").close()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for _ in range(3):  # a free port can be taken between the probe and sshd's bind
            self.port = free_port()
            self._write_config()
            if self._launch():
                return
        raise RuntimeError(f"sshd did not start; its log:\n{self._log_text()}")

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            "AddressFamily inet",
            f"HostKey {self.host_key}",
            f"PidFile {os.path.join(self.root, 'sshd.pid')}",
            f"AuthorizedKeysFile {os.path.join(self.root, 'authorized_keys')}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            f"PermitRootLogin {'prohibit-password' if os.geteuid() == 0 else 'no'}",
            f"AllowUsers {self.user}",
            f"SetEnv HOME={self.home}",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxStartups 100",
            "MaxSessions 100",
            "LogLevel ERROR",
            "Subsystem sftp internal-sftp",
        ]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _launch(self) -> bool:
        # unshare dies with this process (setpriv's parent-death signal) and sshd with unshare
        # (--kill-child): a test killed outright still takes the namespace down with it
        guard = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [*guard, "unshare", "--pid", "--fork", "--mount-proc", "--kill-child", SSHD, "-D", "-e", "-f",
                 self.config],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if self.init_pid is None:
                children = psutil.Process(self.proc.pid).children()
                if children:
                    self.init_pid = children[0].pid
                    self.namespace = pid_namespace(self.init_pid)
            if self.init_pid is not None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                        if s.recv(64).startswith(b"SSH-"):
                            return True
                except OSError:
                    pass
            time.sleep(0.1)
        self.stop()
        return False

    def _log_text(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def processes(self) -> list[psutil.Process]:
        """Every process in the host's PID namespace (sshd and what its sessions started)."""
        if not self.namespace:
            return []
        found = []
        for p in psutil.process_iter():
            if pid_namespace(p.pid) == self.namespace:
                found.append(p)
        return found

    def ray_processes(self) -> list[str]:
        """The namespace's processes other than sshd's own: what `ray down` should have ended."""
        left = []
        for p in self.processes():
            try:
                cmd = " ".join(p.cmdline()) or p.name()
            except psutil.Error:
                continue
            if not cmd.startswith("sshd"):
                left.append(f"{p.pid} {cmd[:200]}")
        return left

    def stop(self) -> None:
        """Kill the namespace's first process: the kernel then kills everything in the namespace."""
        if self.init_pid is not None:
            try:
                os.kill(self.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.proc = None
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)


class Launcher:
    """Ray's cluster launcher and Jobs CLI against one cluster config, as a user runs them."""

    def __init__(self, config_path: str, cluster_name: str, env: dict[str, str]):
        self.config_path = config_path
        self.cluster_name = cluster_name
        self.env = env
        self.up_done = False
        self.down_done = False

    def ray(self, *args: str, timeout: float, env: dict[str, str] | None = None, cwd: str | None = None) -> Completed:
        return run([RAY, *args], timeout=timeout, env=env or self.env, cwd=cwd)

    def up(self, timeout: float = 150) -> Completed:
        self.up_done = True
        return self.ray("up", "-y", "--no-config-cache", "--disable-usage-stats", "--log-style=record",
                        "--log-color=false", self.config_path, timeout=timeout)

    def submit(self, script: str, *script_args: str, timeout: float = 120) -> Completed:
        return self.ray("submit", "--no-config-cache", "--log-style=record", "--log-color=false", self.config_path,
                        script, "--", *script_args, timeout=timeout)

    def down(self, timeout: float = 120) -> Completed:
        self.down_done = True  # (`ray down` has no --no-config-cache: see local_files)
        return self.ray("down", "-y", "--log-style=record", "--log-color=false", self.config_path, timeout=timeout)

    def ssh_control_dir(self) -> str:
        """Where Ray's SSH runner keeps this cluster's ControlMaster sockets (command_runner.py)."""
        user_hash = hashlib.sha256(getuser().encode()).hexdigest()[:10]
        cluster_hash = hashlib.sha256(self.cluster_name.encode()).hexdigest()[:10]
        return f"/tmp/ray_ssh_{user_hash}/{cluster_hash}"

    def local_files(self) -> list[str]:
        """What the launcher leaves on this side: the local provider's state and lock files, and
        `ray down`'s cached copy of the config (/tmp/ray-config-<hash>, naming the cluster)."""
        from ray.autoscaler._private.local.config import get_lock_path, get_state_path

        found = [p for p in (get_state_path(self.cluster_name), get_lock_path(self.cluster_name)) if os.path.exists(p)]
        tmp = tempfile.gettempdir()
        for name in os.listdir(tmp):
            path = os.path.join(tmp, name)
            if name.startswith("ray-config-") and os.path.isfile(path):
                try:
                    with open(path) as f:
                        if f'"cluster_name": "{self.cluster_name}"' in f.read():
                            found.append(path)
                except OSError:
                    pass
        return found

    def leftover_clients(self, marks: list[str]) -> list[psutil.Process]:
        """Processes on this side of SSH that belong to this cluster: ssh masters on its control
        path, proxies to its port, anything naming its folder."""
        marks = [self.ssh_control_dir(), *marks]
        found = []
        for p in psutil.process_iter():
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if p.pid != os.getpid() and any(m in cmd for m in marks):
                found.append(p)
        return found


def make_root() -> str:
    """A short temporary folder: Ray's session sockets live below it (unix socket paths stop at 107 bytes)."""
    return tempfile.mkdtemp(prefix="pcj-", dir="/tmp")
