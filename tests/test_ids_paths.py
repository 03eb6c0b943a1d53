import re
import time

from trio_stream import paths
from trio_stream.ids import new_session_id
from trio_stream.store import check_session_id


def test_generated_ids_are_safe_readable_and_sort_by_time():
    earlier = new_session_id(time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, 0)) - time.timezone)
    later = new_session_id(time.mktime((2026, 1, 2, 3, 4, 6, 0, 0, 0)) - time.timezone)
    assert re.fullmatch(r"20260102-030405-[0-9a-z]{5}", earlier)
    assert check_session_id(earlier) == earlier
    assert earlier < later


def test_generated_ids_differ_within_a_second():
    now = time.time()
    assert len({new_session_id(now) for _ in range(50)}) > 45


def test_xdg_variables_are_followed_when_absolute(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.data_dir() == tmp_path / "tstream"
    assert paths.config_dir() == tmp_path / "home" / ".config" / "tstream"
    assert paths.default_store_path() == tmp_path / "tstream" / "tstream.db"


def test_runtime_dir_falls_back_to_a_per_user_temp_dir(monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert paths.runtime_dir().name.startswith("tstream-")
