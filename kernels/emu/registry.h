// Kernel registry of the CPU emulation: maps an entry point's name to a thunk that checks
// the launch arguments (count and kind: pointer, i64, i32, f32, f64) against the kernel's
// real C++ signature and binds them. The generated translation unit
// ($OUT_DIR/emu_kernels.cpp, written by build.rs) includes every kernels/*.cu and lists
// each `extern "C" __global__` entry point with `emu::entry`. The thunk also reports what
// each pointer argument points to (element type from the signature), so the schedule
// comparison in runtime.cpp can name and compare elements, and align buffer copies.
#pragma once

#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace emu {

// One launch argument as Rust passes it (src/backend/emu/mod.rs, `EmuArg`).
struct Arg {
    uint32_t tag;  // 0 pointer, 1 i64, 2 i32, 3 f32, 4 f64
    uint32_t pad;
    uint64_t bits;
};

inline const char* tag_name(uint32_t t) {
    switch (t) {
        case 0: return "pointer";
        case 1: return "i64";
        case 2: return "i32";
        case 3: return "f32";
        case 4: return "f64";
        default: return "unknown";
    }
}

// Element type a pointer argument points to (Elem::None for the scalar arguments).
enum class Elem : uint8_t { None, F32, F64, I32, U32, I64, U64, Other };

inline const char* elem_name(Elem e) {
    switch (e) {
        case Elem::F32: return "f32";
        case Elem::F64: return "f64";
        case Elem::I32: return "i32";
        case Elem::U32: return "u32";
        case Elem::I64: return "i64";
        case Elem::U64: return "u64";
        default: return "byte";
    }
}
inline size_t elem_size(Elem e) {
    switch (e) {
        case Elem::F32: case Elem::I32: case Elem::U32: return 4;
        case Elem::F64: case Elem::I64: case Elem::U64: return 8;
        default: return 1;
    }
}

template <class P> struct ElemOf { static constexpr Elem kind = Elem::Other; };
template <> struct ElemOf<float> { static constexpr Elem kind = Elem::F32; };
template <> struct ElemOf<double> { static constexpr Elem kind = Elem::F64; };
template <> struct ElemOf<int> { static constexpr Elem kind = Elem::I32; };
template <> struct ElemOf<unsigned> { static constexpr Elem kind = Elem::U32; };
template <> struct ElemOf<long long> { static constexpr Elem kind = Elem::I64; };
template <> struct ElemOf<unsigned long long> { static constexpr Elem kind = Elem::U64; };

template <class A>
struct ArgKind {
    static constexpr Elem elem = Elem::None;
};
template <class P>
struct ArgKind<P*> {
    static constexpr uint32_t tag = 0;
    static constexpr Elem elem = ElemOf<std::remove_cv_t<P>>::kind;
    static P* get(uint64_t b) { return reinterpret_cast<P*>(static_cast<uintptr_t>(b)); }
};
template <>
struct ArgKind<long long> {
    static constexpr Elem elem = Elem::None;
    static constexpr uint32_t tag = 1;
    static long long get(uint64_t b) { return static_cast<long long>(b); }
};
template <>
struct ArgKind<int> {
    static constexpr Elem elem = Elem::None;
    static constexpr uint32_t tag = 2;
    static int get(uint64_t b) { return static_cast<int>(static_cast<int32_t>(static_cast<uint32_t>(b))); }
};
template <>
struct ArgKind<float> {
    static constexpr Elem elem = Elem::None;
    static constexpr uint32_t tag = 3;
    static float get(uint64_t b) {
        uint32_t u = static_cast<uint32_t>(b);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
};
template <>
struct ArgKind<double> {
    static constexpr Elem elem = Elem::None;
    static constexpr uint32_t tag = 4;
    static double get(uint64_t b) {
        double d;
        memcpy(&d, &b, 8);
        return d;
    }
};

using Body = std::function<void()>;
// Checks the arguments, binds them into `out`, and (when `elems` is not null) stores the
// element type of each argument in elems[0..n).
using Thunk = bool (*)(void* fn, const Arg* args, size_t n, Body* out, std::string* err,
                       Elem* elems);

template <class... A, size_t... I>
Body bind_args(void (*fn)(A...), const Arg* a, std::index_sequence<I...>) {
    auto vals = std::make_tuple(ArgKind<A>::get(a[I].bits)...);
    return [fn, vals] { std::apply(fn, vals); };
}

template <class... A>
bool thunk(void* fn, const Arg* args, size_t n, Body* out, std::string* err, Elem* elems) {
    constexpr size_t want = sizeof...(A);
    if (n != want) {
        *err = "expected " + std::to_string(want) + " arguments, got " + std::to_string(n);
        return false;
    }
    const uint32_t tags[want + 1] = {ArgKind<A>::tag..., 0};
    for (size_t i = 0; i < want; ++i) {
        if (args[i].tag != tags[i]) {
            *err = "argument " + std::to_string(i) + " is a " + tag_name(args[i].tag) +
                   ", the kernel takes a " + tag_name(tags[i]);
            return false;
        }
    }
    if (elems != nullptr) {
        const Elem kinds[want + 1] = {ArgKind<A>::elem..., Elem::None};
        for (size_t i = 0; i < want; ++i) elems[i] = kinds[i];
    }
    *out = ::emu::bind_args(reinterpret_cast<void (*)(A...)>(fn), args, std::index_sequence_for<A...>{});
    return true;
}

struct Entry {
    const char* name;
    void* fn;
    Thunk thunk;
};

template <class... A>
Entry entry(const char* name, void (*f)(A...)) {
    return Entry{name, reinterpret_cast<void*>(f), &thunk<A...>};
}

}  // namespace emu
