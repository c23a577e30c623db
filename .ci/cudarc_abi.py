#!/usr/bin/env python3
"""Check that every cudarc sys function a kfac-pinn binary calls has the same signature in
cudarc's CUDA 12.9 and 13.0 bindings, and that the enums in those signatures agree on the
values of their common variants (13.0 may add variants: a 13.0 library may return them).

usage: python3 .ci/cudarc_abi.py CUDARC_SRC_DIR BINARY... [-- EXTRA_SYMBOL...]
  CUDARC_SRC_DIR  e.g. ~/.cargo/registry/src/index.crates.io-*/cudarc-0.19.10
  BINARY          release binaries/test binaries; `nm -C` lists the cudarc::*::sys::*
                  functions compiled into them (the functions the backend can call)
Prints one line per function and type and exits 1 on an incompatible difference. The
result for kfac-pinn is in docs/gpu.md ("Libraries and symbols").
"""
import re, subprocess, sys


def items(path):
    """Top-level items of a cudarc sys/mod.rs: (cfg features or None, kind, name, text)."""
    lines = open(path).read().split("\n")
    out, i, n, pending = [], 0, len(lines), None
    while i < n:
        l = lines[i]
        if l.startswith("#[cfg("):
            j, buf = i, l
            while buf.count("(") != buf.count(")"):
                j += 1
                buf += lines[j]
            feats = re.findall(r'feature = "([^"]+)"', buf)
            pending = ("not", feats) if buf.startswith("#[cfg(not(") else feats
            i = j + 1
            continue
        if l.startswith("#[") or l.startswith("//") or not l.strip():
            i += 1
            continue
        m = re.match(r"pub (?:unsafe )?(fn|enum|struct|type|const|union|use)\s+(?:self::)?([A-Za-z0-9_]+)", l)
        if m is None:
            if l.rstrip().endswith("{"):
                depth = l.count("{") - l.count("}")
                while depth > 0 and i + 1 < n:
                    i += 1
                    depth += lines[i].count("{") - lines[i].count("}")
            pending = None
            i += 1
            continue
        kind, name = m.groups()
        text = l
        if kind in ("enum", "struct", "union") and l.rstrip().endswith("{"):
            depth = l.count("{") - l.count("}")
            while depth > 0:
                i += 1
                text += "\n" + lines[i]
                depth += lines[i].count("{") - lines[i].count("}")
        elif kind == "fn":
            text = l.split("{")[0].strip()
            depth = l.count("{") - l.count("}")
            while depth > 0:
                i += 1
                depth += lines[i].count("{") - lines[i].count("}")
        out.append((pending, kind, name, text))
        pending = None
        i += 1
    return out


def table(path, feature):
    t = {}
    for feats, kind, name, text in items(path):
        if feats is None or (feature not in feats[1] if isinstance(feats, tuple) else feature in feats):
            t.setdefault((kind, name), []).append(text)
    return t
root = sys.argv[1]
args = sys.argv[2:]
extra = args[args.index("--") + 1:] if "--" in args else []
bins = args[: args.index("--")] if "--" in args else args
used = set(extra)
for b in bins:
    nm = subprocess.run(["nm", "-C", b], capture_output=True, text=True, check=True).stdout
    used |= set(re.findall(r"cudarc::[a-z_]+::sys::[a-z][A-Za-z0-9_]*", nm))
used = sorted(u for u in used if u.split("::")[-1] not in ("culib", "load", "is_culib_present"))
libs = {}
for u in used:
    parts = u.split("::")
    libs.setdefault(parts[1], set()).add(parts[-1])


def variants(text):
    return dict(re.findall(r"^\s+([A-Z][A-Z0-9_]*) = (-?\d+),", text, re.M))

def resolve(tab, t):
    """Definitions of type t, following `pub use X as t` and `pub type t = X`."""
    out = {}
    for (kind, name), texts in tab.items():
        for text in texts:
            if kind == "use" and re.search(rf"as {t};", text):
                out.update(resolve(tab, name))
            if kind != "fn" and kind != "use" and name == t:
                out[(kind, name)] = texts
                m = re.search(r"= (?:self::)?([A-Za-z0-9_]+);", text)
                if kind == "type" and m and m.group(1) != t:
                    out.update(resolve(tab, m.group(1)))
    return out

ok = True
for lib, names in sorted(libs.items()):
    p = f"{root}/src/{lib}/sys/mod.rs"
    a, b = table(p, "cuda-12090"), table(p, "cuda-13000")
    types = set()
    for n in sorted(names):
        if ("fn", n) not in a and ("fn", n) not in b:
            types.add(n); continue
        sa, sb = a.get(("fn", n)), b.get(("fn", n))
        same = sa is not None and sa == sb
        ok &= same
        print(f"{lib} fn {n}: {'same' if same else f'DIFF 12.9={sa} 13.0={sb}'}")
        for s in sa or []:
            args = s.split("(", 1)[1]
            types |= set(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\b", args)) - {"mut", "const", "core", "ffi", "c_int", "c_uint", "c_char", "c_void", "c_uchar", "usize", "u64", "i64", "f32", "f64", "c_longlong", "c_ulonglong", "c_double", "c_float", "pub", "unsafe", "fn"}
            types -= set(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*):", args))
    for t in sorted(types):
        da, db = resolve(a, t), resolve(b, t)
        if da == db:
            print(f"{lib} type {t}: same" + ("" if da else " (not defined in this module)"))
            continue
        ea = {k: v for k, v in da.items() if k[0] == "enum"}
        eb = {k: v for k, v in db.items() if k[0] == "enum"}
        if ea.keys() == eb.keys() and ea and {k: v for k, v in da.items() if k[0] != "enum"} == {k: v for k, v in db.items() if k[0] != "enum"}:
            for k in ea:
                va, vb = variants("\n".join(ea[k])), variants("\n".join(eb[k]))
                changed = {x for x in va if x in vb and va[x] != vb[x]}
                gone = set(va) - set(vb)
                new = set(vb) - set(va)
                bad = {x for x in changed if not x.endswith("_MAX")}
                ok &= not bad
                print(f"{lib} type {t} (enum {k[1]}): {'values of common variants same' if not bad else 'CHANGED ' + str(sorted(changed))}; only in 12.9: {sorted(gone) or 'none'}; only in 13.0: {sorted(new) or 'none'}")
        else:
            ok = False
            print(f"{lib} type {t}: DIFF\n  12.9={da}\n  13.0={db}")
print("RESULT:", "no incompatible difference" if ok else "DIFFERENCES FOUND")
sys.exit(0 if ok else 1)
