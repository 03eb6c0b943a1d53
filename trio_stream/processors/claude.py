"""The ``claude`` agent profile: Claude Code's ``--output-format stream-json`` as events.

Claude Code (``claude -p --output-format stream-json --verbose``) writes one JSON object
per line. The profile maps them as follows; every line is still recorded as ``OUTPUT``.

=====================================  =======================================================
line                                   events
=====================================  =======================================================
``system`` (``init`` and others)       ``STATUS`` (kind ``system``, status the subtype)
``assistant``, ``text`` block          ``REASONING`` (kind ``text``)
``assistant``, ``thinking`` block      ``REASONING`` (kind ``thinking``)
``assistant``, ``tool_use`` block      ``COMMAND_STARTED`` (name the tool, ``call_id`` its id)
``user``, ``tool_result`` block        ``COMMAND_COMPLETED``, or ``COMMAND_FAILED`` when
                                       ``is_error``; matched to its ``tool_use`` by id, with
                                       the tool's name, input and duration
``result``                             ``STATUS`` (kind ``result``), plus ``ERROR`` when it is
                                       an error; cost, turns and usage go to the session's
                                       ``SESSION_ENDED`` details (:meth:`session_details`)
anything else                          ``JSON``
=====================================  =======================================================

A tool's duration is the time between reading its ``tool_use`` line and its
``tool_result`` line. Tool calls still open when the stream ends are reported as
``COMMAND_FAILED``. Lines that are not JSON objects stay ``OUTPUT`` only, and are counted.
"""

from __future__ import annotations

import time
from typing import Any, Final, TypeAlias, final

import attrs
import orjson

from ..events import Command, EventType, Json, Payload, Reasoning, Source, Status
from ..events import Error as ErrorData
from ..limits import over_limits
from ..publisher import Publisher
from .base import Completion, LineBatch, publish_all
from .jsonlines import limit_error

_ACTION_KEYS: Final[dict[str, str]] = {
    "Bash": "command",
    "BashOutput": "bash_id",
    "Read": "file_path",
    "Write": "file_path",
    "Edit": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
    "Grep": "pattern",
    "Glob": "pattern",
    "WebFetch": "url",
    "WebSearch": "query",
    "Task": "description",
    "SlashCommand": "command",
}
_MAX_ACTION: Final = 200

# The events a message gives, in order.
_Events: TypeAlias = list[tuple[EventType, Payload]]


def tool_action(name: str, parameters: dict[str, Any]) -> str | None:
    """A one-line summary of a tool call (the command it runs, the file it reads…)."""
    key = _ACTION_KEYS.get(name, "description")
    value = parameters.get(key)
    if not isinstance(value, str) or not value:
        return None
    first = value.strip().splitlines()[0] if value.strip() else ""
    if len(first) > _MAX_ACTION:
        return first[: _MAX_ACTION - 1] + "…"
    return first


def result_text(content: Any) -> Any:
    """The text of a ``tool_result``'s content (a string, or a list of blocks)."""
    if isinstance(content, str) or content is None:
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type', 'block')}]")
        return "\n".join(parts)
    return content


@final
@attrs.frozen
class _Line:
    """Where a message was read: its source, line number and time."""

    source: Source
    number: int
    ts: float

    def json(self, value: Any) -> tuple[EventType, Payload]:
        """``value`` as a ``JSON`` event of this line."""
        return EventType.JSON, Json(value, "json", self.source, self.number)


@final
@attrs.define
class _OpenCall:
    name: str
    action: str | None
    parameters: dict[str, Any]
    started: float


