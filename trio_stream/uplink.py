"""Publishing a running session to a hub: the uplink of ``tstream run --hub``.

The uplink follows a session's :class:`~trio_stream.log.SessionLog` and sends its events
to the hub's publisher WebSocket (``/api/streams/{id}/publish``) in batches, each event at
its own offset, so that the hub's copy has exactly the session's offsets.

It holds no events of its own. What it sends next comes from the log's memory (its last
``history`` events) or, when the log no longer holds them (the hub was away for long, or
slower than the command), from the store the session is recorded in. A hub that is down,
slow or gone therefore costs the run neither memory nor speed: the session never waits
for the uplink.

Every connection begins with the hub's ``connection_ack``, whose ``lastOffset`` is where
the hub's copy ends; sending resumes right after it. After a hub restart that may be
before what the hub had acknowledged (it acknowledged events its store had not written
yet), and those are sent again: the hub refuses gaps and skips offsets it already has, so
its copy ends up whole, dense and without duplicates. Between connections the uplink
waits with capped exponential backoff and jitter, so many runs whose hub restarts do not
reconnect all at once.

A hub that refuses the session (a rejected token, a stream of the same id that is not
this session's) ends the uplink with one notice; the run goes on. When the session has
ended, :meth:`Uplink.finish` gives the uplink a bounded time to deliver the rest.
"""

from __future__ import annotations

import math
import os
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Final, final

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from .batches import EventRuns, OutputBatch
from .client import HubClientError, HubPublisher, hub_epoch, open_publisher, parse_hub_address
from .events import Error, Event, EventType, event_to_json
from .log import SessionLog
from .store.base import HistoryQuery, RunStore, Store, StoreError
from .store.chunks import lines_item
from .terminal import write_all

DEFAULT_FLUSH_TIMEOUT: Final = 5.0
CONNECT_TIMEOUT: Final = 5.0
# The hub may make a publisher wait while its own recorder catches up; longer than this
# and the hub is taken for stuck.
ACK_TIMEOUT: Final = 15.0
# Events read from the store at once when the log no longer holds them (as events, or
# as its chunks' columns, much cheaper to read and send).
STORE_PAGE: Final = 2000
STORE_RUNS_PAGE: Final = 20_000
# How long to wait for the session's recorder when the store is behind the log.
RECORD_WAIT: Final = 0.05
RATE_LIMIT_WAIT: Final = 0.5
# Publish messages sent before the oldest one's answer is read.
WINDOW: Final = 4
# Room left in a message for the list's brackets and commas, with margin.
MESSAGE_MARGIN: Final = 64
_WHOLE: Final = b',"partial":false,"raw":null}}'

# Refusals that another try would meet again: the uplink stops at once.
REFUSALS: Final = {
    "unauthorized": "token rejected",
    "forbidden": "token rejected",
    "forbidden_origin": "refused",
    "bad_request": "refused",
    "not_found": "refused",
    "conflict": "refused",
    "stream_ended": "refused",
    "invalid_event": "refused",
}


def check_hub_url(url: str) -> str:
    """Check a hub address (:func:`trio_stream.client.parse_hub_address`).

    Returns:
        The address, unchanged.

    Raises:
        ValueError: naming what is wrong with it.
    """
    return parse_hub_address(url).text


def check_hub_urls(urls: str | Sequence[str]) -> tuple[str, ...]:
    """Check one or more hub addresses (a sequence, or one string of addresses separated
    by commas): the hubs a publisher tries in turn.

    Raises:
        ValueError: naming what is wrong, or when there is none.
    """
    given = [urls] if isinstance(urls, str) else list(urls)
    hubs = tuple(check_hub_url(u.strip()) for text in given for u in text.split(",") if u.strip())
    if not hubs:
        raise ValueError("no hub address given")
    return hubs


