"""shared.yvalidate: table tests on malformed input, round trips with real pycrdt and
Yjs updates, and properties showing that what the validator accepts is safe for pycrdt."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.yvalidate import InvalidUpdate, skip_any, validate_state_vector, validate_update
from shared.ywire import (
    encode_awareness_update,
    encode_var_bytes,
    encode_var_string,
    encode_var_uint,
    parse_awareness_update,
    read_var_bytes,
    read_var_int,
    read_var_string,
    read_var_uint,
)

FIXTURES = json.loads((Path(__file__).parent / "data" / "yjs_updates.json").read_text())
vu, vs = encode_var_uint, encode_var_string
ATTACK_UPDATE = b"\x80\x80\x80\x80\x01\x00\x00"  # claims 2**28 struct groups
ATTACK_STATE_VECTOR = b"\x80\x80\x80\x80\x01\x01\x01\x01"  # claims 2**28 entries


def update(*structs: bytes, client: bytes = b"\x01", clock: bytes = b"\x00") -> bytes:
    """One struct group of ``structs``, then an empty delete set."""
    return vu(1) + vu(len(structs)) + client + clock + b"".join(structs) + b"\x00"


def root_item(ref: int, content: bytes) -> bytes:
    """An item without origins, in the root type "t", with content ``ref``."""
    return bytes([ref]) + b"\x01" + vs("t") + content


# --- lib0 readers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("buf", "expected"),
    [
        (b"\x00", (0, 1)),
        (b"\x7f", (127, 1)),
        (b"\x80\x01", (128, 2)),
        (b"\x80\x00", (0, 2)),  # redundant, but lib0 and yrs both read it
        (b"\xff" * 7 + b"\x0f", (2**53 - 1, 8)),
    ],
)
def test_read_var_uint(buf: bytes, expected: tuple[int, int]) -> None:
    assert read_var_uint(buf, 0) == expected


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"", "truncated"),
        (b"\x80", "truncated"),
        (b"\xff\xff", "truncated"),
        (b"\x80" * 8 + b"\x01", "longer than 8 bytes"),
        (b"\xff" * 20, "longer than 8 bytes"),
        (b"\x80" * 7 + b"\x10", "above 53 bits"),
    ],
)
def test_read_var_uint_rejects(buf: bytes, reason: str) -> None:
    with pytest.raises(InvalidUpdate, match=reason):
        read_var_uint(buf, 0)


@pytest.mark.parametrize(
    ("buf", "expected"),
    [
        (b"\x00", 0),
        (b"\x40", 0),  # lib0 writes -0 this way
        (b"\x41", -1),
        (b"\x3f", 63),
        (b"\x80\x01", 64),
        (b"\xff\x7f", -(63 + (127 << 6))),
        (b"\xbf" + b"\xff" * 6 + b"\x7f", 2**55 - 1),
    ],
)
def test_read_var_int(buf: bytes, expected: int) -> None:
    if expected > 2**53:
        with pytest.raises(InvalidUpdate, match="above 53 bits"):
            read_var_int(buf, 0)
    else:
        assert read_var_int(buf, 0) == (expected, len(buf))


@pytest.mark.parametrize("buf", [b"", b"\x80", b"\xc0\x80", b"\x80" * 8 + b"\x01"])
def test_read_var_int_rejects(buf: bytes) -> None:
    with pytest.raises(InvalidUpdate):
        read_var_int(buf, 0)


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"\x02\xc3\x28", "UTF-8"),  # bad continuation byte
        (b"\x02\xc0\x80", "UTF-8"),  # overlong NUL
        (b"\x03\xed\xa0\x80", "UTF-8"),  # a surrogate
        (b"\x01\xff", "UTF-8"),
        (b"\x05abc", "past the end"),
        (b"\x85", "truncated"),
    ],
)
def test_read_var_string_rejects(buf: bytes, reason: str) -> None:
    with pytest.raises(InvalidUpdate, match=reason):
        read_var_string(buf, 0)


def test_var_string_length_is_utf8_bytes() -> None:
    text = "Zoë 🎉"
    encoded = encode_var_string(text)
    assert encoded[0] == len(text.encode()) == 9 != len(text)
    assert read_var_string(encoded, 0) == (text, len(encoded))
    assert read_var_bytes(encode_var_bytes(b"\x00\xff"), 0) == (b"\x00\xff", 3)


@pytest.mark.parametrize("n", [-1, 2**53])
def test_encode_var_uint_range(n: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_var_uint(n)


def nested(depth: int) -> bytes:
    return b"\x75\x01" * depth + b"\x7e"  # arrays of one element, then null


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"", "truncated"),
        (b"\x10", "unknown any type"),
        (b"\x7b\x00\x00", "truncated number"),
        (b"\x75" + vu(2**28), "array size exceeds"),
        (b"\x76" + vu(2**28) + b"\x00", "object size exceeds"),
        (b"\x76\x01\x02\xc3\x28\x7e", "UTF-8"),  # bad key
        (nested(33), "nested too deeply"),
    ],
)
def test_skip_any_rejects(buf: bytes, reason: str) -> None:
    with pytest.raises(InvalidUpdate, match=reason):
        skip_any(buf, 0)


def test_skip_any_accepts_32_levels() -> None:
    assert skip_any(nested(32), 0) == 65


# --- malformed updates -------------------------------------------------------------

MALFORMED_UPDATES = {
    "empty buffer": (b"", "truncated"),
    "no delete set": (b"\x00", "truncated"),
    "2**28 struct groups in 7 bytes": (ATTACK_UPDATE, "struct group count exceeds"),
    "2**28 structs": (b"\x01" + vu(2**28) + b"\x01\x00\x00", "struct count exceeds"),
    "2**28 delete set clients": (b"\x00" + vu(2**28) + b"\x00\x00", "client count exceeds"),
    "2**28 delete ranges": (b"\x00\x01\x01" + vu(2**28) + b"\x00", "range count exceeds"),
    "trailing garbage": (b"\x00\x00\x00", "trailing"),
    "trailing after item": (update(root_item(4, vs("a"))) + b"\x01", "trailing"),
    "truncated item": (update(root_item(4, vs("abc")))[:-3], "past the end|truncated"),
    "overlong group count": (b"\xff" * 9 + b"\x00", "longer than 8 bytes"),
    "client above 2**53": (update(client=b"\x80" * 7 + b"\x10"), "above 53 bits"),
    "client of 9 bytes": (update(client=b"\x81" * 8 + b"\x00"), "longer than 8 bytes"),
    "clock above 2**32": (update(clock=vu(2**32)), "above 32 bits"),
    "GC length above 2**32": (update(b"\x00" + vu(2**32)), "above 32 bits"),
    "GC with flag bits": (update(b"\x20\x05"), "flag bits"),
    "Skip with flag bits": (update(b"\x8a\x05"), "flag bits"),
    "unknown content ref 11 (move)": (update(root_item(11, b"\x00")), "unknown content ref"),
    "content ref with bit 0x10": (update(root_item(0x14, vs("a"))), "unknown content ref"),
    "JSON content": (update(root_item(2, vu(1) + vs('"x"'))), "JSON content"),
    "huge JSON count": (update(root_item(2, vu(2**28))), "JSON content"),
    "bad parent info": (update(b"\x04\x02\x01\x00" + vs("a")), "parent info"),
    "bad UTF-8 in a string": (update(root_item(4, b"\x02\xc3\x28")), "UTF-8"),
    "bad UTF-8 in a root name": (update(b"\x04\x01\x01\xff" + vs("a")), "UTF-8"),
    "bad UTF-8 in a map key": (update(b"\x28\x01" + vs("m") + b"\x01\xff\x08\x01\x7e"), "UTF-8"),
    "string past the end": (update(root_item(4, b"\x7f" + b"a")), "past the end"),
    "type ref 5 (XmlHook)": (update(root_item(7, b"\x05" + vs("hook"))), "type ref 5"),
    "type ref 7 (weak link)": (update(root_item(7, b"\x07")), "type ref 7"),
    "type ref 15": (update(root_item(7, b"\x0f")), "type ref 15"),
    "unknown any type": (update(root_item(8, b"\x01\x10")), "unknown any type"),
    "deep any nesting": (update(root_item(8, b"\x01" + nested(100))), "nested too deeply"),
    "huge any count": (update(root_item(8, vu(2**28) + b"\x7e")), "any count exceeds"),
    "huge any array": (update(root_item(8, b"\x01\x75" + vu(2**28))), "array size exceeds"),
    "embed not JSON": (update(root_item(5, vs("{"))), "not JSON"),
    "embed NaN": (update(root_item(5, vs("NaN"))), "not JSON"),
    "format value not JSON": (update(root_item(6, vs("bold") + vs("tru"))), "not JSON"),
    "binary past the end": (update(root_item(3, b"\x09\x00")), "past the end"),
    "deleted length above 2**32": (update(root_item(1, vu(2**32))), "above 32 bits"),
    "delete range above 2**32": (b"\x00\x01\x01\x01" + vu(2**32 - 1) + b"\x02", "ends above"),
    "bad origin id": (update(b"\x84" + b"\x80" * 9), "longer than 8 bytes"),
    "bad right origin clock": (update(b"\xc4\x01\x00\x01" + vu(2**32) + vs("a")), "32 bits"),
}


@pytest.mark.parametrize(("buf", "reason"), MALFORMED_UPDATES.values(), ids=MALFORMED_UPDATES)
def test_validate_update_rejects(buf: bytes, reason: str) -> None:
    with pytest.raises(InvalidUpdate, match=reason):
        validate_update(buf)


def test_max_structs() -> None:
    three = update(b"\x00\x01", b"\x00\x01", b"\x00\x01")
    assert validate_update(three, max_structs=3) is True
    with pytest.raises(InvalidUpdate, match="too many structs"):
        validate_update(three, max_structs=2)


def test_max_bytes_is_checked_first() -> None:
    with pytest.raises(InvalidUpdate, match="too large"):
        validate_update(b"\x00\x00\x00", max_bytes=2)
    assert validate_update(b"\x00\x00", max_bytes=2) is False


@pytest.mark.parametrize(
    ("buf", "nonempty"),
    [
        (b"\x00\x00", False),
        (update(b"\x0a\x05"), False),  # only a Skip
        (b"\x00\x01\x01\x00", False),  # a delete-set client without ranges
        (update(), False),  # a struct group without structs
        (update(b"\x00\x05"), True),  # a GC
        (b"\x00\x01\x01\x01\x00\x02", True),  # one deleted range
        (update(root_item(4, vs("Zoë 🎉"))), True),
        (update(root_item(8, b"\x01" + nested(32))), True),
        (bytearray(b"\x00\x00"), False),
        (memoryview(update(b"\x00\x05")), True),
    ],
)
def test_validate_update_accepts(buf: bytes, nonempty: bool) -> None:
    assert validate_update(buf) is nonempty


def test_the_attacks_are_real_for_unguarded_pycrdt() -> None:
    """The bytes rejected above make pycrdt itself reserve hundreds of megabytes."""
    script = (
        "import pycrdt, resource, sys\n"
        "try:\n"
        "    pycrdt.Doc().apply_update(bytes.fromhex(sys.argv[1]))\n"
        "except ValueError:\n"
        "    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, ATTACK_UPDATE.hex()],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert int(run.stdout) > 200_000  # KiB
    with pytest.raises(InvalidUpdate):
        validate_update(ATTACK_UPDATE)


def test_pycrdt_reads_json_content_differently() -> None:
    """Why ref 2 is refused: yrs reads count + 1 strings where Yjs reads count."""
    as_yjs_writes = update(root_item(2, vu(1) + vs('"x"')))
    with pytest.raises(ValueError, match="end of buffer"):
        pycrdt.Doc().apply_update(as_yjs_writes)
    pycrdt.Doc().apply_update(update(root_item(2, vu(1) + vs('"x"') + vs('"y"'))))


# --- state vectors and awareness ---------------------------------------------------


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (ATTACK_STATE_VECTOR, "count exceeds"),
        (b"", "truncated"),
        (b"\x01\x01\x80", "truncated"),
        (b"\x00\x00", "trailing"),
        (b"\x01\x01" + vu(2**32), "above 32 bits"),
        (b"\x01" + b"\x80" * 7 + b"\x10\x00", "above 53 bits"),
    ],
)
def test_validate_state_vector_rejects(buf: bytes, reason: str) -> None:
    with pytest.raises(InvalidUpdate, match=reason):
        validate_state_vector(buf)


def test_validate_state_vector_accepts_pycrdt_states() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    validate_state_vector(doc.get_state())
    doc.get("code", type=pycrdt.Text).insert(0, "x")
    validate_state_vector(doc.get_state())


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (vu(2**28) + b"\x01\x01", "count exceeds"),
        (b"\x01\x01\x01\x02\xc3\x28", "UTF-8"),
        (b"\x01\x01\x01\x04null\x00", "trailing"),
        (b"\x01\x01\x01\x09null", "past the end"),
        (b"\x02\x01\x01\x04null\x02\x01\x04null", "too many"),
    ],
)
def test_parse_awareness_update_rejects(buf: bytes, reason: str) -> None:
    with pytest.raises(InvalidUpdate, match=reason):
        parse_awareness_update(buf, max_entries=1)


@given(
    st.lists(
        st.tuples(st.integers(0, 2**53 - 1), st.integers(0, 2**53 - 1), st.text()),
        max_size=5,
    )
)
def test_awareness_round_trip(entries: list[tuple[int, int, str]]) -> None:
    assert parse_awareness_update(encode_awareness_update(entries)) == entries


def pycrdt_encoded(entries: list[tuple[int, int, str]]) -> bytes:
    encoder = pycrdt.Encoder()
    encoder.write_var_uint(len(entries))
    for client, clock, state in entries:
        encoder.write_var_uint(client)
        encoder.write_var_uint(clock)
        encoder.write_var_string(state)
    return encoder.to_bytes()


def test_encode_awareness_matches_pycrdt_for_ascii_only() -> None:
    ascii_only = [(7, 3, '{"user":"bob"}'), (2**40, 0, "null")]
    assert encode_awareness_update(ascii_only) == pycrdt_encoded(ascii_only)
    accented = [(7, 3, '{"user":"Zoë"}')]
    with pytest.raises(InvalidUpdate, match="trailing"):  # pycrdt frames by characters
        parse_awareness_update(pycrdt_encoded(accented))
    assert parse_awareness_update(encode_awareness_update(accented)) == accented


# --- real updates ------------------------------------------------------------------


def recorded(edit: Callable[[pycrdt.Doc[Any]], None]) -> tuple[list[bytes], bytes]:
    """Run ``edit`` on a fresh doc; return its incremental updates and its full update."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    edit(doc)
    return updates, doc.get_update()


