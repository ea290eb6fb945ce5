"""Checks on a composed YAML document before it becomes Python objects: repeated keys and alias bombs.

PyYAML keeps the last of two equal keys without a word (a second ``train:`` section silently drops the first
one's keys), and it shares aliased nodes, so a few hundred bytes of nested aliases (``b: [*a, *a, ...]``,
"billion laughs") compose instantly but expand exponentially once OmegaConf copies them. Both are checked on the
node graph, where each node is visited once, so the checks cost time linear in the file, not in the expansion.
"""

from __future__ import annotations

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_ALIAS_COPIES = 10_000
"""Nodes that aliases may add to a config, once each alias is replaced by a copy of what it names (real configs
alias a few small blocks: hundreds). A large file written out in full is not limited."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlShapeError(ValueError):
    """A composed document that is refused; the message names the key and lines (the caller adds the file)."""


def expanded_size(root: Node) -> tuple[int, int]:
    """``(distinct nodes, nodes once every alias is expanded)`` of ``root``, counted in one pass over the shared
    graph (the expanded count of a bomb is a big but exact Python integer; nothing is expanded)."""
    sizes: dict[int, int] = {}
    # Post-order walk without recursion (a deep document must not hit Python's recursion limit).
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(child), 0) for child in children)
        sizes[id(node)] = total
    return len(sizes), sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_no_alias_bomb(root: Node) -> None:
    """Raise when aliases add more than :data:`MAX_ALIAS_COPIES` nodes to ``root``."""
    distinct, expanded = expanded_size(root)
    if expanded - distinct > MAX_ALIAS_COPIES:
        raise YamlShapeError(
            f"its aliases (*name) expand to more than {MAX_ALIAS_COPIES:,} copied values, far beyond any experiment "
            f"(an alias bomb, or aliases nested by mistake); refused without expanding it. Write the values out, "
            f"or alias only small blocks."
        )


def check_no_duplicate_keys(root: Node) -> None:
    """Raise for the first mapping that holds one key twice, naming the dotted key and both line numbers.

    Keys brought in by a merge (``<<: *defaults``) may be overridden: that is what merging is for.
    """
    seen_nodes: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node.value))
        elif isinstance(node, MappingNode):
            first_line: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = key_node.value if isinstance(key_node, ScalarNode) else repr(key_node.value)
                line = key_node.start_mark.line + 1
                dotted = f"{path}.{key}" if path else key
                identity = (key_node.tag, key)  # `1` and `"1"` are different keys
                if identity in first_line:
                    raise YamlShapeError(
                        f"the key '{dotted}' appears twice (line {first_line[identity]} and line {line}); YAML would "
                        f"keep only the second and silently drop the first. Merge them into one entry."
                    )
                first_line[identity] = line
                stack.append((value_node, dotted))
