// Scheduler of the CUDA CPU emulation (see cuda_emu.h): runs a kernel launch's blocks one
// after another and each block's threads as ucontext fibers with CUDA barrier and warp
// shuffle semantics; reports deadlocks (divergent barriers, shuffles with missing lanes)
// and argument mismatches as errors.
//
// Checked launches (kfac_emu_launch_checked, used by src/backend/emu/mod.rs for every op):
// the caller names the buffers the launch may touch (base, length, writable). Each run of
// the kernel gets fresh copies of those buffers, each placed against PROT_NONE guard pages
// (its end on the page boundary in even-numbered runs, its start in odd-numbered runs, so
// an overrun or an underrun by one element faults), and runs under one schedule: the order
// in which the ready fibers of a block (re-drawn at every barrier round) and the blocks of
// the grid run. Schedule 0 is index order, 1 reverse order, s >= 2 a random permutation
// seeded by s. Every run must produce the same buffers as the first (bitwise; within a
// tolerance when the kernel used float atomics), must not change a read-only buffer, and
// must not fault; the first run's buffers are copied back. A fault in kernel code (the
// guard pages, a fiber stack overflow, any wild pointer) is caught by a SIGSEGV/SIGBUS
// handler that returns control to the scheduler of the faulting thread, so the launch
// fails with the kernel's name, the thread, and the buffer and offset hit; faults outside
// kernel code go to the handler that was installed before (Rust's, in `cargo test`).
//
// Fibers: every OS thread keeps a pool of worker fibers (one per thread slot of a block),
// each on its own mmap'd stack with a guard page. A worker loops: run the kernel body for
// the current block, mark itself done, yield. Switches are _setjmp/_longjmp (no signal
// mask syscalls, unlike swapcontext); ucontext is used only once per worker, to start it
// on its stack. A worker left in the middle of a body (fault, deadlock) is restarted.
//
// C ABI entry points: kfac_emu_launch, kfac_emu_launch_checked, kfac_emu_kernel_count,
// kfac_emu_kernel_name. Checked by tests/kernels.rs (every kernel against its CPU twin,
// through checked launches) and tests/emu_checks.rs (a planted race, out-of-bounds
// accesses, float atomics, the schedules themselves).

// Fortified longjmp refuses jumps between stacks, which is what fibers do.
#undef _FORTIFY_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <memory>
#include <mutex>
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

