"""Long polling over a real hub."""

from __future__ import annotations

import httpx
import trio

from .conftest import create, output


async def test_poll_returns_events_after_the_cursor_at_once(http: httpx.AsyncClient) -> None:
    await create(http, "s", 3)
    body = (await http.get("/api/streams/s/poll?after=0")).json()
    assert [e["offset"] for e in body["events"]] == [1, 2]
    assert body["cursor"] == 2 and body["recovered"] is True and body["ended"] is False


async def test_poll_waits_for_the_next_event(http: httpx.AsyncClient) -> None:
    await create(http, "s", 1)
    async with trio.open_nursery() as nursery:
        answers = []

        async def poll() -> None:
            answers.append((await http.get("/api/streams/s/poll?after=0&timeout=5")).json())

        nursery.start_soon(poll)
        await trio.sleep(0.05)
        assert not answers
        await http.post("/api/streams/s/events", json=output("late"))
    assert [e["data"]["text"] for e in answers[0]["events"]] == ["late"]
    assert answers[0]["cursor"] == 1


async def test_poll_timeout_returns_an_empty_list_and_the_same_cursor(
    http: httpx.AsyncClient,
) -> None:
    await create(http, "s", 2)
    body = (await http.get("/api/streams/s/poll?after=1&timeout=0.05")).json()
    assert body["events"] == [] and body["cursor"] == 1


async def test_filtered_poll_moves_the_cursor_past_skipped_events(
    http: httpx.AsyncClient,
) -> None:
    await create(http, "s", 3)
    await http.post("/api/streams/s/events", json={"type": "status", "data": {"status": "s"}})
    body = (await http.get("/api/streams/s/poll?after=-1&eventTypes=status")).json()
    assert [e["offset"] for e in body["events"]] == [3]
    body = (await http.get("/api/streams/s/poll?after=3&eventTypes=status&timeout=0")).json()
    assert body["events"] == [] and body["cursor"] == 3


async def test_poll_of_an_ended_stream_says_ended(http: httpx.AsyncClient) -> None:
    await create(http, "s", 1)
    await http.post(
        "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
    )
    body = (await http.get("/api/streams/s/poll?after=0&timeout=5")).json()
    assert [e["type"] for e in body["events"]] == ["session_ended"]
    body = (await http.get("/api/streams/s/poll?after=1&timeout=5")).json()
    assert body["events"] == [] and body["ended"] is True


async def test_poll_from_a_foreign_cursor_is_not_recovered(http: httpx.AsyncClient) -> None:
    await create(http, "s", 2)
    body = (await http.get("/api/streams/s/poll?after=50")).json()
    assert body["recovered"] is False and [e["offset"] for e in body["events"]] == [0, 1]


async def test_bad_poll_parameters(http: httpx.AsyncClient) -> None:
    await create(http, "s")
    for query in ("after=x", "timeout=-1", "timeout=1000", "limit=0", "sources=tty"):
        answer = await http.get(f"/api/streams/s/poll?{query}")
        assert answer.status_code == 400, query
        assert answer.json()["error"]["message"]
