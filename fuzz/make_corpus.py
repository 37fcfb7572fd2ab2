#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target under fuzz/corpus/<target>/.

Python's standard library only: protobuf, safetensors, IDX and gzip are written by hand, so
the seeds are real instances of each format without any package. Run it from anywhere; it
rewrites the seeds it makes and leaves other files (crash regressions added by hand) alone.
The real data it starts from: the repository's examples/ manifests, data/wdbc.csv and
data/uci-digits.csv.gz, and Fashion-MNIST's test files when Debian's package is installed.
"""

import gzip
import json
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
CORPUS = FUZZ / "corpus"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# --- protobuf, by hand -----------------------------------------------------------------


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_bytes(number, payload):
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def field_double(number, value):
    return varint((number << 3) | 1) + struct.pack("<d", value)


def delimited(message):
    return varint(len(message)) + message


def tensor_info(name, shape):
    packed = b"".join(varint(d) for d in shape)
    return field_bytes(1, name.encode()) + field_bytes(2, packed)


def chunk(offset, values):
    return field_varint(1, offset) + field_bytes(2, struct.pack(f"<{len(values)}f", *values))


# The model of fuzz/corpus/manifest/tables.toml: an MLP 4-3-2.
TABLES_LAYOUT = [
    ("layers.0.weight", [3, 4]),
    ("layers.0.bias", [3]),
    ("layers.1.weight", [2, 3]),
    ("layers.1.bias", [2]),
]
TABLES_VALUES = 12 + 3 + 6 + 2


def training(epochs=1, batch=8, lr=0.05, optimizer="sgd"):
    return (
        field_varint(1, epochs)
        + field_varint(2, batch)
        + field_double(3, lr)
        + field_bytes(4, optimizer.encode())
    )


def task_header(kind_field, kind, layout=TABLES_LAYOUT, round_=1):
    header = field_varint(1, 7) + field_varint(2, round_)
    header += field_bytes(3, b"0" * 64) + field_varint(4, 1_700_000_000_000)
    for name, shape in layout:
        header += field_bytes(5, tensor_info(name, shape))
    return header + field_bytes(kind_field, kind)


def wire_task():
    train_spec = field_varint(1, 42) + field_bytes(2, training())
    train_spec += field_bytes(3, b"site-a") + field_bytes(3, b"site-b")
    train = delimited(field_bytes(1, task_header(6, train_spec)))
    values = delimited(field_bytes(2, chunk(0, [0.1] * TABLES_VALUES)))
    write("wire_task", "train", train + values)
    write("wire_task", "evaluate", delimited(field_bytes(1, task_header(7, b""))) + values)
    write("wire_task", "secure", delimited(field_bytes(1, task_header(8, field_bytes(1, b"\x00\x01")))))
    write("wire_task", "finished", delimited(field_bytes(1, task_header(9, field_varint(1, 3), []))))


def result_header(outcome_field, outcome, layout=TABLES_LAYOUT[:2]):
    header = field_varint(1, 7)
    for name, shape in layout:
        header += field_bytes(2, tensor_info(name, shape))
    return header + field_bytes(outcome_field, outcome)


def wire_result():
    train = field_varint(1, 120) + field_double(2, 0.7)
    head = delimited(field_bytes(1, result_header(3, train)))
    body = delimited(field_bytes(2, chunk(0, [0.1] * 10)))
    body += delimited(field_bytes(2, chunk(10, [0.2] * 5)))
    write("wire_result", "train", head + body)
    metrics = field_double(1, 0.4) + field_double(2, 0.85) + field_varint(3, 200)
    write("wire_result", "evaluate", delimited(field_bytes(1, result_header(4, metrics, []))))
    write("wire_result", "refused", delimited(field_bytes(1, result_header(6, b"over budget", []))))


def chunks():
    write("chunks", "one", struct.pack("<H", 5) + delimited(chunk(0, [1.0, 2.0, 3.0, 4.0, 5.0])))
    two = delimited(chunk(0, [0.5] * 3)) + delimited(chunk(3, [-0.5] * 4))
    write("chunks", "two", struct.pack("<H", 7) + two)
    write("chunks", "empty", struct.pack("<H", 0))


# --- secure aggregation: what the fuzzer does with each message (see fuzz/src/lib.rs) ---


def secagg():
    for target in ("secagg_coordinator", "secagg_site"):
        write(target, "honest", bytes([0, 0, 0, 0]))
        write(target, "flip-each", bytes([1, 1, 5, 0, 0x40] * 4))
        write(target, "drop-masked", bytes([0, 0, 3, 0]))
        write(target, "cut-keys", bytes([4, 10, 0, 0, 0, 0]))
        write(target, "replace-unmask", bytes([0, 0, 0, 2, 4, 0, 1, 2, 3, 4]))


# --- files: manifests, tables, IDX, safetensors, ledgers, checkpoints -------------------

TABLES_MANIFEST = """# The federation the wire_task target's node agreed to (read by fuzz_targets/wire_task.rs).
[federation]
name = "fuzz-tables"
seed = 3

