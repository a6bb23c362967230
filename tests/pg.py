"""A real PostgreSQL server for tests: `from pg import postgres_url` gives a test module the session fixture.

The server binaries come from tests/services/postgres.sh (which installs them when missing); each session gets
a fresh cluster in its own /tmp folder, on a free port of 127.0.0.1, stopped and removed at the end. As root,
the server runs as `nobody` (PostgreSQL refuses root). A server that cannot be installed or started fails the
test, with its log: CI machines can run one.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parent / "services" / "postgres.sh"
USER = "timebox"
DATABASE = "timebox_test"


def _run(cmd: list[str], what: str, log: Path | None = None, cwd: Path | None = None) -> str:
    """Runs `cmd`; a failure fails the test with its output and the server's log."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)
    if result.returncode != 0:
        server_log = log.read_text(errors="replace") if log and log.exists() else "(no server log)"
        pytest.fail(f"PostgreSQL: {what} failed (exit {result.returncode}): {' '.join(cmd)}\n"
                    f"{result.stdout}{result.stderr}\n--- server log ---\n{server_log}", pytrace=False)
    return result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL to an empty database `timebox_test` on a PostgreSQL server of this session alone."""
    bin_dir = Path(_run([str(INSTALL), "install"], "installing the server").strip().splitlines()[-1])
    # Not pytest's tmp_path: /tmp/pytest-of-root is mode 700, which `nobody` cannot traverse.
    tmp = Path(tempfile.mkdtemp(prefix="timebox-pg-"))
    tmp.chmod(0o755)
    as_server: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(tmp, nobody.pw_uid, nobody.pw_gid)
        as_server = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    data, log, port = tmp / "data", tmp / "server.log", _free_port()
    try:
        _run([*as_server, str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "--no-sync",
              "--encoding=UTF8", "--locale=C"], "initdb", cwd=tmp)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -F"
        _run([*as_server, str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w", "-t", "60",
              "-o", options], "starting the server", log=log, cwd=tmp)
        _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE],
             "createdb", log=log)
        yield f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_server, str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"],
                           capture_output=True, timeout=120, cwd=tmp)
        shutil.rmtree(tmp, ignore_errors=True)
