"""``bot4 top`` in a real terminal (tmux, a server of its own): it shows the stages, their rates and the trading state,
quits on q and on Ctrl-C, and ends by itself when the run stops, saying so. And ``bot4 run``'s one line per status
interval."""
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
    """A tmux server of this test's own (-S): sessions of a fixed size, their screens, their keys."""

    def __init__(self, conf_dir):
        conf = conf_dir / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\n")  # a program that exits leaves its last words to read
        # A socket of its own in the test's directory: tmux leaves its socket file behind after kill-server.
        self.base = [TMUX, "-S", str(conf_dir / "tmux.sock"), "-f", str(conf)]
        # The terminal's size is tmux's: nothing inherited may tell rich otherwise.
        self.env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}

    def __call__(self, *args) -> str:
        out = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=30, env=self.env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def start(self, session: str, command: str) -> None:
        self("new-session", "-d", "-s", session, "-x", "160", "-y", "50", "-c", ROOT,
             f"{command}; echo bot4-top-exit=$?; sleep 2")  # (output just before a pane dies can be lost)

    def screen(self, session: str) -> str:
        return self("capture-pane", "-p", "-t", session)

    def exit_status(self, session: str):
        """The exit status ``start`` echoed once the program exited, else None. (tmux 3.3's own #{pane_dead_status}
        is empty when the terminal closes before the process is reaped.)"""
        found = re.search(r"^bot4-top-exit=(\d+)$", self.screen(session), re.M)
        return int(found.group(1)) if found else None

    def kill_server(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=30, env=self.env)


def wait(check, timeout_s: float, what: str, screen=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got is not None and got is not False:
            return got
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout_s} s: {what}; the screen:\n{screen()}")


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
        for session in ("quits", "interrupted", "stays"):
            tmux.start(session, command)

        def shown():
            screen = tmux.screen("quits")
            cells = {stage: stage_cells(screen, stage) for stage in registry.STAGE_NAMES}
            if not all(cells.values()) or "trading ENABLED" not in screen:
                return None
            # feed's out/s and execute's in/s (market events and intents): the pipeline flows
            rates = int(cells["feed"][5].replace(",", "")), int(cells["execute"][4].replace(",", ""))
            return (screen, cells) if min(rates) > 0 else None

        screen, cells = wait(shown, 60, "the stages, nonzero rates and the trading state on the screen",
                             lambda: tmux.screen("quits"))
        header = [cell.strip() for cell in next(l for l in screen.splitlines() if "┃ stage" in l).split("┃")[1:-1]]
        assert header[:6] == ["stage", "state", "core", "idle", "in/s", "out/s"], header
        assert all(cells[stage][1] == "running" for stage in registry.STAGE_NAMES), cells
        assert f"bot4 top: run {run.name}" in screen and "q or Ctrl-C: quit" in screen
        assert tmux.exit_status("quits") is None
        tmux("send-keys", "-t", "quits", "q")
        assert wait(lambda: tmux.exit_status("quits") is not None, 10, "top to quit on q",
                    lambda: tmux.screen("quits")) is True
        assert tmux.exit_status("quits") == 0
        assert "stopped" not in tmux.screen("quits")
        wait(lambda: "trading ENABLED" in tmux.screen("interrupted"), 30, "the second view",
             lambda: tmux.screen("interrupted"))
        tmux("send-keys", "-t", "interrupted", "C-c")
        wait(lambda: tmux.exit_status("interrupted") is not None, 10, "top to quit on Ctrl-C",
             lambda: tmux.screen("interrupted"))
        assert tmux.exit_status("interrupted") == 0 and "Traceback" not in tmux.screen("interrupted")

        assert tmux.exit_status("stays") is None
        run.proc.send_signal(signal.SIGTERM)
        code, output = run.finish()
        assert code == 0, output
        wait(lambda: tmux.exit_status("stays") is not None, 15, "top to end with the run", lambda: tmux.screen("stays"))
        assert tmux.exit_status("stays") == 0
        assert f"bot4 top: the run '{run.name}' stopped" in tmux.screen("stays")
    finally:
        tmux.kill_server()
