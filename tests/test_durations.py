import click
import pytest

from trio_stream.durations import DURATION, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("7d", 604800),
        (".5", 0.5),
    ],
)
def test_durations_people_write(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "5x", "s", "1e400", "five"])
def test_bad_durations_name_the_text(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_click_type_reports_usage_error():
    with pytest.raises(click.BadParameter, match="invalid duration 'soon'"):
        DURATION.convert("soon", None, None)