@final
class ClaudeProfile:
    """Map Claude Code's stream-json lines onto typed events.

    Args:
        sources: the sources whose lines are read (stdout by default).
        name: the processor's name in drop counts and reports.
    """

    def __init__(self, *, sources: tuple[Source, ...] = ("stdout",), name: str = "claude") -> None:
        self.name = name
        self.sources = frozenset(sources)
        self.unparsed = 0
        self.details: dict[str, Any] = {}
        self._open: dict[str, _OpenCall] = {}

    def parse_batch(self, batch: LineBatch) -> list[tuple[EventType, Payload]]:
        """The events of one batch, in line order (no I/O)."""
        if batch.source not in self.sources:
            return []
        out: list[tuple[EventType, Payload]] = []
        for index, line in enumerate(batch.lines):
            text = line.text
            if not text.lstrip().startswith("{"):
                if text.strip():
                    self.unparsed += 1
                continue
            try:
                message = orjson.loads(text)
            except orjson.JSONDecodeError:
                self.unparsed += 1
                continue
            problem = over_limits(text, message)
            if problem is not None:
                self.unparsed += 1
                error = ErrorData(**limit_error(batch.first_line + index, problem))
                out.append((EventType.ERROR, error))
                continue
            self._message(message, _Line(batch.source, batch.first_line + index, batch.ts), out)
        return out

    def _message(self, message: dict[str, Any], line: _Line, out: _Events) -> None:
        kind = message.get("type")
        body = message.get("message")
        if kind == "system":
            self._system(message, out)
        elif (
            kind == "assistant" and isinstance(body, dict) and isinstance(body.get("content"), list)
        ):
            self._assistant(message, body, line, out)
        elif (
            kind == "user"
            and isinstance(body, dict)
            and isinstance(body.get("content"), list)
            and any(_is_block(b, "tool_result") for b in body["content"])
        ):
            self._user(message, body, line, out)
        elif kind == "result":
            self._result(message, out)
        else:
            out.append(line.json(message))

    def _system(self, message: dict[str, Any], out: _Events) -> None:
        subtype = str(message.get("subtype") or "system")
        text: str | None = None
        if subtype == "init":
            model = message.get("model")
            tools = message.get("tools")
            self.details.update(
                {
                    k: v
                    for k, v in (
                        ("model", model),
                        ("agent_session_id", message.get("session_id")),
                        ("agent_version", message.get("claude_code_version")),
                    )
                    if v is not None
                }
            )
            pieces = [str(model)] if model else []
            if isinstance(tools, list):
                pieces.append(f"{len(tools)} tools")
            if message.get("cwd"):
                pieces.append(f"in {message['cwd']}")
            text = ", ".join(pieces) or None
        out.append((EventType.STATUS, Status(subtype, "system", text)))

    def _assistant(
        self, message: dict[str, Any], body: dict[str, Any], line: _Line, out: _Events
    ) -> None:
        context: dict[str, Any] = {}
        if body.get("id"):
            context["message_id"] = body["id"]
        if message.get("parent_tool_use_id"):
            context["parent_tool_use_id"] = message["parent_tool_use_id"]
        for block in body["content"]:
            if _is_block(block, "text"):
                out.append(
                    (
                        EventType.REASONING,
                        Reasoning(str(block.get("text", "")), None, "text", context),
                    )
                )
            elif _is_block(block, "thinking"):
                thought = str(block.get("thinking", ""))
                out.append((EventType.REASONING, Reasoning(thought, None, "thinking", context)))
            elif _is_block(block, "tool_use") and isinstance(block.get("id"), str):
                name = str(block.get("name") or "tool")
                parameters = block.get("input")
                if not isinstance(parameters, dict):
                    parameters = {"input": parameters}
                action = tool_action(name, parameters)
                call_id = block["id"]
                self._open[call_id] = _OpenCall(name, action, parameters, line.ts)
                out.append(
                    (
                        EventType.COMMAND_STARTED,
                        Command(name, action, parameters, call_id, context=context),
                    )
                )
            else:
                out.append(line.json(block))

    def _user(
        self, message: dict[str, Any], body: dict[str, Any], line: _Line, out: _Events
    ) -> None:
        for block in body["content"]:
            if not _is_block(block, "tool_result"):
                out.append(line.json(block))
                continue
            call_id = block.get("tool_use_id")
            call = self._open.pop(call_id, None) if isinstance(call_id, str) else None
            context: dict[str, Any] = {}
            if message.get("parent_tool_use_id"):
                context["parent_tool_use_id"] = message["parent_tool_use_id"]
            if call is None:
                context["unmatched"] = True
                call = _OpenCall("tool", None, {}, line.ts)
            text = result_text(block.get("content"))
            failed = bool(block.get("is_error"))
            out.append(
                (
                    EventType.COMMAND_FAILED if failed else EventType.COMMAND_COMPLETED,
                    Command(
                        call.name,
                        call.action,
                        call.parameters,
                        call_id if isinstance(call_id, str) else None,
                        result=None if failed else text,
                        error=text if failed else None,
                        context=context,
                        duration=max(0.0, line.ts - call.started),
                    ),
                )
            )

    def _result(self, message: dict[str, Any], out: _Events) -> None:
        subtype = str(message.get("subtype") or "result")
        failed = bool(message.get("is_error")) or subtype.startswith("error")
        for key, field in (
            ("total_cost_usd", "cost_usd"),
            ("num_turns", "turns"),
            ("usage", "usage"),
            ("duration_ms", "duration_ms"),
            ("duration_api_ms", "duration_api_ms"),
            ("modelUsage", "model_usage"),
        ):
            if message.get(key) is not None:
                self.details[field] = message[key]
        denials = message.get("permission_denials")
        if isinstance(denials, list):
            self.details["permission_denials"] = len(denials)
        self.details["result"] = subtype
        self.details["is_error"] = failed
        text = message.get("result")
        summary = text if isinstance(text, str) else None
        out.append((EventType.STATUS, Status(subtype, "result", summary)))
        if failed:
            out.append(
                (
                    EventType.ERROR,
                    ErrorData(
                        summary or f"the agent stopped: {subtype}",
                        subtype,
                        {k: message[k] for k in ("num_turns", "errors") if k in message},
                    ),
                )
            )

    def finish(self, now: float) -> list[tuple[EventType, Payload]]:
        """End of stream: the tool calls that never got a result, as failures."""
        out: list[tuple[EventType, Payload]] = [
            (
                EventType.COMMAND_FAILED,
                Command(
                    call.name,
                    call.action,
                    call.parameters,
                    call_id,
                    error="no result: the session ended first",
                    duration=max(0.0, now - call.started),
                ),
            )
            for call_id, call in self._open.items()
        ]
        self._open.clear()
        return out

    async def process(self, batch: LineBatch, publish: Publisher) -> None:
        """Publish the events of one batch, stamped with the time it was read."""
        publish_all(publish, self.parse_batch(batch), batch.ts)

    async def on_complete(self, completion: Completion, publish: Publisher) -> None:
        """Report tool calls left open as failed."""
        publish_all(publish, self.finish(time.time()))

    async def on_error(self, error: BaseException, publish: Publisher) -> None:
        """Close the tool calls left open as failed; the session reports the failure itself."""
        publish_all(publish, self.finish(time.time()))

    def session_details(self) -> dict[str, Any]:
        """Cost, turns, usage and the like from the agent's final ``result`` line.

        Keys (each only when the agent reported it): ``profile``, ``model``,
        ``agent_session_id``, ``agent_version``, ``cost_usd``, ``turns``, ``usage``,
        ``duration_ms``, ``duration_api_ms``, ``model_usage``, ``permission_denials``,
        ``result``, ``is_error``; and ``unparsed_lines`` when some lines were not JSON.
        """
        details: dict[str, Any] = {"profile": "claude", **self.details}
        if self.unparsed:
            details["unparsed_lines"] = self.unparsed
        return details


def _is_block(block: Any, kind: str) -> bool:
    return isinstance(block, dict) and block.get("type") == kind