@final
@attrs.frozen
class Backoff:
    """Capped exponential backoff with jitter: the n-th wait in a row is between half
    and all of ``min(cap, initial * factor ** (n - 1))`` seconds."""

    initial: float = 0.1
    factor: float = 2.0
    cap: float = 5.0

    def delay(self, failures: int, rng: random.Random) -> float:
        """The wait after ``failures`` failed attempts in a row (1 or more)."""
        exponent = min(max(0, failures - 1), 64)
        ceiling = min(self.cap, self.initial * self.factor**exponent)
        return ceiling * rng.uniform(0.5, 1.0)


def messages(parts: list[bytes], max_size: int, max_batch: int) -> Iterator[list[bytes]]:
    """Split serialized events into publish messages of at most ``max_size`` bytes and
    ``max_batch`` events, in order. A part that alone is too large comes out alone."""
    budget = max_size - MESSAGE_MARGIN
    batch: list[bytes] = []
    size = 0
    for part in parts:
        if batch and (size + len(part) + 1 > budget or len(batch) >= max_batch):
            yield batch
            batch, size = [], 0
        batch.append(part)
        size += len(part) + 1
    if batch:
        yield batch


def encode(events: Sequence[Event]) -> list[bytes]:
    """Each event as :func:`~trio_stream.events.event_to_json` makes it. Captured lines
    (a log's :class:`~trio_stream.batches.OutputBatch` runs) are written from their
    columns, without building their events: publishing must cost a chatty run little."""
    if not isinstance(events, EventRuns):
        return [event_to_json(e) for e in events]
    out: list[bytes] = []
    for run in events.runs:
        if isinstance(run, OutputBatch):
            out.extend(_output_json(run))
        else:
            out.extend(event_to_json(e) for e in run)
    return out


def _output_json(batch: OutputBatch) -> list[bytes]:
    lines = batch.lines
    eols, partial, raw = lines.eols, lines.partial, lines.raw
    head = b'","session":' + orjson.dumps(batch.session) + b',"offset":'
    middle = (
        b',"type":"output","ts":'
        + orjson.dumps(batch.ts)
        + b',"data":{"source":'
        + orjson.dumps(batch.source)
        + b',"text":'
    )
    newline = orjson.dumps("\n")
    out = []
    for index, text in enumerate(lines.texts):
        if index in raw:
            out.append(event_to_json(batch.event(index)))
            continue
        out.append(
            b"".join(
                (
                    b'{"id":"',
                    batch.event_id(index).encode(),
                    head,
                    str(batch.first_offset + index).encode(),
                    middle,
                    orjson.dumps(text),
                    b',"eol":',
                    newline if eols is None else orjson.dumps(eols[index]),
                    b',"line":',
                    str(batch.first_line + index).encode(),
                    b',"partial":true,"raw":null}}' if index in partial else _WHOLE,
                )
            )
        )
    return out


def column_messages(
    events: Sequence[Event], max_size: int, max_batch: int
) -> list[tuple[int, list[bytes]]]:
    """``events`` as ``tstream-columns`` publish messages of at most ``max_size`` bytes
    and ``max_batch`` events, each with the offset of its last event: batches of lines
    as their columns (no event or JSON object each), every other event a run of its
    own. An event too large for a message alone goes as :func:`too_large_stand_in`."""
    budget = max_size - MESSAGE_MARGIN
    runs = events.runs if isinstance(events, EventRuns) else [events]
    parts: list[tuple[bytes, int, int]] = []
    # Runs are consecutive; an event at an offset already written is left out rather
    # than sent twice (the hub takes a message's runs only at consecutive offsets).
    done = -1
    for run in runs:
        if isinstance(run, OutputBatch):
            if run.last_offset > done:
                run = run.part(max(0, done + 1 - run.first_offset), len(run))
                parts += _line_parts(run, budget, max_size, max_batch)
                done = run.last_offset
            continue
        for event in run:
            if 0 <= event.offset <= done:
                continue
            done = event.offset
            data = b"[%s]" % event_to_json(event)
            if len(data) > budget:
                data = b"[%s]" % event_to_json(too_large_stand_in(event, len(data), max_size))
            parts.append((data, 1, event.offset))
    out: list[tuple[int, list[bytes]]] = []
    group: list[bytes] = []
    size = count = 0
    last = -1
    for data, events_in, part_last in parts:
        if group and (size + len(data) + 1 > budget or count + events_in > max_batch):
            out.append((last, group))
            group, size, count = [], 0, 0
        group.append(data)
        size += len(data) + 1
        count += events_in
        last = part_last
    if group:
        out.append((last, group))
    return out


