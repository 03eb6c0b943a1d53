"""The man pages are installed with the package, where ``man`` finds them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args, **kwargs):
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_man_finds_the_pages_after_a_normal_and_an_editable_install(tmp_path):
    # Built from a copy, with the build tools already here: no network, and nothing
    # written into the working tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.rst"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("man", "trio_stream"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    dist = tmp_path / "dist"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
    ]
    run(*build, "-q", "-w", str(dist), str(source))
    editable = (
        "import sys; from setuptools import build_meta; build_meta.build_editable(sys.argv[1])"
    )
    run(sys.executable, "-c", editable, str(dist / "editable"), cwd=source)
    wheels = {
        "normal": next(dist.glob("tstream-*.whl")),
        "editable": next((dist / "editable").glob("tstream-*.whl")),
    }
    for kind, wheel in wheels.items():
        env = tmp_path / kind
        run(sys.executable, "-m", "venv", "--without-pip", str(env))
        pip = [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python")]
        run(*pip, "install", "-q", "--no-deps", "--no-index", str(wheel))
        # man finds pages beside the directories of PATH: bin/ then ../share/man.
        environ = {
            "PATH": f"{env / 'bin'}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "MANPAGER": "cat",
            "MANWIDTH": "80",
            "LANG": "C.UTF-8",
        }
        where = run("man", "-w", "tstream-run", env=environ).strip()
        assert where == str(env / "share" / "man" / "man1" / "tstream-run.1"), kind
        page = run("man", "tstream", env=environ)
        assert "tstream-run(1)" in page, kind
        assert sorted(os.listdir(env / "share" / "man" / "man1")) == sorted(
            p.name for p in (ROOT / "man").glob("*.1")
        ), kind
