"""Named patterns: parsing, validation, events, and the batch search's per-line meaning."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_stream.events import Custom, Error, EventType, Match, Reasoning, Status
from trio_stream.lines import Line
from trio_stream.log import SessionLog
from trio_stream.processors.base import LineBatch
from trio_stream.processors.patterns import (
    JoinedText,
    LineLocator,
    PatternError,
    PatternMatcher,
    make_pattern,
    parse_match,
)
from trio_stream.publisher import Publisher


def batch(texts, source="stdout", first_line=0):
    return LineBatch(source, first_line, [Line(t) for t in texts], 2.0)


def test_a_plain_pattern_is_a_match_event_without_level():
    pattern = parse_match("error=^ERROR: (?P<message>.*)")
    assert (pattern.name, pattern.type, pattern.level) == ("error", EventType.MATCH, None)
    assert pattern.regex.pattern == "^ERROR: (?P<message>.*)"


def test_type_and_level_are_read_and_the_regex_may_hold_equals_signs():
    pattern = parse_match("oom:error@critical=a=b")
    assert (pattern.name, pattern.type, pattern.level, pattern.regex.pattern) == (
        "oom",
        EventType.ERROR,
        "critical",
        "a=b",
    )
    assert parse_match("slow@warning=x").level == "warning"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("noequals", "invalid pattern 'noequals'"),
        ("=^x", "invalid pattern '=^x'"),
        ("bad=(unclosed", "invalid regex for pattern 'bad' '(unclosed'"),
        ("empty=", "empty regex for pattern 'empty'"),
        ("x:output=y", "pattern 'x': unknown event type 'output'"),
        ("x@loud=y", "pattern 'x': unknown level 'loud'"),
    ],
)
def test_bad_patterns_are_errors_naming_them(spec, message):
    with pytest.raises(PatternError) as caught:
        parse_match(spec)
    assert str(caught.value).startswith(message)


def test_two_patterns_with_one_name_are_refused():
    with pytest.raises(PatternError, match="two patterns are named 'a'"):
        PatternMatcher([parse_match("a=x"), parse_match("a=y")])


async def test_matches_are_published_in_line_order_with_groups():
    matcher = PatternMatcher(
        [parse_match("warn@warning=^WARN (\\w+)"), parse_match("err=^ERROR: (?P<message>.*)")]
    )
    log = SessionLog("s", record_backlog=None)
    texts = ["ERROR: disk full", "fine", "WARN slow", "ERROR: again"]
    await matcher.process(batch(texts, "stderr", first_line=10), Publisher(log))
    events = log.since(-1).events
    assert [e.data for e in events] == [
        Match("err", {"message": "disk full"}, "ERROR: disk full", "stderr", 10),
        Match("warn", {"1": "slow"}, "WARN slow", "stderr", 12, "warning"),
        Match("err", {"message": "again"}, "ERROR: again", "stderr", 13),
    ]
    assert {e.ts for e in events} == {2.0}
    assert matcher.matched == 3


def test_one_line_gives_one_event_per_pattern_in_pattern_order():
    matcher = PatternMatcher([parse_match("b=o"), parse_match("a=f")])
    assert [p.pattern for _, p in matcher.match_batch(batch(["foo"]))] == ["b", "a"]


def test_chosen_event_types_carry_the_groups():
    matcher = PatternMatcher(
        [
            make_pattern("oom", "Out of memory: (?P<message>.*)", "error", "critical"),
            make_pattern("phase", "^== (?P<status>\\w+) ==", "status"),
            make_pattern("plan", "^Plan: (?P<thought>.*)", "reasoning"),
            make_pattern("rps", "rps=(?P<rps>\\d+)", "custom"),
        ]
    )
    out = matcher.match_batch(
        batch(["Out of memory: kill 42", "== build ==", "Plan: test first", "rps=1200"])
    )
    assert [t for t, _ in out] == [
        EventType.ERROR,
        EventType.STATUS,
        EventType.REASONING,
        EventType.CUSTOM,
    ]
    assert out[0][1] == Error(
        "kill 42",
        "oom",
        {
            "groups": {"message": "kill 42"},
            "text": "Out of memory: kill 42",
            "source": "stdout",
            "line": 0,
            "level": "critical",
        },
    )
    assert out[1][1] == Status("build", "phase", "== build ==")
    assert isinstance(out[2][1], Reasoning) and out[2][1].thought == "test first"
    assert isinstance(out[3][1], Custom) and out[3][1].payload["groups"] == {"rps": "1200"}


def test_sources_can_be_limited():
    matcher = PatternMatcher([parse_match("a=x")], sources=("stdout",))
    assert matcher.match_batch(batch(["x"], "stderr")) == []


def test_anchors_hold_per_line_not_per_batch():
    matcher = PatternMatcher([parse_match(r"start=\Ago"), parse_match("end=done$")])
    out = matcher.match_batch(batch(["go on", "not go", "all done", "done twice?"]))
    assert [(p.pattern, p.line) for _, p in out] == [("start", 0), ("end", 2)]


def test_a_match_spanning_lines_in_the_batch_is_not_a_match():
    matcher = PatternMatcher([parse_match(r"span=a\sb")])
    assert matcher.match_batch(batch(["xa", "b", "a b"])) != []
    assert [p.line for _, p in matcher.match_batch(batch(["xa", "b", "a b"]))] == [2]


REGEXES = [
    r"ab",
    r"^a",
    r"b$",
    r"a\sb",
    r"[^c]+c",
    r"(?<!a)b",
    r"a(?=b)",
    r"\Aa",
    r"b\Z",
    r"\bab\b",
    r"a.*b",
    r"(?s)a.b",
    r"^$",
    r"x*",
]


@given(
    regex=st.sampled_from(REGEXES),
    texts=st.lists(st.text(alphabet="ab c", max_size=6), min_size=1, max_size=8),
)
def test_batch_search_finds_exactly_the_lines_a_per_line_search_finds(regex, texts):
    pattern = re.compile(regex)
    expected = [i for i, t in enumerate(texts) if pattern.search(t)]
    found = LineLocator(pattern).matching(texts, JoinedText(texts))
    assert [i for i, _ in found] == expected
