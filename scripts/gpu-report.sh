#!/usr/bin/env bash
# The project's first-contact report on a machine with an NVIDIA GPU and driver and the
# release binary (no cargo needed): bash scripts/gpu-report.sh OUTDIR
#
# Steps, most valuable first (a failure in the first minute — libraries, NVRTC, driver —
# is the key finding), each with its own timeout inside one budget; a failing step does
# not stop the rest:
#   1. devices                      what the binary finds (driver, NVML, kernel loading)
#   2. selfcheck --device cuda      every backend-vs-CPU comparison -> selfcheck.json
#   3. laplacian f32, f64           paper's net D->768->768->512->512->1, N = 1024,
#                                   D = 1, 10, 50, 100: forward, autodiff, bare GEMMs
#                                   -> laplacian.jsonl
#   4. train 60 s                   heat 4+1d preset, KFAC* -> heat4d_kfac_star.{json,csv}
#   5. torch, JAX peers             the same Laplacian benchmark on the same GPU (when
#                                   python3 imports them; laplacian_peers.py, TF32 off)
#                                   -> laplacian_peers.jsonl
#   6. summary.md                   ours vs torch vs JAX, selfcheck, KFAC* ms/step; printed last
# Everything printed also goes to OUTDIR/log.txt; OUTDIR holds at most these 7 files.
#
# Environment:
#   KFAC_PINN_BIN  the binary (default .gpu/kfac-pinn, then target/release/kfac-pinn)
#   BUDGET_S       total seconds (default 480); the summary is kept the last 20 s
#   PEERS_PY       laplacian_peers.py (default: beside this script, then .gpu/)
#   PEERS_DEVICE   cpu: run the peers on the CPU (a dry run without a GPU; JAX too)
#   PEERS_ARGS     extra arguments for the peers (e.g. "--dims 1 --repeats 1" for a dry run)
#   LAP_REPEATS    timed calls per Laplacian measurement (default 10)
set -u

