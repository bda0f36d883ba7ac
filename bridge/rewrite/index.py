"""What each function returns once the tree is rewritten, for every file of one run.

A call is awaited plainly only where the callee is known; this index is how the
rewrite of one file knows about functions and methods converted in another. It
is built from the planner's pass over each file (no second parse) and is small
and picklable, so worker processes can build and share it.

Kinds, as seen by a caller after the rewrite:

* ``"deferred"``: returns a Deferred (``@inlineCallbacks`` left as it is, or
  ``@deferred_api async def`` for the twisted target);
* ``"new"``: a coroutine function that this run made one (the asyncio target);
* ``"coroutine"``: an ``async def`` that already was one;
* ``"plain"``: anything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["AWAITABLE", "COROUTINE", "ClassInfo", "FileIndex", "ProjectIndex"]

AWAITABLE = frozenset({"deferred", "new", "coroutine"})
COROUTINE = frozenset({"new", "coroutine"})


@dataclass
class ClassInfo:
    """A class's own methods (name -> kind) and the names of its bases as written."""

    bases: list[str] = field(default_factory=list)
    methods: dict[str, str] = field(default_factory=dict)


@dataclass
class FileIndex:
    """One module's part of the index."""

    functions: dict[str, str] = field(default_factory=dict)  # module-level function -> kind
    classes: dict[str, ClassInfo] = field(default_factory=dict)
    patched: set[str] = field(default_factory=set)  # names the module replaces at run time (mock.patch...)


@dataclass
class ProjectIndex:
    """The union of the files' indexes: names may repeat across files, so kinds are sets."""

    functions: dict[str, set[str]] = field(default_factory=dict)
    methods: dict[str, set[str]] = field(default_factory=dict)  # attribute name -> kinds, over every class
    classes: dict[str, list[ClassInfo]] = field(default_factory=dict)
    patched: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, files: Iterable[FileIndex]) -> ProjectIndex:
        index = cls()
        for one in files:
            index.add(one)
        return index

    def add(self, one: FileIndex) -> None:
        self.patched |= one.patched
        for name, kind in one.functions.items():
            self.functions.setdefault(name, set()).add(kind)
        for name, info in one.classes.items():
            self.classes.setdefault(name, []).append(info)
            for method, kind in info.methods.items():
                self.methods.setdefault(method, set()).add(kind)

    def function_kinds(self, name: str) -> set[str]:
        return self.functions.get(name, set())

    def method_kinds(self, attr: str) -> set[str]:
        """Kinds of every method called ``attr`` in the tree: what a call on an unknown receiver may be."""
        return self.methods.get(attr, set())

    def method_of(self, class_name: str, attr: str, local: dict[str, ClassInfo]) -> str | None:
        """The kind of ``self.attr`` in ``class_name`` (its own, else its bases', first found), or None."""
        seen: set[str] = set()
        todo = [class_name]
        while todo:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            infos = [local[name]] if name in local else self.classes.get(name, [])
            kinds = {info.methods[attr] for info in infos if attr in info.methods}
            if len(kinds) == 1:
                return kinds.pop()
            if kinds:
                return None  # two classes of that name disagree
            for info in infos:
                todo += [base.rsplit(".", 1)[-1] for base in info.bases]
        return None
