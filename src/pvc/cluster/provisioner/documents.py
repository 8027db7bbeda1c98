"""Named text documents: userdata and scripts are the same kind of object with a different check.

    {id, name, <kind>: text}          (kind "userdata" or "script": the text is under that key)

A kind may have a built-in document ("empty" userdata) that always exists, is created on first
use, and cannot be changed or removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import NodeExistsError

from pvc.cluster.provisioner.ids import next_id
from pvc.cluster.provisioner.store import PATHS, WHAT, docs_of, get_doc, matching
from pvc.cluster.provisioner.transactions import create_document, remove_document, update_document
from pvc.cluster.provisioner.validation import check_object_name
from pvc.core.errors import Conflict
from pvc.core.zk import ZK


@dataclass(frozen=True)
class TextDocuments:
    """The reads and writes of one kind of text document."""

    kind: str                               # the store kind (store.PATHS), also the key of the text
    noun: str                               # as answers name it: 'Created <noun> "<name>".'
    check: Callable[[Any], str]             # the text's validation (InvalidInput naming `data`)
    builtin: str | None = None              # the always-present document, if the kind has one

    def view(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": doc.get("id"), "name": doc.get("name"), self.kind: doc.get(self.kind) or ""}

    def ensure_builtin(self, zk: ZK) -> None:
        """Create the built-in document (empty) on first use; a concurrent creator may win."""
        if self.builtin is None or zk.exists(PATHS[self.kind](self.builtin)):
            return
        doc = {"id": next_id(zk, self.kind), "name": self.builtin, self.kind: ""}
        try:
            zk.create(PATHS[self.kind](self.builtin), doc, makepath=True)
        except NodeExistsError:
            pass

    def get(self, zk: ZK, name: str) -> dict[str, Any]:
        if name == self.builtin:
            self.ensure_builtin(zk)
        return get_doc(zk, self.kind, name)

    def list_all(self, zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
        self.ensure_builtin(zk)
        return [self.view(d) for d in matching(docs_of(zk, self.kind), limit)]

    def item(self, zk: ZK, name: str) -> dict[str, Any]:
        return self.view(self.get(zk, name))

    def add(self, zk: ZK, name: Any, data: Any) -> str:
        name = check_object_name(name)
        text = self.check(data)
        self.ensure_builtin(zk)
        return create_document(zk, self.kind, name, f'Created {self.noun} "{name}".',
                               lambda: {self.kind: text})

    def modify(self, zk: ZK, name: str, data: Any) -> str:
        text = self.check(data)
        self._refuse_builtin(name, "changed")
        return update_document(zk, self.kind, name, lambda doc: {**doc, self.kind: text},
                               f'Updated {self.noun} "{name}".')

    def remove(self, zk: ZK, name: str) -> str:
        self._refuse_builtin(name, "removed")
        return remove_document(zk, self.kind, name, f'Removed {self.noun} "{name}".')

    def _refuse_builtin(self, name: str, what: str) -> None:
        if name == self.builtin:
            raise Conflict(f"The {WHAT[self.kind]} '{name}' is built in and cannot be {what}.")
