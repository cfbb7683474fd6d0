"""The shipped systemd unit: what the supervisor's notify protocol and stop need from it, and systemd's own
check of it (systemd-analyze verify). The protocol itself is tested live in tests/pipeline/safety/test_sd_notify.py."""
import os
import shlex
import shutil
import subprocess
import sys

from pipeline.config import Config
from pipeline.supervisor import ExitCode, stop_budget_s
from tests.conftest import ROOT

SHIPPED = os.path.join(ROOT, "tools", "deploy", "bot4.service")


def unit() -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values in order (a key such as Environment= may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    with open(SHIPPED) as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def test_the_unit_is_a_notify_service_that_stops_by_sigterm_within_the_drain():
    service = {key: values[-1] for key, values in unit()["Service"].items()}
    assert (service["Type"], service["NotifyAccess"]) == ("notify", "main")
    assert (service["KillSignal"], service["KillMode"]) == ("SIGTERM", "mixed")  # SIGTERM to the supervisor alone
    assert seconds(service["TimeoutStopSec"]) > stop_budget_s(Config())
    # Pings at half WatchdogSec, each judged against the heartbeat limit: a healthy run never misses one.
    assert seconds(service["WatchdogSec"]) / 2 > Config().watchdog.heartbeat_stale_ms / 1e3
    assert service["Restart"] == "on-failure"
    assert {int(c) for c in service["RestartPreventExitStatus"].split()} == {ExitCode.CONFIG, ExitCode.STAGE_DIED,
                                                                              ExitCode.TRIPPED}


def test_the_warmup_before_the_run_compiles_for_the_same_config():
    service = unit()["Service"]
    run, warmup = shlex.split(service["ExecStart"][0]), shlex.split(service["ExecStartPre"][0])
    assert run[:2] == ["/usr/local/bin/bot4", "run"] and warmup[:2] == ["/usr/local/bin/bot4", "warmup"]
    assert run[run.index("--config") + 1] == warmup[warmup.index("--config") + 1] == "/etc/bot4/bot4.toml"


def test_systemd_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: install Debian's systemd package"
    # The unit as installed, with this checkout's bot4 where the install puts the script.
    with open(SHIPPED) as fh:
        text = fh.read().replace("/usr/local/bin/bot4", f"{sys.executable} -m tools.cli")
    (tmp_path / "bot4.service").write_text(text)
    checked = subprocess.run([analyze, "verify", str(tmp_path / "bot4.service")], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stdout + checked.stderr
