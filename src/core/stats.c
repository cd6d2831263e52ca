/*
 * stats.c - the heap's statistics, and their text form.
 *
 * Figures come from counters kept where the work is done: page counts by
 * the page layer (page_lock); object counts per CPU and per cache, by the
 * per-CPU layer (each CPU writes only its own, see cpu.c) and summed here;
 * large blocks and failures under page_lock; committed bytes, their peak
 * and internal bytes as atomic counters (heap.c). Object counts are
 * summed first, then page_lock is taken. On a quiet heap every figure is
 * exact; while other CPUs work, the object counts are each exact but read
 * a moment apart. Identities (checked by kheap_check on a quiet heap):
 *   used_bytes == allocated_bytes - freed_bytes
 *   committed == used_bytes + bytes of objects cached in magazines
 *   heap_used + heap_free == heap_total
 *   heap_free == free pages * KHEAP_PAGE_SIZE
 * peak_bytes is the highest committed figure: at least the true peak of
 * used_bytes, above it by at most what the magazines held then.
 *
 * The text writers take a buffer and a length, never a libc stream, so a
 * bare-metal kernel can print them on its console.
 */
#include "kh_internal.h"

/* Add cache c's object counts to *out (its per-CPU counters summed), and
 * where its free objects and empty slabs are. */
static void add_cache(struct kheap_cache *c, struct kheap_stats *out)
{
    struct kheap_cache_info row;
    kheap_cache_info(c, &row);
    out->allocation_count += row.allocs;
    out->free_count += row.frees;
    out->allocated_bytes += row.allocs * c->size;
    out->freed_bytes += row.frees * c->size;
    out->depot_bytes += row.depot_objs * c->size;
    out->magazine_bytes += (row.cached_objs - row.depot_objs) * c->size;
    out->empty_slab_bytes += row.empty_slabs * c->pages * KH_PAGE;
}

void kheap_get_stats(kheap_t *h, struct kheap_stats *out)
{
    __builtin_memset(out, 0, sizeof *out);
    /* Object counts first: they are per CPU and per cache, read without
     * the page lock (the cache locks come before it). */
    out->nolock_fails = __atomic_load_n(&h->xc_early.nolock_fails, __ATOMIC_RELAXED);
    out->nolock_deferred = __atomic_load_n(&h->xc_early.nolock_deferred, __ATOMIC_RELAXED);
    kh_each_cache_locking(h, c) {
        if (c->flags & KH_CACHE_INTERNAL)
            continue;
        add_cache(c, out);
        const struct kh_xc *x = kh_xc_of(h, c);
        if (x) {
            out->nolock_fails += __atomic_load_n(&x->nolock_fails, __ATOMIC_RELAXED);
            out->nolock_deferred += __atomic_load_n(&x->nolock_deferred, __ATOMIC_RELAXED);
        }
    }

    kh_lock(&h->page_lock);
    out->heap_total = h->total_bytes;
    out->heap_free = h->free_pages * KH_PAGE;
    out->heap_used = out->heap_total - out->heap_free;
    out->slab_bytes = h->slab_pages * KH_PAGE;
    out->large_bytes = h->large_pages * KH_PAGE;
    out->region_count = h->nregions;
    out->large_count = (size_t)(h->large_allocs - h->large_frees);
    out->dirty_bytes = h->dirty_pages * KH_PAGE;
    out->purged_bytes = (h->free_pages - h->dirty_pages) * KH_PAGE;
    out->purged_total = h->purged_pages * KH_PAGE;
    out->metadata_bytes = h->region_meta + h->bitmap_bytes +
                          __atomic_load_n(&h->internal_bytes, __ATOMIC_RELAXED) +
                          h->meta_pages * KH_PAGE;
    out->allocation_count += h->large_allocs + h->retired_allocs;
    out->free_count += h->large_frees + h->retired_frees;
    out->allocated_bytes += h->large_alloc_bytes + h->retired_bytes;
    out->freed_bytes += h->large_free_bytes + h->retired_bytes;
    out->peak_bytes = __atomic_load_n(&h->peak_bytes, __ATOMIC_RELAXED);
    out->failed_count = h->failed_count;
    out->shrink_passes = __atomic_load_n(&h->shrink_passes, __ATOMIC_RELAXED);
    /* The CPUs' caches of large blocks in the same hold: a flush moves
     * runs from their counts to the page layer's under this lock (cpu.c,
     * runs_flush), so each run is counted once. */
    struct kh_run_counts rc;
    kh_runs_counts(h, &rc);
    kh_unlock(&h->page_lock);
#if KH_GUARDS
    uint64_t ga, gf, gab, gfb;
    kh_guard_stats(h, &ga, &gf, &gab, &gfb);
    out->allocation_count += ga;
    out->free_count += gf;
    out->allocated_bytes += gab;
    out->freed_bytes += gfb;
    out->sampled_count = ga;
    out->sampled_live = (size_t)(ga - gf);
#endif
    /* The CPUs' caches of large blocks: the program's allocations and
     * frees they served (the page layer's are counted above), and what
     * they hold (part of large_bytes). */
    out->allocation_count += rc.allocs;
    out->free_count += rc.frees;
    out->allocated_bytes += rc.alloc_pages * KH_PAGE;
    out->freed_bytes += rc.free_pages * KH_PAGE;
    out->large_count += (size_t)(rc.allocs - rc.frees);
    out->large_cache_bytes = (size_t)rc.held * KH_PAGE;
    out->decay_epochs = __atomic_load_n(&h->decay_epochs, __ATOMIC_RELAXED);
    out->used_bytes = out->allocated_bytes - out->freed_bytes;
    if (out->peak_bytes < out->used_bytes)
        out->peak_bytes = out->used_bytes;
}

