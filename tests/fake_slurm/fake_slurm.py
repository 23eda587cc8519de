"""Fake Slurm commands (sbatch, srun, squeue, scancel, scontrol) for tests/test_slurm.py.

Every call is recorded. With FAKE_SLURM_RUN=1, `sbatch` plays a one-job cluster whose nodes are
all this machine: it runs the batch script with Slurm's job variables, `srun` starts the
job's tasks with Slurm's per-task variables, and a job that asks `scontrol requeue` runs again
with SLURM_RESTART_COUNT raised, as Slurm would.

Environment:
  FAKE_SLURM_PYTHON        the Python that runs this file (the shims exec it)
  FAKE_SLURM_LOG           file getting one JSON object per call: {"tool", "argv", ...}
  FAKE_SLURM_JOB_ID        the job id sbatch hands out (default 4242)
  FAKE_SLURM_RUN           1: sbatch runs the job here, at most 6 runs (default: only record)
  FAKE_SLURM_TIME_LIMIT_WHEN  a path: once it exists, the batch shell gets SIGUSR1, as
                           `#SBATCH --signal=B:USR1@S` sends it S seconds before the time limit
  FAKE_SLURM_TIME_LIMIT_RUNS  how many runs (from the first) hit the time limit (default 1)
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MAX_RUNS = 6


def record(tool: str, argv: list[str], **extra) -> None:
    with open(os.environ["FAKE_SLURM_LOG"], "a") as log:
        log.write(json.dumps({"tool": tool, "argv": argv, **extra}) + "\n")


def requeue_marker(job: str) -> Path:
    return Path(f"{os.environ['FAKE_SLURM_LOG']}.requeue.{job}")


def sbatch_options(script: str) -> dict[str, str]:
    """`#SBATCH --key=value` lines of a batch script (flags without a value map to '')."""
    options = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --"):].partition("=")
            options[key] = value
    return options


def sbatch(argv: list[str]) -> int:
    path = Path(argv[-1])
    script = path.read_text()
    record("sbatch", argv, script=script)
    job = os.environ.get("FAKE_SLURM_JOB_ID", "4242")
    if os.environ.get("FAKE_SLURM_RUN") == "1":
        run_job(path, sbatch_options(script), job)
    print(job)
    return 0


def run_job(path: Path, options: dict[str, str], job: str) -> None:
    nodes, per_node = int(options["nodes"]), int(options["ntasks-per-node"])
    output = options["output"].replace("%j", job).replace("%x", options["job-name"])
    limit_when = os.environ.get("FAKE_SLURM_TIME_LIMIT_WHEN")
    limit_runs = int(os.environ.get("FAKE_SLURM_TIME_LIMIT_RUNS", "1"))
    for run in range(MAX_RUNS):
        env = {**os.environ, "SLURM_JOB_ID": job, "SLURM_JOB_NAME": options["job-name"],
               "SLURM_JOB_NODELIST": "localhost", "SLURM_NNODES": str(nodes),
               "SLURM_NTASKS": str(nodes * per_node), "SLURM_NTASKS_PER_NODE": str(per_node),
               "SLURM_GPUS_PER_NODE": options["gpus-per-node"], "SLURM_PROCID": "0"}
        if run:
            env["SLURM_RESTART_COUNT"] = str(run)
        requeue_marker(job).unlink(missing_ok=True)
        if limit_when:
            Path(limit_when).unlink(missing_ok=True)
        with open(output, "a") as out:
            proc = subprocess.Popen(["bash", str(path)], env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
            if limit_when and run < limit_runs:
                while proc.poll() is None and not Path(limit_when).exists():
                    time.sleep(0.01)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGUSR1)
            rc = proc.wait()
        record("job", [str(path)], run=run, rc=rc)
        if not requeue_marker(job).exists():
            return


def srun(argv: list[str]) -> int:
    """Starts SLURM_NTASKS copies of the command, forwards SIGTERM to them, returns the first
    non-zero exit status (0 when all succeed)."""
    record("srun", argv)
    command = argv[next(i for i, a in enumerate(argv) if not a.startswith("--")):]
    ntasks, per_node = int(os.environ["SLURM_NTASKS"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
    tasks = [subprocess.Popen(command, env={
        **os.environ, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i % per_node),
        "SLURM_NODEID": str(i // per_node), "SLURM_STEP_ID": "0",
        "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_NUM_NODES": os.environ["SLURM_NNODES"],
        "SLURM_STEP_NUM_TASKS": str(ntasks)}) for i in range(ntasks)]
    signal.signal(signal.SIGTERM, lambda *_: [t.send_signal(signal.SIGTERM) for t in tasks])
    rcs = [t.wait() for t in tasks]
    return next((rc for rc in rcs if rc), 0)


def scontrol(argv: list[str]) -> int:
    record("scontrol", argv)
    if argv[:1] == ["requeue"]:
        requeue_marker(argv[1]).touch()
    return 0


def main(tool: str, argv: list[str]) -> int:
    if tool == "sbatch":
        return sbatch(argv)
    if tool == "srun":
        return srun(argv)
    if tool == "scontrol":
        return scontrol(argv)
    record(tool, argv)  # squeue, scancel
    if tool == "squeue":
        print("       JOBID                 NAME      STATE")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
