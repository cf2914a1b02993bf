"""YAML read safely: a size cap per file, fleet's own bounded composer, no Python tags.

Used for inventories and playbooks: a hostile document (deep nesting, "billion laughs"
alias expansion, a huge file) fails fast with an error that names the file and line.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fleet.errors import InventoryError, YamlLimitError

try:  # libyaml's parser is much faster; the composing below is fleet's own either way.
    from yaml import CSafeLoader as _SafeLoaderBase
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoaderBase  # type: ignore[assignment]

from fleet.hosts.model import Unsafe

# Limits against hostile or mistaken input (an inventory is a few KiB in practice).
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_YAML_DEPTH = 100
MAX_YAML_NODES = 1_000_000  # nodes after expanding aliases: stops "billion laughs"


def read_bytes(path: Path) -> bytes:
    """A regular file's bytes, refusing anything larger than MAX_FILE_BYTES."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InventoryError("not a regular file", path=str(path))
        if info.st_size > MAX_FILE_BYTES:
            raise InventoryError(
                f"file is {info.st_size} bytes; fleet reads inventory files of at most "
                f"{MAX_FILE_BYTES} bytes",
                path=str(path),
                fix="check this is the file you meant, or split it into several files",
            )
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc
    if len(data) > MAX_FILE_BYTES:  # grew while we looked
        raise InventoryError(f"file is larger than {MAX_FILE_BYTES} bytes", path=str(path))
    return data


def read_yaml(path: Path) -> tuple[Any, dict[int, dict[Any, int]]]:
    """A YAML file read the safe, bounded way inventories are: (document, key lines).

    Key lines map ``id(mapping) -> key -> line``. Playbooks use it too; errors are
    InventoryError with the file, line and column.
    """
    loaded = load_structured(read_bytes(path), path)
    return loaded.document, loaded.key_lines


class _Loader(_SafeLoaderBase):
    """A safe YAML loader that records key lines and refuses bombs and deep nesting.

    PyYAML's composer recurses (libyaml's crashes the process on ~100k nested brackets) and
    shares aliased nodes, so expansion only bites later. This one composes iteratively,
    counts the nodes each value expands to, and stops at MAX_YAML_NODES or MAX_YAML_DEPTH.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.key_lines: dict[int, dict[Any, int]] = {}  # id(mapping) -> key -> line
        self.duplicates: list[tuple[str, int, int]] = []  # key, line, column

    def get_single_data(self) -> Any:
        node = self._compose_document()
        return None if node is None else self.construct_document(node)

    def _event(self) -> Any:
        # The stubs type events and marks loosely (two Mark classes); fleet treats them as Any.
        return self.get_event()

    def _resolve(self, kind: type[Node], value: str | None, implicit: Any) -> str:
        resolve: Callable[..., str] = self.resolve
        return resolve(kind, value, implicit)

    def _compose_document(self) -> Node | None:
        self._event()  # stream start
        if self.check_event(StreamEndEvent):
            self._event()
            return None
        document_start = self._event()
        root = self._compose_root()
        self._event()  # document end
        if not self.check_event(StreamEndEvent):
            extra = self._event()
            raise ComposerError(
                "expected a single document in the stream",
                document_start.start_mark,
                "but found another document",
                extra.start_mark,
            )
        self._event()
        return root

    def _compose_root(self) -> Node:
        anchors: dict[str, Node] = {}
        sizes: dict[int, int] = {}  # id(node) -> nodes it expands to
        open_nodes: list[tuple[Node, list[Node], list[int]]] = []  # node, items, [size]
        while True:
            event = self._event()
            start: Any = event.start_mark
            end: Any = event.end_mark
            anchor: Any = getattr(event, "anchor", None)
            if isinstance(event, AliasEvent):
                node = anchors.get(anchor)
                if node is None:
                    raise ComposerError(None, None, f"found undefined alias {anchor!r}", start)
                if id(node) not in sizes:
                    raise YamlLimitError(
                        f"alias *{anchor} refers to a collection that contains it",
                        start,
                    )
                size = sizes[id(node)]
            elif isinstance(event, ScalarEvent):
                tag = event.tag
                if tag is None or tag == "!":
                    tag = self._resolve(ScalarNode, event.value, event.implicit)
                node = ScalarNode(tag, event.value, start, end, event.style)
                self._anchor(anchors, anchor, node, start)
                size = sizes[id(node)] = 1
            elif isinstance(event, SequenceStartEvent | MappingStartEvent):
                kind = SequenceNode if isinstance(event, SequenceStartEvent) else MappingNode
                tag = event.tag
                if tag is None or tag == "!":
                    tag = self._resolve(kind, None, event.implicit)
                node = kind(tag, [], start, None, flow_style=event.flow_style)
                self._anchor(anchors, anchor, node, start)
                if len(open_nodes) >= MAX_YAML_DEPTH:
                    raise YamlLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep", start)
                open_nodes.append((node, [], [1]))
                continue
            elif isinstance(event, SequenceEndEvent | MappingEndEvent):
                node, items, total = open_nodes.pop()
                node.end_mark = end
                if isinstance(node, MappingNode):
                    node.value = list(zip(items[::2], items[1::2], strict=True))
                    self._note_duplicates(node)
                else:
                    node.value = items
                size = sizes[id(node)] = total[0]
            else:  # pragma: no cover - libyaml emits nothing else inside a document
                raise YamlLimitError(f"unexpected YAML event {event}", start)
            if not open_nodes:
                return node
            parent_items, parent_total = open_nodes[-1][1], open_nodes[-1][2]
            parent_items.append(node)
            parent_total[0] += size
            if parent_total[0] > MAX_YAML_NODES:
                raise YamlLimitError(
                    f"the document expands to more than {MAX_YAML_NODES} values through "
                    "aliases (a 'billion laughs' document?)",
                    start,
                )

    @staticmethod
    def _anchor(anchors: dict[str, Node], anchor: Any, node: Node, mark: Any) -> None:
        if anchor is None:
            return
        if anchor in anchors:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                anchors[anchor].start_mark,
                "second occurrence",
                mark,
            )
        anchors[anchor] = node

    def _note_duplicates(self, node: MappingNode) -> None:
        seen: set[tuple[str, str]] = set()
        for key, _value in node.value:
            if isinstance(key, ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    mark = key.start_mark
                    self.duplicates.append((key.value, mark.line + 1, mark.column + 1))
                seen.add((key.tag, key.value))


def _construct_map(loader: _Loader, node: MappingNode) -> Iterator[dict[Any, Any]]:
    """Build a mapping like SafeConstructor does, recording the line of every key."""
    data: dict[Any, Any] = {}
    yield data
    loader.flatten_mapping(node)  # '<<' merge keys
    lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=False)
        try:
            hash(key)
        except TypeError:
            raise ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found a key that is a list or mapping",
                key_node.start_mark,
            ) from None
        data[key] = loader.construct_object(value_node, deep=False)
        lines[key] = key_node.start_mark.line + 1
    loader.key_lines[id(data)] = lines


def _construct_unsafe(loader: _Loader, node: Node) -> Unsafe:
    if not isinstance(node, ScalarNode):
        raise ConstructorError(
            None, None, "fleet supports !unsafe on strings only", node.start_mark
        )
    return Unsafe(loader.construct_scalar(node))


def _construct_vault(loader: _Loader, node: Node) -> NoReturn:
    raise ConstructorError(
        None, None, "vault-encrypted values (!vault) cannot be read by fleet", node.start_mark
    )


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


_Loader.add_constructor("!unsafe", _construct_unsafe)


_Loader.add_constructor("!vault", _construct_vault)


_Loader.add_constructor("!vault-encrypted", _construct_vault)


def _json_object(pairs: dict[str, Any]) -> Any:
    """JSON objects, reading Ansible's ``{"__ansible_unsafe": "..."}`` back as Unsafe."""
    if len(pairs) == 1 and isinstance(pairs.get("__ansible_unsafe"), str):
        return Unsafe(pairs["__ansible_unsafe"])
    return pairs


