"""The hardware kill switch on the rack, read over pyserial: line mode or heartbeat mode.

``SwitchReader.poll(now_ns)`` is called by the watchdog once per duty cycle (1 ms). It never blocks,
sleeps or raises: it reads what the port holds, decodes frames (heartbeat mode) or samples one modem
status line (line mode), and returns a ``SwitchReading``. Only ``ARMED`` lets trading run; every other
state is a reason to trip. The reader reports the hardware as it is *now*; it does not latch. Latching
trips and re-arming (``bot4 killswitch arm``) belong to the watchdog, so a switch that reads ``ARMED``
again after a kill, a silence or a reconnect never re-enables trading by itself.

Line mode
---------
The switch closes a modem status line: ``cts``, ``dsr``, ``cd`` or ``ri`` (``killswitch.line``). The
port is opened with DTR and RTS asserted (pyserial's default), so a plain switch can loop DTR back to
DSR/CD or RTS to CTS. ARMED while the line reads active (high; low with ``active_low``) and has stayed
active for ``LINE_ARM_DEBOUNCE_NS``, so a contact bounce or a glitch cannot arm; an inactive sample
drops ARMED at once. A pseudo-terminal has no modem lines, so line mode is tested against pyserial's
``loop://`` port, which wires RTS to CTS and DTR to DSR in software (CD reads True, RI False).

Heartbeat mode: the frame (the spec for the rack controller)
-------------------------------------------------------------
Every frame is 6 bytes, both directions::

     0      1      2      3      4      5
    +------+------+------+------+------+------+
    | 0xB4 | 0x7E | TYPE | SEQ  | ARG  | CRC  |
    +------+------+------+------+------+------+
      preamble

    TYPE  b"A" (0x41) armed   rack -> watchdog, at >= 10 Hz (20 Hz advised) while the switch is armed
          b"K" (0x4B) kill    rack -> watchdog, at the same rate instead of "A" while pressed
          b"S" (0x53) status  watchdog -> rack, see ``report``
    SEQ   wrapping counter 0..255, +1 per frame sent by that side (of any type)
    ARG   A and K: 0. S: bit 0 = trading tripped, bit 1 = the watchdog reads the switch as armed;
          other bits 0
    CRC   CRC-8, polynomial 0x07, init 0x00, no reflection, no final xor (CRC-8/SMBUS) over TYPE, SEQ,
          ARG (bytes 2..4). Check value: crc8(b"123456789") == 0xF4.

Decoding rules (``FrameParser``):

- Bytes are searched for the preamble ``B4 7E``; bytes skipped while searching count as
  ``garbage_bytes``. A frame may arrive split over several reads.
- A candidate whose CRC fails, whose TYPE is unknown, or whose ARG has a bit not defined for its TYPE
  counts in ``frames_bad`` and is ignored; the search resumes just after its preamble (not after the
  six bytes), so a real frame hidden inside a corrupt candidate is still found.

Reading rules (``SwitchReader``, heartbeat mode), one port connection at a time:

- ARMED needs two valid A frames with consecutive SEQ, the second no later than the timeout after the
  first; once ARMED, any valid A frame keeps it (a lost or corrupt frame is tolerated, silence is not).
  Random noise forms one valid A frame with probability about 2**-40 per byte offset; needing two in
  sequence makes an arm from noise practically impossible.
- A K frame reads KILL_PRESSED and resets the arm count; an A frame decoded in the same read as a K
  does not clear it, so a watchdog polling slower than the frames still sees every kill
  (``kill_frames`` also counts them). After a kill, two fresh consecutive A frames are needed again.
- No valid A or K frame for longer than ``heartbeat_timeout_ms`` reads SILENT (ahead of KILL_PRESSED);
  the next A frame after a silence starts the arm count afresh.
- After (re)opening the port the reading is NOT_ARMED until the arm rule is met again; S frames that
  arrive (a looped-back line) count as valid but change nothing.

The device
----------
A port that cannot be opened, or that fails while open (unplugged USB serial: SerialException / EIO),
reads DISCONNECTED, is closed, counted (``open_failures``, ``disconnects``) and retried when
``now_ns`` passes the retry time: the first retry after ``reconnect_min_ms``, doubling up to
``reconnect_max_ms``, back to the minimum once a connection proves healthy (a valid frame; in line mode
a successful line read). A retry is one ``open()`` call inside ``poll``: well under 1 ms for a pty,
possibly a few ms for a USB adapter, and only while the switch already reads DISCONNECTED. Device
paths are opened with an exclusive lock, so a second reader on the same port fails to open instead of
stealing half the frames.

Run ``python -m pipeline.safety.switch --simulate PORT`` (PORT may be ``pty``) for a rack controller
simulator.
"""
from __future__ import annotations