size_t page_size() {
    static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

enum class St { Ready, Barrier, Warp, Done };

struct Fiber {
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
    std::vector<int> order;  // the order fibers run in during the current round
    jmp_buf main_jb;  // the scheduler, while a fiber runs
    int cur = -1;
    int nthreads = 0;
    int at_barrier = 0;
    dim3 bidx, bdim, gdim;
    const Body* body = nullptr;
    std::string error;
    uint64_t schedule = 0;
    uint64_t float_atomics = 0;
    std::vector<void*> shared_seen;  // __shared__ variables poisoned in this block
    // Set while a fiber runs; the fault handler only takes over faults in kernel code.
    volatile sig_atomic_t in_fiber = 0;
    // Filled by the fault handler.
    volatile sig_atomic_t faulted = 0;
    uintptr_t fault_addr = 0;
    int fault_sig = 0;
    int fault_thread = -1;
    int fault_write = -1;  // 1 write, 0 read, -1 unknown
};

// Read by the fault handler, so initial-exec TLS (no lazy allocation in a signal handler).
__attribute__((tls_model("initial-exec"))) thread_local Sched* g_sched = nullptr;

// Fiber stacks of this OS thread, mmap'd once with a PROT_NONE page below each (stacks
// grow down, so an overflow faults instead of corrupting the heap), reused by every launch.
struct Stacks {
    std::vector<char*> maps;
    ~Stacks() {
        for (char* m : maps) munmap(m, kStack + page_size());
    }
    char* get(size_t i) { return maps[i] + page_size(); }
    bool ensure(size_t n) {
        while (maps.size() < n) {
            void* m = mmap(nullptr, kStack + page_size(), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) return false;
            mprotect(m, page_size(), PROT_NONE);
            maps.push_back(static_cast<char*>(m));
        }
        return true;
    }
    // Index of the fiber stack whose guard page holds addr, or -1.
    int guard_of(uintptr_t addr) const {
        for (size_t i = 0; i < maps.size(); ++i) {
            const uintptr_t g = (uintptr_t)maps[i];
            if (addr >= g && addr < g + page_size()) return (int)i;
        }
        return -1;
    }
};
thread_local Stacks g_stacks;

// Worker fiber of thread slot i of this OS thread: where it yielded, if started.
struct Worker {
    jmp_buf jb;
    bool live = false;
};
thread_local std::vector<Worker> g_workers;

// ---- faults ---------------------------------------------------------------------------

struct sigaction g_old_segv, g_old_bus;
std::once_flag g_install_once;

void on_fault(int sig, siginfo_t* si, void* ucv) {
    Sched* s = g_sched;
    if (s != nullptr && s->in_fiber) {
        // A fault in kernel code: record it and resume the scheduler of this thread, as
        // if the fiber had yielded; the fiber is abandoned and the launch fails.
        s->fault_sig = sig;
        s->fault_addr = (uintptr_t)si->si_addr;
        s->fault_thread = s->cur;
#if defined(__x86_64__) && defined(REG_ERR)
        s->fault_write = (((ucontext_t*)ucv)->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#else
        (void)ucv;
        s->fault_write = -1;
#endif
        s->faulted = 1;
        s->in_fiber = 0;
        // leaving the handler by a jump: unblock what the kernel blocked for it
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
        _longjmp(s->main_jb, 1);
    }
    if (s != nullptr) {
        static const char msg[] =
            "kfac emulation: memory fault in the emulator runtime (outside kernel code)\n";
        ssize_t r = write(2, msg, sizeof msg - 1);
        (void)r;
    }
    // Not ours: hand over to the previous handler, or die the default way.
    const struct sigaction& old = sig == SIGSEGV ? g_old_segv : g_old_bus;
    if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction != nullptr) {
        old.sa_sigaction(sig, si, ucv);
    } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
        old.sa_handler(sig);
    } else {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, nullptr);  // returning re-runs the access: default action
    }
}

void install_fault_handler() {
    std::call_once(g_install_once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
    });
    // The handler must run on an alternate stack: a fiber stack overflow leaves no room
    // on the faulting stack. Rust gives its threads one; other threads get ours (kept for
    // the thread's life: the kernel may still deliver onto it).
    thread_local bool checked = false;
    if (!checked) {
        checked = true;
        stack_t cur;
        if (sigaltstack(nullptr, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
            const size_t len = 64 * 1024;
            void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
            if (m != MAP_FAILED) {
                stack_t ss;
                ss.ss_sp = m;
                ss.ss_size = len;
                ss.ss_flags = 0;
                sigaltstack(&ss, nullptr);
            }
        }
    }
}

// ---- schedules ------------------------------------------------------------------------