def _line_parts(
    run: OutputBatch, budget: int, max_size: int, max_batch: int
) -> list[tuple[bytes, int, int]]:
    """A batch of lines as runs of columns that each fit a message: (bytes, lines, last
    offset)."""
    count = len(run)
    # Lines per part, from their mean size (a JSON string and a comma each), halved
    # while a part comes out too large.
    mean = (sum(map(len, run.lines.texts)) + 8 * count) / count
    step = max(1, min(max_batch, count, int(budget * 0.9 / mean)))
    out: list[tuple[bytes, int, int]] = []
    start = 0
    while start < count:
        stop = min(count, start + step)
        part = run.part(start, stop)
        data = orjson.dumps(lines_item(part))
        if len(data) > budget:
            if stop - start > 1:
                step = max(1, (stop - start) // 2)
                continue
            stand_in = too_large_stand_in(run.event(start), len(data), max_size)
            data = b"[%s]" % event_to_json(stand_in)
        out.append((data, stop - start, part.last_offset))
        start = stop
    return out


def too_large_stand_in(event: Event, size: int, limit: int) -> Event:
    """The ``error`` event sent at ``event``'s offset when it is too large for the hub:
    the hub's copy stays dense and says what it lacks (the run's own store has it)."""
    message = (
        f"event {event.offset} ({event.type.value}, {size} bytes) is larger than the hub "
        f"takes in one message ({limit} bytes); the run's own store has it"
    )
    return Event(
        EventType.ERROR,
        Error(message, "event_too_large", {"offset": event.offset, "type": event.type.value}),
        event.session,
        event.offset,
        event.id,
        event.ts,
    )


@final
@attrs.frozen
class UplinkOptions:
    """How ``tstream run --hub`` publishes its session.

    Attributes:
        hub: the hubs' addresses, tried in turn (hubs sharing one store).
        token: a bearer token with the ``publish`` scope.
        flush_timeout: seconds the end of the run waits for the hub to have everything.
        notices: ``auto`` (problems always, link lost/back only when stderr is a
            terminal), ``always`` or ``never``.
    """

    hub: tuple[str, ...] = attrs.field(converter=check_hub_urls)
    token: str | None = None
    flush_timeout: float = DEFAULT_FLUSH_TIMEOUT
    notices: str = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "always", "never"))
    )

    def uplink(self, log: SessionLog, store: Store | None) -> Uplink:
        """An uplink for the session of ``log``, printing its notices on stderr."""
        return Uplink(
            self.hub,
            log,
            store=store,
            token=self.token,
            flush_timeout=self.flush_timeout,
            notify=None if self.notices == "never" else _print_notice,
            link_notices=self.notices == "always" or (self.notices == "auto" and _tty(2)),
        )


def _tty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _print_notice(text: str) -> None:
    write_all(2, (text + "\n").encode(errors="replace"))


class _LinkLost(Exception):
    """The connection is no longer usable; reconnect."""


class _Refused(Exception):
    """The hub will not take this session; stop."""