def edit_text(doc: pycrdt.Doc[Any]) -> None:
    text = doc.get("code", type=pycrdt.Text)
    text += "def main():\n"
    text.insert(4, "Zoë 🎉")
    del text[0:3]
    text.insert(2, "bold", attrs={"bold": True, "href": "https://ex.am/ple"})
    text.format(0, 3, {"italic": True, "size": 1.5})
    text.insert_embed(1, {"image": "a.png"})


def edit_map_array(doc: pycrdt.Doc[Any]) -> None:
    meta = doc.get("meta", type=pycrdt.Map)
    meta["n"] = 42
    meta["nested"] = {"a": [1, 2.5, None, True, {"b": "ñ"}], "big": 2**60, "bin": b"\x00\xff"}
    meta["arr"] = pycrdt.Array([1, "two", pycrdt.Map({"three": 3})])
    meta["sub"] = pycrdt.Doc()
    meta["n"] = 43
    del meta["nested"]
    doc.get("list", type=pycrdt.Array).extend([[1, [2, [3]]], {"k": []}])


def edit_xml(doc: pycrdt.Doc[Any]) -> None:
    frag = doc.get("xml", type=pycrdt.XmlFragment)
    element = frag.children.append(pycrdt.XmlElement("div", {"class": "x"}))
    element.children.append(pycrdt.XmlText("inner"))
    element.attributes["id"] = "main"
    del frag.children[0]