import enum
import os
import select
import sys
import time
from collections import deque
from dataclasses import dataclass

import serial

from pipeline.config import KillSwitchConfig

PREAMBLE = b"\xb4\x7e"
FRAME_LEN = 6
FRAME_ARMED = ord("A")
FRAME_KILL = ord("K")
FRAME_STATUS = ord("S")
STATUS_TRIPPED = 0x01          # S frame ARG bit: trading is tripped
STATUS_SWITCH_ARMED = 0x02     # S frame ARG bit: the watchdog reads the switch as armed
_ARG_MASK = {FRAME_ARMED: 0x00, FRAME_KILL: 0x00, FRAME_STATUS: STATUS_TRIPPED | STATUS_SWITCH_ARMED}

ARM_FRAMES = 2                         # consecutive A frames needed to read ARMED
LINE_ARM_DEBOUNCE_NS = 20_000_000      # line mode: active this long before ARMED
READ_LIMIT = 1024                      # bytes taken per poll; 115200 baud delivers ~12 bytes/ms
REPORT_PERIOD_NS = 100_000_000         # status frame refresh
REPORT_MIN_GAP_NS = 10_000_000         # no two status frames closer than this, even on a change
LAST_FRAMES = 8


def _crc8_table() -> bytes:
    table = bytearray(256)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table[byte] = crc
    return bytes(table)


