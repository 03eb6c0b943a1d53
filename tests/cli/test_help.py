"""Help read in a terminal: plain words, and a whole first line for every command."""

import re

import pytest
from click.testing import CliRunner

from trio_stream.cli import COMMANDS, cli

# What reStructuredText would leave behind: ``literals``, roles, and link targets.
MARKUP = re.compile(r"``|:(?:meth|func|class|ref|attr|mod):|`_")


def help_of(*args):
    result = CliRunner().invoke(cli, [*args, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_command_list_shows_every_first_line_whole():
    listed = help_of().split("Commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert sorted(line.split()[0] for line in listed) == sorted(COMMANDS)
    for line in listed:
        assert line.rstrip().endswith("."), line
        assert not line.rstrip().endswith("..."), line


@pytest.mark.parametrize("command", ["", *sorted(COMMANDS)])
def test_help_has_no_markup(command):
    shown = help_of(*command.split())
    assert not MARKUP.search(shown), MARKUP.search(shown)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_short_help_is_a_whole_sentence(command):
    short = cli.get_command(None, command).get_short_help_str(limit=70)
    assert short.endswith(".") and not short.endswith("..."), short
    assert len(short) <= 70, short


def test_the_run_example_stays_on_a_line_of_its_own():
    assert "\n      tstream run --timeout 5m -- make -j8\n" in help_of("run")


def test_the_main_help_says_where_to_read_more():
    shown = help_of()
    assert "man tstream" in shown and "completion" in shown
