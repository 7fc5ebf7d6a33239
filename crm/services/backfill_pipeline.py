"""The bulk backfill's reading and validation, one chunk ahead, in a second process.

Validating a row with the live contract is pure CPU (pydantic, email and phone syntax), a third of
a bulk import's time in one process. Here one worker process reads the file and validates chunk
n+1 while the parent plans and writes chunk n, whose time is mostly PostgreSQL's.

- Memory stays bounded: the parent asks for each chunk as it starts writing the previous one, so at
  most two chunks are alive (the one being written, the one being validated).
- Effect: the worker runs the same `RowSource.chunks` as the in-process path; the parent
  applies and commits chunks in file order with their checkpoints, as before. Rejected rows keep
  their line numbers (they are read in the worker).
- The worker is forked: it starts at once, with the parent's settings and modules. It never touches
  the database: it closes its copies of the parent's database sockets and pipe end first, and leaves
  through `os._exit`, as multiprocessing's fork start does, so no finaliser of the parent's objects
  runs in it.
- Failures: a file refused whole (`BackfillFileError`) or unreadable (`OSError`) in the worker is
  raised again in the parent as itself; anything else, or a worker that dies (killed, out of memory),
  raises `ValidationProcessError` saying what happened. The chunks committed so far stay committed.
- Stopping: the worker ignores SIGINT (Ctrl-C reaches the whole process group), and the parent stops
  it whenever it leaves, normally or not. If the parent is killed (kill -9), the worker's next read
  or write on the pipe fails and it exits; the dead parent's transaction ends at once, since no
  process holds its database socket any more.
"""

import multiprocessing
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from django.db import connections

from crm.services.backfill import BackfillFileError, BackfillResult, Item, RowSource

_NEXT, _STOP = "next", "stop"
_STOP_WAIT_S = 5.0


class ValidationProcessError(Exception):
    """The process validating the rows failed or died; the chunks committed so far are kept."""


def _let_go_of_the_parents_files(parent_end: Connection) -> None:
    """Close, in the worker only, what the fork copied of the parent's pipe end and database sockets.
    Holding them would outlive a parent killed with -9: the pipe would never report the parent gone,
    and PostgreSQL would keep the dead parent's transaction, and its locks, open (a `--resume` would
    wait on them). Closing a copy sends nothing: the parent's connection is untouched."""
    parent_end.close()
    for database in connections.all(initialized_only=True):
        if database.connection is not None:
            with suppress(OSError):
                os.close(database.connection.fileno())


def _work(pipe: Connection, parent_end: Connection, source: RowSource, chunk_rows: int, after_line: int) -> None:
    """The worker: one chunk per request, then ("done", ignored columns); or ("error", exception)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _let_go_of_the_parents_files(parent_end)
    try:
        result = BackfillResult()
        chunks = source.chunks(after_line=after_line, chunk_rows=chunk_rows, result=result)
        while pipe.recv() == _NEXT:
            items = next(chunks, None)
            if items is None:
                pipe.send(("done", result.ignored_columns))
                return
            pipe.send(("chunk", items))
            del items  # not held while waiting for the next request
    except (EOFError, BrokenPipeError):
        return  # the parent is gone
    except (BackfillFileError, OSError) as exc:
        pipe.send(("error", exc))
    except Exception as exc:  # reported in the parent, which stops the run
        pipe.send(("crash", f"{type(exc).__name__}: {exc}"))


def _receive(pipe: Connection, process: BaseProcess) -> tuple[str, Any]:
    try:
        return pipe.recv()
    except EOFError:
        process.join(_STOP_WAIT_S)
        raise ValidationProcessError(
            f"the process validating the rows stopped without a word (exit code {process.exitcode})"
        ) from None


def _stop(pipe: Connection, process: BaseProcess) -> None:
    with suppress(OSError):  # it has already gone
        pipe.send(_STOP)
    # Closed before waiting: a worker blocked sending a chunk nobody will read (larger than the pipe's buffer)
    # then fails at once (BrokenPipeError) instead of after the wait.
    pipe.close()
    process.join(_STOP_WAIT_S)
    if process.is_alive():  # busy validating a chunk nobody will use
        process.terminate()
        process.join()


@contextmanager
def validated_chunks(source: RowSource, chunk_rows: int, result: BackfillResult) -> Iterator[Iterator[list[Item]]]:
    """The file's chunks after `result.resumed_after_line`, validated one ahead in a worker process (module
    doc). Sets `result.ignored_columns` once the file is read to the end. The source reaches the worker
    through the fork, not pickled."""
    context = multiprocessing.get_context("fork")
    pipe, worker_pipe = context.Pipe()
    process = context.Process(
        target=_work,
        args=(worker_pipe, pipe, source, chunk_rows, result.resumed_after_line),
        name="backfill-validation",
        daemon=True,
    )
    process.start()
    worker_pipe.close()

    def chunks() -> Iterator[list[Item]]:
        pipe.send(_NEXT)
        while True:
            kind, payload = _receive(pipe, process)
            if kind == "done":
                result.ignored_columns = payload
                return
            if kind == "error":
                raise payload
            if kind == "crash":
                raise ValidationProcessError(f"validating the rows failed: {payload}")
            pipe.send(_NEXT)  # validate the next chunk while the caller writes this one
            yield payload

    try:
        yield chunks()
    finally:
        _stop(pipe, process)
