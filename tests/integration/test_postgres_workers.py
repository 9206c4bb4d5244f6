"""Two calibration workers share one Optuna study on a throwaway PostgreSQL server (run `pytest -m postgres`).

The server runs on 127.0.0.1 from a temporary directory and is stopped afterwards. Nothing is skipped
silently: without PostgreSQL's binaries or psycopg the test FAILS with the install command.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
TRIALS_PER_WORKER = 15


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install -y postgresql (scripts/setup.sh does it)",
                    pytrace=False)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail('psycopg is not installed: pip install "psycopg[binary]"', pytrace=False)
    bin_dir = Path(found[-1]).parent
    # PostgreSQL refuses to run as root: run it as the `postgres` user, in a directory that user owns.
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="cope-pg-")
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        # runuser lives in /usr/sbin, which a plain user's PATH (and `env -i PATH=/usr/bin:/bin`) leaves out
        runuser = shutil.which("runuser", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
        if runuser is None:
            pytest.fail("runuser (util-linux) is needed to run PostgreSQL as its own user when testing as root",
                        pytrace=False)
        as_user = [runuser, "-u", "postgres", "--"]
    data, port = os.path.join(root, "data"), _free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", data, "-U", "cope", "--auth=trust", "-E", "UTF8")
    run(str(bin_dir / "pg_ctl"), "-D", data, "-l", os.path.join(root, "log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "cope", "optuna")
        yield f"postgresql+psycopg://cope@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_study(postgres_url, tmp_path):
    import optuna

    sys.path.insert(0, str(REPO / "tests" / "unit"))
    from test_calibrate import synthetic_records

    records = synthetic_records(tmp_path / "synth.jsonl")
    cmd = [sys.executable, "-m", "cope_dspy.calibrate", "worker", "--records", str(records.path), "--storage",
           postgres_url, "--study", "shared", "--trials", str(TRIALS_PER_WORKER)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for _ in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=300)
        assert w.returncode == 0, out.decode()

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2 * TRIALS_PER_WORKER
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(2 * TRIALS_PER_WORKER))  # no duplicate, none lost
    assert len({t._trial_id for t in trials}) == 2 * TRIALS_PER_WORKER
    assert study.user_attrs["space"]["fingerprint"] == records.fingerprint()
    # the shared study is a normal calibration study: calibrate reads it and adds nothing when it is full
    from cope_dspy.calibrate import calibrate

    cal = calibrate(records, n_trials=2 * TRIALS_PER_WORKER, storage=postgres_url, study_name="shared")
    assert len(cal.trials) == 2 * TRIALS_PER_WORKER and cal.pareto