uint64_t splitmix(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The order of the fibers in one round of block `blk` under the schedule.
void make_order(Sched& s, uint64_t blk, uint64_t round) {
    const int n = s.nthreads;
    s.order.resize(n);
    for (int t = 0; t < n; ++t) s.order[t] = s.schedule == 1 ? n - 1 - t : t;
    if (s.schedule >= 2) {
        uint64_t st = s.schedule * 0x2545f4914f6cdd1dull ^ (blk << 20) ^ round;
        for (int i = n - 1; i > 0; --i) {
            const int j = (int)(splitmix(st) % (uint64_t)(i + 1));
            const int tmp = s.order[i];
            s.order[i] = s.order[j];
            s.order[j] = tmp;
        }
    }
}

uint64_t gcd(uint64_t a, uint64_t b) {
    while (b != 0) {
        const uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

// Block order: index i of the run -> linear block index, a bijection of [0, total).
struct BlockOrder {
    uint64_t total, a = 1, c = 0;
    int kind;  // 0 index, 1 reverse, 2 affine permutation a·i + c mod total
    BlockOrder(uint64_t total_, uint64_t schedule) : total(total_) {
        kind = schedule < 2 ? (int)schedule : 2;
        if (kind == 2 && total > 1) {
            uint64_t st = schedule ^ 0x5bd1e995ull;
            a = splitmix(st) % total;
            while (gcd(a, total) != 1) a = (a + 1) % total;
            c = splitmix(st) % total;
        }
    }
    uint64_t at(uint64_t i) const {
        if (kind == 0) return i;
        if (kind == 1) return total - 1 - i;
        return (uint64_t)(((unsigned __int128)a * i + c) % total);
    }
};

// ---- the scheduler --------------------------------------------------------------------

// Save the running fiber and resume the scheduler.
__attribute__((noinline)) void yield_to_scheduler() {
    Sched& s = *g_sched;
    if (_setjmp(g_workers[s.cur].jb) == 0) _longjmp(s.main_jb, 1);
}

// A worker: one kernel body per resumption (g_sched is re-read: blocks and launches change).
void worker_main() {
    for (;;) {
        (*g_sched->body)();
        g_sched->fibers[g_sched->cur].st = St::Done;
        yield_to_scheduler();
    }
}

// Run fiber t until it yields (or faults: the handler jumps back here too).
__attribute__((noinline)) void enter_fiber(Sched& s, int t) {
    if (_setjmp(s.main_jb) != 0) return;
    Worker& w = g_workers[t];
    if (!w.live) {
        w.live = true;
        ucontext_t ctx;
        getcontext(&ctx);
        ctx.uc_stack.ss_sp = g_stacks.get(t);
        ctx.uc_stack.ss_size = kStack;
        ctx.uc_link = nullptr;  // worker_main never returns
        makecontext(&ctx, worker_main, 0);
        setcontext(&ctx);  // does not return: the fiber comes back by _longjmp
    }
    _longjmp(w.jb, 1);
}

bool run_block(Sched& s, uint64_t blk) {
    const int n = s.nthreads;
    for (int t = 0; t < n; ++t) {
        Fiber& f = s.fibers[t];
        f.tid = dim3(t % s.bdim.x, (t / s.bdim.x) % s.bdim.y, t / (s.bdim.x * s.bdim.y));
        f.st = St::Ready;
    }
    s.at_barrier = 0;
    s.shared_seen.clear();
    for (auto& w : s.warps) w.arrived = 0;
    for (uint64_t round = 0;; ++round) {
        make_order(s, blk, round);
        bool ran = false;
        for (int i = 0; i < n; ++i) {
            const int t = s.order[i];
            if (s.fibers[t].st != St::Ready) continue;
            s.cur = t;
            s.in_fiber = 1;
            enter_fiber(s, t);
            s.in_fiber = 0;
            if (s.faulted) return false;
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

std::string schedule_name(uint64_t s) {
    if (s == 0) return "schedule 0 (index order)";
    if (s == 1) return "schedule 1 (reverse order)";
    return "schedule " + std::to_string(s) + " (random order)";
}

std::string dim_str(const dim3& d) {
    return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

std::string hex(uintptr_t v) {
    char b[32];
    snprintf(b, sizeof b, "0x%" PRIxPTR, v);
    return b;
}

// One run of a bound kernel over the whole grid under `schedule`. On failure returns
// false with s.error set (or s.faulted, which the caller describes).
bool run_grid(Sched& s, const Body& body, const unsigned* grid, const unsigned* block,
              uint64_t schedule) {
    const unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    s.nthreads = (int)threads;
    s.fibers.resize(threads);
    s.warps.resize((threads + 31) / 32);
    s.bdim = dim3(block[0], block[1], block[2]);
    s.gdim = dim3(grid[0], grid[1], grid[2]);
    s.body = &body;
    s.schedule = schedule;
    if (!g_stacks.ensure(threads)) {
        s.error = "cannot map fiber stacks";
        return false;
    }
    if (g_workers.size() < threads) g_workers.resize(threads);
    Sched* prev = g_sched;
    g_sched = &s;
    const uint64_t total = (uint64_t)grid[0] * grid[1] * grid[2];
    const BlockOrder bo(total, schedule);
    bool ok = true;
    for (uint64_t i = 0; ok && i < total; ++i) {
        const uint64_t b = bo.at(i);
        s.bidx = dim3((unsigned)(b % grid[0]), (unsigned)(b / grid[0] % grid[1]),
                      (unsigned)(b / ((uint64_t)grid[0] * grid[1])));
        ok = run_block(s, b) && s.error.empty();
    }
    // workers left inside a body (a fault, a deadlock) cannot be resumed: restart them
    if (!ok)
        for (int t = 0; t < s.nthreads; ++t) g_workers[t].live = false;
    g_sched = prev;
    return ok;
}

// What a fault in a fiber was, without the buffer (the checked launch adds that).
std::string fault_base(const Sched& s) {
    std::string what = s.fault_sig == SIGBUS ? "bus error" : "invalid memory access";
    if (s.fault_write == 1) what = "invalid write";
    if (s.fault_write == 0) what = "invalid read";
    const int gs = g_stacks.guard_of(s.fault_addr);
    std::string where;
    if (gs >= 0) where = " (fiber stack overflow: a thread used more than 128 KiB of stack)";
    const dim3 tid = s.fault_thread >= 0 ? s.fibers[s.fault_thread].tid : dim3(0, 0, 0);
    return what + " at " + hex(s.fault_addr) + where + ", by thread " + dim_str(tid) +
           " of block " + dim_str(s.bidx);
}

// ---- checked launches: buffers on guard pages ------------------------------------------

// A copy of one buffer for one run: `bytes` bytes at `data` inside a mapping whose first
// and last pages are PROT_NONE.
struct Shadow {
    char* map = nullptr;
    size_t map_len = 0;
    char* data = nullptr;
    Shadow() = default;
    Shadow(const Shadow&) = delete;
    Shadow& operator=(const Shadow&) = delete;
    Shadow(Shadow&& o) noexcept : map(o.map), map_len(o.map_len), data(o.data) { o.map = nullptr; }
    ~Shadow() {
        if (map != nullptr) munmap(map, map_len);
    }
    // Map room for `bytes` and place them against the trailing guard (at_end) or the
    // leading one; `align` keeps the start aligned for the element type (a power of two
    // dividing the page size).
    bool place(size_t bytes, size_t align, bool at_end) {
        const size_t pg = page_size();
        const size_t body = (bytes + pg - 1) / pg * pg;
        map_len = body + 2 * pg;
        void* m = mmap(nullptr, map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return false;
        map = static_cast<char*>(m);
        if (body > 0 && mprotect(map + pg, body, PROT_READ | PROT_WRITE) != 0) return false;
        if (at_end) {
            const size_t lead = (body - bytes) / align * align;
            data = map + pg + lead;
        } else {
            data = map + pg;
        }
        return true;
    }
};

}  // namespace

const dim3& thread_idx() { return g_sched->fibers[g_sched->cur].tid; }
const dim3& block_idx() { return g_sched->bidx; }
const dim3& block_dim() { return g_sched->bdim; }
const dim3& grid_dim() { return g_sched->gdim; }
int lane_id() { return g_sched->cur % 32; }
void note_float_atomic() { ++g_sched->float_atomics; }

void note_shared_bytes(void* p, size_t n) {
    Sched& s = *g_sched;
    for (void* q : s.shared_seen)
        if (q == p) return;
    s.shared_seen.push_back(p);
    // 0xff: NaN as a float, -1 as an integer; other schedules use 0xa0..0xaf
    memset(p, s.schedule == 0 ? 0xff : 0xa5 ^ (int)(s.schedule & 0x0f), n);
}

void sync_block() {
    Sched& s = *g_sched;
    s.fibers[s.cur].st = St::Barrier;
    if (++s.at_barrier == s.nthreads) {
        for (auto& f : s.fibers)
            if (f.st == St::Barrier) f.st = St::Ready;
        s.at_barrier = 0;
    }
    yield_to_scheduler();
}

uint64_t warp_exchange(uint64_t bits, int src, unsigned mask) {
    Sched& s = *g_sched;
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

// One buffer a checked launch may touch (src/backend/emu/mod.rs, `Region`).
struct EmuRegion {
    uint64_t base;
    uint64_t bytes;
    uint32_t writable;
    uint32_t pad;
};

namespace {

void set_err(char* err, size_t len, const std::string& msg) {
    if (err == nullptr || len == 0) return;
    size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
    memcpy(err, msg.data(), n);
    err[n] = 0;
}

const emu::Entry* find_entry(const char* name) {
    for (size_t i = 0; i < kfac_emu_n_entries; ++i)
        if (strcmp(kfac_emu_entries[i].name, name) == 0) return &kfac_emu_entries[i];
    return nullptr;
}

bool check_geometry(const char* name, const unsigned* grid, const unsigned* block,
                    size_t shared_bytes, std::string* err) {
    const unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || threads == 0 ||
        threads > emu::kMaxThreads || grid[1] > 65535 || grid[2] > 65535) {
        *err = std::string(name) + ": invalid launch geometry grid (" + std::to_string(grid[0]) +
               "," + std::to_string(grid[1]) + "," + std::to_string(grid[2]) + ") block (" +
               std::to_string(block[0]) + "," + std::to_string(block[1]) + "," +
               std::to_string(block[2]) + ")";
        return false;
    }
    if (shared_bytes != 0) {
        *err = std::string(name) + ": dynamic shared memory is not emulated";
        return false;
    }
    return true;
}

// One element of a buffer as text.
std::string elem_str(const char* p, emu::Elem e) {
    char b[64];
    switch (e) {
        case emu::Elem::F32: {
            float v;
            memcpy(&v, p, 4);
            snprintf(b, sizeof b, "%.9g", (double)v);
            break;
        }
        case emu::Elem::F64: {
            double v;
            memcpy(&v, p, 8);
            snprintf(b, sizeof b, "%.17g", v);
            break;
        }
        case emu::Elem::I32: {
            int32_t v;
            memcpy(&v, p, 4);
            snprintf(b, sizeof b, "%" PRId32, v);
            break;
        }
        case emu::Elem::U32: {
            uint32_t v;
            memcpy(&v, p, 4);
            snprintf(b, sizeof b, "%" PRIu32, v);
            break;
        }
        case emu::Elem::I64: {
            int64_t v;
            memcpy(&v, p, 8);
            snprintf(b, sizeof b, "%" PRId64, v);
            break;
        }
        case emu::Elem::U64: {
            uint64_t v;
            memcpy(&v, p, 8);
            snprintf(b, sizeof b, "%" PRIu64, v);
            break;
        }
        default:
            snprintf(b, sizeof b, "0x%02x", (unsigned)(unsigned char)*p);
    }
    return b;
}

double as_f64(const char* p, emu::Elem e) {
    if (e == emu::Elem::F32) {
        float v;
        memcpy(&v, p, 4);
        return v;
    }
    double v;
    memcpy(&v, p, 8);
    return v;
}

// Index of the first element where got and want differ beyond what the launch allows
// (bitwise, or for float buffers of a launch with float atomics |got − want| ≤ rtol·‖want‖∞
// with rtol 1e-5 for f32 and 1e-12 for f64: float atomics add in schedule order, and a
// reordered sum of n terms differs by a few ulps of the largest partial sum), or -1.
long long first_mismatch(const char* got, const char* want, size_t bytes, emu::Elem e,
                         bool tolerant) {
    if (memcmp(got, want, bytes) == 0) return -1;
    const size_t es = emu::elem_size(e);
    const size_t n = bytes / es;
    const bool fl = tolerant && (e == emu::Elem::F32 || e == emu::Elem::F64);
    double scale = 0;
    if (fl)
        for (size_t i = 0; i < n; ++i) {
            const double w = fabs(as_f64(want + i * es, e));
            if (w > scale) scale = w;
        }
    const double rtol = e == emu::Elem::F32 ? 1e-5 : 1e-12;
    for (size_t i = 0; i < n; ++i) {
        if (memcmp(got + i * es, want + i * es, es) == 0) continue;
        if (fl) {
            const double g = as_f64(got + i * es, e), w = as_f64(want + i * es, e);
            if (isnan(g) && isnan(w)) continue;
            if (fabs(g - w) <= rtol * scale) continue;
        }
        return (long long)i;
    }
    // a trailing partial element (a byte buffer whose length is not a multiple)
    for (size_t i = n * es; i < bytes; ++i)
        if (got[i] != want[i]) return (long long)(i / es);
    return -1;
}

struct ArgRegion {
    const EmuRegion* r;
    emu::Elem elem = emu::Elem::None;
    size_t align = 1;
    int first_arg = -1;
};

std::string region_str(const ArgRegion& a) {
    const size_t es = emu::elem_size(a.elem);
    return "the buffer of argument " + std::to_string(a.first_arg) + " (" +
           std::to_string(a.r->bytes / es) + " × " + emu::elem_name(a.elem) + ")";
}

// Where a fault address lies relative to the shadows of one run.
std::string fault_where(uintptr_t addr, const std::vector<ArgRegion>& regs,
                        const std::vector<emu::Shadow>& sh) {
    for (size_t i = 0; i < regs.size(); ++i) {
        const emu::Shadow& s = sh[i];
        if (s.map == nullptr) continue;
        const uintptr_t lo = (uintptr_t)s.map, hi = lo + s.map_len;
        if (addr < lo || addr >= hi) continue;
        const long long off = (long long)(addr - (uintptr_t)s.data);
        const size_t es = emu::elem_size(regs[i].elem);
        return ": out of bounds of " + region_str(regs[i]) + ", byte " + std::to_string(off) +
               " of " + std::to_string(regs[i].r->bytes) +
               (off < 0 ? " (before its start" : " (past its end") +
               (off % (long long)es == 0 ? ", element " + std::to_string(off / (long long)es)
                                         : std::string()) +
               ")";
    }
    return "";
}

}  // namespace

extern "C" size_t kfac_emu_kernel_count() { return kfac_emu_n_entries; }

extern "C" const char* kfac_emu_kernel_name(size_t i) {
    return i < kfac_emu_n_entries ? kfac_emu_entries[i].name : nullptr;
}

// Launch `name` on grid × block threads under each schedule in schedules[0..nschedules)
// on guarded copies of the buffers regions[0..nregions) (see the file header). Every
// pointer argument must lie in one of the regions (its end included: an empty tail), or
// be null. With no regions, the kernel runs once, in place, under schedules[0] (the
// caller could name no buffers, so none can be copied). Returns 0 on success; otherwise 1
// and a message in err (unknown kernel, bad geometry, argument mismatch, deadlock,
// shuffle misuse, a fault, a result that depends on the schedule, a write to a read-only
// buffer).
extern "C" int kfac_emu_launch_checked(const char* name, const unsigned* grid,
                                       const unsigned* block, size_t shared_bytes,
                                       const emu::Arg* args, size_t nargs,
                                       const EmuRegion* regions, size_t nregions,
                                       const uint64_t* schedules, size_t nschedules, char* err,
                                       size_t err_len) {
    const emu::Entry* e = find_entry(name);
    if (e == nullptr) {
        set_err(err, err_len, std::string("no kernel named ") + name);
        return 1;
    }
    std::string msg;
    if (!check_geometry(name, grid, block, shared_bytes, &msg)) {
        set_err(err, err_len, msg);
        return 1;
    }
    std::vector<emu::Elem> elems(nargs);
    emu::Body body;
    if (!e->thunk(e->fn, args, nargs, &body, &msg, elems.data())) {
        set_err(err, err_len, std::string(name) + ": " + msg);
        return 1;
    }
    emu::install_fault_handler();
    const uint64_t sched0 = nschedules > 0 ? schedules[0] : 0;

    if (nregions == 0) {
        emu::Sched s;
        if (!emu::run_grid(s, body, grid, block, sched0)) {
            set_err(err, err_len,
                    std::string(name) + ": " + (s.faulted ? emu::fault_base(s) : s.error));
            return 1;
        }
        return 0;
    }

    // which region each pointer argument lies in
    std::vector<int> arg_reg(nargs, -1);
    std::vector<ArgRegion> regs(nregions);
    for (size_t r = 0; r < nregions; ++r) regs[r].r = &regions[r];
    for (size_t i = 0; i < nargs; ++i) {
        if (args[i].tag != 0 || args[i].bits == 0) continue;
        const uint64_t p = args[i].bits;
        int hit = -1;
        // the last match wins: the caller lists its most recent buffers last
        for (size_t r = 0; r < nregions; ++r)
            if (p >= regions[r].base && p <= regions[r].base + regions[r].bytes) hit = (int)r;
        if (hit < 0) {
            set_err(err, err_len,
                    std::string(name) + ": pointer argument " + std::to_string(i) + " (" +
                        emu::hex((uintptr_t)p) + ") lies in none of the " +
                        std::to_string(nregions) + " buffers the op passes");
            return 1;
        }
        arg_reg[i] = hit;
        ArgRegion& a = regs[hit];
        if (a.first_arg < 0) {
            a.first_arg = (int)i;
            a.elem = elems[i];
        } else if (a.elem != elems[i]) {
            a.elem = emu::Elem::Other;  // one buffer seen as two types: compare bytes
        }
        const size_t es = emu::elem_size(elems[i]);
        if (es > a.align) a.align = es;
    }

    // each run works on separate copies, so buffers that share bytes would diverge
    for (size_t r = 0; r < nregions; ++r)
        for (size_t q = r + 1; q < nregions; ++q) {
            if (regs[r].first_arg < 0 || regs[q].first_arg < 0) continue;
            const uint64_t lo = regions[r].base > regions[q].base ? regions[r].base : regions[q].base;
            const uint64_t ea = regions[r].base + regions[r].bytes, eb = regions[q].base + regions[q].bytes;
            if (lo < (ea < eb ? ea : eb)) {
                set_err(err, err_len, std::string(name) + ": " + region_str(regs[r]) + " and " +
                                          region_str(regs[q]) + " overlap");
                return 1;
            }
        }
    std::vector<emu::Shadow> ref;  // the first run's buffers
    uint64_t ref_atomics = 0;
    for (size_t j = 0; j < (nschedules > 0 ? nschedules : 1); ++j) {
        const uint64_t sched = nschedules > 0 ? schedules[j] : 0;
        std::vector<emu::Shadow> sh(nregions);
        for (size_t r = 0; r < nregions; ++r) {
            if (regs[r].first_arg < 0) continue;  // no argument points into it
            if (!sh[r].place(regions[r].bytes, regs[r].align, j % 2 == 0)) {
                set_err(err, err_len, std::string(name) + ": cannot map a guarded copy of " +
                                          region_str(regs[r]));
                return 1;
            }
            memcpy(sh[r].data, (const void*)(uintptr_t)regions[r].base, regions[r].bytes);
        }
        std::vector<emu::Arg> a(args, args + nargs);
        for (size_t i = 0; i < nargs; ++i)
            if (arg_reg[i] >= 0)
                a[i].bits = (uint64_t)(uintptr_t)sh[arg_reg[i]].data +
                            (args[i].bits - regions[arg_reg[i]].base);
        emu::Body b;
        if (!e->thunk(e->fn, a.data(), nargs, &b, &msg, nullptr)) {
            set_err(err, err_len, std::string(name) + ": " + msg);
            return 1;
        }
        emu::Sched s;
        if (!emu::run_grid(s, b, grid, block, sched)) {
            std::string what = s.faulted ? emu::fault_base(s) + fault_where(s.fault_addr, regs, sh)
                                         : s.error;
            set_err(err, err_len,
                    std::string(name) + ": " + what + ", under " + emu::schedule_name(sched));
            return 1;
        }
        for (size_t r = 0; r < nregions; ++r) {
            if (regs[r].first_arg < 0 || regions[r].writable) continue;
            const char* orig = (const char*)(uintptr_t)regions[r].base;
            const long long k =
                first_mismatch(sh[r].data, orig, regions[r].bytes, regs[r].elem, false);
            if (k >= 0) {
                const size_t es = emu::elem_size(regs[r].elem);
                set_err(err, err_len,
                        std::string(name) + ": wrote to " + region_str(regs[r]) +
                            ", which the op passes read-only: element " + std::to_string(k) +
                            " changed from " + elem_str(orig + k * es, regs[r].elem) + " to " +
                            elem_str(sh[r].data + k * es, regs[r].elem) + ", under " +
                            emu::schedule_name(sched));
                return 1;
            }
        }
        if (j == 0) {
            ref = std::move(sh);
            ref_atomics = s.float_atomics;
            continue;
        }
        const bool tolerant = ref_atomics > 0 || s.float_atomics > 0;
        for (size_t r = 0; r < nregions; ++r) {
            if (regs[r].first_arg < 0 || !regions[r].writable) continue;
            const long long k =
                first_mismatch(sh[r].data, ref[r].data, regions[r].bytes, regs[r].elem, tolerant);
            if (k >= 0) {
                const size_t es = emu::elem_size(regs[r].elem);
                set_err(err, err_len,
                        std::string(name) + ": the result depends on the thread schedule (a " +
                            "race: a missing __syncthreads, or threads or blocks sharing " +
                            "memory unordered): " + emu::schedule_name(sched) + " and " +
                            emu::schedule_name(sched0) + " differ in " + region_str(regs[r]) +
                            " at element " + std::to_string(k) + ": got " +
                            elem_str(sh[r].data + k * es, regs[r].elem) + ", want " +
                            elem_str(ref[r].data + k * es, regs[r].elem) +
                            (tolerant ? " (beyond the float-atomics tolerance)" : " (bitwise)"));
                return 1;
            }
        }
    }
    for (size_t r = 0; r < nregions; ++r)
        if (regs[r].first_arg >= 0 && regions[r].writable)
            memcpy((void*)(uintptr_t)regions[r].base, ref[r].data, regions[r].bytes);
    return 0;
}

// Launch `name` once, in place, in index order (kfac_emu_launch_checked without buffers).
extern "C" int kfac_emu_launch(const char* name, const unsigned* grid, const unsigned* block,
                               size_t shared_bytes, const emu::Arg* args, size_t nargs,
                               char* err, size_t err_len) {
    const uint64_t s0 = 0;
    return kfac_emu_launch_checked(name, grid, block, shared_bytes, args, nargs, nullptr, 0, &s0,
                                   1, err, err_len);
}
