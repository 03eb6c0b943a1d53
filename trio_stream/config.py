"""The configuration file: YAML, one section per part of tstream.

``tstream run --config FILE`` reads ``FILE``; without it, the first of
``$XDG_CONFIG_HOME/tstream/config.yaml`` (``~/.config/tstream/config.yaml`` when
``XDG_CONFIG_HOME`` is unset) and ``tstream/config.yaml`` under each directory of
``$XDG_CONFIG_DIRS`` (``/etc/xdg``) that exists is read, if any. Loading is ruamel.yaml's
safe loading: no tag builds an object. Example::

    run:
      format: jsonl
      match:
        - error=^ERROR: (?P<message>.*)
        - name: slow
          regex: took (?P<ms>\\d+)ms
          type: match
          level: warning
      redact:
        - ghp_[A-Za-z0-9]{36}
      filter:
        - drop:regex=^DEBUG

Each top-level key is a section owned by one part of tstream: :data:`SECTIONS` lists them,
and a part adds its section there and reads it with :meth:`ConfigFile.section`. A
:class:`Section` checks its own keys and values, and every problem is a
:class:`ConfigError` naming the file, the line and the key
(``tstream.yaml:4: run.match[0]: invalid regex …``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

if TYPE_CHECKING:
    from ruamel.yaml.nodes import Node

# ruamel.yaml is imported when a file is read: a run without one does not pay for it.

SECTIONS: Final[dict[str, str]] = {
    "run": "processors and options of tstream run",
    "store": "where sessions are kept",
    "serve": "the hub served by tstream serve",
}
"""The known top-level sections and what each configures."""

RUN_KEYS: Final[dict[str, str]] = {
    "format": "how stdout is read: text, jsonl, yaml or claude",
    "match": "named patterns (NAME[:TYPE][@LEVEL]=REGEX, or name/regex/type/level)",
    "redact": "regexes of secrets to hide before anything is recorded",
    "filter": "keep/drop filters (ACTION:FIELD=VALUE)",
}
"""The keys of the ``run`` section; options of ``tstream run`` add theirs here."""

CONFIG_NAME: Final = "config.yaml"


class ConfigError(ValueError):
    """A configuration file that cannot be used.

    Attributes:
        path: the file.
        line: the line (from 1) of the problem, or None when it is about the whole file.
        key: the dotted key (``run.match[0]``), or None.
        problem: what is wrong.
    """

    def __init__(self, path: str, line: int | None, key: str | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.problem = problem
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def default_config_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The user's configuration file by XDG rules, or None when there is none.

    Args:
        environ: the environment to read (``os.environ`` by default).
    """
    env = os.environ if environ is None else environ
    home = env.get("XDG_CONFIG_HOME", "")
    bases = [Path(home)] if os.path.isabs(home) else [Path.home() / ".config"]
    dirs = env.get("XDG_CONFIG_DIRS", "") or "/etc/xdg"
    bases.extend(Path(d) for d in dirs.split(":") if os.path.isabs(d))
    for base in bases:
        candidate = base / "tstream" / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def _line_of(node: Node | None) -> int | None:
    return None if node is None else node.start_mark.line + 1