OUT=${1:?usage: gpu-report.sh OUTDIR}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
# Log to OUTDIR/log.txt, unless a caller already does (the kit's remote.sh tees its
# output into the same file: a second tee would write every line twice).
logged=""
for fd in /proc/[0-9]*/fd/*; do
    [[ "$(readlink "$fd" 2>/dev/null)" == "$OUT/log.txt" ]] && { logged=1; break; }
done
TEE_PID=""
if [[ -z "$logged" ]]; then
    exec > >(tee -a "$OUT/log.txt") 2>&1
    TEE_PID=$!
fi

export PYTHONUNBUFFERED=1 RUST_BACKTRACE=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
BUDGET_S=${BUDGET_S:-480}
START=$SECONDS
END=$((START + BUDGET_S - 20)) # the summary's reserve (and a caller's set-up time)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

B=${KFAC_PINN_BIN:-}
if [[ -z "$B" ]]; then
    for c in .gpu/kfac-pinn target/release/kfac-pinn; do
        [[ -x "$c" ]] && { B=$c; break; }
    done
fi
PEERS=${PEERS_PY:-}
if [[ -z "$PEERS" ]]; then
    for c in "$HERE/laplacian_peers.py" .gpu/laplacian_peers.py; do
        [[ -f "$c" ]] && { PEERS=$c; break; }
    done
fi

STEPS="" # name rc seconds, one step a line, for the summary
step() { # step NAME MAX_SECONDS CMD...: run with min(MAX, budget left) or skip
    local name=$1 want=$2 left rc t0
    shift 2
    left=$((END - SECONDS))
    if ((left < 10)); then
        echo "## SKIP $name: budget spent" >&2
        STEPS+="$name skipped 0"$'\n'
        return 99
    fi
    ((want > left)) && want=$left
    echo "## $name (<= ${want}s) at $((SECONDS - START))s" >&2
    t0=$SECONDS
    timeout -k 5 "$want" "$@"
    rc=$?
    ((rc == 124 || rc == 137)) && echo "## $name TIMED OUT after ${want}s" >&2
    echo "## $name rc=$rc in $((SECONDS - t0))s" >&2
    STEPS+="$name $rc $((SECONDS - t0))"$'\n'
    return "$rc"
}

echo "## gpu-report: binary ${B:-(none found)}, peers ${PEERS:-(none found)}, budget ${BUDGET_S}s, out $OUT"
date -u
if [[ -z "$B" ]]; then
    echo "## no kfac-pinn binary (set KFAC_PINN_BIN, or build target/release/kfac-pinn)"
fi

# ---- 1. devices: the driver, NVML and how the kernels load
if command -v nvidia-smi >/dev/null; then
    step nvidia-smi 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
fi
[[ -n "$B" ]] && step devices 30 "$B" devices

# ---- 2. selfcheck: every comparison with the CPU (per-case lines on stderr, here)
if [[ -n "$B" ]]; then
    step selfcheck 150 "$B" selfcheck --device cuda --json --out "$OUT" >/dev/null
fi

# ---- 3. the Laplacian benchmark, our side, one process per dtype
if [[ -n "$B" ]]; then
    for dt in f32 f64; do
        step "laplacian-$dt" 90 "$B" laplacian --device cuda --dims 1,10,50,100 --batch 1024 \
            --widths 768,768,512,512 \
            --method all --repeats "${LAP_REPEATS:-10}" --dtype "$dt" --json --no-isolate \
            >>"$OUT/laplacian.jsonl"
    done
fi

# ---- 4. KFAC* on heat 4+1d for 60 s of training
if [[ -n "$B" ]]; then
    step heat4d-kfac-star 100 "$B" train --preset heat4d-10065 --optimizer kfac-star \
        --seconds 60 --device cuda --json --log "$OUT/heat4d_kfac_star.csv" --force \
        >>"$OUT/heat4d_kfac_star.json"
    tail -c 1500 "$OUT/heat4d_kfac_star.json"
fi

# ---- 5. torch and JAX on the same device (separate processes)
if [[ "${PEERS_DEVICE:-cuda}" == cpu ]]; then
    export PEERS_DEVICE JAX_PLATFORMS=cpu
fi
read -r -a PEER_ARGS <<<"${PEERS_ARGS:-}"
for fw in torch jax; do
    if [[ -z "$PEERS" ]]; then
        echo "## SKIP $fw-peer: laplacian_peers.py not found"
        STEPS+="$fw-peer skipped 0"$'\n'
    elif ! timeout 60 python3 -c "import $fw" 2>/dev/null; then
        echo "## SKIP $fw-peer: python3 cannot import $fw"
        STEPS+="$fw-peer skipped 0"$'\n'
    else
        step "$fw-peer" 120 python3 "$PEERS" --framework "$fw" "${PEER_ARGS[@]}" \
            >>"$OUT/laplacian_peers.jsonl"
    fi
done

# ---- 6. summary.md (printed last)
END=$((START + BUDGET_S))
summary() {
    python3 - "$OUT" "$STEPS" "$B" <<'PY'
import json, os, sys
out, steps, binary = sys.argv[1], sys.argv[2], sys.argv[3]
def jl(name):
    p = os.path.join(out, name)
    rows = []
    if os.path.exists(p):
        for line in open(p, errors="replace"):
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows
L = ["# GPU report", "", f"binary: `{binary or 'none'}`", ""]
# selfcheck
L += ["## selfcheck (`selfcheck --device cuda`)", ""]
p = os.path.join(out, "selfcheck.json")
if os.path.exists(p):
    try:
        r = json.load(open(p))
        s = r["summary"]
        L.append(f"{s['device']}: **{s['passed']} passed, {s['failed']} failed**, "
                 f"{s['not_applicable']} not applicable, {s['seconds']:.1f} s")
        bad = [c for c in r["cases"] if c["status"] == "fail"]
        for c in bad[:20]:
            L.append(f"- FAIL {c['group']} {c['name']} {c['dtype']}: "
                     f"max abs {c.get('max_abs_err')}, tol {c.get('rtol')} {c.get('message') or ''}")
        if len(bad) > 20:
            L.append(f"- ... {len(bad) - 20} more failures in selfcheck.json")
    except (ValueError, KeyError) as e:
        L.append(f"selfcheck.json unreadable: {e}")
else:
    L.append("no selfcheck.json: the GPU did not open or the run was cut short (see log.txt)")
# Laplacian
t = {}
for r in jl("laplacian.jsonl"):
    t[("ours", r["method"], r["dtype"], r["dim"])] = r["seconds"]
peer_err = []
for r in jl("laplacian_peers.jsonl"):
    if "median_s" in r:
        t[(r["framework"], r["method"], r["dtype"], r["dim"])] = r["median_s"]
    elif "error" in r:
        peer_err.append(f"{r['framework']} {r['method']} {r['dtype']} D={r['dim']}: {r['error'][:160]}")
def f(x):
    return f"{x * 1e3:.2f}" if x else "–"
def fe(x):
    return f"{x:.3e}" if isinstance(x, (int, float)) else str(x)
def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"
L += ["", "## Laplacian, paper's net D→768→768→512→512→1, N = 1024 (ms per call)", "",
      "ours: mean of the timed calls; torch/JAX: median (laplacian_peers.py, TF32 off). "
      "Ratios > 1: ours is faster.", "",
      "| method | dtype | D | ours | torch | JAX | torch/ours | JAX/ours | ours/bare GEMMs |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
for m in ("forward", "autodiff"):
    for dt in ("f32", "f64"):
        for d in (1, 10, 50, 100):
            o, to, ja = (t.get((fw, m, dt, d)) for fw in ("ours", "torch", "jax"))
            g = t.get(("ours", "gemm", dt, d))
            if not (o or to or ja):
                continue
            L.append(f"| {m} | {dt} | {d} | {f(o)} | {f(to)} | {f(ja)} | {ratio(to, o)} | "
                     f"{ratio(ja, o)} | {ratio(o, g) if m == 'forward' else '–'} |")
if not t:
    L.append("| (no measurements) | | | | | | | | |")
for e in peer_err[:8]:
    L.append(f"- peer error: {e}")
# KFAC*
L += ["", "## KFAC* on heat 4+1d (preset heat4d-10065, 60 s)", ""]
k = jl("heat4d_kfac_star.json")
if k:
    k = k[-1]
    L.append(f"{k.get('device')}, {k.get('dtype')}: {k.get('steps')} steps in "
             f"{k.get('seconds', 0):.1f} s, **{k.get('mean_step_ms', 0):.2f} ms/step**, "
             f"L2 {fe(k.get('l2_abs'))}, stop {k.get('stop')} (for scale: our CPU run, 2 cores, "
             "about 51 ms/step; the paper's GPU 102 ms/step)")
else:
    L.append("no result (see log.txt)")
# steps
L += ["", "## steps", "", "| step | rc | seconds |", "|---|---:|---:|"]
for line in steps.strip().splitlines():
    n, rc, s = line.split()
    L.append(f"| {n} | {rc} | {s} |")
open(os.path.join(out, "summary.md"), "w").write("\n".join(L) + "\n")
PY
}
if command -v python3 >/dev/null && summary; then
    :
else
    {
        echo "# GPU report"
        echo
        echo "python3 missing or the summary failed: see log.txt and the .json/.jsonl files"
        echo
        echo "step rc seconds"
        printf '%s' "$STEPS"
    } >"$OUT/summary.md"
fi
# outputs of steps that failed before writing anything
find "$OUT" -maxdepth 1 -type f -empty ! -name log.txt -delete
echo "## done at $((SECONDS - START))s; files in $OUT:"
ls -la "$OUT"
echo
cat "$OUT/summary.md"
# let the log's tee write the last lines before the script ends
if [[ -n "$TEE_PID" ]]; then
    exec >&- 2>&-
    wait "$TEE_PID" 2>/dev/null
fi
exit 0
