"""The driver of a job's program (``--program``): its calls journal read for the rows the
output does not hold yet, its calls built from the run's options."""

from __future__ import annotations

from vbatch.engine.job import Job
from vbatch.program_loader import load_program
from vbatch.programs.calls import CallBuilder
from vbatch.programs.driver import ProgramDriver
from vbatch.programs.journal import CallJournal

__all__ = ["MOST_ACTIVE_ROWS", "program_driver"]

# The most rows whose programs run at once (twice the pool's requests, up to this).
MOST_ACTIVE_ROWS = 4096


def program_driver(job: Job) -> ProgramDriver | None:
    """The driver of ``job``'s program, else None (a run without one)."""
    requests = job.settings.requests
    if requests.program is None:
        return None
    assert job.paths.calls is not None
    journal = CallJournal(job.paths.calls)
    pending = job.pending
    replayed = journal.load(pending.done_mask, pending.first_row, job.total)
    if replayed:
        job.say(f"{replayed} calls of unfinished rows are in {job.paths.calls}: they are "
                "replayed, not sent again")
    calls = CallBuilder(requests, job.builder.model, requests.rollouts)
    calls.form = job.builder.form
    active = min(MOST_ACTIVE_ROWS, 2 * job.settings.send.pool_size)
    return ProgramDriver(load_program(requests.program), calls, journal,
                         pending.work(job.context), active=active,
                         rollouts=requests.rollouts, keep_calls=requests.keep_calls,
                         clock=job.clock)
