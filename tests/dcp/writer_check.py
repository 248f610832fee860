#!/usr/bin/env python3
"""Checks what interop_writer_test.cpp wrote with dcp++'s writers.

Usage: writer_check.py DIR -- reads DIR/cases.txt, one case per line, fields
separated by tabs:

  pickle  FILE EXACT EXPR   pickle.loads(FILE) is EXPR (same types, float
                            bits); EXACT=1: FILE is also byte for byte what
                            CPython's pickle.dumps(EXPR, 2) writes, less the
                            memo (pickletools.optimize)
  value   FILE EXPR         torch.load(FILE, weights_only=False) is EXPR;
                            weights_only=True gives EXPR too, or, when EXPR
                            holds a float or bytes (1.13's restricted
                            unpickler has no BINFLOAT and no _codecs.encode),
                            an UnpicklingError; FILE passes zipfile's testzip
  tensors FILE SPECS EXPR   torch.load(FILE, weights_only=True) is EXPR with
                            each tensor (in dict and list order) replaced by
                            the string '<tensor i>'; tensor i matches SPECS[i]
                            (JSON: dtype, shape, requires_grad, bin: a file of
                            its bytes); testzip
  zip     FILE NAMES        zipfile opens FILE, testzip() is None, its names
                            are NAMES ('|'-separated) and every record's data
                            starts at a multiple of 64

Prints "ok N" and exits 0 when every case passes, else prints a FAIL line per
failure and exits 1.
"""
import json
import os
import pickle
import pickletools
import struct
import sys
import zipfile

failures = []


def fail(msg):
    failures.append(msg)


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items())
        )
    return a == b


def has_float_or_bytes(v):
    if isinstance(v, (float, bytes)):
        return True
    if isinstance(v, (list, tuple)):
        return any(has_float_or_bytes(x) for x in v)
    if isinstance(v, dict):
        return any(has_float_or_bytes(x) for x in v.values())
    return False


def short(v):
    r = repr(v)
    return r if len(r) < 200 else r[:200] + "..."


def check_zip(path, names=None):
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        if bad is not None:
            fail(f"{path}: testzip: bad CRC in {bad}")
        got = z.namelist()
        if names is not None and got != names:
            fail(f"{path}: names {got}, expected {names}")
        with open(path, "rb") as f:
            for info in z.infolist():
                f.seek(info.header_offset)
                h = f.read(30)
                n, m = struct.unpack("<HH", h[26:30])
                start = info.header_offset + 30 + n + m
                if start % 64:
                    fail(f"{path}: {info.filename}: data at {start}, not 64-byte aligned")


def strip_tensors(v, tensors):
    import torch

    if isinstance(v, torch.Tensor):
        tensors.append(v)
        return f"<tensor {len(tensors) - 1}>"
    if isinstance(v, list):
        return [strip_tensors(x, tensors) for x in v]
    if isinstance(v, tuple):
        return tuple(strip_tensors(x, tensors) for x in v)
    if isinstance(v, dict):
        return {k: strip_tensors(x, tensors) for k, x in v.items()}
    return v


def main(d):
    n = 0
    with open(os.path.join(d, "cases.txt"), encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    for line in lines:
        kind, *fields = line.split("\t")
        path = os.path.join(d, fields[0])
        n += 1
        try:
            if kind == "pickle":
                with open(path, "rb") as f:
                    data = f.read()
                want = eval(fields[2])
                got = pickle.loads(data)
                if not same(got, want):
                    fail(f"{fields[0]}: loads {short(got)}, expected {short(want)}")
                if fields[1] == "1":
                    ref = pickletools.optimize(pickle.dumps(want, 2))
                    if data != ref:
                        fail(f"{fields[0]}: {data[:80]!r}..., CPython writes {ref[:80]!r}...")
            elif kind == "value":
                import torch

                want = eval(fields[1])
                got = torch.load(path, weights_only=False)
                if not same(got, want):
                    fail(f"{fields[0]}: torch.load gives {short(got)}, expected {short(want)}")
                try:
                    got = torch.load(path, weights_only=True)
                    if has_float_or_bytes(want):
                        fail(f"{fields[0]}: 1.13's weights_only loaded a float or bytes")
                    elif not same(got, want):
                        fail(f"{fields[0]}: weights_only gives {short(got)}")
                except pickle.UnpicklingError as e:
                    if not has_float_or_bytes(want):
                        fail(f"{fields[0]}: weights_only refused: {e}")
                check_zip(path)
            elif kind == "tensors":
                import torch

                specs = json.loads(fields[1])
                want = eval(fields[2])
                tensors = []
                got = strip_tensors(torch.load(path, weights_only=True), tensors)
                if not same(got, want):
                    fail(f"{fields[0]}: loads {short(got)}, expected {short(want)}")
                if len(tensors) != len(specs):
                    fail(f"{fields[0]}: {len(tensors)} tensors, expected {len(specs)}")
                for i, (t, s) in enumerate(zip(tensors, specs)):
                    what = f"{fields[0]}: tensor {i}"
                    if str(t.dtype) != "torch." + s["dtype"]:
                        fail(f"{what}: dtype {t.dtype}, expected {s['dtype']}")
                    if list(t.shape) != s["shape"]:
                        fail(f"{what}: shape {list(t.shape)}, expected {s['shape']}")
                    if not t.is_contiguous() or t.storage_offset() != 0:
                        fail(f"{what}: not contiguous from offset 0 (strides {t.stride()})")
                    if t.requires_grad != s["requires_grad"]:
                        fail(f"{what}: requires_grad {t.requires_grad}")
                    with open(os.path.join(d, s["bin"]), "rb") as f:
                        raw = f.read()
                    got_raw = bytes(t.storage().untyped().tolist())
                    if got_raw != raw:
                        fail(f"{what}: {len(got_raw)} bytes differ from the {len(raw)} written")
                check_zip(path)
            elif kind == "zip":
                check_zip(path, fields[1].split("|"))
            else:
                fail(f"unknown case kind {kind!r}")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            fail(f"{fields[0]}: {type(e).__name__}: {e}")
    for f in failures:
        print("FAIL", f)
    if failures:
        return 1
    print("ok", n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
