"""The adapters' shared incremental JSON parser: what TAXII pages and MISP feed manifests need of it
(the JSON feed's use is tested in tests/test_feed_json.py)."""

from __future__ import annotations

import pytest

from ctd.adapters.jsonstream import MAX_ITEM, JsonError, JsonStream


def bytewise(stream: JsonStream, data: bytes) -> list:
    """The items of ``data`` fed one byte at a time."""
    items = [item for i in range(len(data)) for item in stream.feed(data[i : i + 1])]
    return items + stream.finish()


@pytest.mark.parametrize(
    "doc",
    [
        b'{"more": true, "next": "n1", "objects": [{"a": 1}, 2]}',
        b'{"objects": [{"a": 1}, 2], "next": "n1", "more": true}',
        b'{"x": {"more": false, "next": "no"}, "more": true, "objects": [{"a": 1}, 2], "next": "n1"}',
    ],
)
def test_top_level_fields_are_kept_before_or_after_the_list(doc):
    """Named top-level scalars are kept wherever they are; the same keys nested deeper are not."""
    stream = JsonStream(("objects",), fields=("more", "next"))
    assert bytewise(stream, doc) == [{"a": 1}, 2]
    assert stream.fields == {"more": True, "next": "n1"}


def test_a_field_holding_a_container_is_not_kept():
    """A named key whose value is an object or a list is not a field (only scalars are)."""
    stream = JsonStream(("objects",), fields=("next",))
    assert bytewise(stream, b'{"next": {"v": "n"}, "objects": []}') == []
    assert stream.fields == {}


def test_optional_path_may_be_absent_but_the_document_must_be_an_object():
    """With optional, an object without the key has no items; a document that is not an object still fails."""
    assert bytewise(JsonStream(("objects",), optional=True), b'{"more": false}') == []
    with pytest.raises(JsonError, match="TAXII envelope: no key 'objects'"):
        bytewise(JsonStream(("objects",), name="TAXII envelope", optional=True), b"[1, 2]")
    with pytest.raises(JsonError, match="no key 'objects'"):
        bytewise(JsonStream(("objects",)), b'{"more": false}')


def test_pairs_give_the_keys_of_a_top_level_object():
    """With pairs, a top-level object's items come with their keys (a MISP feed manifest)."""
    stream = JsonStream((), pairs=True)
    assert bytewise(stream, b'{"u1": {"timestamp": 1}, "u2": "x", "u3": [1]}') == [
        ("u1", {"timestamp": 1}),
        ("u2", "x"),
        ("u3", [1]),
    ]


def test_item_cap_names_the_path():
    """An item over MAX_ITEM fails with the path as the caller names it."""
    strings = b",".join([b'"' + b"x" * 1000 + b'"'] * (MAX_ITEM // 1000 + 10))
    doc = b'{"objects": [{"d": [' + strings + b"]}]}"
    stream = JsonStream(("objects",), name="TAXII envelope")
    with pytest.raises(JsonError, match=f"an item of TAXII envelope 'objects' is larger than {MAX_ITEM} bytes"):
        stream.feed(doc)
