"""Nobody let in: the agent's socket, the network, privileges, the repository and secrets,
each checked from where an attacker would stand (inside the task, or another uid on the host).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_faults import BUSYBOX, LABEL, Running, buildr, containers_of, hcl_task, need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

# Podman's default capability set for a container: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
# SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, SETFCAP. Nothing may be added to it.
PODMAN_DEFAULT_CAPS = 0x800405FB
ANOTHER_UID = 1000  # inside `podman unshare`: a subordinate uid of the user, a different uid


def repo(tmp_path: Path, *tasks: str) -> Path:
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "input.txt").write_text("input\n")
    os.chmod(root / "src" / "input.txt", 0o640)
    (root / ".buildr" / "tasks.hcl").write_text("\n".join(tasks))
    return root


def said(stdout: str) -> dict[str, str]:
    """`key=value` lines that a task printed."""
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


# -- the agent's socket ----------------------------------------------------------------------


def socket_path_of(container: str) -> Path:
    """The agent's socket as the host reaches it: on a tmpfs of the container's own."""
    pid = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", container],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(f"/proc/{pid}/root/.buildr/sock/agent.sock")


PROBE = """
import socket, sys
for path in sys.argv[1:]:
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
        print("connected")
    except OSError as exc:
        print(exc.strerror)
"""


def connect_as_another_uid(agent_socket: Path, control: Path, scratch: Path) -> list[str]:
    """Tries the agent's socket as ANOTHER_UID, which is not the user but a uid of the user's
    own subordinate range (no root needed: `podman unshare` maps them), in the container's
    user namespace itself. The control socket, in a 0777 directory, shows that the probe
    connects where permissions allow."""
    script = scratch / "probe.py"
    script.write_text(PROBE)
    done = subprocess.run(
        ["podman", "unshare", "setpriv", "--reuid", str(ANOTHER_UID), "--regid",
         str(ANOTHER_UID), "--clear-groups", "/usr/bin/python3", str(script),
         str(agent_socket), str(control)],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[:2]


def test_only_the_user_can_reach_the_agents_socket(tmp_path: Path) -> None:
    need_image()
    root = repo(tmp_path, hcl_task("idle", "echo up; sleep 30"))
    run = Running(root, "run", "idle")
    try:
        run.wait_for_line("up")
        agent_socket = socket_path_of(containers_of(run.pid)[0])
        assert stat.S_ISSOCK(agent_socket.lstat().st_mode)
        # Nothing of the host holds it: no directory under $XDG_RUNTIME_DIR, no bind mount.
        runtime = Path(os.environ["XDG_RUNTIME_DIR"])
        assert not list(runtime.glob("buildr-agent-*"))
        with tempfile.TemporaryDirectory(prefix="buildr-probe-", dir="/tmp") as scratch:
            os.chmod(scratch, 0o755)
            control_dir = Path(scratch) / "open"
            control_dir.mkdir(mode=0o777)
            os.chmod(control_dir, 0o777)
            with socket.socket(socket.AF_UNIX) as control:
                control.bind(str(control_dir / "control.sock"))
                os.chmod(control_dir / "control.sock", 0o777)
                control.listen()
                agent, allowed = connect_as_another_uid(agent_socket,
                                                        control_dir / "control.sock",
                                                        Path(scratch))
        assert allowed == "connected", "the probe itself works"
        assert agent == "Permission denied"
    finally:
        run.process.send_signal(2)
        run.finish(timeout=60)


# -- no TCP port anywhere --------------------------------------------------------------------


def listening_tcp_inodes(pid: int | str) -> set[str]:
    """Inodes of TCP sockets in LISTEN state in the network namespace of `pid`."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


NET_PROBE = """\
echo tcp=$(cat /proc/net/tcp /proc/net/tcp6 /proc/1/net/tcp /proc/1/net/tcp6 | grep -vc local_address)
echo udp=$(cat /proc/net/udp /proc/net/udp6 | grep -vc local_address)
echo interfaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')
echo up
sleep 30"""


def test_no_tcp_port_is_opened_on_the_host_or_in_the_pod(tmp_path: Path) -> None:
    need_image()
    root = repo(tmp_path, hcl_task("net", NET_PROBE))
    run = Running(root, "run", "net")
    try:
        run.wait_for_line("up")
        facts = said("".join(run.stdout))
        assert facts["tcp"] == "0" and facts["udp"] == "0", "no socket at all but unix ones"
        assert facts["interfaces"].split() == ["lo"], "network none: loopback only"
        host_processes = [run.pid]
        service = subprocess.run(["pgrep", "-P", str(run.pid), "-f", "podman system service"],
                                 capture_output=True, text=True, check=False).stdout.split()
        host_processes += [int(pid) for pid in service]
        for pid in host_processes:
            assert not socket_inodes(pid) & listening_tcp_inodes(pid), f"pid {pid} listens"
        ports = subprocess.run(["podman", "inspect", "--format", "{{json .NetworkSettings.Ports}}",
                                containers_of(run.pid)[0]], capture_output=True, text=True,
                               check=True)
        assert json.loads(ports.stdout) in ({}, None)
    finally:
        run.process.send_signal(2)
        run.finish(timeout=60)


# -- privileges ------------------------------------------------------------------------------


