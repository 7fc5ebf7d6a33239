"""The peak RSS of each process tree the bench started, sampled in a background thread."""

import threading

import psutil

from harness.process import ManagedProcess


class RssSampler:
    """Samples every registered process tree every `interval_s`; `remove` gives a tree's peak."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        # Per process: the largest RSS of a single process of its tree (bytes), and which one it was.
        self.peaks: dict[ManagedProcess, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._lock = threading.Lock()

    def add(self, proc: ManagedProcess) -> None:
        with self._lock:
            self.peaks[proc] = (0, "")

    def remove(self, proc: ManagedProcess) -> tuple[int, str]:
        """Sample once more, stop sampling `proc`, and return its peak: (bytes, `pid N (main|child)`)."""
        self._sample(proc)
        with self._lock:
            return self.peaks.pop(proc, (0, ""))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                procs = list(self.peaks)
            for proc in procs:
                self._sample(proc)

    def _sample(self, proc: ManagedProcess) -> None:
        try:
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for process in tree:
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                continue
            with self._lock:
                peak = self.peaks.get(proc)
                if peak is not None and rss > peak[0]:
                    self.peaks[proc] = (rss, f"pid {process.pid} ({'main' if process.pid == proc.pid else 'child'})")
