"""The delivery worker: claims queued jobs, calls the provider's adapter once per attempt, records the outcome.

Durability comes from the job table (services/delivery.py, store/delivery_jobs.py):
- a job is claimed with a lease and marked `sending` in a commit that lands
  before the provider is called; its outcome is recorded later, in one
  transaction with every other attempt that finished meanwhile (the event
  counter row and, on PostgreSQL, the round trips are paid per batch, not per
  message);
- a job found `sending` with an expired lease was interrupted mid-attempt
  (kill -9): its outcome is unknown. The adapter's `find_sent` decides: the
  provider's record of the message (Twilio: a search), None when it may go
  again (a LINE push: its X-Line-Retry-Key, derived from the job id, makes
  LINE drop a repeat), or CannotTell, and then the message fails with
  `outcome_unknown` rather than risk a double text;
- retryable failures (5xx, 429, timeouts) come back after an exponential,
  jittered backoff (domain/delivery.py); final ones (4xx) fail the message
  with the provider's code, or fall back to the next eligible channel.

Two loops: claiming and recording never wait for each other, so a new job's
claim does not queue behind the recording of earlier attempts (issue 11
(b'): the send->provider latency). The claim loop is woken by the delivery
doorbell (rung by this process after a send commits), by a slot freeing up,
and by a re-poll timer (other replicas' sends, retries coming due, leases
expiring); the record loop by outcomes arriving. Provider calls go through several httpx clients with few
requests each (DESIGN.md: one client slows with many in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
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
from convhub.server.store.delivery_jobs import JobRow
from convhub.server.store.doorbell import Doorbell
from convhub.server.workers import claimer_id

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
        self.worker_id = claimer_id()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._unstarted: list[str] = []
        self._outcomes: list[Outcome] = []  # finished attempts, for the record loop
        self._outcomes_ready = asyncio.Event()
        self._stopping = False
        self._claiming: asyncio.Task[None] | None = None
        self._recording: asyncio.Task[None] | None = None
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
        self._claiming = asyncio.create_task(self._claim_loop(), name="convhub-delivery-claim")
        self._recording = asyncio.create_task(self._record_loop(), name="convhub-delivery-record")

    async def stop(self) -> None:
        """Finish the attempts in flight and record them, give back jobs claimed but not started, close the clients."""
        self._stopping = True
        loops = [t for t in (self._claiming, self._recording) if t is not None]
        if loops:
            self._listener.wake()
            self._outcomes_ready.set()
            _, pending = await asyncio.wait(loops, timeout=self.attempt_bound * 2)
            for task in [*pending, *self._inflight.values()]:
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

    async def _claim_loop(self) -> None:
        """Claim as many due jobs as there are free slots and start them; never waits for recording."""
        try:
            while not self._stopping:
                free = self.settings.delivery_concurrency - len(self._inflight)
                claimed: list[Work] = []
                if free > 0:
                    try:
                        claimed = await self._db(self.service.claim, self.worker_id, free)
                    except Exception:
                        log.exception("delivery: claiming failed; retrying after the poll interval")
                        await self._listener.wait(self.settings.delivery_poll_interval)
                        continue
                for work in claimed:
                    task = asyncio.create_task(self._deliver(work), name=f"convhub-delivery-{work.job.id}")
                    self._inflight[work.job.id] = task
                    task.add_done_callback(functools.partial(self._finished, work.job.id))
                if claimed and len(claimed) == free:
                    continue  # a full claim: more may be due
                await self._listener.wait(self.settings.delivery_poll_interval)
        finally:
            self._outcomes_ready.set()  # the record loop may be waiting for this loop to end

    async def _record_loop(self) -> None:
        """Record finished attempts, all that arrived meanwhile in one transaction (services/delivery.py `record_all`).

        Ends on stop once nothing can bring another outcome: the claim loop has ended and no attempt is in flight.
        A failed transaction keeps its outcomes for the next try: their leases still hold for a while.
        """
        while True:
            if not self._outcomes:
                claim_loop_ended = self._claiming is None or self._claiming.done()
                if self._stopping and claim_loop_ended and not self._inflight:
                    return
                self._outcomes_ready.clear()
                await self._outcomes_ready.wait()
                continue
            outcomes, self._outcomes = self._outcomes, []
            try:
                await self._db(self.service.record_all, outcomes)
            except Exception:
                log.exception("delivery: recording %d outcome(s) failed; retrying", len(outcomes))
                self._outcomes[:0] = outcomes
                if self._stopping and not self._inflight:
                    return  # their leases expire; the next claim finds them interrupted
                await asyncio.sleep(self.settings.delivery_poll_interval)

    def _finished(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(job_id, None)
        self._listener.wake()  # a free slot
        self._outcomes_ready.set()

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
            # Appended after the await: the record loop swaps `_outcomes` for a new list while attempts run.
            self._outcomes.append(outcome)  # the task's done callback (`_finished`) wakes the record loop

    async def _attempt(self, work: Work) -> Outcome | None:
        """One attempt; its outcome for the record loop (None: given back unstarted on stop)."""
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
