"""Hostile and broken bodies for POST /mutate, shared by tests/test_fuzz.py and bench/fuzz.py.

Every generator is a plain function of a `random.Random`, and `case(rng)` picks one of them:

- `bench/fuzz.py` draws input number i of a run from `random.Random(f"{seed}:{i}")`, so 100,000 inputs
  cost a few seconds of generation and any single one is reproduced by its seed and index alone
  (`python3 -m bench.fuzz --seed N --show I`).
- The tests hand the same functions hypothesis's `st.randoms()`: each call on that Random is a
  hypothesis choice, so a failing input shrinks and replays like any hypothesis example.

Why not hypothesis strategies for both: drawing them outside a test (`strategy.example()`) is slow
and warns, and the benchmark must not depend on a test framework. Only the Random methods that
hypothesis's Random also records are used (random, randint, choice, getrandbits, randbytes).

Generators (`KINDS`): mutations of the recorded AdmissionReviews (any node replaced by another JSON
type, deleted, duplicated), hostile strings (control characters and NUL, lone surrogates written as
`\\ud800` escapes, RTL marks, …) in names, annotation keys and values, the podpatterns annotations
with hostile values, huge strings and many containers, nesting around and beyond orjson's depth
limit of 1024, duplicate keys written as JSON text, and byte-level garbage (random bytes, truncated
JSON, invalid UTF-8, BOM, UTF-16, empty body, wrong or missing content-type).
"""

from __future__ import annotations

import copy
import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "admission-reviews"
MAX_BODY = 3 * 1024 * 1024  # the server's default --max-body-bytes
ENTRIES = ("log-shipper", "json-log-adapter", "db-ambassador")
PARAMETERS = {"log-shipper": ("endpoint", "logDir"), "json-log-adapter": ("logDir", "timeKey"),
              "db-ambassador": ("upstream", "port")}
PREFIX = "podpatterns.io"
JSON_TYPE = "application/json"


@dataclass
class Case:
    kind: str  # the generator that made it
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": JSON_TYPE})
    # False for a header value that HTTP forbids (a DEL character): the HTTP parser refuses such a request
    # before the application sees it (webhook/server/protocol.py answers it with a JSON 400 all the same).
    valid_http: bool = True


# --- the seeds: the recorded reviews, and a few of them annotated so that injection runs deep ---------

def _seeds() -> list[dict[str, Any]]:
    recorded = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    if not recorded:
        raise RuntimeError(f"no recorded AdmissionReviews in {FIXTURES}")
    creates = [r for r in recorded if r["request"]["operation"] == "CREATE"]
    annotated = []
    for review in creates:
        for annotations in ({f"{PREFIX}/inject": "log-shipper, json-log-adapter, db-ambassador",
                             f"db-ambassador.{PREFIX}/upstream": "pg.prod.svc:5432"},
                            {f"{PREFIX}/inject": "db-ambassador", f"db-ambassador.{PREFIX}/upstream": "pg:5432",
                             f"db-ambassador.{PREFIX}/port": "6432"}):
            variant = copy.deepcopy(review)
            metadata = variant["request"]["object"].setdefault("metadata", {})
            metadata["annotations"] = {**metadata.get("annotations", {}), **annotations}
            annotated.append(variant)
    return recorded + annotated


SEEDS = _seeds()
SEED_TEXT = [json.dumps(s) for s in SEEDS]
# Reviews that get something injected as they are: the hostile parts then reach the patch building.
INJECTING = [t for s, t in zip(SEEDS, SEED_TEXT) if f"{PREFIX}/inject" in s["request"]["object"]
             .get("metadata", {}).get("annotations", {}) and s["request"]["operation"] == "CREATE"]


def seed(rng: random.Random, injecting: bool = False) -> dict[str, Any]:
    """A fresh copy of a seed review (annotated for injection when `injecting`)."""
    return json.loads(rng.choice(INJECTING if injecting else SEED_TEXT))


# --- values -----------------------------------------------------------------------------------------

HOSTILE_TEXT = [
    "", " ", "\x00", "a\x00b", "\n", "\r\n", "\t", "\x1b[31mred", "\x7f", "\x01\x02\x03", "line\nsecond",
    "\u202eevil\u202c", "\u200f", "\u200b", "\ufeff", "e\u0301", "🐳", "\U0010ffff", "\ufffd", "日本語",
    "\ud800", "\udfff", "a\udc00b", "\ud83d", "~", "/", "~1", "~0", "a/b~c", "..", "../../etc/passwd", "$", "${",
    "${params.upstream}", "$${pod.name}", "${pod.name}", "{{ .Values }}", "%s%n", "'", '"', "\\", "\\u0000",
    ",", ", ,", "null", "true", "0", "-1", "1e400", "NaN", "<script>", "' OR 1=1 --", "\u0085", "\u2028", "\u2029",
]
PORTS = ["0", "1", "1023", "1024", "5432", "65535", "65536", "-5432", "+5432", " 5432 ", "5432\n", "0x1538", "١٢٣٤",
         "99999999999999999999", "9" * 19, "1e3", "5432.0", "", "fast", "true"]
