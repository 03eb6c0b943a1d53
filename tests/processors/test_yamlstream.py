"""YAML streams: one event per document, errors that resume at the next ---."""

from trio_stream.events import EventType, Json, Status
from trio_stream.lines import Line
from trio_stream.log import SessionLog
from trio_stream.processors.base import Completion, LineBatch
from trio_stream.processors.yamlstream import YamlStreamProcessor
from trio_stream.publisher import Publisher


def batch(text, first_line=0, source="stdout"):
    return LineBatch(source, first_line, [Line(t) for t in text.split("\n")], 1.0)


async def run(processor, *batches):
    log = SessionLog("s", record_backlog=None)
    publisher = Publisher(log)
    for item in batches:
        await processor.process(item, publisher)
    await processor.on_complete(Completion(0), publisher)
    return log.since(-1).events


async def test_documents_are_published_as_they_complete():
    processor = YamlStreamProcessor()
    log = SessionLog("s", record_backlog=None)
    publisher = Publisher(log)
    await processor.process(batch("a: 1\nb: [x, y]"), publisher)
    assert log.since(-1).events == []
    await processor.process(batch("---\nc: 3", first_line=2), publisher)
    assert [e.data for e in log.since(-1).events] == [
        Json({"a": 1, "b": ["x", "y"]}, "yaml", line=0)
    ]
    await processor.on_complete(Completion(0), publisher)
    assert log.since(0).events[0].data == Json({"c": 3}, "yaml", line=2)


async def test_a_malformed_document_is_an_error_and_parsing_resumes():
    text = "ok: 1\n---\nbad: [1, 2\nnext: 3\n---\nfine: true"
    processor = YamlStreamProcessor()
    events = await run(processor, batch(text))
    assert [e.type for e in events] == [EventType.JSON, EventType.ERROR, EventType.JSON]
    error = events[1].data
    assert error.code == "yaml"
    assert error.context["line"] == 3
    assert "output line 2" in error.message and "line 3, column 5" in error.message
    assert events[2].data.document == {"fine": True}
    assert processor.counts.unparsed == 1


async def test_comment_only_and_empty_documents_give_nothing():
    events = await run(
        YamlStreamProcessor(), batch("# just a header\n---\n\n---\n# c\n---\nx: 1\n...")
    )
    assert [e.data.document for e in events] == [{"x": 1}]


async def test_content_on_the_marker_line_and_end_markers():
    events = await run(YamlStreamProcessor(), batch("--- plain scalar\n...\n--- |\n  text\n"))
    assert [e.data.document for e in events] == ["plain scalar", "text\n"]


async def test_safe_loading_builds_no_objects_and_dates_become_text():
    events = await run(
        YamlStreamProcessor(),
        batch("when: 2026-11-23\n---\n!!python/object:os.system {}\n---\n{1: a, null: b}"),
    )
    assert events[0].data.document == {"when": "2026-11-23"}
    assert events[1].type is EventType.ERROR
    assert events[2].data.document == {"1": "a", "null": "b"}


async def test_a_document_may_name_a_typed_event():
    events = await run(YamlStreamProcessor(), batch("type: status\nstatus: green\nkind: health"))
    assert events[0].data == Status("green", "health")


async def test_an_over_long_document_is_skipped_with_an_error():
    processor = YamlStreamProcessor(max_document=20)
    events = await run(processor, batch("a: " + "x" * 50 + "\n---\nb: 2"))
    assert [e.type for e in events] == [EventType.ERROR, EventType.JSON]
    assert "longer than 20" in events[0].data.message


async def test_sources_keep_their_own_documents():
    processor = YamlStreamProcessor(sources=("stdout", "stderr"))
    events = await run(
        processor,
        batch("a: 1", source="stdout"),
        batch("b: 2", source="stderr", first_line=1),
        batch("---", source="stdout", first_line=2),
    )
    assert [(e.data.source, e.data.document) for e in events] == [
        ("stdout", {"a": 1}),
        ("stderr", {"b": 2}),
    ]


async def test_alias_bombs_and_self_reference_are_errors_not_hangs():
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in "bcdefg":
        previous = chr(ord(level) - 1)
        bomb.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 10) + "]")
    processor = YamlStreamProcessor(max_values=100_000)
    events = await run(processor, batch("\n".join(bomb) + "\n---\nloop: &l [*l]\n---\nok: 1"))
    assert [e.type for e in events] == [EventType.ERROR, EventType.ERROR, EventType.JSON]
    assert "holds more than 100000 values" in events[0].data.message
    assert "nested deeper than 200 levels" in events[1].data.message
