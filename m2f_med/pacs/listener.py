"""``m2f-med listen``: a C-STORE SCP that segments each series once it is complete and sends the SEG on.

Receiving: every instance is written atomically to ``incoming/<StudyInstanceUID>/<SeriesInstanceUID>/
<SOPInstanceUID>.dcm`` (:mod:`m2f_med.pacs.store_files`) before the C-STORE is acknowledged, so a crash
loses nothing that the sender was told was stored.

Completeness: DIMSE has no "end of series" message, so a series is taken as complete when no instance of
it has arrived for ``quiet_s`` seconds (default 30 s; the quiet period). It is then handed to ``process``
(one series at a time, in a worker thread, so receiving goes on); on success a ``.m2f_done`` marker is
written in the series folder. On start, every received series without a marker (a crash mid-study or
mid-prediction) is scheduled again, and left-over temporary ``*.partial*`` files are removed.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Listener", "DONE_MARKER", "FAILED_MARKER", "QUIET_S"]

log = logging.getLogger(__name__)

DONE_MARKER = ".m2f_done"
FAILED_MARKER = ".m2f_failed"
QUIET_S = 30.0


class Listener:
    """C-STORE SCP with per-series processing after a quiet period.

    Args:
        incoming: folder for received instances (created).
        process: called as ``process(series_folder)`` for each complete series; returns a JSON-able
            summary written into the done marker; an exception marks the series failed (logged, one line;
            retried at the next start).
        aet: our AE title.
        port: TCP port.
        bind: address to listen on.
        quiet_s: seconds without a new instance after which a series counts as complete.

    Raises:
        OSError: the port cannot be opened (from :meth:`start`).
    """

    def __init__(self, incoming: str | Path, process: Callable[[Path], dict], aet: str = "M2FMED",
                 port: int = 11112, bind: str = "0.0.0.0", quiet_s: float = QUIET_S):
        self.incoming = Path(incoming)
        self.process = process
        self.aet, self.port, self.bind, self.quiet_s = aet, int(port), bind, float(quiet_s)
        self._last: dict[Path, float] = {}
        self._lock = threading.Lock()
        self._jobs: queue.Queue[Path | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None
        self.processed: list[Path] = []

    # ------------------------------------------------------------------ receiving
    def _on_store(self, event) -> int:
        from m2f_med.pacs.store_files import save_instance

        ds = event.dataset
        ds.file_meta = event.file_meta
        try:
            path = save_instance(self.incoming, ds)
        except OSError as err:
            log.error("cannot write a received instance: %s", err.strerror or err)
            return 0xA700
        with self._lock:
            self._last[path.parent] = time.monotonic()
            (path.parent / DONE_MARKER).unlink(missing_ok=True)  # more data: segment it again
        return 0x0000

    def _recover(self) -> None:
        self.incoming.mkdir(parents=True, exist_ok=True)
        for tmp in self.incoming.rglob("*.partial*"):
            tmp.unlink(missing_ok=True)
        now = time.monotonic()
        for series in sorted(p for p in self.incoming.glob("*/*") if p.is_dir()):
            if not (series / DONE_MARKER).exists() and any(series.glob("*.dcm")):
                log.info("received before a restart, not yet processed: %s", series.name)
                self._last[series] = now

    # ------------------------------------------------------------------ processing
    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.quiet_s / 4)):
            now = time.monotonic()
            with self._lock:
                due = [s for s, t in self._last.items() if now - t >= self.quiet_s]
                for s in due:
                    del self._last[s]
            for s in due:
                self._jobs.put(s)

    def _work(self) -> None:
        from m2f_med.io.atomic import atomic_write

        while True:
            series = self._jobs.get()
            if series is None:
                self._jobs.task_done()
                return
            try:
                summary = self.process(series)
                with atomic_write(series / DONE_MARKER) as tmp:
                    tmp.write_text(json.dumps(summary or {}, default=str))
                (series / FAILED_MARKER).unlink(missing_ok=True)
                self.processed.append(series)
                log.info("series %s processed", series.name)
            except Exception as err:  # noqa: BLE001 - one bad series must not stop the listener
                message = str(err).splitlines()[0] if str(err) else type(err).__name__
                log.error("series %s failed: %s", series.name, message)
                try:
                    (series / FAILED_MARKER).write_text(message + "\n")
                except OSError:
                    pass
            finally:
                self._jobs.task_done()

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Listener:
        """Recover, open the port and start the watcher and worker threads (non-blocking)."""
        import pynetdicom.sop_class as sop
        from pynetdicom import evt
        from pynetdicom.sop_class import Verification

        from m2f_med.pacs.dimse import STORAGE_CLASSES, _ae

        self._recover()
        ae = _ae(self.aet)
        ae.add_supported_context(Verification)
        for name in STORAGE_CLASSES:
            ae.add_supported_context(getattr(sop, name))
        self._server = ae.start_server((self.bind, self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        for target in (self._watch, self._work):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("listening as %s on %s:%d (series complete after %.0f s quiet)", self.aet, self.bind,
                 self.port, self.quiet_s)
        return self

    def stop(self) -> None:
        """Stop receiving; the series being processed is finished first."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=600)

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until nothing is pending or being processed (tests); ``False`` on timeout."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                pending = bool(self._last)
            if not pending and self._jobs.unfinished_tasks <= 0:
                return True
            time.sleep(0.2)
        return False
