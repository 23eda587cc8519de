"""launch/tpu.sh against a fake `gcloud` that records its calls and plays preemptions."""
from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TPU_SH = ROOT / "launch" / "tpu.sh"
WORKER_TRAIN = ROOT / "launch" / "worker_train.sh"
FAKE_GCLOUD_DIR = ROOT / "tests" / "fake_gcloud"
LOC = ["--project=proj", "--zone=us-central2-b"]
MODEL_DIR = "gs://bucket/runs/base"


def run_tpu(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
            location: bool = True) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Runs tpu.sh with the fake gcloud first on PATH; returns the result and gcloud's calls."""
    log = tmp_path / "gcloud.jsonl"
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("CLOUDSDK_", "TPU_", "FAKE_GCLOUD_", "CLINICAL_T5X_"))
                and k != "MODEL_DIR"}
    full_env.update(PATH=f"{FAKE_GCLOUD_DIR}:{os.environ['PATH']}", FAKE_GCLOUD_LOG=str(log))
    full_env.update(env or {})
    argv = ["bash", str(TPU_SH), *args]
    if location:
        argv += ["--project", "proj", "--zone", "us-central2-b"]
    result = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def verbs(calls: list[list[str]]) -> list[str]:
    """`tpu-vm describe`, `queued-resources create`, ... for each recorded call."""
    return [f"{c[2]} {c[3]}" for c in calls]


def train_commands(calls: list[list[str]]) -> list[str]:
    return [a for c in calls if c[3] == "ssh" for a in c if "worker_train.sh" in a]


def test_fake_gcloud_is_executable():
    assert os.stat(FAKE_GCLOUD_DIR / "gcloud").st_mode & stat.S_IXUSR


def test_create_tpu_vm_exact_call(tmp_path):
    result, calls = run_tpu(tmp_path, "create", "--name", "ct5", "--accelerator", "v4-32",
                            "--spot")
    assert result.returncode == 0, result.stderr
    assert calls == [["compute", "tpus", "tpu-vm", "create", "ct5", *LOC,
                      "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"]]


def test_create_queued_resource_waits_until_active(tmp_path):
    result, calls = run_tpu(
        tmp_path, "create", "--name", "ct5", "--accelerator", "v5e-16", "--queued", "--poll",
        "0", env={"FAKE_GCLOUD_QUEUED_STATES": "WAITING_FOR_RESOURCES,PROVISIONING,ACTIVE"})
    assert result.returncode == 0, result.stderr
    assert calls[0] == ["compute", "tpus", "queued-resources", "create", "ct5", "--node-id=ct5",
                        *LOC, "--accelerator-type=v5litepod-16",
                        "--runtime-version=v2-alpha-tpuv5-lite"]
    assert verbs(calls[1:]) == ["queued-resources describe"] * 3 + ["tpu-vm describe"]