[data]
format = "csv"
path = "tables.csv"
features = 4
classes = 2

[[sites]]
name = "site-a"

[[sites]]
name = "site-b"

[model]
kind = "mlp"
hidden = [3]

[training]
rounds = 3
batch_size = 8
learning_rate = 0.05
"""


def manifests():
    write("manifest", "tables.toml", TABLES_MANIFEST)
    for path in sorted((REPO / "examples").glob("*.toml")):
        write("manifest", path.name, path.read_text())
    secure = TABLES_MANIFEST.replace("[[sites]]\nname = \"site-b\"\n",
                                     "[[sites]]\nname = \"site-b\"\n\n[[sites]]\nname = \"site-c\"\n")
    secure += "\n[secure_aggregation]\nthreshold = 0.6\nclip = 0.5\n"
    secure += "\n[strategy]\nkind = \"fedadam\"\nmax_update_norm = 5.0\nmax_examples = 1000\n"
    write("manifest", "secure.toml", secure)


def csv():
    wdbc = (REPO / "data" / "wdbc.csv").read_text().splitlines()
    header_and_rows = "\n".join(wdbc[:12]) + "\n"
    # Option byte 4: label last, skip one header line, comma-separated (fuzz_targets/csv.rs).
    write("csv", "wdbc-head", bytes([4]) + header_and_rows.encode())
    digits = gzip.decompress((REPO / "data" / "uci-digits.csv.gz").read_bytes()).decode()
    rows = "\n".join(digits.splitlines()[:10]) + "\n"
    write("csv", "digits-rows", bytes([0]) + rows.encode())
    write("csv", "digits-rows-gz", bytes([0]) + gzip.compress(rows.encode(), mtime=0))
    write("csv", "label-first-semicolon", bytes([1 | 8]) + b"1;0.5;2\n0;\"1.5\";-3e2\n")
    # Quoted cells: a header name holding the delimiter and a doubled quote, a quoted number
    # and label, and a quoted line break.
    quoted = b'"radius, mean","the ""x""",label\n"1.5",2,0\n" 2.5 ","-3e1","1"\n"4\n",5,1\n'
    write("csv", "quoted", bytes([4]) + quoted)


def idx_file(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def idx():
    pixels = bytes((i * 37) % 256 for i in range(3 * 2 * 2))
    images = idx_file(0x803, [3, 2, 2], pixels)
    write("idx", "images", images)
    write("idx", "images-gz", gzip.compress(images, mtime=0))
    write("idx", "labels", idx_file(0x801, [3], bytes([0, 9, 4])))
    test_images = FASHION / "t10k-images-idx3-ubyte.gz"
    if test_images.exists():
        raw = gzip.decompress(test_images.read_bytes())
        count = 3
        head = idx_file(0x803, [count, 28, 28], raw[16:16 + count * 784])
        write("idx", "fashion-3", gzip.compress(head, mtime=0))
        labels = gzip.decompress((FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes())
        write("idx", "fashion-labels-3", idx_file(0x801, [count], labels[8:8 + count]))


def safetensors_file(tensors, order=True):
    header, data = {}, b""
    for name, shape, values in tensors:
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    if order:
        header["__metadata__"] = {"entente.order": json.dumps([t[0] for t in tensors])}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def model(prefix=""):
    return [
        (f"{prefix}layers.0.weight", [3, 4], [0.01 * i for i in range(12)]),
        (f"{prefix}layers.0.bias", [3], [0.0, -0.1, 0.1]),
    ]


def safetensors():
    write("safetensors", "model", safetensors_file(model()))
    write("safetensors", "model-unordered", safetensors_file(model(), order=False))
    write("safetensors", "scalar", safetensors_file([("t", [], [1.5])]))


def checkpoint():
    write("checkpoint", "fedavgm", safetensors_file(model("velocity.")))
    write("checkpoint", "fedadam", safetensors_file(model("m.") + model("v.")))
    write("checkpoint", "model", safetensors_file(model()))


def ledger():
    orders = [1 + x / 10 for x in range(1, 100)] + list(range(12, 64))
    charges = [
        {"federation": "digits-demo", "round": r, "q": 0.05, "noise_multiplier": 1.1,
         "steps": 20, "epsilon_after": 0.3 * r}
        for r in (1, 2)
    ]
    events = [{"q": 0.05, "noise_multiplier": 1.1, "steps": 20}] * 2
    record = {"site": "clinic", "dataset": "digits", "delta": 1e-5, "charges": charges,
              "accountant": {"orders": orders, "events": events}}
    write("ledger", "two-rounds.json", json.dumps(record, indent=2))
    record.update(charges=[], accountant={"orders": [2.0, 8.0, 32.0], "events": []})
    write("ledger", "empty.json", json.dumps(record))


if __name__ == "__main__":
    wire_task()
    wire_result()
    chunks()
    secagg()
    manifests()
    csv()
    idx()
    safetensors()
    checkpoint()
    ledger()