@pytest.mark.parametrize("edit", [edit_text, edit_map_array, edit_xml])
def test_real_pycrdt_updates_validate(edit: Callable[[pycrdt.Doc[Any]], None]) -> None:
    updates, full = recorded(edit)
    assert updates
    for each in updates:
        assert validate_update(each) is True
    assert validate_update(full) is True
    assert validate_update(pycrdt.Doc().get_update()) is False


@pytest.mark.parametrize("case", FIXTURES["updates"], ids=lambda case: case["name"])
def test_real_yjs_updates(case: dict[str, Any]) -> None:
    buf = bytes.fromhex(case["hex"])
    if "rejected" in case:  # Yjs writes it, yrs reads something else
        with pytest.raises(InvalidUpdate):
            validate_update(buf)
        with pytest.raises(ValueError):
            pycrdt.Doc().apply_update(buf)
    else:
        assert validate_update(buf) is case["nonempty"]
        pycrdt.Doc().apply_update(buf)


def test_yjs_full_state_reads_the_same_in_pycrdt() -> None:
    (full,) = (u for u in FIXTURES["updates"] if u["name"] == "full state")
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(bytes.fromhex(full["hex"]))
    assert str(doc.get("code", type=pycrdt.Text)) == FIXTURES["text"]


@pytest.mark.parametrize("case", FIXTURES["stateVectors"], ids=lambda case: case["name"])
def test_real_yjs_state_vectors(case: dict[str, Any]) -> None:
    validate_state_vector(bytes.fromhex(case["hex"]))