_CRC8 = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8/SMBUS (polynomial 0x07, init 0, no reflection, no final xor)."""
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def encode_frame(frame_type: int | str | bytes, seq: int, arg: int = 0) -> bytes:
    """The 6-byte frame for ``frame_type`` (b"A", "K", ord("S")...), ``seq`` wrapped to 0..255."""
    if not isinstance(frame_type, int):
        frame_type = ord(frame_type)
    body = bytes((frame_type, seq & 0xFF, arg & 0xFF))
    return PREAMBLE + body + bytes((crc8(body),))


class FrameParser:
    """Splits a byte stream into valid frames, counting garbage and bad frames. Single owner.

    ``feed(data, out)`` appends ``(type, seq, arg)`` for each valid frame to ``out`` and returns how many;
    at most ``FRAME_LEN - 1`` bytes are held between calls.
    """

    __slots__ = ("_buf", "frames_ok", "frames_bad", "garbage_bytes")

    def __init__(self):
        self._buf = bytearray()
        self.frames_ok = 0
        self.frames_bad = 0
        self.garbage_bytes = 0

    def reset(self) -> None:
        """Drop a partial frame (the port was reopened); counters are kept."""
        self._buf.clear()

    def feed(self, data: bytes, out: list) -> int:
        buf = self._buf
        buf += data
        n = len(buf)
        i = 0
        found = 0
        while True:
            j = buf.find(PREAMBLE, i)
            if j < 0:
                # A trailing 0xB4 may be the first half of a preamble split across reads.
                keep = n - 1 if n > i and buf[n - 1] == 0xB4 else n
                self.garbage_bytes += keep - i
                i = keep
                break
            self.garbage_bytes += j - i
            if n - j < FRAME_LEN:
                i = j
                break
            ftype, seq, arg, crc = buf[j + 2], buf[j + 3], buf[j + 4], buf[j + 5]
            mask = _ARG_MASK.get(ftype)
            if mask is not None and not arg & ~mask and _CRC8[_CRC8[_CRC8[ftype] ^ seq] ^ arg] == crc:
                out.append((ftype, seq, arg))
                self.frames_ok += 1
                found += 1
                i = j + FRAME_LEN
            else:
                self.frames_bad += 1
                i = j + 2
        del buf[:i]
        return found


class SwitchState(enum.IntEnum):
    """What the switch says now; stable ids for shared memory (0, the zeroed value, is not armed)."""
    NOT_ARMED = 0      # line inactive; heartbeat mode: no valid arm sequence since the port opened
    ARMED = 1          # the only state in which trading may run
    KILL_PRESSED = 2   # heartbeat mode: the latest frame was a kill
    SILENT = 3         # heartbeat mode: no frame for longer than the timeout
    DISCONNECTED = 4   # the port cannot be opened or failed while open


@dataclass(frozen=True, slots=True)
class SwitchReading:
    """One immutable snapshot; the reader rebuilds it only when something changed."""
    state: SwitchState
    armed: bool
    since_ns: int          # when the reader entered ``state``
    frames_ok: int
    frames_bad: int        # bad CRC, unknown type or undefined ARG bits
    garbage_bytes: int     # bytes skipped while looking for a preamble
    disconnects: int       # open connections lost
    open_failures: int     # failed open attempts (at start or on reconnect)
    reconnects: int        # successful opens after a failure or a loss
    kill_frames: int
    last_frame_ns: int     # poll time of the latest valid A or K frame; 0 = none
    detail: str            # for operators, fixed when the reading was built
    last_frames: tuple = ()  # up to LAST_FRAMES of (poll ns, "A"/"K"/"S", seq), oldest first


class SwitchReader:
    """Reads the configured switch; ``poll`` once per watchdog cycle. Not safe for use from multiple threads.

    All times come from the caller's ``now_ns`` (one clock, monotonic preferred); nothing here reads a
    clock, sleeps or starts a thread.
    """

    def __init__(self, config: KillSwitchConfig):
        if config.mode not in ("line", "heartbeat"):
            raise ValueError(f"killswitch.mode={config.mode!r}: there is no switch to read; "
                             "use 'line' or 'heartbeat' to read one")
        self.config = config
        self._heartbeat = config.mode == "heartbeat"
        self._line_name = config.line
        self._line_label = config.line.upper()
        self._active_low = config.active_low
        self._timeout_ns = int(config.heartbeat_timeout_ms * 1e6)
        self._backoff_min_ns = int(config.reconnect_min_ms * 1e6)
        self._backoff_max_ns = int(config.reconnect_max_ms * 1e6)
        self._backoff_ns = self._backoff_min_ns
        self._retry_at_ns = None           # None: open at the first poll
        self._port = None
        self._fd = None                    # the POSIX fd for non-blocking status writes, when there is one
        self._had_failure = False
        self._parser = FrameParser()
        self._decoded: list = []
        self._last_frames: deque = deque(maxlen=LAST_FRAMES)
        self.disconnects = 0
        self.open_failures = 0
        self.reconnects = 0
        self.kill_frames = 0
        self.reports_sent = 0
        self.reports_failed = 0
        self._reset_link_state()
        self._state = SwitchState.DISCONNECTED
        self._since_ns = 0
        self._detail = "port not opened yet"
        self._polls = 0
        self._reading = self._build()

    @property
    def port(self):
        """The open pyserial port or None (tests toggle loop:// lines through it)."""
        return self._port

    @property
    def reading(self) -> SwitchReading:
        return self._reading

    def poll(self, now_ns: int) -> SwitchReading:
        """Non-blocking; never raises. Single caller (the watchdog duty cycle)."""
        self._polls += 1
        port = self._port
        if port is None:
            if self._retry_at_ns is None or now_ns >= self._retry_at_ns:
                self._open(now_ns)
            port = self._port
            if port is None:
                return self._reading
        try:
            if self._heartbeat:
                self._poll_frames(port, now_ns)
            else:
                self._poll_line(port, now_ns)
        except Exception as exc:  # SerialException, OSError (EIO) or anything a vanished device causes
            self._lose(f"device lost: {exc}", now_ns)
        return self._reading

    def report(self, tripped: bool, now_ns: int) -> None:
        """Heartbeat mode: send an S frame for a lamp or relay on the rack. Never raises.

        Sent when ``tripped`` changes (no two frames within 10 ms) and otherwise every 100 ms; a no-op in
        line mode (the modem outputs may power the switch) and while disconnected. The write is
        non-blocking: if the device does not drain its input the frame is dropped (``reports_failed``);
        a partial frame is harmless because the rack resynchronises on the preamble.
        """
        if not self._heartbeat or self._port is None:
            return
        since = now_ns - self._last_report_ns
        if since < REPORT_MIN_GAP_NS or (tripped == self._last_reported and since < REPORT_PERIOD_NS):
            return
        arg = (STATUS_TRIPPED if tripped else 0) | (STATUS_SWITCH_ARMED if self._state == SwitchState.ARMED else 0)
        frame = encode_frame(FRAME_STATUS, self._tx_seq, arg)
        self._tx_seq = (self._tx_seq + 1) & 0xFF
        self._last_report_ns = now_ns
        self._last_reported = tripped
        try:
            if self._fd is not None:
                os.write(self._fd, frame)
            else:
                self._port.write(frame)
            self.reports_sent += 1
        except Exception:
            # The next poll finds a vanished device through its read; a full buffer just drops this frame.
            self.reports_failed += 1

    def wait(self, timeout_s: float) -> None:
        """Sleep up to ``timeout_s``, waking as soon as the rack sends a byte (heartbeat mode on a device with
        a file descriptor), so a kill frame is read at once instead of at the next period. Never raises."""
        if self._heartbeat and self._fd is not None:
            try:
                select.select([self._fd], [], [], timeout_s)
                return
            except (OSError, ValueError):
                pass  # the device is going away: the next poll finds out
        time.sleep(timeout_s)

    def close(self) -> None:
        port, self._port, self._fd = self._port, None, None
        if port is not None:
            try:
                port.close()
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _reset_link_state(self):
        """Forget everything learnt over the previous connection: a reopened port starts not armed."""
        self._parser.reset()
        self._run = 0                    # consecutive A frames towards ARM_FRAMES
        self._last_armed_seq = -1
        self._last_armed_ns = None
        self._last_frame_ns = None
        self._last_type = 0
        self._last_seq = 0
        self._kill = False
        self._kill_poll = -1
        self._line_since_ns = None
        self._healthy = False
        self._tx_seq = 0
        self._last_report_ns = -(1 << 62)
        self._last_reported = None

    def _open(self, now_ns: int) -> None:
        cfg = self.config
        extra = {} if "://" in cfg.port else {"exclusive": True}
        try:
            port = serial.serial_for_url(cfg.port, baudrate=cfg.baudrate, timeout=0, write_timeout=0,
                                         do_not_open=True, **extra)
            port.open()
        except Exception as exc:
            self.open_failures += 1
            self._had_failure = True
            self._fail(f"open failed: {exc}", now_ns)
            return
        self._port = port
        fd = getattr(port, "fd", None)
        self._fd = fd if isinstance(fd, int) else None
        if self._had_failure:
            self.reconnects += 1
            self._had_failure = False
        self._reset_link_state()
        if self._heartbeat:
            self._set(SwitchState.NOT_ARMED, now_ns, f"opened {cfg.port}; waiting for {ARM_FRAMES} armed frames")
        else:
            self._set(SwitchState.NOT_ARMED, now_ns, f"opened {cfg.port}; reading {self._line_label}")

    def _lose(self, why: str, now_ns: int) -> None:
        self.close()
        self.disconnects += 1
        self._had_failure = True
        self._fail(why, now_ns)

    def _fail(self, why: str, now_ns: int) -> None:
        delay_ns = self._backoff_ns
        self._retry_at_ns = now_ns + delay_ns
        self._backoff_ns = min(delay_ns * 2, self._backoff_max_ns)
        self._set(SwitchState.DISCONNECTED, now_ns, f"{why}; retry in {delay_ns // 1_000_000} ms")

    def _proved_healthy(self) -> None:
        self._healthy = True
        self._backoff_ns = self._backoff_min_ns

    def _poll_frames(self, port, now_ns: int) -> None:
        data = port.read(READ_LIMIT)
        changed = False
        if data:
            decoded = self._decoded
            before = (self._parser.frames_bad, self._parser.garbage_bytes)
            if self._parser.feed(data, decoded):
                for ftype, seq, _arg in decoded:
                    self._on_frame(ftype, seq, now_ns)
                decoded.clear()
                changed = True
            changed = changed or before != (self._parser.frames_bad, self._parser.garbage_bytes)
        last = self._last_frame_ns
        if last is not None and now_ns - last > self._timeout_ns:
            state = SwitchState.SILENT
        elif self._kill:
            state = SwitchState.KILL_PRESSED
        elif self._run >= ARM_FRAMES:
            state = SwitchState.ARMED
        else:
            state = SwitchState.NOT_ARMED
        if state != self._state or changed:
            self._set(state, now_ns, self._frame_detail(state, now_ns))

    def _on_frame(self, ftype: int, seq: int, now_ns: int) -> None:
        self._last_frames.append((now_ns, chr(ftype), seq))
        if ftype == FRAME_STATUS:
            return
        if not self._healthy:
            self._proved_healthy()
        self._last_type = ftype
        self._last_seq = seq
        if ftype == FRAME_KILL:
            self.kill_frames += 1
            self._kill = True
            self._kill_poll = self._polls
            self._run = 0
        elif self._kill and self._kill_poll == self._polls:
            pass  # an A behind a K in the same read: the kill must still be seen
        else:
            self._kill = False
            last = self._last_armed_ns
            if last is None or now_ns - last > self._timeout_ns:
                self._run = 1
            elif self._run >= ARM_FRAMES:
                pass  # armed: a gap in SEQ (a lost frame) is tolerated, silence is not
            elif (seq - self._last_armed_seq) & 0xFF == 1:
                self._run += 1
            else:
                self._run = 1
            self._last_armed_seq = seq
            self._last_armed_ns = now_ns
        self._last_frame_ns = now_ns

    def _frame_detail(self, state: SwitchState, now_ns: int) -> str:
        p = self._parser
        counts = f"frames_ok={p.frames_ok} frames_bad={p.frames_bad} garbage_bytes={p.garbage_bytes}"
        if state == SwitchState.SILENT:
            was = " (the last frame was a kill)" if self._last_type == FRAME_KILL else ""
            return (f"no frame for {(now_ns - self._last_frame_ns) / 1e6:.0f} ms "
                    f"(timeout {self._timeout_ns / 1e6:.0f} ms){was}; {counts}")
        if state == SwitchState.KILL_PRESSED:
            return f"kill frame seq={self._last_seq}; kill_frames={self.kill_frames}; {counts}"
        if state == SwitchState.ARMED:
            return f"armed, last seq={self._last_seq}; {counts}"
        if self._run:
            return f"armed frames resumed ({self._run} of {ARM_FRAMES} needed); {counts}"
        return f"waiting for {ARM_FRAMES} consecutive armed frames; {counts}"

    def _poll_line(self, port, now_ns: int) -> None:
        high = bool(getattr(port, self._line_name))
        if not self._healthy:
            self._proved_healthy()
        if high != self._active_low:
            if self._line_since_ns is None:
                self._line_since_ns = now_ns
            state = SwitchState.ARMED if now_ns - self._line_since_ns >= LINE_ARM_DEBOUNCE_NS else SwitchState.NOT_ARMED
        else:
            self._line_since_ns = None
            state = SwitchState.NOT_ARMED
        if state != self._state:
            level = "high" if high else "low"
            want = "low" if self._active_low else "high"
            if state == SwitchState.ARMED:
                detail = f"{self._line_label} {level} (armed when {want})"
            elif high != self._active_low:
                detail = f"{self._line_label} {level} (armed when {want}); settling for debounce"
            else:
                detail = f"{self._line_label} {level}: not armed (armed when {want})"
            self._set(state, now_ns, detail)

    def _set(self, state: SwitchState, now_ns: int, detail: str) -> None:
        if state != self._state:
            self._state = state
            self._since_ns = now_ns
        self._detail = detail
        self._reading = self._build()

    def _build(self) -> SwitchReading:
        p = self._parser
        return SwitchReading(
            state=self._state, armed=self._state == SwitchState.ARMED, since_ns=self._since_ns,
            frames_ok=p.frames_ok, frames_bad=p.frames_bad, garbage_bytes=p.garbage_bytes,
            disconnects=self.disconnects, open_failures=self.open_failures, reconnects=self.reconnects,
            kill_frames=self.kill_frames, last_frame_ns=self._last_frame_ns or 0, detail=self._detail,
            last_frames=tuple(self._last_frames))


def simulate(port: str, rate_hz: float = 20.0, baudrate: int = 115200) -> int:
    """A rack controller on ``port`` (``pty`` makes a pseudo-terminal and prints its path).

    Sends A frames at ``rate_hz``; reads commands from stdin: k = press kill, a = release (armed), s =
    silence, g = a burst of garbage, q = quit. Prints the watchdog's status frames when they change.
    """
    import random
    import select
    import time
    import tty

    keep = None
    if port == "pty":
        fd, slave = os.openpty()
        tty.setraw(fd)
        tty.setraw(slave)
        keep = slave  # held open so the path stays valid until the watchdog opens it
        os.set_blocking(fd, False)
        print(f"rack simulator on {os.ttyname(slave)} (killswitch.port)", flush=True)
    else:
        handle = serial.serial_for_url(port, baudrate=baudrate, timeout=0, write_timeout=0)
        fd = handle.fileno()
        print(f"rack simulator on {port}", flush=True)
    print("commands: k = kill, a = armed, s = silence, g = garbage, q = quit", flush=True)
    mode, seq, period = "a", 0, 1.0 / rate_hz
    parser, frames, shown = FrameParser(), [], None
    next_send = time.monotonic()

    def send(data):
        try:
            os.write(fd, data)
        except BlockingIOError:
            pass  # nobody is reading the port: drop, as a wire would

    try:
        while True:
            ready, _, _ = select.select([sys.stdin, fd], [], [], max(0.0, next_send - time.monotonic()))
            if sys.stdin in ready:
                line = sys.stdin.readline()
                cmd = line.strip()[:1].lower()
                if not line or cmd == "q":
                    return 0
                if cmd == "g":
                    send(random.randbytes(256))
                elif cmd in ("a", "k", "s"):
                    mode = cmd
                    print(f"now sending: {dict(a='armed', k='kill', s='nothing')[cmd]}", flush=True)
            if fd in ready:
                try:
                    parser.feed(os.read(fd, 4096), frames)
                except BlockingIOError:
                    pass
                except OSError:
                    print("the watchdog side closed", flush=True)
                    return 1
                for ftype, _seq, arg in frames:
                    if ftype == FRAME_STATUS and arg != shown:
                        shown = arg
                        print(f"watchdog: trading {'TRIPPED' if arg & STATUS_TRIPPED else 'enabled'}, "
                              f"switch read {'armed' if arg & STATUS_SWITCH_ARMED else 'not armed'}", flush=True)
                frames.clear()
            if time.monotonic() >= next_send:
                next_send += period
                if mode != "s":
                    send(encode_frame(FRAME_KILL if mode == "k" else FRAME_ARMED, seq))
                    seq = (seq + 1) & 0xFF
    except KeyboardInterrupt:
        return 0
    finally:
        if keep is not None:
            os.close(fd)
            os.close(keep)


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m pipeline.safety.switch", description=__doc__.splitlines()[0])
    ap.add_argument("--simulate", metavar="PORT", required=True,
                    help="run a rack controller simulator on PORT (a device, a pyserial URL, or 'pty')")
    ap.add_argument("--rate-hz", type=float, default=20.0)
    ap.add_argument("--baudrate", type=int, default=115200)
    args = ap.parse_args(argv)
    return simulate(args.simulate, args.rate_hz, args.baudrate)


if __name__ == "__main__":
    sys.exit(main())
