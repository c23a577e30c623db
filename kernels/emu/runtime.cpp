// Scheduler of the CUDA CPU emulation (see cuda_emu.h): runs a kernel launch's blocks one
// after another and each block's threads as ucontext fibers with CUDA barrier and warp
// shuffle semantics; reports deadlocks (divergent barriers, shuffles with missing lanes)
// and argument mismatches as errors. C ABI entry points: kfac_emu_launch,
// kfac_emu_kernel_count, kfac_emu_kernel_name (called from src/backend/emu/mod.rs).
#include <ucontext.h>

#include <memory>
#include <string>
#include <vector>

#include "cuda_emu.h"
#include "registry.h"

extern "C" const emu::Entry kfac_emu_entries[];
extern "C" const size_t kfac_emu_n_entries;

namespace emu {
namespace {

constexpr size_t kStack = 128 * 1024;
constexpr int kMaxThreads = 1024;

enum class St { Ready, Barrier, Warp, Done };

struct Fiber {
    ucontext_t ctx;
    dim3 tid;
    St st = St::Ready;
};

struct WarpSync {
    int arrived = 0;
    unsigned mask = 0;
    uint64_t val[32];
    int src[32];
    uint64_t out[32];
};

struct Sched {
    std::vector<Fiber> fibers;
    std::vector<WarpSync> warps;
    ucontext_t main_ctx;
    int cur = -1;
    int nthreads = 0;
    int at_barrier = 0;
    dim3 bidx, bdim, gdim;
    const Body* body = nullptr;
    std::string error;
};

thread_local Sched* g_sched = nullptr;
// Fiber stacks, allocated once per OS thread and reused by every launch.
thread_local std::vector<std::unique_ptr<char[]>> g_stacks;

Sched& sched() { return *g_sched; }

void fiber_main() {
    Sched& s = sched();
    (*s.body)();
    s.fibers[s.cur].st = St::Done;
    // returning resumes uc_link (the scheduler)
}

void yield_to_scheduler() {
    Sched& s = sched();
    swapcontext(&s.fibers[s.cur].ctx, &s.main_ctx);
}

bool run_block(Sched& s) {
    const int n = s.nthreads;
    for (int t = 0; t < n; ++t) {
        Fiber& f = s.fibers[t];
        f.tid = dim3(t % s.bdim.x, (t / s.bdim.x) % s.bdim.y, t / (s.bdim.x * s.bdim.y));
        f.st = St::Ready;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = g_stacks[t].get();
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = &s.main_ctx;
        makecontext(&f.ctx, fiber_main, 0);
    }
    s.at_barrier = 0;
    for (auto& w : s.warps) w.arrived = 0;
    for (;;) {
        bool ran = false;
        for (int t = 0; t < n; ++t) {
            if (s.fibers[t].st != St::Ready) continue;
            s.cur = t;
            swapcontext(&s.main_ctx, &s.fibers[t].ctx);
            ran = true;
        }
        int done = 0, barrier = 0, warp = 0;
        for (int t = 0; t < n; ++t) {
            done += s.fibers[t].st == St::Done;
            barrier += s.fibers[t].st == St::Barrier;
            warp += s.fibers[t].st == St::Warp;
        }
        if (done == n) return true;
        if (!ran) {
            s.error = "deadlock in block (" + std::to_string(s.bidx.x) + "," +
                      std::to_string(s.bidx.y) + "," + std::to_string(s.bidx.z) + "): " +
                      std::to_string(barrier) + " threads wait at __syncthreads, " +
                      std::to_string(warp) + " at a warp shuffle, " + std::to_string(done) +
                      " have exited (a GPU would hang or be undefined here)";
            return false;
        }
    }
}

}  // namespace

const dim3& thread_idx() { return sched().fibers[sched().cur].tid; }
const dim3& block_idx() { return sched().bidx; }
const dim3& block_dim() { return sched().bdim; }
const dim3& grid_dim() { return sched().gdim; }
int lane_id() { return sched().cur % 32; }

void sync_block() {
    Sched& s = sched();
    s.fibers[s.cur].st = St::Barrier;
    if (++s.at_barrier == s.nthreads) {
        for (auto& f : s.fibers)
            if (f.st == St::Barrier) f.st = St::Ready;
        s.at_barrier = 0;
    }
    yield_to_scheduler();
}

uint64_t warp_exchange(uint64_t bits, int src, unsigned mask) {
    Sched& s = sched();
    const int t = s.cur, w = t / 32, lane = t % 32;
    const int lanes = s.nthreads - w * 32 < 32 ? s.nthreads - w * 32 : 32;
    const unsigned present = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
    const unsigned part = mask & present;
    WarpSync& ws = s.warps[w];
    if (!((part >> lane) & 1u)) {
        if (s.error.empty()) s.error = "warp shuffle by a lane that is not in its own mask";
        // a GPU would be undefined here; keep going with the own value
        return bits;
    }
    if (ws.arrived == 0) {
        ws.mask = part;
    } else if (ws.mask != part && s.error.empty()) {
        s.error = "lanes of one warp shuffle with different masks";
    }
    ws.val[lane] = bits;
    ws.src[lane] = src;
    s.fibers[t].st = St::Warp;
    if (++ws.arrived == __builtin_popcount(ws.mask)) {
        for (int l = 0; l < 32; ++l) {
            if (!((ws.mask >> l) & 1u)) continue;
            const int sl = ws.src[l];
            const bool ok = sl >= 0 && sl < 32 && ((ws.mask >> sl) & 1u);
            ws.out[l] = ok ? ws.val[sl] : ws.val[l];
            s.fibers[w * 32 + l].st = St::Ready;
        }
        ws.arrived = 0;
    }
    yield_to_scheduler();
    return ws.out[lane];
}

}  // namespace emu