@pytest.mark.parametrize("case", FIXTURES["awarenessUpdates"], ids=lambda case: case["name"])
def test_real_yjs_awareness(case: dict[str, Any]) -> None:
    buf = bytes.fromhex(case["hex"])
    entries = [tuple(entry) for entry in case["entries"]]
    assert parse_awareness_update(buf) == entries
    assert encode_awareness_update(parse_awareness_update(buf)) == buf


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
edits = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.integers(0, 100), st.text(min_size=1, max_size=8)),
        st.tuples(st.just("type"), st.integers(0, 100), st.text(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), st.integers(0, 100), st.integers(1, 5)),
        st.tuples(st.just("format"), st.integers(0, 100), st.integers(1, 5)),
        st.tuples(st.just("set"), st.sampled_from("abc"), json_values),
        st.tuples(st.just("unset"), st.sampled_from("abc"), st.none()),
        st.tuples(st.just("append"), st.integers(0, 100), json_values),
    ),
    max_size=12,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(edits, edits)
def test_random_edit_sequences(ours: list[tuple[str, Any, Any]], theirs: list[Any]) -> None:
    docs: list[pycrdt.Doc[Any]] = [pycrdt.Doc(), pycrdt.Doc()]
    updates: list[bytes] = []
    for doc in docs:
        doc.observe(lambda event: updates.append(event.update))
    for doc, sequence in zip(docs, (ours, theirs), strict=True):
        text = doc.get("code", type=pycrdt.Text)
        meta = doc.get("meta", type=pycrdt.Map)
        items = doc.get("items", type=pycrdt.Array)
        for op, where, what in sequence:
            # pycrdt indexes text in UTF-8 bytes and panics inside a character: edit
            # in the middle only while the text is ASCII, else append.
            size = len(text) if str(text).isascii() else 0
            if op == "type":
                text += what
            elif op == "insert":
                text.insert(min(where, size), what)
            elif op == "delete" and size:
                start = min(where, size - 1)
                del text[start : min(start + what, size)]
            elif op == "format" and size:
                start = min(where, size - 1)
                text.format(start, min(start + what, size), {"bold": where % 2 == 0})
            elif op == "set":
                meta[where] = what
            elif op == "unset" and where in meta:
                del meta[where]
            elif op == "append":
                items.append(what)
    for update_ in updates:
        assert validate_update(update_) is True
    docs[0].apply_update(docs[1].get_update())
    docs[1].apply_update(docs[0].get_update(docs[1].get_state()))
    for doc in docs:
        full = doc.get_update()
        assert validate_update(full) is bool(updates)
        validate_state_vector(doc.get_state())


