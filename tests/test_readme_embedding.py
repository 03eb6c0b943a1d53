"""The README's embedding examples (a hub in your nursery, serving and following a session)
run as written and print what the README says they print."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.rst"


def _section(text: str, name: str) -> str:
    start = text.index(f".. SECTION:{name}\n")
    following = text.find(".. SECTION:", start + 1)
    return text[start : following if following != -1 else len(text)]


def examples(section: str) -> list[tuple[str, list[str]]]:
    """Each trio program of ``section`` (a literal block ending in ``trio.run(main)``) and
    the lines the sentence after it says it prints (``prints ``a``, ``b`` and ``c``.``)."""
    text = _section(README.read_text(), section)
    found = []
    for block in re.finditer(r"::\n\n((?:    .*\n|\n)+)", text):
        code = "\n".join(line[4:] for line in block.group(1).splitlines())
        if "trio.run(main)" not in code:
            continue
        rest = text[block.end() :]
        sentence = rest[rest.index("prints ") : rest.index(".\n")]
        found.append((code, re.findall(r"``([^`]+)``", sentence)))
    return found


CASES = [(name, *case) for name in ("hub", "live") for case in examples(name)]


def test_the_live_section_has_an_embedding_example() -> None:
    assert any(name == "live" for name, *_ in CASES)


@pytest.mark.parametrize(("section", "code", "expected"), CASES)
def test_readme_example_prints_what_it_says(
    section: str, code: str, expected: list[str], tmp_path: Path
) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "XDG_DATA_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert [line.strip() for line in done.stdout.decode().splitlines()] == expected