void kheap_get_heap_stats(kheap_t *h, size_t *total, size_t *used,
                          size_t *free_bytes)
{
    struct kheap_stats s;
    kheap_get_stats(h, &s);
    if (total)
        *total = s.heap_total;
    if (used)
        *used = s.heap_used;
    if (free_bytes)
        *free_bytes = s.heap_free;
}

size_t kheap_largest_free(kheap_t *h)
{
    if (!h)
        return 0;
    kh_lock(&h->page_lock);
    size_t n = kh_pages_longest(h);
    kh_unlock(&h->page_lock);
    return n * KH_PAGE;
}

/* ------------------------------------------------------------------ */
/* Text. */

struct out {
    char *buf;
    size_t len, pos;
};

static void put_ch(struct out *o, char ch)
{
    if (o->pos + 1 < o->len)
        o->buf[o->pos] = ch;
    o->pos++;
}

static void put_str(struct out *o, const char *s, size_t width)
{
    size_t n = 0;
    for (; s[n]; n++)
        put_ch(o, s[n]);
    for (; n < width; n++)
        put_ch(o, ' ');
}

/* v in decimal, right-aligned in width columns. */
static void put_num(struct out *o, uint64_t v, size_t width)
{
    char d[20];
    size_t n = kh_decimal(d, v);
    for (size_t k = n; k < width; k++)
        put_ch(o, ' ');
    for (size_t k = 0; k < n; k++)
        put_ch(o, d[k]);
}

/* part/whole as a percentage with two decimals. */
static void put_pct(struct out *o, uint64_t part, uint64_t whole)
{
    uint64_t hundredths = whole ? part * 10000 / whole : 0;
    put_num(o, hundredths / 100, 0);
    put_ch(o, '.');
    put_ch(o, (char)('0' + hundredths / 10 % 10));
    put_ch(o, (char)('0' + hundredths % 10));
    put_ch(o, '%');
}

static size_t finish(struct out *o)
{
    if (o->len)
        o->buf[o->pos < o->len ? o->pos : o->len - 1] = 0;
    return o->pos;
}

static void put_row(struct out *o, const char *label, const char *const *names,
                    const uint64_t *vals, size_t n)
{
    put_str(o, label, 10);
    for (size_t i = 0; i < n; i++) {
        put_ch(o, ' ');
        put_str(o, names[i], 0);
        put_ch(o, ' ');
        put_num(o, vals[i], 0);
    }
    put_ch(o, '\n');
}

