"""``bot4 top`` in a real terminal (tmux, its own server): it shows the stages, their rates and the trading state,
quits on q, and ends by itself when the run stops, saying so. And ``bot4 run``'s one line per status interval."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

from pipeline import registry
from tests.conftest import ROOT, SIGNAL_ARGS

TMUX = shutil.which("tmux") or "/usr/bin/tmux"  # .ci/run installs it


class Tmux:
    """A tmux server of this test's own (-L): sessions of a fixed size, their screens, their keys."""

    def __init__(self, conf_dir):
        conf = conf_dir / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\n")  # a program that exits leaves its last screen to read
        self.base = [TMUX, "-L", f"metrics-{uuid.uuid4().hex[:8]}", "-f", str(conf)]
        # The terminal's size is tmux's: nothing inherited may tell rich otherwise.
        self.env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}

    def __call__(self, *args) -> str:
        out = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=30, env=self.env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def start(self, session: str, command: str) -> None:
        self("new-session", "-d", "-s", session, "-x", "160", "-y", "50", "-c", ROOT, command)

    def screen(self, session: str) -> str:
        return self("capture-pane", "-p", "-t", session)

    def exit_status(self, session: str):
        """The program's exit status once it has exited, else None."""
        dead, status = self("display-message", "-p", "-t", session, "#{pane_dead} #{pane_dead_status}").split()
        return int(status) if dead == "1" else None

    def kill_server(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=30, env=self.env)


def wait(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got is not None and got is not False:
            return got
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def stage_cells(screen: str, stage: str) -> list[str]:
    line = next((line for line in screen.splitlines() if re.match(rf"\s*│\s*{stage}\s*│", line)), None)
    return [cell.strip() for cell in line.split("│")[1:-1]] if line else []


def test_bot4_top_shows_the_run_quits_on_q_and_ends_with_the_run(live, tmp_path):
    run = live(*SIGNAL_ARGS, name=f"metrics-{uuid.uuid4().hex[:8]}")
    run.wait_for(r"bot4: running", timeout=280)  # (the first run after an edit compiles the kernels)
    # One line per status interval, not the table.
    line = run.wait_for(r"^bot4: trading ENABLED \| feed out [\d,]+/s, execute in [\d,]+/s \| tick p50 ")
    assert "orders" in line and "PnL $" in line, line
    assert not any(re.match(r"stage\s+state\s+core", seen) for seen in run.output)
    tmux = Tmux(tmp_path)
    try:
        command = f"{sys.executable} -m tools.cli top --name {run.name}"
        tmux.start("quits", command)
        tmux.start("stays", command)

        def shown():
            screen = tmux.screen("quits")
            cells = {stage: stage_cells(screen, stage) for stage in registry.STAGE_NAMES}
            if all(cells.values()) and "trading ENABLED" in screen and int(cells["feed"][5].replace(",", "")) > 0:
                return screen, cells
            return None

        screen, cells = wait(shown, 60, "the stages, a feed rate and the trading state on the screen")
        header = [cell.strip() for cell in next(l for l in screen.splitlines() if "┃ stage" in l).split("┃")[1:-1]]
        assert header[:6] == ["stage", "state", "core", "idle", "in/s", "out/s"], header
        assert all(cells[stage][1] == "running" for stage in registry.STAGE_NAMES), cells
        assert int(cells["execute"][4].replace(",", "")) > 0  # execute takes market events and intents
        assert f"bot4 top: run {run.name}" in screen and "q or Ctrl-C: quit" in screen
        assert tmux.exit_status("quits") is None
        tmux("send-keys", "-t", "quits", "q")
        assert wait(lambda: tmux.exit_status("quits") is not None, 10, "top to quit on q") is True
        assert tmux.exit_status("quits") == 0
        assert "stopped" not in tmux.screen("quits")

        assert tmux.exit_status("stays") is None
        run.proc.send_signal(signal.SIGTERM)
        code, output = run.finish()
        assert code == 0, output
        wait(lambda: tmux.exit_status("stays") is not None, 15, "top to end with the run")
        assert tmux.exit_status("stays") == 0
        assert f"bot4 top: the run '{run.name}' stopped" in tmux.screen("stays")
    finally:
        tmux.kill_server()
