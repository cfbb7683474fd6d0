"""The alert socket: an ipc endpoint never deletes a file it did not create."""
import os
import socket
import subprocess
import sys
import uuid

import pytest

from pipeline.config import ConfigError, from_dict
from pipeline.safety import alerts
from tests.conftest import ROOT


def test_an_ipc_endpoint_on_an_existing_file_is_refused_and_the_file_kept(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("operator data")
    with pytest.raises(alerts.AlertError, match="watchdog.alert_endpoint") as err:
        alerts.Alerter("t", f"ipc://{precious}", "")
    assert str(precious) in str(err.value)
    assert precious.read_text() == "operator data"


def test_a_socket_someone_listens_on_is_refused(tmp_path):
    path = tmp_path / "busy.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    try:
        with pytest.raises(alerts.AlertError, match="in use"):
            alerts.Alerter("t", f"ipc://{path}", "")
        assert path.is_socket()
    finally:
        listener.close()
        path.unlink()


def test_the_alerter_removes_only_the_socket_it_created(tmp_path):
    path = tmp_path / "alerts.sock"
    alerter = alerts.Alerter("t", f"ipc://{path}", "")
    assert path.is_socket()
    alerter.close()
    assert not path.exists()
    alerter = alerts.Alerter("t", f"ipc://{path}", "")
    path.unlink()
    path.write_text("someone else's file, put there after the bind")
    alerter.close()
    assert path.read_text() == "someone else's file, put there after the bind"


def test_remove_ipc_file_unlinks_a_stale_socket_only(tmp_path):
    regular = tmp_path / "regular"
    regular.write_text("keep")
    alerts.remove_ipc_file(f"ipc://{regular}")
    assert regular.read_text() == "keep"
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens: what a killed watchdog leaves
    alerts.remove_ipc_file(f"ipc://{stale}")
    assert not stale.exists()


@pytest.mark.parametrize("endpoint_of", [lambda tmp: f"ipc://{tmp}/precious.txt",
                                         lambda tmp: f"ipc://{tmp}/no-such-dir/alerts"])
def test_the_config_refuses_an_ipc_endpoint_on_a_file_or_in_a_missing_directory(tmp_path, endpoint_of):
    (tmp_path / "precious.txt").write_text("operator data")
    with pytest.raises(ConfigError, match=r"watchdog\.alert_endpoint="):
        from_dict({"watchdog": {"alert_endpoint": endpoint_of(tmp_path)}})
    assert (tmp_path / "precious.txt").read_text() == "operator data"


def test_bot4_run_with_an_alert_endpoint_on_a_file_exits_2_and_keeps_the_file(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("operator data")
    config = tmp_path / "c.toml"
    config.write_text(f'[watchdog]\nalert_endpoint = "ipc://{precious}"\n')
    out = subprocess.run([sys.executable, "-m", "tools.cli", "run", "--config", str(config), "--duration", "0.5",
                          "--quiet", "--name", f"t{uuid.uuid4().hex[:8]}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert precious.read_text() == "operator data"
    assert out.returncode == 2 and "watchdog.alert_endpoint" in out.stderr, out.stdout + out.stderr
    assert not os.path.exists(tmp_path / "precious.txt.sock")


def test_a_file_planted_at_the_auto_endpoint_is_a_config_error_naming_it():
    import tempfile
    run = f"t{uuid.uuid4().hex[:8]}"
    planted = os.path.join(tempfile.gettempdir(), f"bot4.{run}.alerts")
    with open(planted, "w") as fh:
        fh.write("a local user's file")
    try:
        with pytest.raises(ConfigError, match=r"watchdog\.alert_endpoint='auto'") as err:
            from_dict({"run": {"name": run}})
        assert planted in str(err.value)
        alerts.remove_ipc_file(alerts.endpoint_for(run, "auto"))  # the supervisor's clean-up: not a socket, kept
        assert open(planted).read() == "a local user's file"
    finally:
        os.unlink(planted)
