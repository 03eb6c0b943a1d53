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


def examples() -> list[tuple[str, list[str]]]:
    """Each trio program of the README (a literal block ending in ``trio.run(main)``) and
    the lines the sentence after it says it prints (``prints ``a``, ``b`` and ``c``.``);
    every program is followed by such a sentence."""
    text = README.read_text()
    found = []
    for block in re.finditer(r"::\n\n((?:    .*\n|\n)+)", text):
        code = "\n".join(line[4:] for line in block.group(1).splitlines())
        if "trio.run(main)" not in code:
            continue
        rest = text[block.end() :]
        sentence = re.match(r"\s*prints (.*?)\.\s", rest, re.S)
        assert sentence, f"no 'prints …' sentence after the example:\n{code}"
        found.append((code, re.findall(r"``([^`]+)``", sentence.group(1))))
    return found


CASES = examples()


def test_the_readme_shows_a_hub_and_a_followed_session_embedded() -> None:
    assert any("serve_hub" in code for code, _ in CASES)
    assert any("subscribe" in code for code, _ in CASES)


@pytest.mark.parametrize(("code", "expected"), CASES)
def test_readme_example_prints_what_it_says(code: str, expected: list[str], tmp_path: Path) -> None:
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
