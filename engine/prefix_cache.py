"""A trie over token ids: which resident sequences hold which prompt prefixes.

Matching a prompt costs about its length, whatever the number of cached
sequences. Every node lists the sequences whose token path passes through it."""

from __future__ import annotations


class _Node:
    __slots__ = ("children", "seqs")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.seqs: set[int] = set()


class PrefixIndex:
    def __init__(self) -> None:
        self._root = _Node()
        self._paths: dict[int, list[_Node]] = {}  # seq id -> nodes along its path
        self._tokens: dict[int, list[int]] = {}

    def extend(self, seq_id: int, tokens: list[int]) -> None:
        """Append tokens to a sequence's path (creating the path if new)."""
        path = self._paths.setdefault(seq_id, [])
        self._tokens.setdefault(seq_id, []).extend(tokens)
        node = path[-1] if path else self._root
        for t in tokens:
            child = node.children.get(t)
            if child is None:
                child = node.children[t] = _Node()
            child.seqs.add(seq_id)
            path.append(child)
            node = child

    def truncate(self, seq_id: int, length: int) -> None:
        """Keep only the first `length` tokens of a sequence's path."""
        path = self._paths.get(seq_id)
        if path is None:
            return
        tokens = self._tokens[seq_id]
        for node in path[length:]:
            node.seqs.discard(seq_id)
        # Sets shrink along a path, so the first emptied node roots the dead subtree.
        for k in range(length, len(path)):
            if not path[k].seqs:
                parent = path[k - 1] if k else self._root
                del parent.children[tokens[k]]
                break
        del path[length:], tokens[length:]
        if not path:
            del self._paths[seq_id], self._tokens[seq_id]

    def remove(self, seq_id: int) -> None:
        self.truncate(seq_id, 0)

    def longest_match(self, tokens: list[int]) -> tuple[int, set[int]]:
        """(length, sequence ids) of the longest cached prefix of tokens."""
        node, depth = self._root, 0
        for t in tokens:
            child = node.children.get(t)
            if child is None or not child.seqs:
                break
            node, depth = child, depth + 1
        return depth, (set(node.seqs) if depth else set())
