"""The webhook emitter worker: fan events out into deliveries, and send due deliveries.

Two loops on the service's event loop; their database work runs on two
threads of its own, so neither the API's loop nor its database threads wait
on it.

* fan-out: woken by the doorbell (and a re-poll timer: a lost ring costs
  latency, never an event), turns new events into delivery rows
  (`store.webhooks.fan_out`).
* delivery: each cycle is one transaction that records the outcomes of the
  attempts that finished and leases due deliveries: at most `PER_ENDPOINT`
  attempts in flight per endpoint plus some leased ahead (as many as it
  finished lately, bounded), and `MAX_LEASED` in all. An attempt that finishes starts the endpoint's next
  leased delivery at once, so the slots stay busy while the next cycle's
  transaction runs; a hanging endpoint ties up its own few slots for 5 s
  each, never the others'. A lease outlives the 5 s attempt with a margin
  (a queued delivery whose lease no longer covers a whole attempt is not
  started); after `kill -9` it expires and any replica sends the delivery
  again, with the same `webhook-id` (at least once).
* both loops coalesce: while rings or outcomes keep coming they run at most
  every `FAN_OUT_INTERVAL` / `CYCLE_INTERVAL`, so a busy API is not answered
  with a stream of tiny write transactions competing for its (on SQLite,
  single) write lock; the first ring after a quiet spell is served at once.

`stop()` stops claiming, lets attempts in flight finish, records them and
gives back every lease this worker still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import Connection

from convhub.server.events.webhooks.body import render_event
from convhub.server.events.webhooks.policy import WebhookPolicy
from convhub.server.events.webhooks.sender import ATTEMPT_TIMEOUT, WebhookSender
from convhub.server.observability.error_log import log_unexpected
from convhub.server.store import webhooks as store
from convhub.server.store.db import Database
from convhub.server.store.doorbell import DoorbellListener
from convhub.server.workers import claimer_id

log = logging.getLogger("convhub.webhooks")

T = TypeVar("T")

POLL_INTERVAL = 1.0
LOCKED_RETRY = 0.01  # fan-out found the endpoints behind locked: how soon it looks again
MAX_LEASED = 512  # in flight or queued, over all endpoints
PER_ENDPOINT = 16
# Leased with each chain head while the API is not busy: its next pending deliveries, sent back to back
# after it (store.claim_due).
FOLLOW = 8
# Leased ahead per endpoint beyond the attempts in flight: a finished attempt's slot is refilled
# at once from these, instead of idling while the next cycle's transaction runs. As many as the
# endpoint finished since the previous cycle, twice over, within these bounds: a fast endpoint
# gets enough to stay busy through a cycle, a hanging one no more than it can start in time.
MIN_QUEUED = 16
MAX_QUEUED = 112
LEASE_US = int((ATTEMPT_TIMEOUT + 10) * 1_000_000)
# A queued delivery starts only while its lease still covers a whole attempt with this to spare;
# past that it is left for its lease to run out (and sent from a fresh claim).
START_MARGIN = 2.0
# Coalescing while the API writes events (a doorbell rang within BUSY_WINDOW of the previous
# pass): at most one fan-out per FAN_OUT_INTERVAL and one delivery cycle per CYCLE_INTERVAL, so
# ingest does not share its write lock (one, on SQLite) with a stream of small transactions: each
# cycle leases twice what the endpoint finished during the last one, so fewer cycles lease more
# each and the rate holds. Otherwise both run back to back, and a quiet spell's first ring is
# served at once.
BUSY_WINDOW = 0.5
FAN_OUT_INTERVAL = 0.2
CYCLE_INTERVAL = 0.2
SECRET_CACHE = 1024


def _render(payload: bytes) -> store.RenderedBody:
    event = render_event(payload)
    return store.RenderedBody(event.event_id, event.body, event.ordering_key)


class WebhookEmitter:
    """A `Worker` (server/workers.py) delivering every customer's webhooks from this process."""

    name = "webhooks"

    def __init__(self, db: Database, policy: WebhookPolicy) -> None:
        self._db = db
        self._policy = policy
        self.worker_id = claimer_id()
        self._executor: ThreadPoolExecutor | None = None
        self._sender: WebhookSender | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: dict[asyncio.Task[None], str] = {}
        self._per_endpoint: Counter[str] = Counter()  # attempts in flight
        self._queued: dict[str, deque[tuple[float, store.ClaimedDelivery]]] = {}  # leased, not started yet
        self._finished: Counter[str] = Counter()  # attempts finished per endpoint since the last cycle
        self._outcomes: list[store.Outcome] = []
        self._given_back: list[str] = []  # leased followers not sent, released by the next cycle
        # Opened once per sealed text (a Fernet decrypt per claimed row showed in profiles); rotation seals anew.
        self._open_secret = lru_cache(maxsize=SECRET_CACHE)(self._open_sealed)
        self._wake = asyncio.Event()
        self._stopping = False
        self._busy_until = 0.0  # loop time until which the API counts as busy writing events

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(2, thread_name_prefix="convhub-webhooks")
        self._sender = WebhookSender(self._policy)
        listener = self._db.doorbell.listener()
        self._tasks = [
            asyncio.create_task(self._fan_out_loop(listener), name="webhook-fan-out"),
            asyncio.create_task(self._delivery_loop(), name="webhook-delivery"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        fan_out, delivery = self._tasks
        fan_out.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fan_out
        await delivery
        if self._sender is not None:
            await self._sender.aclose()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def _bookkeeping(self) -> Iterator[Connection]:
        """A write transaction of the emitter's own bookkeeping (deliveries, leases, cursors).

        On PostgreSQL it commits without waiting for its WAL flush
        (`synchronous_commit = off`), so it adds no flush for the API's
        commits to queue behind. Safe for these rows alone: a database crash
        can lose the last fraction of a second of them, which at worst sends a
        delivery again with the same webhook-id (at least once, as after
        kill -9) or fans the same events out again; the events themselves
        were committed by the API, durably.
        """
        with self._db.writer.begin() as conn:
            if self._db.backend == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            yield conn

    def _open_sealed(self, sealed: str) -> str:
        return str(self._db.secrets.open(sealed))

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # -- fan-out --------------------------------------------------------------

    def _fan_out_once(self) -> tuple[int, bool]:
        """One fan-out pass: (deliveries made, more to do). Bodies are rendered before the write transaction.
        Endpoints seen behind but not claimed count as more to do: they were locked (a delivery cycle recording
        outcomes, another replica's fan-out)."""
        with self._db.read() as conn:
            rendered = store.render_behind(conn, _render)
        if rendered is None:
            return 0, False
        first = self._policy.schedule.delay_before(0) or 0.0
        with self._bookkeeping() as conn:
            done = store.fan_out(conn, _render, int(first * 1_000_000), rendered=rendered)
        return (0, True) if done is None else done

    def _busy(self) -> bool:
        return asyncio.get_running_loop().time() < self._busy_until

    async def _fan_out_loop(self, listener: DoorbellListener) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            try:
                made, more = await self._in_thread(self._fan_out_once)
            except Exception as exc:
                log_unexpected(log, "the webhook fan-out (retrying)", exc)
                made, more = 0, False
            if made:
                self._wake.set()
            elif more:  # locked by another transaction: try again shortly, not at the next ring or poll
                await asyncio.sleep(LOCKED_RETRY)
            # With more to do the next pass starts now, but a ring still counts: a backlog that outgrows one
            # pass while the API keeps writing is the busiest case, not a quiet one.
            if listener.take() if more else await listener.wait(POLL_INTERVAL):
                rung = loop.time()
                if rung < self._busy_until or rung - started < BUSY_WINDOW:
                    self._busy_until = rung + BUSY_WINDOW  # rings keep coming: the API is writing
            if self._busy():
                # Rings arriving meanwhile are merged into the next pass (the listener stays set).
                await asyncio.sleep(max(0.0, started + FAN_OUT_INTERVAL - loop.time()))

    # -- delivery -------------------------------------------------------------

    def _cycle(
        self, outcomes: list[store.Outcome], given_back: list[str], free: int, room: dict[str, int], follow: int
    ) -> list[store.ClaimedDelivery]:
        """Record `outcomes` and release `given_back`; lease up to `free` due chain heads (with `follow` followers
        each), at most `room` more per endpoint (see `_room`)."""
        with self._bookkeeping() as conn:
            store.record_outcomes(conn, self.worker_id, outcomes, given_back)
            if free <= 0:
                return []
            full = [e for e, n in room.items() if n <= 0]
            default = PER_ENDPOINT + MIN_QUEUED
            return store.claim_due(
                conn,
                self.worker_id,
                free,
                LEASE_US,
                lambda e: room.get(e, default),
                self._open_secret,
                full,
                follow=follow,
            )

    def _room(self) -> dict[str, int]:
        """How many more deliveries each endpoint with leases or recent attempts may be given this cycle."""
        finished, self._finished = self._finished, Counter()
        held = self._leased()
        return {
            e: PER_ENDPOINT + min(MAX_QUEUED, max(MIN_QUEUED, 2 * finished[e])) - held[e]
            for e in set(held) | set(finished)
        }

    def _leased(self) -> Counter[str]:
        """Deliveries this worker holds leases on, per endpoint: in flight plus queued."""
        held = Counter(self._per_endpoint)
        for endpoint_id, queue in self._queued.items():
            held[endpoint_id] += len(queue)
        return held

    def _start_queued(self, endpoint_id: str) -> None:
        """Fill the endpoint's free attempt slots from what it has leased."""
        queue = self._queued.get(endpoint_id)
        now = time.monotonic()
        while queue and not self._stopping and self._per_endpoint[endpoint_id] < PER_ENDPOINT:
            leased_at, d = queue.popleft()
            if _may_start(leased_at, now):
                self._per_endpoint[endpoint_id] += 1
                task = asyncio.create_task(self._run_chain(leased_at, d))
                self._in_flight[task] = endpoint_id
        if not queue:
            self._queued.pop(endpoint_id, None)
        if not self._per_endpoint[endpoint_id]:
            del self._per_endpoint[endpoint_id]

    async def _delivery_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_cycle = -CYCLE_INTERVAL
        while True:
            self._wake.clear()
            free = 0 if self._stopping else MAX_LEASED - sum(self._leased().values())
            outcomes, self._outcomes = self._outcomes, []
            given_back, self._given_back = self._given_back, []
            claimed: list[store.ClaimedDelivery] = []
            leased_at = time.monotonic()  # no later than the leases' start: their age is never underestimated
            if outcomes or given_back or free > 0:
                last_cycle = loop.time()
                try:
                    # While the API is busy, heads only: a conversation's events go one per cycle (they give way).
                    follow = 0 if self._busy() else FOLLOW
                    claimed = await self._in_thread(self._cycle, outcomes, given_back, free, self._room(), follow)
                except Exception as exc:
                    log_unexpected(log, "a webhook delivery cycle (retrying)", exc)
                    self._outcomes[:0] = outcomes
                    self._given_back[:0] = given_back
                    await asyncio.sleep(POLL_INTERVAL)
                    continue
            for d in claimed:
                self._queued.setdefault(d.endpoint_id, deque()).append((leased_at, d))
            for endpoint_id in {d.endpoint_id for d in claimed}:
                self._start_queued(endpoint_id)
            if self._stopping:
                self._queued.clear()  # never started: `_release` gives their leases back
                if not self._in_flight:
                    if self._outcomes:
                        continue
                    break
                await self._wait_in_flight()
                continue
            if not (claimed and len(claimed) == free):  # a full claim: more may be due right now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
            if self._busy():
                await asyncio.sleep(max(0.0, last_cycle + CYCLE_INTERVAL - loop.time()))

    async def _wait_in_flight(self) -> None:
        """On stop: attempts finish within their 5 s; anything past a margin is cancelled (its lease expires)."""
        _, pending = await asyncio.wait(list(self._in_flight), timeout=ATTEMPT_TIMEOUT + 2)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def _release(self) -> None:
        with self._bookkeeping() as conn:
            store.release(conn, self.worker_id)

    async def _run_chain(self, leased_at: float, head: store.ClaimedDelivery) -> None:
        """Send a chain head, then its leased followers one after another (one attempt slot throughout).

        Stops at the first delivery that must wait for a retry (or whose lease
        is too old to start, or on stop): the followers not sent are given back
        by the next cycle, and the chain goes on when its head is settled.
        """
        assert self._sender is not None
        chain = (head, *head.followers)
        sent = 0
        try:
            for d in chain:
                if sent and (self._stopping or not _may_start(leased_at, time.monotonic())):
                    break
                outcome = await self._sender.attempt(d)
                # Appended after the await: the loop swaps `_outcomes` for a new list while attempts run.
                self._outcomes.append(outcome)
                sent += 1
                self._wake.set()
                if outcome.status == store.PENDING or outcome.disable_reason:
                    break  # retried later (its chain waits), or the endpoint asked to be disabled
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_unexpected(log, "a webhook attempt (its lease expires and it is retried)", exc)
        finally:
            self._given_back.extend(d.id for d in chain[max(sent, 1) :])
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.pop(task, None)
            self._per_endpoint[head.endpoint_id] -= 1
            self._finished[head.endpoint_id] += 1  # chains, the unit of `_room` and `_leased`
            self._start_queued(head.endpoint_id)
            self._wake.set()


def _may_start(leased_at: float, now: float) -> bool:
    """Whether a delivery leased at `leased_at` (monotonic) may start: its lease still covers a whole attempt."""
    return now - leased_at <= LEASE_US / 1_000_000 - ATTEMPT_TIMEOUT - START_MARGIN
