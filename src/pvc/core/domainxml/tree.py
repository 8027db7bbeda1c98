"""The text <-> tree boundary: a hostile-input-safe loader and the canonical serializer.

Loading strips indentation and serializing re-indents it (`_strip_blanks` and `_indent` are
exact inverses), so canonical output is a fixed point.
"""

from __future__ import annotations

from copy import deepcopy

from lxml import etree

from pvc.core.domainxml.model import MAX_XML_BYTES, InvalidDomainXML


def _parser(encoding: str | None) -> etree.XMLParser:
    """A parser that cannot be turned against the host: no entities, no DTD, no network (XXE)."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        collect_ids=False,
        encoding=encoding,
    )


def _load_root(xml: str | bytes, what: str = "domain XML") -> etree._Element:
    if isinstance(xml, str):
        try:
            data = xml.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidDomainXML(f"{what} is not XML: it contains unencodable characters") from None
        encoding: str | None = "utf-8"
    elif isinstance(xml, bytes | bytearray):
        data, encoding = bytes(xml), None
    else:
        raise InvalidDomainXML(f"{what} must be text, not {type(xml).__name__}")
    if not data.strip():
        raise InvalidDomainXML(f"{what} is empty")
    if len(data) > MAX_XML_BYTES:
        raise InvalidDomainXML(f"{what} is larger than {MAX_XML_BYTES // 1024} KiB")
    try:
        root = etree.fromstring(data, _parser(encoding))
    except etree.XMLSyntaxError as exc:
        raise InvalidDomainXML(f"{what} is not XML: {exc.msg or exc}") from None
    except (etree.LxmlError, ValueError, LookupError) as exc:
        raise InvalidDomainXML(f"{what} is not XML: {exc}") from None
    if root is None:
        raise InvalidDomainXML(f"{what} is not XML: no root element")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise InvalidDomainXML(f"{what}: DOCTYPE and entity declarations are not allowed")
    _strip_blanks(root)
    return root


def _mixed(el: etree._Element) -> bool:
    return bool((el.text or "").strip()) or any((child.tail or "").strip() for child in el)


def _strip_blanks(root: etree._Element) -> None:
    """Drop indentation whitespace (the exact inverse of `_indent`; mixed content is left alone).

    Done here rather than with libxml2's remove_blank_text, whose heuristics keep long
    whitespace runs and would make canonical output depend on nesting depth.
    """
    for el in root.iter(etree.Element):
        if len(el) and not _mixed(el):
            if el.text is not None and not el.text.strip():
                el.text = None
            for child in el:
                if child.tail is not None and not child.tail.strip():
                    child.tail = None


def _indent(el: etree._Element, level: int = 0) -> None:
    """Pretty-print like etree.indent, but leave mixed content (text beside elements) alone,
    so whitespace the author put there survives and canonical output is a fixed point."""
    if not len(el) or _mixed(el):
        return
    el.text = "\n" + "  " * (level + 1)
    for child in el:
        _indent(child, level + 1)
        child.tail = "\n" + "  " * (level + 1)
    el[-1].tail = "\n" + "  " * level


def _serialize(root: etree._Element) -> str:
    _indent(root)
    root.tail = None
    return etree.tostring(root, encoding="unicode") + "\n"


def _elements(el: etree._Element) -> list[etree._Element]:
    """Child elements only (comments and processing instructions are not part of the model)."""
    return list(el.iterchildren(tag=etree.Element))


def _detached(el: etree._Element) -> etree._Element:
    """A standalone copy of an element, declaring only the namespaces it really uses."""
    copy = deepcopy(el)
    copy.tail = None
    etree.cleanup_namespaces(copy)
    return copy


def _raw(el: etree._Element) -> str:
    """An element as standalone XML text (see `_detached`)."""
    if not el.nsmap:  # the common case: nothing to clean up, no copy needed
        return etree.tostring(el, encoding="unicode", with_tail=False)
    return etree.tostring(_detached(el), encoding="unicode")


def _from_raw(raw: str) -> etree._Element:
    return _load_root(raw, f"element {raw[:40]!r}")
