"""Operator tools without a run, the switch's last-frame time, kill texts that fit their field."""
import re
import subprocess
import sys
import time
import uuid

import pytest

from shm import control as cb
from tests.conftest import ROOT
from tools import killswitch


@pytest.mark.parametrize("command", [["status"], ["killswitch", "status"], ["top"]])
def test_a_tool_with_nothing_running_says_so_on_stderr_and_exits_1(command):
    out = subprocess.run([sys.executable, "-m", "tools.cli", *command, "--name", f"t{uuid.uuid4().hex[:8]}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stdout == "" and "does not exist" in out.stderr


def test_killswitch_status_shows_the_last_frame_as_an_age_not_a_1970_date():
    block = cb.ControlBlock.local()
    g = block.globals
    g[cb.G_SWITCH_STATE] = 2  # armed (SwitchState.ARMED + 1)
    g[cb.G_SWITCH_LAST_FRAME_NS] = time.monotonic_ns() - 3_000_000_000  # the watchdog stamps monotonic time
    line = next(x for x in killswitch.describe(block) if x.startswith("switch:"))
    assert "1970" not in line
    age = float(re.search(r"last frame ([0-9.]+) s ago", line).group(1))
    assert 3.0 <= age < 60, line


def test_a_long_kill_text_is_cut_at_a_word_with_an_ellipsis():
    g = cb.ControlBlock.local().globals
    text = " ".join(f"word{i:03d}" for i in range(60))  # 479 bytes: more than the 256-byte field
    cb.set_kill_text(g, text)
    kept = cb.kill_text(g)
    assert kept.endswith("…") and len(kept.encode()) <= cb.KILL_TEXT_WORDS * 8
    assert text.startswith(kept[:-1].rstrip()) and text[len(kept[:-1].rstrip())] == " "  # whole words only
    cb.set_kill_text(g, "short text")
    assert cb.kill_text(g) == "short text"
    cb.set_kill_text(g, "é" * 200)  # one long "word" of multi-byte characters: cut at a character
    kept = cb.kill_text(g)
    assert kept.endswith("…") and len(kept.encode()) <= cb.KILL_TEXT_WORDS * 8 and set(kept[:-1]) == {"é"}
