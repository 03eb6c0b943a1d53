import pytest

from trio_stream.store import MemoryStore, StoreError, open_store, parse_store_url


def test_store_urls_name_the_backend_and_file(monkeypatch, tmp_path):
    monkeypatch.delenv("TSTREAM_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert parse_store_url("memory:").kind == "memory"
    assert parse_store_url("sqlite:/x/y.db").path == "/x/y.db"
    assert parse_store_url("sqlite:///x/y.db").path == "/x/y.db"
    assert parse_store_url("rel/y.db").path == "rel/y.db"
    default = parse_store_url(None)
    assert default.path == str(tmp_path / "tstream" / "tstream.db") and default.default


def test_environment_variable_chooses_the_default(monkeypatch):
    monkeypatch.setenv("TSTREAM_STORE", "memory:")
    assert parse_store_url(None).kind == "memory"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb://host", "unsupported store 'mongodb'"),
        ("sqlite:", "needs a file path"),
        ("memory:x", "takes no path"),
    ],
)
def test_bad_urls_are_named(url, message):
    with pytest.raises(StoreError, match=message):
        parse_store_url(url)


async def test_open_memory_store_is_closed_on_exit():
    async with open_store("memory:", max_history=5) as store:
        assert isinstance(store, MemoryStore) and store.max_history == 5
    with pytest.raises(StoreError):
        await store.list_sessions()


def test_a_file_named_memory_is_a_file():
    assert parse_store_url("memory") == parse_store_url("sqlite:memory")
