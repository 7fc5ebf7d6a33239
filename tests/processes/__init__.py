"""The process tests' harness: the real bridge, Celery workers and beat as subprocesses.

Use it from a test that has the `processes` fixture (registered in a package's conftest.py by
importing it from here), which gives a `Processes` object and always kills every child at teardown
(SIGKILL of each whole process group; a test that proves a clean shutdown stops its processes itself
with `stop()`):

    @pytest.mark.processes
    def test_something(processes: Processes) -> None:
        bridge = processes.start_bridge(env={"BRIDGE_BATCH_SIZE": "1"})
        worker = processes.start_worker(concurrency=2)
        publish_jobs([{"name": "contact.created", "data": {"payload": {...}}}])
        wait_for_quiescence(timeout=30)
        assert bridge.stop() == 0

The fixture uses `transactional_db` (rows written by the children are visible to the test, and
the children are given the pytest-django `test_<name>` database) and empties both Redis
databases (the Celery broker's and BullMQ's) before the test. To overlap start-ups, start with
`wait=False` and then call `processes.wait_ready()`.

The modules, by job (the benchmark shares `harness/`, the process core, with them):
- `children.py`: the `processes` fixture, `Processes`, `subprocess_env` (the test stack's environment).
- `probes.py`: `wait_until`, `bullmq_counts`, `bullmq_job_state`, `celery_queue_depths` (through
  `messaging_events.broker`, every priority step and `unacked`), `celery_messages`, `inbox_counts`,
  `wait_for_quiescence`.
- `publisher.py`: `publish_jobs(jobs, ids=False)` with the real Node client.
- `network.py`: `TcpProxy` (cut a child's connection to Redis without touching the server), the
  `broker_proxy` fixture, `free_port`.
"""

from harness.process import ManagedProcess
from harness.procfile import ROOT, beat_command, bridge_command, manage_command, worker_command
from tests.processes.children import TEST_BRIDGE_ENV, Processes, processes, subprocess_env
from tests.processes.network import TcpProxy, broker_proxy, free_port
from tests.processes.probes import (
    bullmq_counts,
    bullmq_job_state,
    celery_messages,
    celery_queue_depths,
    inbox_counts,
    wait_for_quiescence,
    wait_until,
)
from tests.processes.publisher import publish_jobs

__all__ = [
    "ROOT",
    "TEST_BRIDGE_ENV",
    "ManagedProcess",
    "Processes",
    "TcpProxy",
    "beat_command",
    "bridge_command",
    "broker_proxy",
    "bullmq_counts",
    "bullmq_job_state",
    "celery_messages",
    "celery_queue_depths",
    "free_port",
    "inbox_counts",
    "manage_command",
    "processes",
    "publish_jobs",
    "subprocess_env",
    "wait_for_quiescence",
    "wait_until",
    "worker_command",
]
