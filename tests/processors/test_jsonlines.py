"""JSON lines: documents become JSON or typed events; anything else stays output."""

from trio_stream.events import Command, EventType, Json, Status, VariableUpdate, event_to_json
from trio_stream.lines import Line
from trio_stream.log import SessionLog
from trio_stream.processors.base import Completion, LineBatch
from trio_stream.processors.jsonlines import JsonLinesProcessor
from trio_stream.publisher import Publisher


def batch(texts, source="stdout", first_line=0, ts=100.0):
    return LineBatch(source, first_line, [Line(t) for t in texts], ts)


async def run(processor, *batches):
    log = SessionLog("s", record_backlog=None)
    publisher = Publisher(log)
    for item in batches:
        await processor.process(item, publisher)
    await processor.on_complete(Completion(0), publisher)
    return log.since(-1).events


async def test_each_json_line_becomes_a_json_event_with_its_line_and_read_time():
    events = await run(JsonLinesProcessor(), batch(['{"a": 1}', "[1, 2]"], first_line=7, ts=5.5))
    assert [e.data for e in events] == [Json({"a": 1}, line=7), Json([1, 2], line=8)]
    assert {e.ts for e in events} == {5.5}
    assert [e.offset for e in events] == [0, 1]


async def test_lines_that_are_not_documents_are_counted_never_fatal():
    processor = JsonLinesProcessor()
    events = await run(
        processor, batch(["plain text", "{broken", "42", "", '  {"ok": true}', '"str"'])
    )
    assert [e.data.document for e in events] == [{"ok": True}]
    assert processor.counts.as_dict() == {"documents": 1, "typed": 0, "invalid": 0, "unparsed": 4}


async def test_a_shape_naming_a_type_becomes_that_event_in_order():
    events = await run(
        JsonLinesProcessor(),
        batch(
            [
                '{"n": 1}',
                '{"type": "status", "status": "deploying", "message": "3 of 5"}',
                '{"n": 2}',
                '{"type": "command_completed", "name": "migrate", "duration": 1.5}',
                '{"type": "variable_update", "name": "progress", "value": 0.4}',
            ]
        ),
    )
    assert [e.type for e in events] == [
        EventType.JSON,
        EventType.STATUS,
        EventType.JSON,
        EventType.COMMAND_COMPLETED,
        EventType.VARIABLE_UPDATE,
    ]
    assert events[1].data == Status("deploying", "status", "3 of 5")
    assert events[3].data == Command("migrate", duration=1.5)
    assert events[4].data == VariableUpdate("progress", 0.4)
    assert [e.offset for e in events] == list(range(5))


async def test_a_shape_that_does_not_fit_its_type_stays_json_and_is_counted():
    processor = JsonLinesProcessor()
    events = await run(
        processor,
        batch(['{"type": "error", "msg": "no message field"}', '{"type": "request", "id": 3}']),
    )
    assert [e.type for e in events] == [EventType.JSON, EventType.JSON]
    assert processor.counts.invalid == 1


async def test_a_child_cannot_forge_the_sessions_own_events():
    events = await run(
        JsonLinesProcessor(),
        batch(['{"type": "session_ended", "exit_status": 0}', '{"type": "output", "text": "x"}']),
    )
    assert [e.type for e in events] == [EventType.JSON, EventType.JSON]


async def test_typed_shapes_can_be_turned_off():
    events = await run(
        JsonLinesProcessor(typed=False), batch(['{"type": "status", "status": "x"}'])
    )
    assert events[0].type is EventType.JSON


async def test_stderr_is_left_alone_by_default():
    events = await run(JsonLinesProcessor(), batch(['{"a": 1}'], source="stderr"))
    assert events == []
    events = await run(
        JsonLinesProcessor(sources=("stderr",)), batch(['{"a": 1}'], source="stderr")
    )
    assert events[0].data == Json({"a": 1}, source="stderr", line=0)


async def test_pieces_of_a_cut_line_are_joined_before_parsing():
    pieces = LineBatch(
        "stdout",
        3,
        [Line('{"long": "ab', "", True), Line("cd", "", True), Line('ef"}')],
        1.0,
    )
    events = await run(JsonLinesProcessor(), pieces)
    assert [e.data for e in events] == [Json({"long": "abcdef"}, line=3)]


async def test_a_document_over_the_limit_is_counted_not_held():
    processor = JsonLinesProcessor(max_document=8)
    pieces = LineBatch(
        "stdout",
        0,
        [Line('{"a": "12', "", True), Line("345678", "", True), Line('"}'), Line("[1]")],
        1.0,
    )
    events = await run(processor, pieces)
    assert [e.data.document for e in events] == [[1]]
    assert processor.counts.unparsed == 1


