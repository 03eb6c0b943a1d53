"""The processing options through the real ``tstream run``, with real processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trio_stream.events import EventType, event_from_json

DATA = Path(__file__).resolve().parent.parent / "data"
TRANSCRIPT = DATA / "claude-stream.jsonl"


@pytest.fixture
def env(tmp_path):
    environ = dict(os.environ)
    environ.update(
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CONFIG_DIRS=str(tmp_path / "config-dirs"),
        TSTREAM_STORE=str(tmp_path / "tstream.db"),
    )
    return environ


def tstream(env, *args, check=True):
    done = subprocess.run(
        [sys.executable, "-c", "from trio_stream.cli import main; main()", *args],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr.decode()
    return done


def events_of(done):
    return [event_from_json(line) for line in done.stdout.splitlines()]


def derived(events):
    skip = {EventType.OUTPUT, EventType.SESSION_STARTED, EventType.SESSION_ENDED}
    return [e for e in events if e.type not in skip]


def test_claude_transcript_end_to_end(env):
    events = events_of(
        tstream(env, "run", "--json", "--format", "claude", "--", "cat", str(TRANSCRIPT))
    )
    outputs = [e for e in events if e.type is EventType.OUTPUT]
    assert len(outputs) == len(TRANSCRIPT.read_text().splitlines())
    kinds = [e.type.value for e in derived(events)]
    assert kinds.count("command_started") == 6
    assert kinds.count("command_completed") == 5
    assert kinds.count("command_failed") == 1
    assert kinds[0] == "status" and kinds[-1] == "status"
    started = {e.data.call_id: e.data.name for e in events if e.type is EventType.COMMAND_STARTED}
    for event in events:
        if event.type in (EventType.COMMAND_COMPLETED, EventType.COMMAND_FAILED):
            assert started[event.data.call_id] == event.data.name
            assert event.data.duration is not None and event.data.duration >= 0
    ended = events[-1]
    assert ended.type is EventType.SESSION_ENDED and ended.data.exit_status == 0
    assert ended.data.details["cost_usd"] == 0.0892146
    assert ended.data.details["turns"] == 9
    assert ended.data.details["usage"]["output_tokens"] == 1140
    assert [e.offset for e in events] == list(range(len(events)))


def test_match_through_the_cli(env):
    done = tstream(
        env,
        "run",
        "--json",
        "--match",
        "err:error@critical=^ERROR: (?P<message>.*)",
        "--match",
        "warn@warning=^WARN",
        "--",
        "printf",
        "ok\\nWARN slow\\nERROR: disk full\\n",
    )
    found = derived(events_of(done))
    assert [(e.type, e.data.__class__.__name__) for e in found] == [
        (EventType.MATCH, "Match"),
        (EventType.ERROR, "Error"),
    ]
    assert found[0].data.level == "warning"
    assert found[1].data.message == "disk full" and found[1].data.code == "err"


def test_a_bad_regex_is_a_usage_error_naming_it(env):
    done = tstream(env, "run", "--match", "bad=(x", "--", "true", check=False)
    assert done.returncode == 2
    assert b"invalid regex for pattern 'bad' '(x'" in done.stderr


def test_redacted_secrets_never_reach_the_events_or_the_store(env, tmp_path):
    secret = "hunter2-very-secret"
    env["SECRET"] = secret
    done = tstream(
        env,
        "run",
        "--json",
        "--redact",
        "token=(\\S+)",
        "--",
        "sh",
        "-c",
        'echo "login token=$SECRET ok"; echo "token=$SECRET" >&2',
    )
    assert secret.encode() not in done.stdout
    texts = [e.data.text for e in events_of(done) if e.type is EventType.OUTPUT]
    assert sorted(texts) == ["login token=[REDACTED] ok", "token=[REDACTED]"]
    files = [p for p in tmp_path.glob("tstream.db*") if p.is_file()]
    files += tmp_path.glob("tstream.db-chunks/*")
    stored = b"".join(p.read_bytes() for p in files)
    assert b"[REDACTED]" in stored
    assert secret.encode() not in stored


def test_a_secret_in_the_command_line_is_redacted_from_the_record(env, tmp_path):
    secret = "hunter2-in-argv"
    done = tstream(
        env, "run", "--json", "--redact", "token=(\\S+)", "--", "echo", f"token={secret}"
    )
    started = next(e for e in events_of(done) if e.type is EventType.SESSION_STARTED)
    assert started.data.command == ["echo", "token=[REDACTED]"]
    assert secret.encode() not in done.stdout
    listed = tstream(env, "ls", "--json")
    assert secret.encode() not in listed.stdout and b"[REDACTED]" in listed.stdout


def test_filters_through_the_cli(env):
    done = tstream(
        env,
        "run",
        "--json",
        "--format",
        "jsonl",
        "--filter",
        "drop:regex=^DEBUG",
        "--filter",
        "drop:type=json",
        "--",
        "printf",
        'DEBUG noise\\n{"a": 1}\\n{"type": "status", "status": "ok"}\\n',
    )
    events = events_of(done)
    texts = [e.data.text for e in events if e.type is EventType.OUTPUT]
    assert texts == ['{"a": 1}', '{"type": "status", "status": "ok"}']
    assert [e.type for e in derived(events)] == [EventType.STATUS]


def test_config_file_through_the_cli(env, tmp_path):
    config = tmp_path / "tstream.yaml"
    config.write_text("run:\n  format: yaml\n  match:\n    - name: fail\n      regex: ^FAIL\n")
    done = tstream(
        env, "run", "--json", "--config", str(config), "--", "printf", "a: 1\\n---\\nFAIL x\\n"
    )
    found = derived(events_of(done))
    # Each processor runs in its own task: their events interleave in no set order.
    documents = [e.data.document for e in found if e.type is EventType.JSON]
    assert documents == [{"a": 1}, "FAIL x"]
    assert [e.data.text for e in found if e.type is EventType.MATCH] == ["FAIL x"]


def test_a_config_problem_names_file_line_and_key(env, tmp_path):
    config = tmp_path / "tstream.yaml"
    config.write_text("run:\n  format: jsonl\n  redact:\n    - '('\n")
    done = tstream(env, "run", "--config", str(config), "--", "true", check=False)
    assert done.returncode == 2
    assert f"{config}:4: run.redact[0]: invalid regex".encode() in done.stderr


def test_the_user_config_applies_by_default(env, tmp_path):
    folder = tmp_path / "config" / "tstream"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("run:\n  format: jsonl\n")
    found = derived(events_of(tstream(env, "run", "--json", "--", "echo", '{"x": 2}')))
    assert [e.data.document for e in found] == [{"x": 2}]
