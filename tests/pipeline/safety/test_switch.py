"""The kill switch reader against real pseudo-terminals (heartbeat mode) and pyserial's loop:// (line mode).

A pty is the rack's serial device: the reader opens the slave by path (a symlink, so the "device" can
vanish and come back as a new pty), the test plays the rack controller on the master. A pty has no
modem status lines, so line mode is tested against pyserial's loop://, which wires RTS to CTS and DTR
to DSR in software; no real serial device with a toggleable line is available here.
"""
from __future__ import annotations

import errno
import os
import random
import time
import tty

import pytest

from pipeline.config import KillSwitchConfig
from pipeline.safety.switch import (ARM_FRAMES, FRAME_ARMED, FRAME_KILL, FRAME_STATUS, LINE_ARM_DEBOUNCE_NS,
                                    STATUS_SWITCH_ARMED, STATUS_TRIPPED, FrameParser, SwitchReader, SwitchState, crc8,
                                    encode_frame)

MS = 1_000_000


def open_fds() -> set:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_fd_left():
    """Autouse, so it is set up first and checked last, after the pty and reader fixtures closed theirs."""
    before = open_fds()
    yield
    assert open_fds() - before == set(), "the test left file descriptors open"


class Rack:
    """The rack controller's end: a pty master, with the slave reachable through a stable symlink."""

    def __init__(self, link):
        self.link = link
        self.master = self.slave = None
        self.seq = 0
        self.plug_in()

    def plug_in(self):
        self.master, self.slave = os.openpty()
        # Raw on both ends so frame bytes (0x0D, 0x11, 0x13...) pass unchanged even before pyserial opens
        # the slave; the master is non-blocking so reading what the watchdog wrote never hangs the test.
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        tmp = self.link.with_name(self.link.name + ".new")
        os.symlink(os.ttyname(self.slave), tmp)
        os.replace(tmp, self.link)

    def unplug(self):
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = None

    def send(self, data: bytes):
        os.write(self.master, data)

    def frame(self, ftype) -> bytes:
        data = encode_frame(ftype, self.seq)
        self.seq = (self.seq + 1) & 0xFF
        return data

    def armed(self, count=1):
        self.send(b"".join(self.frame("A") for _ in range(count)))

    def received(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""

    def close(self):
        if self.master is not None:
            self.unplug()


@pytest.fixture
def rack(tmp_path):
    r = Rack(tmp_path / "ttyRACK")
    yield r
    r.close()


@pytest.fixture
def make_reader():
    readers = []

    def make(**fields):
        reader = SwitchReader(KillSwitchConfig(**fields))
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()


def heartbeat_reader(make_reader, rack, **fields):
    fields = {"mode": "heartbeat", "port": str(rack.link), "heartbeat_timeout_ms": 100.0,
              "reconnect_min_ms": 10.0, "reconnect_max_ms": 80.0} | fields
    reader = make_reader(**fields)
    assert reader.poll(time.monotonic_ns()).state == SwitchState.NOT_ARMED  # opens the port
    return reader


def settle(reader, ms=3):
    """Poll for a few ms of real time (the pty hands bytes over asynchronously); ~1 ms apart to spare CPU."""
    end = time.monotonic_ns() + ms * MS
    while True:
        reading = reader.poll(time.monotonic_ns())
        if time.monotonic_ns() >= end:
            return reading
        time.sleep(0.001)


def poll_until(reader, predicate, limit_ms=1000):
    end = time.monotonic_ns() + limit_ms * MS
    while time.monotonic_ns() < end:
        now = time.monotonic_ns()
        reading = reader.poll(now)
        if predicate(reading):
            return reading, now
        time.sleep(0.001)
    raise AssertionError(f"condition not met in {limit_ms} ms; last reading: {reading}")


def test_crc8_should_match_the_smbus_check_value():
    assert crc8(b"123456789") == 0xF4
    frame = encode_frame("A", 7)
    assert frame[:2] == b"\xb4\x7e" and frame[2:5] == b"A\x07\x00" and frame[5] == crc8(b"A\x07\x00")
    assert encode_frame(b"K", 300) == encode_frame(FRAME_KILL, 44)


def test_parser_should_resynchronise_after_garbage_split_frames_and_a_false_preamble():
    parser, out = FrameParser(), []
    a1, a2, k3 = encode_frame("A", 1), encode_frame("A", 2), encode_frame("K", 3)
    stream = b"noise\xb4" + a1 + b"\xb4\x7e" + a2[:3]
    parser.feed(stream, out)
    parser.feed(a2[3:] + k3[:1], out)
    parser.feed(k3[1:], out)
    assert out == [(FRAME_ARMED, 1, 0), (FRAME_ARMED, 2, 0), (FRAME_KILL, 3, 0)]
    # "noise" and the lone 0xB4 are garbage; the false preamble swallowed a2 as a bad candidate, which
    # is counted, and the search resumed inside it to find a2 itself.
    assert parser.garbage_bytes == 6
    assert parser.frames_bad == 1
    assert parser.frames_ok == 3


def test_parser_should_count_unknown_types_and_reserved_arg_bits_as_bad():
    parser, out = FrameParser(), []
    parser.feed(encode_frame("Z", 1) + encode_frame("A", 2, arg=1) + encode_frame("S", 3, arg=0x80), out)
    assert out == [] and parser.frames_bad == 3


def test_should_arm_only_after_two_consecutive_armed_frames(make_reader, rack):
    reader = heartbeat_reader(make_reader, rack)
    rack.armed(1)
    assert settle(reader).state == SwitchState.NOT_ARMED
    rack.armed(1)
    reading = settle(reader)
    assert reading.state == SwitchState.ARMED and reading.armed and ARM_FRAMES == 2
    assert [f[1:] for f in reading.last_frames] == [("A", 0), ("A", 1)]


def test_should_stay_armed_when_one_frame_is_lost(make_reader, rack):
    reader = heartbeat_reader(make_reader, rack)
    rack.armed(2)
    assert settle(reader).armed
    rack.seq += 1  # the rack's next frame was corrupted on the wire
    rack.send(b"\x00\xff")
    rack.armed(1)
    assert settle(reader).armed


def test_should_read_silent_within_the_timeout_when_frames_stop(make_reader, rack):
    reader = heartbeat_reader(make_reader, rack, heartbeat_timeout_ms=100.0)
    end = time.monotonic_ns() + 200 * MS
    next_frame = 0
    while time.monotonic_ns() < end:  # a 20 Hz rack for 200 ms
        if time.monotonic_ns() >= next_frame:
            rack.armed(1)
            next_frame = time.monotonic_ns() + 50 * MS
        reader.poll(time.monotonic_ns())
        time.sleep(0.001)
    last_armed = poll_until(reader, lambda r: r.armed, 100)[0]
    assert last_armed.frames_ok >= 4
    reading, tripped_ns = poll_until(reader, lambda r: r.state != SwitchState.ARMED, 500)
    assert reading.state == SwitchState.SILENT
    silent_ms = (tripped_ns - reading.last_frame_ns) / MS
    assert 100 < silent_ms < 150, silent_ms
    assert "no frame for" in reading.detail and "timeout 100 ms" in reading.detail
    # Frames resuming do not arm on the first one after a silence.
    rack.armed(1)
    assert settle(reader).state == SwitchState.NOT_ARMED
    rack.armed(1)
    assert settle(reader).armed


def test_kill_frame_should_read_kill_pressed_until_two_fresh_armed_frames(make_reader, rack):
    reader = heartbeat_reader(make_reader, rack)
    rack.armed(2)
    assert settle(reader).armed
    rack.send(rack.frame("K"))
    reading, _ = poll_until(reader, lambda r: not r.armed, 50)
    assert reading.state == SwitchState.KILL_PRESSED and reading.kill_frames == 1
    assert reading.last_frames[-1][1:] == ("K", 2)
    rack.armed(1)
    assert settle(reader).state == SwitchState.NOT_ARMED
    rack.armed(1)
    assert settle(reader).armed


def test_kill_should_win_over_armed_frames_behind_it_in_the_same_read(make_reader, rack):
    reader = heartbeat_reader(make_reader, rack)
    rack.armed(2)
    assert settle(reader).armed
    # A watchdog that fell behind finds A, K, A, A in one read: the kill must not be lost.
    rack.send(rack.frame("A") + rack.frame("K") + rack.frame("A") + rack.frame("A"))
    reading, _ = poll_until(reader, lambda r: r.kill_frames == 1, 50)
    assert reading.state == SwitchState.KILL_PRESSED


def test_garbage_and_bad_checksums_should_never_arm_and_be_counted(make_reader, rack):
    reader = heartbeat_reader(make_reader, rack)
    rng = random.Random(20240603)
    bad_frames = 0
    for _ in range(40):
        chunk = bytearray(rng.randbytes(200))
        for _ in range(2):  # armed frames with consecutive SEQ but a corrupted CRC
            frame = bytearray(rack.frame("A"))
            frame[5] ^= 1 << rng.randrange(8)
            chunk += frame
            bad_frames += 1
        rack.send(bytes(chunk))
        reading = reader.poll(time.monotonic_ns())
        assert not reading.armed
        time.sleep(0.0005)
    reading = settle(reader, 5)
    assert reading.state == SwitchState.NOT_ARMED
    assert reading.frames_ok == 0
    assert reading.frames_bad >= bad_frames
    assert reading.garbage_bytes >= 40 * 200 - 6 * 40
    assert "frames_bad=" in reading.detail
    # The line recovers: genuine frames arm after all that noise.
    rack.armed(2)
    assert settle(reader).armed


def test_device_vanishing_should_disconnect_reconnect_with_backoff_and_stay_disarmed(make_reader, rack):
    reader = heartbeat_reader(make_reader, rack, reconnect_min_ms=10.0, reconnect_max_ms=80.0)
    rack.armed(2)
    assert settle(reader).armed
    rack.unplug()
    reading, _ = poll_until(reader, lambda r: r.state == SwitchState.DISCONNECTED, 50)
    assert reading.disconnects == 1 and not reading.armed
    assert reading.detail.startswith("device lost:")
    # Unplugged for 150 ms: the reopen attempts fail and are counted, spaced 10, 20, 40, 80 ms.
    reading = settle(reader, 150)
    assert reading.state == SwitchState.DISCONNECTED
    assert 2 <= reading.open_failures <= 4, reading.open_failures
    assert "open failed" in reading.detail
    rack.plug_in()
    reading, _ = poll_until(reader, lambda r: r.reconnects == 1, 300)
    assert reading.state == SwitchState.NOT_ARMED
    # Back, with no frames: it never arms on its own.
    reading = settle(reader, 150)
    assert reading.state == SwitchState.NOT_ARMED and reading.disconnects == 1 and reading.reconnects == 1
    rack.armed(2)
    assert settle(reader).armed


def test_an_eio_from_the_port_should_count_as_the_device_vanishing(make_reader, rack, monkeypatch):
    # Closing a pty master shows on the slave as end-of-file, which pyserial raises as SerialException;
    # an unplugged USB adapter fails with EIO instead, which this stands in for.
    reader = heartbeat_reader(make_reader, rack)
    rack.armed(2)
    assert settle(reader).armed

    def read(_size):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(reader.port, "read", read)
    reading = reader.poll(time.monotonic_ns())
    assert reading.state == SwitchState.DISCONNECTED and reading.disconnects == 1
    assert "Errno 5" in reading.detail and reader.port is None


def test_port_that_cannot_be_opened_should_read_disconnected_and_retry_with_growing_spacing(make_reader, tmp_path):
    missing = tmp_path / "ttyUSB9"
    reader = make_reader(mode="heartbeat", port=str(missing), reconnect_min_ms=20.0, reconnect_max_ms=200.0)
    t0 = 5_000 * MS
    attempts_ms = []
    for ms in range(1000):  # simulated time: 1 ms polls, no sleeping
        before = reader.reading.open_failures
        reading = reader.poll(t0 + ms * MS)
        if reading.open_failures != before:
            attempts_ms.append(ms)
        assert reading.state == SwitchState.DISCONNECTED and not reading.armed
    assert attempts_ms[:7] == [0, 20, 60, 140, 300, 500, 700]
    assert str(missing) in reading.detail and "No such file" in reading.detail
    assert reading.detail.startswith("open failed:") and reading.detail.endswith("retry in 200 ms")


def test_report_should_write_status_frames_the_rack_can_decode(make_reader, rack):
    reader = heartbeat_reader(make_reader, rack)
    rack.armed(2)
    assert settle(reader).armed
    parser, out = FrameParser(), []
    t0 = time.monotonic_ns()
    reader.report(False, t0)
    reader.report(False, t0 + 50 * MS)       # too soon for a refresh
    reader.report(True, t0 + 60 * MS)        # a change goes out at once
    reader.report(True, t0 + 65 * MS)
    reader.report(True, t0 + 160 * MS)       # the 100 ms refresh
    time.sleep(0.005)
    parser.feed(rack.received(), out)
    assert [(ftype, arg) for ftype, _seq, arg in out] == [
        (FRAME_STATUS, STATUS_SWITCH_ARMED),
        (FRAME_STATUS, STATUS_SWITCH_ARMED | STATUS_TRIPPED),
        (FRAME_STATUS, STATUS_SWITCH_ARMED | STATUS_TRIPPED)]
    assert [seq for _t, seq, _a in out] == [0, 1, 2] and parser.frames_bad == 0


def test_report_should_never_raise_when_the_device_is_gone(make_reader, rack):
    reader = heartbeat_reader(make_reader, rack)
    rack.unplug()
    reader.report(True, time.monotonic_ns())   # port still open on our side, device gone
    poll_until(reader, lambda r: r.state == SwitchState.DISCONNECTED, 50)
    reader.report(True, time.monotonic_ns() + 200 * MS)  # port closed
    reader.close()
    reader.report(False, time.monotonic_ns() + 400 * MS)


def test_poll_should_cost_well_under_a_millisecond(make_reader, rack):
    reader = heartbeat_reader(make_reader, rack)
    rack.armed(2)
    settle(reader)
    costs = []
    for _ in range(500):
        t = time.perf_counter_ns()
        reader.poll(time.monotonic_ns())
        costs.append(time.perf_counter_ns() - t)
    costs.sort()
    assert costs[len(costs) // 2] < 100_000, costs[len(costs) // 2]


@pytest.mark.parametrize("line, drive", [("cts", "rts"), ("dsr", "dtr")])
@pytest.mark.parametrize("active_low", [False, True])
def test_line_mode_should_follow_the_line_on_loop_url(make_reader, line, drive, active_low):
    reader = make_reader(mode="line", port="loop://", line=line, active_low=active_low)
    t = 1_000 * MS
    reader.poll(t)
    port = reader.port

    def set_line(high):
        setattr(port, drive, high)  # loop:// reflects RTS on CTS and DTR on DSR

    set_line(not active_low)  # the armed level
    assert reader.poll(t).state == SwitchState.NOT_ARMED  # debounce has not elapsed
    assert reader.poll(t + LINE_ARM_DEBOUNCE_NS - 1).state == SwitchState.NOT_ARMED
    reading = reader.poll(t + LINE_ARM_DEBOUNCE_NS)
    assert reading.armed and line.upper() in reading.detail
    set_line(active_low)  # drops at once
    reading = reader.poll(t + LINE_ARM_DEBOUNCE_NS + 1)
    assert reading.state == SwitchState.NOT_ARMED and "not armed" in reading.detail
    # A glitch shorter than the debounce never arms.
    set_line(not active_low)
    assert not reader.poll(t + 30 * MS).armed
    set_line(active_low)
    assert not reader.poll(t + 60 * MS).armed
    set_line(not active_low)
    assert not reader.poll(t + 61 * MS).armed
    assert reader.poll(t + 61 * MS + LINE_ARM_DEBOUNCE_NS).armed


@pytest.mark.parametrize("line, active_low, armed", [("cd", False, True), ("cd", True, False),
                                                     ("ri", False, False), ("ri", True, True)])
def test_line_mode_should_read_cd_and_ri(make_reader, line, active_low, armed):
    # loop:// has fixed CD (True) and RI (False); this checks those lines are read and inverted.
    reader = make_reader(mode="line", port="loop://", line=line, active_low=active_low)
    reader.poll(1_000 * MS)
    assert reader.poll(1_000 * MS + LINE_ARM_DEBOUNCE_NS).armed is armed


def test_line_mode_port_that_cannot_be_opened_should_read_disconnected(make_reader, tmp_path):
    reader = make_reader(mode="line", port=str(tmp_path / "nope"), reconnect_min_ms=10.0)
    reading = reader.poll(1_000 * MS)
    assert reading.state == SwitchState.DISCONNECTED and reading.open_failures == 1
    reader.report(True, 1_000 * MS)  # a no-op in line mode


def test_mode_none_should_be_refused():
    with pytest.raises(ValueError, match="no switch"):
        SwitchReader(KillSwitchConfig())
