import pytest

from tests.pipeline.safety.notify_socket import NotifySocket


@pytest.fixture
def notify(tmp_path, monkeypatch):
    """A notify socket bound here and named in $NOTIFY_SOCKET, so a ``bot4 run`` the test starts speaks to it
    as to systemd; the test sets $WATCHDOG_USEC itself."""
    sock = NotifySocket(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    yield sock
    sock.close()