@final
class Section:
    """One mapping of a configuration file, with where each of its keys was written.

    Args:
        path: the file, for messages.
        key: the dotted key of this mapping (``run``).
        values: the loaded mapping.
        node: its YAML node, for line numbers.
    """

    def __init__(self, path: str, key: str, values: dict[str, Any], node: Node | None) -> None:
        self.path = path
        self.key = key
        self.values = values
        self._node = node

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def line(self, key: str | None = None, index: int | None = None) -> int | None:
        """The line of ``key`` (and of item ``index`` of its list), or of the section."""
        from ruamel.yaml.nodes import MappingNode, SequenceNode

        node = self._node
        if key is None or not isinstance(node, MappingNode):
            return _line_of(node)
        for key_node, value_node in node.value:
            if key_node.value == key:
                if index is not None and isinstance(value_node, SequenceNode):
                    if 0 <= index < len(value_node.value):
                        return _line_of(value_node.value[index])
                return _line_of(key_node)
        return _line_of(node)

    def child_node(self, key: str, index: int | None = None) -> Node | None:
        """The YAML node of ``key``'s value (item ``index`` of it), if known."""
        from ruamel.yaml.nodes import MappingNode, SequenceNode

        node = self._node
        if not isinstance(node, MappingNode):
            return None
        for key_node, value_node in node.value:
            if key_node.value == key:
                if index is None:
                    return value_node
                if isinstance(value_node, SequenceNode) and 0 <= index < len(value_node.value):
                    return value_node.value[index]
                return None
        return None

    def child(self, key: str, index: int | None = None) -> Section:
        """The mapping at ``key`` (item ``index`` of its list) as a section of its own.

        Raises:
            ConfigError: when that value is not a mapping.
        """
        value = self.values.get(key)
        if index is not None:
            value = self.get_list(key)[index]
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {_kind(value)}", index)
        name = f"{self.key}.{key}" if self.key else key
        if index is not None:
            name = f"{name}[{index}]"
        return Section(self.path, name, value, self.child_node(key, index))

    def error(self, key: str | None, problem: str, index: int | None = None) -> ConfigError:
        """A :class:`ConfigError` about ``key`` (item ``index``) of this section."""
        name = self.key if key is None else f"{self.key}.{key}" if self.key else key
        if index is not None:
            name = f"{name}[{index}]"
        return ConfigError(self.path, self.line(key, index), name, problem)

    def check_keys(self, known: Mapping[str, Any] | set[str] | frozenset[str]) -> None:
        """Refuse keys this section does not know.

        Raises:
            ConfigError: naming the first unknown key and the known ones.
        """
        for key in self.values:
            if key not in known:
                raise self.error(key, f"unknown key (known: {', '.join(sorted(known))})")

    def get_str(self, key: str, default: str | None = None) -> str | None:
        """A string value.

        Raises:
            ConfigError: when the value is not a string.
        """
        value = self.values.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_kind(value)}")
        return value

    def get_choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        """A string value that must be one of ``choices``.

        Raises:
            ConfigError: for another value.
        """
        value = self.get_str(key)
        if value is not None and value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def get_list(self, key: str) -> list[Any]:
        """A list value (a single value is a list of one; a missing one is empty)."""
        value = self.values.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        return [value]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


@final
class ConfigFile:
    """A loaded configuration file.

    Use :meth:`load`; an empty file is an empty configuration.
    """

    def __init__(self, path: str, values: dict[str, Any], node: Node | None) -> None:
        self.path = path
        self.values = values
        self._root = Section(path, "", values, node)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ConfigFile:
        """Read and check the top level of a configuration file.

        Raises:
            ConfigError: when the file cannot be read, is not valid YAML, is not a mapping
                or has an unknown section.
        """
        from ruamel.yaml import YAML
        from ruamel.yaml.error import MarkedYAMLError, YAMLError

        name = os.fspath(path)
        try:
            text = Path(name).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(name, None, None, "no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(name, None, None, f"cannot read: {exc}") from None
        yaml = YAML(typ="safe")
        try:
            node = yaml.compose(text)
            values = yaml.load(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise ConfigError(
                name, line, None, f"invalid YAML: {exc.problem or exc.context}"
            ) from None
        except YAMLError as exc:
            raise ConfigError(name, None, None, f"invalid YAML: {exc}") from None
        if values is None:
            return cls(name, {}, None)
        if not isinstance(values, dict):
            raise ConfigError(name, _line_of(node), None, "expected a mapping of sections")
        config = cls(name, values, node)
        for key in values:
            if key not in SECTIONS:
                raise ConfigError(
                    name,
                    config._root.line(str(key)),
                    str(key),
                    f"unknown section (known: {', '.join(SECTIONS)})",
                )
        return config

    def section(self, name: str) -> Section:
        """The section ``name`` (empty when the file has none).

        Raises:
            ConfigError: when the section is not a mapping.
        """
        value = self.values.get(name)
        node = self._child(name)
        if value is None:
            return Section(self.path, name, {}, node)
        if not isinstance(value, dict):
            raise ConfigError(self.path, _line_of(node), name, "expected a mapping")
        return Section(self.path, name, value, node)

    def _child(self, name: str) -> Node | None:
        return self._root.child_node(name)


def load_config(path: str | os.PathLike[str] | None = None) -> ConfigFile | None:
    """The configuration to use: ``path``, else the user's default file, else None.

    Raises:
        ConfigError: for a file that cannot be used.
    """
    if path is None:
        found = default_config_path()
        if found is None:
            return None
        path = found
    return ConfigFile.load(path)
