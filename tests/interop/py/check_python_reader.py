#!/usr/bin/python3
"""Checks dcpp (integrations/python), the Python reader of dcp++'s format,
against a checkpoint tests/interop/python_reader_test.cpp saved.

    check_python_reader.py <checkpoint> <spec.json> all|dcp2ranks

spec.json: {"tensors": {flat key: {dtype, shape, seed}}, "values": {flat key:
JSON value, bytes as {"hex": ...}}, "world_size": n}. Tensor contents follow
pattern() below, the formula the C++ test uses.

all:       dcpp.load() gives the nested dict, every element equal; 1.13's DCP
           load_state_dict(no_dist) through dcpp.StorageReader into a flat
           preallocated dict restores every element and value; a flipped
           byte in an item and in the metadata is an error naming the file
           (and the key); without the xxhash module a warning says checksums
           are not verified.
dcp2ranks: two Python processes (gloo on 127.0.0.1) load_state_dict the
           checkpoint together, each into its own preallocated dict.
Exit status 0 when everything holds; failures are printed.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "integrations", "python"))

import torch  # noqa: E402

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg, file=sys.stderr)


def pattern(dtype, shape, seed):
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.float64)
    x = torch.fmod(i * 7 + seed, 101) - 50
    dt = DTYPES[dtype]
    if dt == torch.bool:
        t = torch.fmod(i, 3) == 0
    elif dt == torch.uint8:
        t = (x + 50).to(dt)
    elif dt.is_complex:
        t = torch.complex(x, x + 1).to(dt)
    else:
        t = x.to(dt)
    return t.reshape(shape)


def expected_value(j):
    if isinstance(j, dict) and set(j) == {"hex"}:
        return bytes.fromhex(j["hex"])
    return j


def same_value(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def check_tensor(key, got, spec, where):
    want = pattern(**spec)
    if not isinstance(got, torch.Tensor):
        fail(f"{where}: '{key}' is {type(got).__name__}, not a tensor")
    elif got.dtype != want.dtype or list(got.shape) != list(want.shape):
        fail(f"{where}: '{key}' is {got.dtype}{list(got.shape)}, want {want.dtype}{list(want.shape)}")
    elif not torch.equal(got.detach(), want):
        fail(f"{where}: '{key}' differs")


def at_path(sd, key):
    """The leaf of flat `key` in the nested dict (list indices as ints)."""
    node = sd
    for part in key.split("."):
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(key)
    return node


def check_load(ckpt, spec, dcpp):
    sd = dcpp.load(ckpt)
    if not isinstance(sd.get("layers"), list):
        fail(f"dcpp.load: 'layers' is {type(sd.get('layers')).__name__}, not a list")
    for key, t in spec["tensors"].items():
        try:
            check_tensor(key, at_path(sd, key), t, "dcpp.load")
        except KeyError:
            fail(f"dcpp.load: no '{key}'")
    for key, v in spec["values"].items():
        try:
            got = at_path(sd, key)
        except KeyError:
            fail(f"dcpp.load: no value '{key}'")
            continue
        if not same_value(got, expected_value(v)):
            fail(f"dcpp.load: value '{key}' is {got!r}, want {expected_value(v)!r}")


def flat_values(spec):
    """The values under dcp++'s flat keys: a non-empty dict is descended (its
    entries are keys of their own), lists and empty dicts are leaves."""
    out = {}

    def walk(key, v):
        if isinstance(v, dict) and v and set(v) != {"hex"}:
            for k, x in v.items():
                walk(key + "." + k, x)
        else:
            out[key] = v

    for key, v in spec["values"].items():
        walk(key, v)
    return out


def flat_destination(spec):
    sd = {}
    for key, t in spec["tensors"].items():
        sd[key] = torch.zeros(t["shape"], dtype=DTYPES[t["dtype"]])
    for key in flat_values(spec):
        sd[key] = "not loaded"
    return sd


def check_flat(sd, spec, where):
    for key, t in spec["tensors"].items():
        check_tensor(key, sd[key], t, where)
    for key, v in flat_values(spec).items():
        if not same_value(sd[key], expected_value(v)):
            fail(f"{where}: value '{key}' is {sd[key]!r}, want {expected_value(v)!r}")


def import_dcp():
    sys.path.insert(0, HERE)
    from dcp113_compat import import_dcp as imp

    return imp()


def check_dcp_no_dist(ckpt, spec, dcpp):
    dcp = import_dcp()
    sd = flat_destination(spec)
    dcp.load_state_dict(sd, dcpp.StorageReader(ckpt), no_dist=True)
    check_flat(sd, spec, "1.13 load_state_dict")
    # Resharding: the row-split tensor into a destination that is one chunk
    # was covered above; a strict subset of the keys loads alone too.
    part = {"rows": torch.zeros(6, 4)}
    dcp.load_state_dict(part, dcpp.StorageReader(ckpt), no_dist=True)
    check_tensor("rows", part["rows"], spec["tensors"]["rows"], "1.13 load_state_dict (one key)")


def expect_error(fn, needles, where):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - any error, checked by its text
        text = str(e)
        for n in needles:
            if n not in text:
                fail(f"{where}: the error does not name {n!r}: {text}")
        return
    fail(f"{where}: no error")


def check_damage(ckpt, dcpp):
    from dcpp import _format

    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = os.path.join(tmp, "ck")
        shutil.copytree(ckpt, copy_dir)
        md = dcpp.read_metadata(copy_dir)
        item = md.items[("rows", (0, 0))]
        path = os.path.join(copy_dir, item.file)
        with open(path, "r+b") as f:
            f.seek(item.offset + 5)
            b = f.read(1)
            f.seek(item.offset + 5)
            f.write(bytes([b[0] ^ 0x40]))
        expect_error(lambda: dcpp.load(copy_dir), [item.file, "'rows'", "checksum"], "flipped item byte")
        if _format.checksums_available():
            mdfile = os.path.join(copy_dir, ".metadata")
            with open(mdfile, "r+b") as f:
                f.seek(40)
                b = f.read(1)
                f.seek(40)
                f.write(bytes([b[0] ^ 0x01]))
            expect_error(lambda: dcpp.read_metadata(copy_dir), [".metadata", "checksum"], "flipped metadata byte")
        else:
            fail("the xxhash module is not importable (install python3-xxhash): checksums untested")


def check_without_xxhash(ckpt):
    code = (
        "import sys, warnings\n"
        "sys.modules['xxhash'] = None\n"
        f"sys.path.insert(0, {os.path.join(HERE, '..', '..', '..', 'integrations', 'python')!r})\n"
        "import dcpp\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    dcpp.load({ckpt!r})\n"
        "    assert any('not verified' in str(x.message) for x in w), [str(x.message) for x in w]\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"without xxhash: {r.stderr.strip()}")


def rank_main(ckpt, spec_path, rank, port):
    """One of two Python ranks loading the checkpoint together."""
    import torch.distributed as dist

    import dcpp

    with open(spec_path) as f:
        spec = json.load(f)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    dcp = import_dcp()
    sd = flat_destination(spec)
    dcp.load_state_dict(sd, dcpp.StorageReader(ckpt))
    check_flat(sd, spec, f"1.13 load_state_dict at rank {rank} of 2")
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv):
    if len(argv) == 6 and argv[3] == "--rank":
        rank_main(argv[1], argv[2], int(argv[4]), int(argv[5]))
        return 1 if failures else 0
    if len(argv) != 4 or argv[3] not in ("all", "dcp2ranks"):
        print(__doc__, file=sys.stderr)
        return 2
    ckpt, spec_path, mode = argv[1:]
    with open(spec_path) as f:
        spec = json.load(f)
    import dcpp

    if mode == "all":
        check_load(ckpt, spec, dcpp)
        check_dcp_no_dist(ckpt, spec, dcpp)
        check_damage(ckpt, dcpp)
        check_without_xxhash(ckpt)
    else:
        port = str(free_port())
        procs = [
            subprocess.Popen([sys.executable, __file__, ckpt, spec_path, "--rank", str(r), port])
            for r in range(2)
        ]
        for r, p in enumerate(procs):
            try:
                code = p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                code = "timeout"
            if code != 0:
                fail(f"Python rank {r} of 2 ended with {code}")
    print(f"check_python_reader {mode}: {'FAILED' if failures else 'ok'}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