# --- properties: nothing but InvalidUpdate, and accepted means safe for pycrdt -----------


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_invalid_update(buf: bytes) -> None:
    for check in (validate_update, validate_state_vector, parse_awareness_update):
        try:
            check(buf)
        except InvalidUpdate:
            pass


def corpus() -> list[bytes]:
    found = [recorded(edit)[1] for edit in (edit_text, edit_map_array, edit_xml)]
    found += [u for edit in (edit_text, edit_map_array) for u in recorded(edit)[0]]
    found += [bytes.fromhex(u["hex"]) for u in FIXTURES["updates"] if "rejected" not in u]
    return found


CORPUS = corpus()
mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0), st.integers(0, 255)),
    min_size=1,
    max_size=4,
)


def mutate(buf: bytes, changes: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(buf)
    for kind, where, value in changes:
        at = where % (len(out) + 1)
        if kind == "insert":
            out.insert(at, value)
        elif out and kind == "flip":
            out[at % len(out)] ^= value or 0x80
        elif out:
            del out[at % len(out)]
    return bytes(out)


@pytest.fixture(scope="module")
def peak_rss_before() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(original=st.sampled_from(CORPUS), changes=mutations)
def test_accepted_mutations_are_safe_for_pycrdt(
    peak_rss_before: int, original: bytes, changes: list[tuple[str, int, int]]
) -> None:
    buf = mutate(original, changes)
    try:
        validate_update(buf)
    except InvalidUpdate:
        return
    try:
        pycrdt.Doc().apply_update(buf)
    except Exception:
        pass  # any clean error is fine; a panic (BaseException) or a crash is not
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_rss_before
    assert grown_kib < 50_000, f"pycrdt peak memory grew {grown_kib} KiB on {buf.hex()}"