size_t kheap_format_stats(kheap_t *h, char *buf, size_t len)
{
    struct kheap_stats s;
    struct out o = {buf, len, 0};
    kheap_get_stats(h, &s);
    static const char *const heap_names[] = {"total", "used", "free", "regions"};
    const uint64_t heap_vals[] = {s.heap_total, s.heap_used, s.heap_free, s.region_count};
    put_row(&o, "heap", heap_names, heap_vals, 4);
    static const char *const byte_names[] = {"used", "peak", "allocated", "freed"};
    const uint64_t byte_vals[] = {s.used_bytes, s.peak_bytes, s.allocated_bytes,
                                  s.freed_bytes};
    put_row(&o, "bytes", byte_names, byte_vals, 4);
    static const char *const count_names[] = {"allocations", "frees", "failed"};
    const uint64_t count_vals[] = {s.allocation_count, s.free_count, s.failed_count};
    put_row(&o, "counts", count_names, count_vals, 3);
    static const char *const page_names[] = {"slab", "large", "metadata"};
    const uint64_t page_vals[] = {s.slab_bytes, s.large_bytes, s.metadata_bytes};
    put_str(&o, "pages", 10);
    for (size_t i = 0; i < 3; i++) {
        put_ch(&o, ' ');
        put_str(&o, page_names[i], 0);
        put_ch(&o, ' ');
        put_num(&o, page_vals[i], 0);
    }
    put_str(&o, " (metadata ", 0);
    put_pct(&o, s.metadata_bytes, s.heap_total);
    put_str(&o, " of heap)\n", 0);
    static const char *const idle_names[] = {"magazines", "depots", "empty_slabs",
                                             "free_resident", "free_purged", "large_cached"};
    const uint64_t idle_vals[] = {s.magazine_bytes, s.depot_bytes, s.empty_slab_bytes,
                                  s.dirty_bytes, s.purged_bytes, s.large_cache_bytes};
    put_row(&o, "idle", idle_names, idle_vals, 6);
    static const char *const decay_names[] = {"epochs", "purged_total"};
    const uint64_t decay_vals[] = {s.decay_epochs, s.purged_total};
    put_row(&o, "decay", decay_names, decay_vals, 2);
    if (s.sampled_count) { /* only once blocks were sampled: the lines stay as they were */
        static const char *const guard_names[] = {"sampled", "live"};
        const uint64_t guard_vals[] = {s.sampled_count, s.sampled_live};
        put_row(&o, "guard", guard_names, guard_vals, 2);
    }
    return finish(&o);
}

static void put_cache(struct out *o, struct kheap_cache *c, bool all)
{
    struct kheap_cache_info row;
    kheap_cache_info(c, &row);
    if (!all && row.num_slabs == 0 && row.allocs == 0)
        return;
    put_str(o, row.name, KHEAP_NAME_MAX);
    const uint64_t v[] = {row.active_objs, row.num_objs,     row.objsize,
                          row.objperslab,  row.pagesperslab, row.active_slabs,
                          row.num_slabs,   row.allocs,       row.frees,
                          row.cached_objs, row.cpu_hits,     row.cpu_misses,
                          row.depot_objs,  row.empty_slabs};
    for (size_t k = 0; k < 14; k++) {
        put_ch(o, ' ');
        put_num(o, v[k], 12);
    }
    put_ch(o, '\n');
}

size_t kheap_format_slabinfo(kheap_t *h, char *buf, size_t len, bool all)
{
    struct out o = {buf, len, 0};
    static const char *const cols[] = {"active_objs", "num_objs", "objsize",
                                       "objperslab", "pagesperslab", "active_slabs",
                                       "num_slabs", "allocs", "frees", "cached",
                                       "cpu_hits", "cpu_misses", "depot", "empty_slabs"};
    put_str(&o, "# name", KHEAP_NAME_MAX);
    for (size_t i = 0; i < 14; i++) {
        put_ch(&o, ' ');
        size_t w = 0;
        while (cols[i][w])
            w++;
        for (; w < 12; w++)
            put_ch(&o, ' ');
        put_str(&o, cols[i], 0);
    }
    put_ch(&o, '\n');
    kh_each_cache_locking(h, c)
        put_cache(&o, c, all);
    return finish(&o);
}
