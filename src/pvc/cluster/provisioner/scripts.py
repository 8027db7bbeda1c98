"""Provisioning scripts: Python run by the provisioner job (pvc.worker.provisioner).

    {id, name, script}

A script is only parsed here (never run): it must compile and define `class VMBuilderScript`
extending VMBuilder, so a broken script is refused when stored rather than when a VM is built.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from pvc.cluster.provisioner.ids import next_id
from pvc.cluster.provisioner.store import docs_of, get_doc, matching
from pvc.cluster.provisioner.transactions import Op, refuse_existing, refuse_used, transact
from pvc.cluster.provisioner.validation import check_object_name, document_text
from pvc.core import schema
from pvc.core.errors import InvalidInput
from pvc.core.zk import ZK, op_create, op_delete, op_set


def check_script(value: Any, field: str = "data") -> str:
    """A provisioning script: Python that compiles and defines `class VMBuilderScript(VMBuilder)`."""
    text = document_text(value, field)
    if not text.strip():
        raise InvalidInput(f"{field}: the script is empty; it must define class VMBuilderScript(VMBuilder)")
    try:
        tree = ast.parse(text, filename="<script>")
    except SyntaxError as exc:
        raise InvalidInput(f"{field}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise InvalidInput(f"{field}: the script cannot be parsed: {exc}") from None
    classes = [node for node in tree.body
               if isinstance(node, ast.ClassDef) and node.name == "VMBuilderScript"]
    if not classes:
        raise InvalidInput(f"{field}: the script does not define class VMBuilderScript (a subclass of "
                           f"VMBuilder; see the examples)")
    bases = [ast.unparse(base) for base in classes[-1].bases]
    if not any(base.split(".")[-1] == "VMBuilder" for base in bases):
        raise InvalidInput(f"{field}: class VMBuilderScript must extend VMBuilder (from pvcapid.vmbuilder "
                           f"import VMBuilder), not {', '.join(bases) or 'object'}")
    return text


def script_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": doc.get("id"), "name": doc.get("name"), "script": doc.get("script") or ""}


def get_script(zk: ZK, name: str) -> dict[str, Any]:
    return get_doc(zk, "script", name)


def list_scripts(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    return [script_view(d) for d in matching(docs_of(zk, "script"), limit)]


def script_item(zk: ZK, name: str) -> dict[str, Any]:
    return script_view(get_script(zk, name))


def add_script(zk: ZK, name: Any, data: Any) -> str:
    name = check_object_name(name)
    text = check_script(data)

    def plan(_lock: Op) -> tuple[list[Op], str]:
        refuse_existing(zk, "script", name)
        doc = {"id": next_id(zk, "script"), "name": name, "script": text}
        return [op_create(schema.script(name), doc)], f'Created provisioning script "{name}".'

    return transact(zk, plan)


def modify_script(zk: ZK, name: str, data: Any) -> str:
    text = check_script(data)

    def plan(_lock: Op) -> tuple[list[Op], str]:
        doc = get_script(zk, name)
        return ([op_set(schema.script(name), {**doc, "script": text})],
                f'Updated provisioning script "{name}".')

    return transact(zk, plan)


def remove_script(zk: ZK, name: str) -> str:
    def plan(_lock: Op) -> tuple[list[Op], str]:
        get_script(zk, name)
        refuse_used(zk, "script", name)
        return [op_delete(schema.script(name))], f'Removed provisioning script "{name}".'

    return transact(zk, plan)