PRIVILEGES = """\
for who in self 1; do
  echo "$who.caps=$(grep CapEff /proc/$who/status | cut -f2)"
  echo "$who.bounding=$(grep CapBnd /proc/$who/status | cut -f2)"
  echo "$who.nnp=$(grep NoNewPrivs /proc/$who/status | cut -f2)"
  echo "$who.seccomp=$(grep Seccomp: /proc/$who/status | cut -f2)"
done
mount -t tmpfs none /mnt 2>/dev/null && echo mount=yes || echo mount=no"""


@pytest.mark.parametrize("user", [None, "1000:1000"])
def test_containers_run_without_extra_capabilities_or_new_privileges(tmp_path: Path,
                                                                     user: str | None) -> None:
    need_image()
    spec = f'  container {{\n    image = "{BUSYBOX}"\n    user = "{user}"\n  }}\n' if user else ""
    task = hcl_task("privs", PRIVILEGES)
    if spec:
        task = task.replace(f'  container {{ image = "{BUSYBOX}" }}\n', spec)
    root = repo(tmp_path, task)
    result = buildr(root, "run", "privs", "--output", "plain")
    assert result.returncode == 0, result.stderr
    facts = said(result.stdout)
    for who in ("self", "1"):  # the task, and the agent (PID 1)
        assert int(facts[f"{who}.bounding"], 16) & ~PODMAN_DEFAULT_CAPS == 0
        assert facts[f"{who}.nnp"] == "1"
        assert facts[f"{who}.seccomp"] == "2", "Podman's seccomp filter is on"
    assert int(facts["1.caps"], 16) & ~PODMAN_DEFAULT_CAPS == 0
    assert int(facts["self.caps"], 16) == (0 if user else PODMAN_DEFAULT_CAPS)
    assert facts["mount"] == "no"


# -- the repository --------------------------------------------------------------------------


ATTACK = """\
rm -rf src/input.txt; echo changed > src/new.txt; chmod 777 src
echo through-base > /.buildr/base/src/input.txt 2>/dev/null && echo base=written || echo base=refused
ln -s /.buildr/base/src/input.txt via-link && echo through-link >> via-link 2>/dev/null \
  && echo link=written || echo link=refused
ln /.buildr/base/src/input.txt hard 2>/dev/null && echo hard=linked || echo hard=refused
mount -o remount,rw /.buildr/base 2>/dev/null && echo remount=yes || echo remount=no
touch /.buildr/agent/x 2>/dev/null && echo agent=written || echo agent=refused
echo done"""


def test_the_task_cannot_change_the_repository_through_its_workspace(tmp_path: Path) -> None:
    need_image()
    root = repo(tmp_path, hcl_task("attack", ATTACK))

    def tree() -> dict[str, tuple[int, int, bytes]]:
        # .buildr itself changes: the host makes the out dir in it.
        return {str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_mtime_ns,
                                           p.read_bytes() if p.is_file() else b"")
                for p in sorted(root.rglob("*"))
                if p != root / ".buildr" and ".buildr/out" not in str(p)}

    before = tree()
    result = buildr(root, "-v", "run", "attack", "--output", "plain")
    assert result.returncode == 0, result.stderr
    facts = said(result.stdout)
    assert (facts["base"], facts["link"], facts["hard"], facts["remount"], facts["agent"]) == (
        "refused", "refused", "refused", "no", "refused")
    assert tree() == before, "the repository changed"
    out = root / ".buildr" / "out" / "attack"
    assert (out / "src" / "new.txt").read_text() == "changed\n"
    assert "buildr: attack: deleted src/input.txt" in result.stderr


# -- secrets ---------------------------------------------------------------------------------


SECRET = "hunter2-buildr-test-Secret"
SECRET_TASK = f"""\
echo "token=$TOKEN"
echo "also on stderr: $TOKEN" >&2
[ "$TOKEN" = "{SECRET}" ] && echo reached=yes
echo "$TOKEN" > token.txt
echo up
sleep 2"""


def test_secret_values_reach_the_task_and_nothing_else(tmp_path: Path) -> None:
    need_image()
    root = repo(tmp_path, hcl_task("secretive", SECRET_TASK,
                                   extra='  secret_environment = '
                                         '{ TOKEN = env("BUILDR_TEST_TOKEN") }\n'))
    env = {"BUILDR_TEST_TOKEN": SECRET}
    run = Running(root, "-v", "run", "secretive", env=env)
    run.wait_for_line("up")
    inspected = subprocess.run(["podman", "inspect", *containers_of(run.pid)],
                               capture_output=True, text=True, check=True).stdout
    plain = run.finish()
    as_json = buildr(root, "-v", "run", "secretive", "--output", "json", env=env)
    assert plain.returncode == 0 and as_json.returncode == 0, plain.stderr + as_json.stderr
    assert "reached=yes" in plain.stdout, "the value reached the task's environment"
    out = root / ".buildr" / "out"
    written = {p.name: p.read_text() for p in out.rglob("*")  # the log, junit.xml
               if p.is_file() and p.parent.name in (".logs", ".reports")}
    shown = {"stdout": plain.stdout, "stderr": plain.stderr, "json": as_json.stdout,
             "json stderr": as_json.stderr, "podman inspect": inspected, **written}
    for where, text in shown.items():
        assert SECRET not in text, f"the secret leaked into {where}"
    assert "token=***" in plain.stdout and "also on stderr: ***" in plain.stderr
    assert "token=***" in written["secretive.log"]
    # What the task writes into its files is its data: it comes back as written.
    assert (out / "secretive" / "token.txt").read_text() == SECRET + "\n"
    assert LABEL in inspected
