#!/usr/bin/env bash
# Compile every kernel module (kernels/*.cu) to PTX for compute_75 and assemble it with
# ptxas for sm_75, sm_80 and sm_90: catches CUDA compile errors on a machine without a GPU.
#
# PTX comes from nvcc when one is found (NVCC, CUDA_NVCC, CUDA_HOME/bin, PATH), otherwise
# from NVRTC (NVRTC_LIB, e.g. the CUDA 13 wheel's .../nvidia/cu13/lib/libnvrtc.so.13, else
# libnvrtc.so* in LD_LIBRARY_PATH or the pip wheel nvidia-cuda-nvrtc-cu12 under
# $CUDA_PIP); the NVRTC builtins library beside it is preloaded, because NVRTC opens it by
# bare name and the CUDA 13 wheel ships no symlinks or RUNPATH for it. ptxas comes from
# PTXAS, CUDA_HOME/bin, PATH, or the pip wheel nvidia-cuda-nvcc-cu12 under $CUDA_PIP; it
# must be at least as new as the PTX (ptxas 12.9 rejects NVRTC 13's PTX ISA 9.0).
# .ci/run runs this twice: CUDA 12.9 (NVRTC and ptxas) and CUDA 13.0 (NVRTC and ptxas).
#
# usage: kernels/check.sh [OUT_DIR]   (PTX and cubins are written there; default a temp dir)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
pip_root="${CUDA_PIP:-}"

find_tool() { # name, env override
    local name="$1" env="$2"
    if [[ -n "${!env:-}" ]]; then echo "${!env}"; return; fi
    for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}"; do
        [[ -n "$d" && -x "$d/bin/$name" ]] && { echo "$d/bin/$name"; return; }
    done
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
    if [[ -n "$pip_root" && -x "$pip_root/nvidia/cuda_nvcc/bin/$name" ]]; then
        echo "$pip_root/nvidia/cuda_nvcc/bin/$name"; return
    fi
    echo ""
}

nvcc="$(find_tool nvcc NVCC)"
[[ -z "$nvcc" ]] && nvcc="$(find_tool nvcc CUDA_NVCC)"
ptxas="$(find_tool ptxas PTXAS)"
if [[ -z "$ptxas" ]]; then
    echo "kernels/check.sh: no ptxas found (set PTXAS or CUDA_PIP)" >&2
    exit 1
fi

status=0
for cu in "$here"/*.cu; do
    mod="$(basename "$cu" .cu)"
    ptx="$out/$mod.ptx"
    if [[ -n "$nvcc" ]]; then
        "$nvcc" -ptx -arch=compute_75 -O3 -I "$here" -o "$ptx" "$cu"
        how="nvcc"
    else
        python3 - "$cu" "$here" "$ptx" "$pip_root" <<'PY'
import ctypes, glob, os, sys
cu, inc, ptx, pip_root = sys.argv[1:]
cands = []
if os.environ.get("NVRTC_LIB"):
    cands.append(os.environ["NVRTC_LIB"])
for d in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
    if d:
        cands += glob.glob(os.path.join(d, "libnvrtc.so*"))
if pip_root:
    cands += glob.glob(os.path.join(pip_root, "nvidia/cuda_nvrtc/lib/libnvrtc.so*"))
cands.append("libnvrtc.so.12")
lib = None
for c in cands:
    if "builtins" in c or ".alt." in c:
        continue
    d = os.path.dirname(c)
    for b in sorted(glob.glob(os.path.join(d, "libnvrtc-builtins.so.*")) if d else []):
        try:
            ctypes.CDLL(b, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
        except OSError:
            pass
    try:
        lib = ctypes.CDLL(c, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
        break
    except OSError:
        pass
if lib is None:
    sys.exit("kernels/check.sh: neither nvcc nor libnvrtc found (set CUDA_PIP or NVRTC_LIB)")
src = open(cu, "rb").read()
prog = ctypes.c_void_p()
assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(cu).encode(), 0, None, None) == 0
opts = [b"--gpu-architecture=compute_75", b"--include-path=" + inc.encode(), b"--std=c++14"]
arr = (ctypes.c_char_p * len(opts))(*opts)
rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
n = ctypes.c_size_t()
lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
log = ctypes.create_string_buffer(n.value)
lib.nvrtcGetProgramLog(prog, log)
if log.value.strip():
    sys.stderr.write(log.value.decode(errors="replace") + "\n")
if rc != 0:
    sys.exit(f"kernels/check.sh: NVRTC failed on {cu} (nvrtcResult {rc})")
lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
buf = ctypes.create_string_buffer(n.value)
lib.nvrtcGetPTX(prog, buf)
open(ptx, "wb").write(buf.value)
maj, mnr = ctypes.c_int(), ctypes.c_int()
lib.nvrtcVersion(ctypes.byref(maj), ctypes.byref(mnr))
open(ptx + ".nvrtc", "w").write(f"{maj.value}.{mnr.value}")
PY
        how="NVRTC $(cat "$ptx.nvrtc")"
    fi
    for sm in 75 80 90; do
        if ! "$ptxas" -arch="sm_$sm" -O3 -o "$out/$mod.sm_$sm.cubin" "$ptx"; then
            echo "kernels/check.sh: ptxas sm_$sm failed on $mod" >&2
            status=1
        fi
    done
    n_entries=$(grep -c '^\.visible \.entry' "$ptx" || true)
    echo "kernels/check.sh: $mod.cu -> PTX ($how, $n_entries entry points) -> sm_75, sm_80, sm_90 ok"
done
exit $status
