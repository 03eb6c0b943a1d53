import io

import orjson
import pytest

from trio_stream.events import EventType, SessionEnded, SessionStarted, event_to_json, make_event
from trio_stream.store import SessionExistsError, SessionStatus, UnknownSessionError
from trio_stream.store.file import SessionFileError, export_session, import_session

from .conftest import lines


def session_events(sid="s", exit_status=0, signal=None):
    started = make_event(
        EventType.SESSION_STARTED,
        SessionStarted(["make"], cwd="/src", hostname="box"),
        session=sid,
        offset=0,
        ts=100.0,
    )
    ended = make_event(
        EventType.SESSION_ENDED,
        SessionEnded(exit_status, signal=signal),
        session=sid,
        offset=3,
        ts=104.0,
    )
    return [started, *lines(sid, 1, ["a", "b"], ts=101.0), ended]


def as_file(events):
    return [event_to_json(e) + b"\n" for e in events]


async def test_export_then_import_gives_the_same_events_and_session(store):
    sent = session_events()
    info = await import_session(store, as_file(sent))
    assert (info.id, info.command, info.cwd, info.status) == (
        "s",
        ["make"],
        "/src",
        SessionStatus.COMPLETED,
    )
    assert (info.created, info.ended, info.exit_status, info.events) == (100.0, 104.0, 0, 4)
    out = io.BytesIO()
    assert await export_session(store, "s", out.write, batch=3) == 4
    assert out.getvalue().splitlines(keepends=True) == as_file(sent)


@pytest.mark.parametrize(
    ("exit_status", "signal", "status"),
    [(2, None, SessionStatus.FAILED), (137, 9, SessionStatus.KILLED)],
)
async def test_imported_status_follows_the_end_event(store, exit_status, signal, status):
    info = await import_session(store, as_file(session_events("x", exit_status, signal)))
    assert info.status is status


async def test_session_without_an_end_is_imported_as_interrupted(store):
    info = await import_session(store, as_file(session_events()[:-1]))
    assert info.status is SessionStatus.INTERRUPTED


async def test_import_under_another_id(store):
    await import_session(store, as_file(session_events()))
    with pytest.raises(SessionExistsError):
        await import_session(store, as_file(session_events()))
    info = await import_session(store, as_file(session_events()), session_id="copy")
    assert info.id == "copy"
    assert {e.session for e in await store.read("copy")} == {"copy"}


async def test_bad_line_is_named_and_nothing_is_kept(store):
    data = as_file(session_events())
    bad = orjson.loads(data[2])
    bad["data"]["line"] = "two"
    data[2] = orjson.dumps(bad)
    with pytest.raises(SessionFileError, match=r"line 3: data.line: expected int"):
        await import_session(store, data)
    with pytest.raises(UnknownSessionError):
        await store.get_session("s")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.__setitem__(1, b"{not json"), "line 2: event: malformed JSON"),
        (lambda d: d.__setitem__(2, d[1]), "line 3: offset: 1 does not follow 1"),
        (
            lambda d: d.__setitem__(1, d[1].replace(b'"session":"s"', b'"session":"t"')),
            "line 2: session: 't' differs from 's'",
        ),
        (
            lambda d: d.__setitem__(0, d[0].replace(b'"session":"s"', b'"session":"../x"')),
            "line 1: session: invalid session id",
        ),
    ],
)
async def test_inconsistent_files_are_refused(store, mutate, message):
    data = as_file(session_events())
    mutate(data)
    with pytest.raises(SessionFileError, match=message):
        await import_session(store, data)


async def test_empty_file_is_refused(store):
    with pytest.raises(SessionFileError, match="no events"):
        await import_session(store, [b"\n"])
