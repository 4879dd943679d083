"""``ray job submit`` against a real local cluster, and the job scripts without an installed package.

The module starts its own head node (``ray start --head`` on loopback, dashboard on, free ports,
its own ``--temp-dir`` and process group), submits ``jobs/generate.py`` with a tiny world the way
docs/OPERATIONS.md tells users to, and a job with a bad config key. Teardown signals only that
process group and the processes that name its temp dir (``ray stop`` would stop every Ray on the
machine). ``RAY_ADDRESS`` is never set in this process, and the cluster's address file lives in
its own temp dir, so no other test can attach to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from lantern_batch import io

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # The job's entrypoint runs `python` from the PATH the cluster was started with.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray turns token auth on for a new cluster whenever ~/.ray/auth_token exists; a loopback
    # test cluster must not depend on that file (docs/OPERATIONS.md covers tokens on clusters).
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def _cluster_processes(pgid: int, temp_dir: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(p.pid) == pgid or temp_dir in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return found


def _stop_cluster(pgid: int, temp_dir: str) -> None:
    """SIGTERM the cluster's process group, then SIGKILL what is left after 3 s (the GCS, the
    raylet and the autoscaler monitor ignore SIGTERM; `ray stop --force` kills them the same way)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and _cluster_processes(pgid, temp_dir):
        time.sleep(0.5)
    for p in _cluster_processes(pgid, temp_dir):
        with contextlib.suppress(psutil.Error):
            p.kill()


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node on loopback with the dashboard (job API) on a free port; yields its URL."""
    gcs, dash, client, agent, agent_grpc, metrics, env_agent = _free_ports(7)
    # Short path: Ray's unix sockets live under it (limit ~107 chars).
    temp_dir = tempfile.mkdtemp(prefix="lbjob-", dir="/tmp")
    log = open(os.path.join(temp_dir, "ray-start.log"), "w")  # noqa: SIM115
    cmd = [
        str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
        "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
        "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
        "--runtime-env-agent-port", str(env_agent), "--num-cpus", "2",
        "--object-store-memory", str(300 * 1024**2), "--temp-dir", temp_dir, "--disable-usage-stats",
    ]
    # A new session: every daemon `ray start` leaves behind keeps this process group.
    proc = subprocess.Popen(cmd, env=_cluster_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    pgid = proc.pid
    address = f"http://127.0.0.1:{dash}"
    try:
        rc = proc.wait(timeout=120)
        assert rc == 0, Path(temp_dir, "ray-start.log").read_text()[-3000:]
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 30
        while True:
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield address
    finally:
        _stop_cluster(pgid, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait(client, job_id: str, timeout_s: float = 150) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {status} after {timeout_s}s:\n{client.get_job_logs(job_id)[-3000:]}")
        time.sleep(1)


def test_submit_generate_succeeds_and_writes_the_world(ray_cluster, tmp_path):
    from ray.job_submission import JobSubmissionClient

    out = tmp_path / "world"
    job_id = "lantern-generate-ok"
    # Exactly the documented command, from the checkout root.
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_cluster, "--working-dir", ".",
         "--submission-id", job_id, "--no-wait", "--",
         "python", "jobs/generate.py", "--set", "num_members=20", "--set", "num_jobs=10",
         "--set", "num_pairs=50", "--set", "num_seed=20", "--set", f"out={out}"],
        cwd=ROOT, env=_cluster_env(), capture_output=True, text=True, timeout=120,
    )
    assert submit.returncode == 0, submit.stderr[-3000:]
    client = JobSubmissionClient(ray_cluster)
    status = _wait(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status == "SUCCEEDED", logs[-3000:]
    assert "generate.done" in logs
    for table in ("members", "jobs", "pairs", "seed", "apply_log"):
        assert io.list_parquet_files(str(out / table)), f"no {table} written"
    assert io.read_table(str(out / "members")).num_rows == 20
    assert 0 < io.read_table(str(out / "pairs")).num_rows <= 50


def test_bad_config_fails_with_the_reason_in_the_logs(ray_cluster):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster)
    job_id = client.submit_job(
        entrypoint="python jobs/generate.py --set bogus_key=1",
        runtime_env={"working_dir": str(ROOT)},
        submission_id="lantern-generate-bad-key",
    )
    assert _wait(client, job_id) == "FAILED"
    logs = client.get_job_logs(job_id)
    assert "unknown config key 'bogus_key'" in logs
    assert "Traceback" not in logs  # a named error, not a stack trace
    assert "exit code 2" in (client.get_job_info(job_id).message or "")


def test_job_scripts_run_from_a_bare_copy_of_the_checkout(tmp_path):
    """On a cluster the package may not be installed: each script must import the
    ``lantern_batch/`` next to it (the uploaded working dir) and nothing else."""
    copy = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("jobs", "lantern_batch", "configs"):
        shutil.copytree(ROOT / part, copy / part, ignore=ignore)
    probe = textwrap.dedent("""
        import json, runpy, sys
        results = {}
        for script, args in json.loads(sys.argv[1]):
            sys.argv = [script, *args]
            try:
                runpy.run_path(script, run_name="__main__")
                code = 0
            except SystemExit as exc:
                code = exc.code
            results[script] = code
        import lantern_batch
        print(json.dumps({"codes": results, "package": lantern_batch.__file__}))
    """)
    runs = [("jobs/generate.py", ["--dry-run"]), ("jobs/synthesize.py", ["--dry-run"]),
            ("jobs/distill.py", ["classifier", "--dry-run"]), ("jobs/precompute.py", ["--dry-run"]),
            ("jobs/evaluate.py", ["--dry-run"]), ("jobs/pipeline.py", ["--dry-run"]),
            ("jobs/curate.py", ["export", "--dry-run"]), ("jobs/forget.py", ["--dry-run"])]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    done = subprocess.run([sys.executable, "-c", probe, json.dumps(runs)], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["package"].startswith(str(copy)), result["package"]
    missing = {s: c for s, c in result["codes"].items() if c != 0}
    assert not missing, (missing, done.stderr[-3000:])


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "jobs").glob("*.py")))
def test_every_job_script_forwards_to_its_command(script):
    """Each script is the CLI with its command fixed; the docstring shows the submit command."""
    text = (ROOT / "jobs" / script).read_text()
    assert "ray job submit" in text and f"python jobs/{script}" in text
    assert "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))" in text
    assert 'if __name__ == "__main__":' in text
    command = {"pipeline.py": "demo"}.get(script, script[:-3])
    assert f'main(["{command}", *sys.argv[1:]])' in text