async def test_session_details_report_the_counts():
    processor = JsonLinesProcessor()
    await run(processor, batch(['{"a": 1}', "text"]))
    assert processor.session_details() == {
        "jsonl": {"documents": 1, "typed": 0, "invalid": 0, "unparsed": 1}
    }


async def test_on_error_forgets_held_pieces_and_publishes_nothing():
    processor = JsonLinesProcessor()
    log = SessionLog("s", record_backlog=None)
    await processor.process(LineBatch("stdout", 0, [Line('{"a', "", True)], 1.0), Publisher(log))
    await processor.on_error(RuntimeError("channel full"), Publisher(log))
    await processor.process(batch(['"x"}'], first_line=1), Publisher(log))
    assert log.since(-1).events == []


async def test_a_document_over_the_nesting_limit_gives_an_error_event_not_its_document():
    processor = JsonLinesProcessor()
    deep = "[" * 201 + "]" * 201
    limit = "[" * 200 + "]" * 200
    events = await run(processor, batch([deep, limit], first_line=4))
    assert [e.type for e in events] == [EventType.ERROR, EventType.JSON]
    error = events[0].data
    assert error.code == "document_too_large"
    assert error.message.startswith("output line 5: JSON document nested deeper than 200 levels")
    assert error.context == {"line": 4}
    assert processor.counts.as_dict() == {"documents": 1, "typed": 0, "invalid": 0, "unparsed": 1}
    for event in events:
        event_to_json(event)


async def test_a_document_with_too_many_values_gives_an_error_event():
    processor = JsonLinesProcessor()
    events = await run(processor, batch(["[" + "0," * 1_000_000 + "0]"]))
    assert [e.type for e in events] == [EventType.ERROR]
    assert "more than 1000000 values" in events[0].data.message


async def test_a_malformed_line_among_documents_is_counted_and_the_others_kept():
    processor = JsonLinesProcessor()
    texts = ['{"a": 1}', "{broken", '{"type": "status", "status": "ok"}', "[2]"]
    events = await run(processor, batch(texts, first_line=3))
    assert [e.data for e in events] == [Json({"a": 1}, line=3), Status("ok"), Json([2], line=6)]
    assert processor.counts.as_dict() == {"documents": 3, "typed": 1, "invalid": 0, "unparsed": 1}


async def test_batches_after_one_with_plain_lines_are_parsed_the_same():
    processor = JsonLinesProcessor()
    first = batch(['{"a": 1}', "42", "", "  [1]"], first_line=0)
    second = batch(['{"b": 2}', '{"type": "status", "status": "ok"}'], first_line=4)
    events = await run(processor, first, second)
    assert [e.data for e in events] == [
        Json({"a": 1}, line=0),
        Json([1], line=3),
        Json({"b": 2}, line=4),
        Status("ok"),
    ]
    assert processor.counts.as_dict() == {"documents": 4, "typed": 1, "invalid": 0, "unparsed": 1}


async def test_long_documents_on_the_fast_path_and_a_deep_one_after_them():
    processor = JsonLinesProcessor()
    # Long lines with few brackets take the fast path; a deep one sends its batch to the
    # careful one, which refuses that line alone.
    long_status = '{"type": "status", "status": "up", "message": "' + "x" * 500 + '"}'
    long_list = "[" + ",".join(["[1]"] * 150) + "]"
    first = await run(processor, batch([long_status, long_list]))
    assert [e.type for e in first] == [EventType.STATUS, EventType.JSON]
    deep = '[{"a":' * 100 + "[]" + "}]" * 100
    second = await run(processor, batch([long_status, deep, long_list], first_line=2))
    assert [e.type for e in second] == [EventType.STATUS, EventType.ERROR, EventType.JSON]
    assert second[1].data.context == {"line": 3}
    assert processor.counts.as_dict() == {"documents": 4, "typed": 2, "invalid": 0, "unparsed": 1}


async def test_a_deep_document_is_refused_wherever_it_stands_in_a_long_batch():
    # Openers are counted a few dozen texts at a time: the deep one is found in any group,
    # among texts that are not ASCII, and a text holding a line break is counted whole.
    wide = '{"note": "caf\u00e9 \u2014 ' + "x" * 600 + '", "list": [[1], [2]]}'
    deep = '{"a": "\u00e9", "b": ' + "[" * 201 + "]" * 201 + "}"
    broken_deep = "[" * 101 + "\n" + "[" * 100 + "]" * 201
    cases = [([wide] * 150 + [deep] + [wide] * 20, 150), ([wide] * 3 + [broken_deep], 3)]
    for texts, refused_line in cases:
        processor = JsonLinesProcessor()
        events = await run(processor, batch(texts))
        assert len(events) == len(texts)
        refused = [e.data.context["line"] for e in events if e.type is EventType.ERROR]
        assert refused == [refused_line]
        assert processor.counts.unparsed == 1
