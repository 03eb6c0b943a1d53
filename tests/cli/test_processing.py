"""The processing options and the pipeline they build."""

import click
import pytest
from click.testing import CliRunner

from trio_stream.cli.processing import build_pipeline, processor_options
from trio_stream.events import EventType
from trio_stream.lines import Line
from trio_stream.processors import (
    ClaudeProfile,
    JsonLinesProcessor,
    LineFilter,
    PatternMatcher,
    Redactor,
    TypeFiltered,
    YamlStreamProcessor,
)


@pytest.fixture(autouse=True)
def no_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "xdg-dirs"))


@click.command()
@processor_options
def show(**options):
    pipeline = build_pipeline(**options)
    click.echo(" ".join(type(p).__name__ for p in pipeline.processors))
    click.echo(" ".join(type(t).__name__ for t in pipeline.transforms))


def invoke(*args):
    return CliRunner().invoke(show, list(args))


def test_without_options_there_is_nothing_to_do():
    pipeline = build_pipeline()
    assert pipeline.processors == [] and pipeline.transforms == [] and pipeline.config is None


@pytest.mark.parametrize(
    ("fmt", "kind"),
    [("jsonl", JsonLinesProcessor), ("yaml", YamlStreamProcessor), ("claude", ClaudeProfile)],
)
def test_each_format_adds_its_processor(fmt, kind):
    (processor,) = build_pipeline(format=fmt).processors
    assert isinstance(processor, kind)


def test_options_through_click():
    result = invoke(
        "--format", "jsonl", "--match", "e=^E", "--redact", "tok_\\w+", "--filter", "drop:regex=^D"
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "JsonLinesProcessor PatternMatcher",
        "LineFilter Redactor",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--match", "bad=(x"], "invalid regex for pattern 'bad' '(x'"),
        (["--redact", "["], "invalid regex for --redact '['"),
        (["--filter", "drop:nothing"], "invalid filter 'drop:nothing'"),
        (["--match", "a=x", "--match", "a=y"], "two patterns are named 'a'"),
        (["--format", "xml"], "'xml' is not one of"),
        (["--config", "nowhere.yaml"], "nowhere.yaml: no such file"),
    ],
)
def test_bad_values_are_usage_errors_naming_them(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_type_filters_wrap_every_processor():
    pipeline = build_pipeline(format="claude", match=("a=x",), filter=("drop:type=reasoning",))
    assert all(isinstance(p, TypeFiltered) for p in pipeline.processors)
    assert pipeline.processors[0].drop == {EventType.REASONING}
    assert pipeline.transforms == []


def test_filters_come_before_redaction():
    pipeline = build_pipeline(redact=("secret",), filter=("keep:regex=secret",))
    assert [type(t) for t in pipeline.transforms] == [LineFilter, Redactor]
    lines = [Line("a secret"), Line("other")]
    for transform in pipeline.transforms:
        lines = transform.apply("stdout", lines)
    assert lines == [Line("a [REDACTED]")]


def test_the_config_file_adds_to_the_options(tmp_path):
    path = tmp_path / "tstream.yaml"
    path.write_text(
        "run:\n"
        "  format: yaml\n"
        "  match:\n"
        "    - warn@warning=^WARN\n"
        "    - name: oom\n"
        "      regex: Out of memory\n"
        "      type: error\n"
        "  redact: 'ghp_\\w+'\n"
        "  filter: [drop:source=stderr]\n"
    )
    pipeline = build_pipeline(config=str(path), match=("cli=x",))
    assert pipeline.config is not None and pipeline.config.path == str(path)
    fmt, patterns = pipeline.processors
    assert isinstance(fmt, YamlStreamProcessor)
    assert isinstance(patterns, PatternMatcher)
    assert [(p.name, p.type.value, p.level) for p in patterns.patterns] == [
        ("warn", "match", "warning"),
        ("oom", "error", None),
        ("cli", "match", None),
    ]
    assert [type(t) for t in pipeline.transforms] == [LineFilter, Redactor]
    assert isinstance(
        build_pipeline(config=str(path), format="jsonl").processors[0], JsonLinesProcessor
    )


def test_the_user_config_is_read_by_default(tmp_path):
    folder = tmp_path / "xdg" / "tstream"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("run:\n  format: claude\n")
    assert isinstance(build_pipeline().processors[0], ClaudeProfile)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run:\n  formt: jsonl\n", ":2: run.formt: unknown key"),
        ("run:\n  format: xml\n", ":2: run.format: 'xml' is not one of text, jsonl, yaml, claude"),
        (
            "run:\n  match:\n    - ok=x\n    - 'bad=('\n",
            ":4: run.match[1]: invalid regex for pattern 'bad'",
        ),
        (
            "run:\n  match:\n    - name: a\n      regex: '('\n",
            ":4: run.match[0].regex: invalid regex",
        ),
        ("run:\n  match:\n    - name: a\n", ":3: run.match[0]: a pattern needs 'regex'"),
        (
            "run:\n  match:\n    - name: a\n      regex: x\n      colour: red\n",
            ":5: run.match[0].colour: unknown key",
        ),
        (
            "run:\n  match:\n    - name: a\n      regex: x\n      type: output\n",
            ":3: run.match[0]: pattern 'a': unknown event type",
        ),
        ("run:\n  redact:\n    - 5\n", ":3: run.redact[0]: expected a string"),
        ("run:\n  filter:\n    - keep:source=stdin\n", ":3: run.filter[0]: invalid filter"),
    ],
)
def test_config_problems_name_file_line_and_key(tmp_path, text, message):
    path = tmp_path / "tstream.yaml"
    path.write_text(text)
    with pytest.raises(click.UsageError) as caught:
        build_pipeline(config=str(path))
    assert caught.value.message.startswith(f"{path}{message}")