@dataclass
class Loaded:
    """A parsed YAML/JSON document with the line of each mapping key (YAML only)."""

    document: Any
    key_lines: dict[int, dict[Any, int]] = field(default_factory=dict)  # id(mapping) -> ...
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)  # key, line, column

    def line(self, mapping: object, key: object) -> int | None:
        return self.key_lines.get(id(mapping), {}).get(key)


def load_structured(data: bytes, path: Path) -> Loaded:
    """Parse JSON or YAML (JSON first, like Ansible) into a Loaded."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InventoryError(
            "not UTF-8 text", path=str(path), line=line, fix="save the file as UTF-8"
        ) from None
    try:
        return Loaded(json.loads(text, object_hook=_json_object))
    except (ValueError, RecursionError):
        pass
    loader = _Loader(text)
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, path) from None
    except YamlLimitError as exc:
        raise InventoryError(
            f"YAML refused: {exc}",
            path=str(path),
            line=exc.mark.line + 1,
            column=exc.mark.column + 1,
            fix="inventories need neither deep nesting nor aliases that multiply",
        ) from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"invalid YAML: {exc}", path=str(path)) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InventoryError(f"invalid YAML value: {exc}", path=str(path)) from None
    finally:
        loader.dispose()
    return Loaded(document, loader.key_lines, loader.duplicates)


def _yaml_error(exc: yaml.MarkedYAMLError, path: Path) -> InventoryError:
    """A YAML syntax error as 'file:line:column: what was expected'."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    fix = "check the indentation and quoting around this line"
    if "could not determine a constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '").replace("tag:yaml.org,2002:", "!!")
        problem = f"the YAML tag {tag!r} is not allowed"
        fix = "fleet's safe YAML loader builds no Python objects; remove the tag"
    elif exc.context and exc.context_mark is not None and exc.context_mark is not mark:
        problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
    elif exc.context:
        problem = f"{exc.context}: {problem}"
    return InventoryError(
        f"invalid YAML: {problem}",
        path=str(path),
        line=None if mark is None else mark.line + 1,
        column=None if mark is None else mark.column + 1,
        fix=fix,
    )


def type_name(value: object) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }.get(type(value), type(value).__name__)


def warn_duplicates(warn: Callable[[str], None], path: Path, loaded: Loaded) -> None:
    # Ansible warns about duplicate keys and uses the last value; so does fleet.
    for key, line, column in loaded.duplicates:
        warn(f"{path}:{line}:{column}: duplicate key {key!r}; the last value is used")
