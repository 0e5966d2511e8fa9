"""The delivery worker: claims queued jobs, calls the provider's adapter once per attempt, records the outcome.

Durability comes from the job table (services/delivery.py, store/delivery_jobs.py):
- a job is claimed with a lease and marked `sending` in a commit that lands
  before the provider is called; its outcome is recorded by the worker's
  next cycle, one transaction that records every attempt finished since the
  last one and claims more jobs (fewer transactions: the event counter row
  and, on PostgreSQL, the round trips are paid per cycle, not per message);
- a job found `sending` with an expired lease was interrupted mid-attempt
  (kill -9): its outcome is unknown. The adapter's `find_sent` decides: the
  provider's record of the message (Twilio: a search), None when it may go
  again (a LINE push: its X-Line-Retry-Key, derived from the job id, makes
  LINE drop a repeat), or CannotTell, and then the message fails with
  `outcome_unknown` rather than risk a double text;
- retryable failures (5xx, 429, timeouts) come back after an exponential,
  jittered backoff (domain/delivery.py); final ones (4xx) fail the message
  with the provider's code, or fall back to the next eligible channel.

Woken by the delivery doorbell (rung by this process after a send commits),
by an attempt finishing, and by a re-poll timer (other replicas' sends, retries coming due, leases
expiring). Provider calls go through several httpx clients with few
requests each (DESIGN.md: one client slows with many in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar

import httpx

from convhub.server.channels.adapter import CannotTell, ChannelAdapter, Outbound, SendFailed
from convhub.server.channels.hooks import channel_account
from convhub.server.channels.media_links import MediaLinks
from convhub.server.config import Settings
from convhub.server.domain import delivery as rules
from convhub.server.domain.addresses import Address
from convhub.server.services.delivery import DeliveryService, Outcome, Work
from convhub.server.store.db import new_id
from convhub.server.store.delivery_jobs import JobRow
from convhub.server.store.doorbell import Doorbell

log = logging.getLogger("convhub.delivery")

T = TypeVar("T")

REQUESTS_PER_CLIENT = 4


class DeliveryWorker:
    name = "delivery"

    def __init__(
        self,
        service: DeliveryService,
        adapters: Mapping[str, ChannelAdapter],
        bell: Doorbell,
        settings: Settings,
        executor: Executor,
        media_links: MediaLinks | None = None,
    ) -> None:
        self.service = service
        self.media_links = media_links  # kept media goes out as signed links (media_links.py)
        self.adapters = adapters
        self.bell = bell
        self.settings = settings
        self.executor = executor
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._unstarted: list[str] = []
        self._outcomes: list[Outcome] = []  # finished attempts, recorded by the next cycle
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._next_client = 0
        # The longest one provider call may take (httpx's own timeouts apply per phase; this bounds the whole).
        self.attempt_bound = settings.provider_timeout + 1

    async def start(self) -> None:
        self._listener = self.bell.listener()
        count = max(1, -(-self.settings.delivery_concurrency // REQUESTS_PER_CLIENT))
        self._clients = [
            httpx.AsyncClient(
                timeout=self.settings.provider_timeout,
                limits=httpx.Limits(max_connections=REQUESTS_PER_CLIENT, max_keepalive_connections=REQUESTS_PER_CLIENT),
                headers={"user-agent": "convhub"},
            )
            for _ in range(count)
        ]
        self._task = asyncio.create_task(self._run(), name="convhub-delivery")

    async def stop(self) -> None:
        """Finish the attempts in flight and record them, give back jobs claimed but not started, close the clients."""
        self._stopping = True
        if self._task is not None:
            self._listener.wake()
            _, pending = await asyncio.wait([self._task], timeout=self.attempt_bound * 2)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._unstarted:
            with contextlib.suppress(Exception):
                await self._db(self.service.release, self.worker_id, list(self._unstarted))
        for client in self._clients:
            await client.aclose()

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Database work on the executor, never on the loop: a claim may wait on a lock (another replica's
        rows on PostgreSQL, the write lock on SQLite), and a background poller must not stall every call."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def _run(self) -> None:
        """Each cycle: one transaction recording the attempts that finished and claiming as many due jobs as there
        are free slots (services/delivery.py `cycle`). Woken by the doorbell, by an attempt finishing, or the timer."""
        while True:
            outcomes, self._outcomes = self._outcomes, []
            free = 0 if self._stopping else self.settings.delivery_concurrency - len(self._inflight)
            claimed: list[Work] = []
            failed = False
            if outcomes or free > 0:
                claimed, failed = await self._cycle(outcomes, free)
            for work in claimed:
                task = asyncio.create_task(self._deliver(work), name=f"convhub-delivery-{work.job.id}")
                self._inflight[work.job.id] = task
                task.add_done_callback(functools.partial(self._finished, work.job.id))
            if failed:
                if self._stopping and not self._inflight:
                    return  # their leases expire; the next claim finds them interrupted
                await self._listener.wait(self.settings.delivery_poll_interval)
                continue
            if self._stopping:
                if not self._inflight and not self._outcomes:
                    return
                await self._listener.wait(self.attempt_bound)
                continue
            if self._outcomes or (claimed and len(claimed) == free):
                continue  # outcomes to record, or a full claim (more may be due)
            await self._listener.wait(self.settings.delivery_poll_interval)

    async def _cycle(self, outcomes: list[Outcome], free: int) -> tuple[list[Work], bool]:
        """One cycle: the jobs claimed, and whether a transaction failed (its outcomes are kept for the next).

        PostgreSQL: a cycle with both outcomes and free slots records and claims in two transactions at once, so
        new jobs' claim (the `sending` mark, then the provider call) never waits behind recording earlier attempts,
        which was about half of a cycle. The two meet at most at the event counter, taken last; their jobs and
        messages are disjoint (SKIP LOCKED; a recorded job is held by this worker). SQLite keeps one transaction:
        its single writer would run the two one after the other anyway.
        """
        split = bool(outcomes) and free > 0 and self.service.db.backend != "sqlite"
        calls = [(outcomes, 0), ([], free)] if split else [(outcomes, free)]
        results = await asyncio.gather(
            *(self._db(self.service.cycle, self.worker_id, done, limit) for done, limit in calls),
            return_exceptions=True,
        )
        claimed: list[Work] = []
        failed = False
        for (done, _), result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                log.error("delivery: a cycle failed; retrying after the poll interval", exc_info=result)
                self._outcomes[:0] = done  # kept: their leases still hold for a while
                failed = True
            elif isinstance(result, BaseException):
                raise result
            else:
                claimed += result
        return claimed, failed

    def _finished(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(job_id, None)
        self._listener.wake()

    def _client(self) -> httpx.AsyncClient:
        self._next_client = (self._next_client + 1) % len(self._clients)
        return self._clients[self._next_client]

    async def _deliver(self, work: Work) -> None:
        try:
            outcome = await self._attempt(work)
        except Exception:  # its lease expires; the next claim treats it as interrupted (find_sent)
            log.exception("delivery: job %s of message %s failed unexpectedly", work.job.id, work.job.message_id)
            return
        if outcome is not None:
            # Appended after the await: the loop swaps `_outcomes` for a new list while attempts run.
            self._outcomes.append(outcome)

    async def _attempt(self, work: Work) -> Outcome | None:
        """One attempt; its outcome for the next cycle to record (None: given back unstarted on stop)."""
        job = work.job
        if self._stopping and not work.claimed.interrupted:
            self._unstarted.append(job.id)  # given back on stop; an interrupted one keeps its evidence
            return None
        if work.account is None or not work.account.enabled:
            return Outcome.failed(job, "account_unavailable", "the account was deleted or disabled")
        adapter = self.adapters.get(work.account.provider)
        if adapter is None:
            return Outcome.failed(job, rules.NO_ADAPTER, f"no adapter for provider {work.account.provider!r}")
        account = channel_account(work.account)
        outbound = self._outbound(work)
        http = self._client()
        if work.claimed.interrupted:  # the adapter says whether it may go again (LINE push: retry key)
            since = work.claimed.previous_attempt_at or job.next_attempt_at
            try:
                found = await asyncio.wait_for(
                    adapter.find_sent(http, account, outbound, since), timeout=self.attempt_bound
                )
            except (CannotTell, Exception) as exc:
                log.warning("delivery: message %s: earlier attempt's outcome unknown (%s)", job.message_id, exc)
                return Outcome.failed(
                    job,
                    rules.OUTCOME_UNKNOWN,
                    "an attempt was interrupted and the provider cannot tell whether it was sent; not resent",
                    may_fall_back=False,
                )
            if found is not None:
                return Outcome.accepted(job, found.provider_message_id, found.delivery_status)
        attempt = job.attempts  # counted by the claim
        try:
            accepted = await asyncio.wait_for(adapter.send(http, account, outbound), timeout=self.attempt_bound)
        except SendFailed as exc:
            return self._failed(job, attempt, exc)
        except TimeoutError:
            return self._failed(job, attempt, SendFailed(rules.TIMEOUT, "the provider did not answer", retryable=True))
        except Exception as exc:  # an adapter bug: final, so it cannot loop; the log has the traceback
            log.exception("delivery: the %s adapter failed on message %s", adapter.provider, job.message_id)
            return self._failed(job, attempt, SendFailed("adapter_error", type(exc).__name__, retryable=False))
        return Outcome.accepted(job, accepted.provider_message_id, accepted.delivery_status)

    def _failed(self, job: JobRow, attempt: int, exc: SendFailed) -> Outcome:
        if exc.retryable and attempt < self.settings.delivery_max_attempts:
            delay = rules.retry_delay(
                attempt,
                minimum=self.settings.delivery_backoff_min,
                maximum=self.settings.delivery_backoff_max,
                retry_after=exc.retry_after,
            )
            return Outcome.retry(job, f"{exc.code}: {exc.message}", delay)
        return Outcome.failed(job, exc.code, exc.message)

    def _outbound(self, work: Work) -> Outbound:
        m = work.message
        account_id = work.job.account_id
        provider = work.account.provider if work.account is not None else ""
        return Outbound(
            message_id=m.id,
            job_id=work.job.id,
            sender=Address(m.source_type, m.source_target, m.source_name),
            recipient=Address(m.destination_type, m.destination_target, m.destination_name),
            text=m.text,
            medias=self.media_links.for_provider(m.customer_id, m.medias) if self.media_links else list(m.medias),
            status_callback_url=f"{self.settings.resolved_public_url}/v1.0/hooks/{provider}/{account_id}/status",
            reply_token=work.reply_token,
            provider_message_id=m.transaction_id or "",
            subject=m.subject,
            conversation_id=m.conversation_id,
        )
