"""`ray up cluster-local.yaml` end to end on this machine (opt-in: ``pytest -m slow``; a few minutes).

ray up (SSH to 127.0.0.1, file mounts, setup_commands = the AWS file's, ray start) -> `ray job submit`
of a 2-iteration `metarl train` -> `ray rsync-down` of its run directory -> `ray down`, then checks by PID
that every process the cluster started is gone.

Machine prerequisites (the test skips, saying which is missing; `bash scripts/setup_local_launcher.sh`,
run by `make test-launcher`, installs them):
- run as root (it starts its own sshd on 127.0.0.1:22 and installs a throw-away key), port 22 free;
- `sshd`, `ssh`, `rsync` installed (Debian: apt-get install openssh-server rsync);
- the dedicated unprivileged user named in cluster-local.yaml (`raylocal`), which `ray down`'s built-in
  `ray stop` runs as, so it cannot touch other users' Ray processes:
      useradd -m -s /bin/bash raylocal && usermod -p '*' raylocal    # '*': no password, key login only
- `python3.11` for that user, and pip able to install constraints.txt for it (offline machines: give
  it the same pip config as yours, e.g. ~raylocal/.config/pip/pip.conf).
The sshd this test starts is its own child process, stopped by PID; the key is removed afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "cluster-local.yaml"
RAY = str(Path(sys.executable).parent / "ray")

pytestmark = pytest.mark.slow


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Proc:
    """A process read from /proc (Linux; psutil is not a dependency): pid + start time identify it."""

    def __init__(self, pid: int):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        self.pid, self.state, self.start = pid, fields[0], int(fields[19])
        self.name = stat[stat.index("(") + 1 : stat.rindex(")")]
        self.uid = Path(f"/proc/{pid}").stat().st_uid
        self.cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()

    def running(self) -> bool:
        """Still this very process (same start time) and not a zombie."""
        try:
            now = Proc(self.pid)
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            return False
        return now.start == self.start and now.state != "Z"


def _user_procs(uid: int) -> list[Proc]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                p = Proc(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                continue
            if p.uid == uid and p.state != "Z":
                out.append(p)
    return out


def _prerequisites(cfg: dict) -> str | None:
    user = cfg["auth"]["ssh_user"]
    if os.geteuid() != 0:
        return "needs root (starts sshd on 127.0.0.1:22, installs a key for the cluster user)"
    for tool in ("sshd", "ssh", "rsync", "ssh-keygen"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            return f"`{tool}` not installed (apt-get install openssh-server rsync)"
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return f"user {user!r} missing (useradd -m -s /bin/bash {user} && usermod -p '*' {user})"
    if pw.pw_uid == 0:
        return f"user {user!r} must not be root"
    if not _port_free(22):
        return "127.0.0.1:22 is taken (another sshd?)"
    for port in (46379, 48265):
        if not _port_free(port):
            return f"port {port} taken: is a metarl-local cluster already up?"
    if any("ray" in p.cmdline for p in _user_procs(pw.pw_uid)):
        return f"user {user!r} already runs Ray processes"
    return None


def _run(args, log: Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    with open(log, "ab") as f:
        f.write(f"\n$ {' '.join(map(str, args))}\n".encode())
        f.flush()
        return subprocess.run(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)


def _tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def test_ray_up_submit_down(tmp_path):
    cfg = yaml.safe_load(LOCAL.read_text())
    why = _prerequisites(cfg)
    if why:
        pytest.skip(why)
    user = cfg["auth"]["ssh_user"]
    pw = pwd.getpwnam(user)
    before = {p.pid for p in _user_procs(pw.pw_uid)}  # e.g. a login session of that user: not ours
    log = tmp_path / "launcher.log"

    # A throw-away key for the cluster user, and an sshd of our own (loopback, that user only).
    key = tmp_path / "id_ed25519"
    marker = f"metarl-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", marker, "-f", str(key)], check=True)
    ssh_dir = Path(pw.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth_keys = ssh_dir / "authorized_keys"
    old_keys = auth_keys.read_text() if auth_keys.exists() else None
    with open(auth_keys, "a") as f:
        f.write(key.with_suffix(".pub").read_text())
    for p in (ssh_dir, auth_keys):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    auth_keys.chmod(0o600)
    Path("/run/sshd").mkdir(exist_ok=True)
    sshd_cfg = tmp_path / "sshd_config"
    sshd_cfg.write_text(
        "ListenAddress 127.0.0.1\nPort 22\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
        f"PidFile {tmp_path / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PermitRootLogin no\nAllowUsers {user}\nUsePAM no\n"
    )
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path("/etc/ssh/ssh_host_ed25519_key").exists():
        subprocess.run(["ssh-keygen", "-A"], check=True)
    sshd = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(sshd_cfg)], stderr=open(tmp_path / "sshd.log", "wb"))

    # The repository's file with only the key path changed: same setup commands, ports, user.
    test_cfg = dict(cfg, auth=dict(cfg["auth"], ssh_private_key=str(key)))
    cluster_yaml = tmp_path / "cluster-local.yaml"
    cluster_yaml.write_text(yaml.safe_dump(test_cfg, sort_keys=False))
    run_dir = f"{pw.pw_dir}/runs/{marker}"
    cluster: dict[int, Proc] = {}
    leftovers: list[str] = []
    try:
        for _ in range(50):
            if not _port_free(22):
                break
            time.sleep(0.1)
        assert sshd.poll() is None, (tmp_path / "sshd.log").read_text()

        up = _run([RAY, "up", str(cluster_yaml), "--no-config-cache", "-y"], log, timeout=1500)
        assert up.returncode == 0, _tail(log)
        cluster.update((p.pid, p) for p in _user_procs(pw.pw_uid) if p.pid not in before)
        names = {p.name for p in cluster.values()}
        assert {"gcs_server", "raylet"} <= names, names

        job = _run(
            [
                RAY,
                "job",
                "submit",
                "--address",
                "http://127.0.0.1:48265",
                "--working-dir",
                ".",
                "--",
                "metarl",
                "train",
                "configs/navigation2d-metasgd.yaml",
                "--address",
                "auto",
                "--quiet",
                "--out",
                run_dir,
                "--set",
                "iterations=2",
                "meta_batch_size=4",
                "episodes_per_task=4",
                "hidden_sizes=[16,16]",
            ],
            log,
            timeout=900,
        )
        assert job.returncode == 0 and "succeeded" in _tail(log, 5), _tail(log)

        local_copy = tmp_path / "run"
        down = _run([RAY, "rsync-down", str(cluster_yaml), run_dir + "/", str(local_copy) + "/"], log, timeout=300)
        assert down.returncode == 0, _tail(log)
        metrics = (local_copy / "metrics.jsonl").read_text().splitlines()
        assert len(metrics) == 2, metrics
        assert list((local_copy / "checkpoints").glob("checkpoint-000002*"))
    finally:
        _run([RAY, "down", str(cluster_yaml), "-y"], log, timeout=600)
        shutil.rmtree(run_dir, ignore_errors=True)
        (Path(pw.pw_dir) / "ray_bootstrap_key.pem").unlink(missing_ok=True)  # Ray's copy of the test key
        sshd.terminate()
        sshd.wait(timeout=30)
        if old_keys is None:
            auth_keys.unlink(missing_ok=True)
        else:
            auth_keys.write_text(old_keys)

        # Every process of the cluster user this test caused (Ray's, the jobs', SSH sessions, which
        # linger up to ControlPersist=10 s) must be gone. Anything left is ours: killed by PID; test fails.
        def ours_alive():
            extra = [p for p in _user_procs(pw.pw_uid) if p.pid not in before and p.pid not in cluster]
            return [p for p in [*cluster.values(), *extra] if p.running()]

        deadline = time.time() + 60
        while ours_alive() and time.time() < deadline:
            time.sleep(1)
        for p in ours_alive():
            leftovers.append(f"{p.pid} {p.cmdline[:120]}")
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert cluster, "no cluster process was seen"
    assert not leftovers, f"left running after `ray down` (now killed by PID): {leftovers}"