UPSTREAMS = ["pg:5432", "pg.prod.svc:5432", "pg:", ":5432", "pg:5432\n-x", "pg:5432 ", "-pg:5432", "pg:123456",
             "a" * 1100 + ":1", "pg:5432\x00", "пг:5432", "pg:5432;rm -rf /", "[::1]:5432"]
PATHS = ["/var/log/app", "/logs", "/", "", "relative", "/var/log/app\n", "/a/../b", "/a:b", "/var/log/" + "x" * 2000]


def hostile_text(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.6:
        return rng.choice(HOSTILE_TEXT)
    if pick < 0.85:
        return "".join(rng.choice(HOSTILE_TEXT) for _ in range(rng.randint(2, 5)))
    if pick < 0.95:
        return "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(1, 12)))
    return rng.choice("ab\x00é\u202e") * rng.randint(100, 5000)


def any_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any type, most likely a wrong one for where it goes."""
    pick = rng.randint(0, 13 if depth < 2 else 11)
    if pick <= 9:
        return [None, True, False, 0, -1, 1.5, 2**63, 2**64 + 1, -(2**63) - 1, 1e308][pick]
    if pick == 10:
        return rng.choice(["", "Pod", "CREATE", "v1", "default", "web", "log-shipper"])
    if pick == 11:
        return hostile_text(rng) if depth < 3 else "x"
    if pick == 12:
        return [any_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {hostile_text(rng): any_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _nodes(doc: Any, path: tuple = ()) -> list[tuple[Any, Any, tuple]]:
    """(parent, key, path) for every node below `doc`."""
    found = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.append((doc, key, path + (key,)))
            found.extend(_nodes(value, path + (key,)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found.append((doc, index, path + (index,)))
            found.extend(_nodes(value, path + (index,)))
    return found


def _pick_node(rng: random.Random, doc: dict[str, Any]) -> tuple[Any, Any, tuple] | None:
    nodes = _nodes(doc)
    pod = [n for n in nodes if n[2][:2] == ("request", "object")]
    pool = pod if pod and rng.random() < 0.75 else nodes
    return rng.choice(pool) if pool else None


def mutate_once(rng: random.Random, doc: dict[str, Any]) -> None:
    node = _pick_node(rng, doc)
    if node is None:
        return
    parent, key, _ = node
    action = rng.randint(0, 9)
    if action <= 4:  # another type in its place
        parent[key] = any_value(rng)
    elif action <= 6:  # gone
        del parent[key]
    elif action == 7 and isinstance(parent[key], list) and parent[key]:  # an item twice (name clashes)
        parent[key].append(copy.deepcopy(rng.choice(parent[key])))
    elif action == 8 and isinstance(parent[key], dict):  # an extra key
        parent[key][hostile_text(rng)] = any_value(rng)
    else:  # a hostile string
        parent[key] = hostile_text(rng)


# --- serialization ----------------------------------------------------------------------------------

def dumps(rng: random.Random, doc: Any) -> bytes:
    """JSON text; lone surrogates come out as \\ud800 escapes, or now and then as invalid UTF-8 bytes."""
    if rng.random() < 0.9:
        return json.dumps(doc).encode()  # ensure_ascii: every non-ASCII character as an escape
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


# --- generators ---------------------------------------------------------------------------------------

def structure(rng: random.Random) -> Case:
    """A recorded review with 1 to 4 nodes replaced by another type, deleted, duplicated or extended."""
    doc = seed(rng, injecting=rng.random() < 0.6)
    for _ in range(rng.randint(1, 4)):
        mutate_once(rng, doc)
    return Case("structure", dumps(rng, doc))


STRING_TARGETS: list[Callable[[dict[str, Any], str], None]] = [
    lambda r, s: r["metadata"].__setitem__("name", s),
    lambda r, s: r["metadata"].__setitem__("generateName", s),
    lambda r, s: r["metadata"].__setitem__("namespace", s),
    lambda r, s: r["spec"]["containers"][0].__setitem__("name", s),
    lambda r, s: r["spec"]["containers"][0].__setitem__("image", s),
    lambda r, s: r["spec"].__setitem__("serviceAccountName", s),
    lambda r, s: r["spec"].__setitem__("restartPolicy", s),
    lambda r, s: r["spec"]["containers"][0].setdefault("env", []).append({"name": s, "value": s}),
    lambda r, s: r["spec"]["containers"][0].setdefault("env", []).append({"name": "DB_HOST", "value": s}),
    lambda r, s: r["spec"]["containers"][0].setdefault("volumeMounts", []).append({"name": s, "mountPath": s}),
    lambda r, s: r["spec"].setdefault("volumes", []).append({"name": s, "emptyDir": {}}),
    lambda r, s: r["spec"]["containers"][0].setdefault("ports", []).append({"containerPort": 5432, "protocol": s}),
    lambda r, s: r["metadata"].setdefault("labels", {}).__setitem__(s, s),
    lambda r, s: r["metadata"].setdefault("annotations", {}).__setitem__(s, "value"),
    lambda r, s: r["metadata"].setdefault("annotations", {}).__setitem__("note", s),
    lambda r, s: r["metadata"].setdefault("annotations", {}).__setitem__("kubectl.kubernetes.io/default-container", s),
]


def strings(rng: random.Random) -> Case:
    """Hostile strings in names, namespaces, images, env, mounts, labels, annotation keys and values."""
    doc = seed(rng, injecting=rng.random() < 0.8)
    request = doc["request"]
    for _ in range(rng.randint(1, 4)):
        text = hostile_text(rng)
        where = rng.randint(0, len(STRING_TARGETS) + 1)
        if where == len(STRING_TARGETS):
            request["namespace"] = text
        elif where == len(STRING_TARGETS) + 1:
            request["uid"] = text if rng.random() < 0.5 else request["uid"] + text
        else:
            STRING_TARGETS[where](request["object"], text)
    return Case("strings", dumps(rng, doc))


def _names_value(rng: random.Random, extra: list[str]) -> str:
    """A list of entry names, mostly known ones, with separators of every kind."""
    names = [rng.choice(ENTRIES) if rng.random() < 0.7 else rng.choice(extra + [hostile_text(rng)])
             for _ in range(rng.randint(1, 4))]
    seps = [",", ", ", " , ", ",,", "\n", "\t,", " ", ";"]
    text = "".join(n + rng.choice(seps) for n in names)
    return text if rng.random() < 0.5 else text.rstrip(", ")


def _status_value(rng: random.Random) -> str:
    pick = rng.randint(0, 9)
    records = [{"entry": rng.choice(ENTRIES + ("nope", "")), "pattern": rng.choice(["sidecar", "x"]),
                "digest": rng.choice(["sha256:0", ""])} for _ in range(rng.randint(0, 3))]
    if pick <= 3:
        return json.dumps(records)
    if pick == 4:  # records with wrong types or extra keys, some nested deeper than orjson writes (255)
        for record in records:
            record[rng.choice(["entry", "pattern", "digest", "extra"])] = any_value(rng)
        text = json.dumps(records)
        if records and rng.random() < 0.5:
            depth = rng.choice([254, 255, 256, 1000, 1023])
            text = text[:-2] + ', "nested": ' + "[" * depth + "]" * depth + "}]"
        return text
    if pick == 5:
        return rng.choice(["", "[]", "{}", "null", "[null]", "[{}]", "{not json", '"x"', "1", "[[]]", "\x00"])
    if pick == 6:  # nesting beyond orjson's limit inside the annotation's own JSON
        depth = rng.choice([1000, 1024, 1025, 3000])
        return "[" * depth + "]" * depth
    if pick == 7:
        return json.dumps(records * rng.randint(100, 3000))
    return hostile_text(rng)


def annotations(rng: random.Random) -> Case:
    """The podpatterns annotations (inject, ENTRY.podpatterns.io/PARAM, exclude, status) with hostile values."""
    doc = seed(rng, injecting=rng.random() < 0.8)
    pod = doc["request"]["object"]
    notes = pod.setdefault("metadata", {}).setdefault("annotations", {})
    if rng.random() < 0.15:
        notes.clear()
    for _ in range(rng.randint(1, 5)):
        pick = rng.randint(0, 9)
        if pick <= 2:
            notes[f"{PREFIX}/inject"] = _names_value(rng, ["Log-Shipper", "all", "nope", "log-shipper "])
        elif pick <= 5:
            entry = rng.choice(ENTRIES) if rng.random() < 0.8 else rng.choice([hostile_text(rng), "nope", ""])
            param = rng.choice(list(PARAMETERS.get(entry, ())) + ["level", hostile_text(rng), ""])
            value = rng.choice([rng.choice(PORTS), rng.choice(UPSTREAMS), rng.choice(PATHS), hostile_text(rng)])
            notes[f"{entry}.{PREFIX}/{param}"] = value
        elif pick == 6:
            notes[f"{PREFIX}/exclude"] = _names_value(rng, ["all", "ALL", "nope"])
        elif pick == 7:
            notes[f"{PREFIX}/status"] = _status_value(rng)
        elif pick == 8:  # keys next to the contract's
            key = rng.choice([f"{PREFIX}/injectx", f"{PREFIX.upper()}/inject", f".{PREFIX}/x", f"a.{PREFIX}/",
                              f"{PREFIX}/", f"x.{PREFIX}/{PREFIX}/inject", "a~1b/c~0", f"{PREFIX}/status/x"])
            notes[key] = rng.choice(["log-shipper", hostile_text(rng)])
        else:
            notes["kubectl.kubernetes.io/default-container"] = hostile_text(rng)
    return Case("annotations", dumps(rng, doc))


def huge(rng: random.Random) -> Case:
    """Huge strings (up to 1 MB annotation values, long names), many containers or annotations, and now
    and then a body over the server's limit."""
    doc = seed(rng, injecting=True)
    pod = doc["request"]["object"]
    notes = pod["metadata"]["annotations"]
    pick = rng.randint(0, 9)
    big = rng.choice("ax,\x00") * rng.choice([1024, 64 * 1024, 1024 * 1024])
    if pick <= 2:
        notes[rng.choice(["note", f"{PREFIX}/inject", f"db-ambassador.{PREFIX}/upstream", f"{PREFIX}/exclude",
                          f"{PREFIX}/status", f"log-shipper.{PREFIX}/endpoint"])] = big
    elif pick == 3:
        notes[big[: 64 * 1024]] = "value"
    elif pick == 4:
        pod["metadata"][rng.choice(["name", "generateName", "namespace"])] = big[: 256 * 1024]
    elif pick == 5:
        template = pod["spec"]["containers"][0]
        count = rng.choice([50, 500])
        pod["spec"]["containers"] = [{**template, "name": f"c{i}", "ports": []} for i in range(count)]
    elif pick == 6:
        notes.update({f"k{i}.example.com/x": "v" for i in range(rng.choice([1000, 20000]))})
    elif pick == 7:
        notes[f"{PREFIX}/inject"] = ",".join(rng.choice(ENTRIES) for _ in range(rng.choice([1000, 50000])))
    elif pick == 8:
        pod["spec"]["containers"][0]["env"] = [{"name": f"E{i}", "value": "v"} for i in range(rng.choice([1000, 3000]))]
    else:  # over the limit: refused with 413
        notes["note"] = "x" * (MAX_BODY + rng.randint(1, 1000))
    return Case("huge", dumps(rng, doc))


DEEP_MARK = "@@podpatterns-fuzz-deep@@"


def deep(rng: random.Random) -> Case:
    """Nesting around and beyond orjson's depth limit (1024), placed anywhere in the review."""
    doc = seed(rng, injecting=True)
    depth = rng.choice([10, 500, 990, 1000, 1010, 1020, 1021, 1022, 1023, 1024, 1025, 2000, 100_000])
    opening, closing = rng.choice([("[", "]"), ('{"a":', "}"), ('{"":[', "]}")])
    node = _pick_node(rng, doc)
    if node is None or rng.random() < 0.2:
        doc["extra"] = DEEP_MARK
    else:
        parent, key, _ = node
        parent[key] = DEEP_MARK
    text = json.dumps(doc)
    nested = opening * depth + "null" + closing * depth
    return Case("deep", text.replace(json.dumps(DEEP_MARK), nested, 1).encode())


def duplicates(rng: random.Random) -> Case:
    """Duplicate keys, written as JSON text: one object of the review states a key twice."""
    doc = seed(rng, injecting=rng.random() < 0.7)
    objects = [n for n in _nodes(doc) if isinstance(n[0][n[1]], dict) and n[0][n[1]]] + [(None, None, ())]
    parent, key, _ = rng.choice(objects)
    target = doc if parent is None else parent[key]
    name = rng.choice(list(target))
    other = rng.choice([any_value(rng), copy.deepcopy(target[name]), hostile_text(rng)])
    items = [(k, v) for k, v in target.items()]
    position = rng.randint(0, len(items))
    items.insert(position, (name, other))
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in items) + "}"
    if parent is None:
        return Case("duplicates", text.encode())
    parent[key] = DEEP_MARK
    return Case("duplicates", json.dumps(doc).replace(json.dumps(DEEP_MARK), text, 1).encode())


CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1",
                 "multipart/form-data; boundary=x", "application/yaml", "", "application/json\x7f"]
INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\xe2\x82",
                b"\x80", b"\xf4\x90\x80\x80"]


def garbage(rng: random.Random) -> Case:
    """Byte-level garbage: random bytes, truncated or corrupted JSON, invalid UTF-8, BOM, UTF-16, empty body,
    JSON that is not an object, and valid reviews with a wrong, missing or compressed content type."""
    text = rng.choice(SEED_TEXT).encode()
    pick = rng.randint(0, 13)
    headers = {"content-type": JSON_TYPE}
    if pick == 0:
        body = b""
    elif pick == 1:
        body = rng.randbytes(rng.randint(1, 2000))
    elif pick == 2:
        body = text[: rng.randint(0, len(text) - 1)]
    elif pick == 3:  # bytes flipped
        data = bytearray(text)
        for _ in range(rng.randint(1, 10)):
            data[rng.randint(0, len(data) - 1)] = rng.getrandbits(8)
        body = bytes(data)
    elif pick == 4:  # invalid UTF-8 inside a string
        at = text.index(b'"', rng.randint(0, len(text) - 10)) + 1 if b'"' in text else 0
        body = text[:at] + rng.choice(INVALID_UTF8) + text[at:]
    elif pick == 5:
        body = b"\xef\xbb\xbf" + text
    elif pick == 6:
        body = text.decode().encode(rng.choice(["utf-16", "utf-16-le", "utf-32"]))
    elif pick == 7:
        body = rng.choice([b"null", b"0", b"[]", b'"AdmissionReview"', b"{}", b"  \n\t", b"true", b"[" * 2000,
                           b"NaN", b"Infinity", b"1e400", b"{\"a\":1}//c", b"{\"a\":1,}", b"{'a': 1}"])
    elif pick == 8:  # trailing data, or two reviews
        body = text + rng.choice([b"x", b"{}", b"\x00", text, b"\n\n"])
    elif pick == 9:
        body = text
        headers = {"content-type": rng.choice(CONTENT_TYPES)}
        if any(ord(c) == 0x7F for c in headers["content-type"]):
            return Case("garbage", body, headers, valid_http=False)
    elif pick == 10:
        body = text
        headers = {}
    elif pick == 11:
        body = gzip.compress(text)
        headers = {"content-type": JSON_TYPE, "content-encoding": "gzip"}
    elif pick == 12:  # NUL bytes or control characters raw in the text
        at = rng.randint(0, len(text))
        body = text[:at] + rng.choice([b"\x00", b"\x01", b"\n", b"\x1f"]) * rng.randint(1, 3) + text[at:]
    else:  # a lone surrogate escape outside any string, or an escape cut short
        at = text.index(b'"', rng.randint(0, len(text) - 10)) + 1 if b'"' in text else 0
        body = text[:at] + rng.choice([b"\\ud800", b"\\u12", b"\\x41", b"\\", b"\\udc00\\ud800"]) + text[at:]
    return Case("garbage", body, headers)


KINDS: dict[str, Callable[[random.Random], Case]] = {
    "structure": structure,
    "strings": strings,
    "annotations": annotations,
    "huge": huge,
    "deep": deep,
    "duplicates": duplicates,
    "garbage": garbage,
}
# How often each kind is drawn (huge bodies are few: each is up to 3 MB).
WEIGHTS = {"structure": 30, "strings": 20, "annotations": 25, "huge": 2, "deep": 5, "duplicates": 8, "garbage": 10}


def case(rng: random.Random) -> Case:
    """One input of any kind, drawn with WEIGHTS."""
    pick = rng.randint(1, sum(WEIGHTS.values()))
    for kind, weight in WEIGHTS.items():
        pick -= weight
        if pick <= 0:
            return KINDS[kind](rng)
    raise AssertionError("unreachable")


def case_at(seed_value: int, index: int) -> Case:
    """Input number `index` of the run with seed `seed_value`, reproducible on its own."""
    return case(random.Random(f"{seed_value}:{index}"))


def describe(item: Case, limit: int = 300) -> str:
    shown = item.body[:limit]
    more = f"… ({len(item.body)} bytes)" if len(item.body) > limit else ""
    return f"{item.kind} headers={item.headers} body={shown!r}{more}"
