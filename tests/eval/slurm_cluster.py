"""A single-node SLURM cluster on this machine, for tests: munge, MariaDB + slurmdbd (submitit reads job states
through ``sacct``, which needs accounting), slurmctld and slurmd, all on loopback ports with their state, spool,
logs and keys in one folder. Debian's packages (``slurm-wlm``, ``slurmdbd``, ``munge``, ``mariadb-server-core``;
``.ci/run`` installs them) run as root. Nothing outside the folder is written or read but the binaries."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct", "squeue", "scancel")
INSTALL = "apt-get install slurm-wlm slurmdbd munge mariadb-server-core"


class ClusterUnavailable(RuntimeError):
    """SLURM is not installed here or its daemons did not come up; the message says which."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    cpus: int = 2
    gpus: int = 2
    procs: dict = field(default_factory=dict)  # daemon name -> Popen

    @property
    def env(self) -> dict:
        """The environment every SLURM client (sbatch, sacct, submitit) needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf")}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def jobs(self) -> list[dict]:
        """Jobs in the queue (pending or running): id, array task, state, name."""
        out = self.run("squeue", "-h", "-o", "%i|%K|%T|%j").stdout
        return [dict(zip(("id", "task", "state", "name"), line.split("|"))) for line in out.splitlines() if line]

    def accounting(self, job_id: str) -> list[dict]:
        """``sacct`` rows of a job (one per array task, steps left out): id and state ("CANCELLED by 0" read as
        "CANCELLED")."""
        out = self.run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State").stdout
        rows = [line.split("|") for line in out.splitlines() if line]
        return [{"id": job, "state": state.split()[0]} for job, state in rows]

    # -- start and stop ------------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> "SlurmCluster":
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing:
            raise ClusterUnavailable(f"SLURM is not installed ({', '.join(missing)} not found); as root: {INSTALL}")
        if os.geteuid() != 0:
            raise ClusterUnavailable("the test cluster runs its daemons as root (SlurmUser=root); run as root")
        deadline = time.time() + timeout
        try:
            self._write_config()
            self._spawn("munged", "munged", "-F", "--force", f"--key-file={self.root / 'munge.key'}",
                        f"--socket={self.root / 'munge.socket'}", f"--pid-file={self.root / 'munged.pid'}",
                        f"--seed-file={self.root / 'munge.seed'}", f"--log-file={self.root / 'munged.log'}")
            self._wait(lambda: (self.root / "munge.socket").exists(), "munged", deadline)
            db = self.root / "db"
            self._spawn("mariadb", "mariadbd", "--no-defaults", f"--datadir={db}", f"--socket={db}.sock",
                        f"--port={self.ports['mysql']}", "--bind-address=127.0.0.1", "--user=root",
                        "--skip-grant-tables", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
                        "--innodb-log-file-size=8M", f"--pid-file={db}.pid", f"--log-error={self.root / 'mariadb.log'}")
            self._wait(lambda: _listening(self.ports["mysql"]), "mariadb", deadline)
            self._spawn("slurmdbd", "slurmdbd", "-D")
            self._wait(lambda: _listening(self.ports["dbd"]), "slurmdbd", deadline)
            self._spawn("slurmctld", "slurmctld", "-D", "-i")
            self._wait(lambda: self.run("sinfo", "-h", check=False).returncode == 0, "slurmctld", deadline)
            self._spawn("slurmd", "slurmd", "-D", "-N", "node0")
            self._wait(lambda: self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip() == "idle",
                       "slurmd", deadline)
            # sacct answers only once slurmctld has registered the cluster with slurmdbd
            self._wait(lambda: self.run("sacct", "-n", check=False).returncode == 0, "sacct", deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel what is left in the queue (so no task outlives its cluster), then stop the daemons."""
        if "slurmd" in self.procs and self.procs["slurmd"].poll() is None:
            self.run("scancel", "--user", pwd.getpwuid(os.geteuid()).pw_name, check=False)
            deadline = time.time() + 20
            while time.time() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
        for name in reversed(list(self.procs)):  # slurmd first, munged last
            proc = self.procs.pop(name)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, *cmd: str) -> None:
        out = open(self.root / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait(self, ready, name: str, deadline: float) -> None:
        while not ready():
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise ClusterUnavailable(f"{name} exited {proc.returncode}: {self.output(name)}")
            if time.time() > deadline:
                raise ClusterUnavailable(f"{name} not ready in time: {self.output(name)}")
            time.sleep(0.2)

    def output(self, name: str) -> str:
        text = ""
        for suffix in (".out", ".log"):
            path = self.root / f"{name}{suffix}"
            if path.is_file():
                text += path.read_text(errors="replace")[-1500:]
        return text.strip() or "(no output)"

    def _write_config(self) -> None:
        root = self.root
        for sub in ("state", "spool", "db"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)  # munged refuses key and socket folders others may write
        key = root / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        self.ports = {name: _free_port() for name in ("ctld", "slurmd", "dbd", "mysql")}
        munge = f"socket={root / 'munge.socket'}"
        (root / "slurm.conf").write_text(f"""\
ClusterName=svg2test
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmctldPort={self.ports['ctld']}
SlurmdPort={self.ports['slurmd']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo={munge},cred_expire=10
CredType=cred/munge
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'slurmctld.log'}
SlurmdLogFile={root / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={self.ports['dbd']}
AccountingStoragePass={root / 'munge.socket'}
# pending jobs are looked at every 2 s (not 60); a killed task gets 2 s between SIGTERM and SIGKILL (not 30);
# a requeued job may start again 10 s after its requeue (cred_expire above; not 120)
SchedulerParameters=sched_interval=2
MessageTimeout=20
KillWait=2
InactiveLimit=0
MinJobAge=600
# the node as written here, whatever the machine has (config_overrides above); GPUs that stand for none (no
# device behind them), so that tasks asking for one (slurm_gpu.yaml) are scheduled
GresTypes=gpu
NodeName=node0 NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=4000 Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=debug Nodes=node0 Default=YES MaxTime=INFINITE State=UP
""")
        for i in range(self.gpus):  # gres/gpu wants a device file per GPU; any character device will do
            (root / f"gpu{i}").unlink(missing_ok=True)
            (root / f"gpu{i}").symlink_to("/dev/null")
        (root / "gres.conf").write_text(f"AutoDetect=off\nNodeName=node0 Name=gpu File={root}/gpu[0-{self.gpus - 1}]\n")
        dbd = root / "slurmdbd.conf"
        dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo={munge}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.ports['dbd']}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports['mysql']}
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={root / 'slurmdbd.pid'}
LogFile={root / 'slurmdbd.log'}
""")
        dbd.chmod(0o600)  # slurmdbd refuses a config others can read (it may hold a password)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
