"""Filters and redaction: line transforms applied before anything is recorded."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_stream.events import EventType
from trio_stream.lines import Line
from trio_stream.log import SessionLog
from trio_stream.processors.base import Completion, LineBatch
from trio_stream.processors.filters import (
    LineFilter,
    Redactor,
    TypeFilter,
    TypeFiltered,
    parse_filter,
)
from trio_stream.processors.jsonlines import JsonLinesProcessor
from trio_stream.processors.patterns import PatternError
from trio_stream.publisher import Publisher


def lines(*texts):
    return [Line(t) for t in texts]


def test_drop_regex_leaves_out_matching_lines_and_counts_them():
    f = parse_filter("drop:regex=^DEBUG")
    assert isinstance(f, LineFilter)
    kept = f.apply("stdout", lines("DEBUG a", "INFO b", "DEBUG c", "WARN d"))
    assert [line.text for line in kept] == ["INFO b", "WARN d"]
    assert f.filtered == 2


def test_keep_regex_keeps_only_matching_lines():
    f = parse_filter("keep:regex=ERROR|WARN")
    kept = f.apply("stderr", lines("ok", "WARN x", "ERROR y"))
    assert [line.text for line in kept] == ["WARN x", "ERROR y"]


def test_a_batch_without_a_match_is_returned_as_is():
    given = lines("a", "b")
    assert parse_filter("drop:regex=zzz").apply("stdout", given) is given


def test_source_filters_select_whole_batches():
    keep = parse_filter("keep:source=stdout")
    drop = parse_filter("drop:source=stderr")
    batch = lines("x", "y")
    assert keep.apply("stdout", batch) == batch
    assert keep.apply("stderr", batch) == []
    assert drop.apply("stderr", batch) == []
    assert drop.apply("stdout", batch) == batch
    assert keep.filtered == 2


def test_type_filters_name_derived_types():
    drop = parse_filter("drop:type=reasoning,json")
    assert isinstance(drop, TypeFilter)
    assert drop.drop == {EventType.REASONING, EventType.JSON}
    keep = parse_filter("keep:type=command_started, command_completed")
    assert EventType.STATUS in keep.drop and EventType.COMMAND_STARTED not in keep.drop
    assert EventType.OUTPUT not in keep.drop


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("drop:regex=(", "invalid regex for filter 'drop:regex=('"),
        ("hide:regex=x", "invalid filter 'hide:regex=x'"),
        ("drop:colour=red", "invalid filter 'drop:colour=red'"),
        ("keep:source=stdin", "unknown source 'stdin'"),
        ("drop:type=output", "'output' is not a type a filter can select (lines are"),
        ("drop:type=session_ended", "'session_ended' is not a type a filter can select"),
        ("drop:type=", "no type given"),
    ],
)
def test_bad_filters_are_errors_naming_them(spec, message):
    with pytest.raises(PatternError) as caught:
        parse_filter(spec)
    assert message in str(caught.value)


def test_redaction_replaces_whole_matches_without_groups():
    r = Redactor([re.compile(r"ghp_[A-Za-z0-9]{8}")])
    out = r.apply("stdout", lines("token ghp_abcdEFGH here", "nothing", "ghp_12345678"))
    assert [line.text for line in out] == ["token [REDACTED] here", "nothing", "[REDACTED]"]
    assert r.redacted == 2


def test_redaction_with_groups_hides_only_the_groups():
    r = Redactor([re.compile(r"(?:password|token)=(\S+)"), re.compile(r"user (\w+) pin (\d+)")])
    assert r.redact("login token=s3cr3t ok") == "login token=[REDACTED] ok"
    assert r.redact("user bob pin 1234") == "user [REDACTED] pin [REDACTED]"
    assert r.redact("password= none") == "password= none"


def test_redaction_keeps_untouched_lines_and_line_endings():
    r = Redactor([re.compile("secret")])
    first = Line("plain", "\r\n")
    out = r.apply("stdout", [first, Line("a secret", "\r")])
    assert out[0] is first
    assert out[1] == Line("a [REDACTED]", "\r")


def test_a_redacted_line_drops_its_raw_bytes():
    r = Redactor([re.compile("key=\\w+")])
    line = Line("key=abc \ufffd", "\n", False, b"key=abc \xff\n")
    (out,) = r.apply("stdout", [line])
    assert out.raw is None and "abc" not in out.text


async def test_type_filtered_processors_publish_only_what_is_kept():
    processor = TypeFiltered(JsonLinesProcessor(), {EventType.JSON})
    log = SessionLog("s", record_backlog=None)
    publisher = Publisher(log)
    texts = ['{"a": 1}', '{"type": "status", "status": "ok"}']
    await processor.process(LineBatch("stdout", 0, lines(*texts), 1.0), publisher)
    await processor.on_complete(Completion(0), publisher)
    assert [e.type for e in log.since(-1).events] == [EventType.STATUS]
    assert processor.name == "jsonl"
    assert processor.session_details()["jsonl"]["documents"] == 2


@given(
    texts=st.lists(st.text(alphabet="ab -=\t", max_size=12), min_size=1, max_size=8),
    where=st.data(),
)
def test_no_secret_survives_redaction_wherever_it_is_in_the_batch(texts, where):
    secret = "sk-a1b2c3d4"
    index = where.draw(st.integers(0, len(texts) - 1))
    cut = where.draw(st.integers(0, len(texts[index])))
    texts[index] = texts[index][:cut] + secret + texts[index][cut:]
    for pattern in (r"sk-[a-z0-9]{8}", r"^.*sk-[a-z0-9]+", r"(sk-)([a-z0-9]+)"):
        out = Redactor([re.compile(pattern)]).apply("stdout", lines(*texts))
        assert len(out) == len(texts)
        assert not any("a1b2c3d4" in line.text for line in out)
