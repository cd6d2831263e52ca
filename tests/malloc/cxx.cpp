// cxx.cpp - C++ allocation under libkheap.so: new/delete (plain, array,
// sized, over-aligned, nothrow) are kheap's own operators, and a failed
// new throws std::bad_alloc. Run under LD_PRELOAD.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <malloc.h>
#include <map>
#include <new>
#include <string>
#include <vector>

static int failed;

#define EXPECT(name, cond, ...)                                              \
    do {                                                                     \
        if (cond) {                                                          \
            std::printf("ok - %s\n", name);                                  \
        } else {                                                             \
            std::printf("not ok - %s: ", name);                              \
            std::printf(__VA_ARGS__);                                        \
            std::printf("\n");                                               \
            failed++;                                                        \
        }                                                                    \
    } while (0)

struct alignas(256) Wide {
    char bytes[300];
};

int main()
{
    Dl_info info{};
    void *(*volatile fn)(size_t) = std::malloc;
    bool ours = dladdr(reinterpret_cast<void *>(fn), &info) && info.dli_fname &&
                std::strstr(info.dli_fname, "libkheap.so");
    EXPECT("malloc_is_kheap", ours, "malloc comes from %s", info.dli_fname ? info.dli_fname : "?");

    // libkheap.so defines the C++ operators itself: each form resolves to
    // it, not to the C++ library.
    struct {
        const char *name;
        void *fn;
    } ops[] = {
        {"new", reinterpret_cast<void *>(static_cast<void *(*)(size_t)>(&::operator new))},
        {"new[]", reinterpret_cast<void *>(static_cast<void *(*)(size_t)>(&::operator new[]))},
        {"delete", reinterpret_cast<void *>(static_cast<void (*)(void *)>(&::operator delete))},
        {"sized delete",
         reinterpret_cast<void *>(static_cast<void (*)(void *, size_t)>(&::operator delete))},
        {"aligned new", reinterpret_cast<void *>(
                            static_cast<void *(*)(size_t, std::align_val_t)>(&::operator new))},
        {"nothrow new", reinterpret_cast<void *>(static_cast<void *(*)(
                            size_t, const std::nothrow_t &) noexcept>(&::operator new))},
    };
    const char *foreign = nullptr;
    for (auto &op : ops) {
        Dl_info oi{};
        if (!dladdr(op.fn, &oi) || !oi.dli_fname || !std::strstr(oi.dli_fname, "libkheap.so"))
            foreign = op.name;
    }
    EXPECT("operators_are_kheap", !foreign, "operator %s is not libkheap.so's", foreign);

    // Sized and aligned deletes of every form give the blocks back.
    for (size_t n : {1ul, 24ul, 1000ul, 5000ul, 300000ul}) {
        void *a = ::operator new(n);
        ::operator delete(a, n);
        void *b = ::operator new[](n);
        ::operator delete[](b, n);
        void *c = ::operator new(n, std::align_val_t(64));
        bool c64 = (reinterpret_cast<uintptr_t>(c) & 63) == 0;
        ::operator delete(c, n, std::align_val_t(64));
        void *d = ::operator new[](n, std::align_val_t(4096), std::nothrow);
        bool d4k = d && (reinterpret_cast<uintptr_t>(d) & 4095) == 0;
        ::operator delete[](d, std::align_val_t(4096), std::nothrow);
        EXPECT("sized_and_aligned_forms", c64 && d4k, "n %zu: 64-aligned %d, 4096-aligned %d", n,
               c64, d4k);
    }

    // kheap's malloc_usable_size aborts on a pointer it did not hand out,
    // so a usable size at least the request shows new went through kheap.
    int *one = new int(7);
    size_t u1 = malloc_usable_size(one);
    delete one;
    std::vector<long> *v = new std::vector<long>(1000, 3);
    size_t u2 = malloc_usable_size(v->data());
    delete v;
    char *arr = new char[100000];
    size_t u3 = malloc_usable_size(arr);
    delete[] arr;
    EXPECT("new_and_delete_use_kheap", u1 >= sizeof(int) && u2 >= 8000 && u3 >= 100000,
           "usable sizes %zu %zu %zu", u1, u2, u3);

    Wide *w = new Wide[3];
    bool aligned = (reinterpret_cast<uintptr_t>(w) & 255) == 0;
    w[2].bytes[299] = 1;
    delete[] w;
    Wide *w1 = new (std::nothrow) Wide;
    bool aligned1 = w1 && (reinterpret_cast<uintptr_t>(w1) & 255) == 0;
    delete w1;
    EXPECT("over_aligned_new", aligned && aligned1, "new Wide not 256-aligned");

    bool threw = false;
    try {
        volatile size_t huge = SIZE_MAX / 4;
        char *p = new char[huge];
        p[0] = 1;
        delete[] p;
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    char *q = new (std::nothrow) char[SIZE_MAX / 4];
    EXPECT("failed_new_throws_bad_alloc", threw && q == nullptr, "threw %d, nothrow %p", threw,
           static_cast<void *>(q));

    std::map<std::string, std::string> m;
    for (int i = 0; i < 100000; i++)
        m[std::to_string(i * 7919 % 100003)] = std::string(i % 50, 'x');
    size_t total = 0;
    for (auto &kv : m)
        total += kv.first.size() + kv.second.size();
    EXPECT("containers_churn", m.size() == 100000 && total > 0, "map size %zu", m.size());
    return failed ? 1 : 0;
}