@final
class Uplink:
    """Publishes one session to a hub; run :meth:`run` beside the session.

    Args:
        hub: the hub's address (see :func:`check_hub_url`), or several (hubs sharing one
            store, see :func:`check_hub_urls`): a lost link is tried again with the next,
            and the publisher resumes there from the offset that hub acknowledges.
        log: the session's log.
        store: the store the session is recorded in, read when the log no longer holds
            what the hub lacks (None: events the log dropped cannot be sent).
        token: a bearer token with the ``publish`` scope.
        notify: called with a one-line notice (``tstream: hub …: …``) when the hub
            refuses the session or events are given up; None for silence.
        link_notices: also notify when the link is lost and when it is back.
        backoff: the waits between connection attempts.
        flush_timeout: how long :meth:`finish` waits by default, in seconds.
        connect_timeout: how long opening a connection may take, in seconds.
        ack_timeout: how long the hub may take to acknowledge a message, in seconds.
        rng: the jitter's randomness.

    Attributes:
        acked: the hub's last offset, as it last reported it (-1: none yet).
        refused: why the hub refused the session (None while it has not).
        connected: whether a connection is open now.
    """

    def __init__(
        self,
        hub: str | Sequence[str],
        log: SessionLog,
        *,
        store: Store | None = None,
        token: str | None = None,
        notify: Callable[[str], None] | None = None,
        link_notices: bool = True,
        backoff: Backoff = Backoff(),
        flush_timeout: float = DEFAULT_FLUSH_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        ack_timeout: float = ACK_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        self.hubs = check_hub_urls(hub)
        self._hub_index = 0
        self.log = log
        self.store = store
        self.token = token
        self.notify = notify
        self.link_notices = link_notices
        self.backoff = backoff
        self.flush_timeout = flush_timeout
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.rng = rng or random.Random()
        self.acked = -1
        self.refused: str | None = None
        self.connected = False
        self.connections = 0
        self._ever_connected = False
        self._sent_since_connect = False
        self._store_checked: set[str] = set()
        self._lost_noticed = False
        self._done = trio.Event()
        self._hurry = trio.Event()
        self._progress = trio.Event()
        self._scope = trio.CancelScope()
        self._flush_scope = trio.CancelScope()
        self._cut_short = False

    @property
    def hub(self) -> str:
        """The address of the hub in use (or tried next)."""
        return self.hubs[self._hub_index]

    @property
    def delivered(self) -> bool:
        """Whether the hub has every event of the ended session."""
        return self.log.closed and self.acked >= self.log.last_offset

    async def wait_acked(self, offset: int) -> None:
        """Return once the hub has acknowledged every event up to ``offset`` (or the
        uplink has stopped)."""
        while self.acked < offset and not self._done.is_set():
            await self._progress.wait()

    def _note_ack(self, last_offset: int) -> None:
        self.acked = last_offset
        self._progress.set()
        self._progress = trio.Event()

    def _say(self, text: str) -> None:
        if self.notify is not None:
            self.notify(f"tstream: hub {self.hub}: {text}")

    async def run(self) -> None:
        """Publish the session until the hub has all of it or refuses it, or until
        :meth:`finish` gives up.

        Never raises for anything the hub does; cancel it to stop early.
        """
        try:
            with self._scope:
                await self._keep_publishing()
        finally:
            self.connected = False
            self._done.set()
            self._progress.set()

    async def _keep_publishing(self) -> None:
        failures = 0
        while True:
            try:
                await self._connection()
                return
            except _Refused as exc:
                self.refused = str(exc)
                self._say(f"{exc}; session {self.log.session_id} is not published there")
                return
            except _LinkLost as exc:
                self.connected = False
                if self._sent_since_connect:
                    failures = 0
                failures += 1
                self._lost(str(exc))
            if len(self.hubs) > 1:
                # The next hub at once; a wait only once every hub has been tried.
                self._hub_index = (self._hub_index + 1) % len(self.hubs)
                if failures % len(self.hubs):
                    continue
            rounds = max(1, failures // len(self.hubs))
            with trio.move_on_after(self.backoff.delay(rounds, self.rng)):
                await self._hurry.wait()

    async def finish(self, timeout: float | None = None) -> bool:
        """The session has ended: give the uplink ``timeout`` seconds (default:
        ``flush_timeout``) to deliver the rest, retrying at once if it was waiting to
        reconnect, then stop it. Notifies when it could not deliver everything.

        Returns:
            Whether the hub has every event.
        """
        if timeout is None:
            timeout = self.flush_timeout
        self._hurry.set()
        with self._flush_scope:
            self._flush_scope.deadline = trio.current_time() + timeout
            await self._done.wait()
        self._scope.cancel()
        if self.delivered:
            return True
        if self.refused is None:
            first, last = self.acked + 1, self.log.last_offset
            when = "when interrupted" if self._cut_short else f"after {timeout:g}s"
            self._say(
                f"gave up {when}: events {first} to {last} of session "
                f"{self.log.session_id} were not sent"
            )
        return False

    def cut_short(self) -> None:
        """End :meth:`finish` now (the user interrupted the end of the run)."""
        self._cut_short = True
        self._flush_scope.cancel()

    def _lost(self, reason: str) -> None:
        """Note an outage, once however many attempts it lasts."""
        if self._lost_noticed:
            return
        self._lost_noticed = True
        if not self.link_notices:
            return
        if self._ever_connected:
            self._say(f"link lost ({reason}); the run goes on and sends the rest when it is back")
        else:
            self._say(f"unreachable ({reason}); the run goes on and publishes when it answers")

    async def _connection(self) -> None:
        """One connection, from opening to delivering everything.

        Raises:
            _LinkLost, _Refused.
        """
        self._sent_since_connect = False
        with trio.CancelScope(deadline=trio.current_time() + self.connect_timeout) as scope:
            if self.hub not in self._store_checked:
                await self._check_store()
            try:
                async with open_publisher(self.hub, self.log.session_id, token=self.token) as pub:
                    scope.deadline = math.inf
                    self._linked(pub)
                    await self._send_all(pub)
                    return
            except HubClientError as exc:
                reason = REFUSALS.get(exc.code)
                if reason is not None:
                    raise _Refused(f"{reason} ({exc})") from None
                raise _LinkLost(str(exc)) from None
            except (OSError, ConnectionClosed, HandshakeError, trio.BrokenResourceError) as exc:
                raise _LinkLost(_describe(exc)) from None
            except (KeyError, TypeError, ValueError) as exc:
                raise _LinkLost(f"unexpected answer: {exc!r}") from None
        if scope.cancelled_caught:
            raise _LinkLost(f"no answer within {self.connect_timeout:g}s")

    async def _check_store(self) -> None:
        """Refuse a hub that records into this session's own store: the session is there
        already, and two recorders of one session in one store would collide."""
        if self.store is None:
            self._store_checked.add(self.hub)
            return
        try:
            epoch = await hub_epoch(self.hub)
        except (OSError, HubClientError) as exc:
            raise _LinkLost(_describe(exc)) from None
        self._store_checked.add(self.hub)
        if epoch == self.store.epoch:
            raise _Refused(
                "refused (the hub records into this run's own store, where the session is "
                "already; give the hub a store of its own, or run without --hub)"
            )

    def _linked(self, pub: HubPublisher) -> None:
        """Check the hub's copy against the session and note the link."""
        self.connections += 1
        if not self._ever_connected and pub.last_offset >= 0:
            raise _Refused(
                f"refused (the hub already has a stream {pub.stream_id} with "
                f"{pub.last_offset + 1} events that are not this run's; choose another --id)"
            )
        if pub.last_offset > self.log.last_offset:
            raise _Refused(
                f"refused (the hub's stream {pub.stream_id} has more events than this session)"
            )
        if self._lost_noticed and self.link_notices:
            if self._ever_connected:
                self._say(f"link back; resuming after offset {pub.last_offset}")
            else:
                self._say("reached; publishing the session from its start")
        self._lost_noticed = False
        self._ever_connected = True
        self.connected = True
        self._note_ack(pub.last_offset)

    async def _send(self, pub: HubPublisher, parts: list[bytes]) -> None:
        if pub.columns:
            await pub.send_runs(parts)
        else:
            await pub.send_encoded(parts)

    async def _send_all(self, pub: HubPublisher) -> None:
        """Send what follows the hub's last offset until the ended session is delivered,
        with up to :data:`WINDOW` messages awaiting their answer (the hub answers in order),
        so that neither side waits for the other's round trip."""
        sent = pub.last_offset
        ready: deque[tuple[int, list[bytes]]] = deque()
        in_flight: deque[int] = deque()
        while in_flight or not self.delivered:
            while len(in_flight) < WINDOW:
                if not ready:
                    if self.log.last_offset <= sent and (in_flight or self.log.closed):
                        break
                    ready.extend(self._messages(await self._events_after(sent), pub))
                    if not ready:
                        break
                last, parts = ready.popleft()
                await self._send(pub, parts)
                in_flight.append(last)
                sent = last
            if not in_flight:
                continue
            expected = in_flight.popleft()
            last, limited = await self._receive_ack(pub)
            if last == expected:
                continue
            # The hub's copy is not where the messages in flight assumed (one was refused
            # as a gap or for the rate): let them be answered, then resume after its end.
            while in_flight:
                in_flight.popleft()
                _, again = await self._receive_ack(pub)
                limited = limited or again
            ready.clear()
            sent = self.acked
            if limited:
                await trio.sleep(RATE_LIMIT_WAIT)

    def _messages(
        self, events: Sequence[Event], pub: HubPublisher
    ) -> list[tuple[int, list[bytes]]]:
        """``events`` as publish messages, each with the offset of its last event."""
        if not events:
            return []
        if pub.columns:
            return column_messages(events, pub.max_message_size, pub.max_batch)
        parts = encode(events)
        out = []
        first = events[0].offset
        for message in messages(parts, pub.max_message_size, pub.max_batch):
            if len(message) == 1 and len(message[0]) + MESSAGE_MARGIN > pub.max_message_size:
                event = events[first - events[0].offset]
                stand_in = too_large_stand_in(event, len(message[0]), pub.max_message_size)
                message = [event_to_json(stand_in)]
            first += len(message)
            out.append((first - 1, message))
        return out

    async def _receive_ack(self, pub: HubPublisher) -> tuple[int, bool]:
        """The hub's answer to the oldest message in flight: its last offset after it, and
        whether the message was refused for the rate."""
        with trio.move_on_after(self.ack_timeout):
            try:
                last = (await pub.receive_ack()).last_offset
            except HubClientError as exc:
                if exc.code not in ("offset_gap", "rate_limited"):
                    raise
                self._note_ack(exc.last_offset)
                return exc.last_offset, exc.code == "rate_limited"
            self._note_ack(last)
            self._sent_since_connect = True
            return last, False
        raise _LinkLost(f"no acknowledgement within {self.ack_timeout:g}s")

    async def _events_after(self, after: int) -> Sequence[Event]:
        """The events after ``after``, from the log's memory or else the store; waits
        for at least one unless the log has closed."""
        await self.log.wait_after(after)
        since = self.log.since(after)
        if since.complete:
            return since.events
        if self.store is None:
            raise _Refused(
                f"events after offset {after} are no longer in memory and the session is "
                "not recorded; the hub's copy stops there"
            )
        while True:
            try:
                events: Sequence[Event]
                if isinstance(self.store, RunStore):
                    # Lines as the store's chunks hold them: sent from their columns.
                    events = await self.store.read_runs(self.log.session_id, after, STORE_RUNS_PAGE)
                else:
                    events = await self.store.read(
                        self.log.session_id, HistoryQuery(after=after, limit=STORE_PAGE)
                    )
            except StoreError as exc:
                raise _Refused(f"cannot read the session's store: {exc}") from None
            if events and events[0].offset == after + 1:
                return events
            if events:
                # Recorders write in order: what is missing before was dropped for good.
                raise _Refused(
                    f"events {after + 1} to {events[0].offset - 1} are no longer held (the "
                    "store keeps less than the session); the hub's copy stops there"
                )
            # The session's recorder has not written them yet.
            await trio.sleep(RECORD_WAIT)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed) and exc.reason is not None:
        reason = exc.reason
        if reason.code == 1006:
            return "connection dropped"
        text = f"connection closed, code {reason.code}"
        return f"{text}: {reason.reason}" if reason.reason else text
    # The system's reason (Connection refused…) is in the chain of causes, behind the
    # HTTP client's and trio's "all attempts to connect … failed".
    cause: BaseException | None = exc
    for _ in range(6):
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        if isinstance(cause, BaseExceptionGroup):
            reasons = {
                e.strerror for e in cause.exceptions if isinstance(e, OSError) and e.strerror
            }
            if len(reasons) == 1:
                return reasons.pop()
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
