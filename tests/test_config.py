"""The configuration file: XDG lookup, sections, and errors naming file, line and key."""

import pytest

from trio_stream.config import ConfigError, ConfigFile, default_config_path, load_config


def write(tmp_path, text, name="tstream.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_xdg_config_home_comes_first(tmp_path):
    home = tmp_path / "home"
    other = tmp_path / "etc"
    for base in (home, other):
        (base / "tstream").mkdir(parents=True)
        (base / "tstream" / "config.yaml").write_text("run: {}\n")
    env = {"XDG_CONFIG_HOME": str(home), "XDG_CONFIG_DIRS": str(other)}
    assert default_config_path(env) == home / "tstream" / "config.yaml"
    (home / "tstream" / "config.yaml").unlink()
    assert default_config_path(env) == other / "tstream" / "config.yaml"


def test_relative_xdg_paths_are_ignored_and_no_file_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert (
        default_config_path({"XDG_CONFIG_HOME": "relative", "XDG_CONFIG_DIRS": "also/rel"}) is None
    )
    (tmp_path / ".config" / "tstream").mkdir(parents=True)
    (tmp_path / ".config" / "tstream" / "config.yaml").write_text("")
    found = default_config_path({"XDG_CONFIG_HOME": "relative", "XDG_CONFIG_DIRS": "also/rel"})
    assert found == tmp_path / ".config" / "tstream" / "config.yaml"


def test_load_config_without_a_file_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "none"))
    assert load_config() is None


def test_sections_are_read_with_their_values(tmp_path):
    config = ConfigFile.load(
        write(tmp_path, "run:\n  format: jsonl\n  redact: [a, b]\nstore: {}\n")
    )
    run = config.section("run")
    assert run.get_choice("format", ("text", "jsonl")) == "jsonl"
    assert run.get_list("redact") == ["a", "b"]
    assert run.get_list("match") == []
    assert config.section("serve").values == {}


def test_an_empty_file_is_an_empty_configuration(tmp_path):
    assert ConfigFile.load(write(tmp_path, "# nothing yet\n")).values == {}


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        ("run: {}\nsrve:\n  port: 1\n", 2, "srve", "unknown section (known: run, store, serve)"),
        ("run: [1]\n", 1, "run", "expected a mapping"),
        ("- a\n- b\n", 1, None, "expected a mapping of sections"),
        ("run:\n  format: [x\n", 3, None, "invalid YAML"),
        ("run:\n  a: 1\n  a: 2\n", 3, None, "invalid YAML"),
        ("run: !!python/object:os.system {}\n", 1, None, "invalid YAML"),
    ],
)
def test_problems_name_file_line_and_key(tmp_path, text, line, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        ConfigFile.load(path).section("run")
    error = caught.value
    assert (error.path, error.line, error.key) == (str(path), line, key)
    assert problem in error.problem
    assert str(error).startswith(f"{path}:{line}: ")


def test_value_errors_point_at_the_key_and_list_item(tmp_path):
    path = write(tmp_path, "run:\n  format: 3\n  filter:\n    - ok\n    - 7\n")
    run = ConfigFile.load(path).section("run")
    with pytest.raises(ConfigError, match=r":2: run.format: expected a string, got a number"):
        run.get_str("format")
    error = run.error("filter", "bad", 1)
    assert (error.line, error.key) == (5, "run.filter[1]")
    with pytest.raises(ConfigError, match=r":2: run.format: unknown key \(known: match\)"):
        run.check_keys({"match"})


def test_nested_mappings_are_sections_of_their_own(tmp_path):
    path = write(tmp_path, "run:\n  match:\n    - name: a\n      regex: x\n")
    item = ConfigFile.load(path).section("run").child("match", 0)
    assert item.key == "run.match[0]"
    assert item.error("regex", "bad").line == 4


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such file"):
        ConfigFile.load(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        ConfigFile.load(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"run: {format: \xe9}\n")
    with pytest.raises(ConfigError, match="cannot read"):
        ConfigFile.load(bad)