def test_dry_run_prints_commands_and_calls_nothing(tmp_path):
    result, calls = run_tpu(tmp_path, "create", "--accelerator", "v5p-32", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert result.stdout.strip() == (
        "gcloud compute tpus tpu-vm create clinical-t5x --project=proj --zone=us-central2-b "
        "--accelerator-type=v5p-32 --version=v2-alpha-tpuv5")


@pytest.mark.parametrize("args, env, message", [
    (["create", "--accelerator", "v4-8", "--zone", "z"], {}, "missing project"),
    (["create", "--accelerator", "v4-8", "--project", "p"], {}, "missing zone"),
    (["create", "--accelerator", "v9-8", "--project", "p", "--zone", "z"], {},
     "unknown accelerator type 'v9-8'"),
    (["create", "--project", "p", "--zone", "z"], {}, "missing accelerator type"),
    (["train", "base", "--project", "p", "--zone", "z", "--accelerator", "v4-8",
      "--model-dir", "/local/dir"], {}, "--model-dir must be on GCS"),
    (["train", "huge", "--project", "p", "--zone", "z"], {}, "unknown variant 'huge'"),
    (["train", "base", "--project", "p", "--zone", "z", "--accelerator", "v4-16",
      "--model-dir", MODEL_DIR], {}, "no partitioning preset gin/partitioning/v4-16.gin"),
    (["train", "base", "--project", "p", "--zone", "z", "--accelerator", "v4-8",
      "--model-dir", MODEL_DIR, "--engine", "pax"], {}, "--engine must be t5x or builtin"),
    (["frobnicate", "--project", "p", "--zone", "z"], {}, "unknown command 'frobnicate'"),
])
def test_configuration_errors_are_clear(tmp_path, args, env, message):
    result, calls = run_tpu(tmp_path, *args, env=env, location=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert calls == []


def test_project_and_zone_from_gcloud_environment(tmp_path):
    result, calls = run_tpu(
        tmp_path, "delete", location=False,
        env={"CLOUDSDK_CORE_PROJECT": "envproj", "CLOUDSDK_COMPUTE_ZONE": "europe-west4-a"})
    assert result.returncode == 0, result.stderr
    assert calls == [["compute", "tpus", "tpu-vm", "delete", "clinical-t5x",
                      "--project=envproj", "--zone=europe-west4-a", "--quiet"]]


@pytest.mark.parametrize("error, status, message", [
    ("ERROR: (gcloud.compute.tpus.tpu-vm.create) {\"code\": 8, \"message\": \"Quota limit "
     "'TPUV4PodPerProjectPerZoneForTPUAPI' has been exceeded. Limit: 0 in zone us-central2-b.\"}",
     3, "not enough TPU quota for v4-128"),
    ("ERROR: (gcloud.compute.tpus.tpu-vm.create) RESOURCE_EXHAUSTED: There is no more capacity "
     "in the zone \"us-central2-b\"", 3, "no v4-128 capacity in us-central2-b"),
    ("ERROR: (gcloud.compute.tpus.tpu-vm.create) INVALID_ARGUMENT: Accelerator type v4-128 is "
     "not available in zone us-central2-b", 2, "not offered in us-central2-b"),
    ("ERROR: (gcloud.compute.tpus.tpu-vm.create) PERMISSION_DENIED: Permission denied on "
     "project proj", 2, "project proj: not found, no permission"),
    ("ERROR: (gcloud.compute.tpus.tpu-vm.create) INTERNAL: oops", 1, "gcloud failed creating"),
])
def test_create_explains_gcloud_errors(tmp_path, error, status, message):
    result, _ = run_tpu(tmp_path, "create", "--accelerator", "v4-128",
                        env={"FAKE_GCLOUD_CREATE_ERROR": error})
    assert result.returncode == status
    assert message in result.stderr
    assert error in result.stderr  # gcloud's own text is kept


def test_setup_copies_the_checkout_and_installs_on_every_worker(tmp_path):
    result, calls = run_tpu(tmp_path, "setup", "--name", "ct5", "--with-t5x")
    assert result.returncode == 0, result.stderr
    assert verbs(calls) == ["tpu-vm scp", "tpu-vm ssh"]
    scp, ssh = calls
    assert scp[4].endswith("clinical_t5x_src.tar.gz") and scp[5:] == [
        "ct5:~/clinical_t5x_src.tar.gz", *LOC, "--worker=all"]
    assert ssh[4:7] == ["ct5", *LOC] and ssh[7] == "--worker=all"
    assert ssh[8].startswith("--command=") and ssh[8].endswith(
        "bash $HOME/clinical_t5x/launch/worker_setup.sh --with-t5x")


def test_setup_ships_only_what_git_would_commit(tmp_path):
    result, _ = run_tpu(tmp_path, "setup", env={"FAKE_GCLOUD_SCP_COPY_TO": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "clinical_t5x_src.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"launch/tpu.sh", "launch/worker_setup.sh", "launch/worker_train.sh", "setup.py",
            "gin/clinical_base.gin"} <= names
    assert not [n for n in names if n.startswith(".git/") or "__pycache__" in n
                or ".egg-info" in n]


def test_setup_dry_run_prints_tar_scp_ssh(tmp_path):
    result, calls = run_tpu(tmp_path, "setup", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert calls == []
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["tar", "gcloud", "gcloud"]
    assert "worker_setup.sh" in lines[2] and "--with-t5x" not in lines[2]


def test_train_exact_call(tmp_path):
    result, calls = run_tpu(
        tmp_path, "train", "large", "--name", "ct5", "--accelerator", "v5e-64",
        "--engine", "t5x", "--model-dir", MODEL_DIR, "--data-dir", "gs://bucket/prepared",
        "--vocab-dir", "gs://bucket/vocab", "--gin", "TRAIN_STEPS=1000")
    assert result.returncode == 0, result.stderr
    assert calls == [["compute", "tpus", "tpu-vm", "ssh", "ct5", *LOC, "--worker=all",
                      "--command=cd $HOME/clinical_t5x && "
                      "CLINICAL_T5X_DATA_DIR=gs://bucket/prepared "
                      "CLINICAL_T5X_VOCAB_DIR=gs://bucket/vocab bash launch/worker_train.sh "
                      "t5x large gs://bucket/runs/base v5e-64 TRAIN_STEPS=1000"]]


def test_train_passes_the_exit_status_of_the_run(tmp_path):
    result, _ = run_tpu(tmp_path, "train", "base", "--accelerator", "v4-8", "--model-dir",
                        MODEL_DIR, env={"FAKE_GCLOUD_TRAIN_RCS": "7"})
    assert result.returncode == 7


def watch(tmp_path: Path, states: str, train_rcs: str, *extra: str):
    return run_tpu(tmp_path, "watch", "base", "--name", "ct5", "--accelerator", "v4-32",
                   "--model-dir", MODEL_DIR, "--backoff", "0", "--poll", "0", *extra,
                   env={"FAKE_GCLOUD_STATES": states, "FAKE_GCLOUD_TRAIN_RCS": train_rcs})


def test_watch_recreates_a_preempted_slice_and_resumes_the_same_run(tmp_path):
    # READY: train dies (preempted mid-run); PREEMPTED: recreate; READY after create.
    result, calls = watch(tmp_path, "READY,PREEMPTED,READY", "255,0")
    assert result.returncode == 0, result.stderr
    assert verbs(calls) == [
        "tpu-vm describe", "tpu-vm ssh",                      # train -> dies
        "tpu-vm describe", "tpu-vm delete", "tpu-vm create",  # preempted -> recreate
        "tpu-vm describe", "tpu-vm scp", "tpu-vm ssh",        # ready -> setup
        "tpu-vm ssh",                                         # train again -> done
    ]
    first, second = train_commands(calls)
    assert first == second and MODEL_DIR in first  # same MODEL_DIR: the trainer resumes
    assert calls[4][5:] == [*LOC, "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"]
    assert "recovery 1 of 20" in result.stderr


def test_watch_reruns_a_dead_run_on_a_healthy_slice_without_recreating(tmp_path):
    result, calls = watch(tmp_path, "READY", "1,1,0")
    assert result.returncode == 0, result.stderr
    assert verbs(calls) == ["tpu-vm describe", "tpu-vm ssh"] * 3
    assert len(set(train_commands(calls))) == 1


def test_watch_creates_a_missing_slice_first(tmp_path):
    result, calls = watch(tmp_path, "MISSING,READY", "0")
    assert result.returncode == 0, result.stderr
    assert verbs(calls) == ["tpu-vm describe", "tpu-vm create", "tpu-vm describe",
                            "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]


def test_watch_installs_t5x_after_recreating_for_the_t5x_engine(tmp_path):
    result, calls = watch(tmp_path, "PREEMPTED,READY", "0", "--engine", "t5x")
    assert result.returncode == 0, result.stderr
    setup = [a for c in calls for a in c if "worker_setup.sh" in a]
    assert len(setup) == 1 and setup[0].endswith("--with-t5x")


def test_watch_gives_up_after_max_retries(tmp_path):
    result, calls = watch(tmp_path, "READY", "1", "--max-retries", "2")
    assert result.returncode == 4
    assert "giving up after 2 recoveries" in result.stderr
    assert len(train_commands(calls)) == 3


def test_watch_keeps_trying_when_recreating_hits_no_capacity(tmp_path):
    log_env = {"FAKE_GCLOUD_STATES": "PREEMPTED", "FAKE_GCLOUD_TRAIN_RCS": "0",
               "FAKE_GCLOUD_CREATE_ERROR": "ERROR: RESOURCE_EXHAUSTED: no more capacity"}
    result, calls = run_tpu(tmp_path, "watch", "base", "--accelerator", "v4-32",
                            "--model-dir", MODEL_DIR, "--backoff", "0", "--max-retries", "1",
                            env=log_env)
    assert result.returncode == 4
    assert verbs(calls).count("tpu-vm create") == 2
    assert train_commands(calls) == []


def test_watch_with_queued_resources_recreates_a_suspended_one(tmp_path):
    result, calls = run_tpu(
        tmp_path, "watch", "base", "--name", "ct5", "--accelerator", "v4-32", "--queued",
        "--spot", "--model-dir", MODEL_DIR, "--backoff", "0", "--poll", "0",
        env={"FAKE_GCLOUD_QUEUED_STATES": "ACTIVE,SUSPENDED,WAITING_FOR_RESOURCES,ACTIVE",
             "FAKE_GCLOUD_TRAIN_RCS": "255,0"})
    assert result.returncode == 0, result.stderr
    assert verbs(calls) == [
        "queued-resources describe", "tpu-vm describe", "tpu-vm ssh",
        "queued-resources describe", "queued-resources delete", "queued-resources create",
        "queued-resources describe", "queued-resources describe", "tpu-vm describe",
        "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]
    assert calls[4][5:] == [*LOC, "--force", "--quiet"]
    assert calls[5][-1] == "--spot"


def test_watch_dry_run_prints_one_round(tmp_path):
    result, calls = run_tpu(tmp_path, "watch", "sci", "--accelerator", "v3-8", "--model-dir",
                            MODEL_DIR, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert "tpu-vm describe" in result.stderr and "one round shown" in result.stderr
    ssh = shlex.split(result.stdout)  # dry-run output is shell-quoted, ready to paste
    assert ssh[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
    assert ssh[-1].endswith("worker_train.sh builtin sci gs://bucket/runs/base v3-8")


def test_status_logs_delete(tmp_path):
    for args in (["status", "--queued"], ["logs", "--lines", "20"],
                 ["logs", "--fetch", str(tmp_path / "logs")], ["delete", "--queued"]):
        result, _ = run_tpu(tmp_path, *args, "--name", "ct5")
        assert result.returncode == 0, result.stderr
    _, calls = run_tpu(tmp_path, "status", "--name", "ct5")
    assert verbs(calls) == ["queued-resources describe", "tpu-vm describe", "tpu-vm ssh",
                            "tpu-vm scp", "queued-resources delete", "tpu-vm describe"]
    assert calls[2][-1] == "--command=tail -n 20 $HOME/clinical_t5x_logs/*.log"
    assert calls[3][4:7] == ["--recurse", "ct5:~/clinical_t5x_logs", str(tmp_path / "logs")]
    assert calls[3][-1] == "--worker=all"
    assert (tmp_path / "logs").is_dir()


# ---- launch/worker_train.sh (what each worker runs) -------------------------------------------

def run_worker(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HOME": str(tmp_path), **env}
    umask = os.umask(0o022)  # a usual ssh session's umask
    try:
        return subprocess.run(["bash", str(WORKER_TRAIN), *args], env=full_env,
                              capture_output=True, text=True, timeout=60)
    finally:
        os.umask(umask)


@pytest.mark.parametrize("engine, expected", [
    ("t5x", "python3 -m t5x.train --alsologtostderr "
            "--gin_file=gin/clinical_large.gin --gin_file=gin/partitioning/v4-32.gin "
            "--gin.MODEL_DIR='gs://b/m' --gin.TRAIN_STEPS=5"),
    ("builtin", "python3 -m clinical_t5x.train "
                "--gin_file=gin/builtin/large.gin --gin_file=gin/partitioning/v4-32.gin "
                "--gin.MODEL_DIR='gs://b/m' --gin.TRAIN_STEPS=5"),
])
def test_worker_train_builds_the_trainer_command(tmp_path, engine, expected):
    result = run_worker(tmp_path, engine, "large", "gs://b/m", "v4-32", "TRAIN_STEPS=5",
                        env={"CLINICAL_T5X_WORKER_DRY_RUN": "1", "T5X_ROOT": "/opt/t5x"})
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    assert [bash_unquote(w) for w in words] == expected.format(root=ROOT).split()


def bash_unquote(word: str) -> str:
    return subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True,
                          text=True).stdout


def test_worker_train_logs_per_host_and_returns_the_run_status(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    python3 = fake_bin / "python3"
    python3.write_text("#!/bin/sh\necho \"trainer args: $*\"\nexit 3\n")
    python3.chmod(0o755)
    result = run_worker(tmp_path, "builtin", "base", "gs://b/m", "none",
                        env={"PATH": f"{fake_bin}:{os.environ['PATH']}"})
    assert result.returncode == 3
    assert "trainer args: -m clinical_t5x.train" in result.stdout  # streamed to ssh
    logs = list((tmp_path / "clinical_t5x_logs").glob("base-builtin-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "--gin_file=gin/builtin/base.gin --gin.MODEL_DIR='gs://b/m'" in text
    assert "gin/partitioning/" not in text
    assert text.rstrip().endswith("exit status 3")
    assert not list((tmp_path / "clinical_t5x_logs").glob("*.pid"))
    # Logs may quote training data: owner-only whatever umask the ssh session had.
    assert stat.S_IMODE((tmp_path / "clinical_t5x_logs").stat().st_mode) == 0o700
    assert stat.S_IMODE(logs[0].stat().st_mode) == 0o600


def test_queued_create_stops_waiting_at_the_timeout(tmp_path):
    result, calls = run_tpu(tmp_path, "create", "--accelerator", "v4-8", "--queued", "--poll",
                            "0", "--wait-timeout", "0",
                            env={"FAKE_GCLOUD_QUEUED_STATES": "WAITING_FOR_RESOURCES"})
    assert result.returncode == 1
    assert "not READY after 0s (state WAITING)" in result.stderr


def test_queued_create_reports_a_failed_queued_resource(tmp_path):
    result, _ = run_tpu(tmp_path, "create", "--accelerator", "v4-8", "--queued", "--poll", "0",
                        env={"FAKE_GCLOUD_QUEUED_STATES": "ACCEPTED,FAILED"})
    assert result.returncode == 1
    assert "suspended or failed (see: launch/tpu.sh status --queued)" in result.stderr