static void set_err(char* err, size_t len, const std::string& msg) {
    if (err == nullptr || len == 0) return;
    size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
    memcpy(err, msg.data(), n);
    err[n] = 0;
}

extern "C" size_t kfac_emu_kernel_count() { return kfac_emu_n_entries; }

extern "C" const char* kfac_emu_kernel_name(size_t i) {
    return i < kfac_emu_n_entries ? kfac_emu_entries[i].name : nullptr;
}

// Launch `name` on grid × block threads. Returns 0 on success; otherwise 1 and a message
// in err (unknown kernel, bad geometry, argument mismatch, deadlock, shuffle misuse).
extern "C" int kfac_emu_launch(const char* name, const unsigned* grid, const unsigned* block,
                               size_t shared_bytes, const emu::Arg* args, size_t nargs,
                               char* err, size_t err_len) {
    const emu::Entry* e = nullptr;
    for (size_t i = 0; i < kfac_emu_n_entries; ++i)
        if (strcmp(kfac_emu_entries[i].name, name) == 0) e = &kfac_emu_entries[i];
    if (e == nullptr) {
        set_err(err, err_len, std::string("no kernel named ") + name);
        return 1;
    }
    const unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || threads == 0 || threads > emu::kMaxThreads ||
        grid[1] > 65535 || grid[2] > 65535) {
        set_err(err, err_len,
                std::string(name) + ": invalid launch geometry grid (" + std::to_string(grid[0]) +
                    "," + std::to_string(grid[1]) + "," + std::to_string(grid[2]) + ") block (" +
                    std::to_string(block[0]) + "," + std::to_string(block[1]) + "," +
                    std::to_string(block[2]) + ")");
        return 1;
    }
    if (shared_bytes != 0) {
        set_err(err, err_len, std::string(name) + ": dynamic shared memory is not emulated");
        return 1;
    }
    emu::Body body;
    std::string msg;
    if (!e->thunk(e->fn, args, nargs, &body, &msg)) {
        set_err(err, err_len, std::string(name) + ": " + msg);
        return 1;
    }
    emu::Sched s;
    s.nthreads = (int)threads;
    s.fibers.resize(threads);
    s.warps.resize((threads + 31) / 32);
    s.bdim = dim3(block[0], block[1], block[2]);
    s.gdim = dim3(grid[0], grid[1], grid[2]);
    s.body = &body;
    while (emu::g_stacks.size() < threads) emu::g_stacks.emplace_back(new char[emu::kStack]);
    emu::Sched* prev = emu::g_sched;
    emu::g_sched = &s;
    bool ok = true;
    for (unsigned z = 0; ok && z < grid[2]; ++z)
        for (unsigned y = 0; ok && y < grid[1]; ++y)
            for (unsigned x = 0; ok && x < grid[0]; ++x) {
                s.bidx = dim3(x, y, z);
                ok = emu::run_block(s) && s.error.empty();
            }
    emu::g_sched = prev;
    if (!ok) {
        set_err(err, err_len, std::string(name) + ": " + s.error);
        return 1;
    }
    return 0;
}
