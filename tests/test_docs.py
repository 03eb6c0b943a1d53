"""Every code block of README.rst and every example of the man pages runs, and does what
the text around it says (Sybil finds the blocks; ``tests/doc_examples.py`` runs them).

How a README block is run depends on its language, named by ``.. code-block:: LANGUAGE``
or, for a bare ``::`` block, read from its first lines:

* ``console`` (a block whose first line starts with ``$ ``): each ``$ `` command runs in
  one ``bash`` per document, in order, on a terminal of its own (no colour), in a sandbox:
  a new directory as working directory and ``HOME``, the XDG directories inside it (so a
  new store), ``tests`` linked in, and the hub's port 3001 of the examples replaced by a
  free one. The lines after a command are the output it must print (stdout and stderr
  together, as a terminal shows them). A command ending with ``&`` runs on in the
  background: the lines after it are the first it prints, waited for, so that a following
  command finds, say, a hub listening.
* ``python``: the program runs whole, as a script in the sandbox.
* ``javascript``: the program runs under Node (WebSocket and EventSource enabled).
* A program followed by a block introduced by ``prints::`` must print that block; one
  followed by a sentence ``prints ``a``, ``b`` and ``c``.`` must print those lines.
* ``yaml``: the block is loaded as the configuration file and each section is applied as
  its command would (``run:`` builds the pipeline, ``serve:`` the hub's settings).

Shown output is compared line by line, trailing blanks aside, with two allowances:

* ``…`` stands for any text within a line, and a line of ``…`` alone for any number of
  lines: write ``{"id":"…","offset":2,…}`` for what is left out;
* values that differ from run to run are matched by their shape wherever they are shown:
  generated session ids (``20261123-013133-9jvp0``), times (``2026-11-23 01:31:33``),
  durations (``0.01s``), event ids, ``ts``, ``pid``, ``cwd``, ``duration`` and ``epoch``
  in JSON, client ids (``c1-262ac7``), socket names (``ae53c840.sock``) and the runtime
  directory (``/run/user/1000/tstream``)
  (``doc_examples.VARYING``). Write a real example of the value.

A block that cannot run here (a configuration for another program, a fragment, something
that needs the network or a long time) is marked in the source, with the reason, by a
comment Sybil reads and the rendered page does not show, on the line before the block's
introduction::

    .. skip: next "a configuration of nginx: tests/hub/test_proxy.py runs it"

In a man page, the same marker is a roff comment before the ``.nf`` of the block:
``.\\" skip: next "needs a make project"``. A man page's examples run in a sandbox whose
store holds one finished session, ``build-1``; each command must succeed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from doc_examples import (
    ROOT,
    Sandbox,
    man_parsers,
    matches,
    output_regex,
    parse_console,
    rest_parsers,
)
from sybil import Document, Example

DOCUMENTS = {
    "README.rst": Document.parse(str(ROOT / "README.rst"), *rest_parsers()),
    **{
        f"man/{path.name}": Document.parse(str(path), *man_parsers())
        for path in sorted((ROOT / "man").glob("*.1"))
    },
}
EXAMPLES = [
    pytest.param(name, index, id=f"{name}:{example.line}")
    for name, document in DOCUMENTS.items()
    for index, example in enumerate(document.examples())
]


@pytest.fixture(autouse=True)
def no_process_left_behind() -> None:
    """A document's shell and what it started in the background last from one example to
    the next (``documents`` ends them): this replaces the suite's per-test sweep."""


@pytest.fixture(scope="module", autouse=True)
def documents() -> Iterator[None]:
    """End every sandbox once the module is done."""
    yield
    for document in DOCUMENTS.values():
        box = document.namespace.pop("sandbox", None)
        if isinstance(box, Sandbox):
            box.close()


def _examples(name: str) -> list[Example]:
    document = DOCUMENTS[name]
    cached = document.namespace.setdefault("examples", list(document.examples()))
    return cached  # type: ignore[no-any-return]


@pytest.mark.parametrize(("name", "index"), EXAMPLES)
def test_example(name: str, index: int) -> None:
    examples = _examples(name)
    done: set[int] = DOCUMENTS[name].namespace.setdefault("done", set())
    # An example selected alone still runs after the ones before it, which set it up.
    for earlier in range(index):
        if earlier not in done:
            done.add(earlier)
            with contextlib.suppress(Exception):  # its own test reports it
                examples[earlier].evaluate()
    done.add(index)
    examples[index].evaluate()


def test_the_readme_and_every_man_page_have_examples() -> None:
    assert len(_examples("README.rst")) > 30
    assert all(_examples(name) for name in DOCUMENTS if name != "man/tstream.1")


# -- the comparison itself --------------------------------------------------------------


@pytest.mark.parametrize(
    ("shown", "printed"),
    [
        ("hi", "hi\r\n"),
        ("a\n…\nz", "a\nb\nc\nz\n"),
        ("a\n…\nz", "a\nz"),
        ('{"id":"…","offset":2,…}', '{"id":"x1","offset":2,"type":"output"}'),
        ("■ exit 3 (0.01s)", "■ exit 3 (12.50s)"),
        (
            "20261123-013133-9jvp0  2026-11-23 01:31:33",
            "20270101-000000-abcde  2027-01-01 00:00:00",
        ),
        ('"ts":1795397213.476825,"pid":19298', '"ts":1.5,"pid":7'),
    ],
)
def test_shown_output_matches(shown: str, printed: str) -> None:
    assert matches(shown, printed)


@pytest.mark.parametrize(
    ("shown", "printed"),
    [
        ("hi", "hi\nthere"),
        ("a\n…\nz", "a\nb"),
        ('{"id":"…","offset":2,…}', '{"id":"x1","offset":3,"type":"output"}'),
        ("■ exit 3 (0.01s)", "■ exit 4 (0.01s)"),
        ("", "something"),
        ("a.b", "axb"),
    ],
)
def test_other_output_does_not(shown: str, printed: str) -> None:
    assert not matches(shown, printed)


def test_a_shell_block_is_commands_and_their_output() -> None:
    block = (
        "$ curl -s -X POST localhost:3001/x \\\n"
        "    -d '[1,\n"
        "         2]'\n"
        '{"accepted":2}\n'
        "$ tstream serve & PID=$!  # a comment\n"
        "tstream hub listening\n"
        "$ echo $?\n"
        "0"
    )
    commands = parse_console(block)
    assert [c.text.split()[0] for c in commands] == ["curl", "tstream", "echo"]
    assert commands[0].expected == '{"accepted":2}'
    assert [c.background for c in commands] == [False, True, False]
    assert output_regex("x\n…").pattern.endswith(r"(?:[^\n]*\n)*?")


def test_a_sandbox_keeps_state_and_gives_a_terminal(tmp_path: Path) -> None:
    box = Sandbox()
    try:
        (first, second, third) = parse_console(
            "$ export GREETING=hi; cd tests\n"
            "$ test -t 1 && echo $GREETING from $(basename $PWD)\n"
            "hi from tests\n"
            "$ echo :3001\n"
            ":3001"
        )
        assert box.run(first) == ""
        assert box.run(second).replace("\r\n", "\n") == "hi from tests\n"
        assert box.run(third).strip() == ":3001"
        assert box.localize("http://127.0.0.1:3001/x") == f"http://127.0.0.1:{box.port}/x"
    finally:
        box.close()
