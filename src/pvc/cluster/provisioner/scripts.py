"""Provisioning scripts: Python run by the provisioner job (pvc.worker.provisioner).

    {id, name, script}

A script is only parsed here (never run): it must compile and define `class VMBuilderScript`
extending VMBuilder, so a broken script is refused when stored rather than when a VM is built.
Reads and writes are SCRIPTS' (documents.TextDocuments).
"""

from __future__ import annotations

import ast
from typing import Any

from pvc.cluster.provisioner.documents import TextDocuments
from pvc.cluster.provisioner.validation import document_text
from pvc.core.errors import InvalidInput


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


SCRIPTS = TextDocuments("script", "provisioning script", check_script)
