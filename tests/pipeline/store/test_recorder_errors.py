"""The recorder tells a database it can never use (wrong password, missing database) from one that is down
for now, names the cause without the password, and stops on signals (issue 9, items 10 and 14).

The cluster authenticates TCP connections from 127.0.0.1 with scram-sha-256, so a wrong password is a real
refusal. Passwords reach the recorder only through PGPASSFILE or PGPASSWORD, never its command line.
"""
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import ROOT
from tests.pipeline.store.test_recorder import _as_postgres, pg_server  # noqa: F401  (fixture)

EXIT_PERMANENT, EXIT_STOPPED = 3, 5  # python -m pipeline.store.recorder's documented exit codes


@pytest.fixture
def pg_role(pg_server):
    """A login role with a password and a database it owns, reached over TCP."""
    role = f"bot4_r{uuid.uuid4().hex[:10]}"
    password = secrets.token_hex(12)
    made = _as_postgres("psql", "-qc", f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    assert made.returncode == 0, made.stderr
    made = _as_postgres("createdb", "-O", role, role)
    assert made.returncode == 0, made.stderr
    yield role, password
    _as_postgres("dropdb", "--force", role)
    _as_postgres("psql", "-qc", f"DROP ROLE IF EXISTS {role}")


def passfile(tmp_path, role, password):
    path = tmp_path / "pgpass"
    path.write_text(f"127.0.0.1:*:*:{role}:{password}\n")
    path.chmod(0o600)
    return str(path)


def recorder(dsn, journal, *extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "pipeline.store.recorder", "--dsn", dsn, "--journal", str(journal), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def finish(proc, timeout=60):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def cause_lines(err):
    return [line for line in err.splitlines() if line.startswith("recorder:")]


def test_a_wrong_password_stops_the_recorder_naming_the_cause(pg_role, tmp_path):
    role, password = pg_role
    wrong = secrets.token_hex(12)
    code, out, err = finish(recorder(f"postgresql://{role}@127.0.0.1/{role}", tmp_path,
                                     env={"PGPASSFILE": passfile(tmp_path, role, wrong)}))
    assert code == EXIT_PERMANENT, out + err
    lines = cause_lines(err)
    assert len(lines) == 1 and "password authentication failed" in lines[0] and role in lines[0], err
    assert "PGPASSFILE" in lines[0]  # the fix is named
    assert "last error" in out and "password authentication failed" in out  # the summary line says it too
    assert wrong not in out + err and password not in out + err
    # the right password in the same file: asyncpg read PGPASSFILE (without it the refusal looks the same)
    code, out, err = finish(recorder(f"postgresql://{role}@127.0.0.1/{role}", tmp_path,
                                     env={"PGPASSFILE": passfile(tmp_path, role, password)}))
    assert code == 0 and "reconnects 0" in out, out + err


def test_a_missing_database_stops_the_recorder_naming_the_cause(pg_role, tmp_path):
    role, password = pg_role
    code, out, err = finish(recorder(f"postgresql://{role}@127.0.0.1/{role}_missing", tmp_path,
                                     env={"PGPASSWORD": password}))
    assert code == EXIT_PERMANENT, out + err
    lines = cause_lines(err)
    assert len(lines) == 1 and f'database "{role}_missing" does not exist' in lines[0], err
    assert password not in out + err


def test_a_password_on_the_command_line_is_refused_with_the_fix(tmp_path):
    password = secrets.token_hex(12)
    code, out, err = finish(recorder(f"postgresql://someone:{password}@127.0.0.1/db", tmp_path / "j"))
    assert code == 2, out + err
    assert "PGPASSFILE" in err and "PGPASSWORD" in err and "postgresql://someone:***@127.0.0.1/db" in err
    assert password not in out + err
    code, out, err = finish(recorder("postgresql://someone@127.0.0.1/db", tmp_path / "missing"))
    assert code == 2 and "is not a directory" in err, out + err


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_catching(proc, signum, timeout=60):
    """Until ``proc`` has a handler for ``signum`` (its SigCgt mask in /proc): a signal sent before that
    would find Python's default, and the test would prove nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with open(f"/proc/{proc.pid}/status") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
        if caught >> (signum - 1) & 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {proc.pid} never caught signal {signum}")


def test_sigterm_during_backoff_stops_the_recorder_and_says_why(tmp_path):
    proc = recorder(f"postgresql://nobody@127.0.0.1:{free_port()}/db", tmp_path / "j", "--follow")
    wait_until_catching(proc, signal.SIGTERM)
    time.sleep(1.0)  # refused, backing off (the old recorder never got past this)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, timeout=20)
    assert code == EXIT_STOPPED, out + err
    assert "SIGTERM" in err and "ConnectionRefusedError" in out, out + err


def test_sigint_during_a_connect_attempt_stops_the_recorder(tmp_path):
    with socket.socket() as silent:  # accepts the connection (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        proc = recorder(f"postgresql://nobody@127.0.0.1:{silent.getsockname()[1]}/db", tmp_path / "j", "--follow")
        wait_until_catching(proc, signal.SIGTERM)  # asyncio installs SIGTERM's handler, then SIGINT's
        time.sleep(1.0)  # connecting: the server never answers (asyncpg waits 5 s)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        code, out, err = finish(proc, timeout=20)
    assert code == EXIT_STOPPED, out + err
    assert "SIGINT" in err and "connecting" in err, err


def test_every_message_masks_the_password(tmp_path):
    from pipeline.store.recorder import Recorder
    recorder_ = Recorder(f"postgresql://u:hunter2secret@127.0.0.1:{free_port()}/db", str(tmp_path), min_backoff_s=0.01)

    async def go():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        return await recorder_.run(True, stop)

    outcome = asyncio.run(go())
    assert not outcome.caught_up and recorder_.stats.reconnects >= 1
    assert "postgresql://u:***@127.0.0.1" in recorder_.stats.last_error
    assert "hunter2secret" not in recorder_.stats.last_error + outcome.reason + recorder_.summary()


def test_a_live_run_stops_when_its_database_can_never_be_used(pg_role, tmp_path, live, monkeypatch):
    role, password = pg_role
    monkeypatch.setenv("PGPASSWORD", password)
    run = live("--quiet", "--duration", "4", "--journal", str(tmp_path / "j"),
               "--dsn", f"postgresql://{role}@127.0.0.1/{role}_missing")
    code, output = run.finish(timeout=240)
    assert code != 0, output
    assert any(line.startswith("recorder:") and "does not exist" in line for line in output.splitlines()), output
    assert "trading enabled" not in output
    assert password not in output


def test_a_live_run_outlives_a_database_that_is_down_and_says_so(tmp_path, live):
    run = live("--quiet", "--duration", "3", "--journal", str(tmp_path / "j"),
               "--dsn", f"postgresql://nobody@127.0.0.1:{free_port()}/db")
    code, output = run.finish(timeout=240)
    assert code == 0, output
    summary = [line for line in output.splitlines() if line.startswith("recorder: ") and "rows into" in line]
    assert len(summary) == 1 and "last error" in summary[0] and "ConnectionRefusedError" in summary[0], output


def test_errors_are_told_transient_or_permanent():
    import asyncpg.exceptions as pg

    from pipeline.store.journal import JournalError
    from pipeline.store.recorder import is_permanent
    transient = [ConnectionRefusedError(111, "refused"), ConnectionResetError(104, "reset"), asyncio.TimeoutError(),
                 pg.CannotConnectNowError("the database system is starting up"),
                 pg.AdminShutdownError("terminating connection due to administrator command"),
                 pg.TooManyConnectionsError("sorry, too many clients already"),
                 pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
                 pg.SerializationError("could not serialize"), pg.DiskFullError("no space left on device")]
    permanent = [pg.InvalidPasswordError("password authentication failed"),
                 pg.InvalidAuthorizationSpecificationError('role "x" does not exist'),
                 pg.InvalidCatalogNameError('database "x" does not exist'),
                 pg.InsufficientPrivilegeError("permission denied for schema public"),
                 pg.ClientConfigurationError("invalid DSN"), ValueError("Invalid IPv6 URL"),
                 JournalError("segment is corrupt"), PermissionError(13, "Permission denied")]
    assert [e for e in transient if is_permanent(e)] == []
    assert [e for e in permanent if not is_permanent(e)] == []


def test_a_refusal_after_the_dsn_has_worked_is_retried_for_a_while_then_final(monkeypatch, tmp_path):
    # Seen in CI: while a restarting server's socket is gone, postgresql:///db falls back to TCP on localhost,
    # whose scram rule refuses a role without a password: that refusal must not end a recorder that was working.
    import asyncpg.exceptions as pg

    import pipeline.store.recorder as recorder_module
    refused = pg.InvalidPasswordError('password authentication failed for user "root"')
    recorder = recorder_module.Recorder("postgresql:///x", str(tmp_path))
    assert not recorder._refused_while_restarting(refused)  # never connected: the refusal is the answer
    recorder.connected_once = True
    assert recorder._refused_while_restarting(refused)
    assert not recorder._refused_while_restarting(ValueError("bad DSN"))
    monkeypatch.setattr(recorder_module, "REFUSED_AFTER_CONNECTED_RETRY_S", 0.0)
    assert not recorder._refused_while_restarting(refused)  # past the grace: final
