"""The public face: what ``trio_stream`` exports, and that importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import trio_stream


def test_every_exported_name_resolves() -> None:
    for name in trio_stream.__all__:
        assert getattr(trio_stream, name) is not None, name
    assert sorted(dir(trio_stream)) == sorted(trio_stream.__all__)


def test_the_types_readers_use_come_from_the_package() -> None:
    from trio_stream.events import Event, EventType
    from trio_stream.filters import EventFilter
    from trio_stream.hub.config import HubConfig
    from trio_stream.store import Store, open_store

    assert trio_stream.Event is Event and trio_stream.EventType is EventType
    assert trio_stream.HubConfig is HubConfig and trio_stream.EventFilter is EventFilter
    assert trio_stream.Store is Store and trio_stream.open_store is open_store


def test_one_way_to_run_a_command_to_completion() -> None:
    assert not hasattr(trio_stream, "run_stream")


def printed_by(code: str) -> list[str]:
    """The lines a new interpreter prints running ``code``."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_importing_the_package_loads_neither_the_web_stack_nor_sqlite() -> None:
    code = (
        "import sys, trio_stream; "
        "print(sorted(m for m in sys.modules if m.startswith(('trio_stream.hub', "
        "'trio_stream.store.sqlite', 'quart', 'hypercorn', 'trio_websocket', 'sqlite3'))))"
    )
    assert printed_by(code) == ["[]"]


def test_tstream_run_loads_no_document_processor_nor_yaml_until_asked() -> None:
    code = (
        "import sys, trio_stream.cli.run, trio_stream.processors as p; "
        "wanted = ('ruamel', 'trio_stream.processors.jsonlines', "
        "'trio_stream.processors.yamlstream', 'trio_stream.processors.claude'); "
        "print(sorted(m for m in sys.modules if m.startswith(wanted))); "
        "print(p.FORMATS['yaml'].__name__, p.JsonLinesProcessor.__name__, "
        "list(p.FORMATS) == list(p.FORMAT_NAMES))"
    )
    assert printed_by(code) == ["[]", "YamlStreamProcessor JsonLinesProcessor True"]
