"""Publishing jobs with the real Node BullMQ client (`tests/node/publish.mjs`), as the Messaging service does."""

import atexit
import json
import os
import queue
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from django.conf import settings

from harness.procfile import ROOT

NODE_PUBLISHER = ROOT / "tests" / "node" / "publish.mjs"


class _NodePublisher:
    """One `publish.mjs --serve` for the whole test session: Node and bullmq start in 2-3 s on the loaded
    machine, paid once instead of at every `publish_jobs`. The jobs still go through the real Node
    client's `Queue.addBulk`. Restarted after any failure."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._answers: queue.Queue[bytes] = queue.Queue()
        self._stderr = Path(tempfile.gettempdir()) / f"node-publisher-{os.getpid()}.log"
        self._lock = threading.Lock()

    def _running(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._answers = queue.Queue()
            with self._stderr.open("ab") as stderr:
                self._proc = subprocess.Popen(
                    ["node", str(NODE_PUBLISHER), "--serve"],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
            threading.Thread(target=self._read, args=(self._proc, self._answers), daemon=True).start()
        return self._proc

    @staticmethod
    def _read(proc: subprocess.Popen, answers: queue.Queue[bytes]) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            answers.put(line)
        answers.put(b"")  # EOF: the publisher exited

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def publish(self, header: dict[str, Any], lines: list[str], timeout: float) -> dict[str, Any]:
        with self._lock:
            proc = self._running()
            try:
                proc.stdin.write((json.dumps(header) + "\n" + "".join(lines)).encode())  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                answer = self._answers.get(timeout=timeout)
            except (OSError, queue.Empty) as exc:
                self.stop()
                raise RuntimeError(f"node publisher failed ({exc!r}): {self._stderr_tail()}") from exc
            if not answer:
                self.stop()
                raise RuntimeError(f"node publisher exited: {self._stderr_tail()}")
            result = json.loads(answer)
            if "error" in result:
                self.stop()  # a fresh one next time, with fresh connections
                raise RuntimeError(f"node publisher failed: {result['error'][-2000:]}")
            return result

    def _stderr_tail(self) -> str:
        return self._stderr.read_text(errors="replace")[-2000:] if self._stderr.exists() else ""


_NODE_PUBLISHER = _NodePublisher()
atexit.register(_NODE_PUBLISHER.stop)


def publish_jobs(
    jobs: list[dict[str, Any]],
    ids: bool = False,
    *,
    queue: str | None = None,
    redis_url: str | None = None,
    chunk: int = 1000,
    timeout: float = 300.0,
) -> list[str] | int:
    """Publish `{"name", "data", "opts"?}` jobs with the real Node BullMQ client (`Queue.addBulk`).

    Returns the job ids in order with `ids=True`, else the number published.
    """
    header = {
        "redis": redis_url or settings.BULLMQ_REDIS_URL,
        "queue": queue or settings.BULLMQ_QUEUE,
        "prefix": settings.BULLMQ_PREFIX,
        "chunk": chunk,
        "ids": ids,
        "count": len(jobs),
    }
    # ASCII escapes: a lone UTF-16 surrogate reaches the Node client as it would from JavaScript.
    result = _NODE_PUBLISHER.publish(header, [json.dumps(job) + "\n" for job in jobs], timeout)
    assert result["published"] == len(jobs), result
    return [str(i) for i in result["ids"]] if ids else result["published"]
