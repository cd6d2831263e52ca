/*
 * hosted_demo.c - kheap as a kernel heap, run as an ordinary program.
 *
 * Uses the default heap (the static KHEAP_DEFAULT_SIZE array, no init
 * call) the way a small kernel would: object caches for its long-lived
 * structures (tasks, inodes, dentries, open files, socket buffers) with
 * constructors, kmalloc for variable-sized data (names, packet payloads,
 * page-aligned buffers, a growing table with krealloc), a simulated
 * workload of process starts and exits, file opens and closes and packet
 * bursts, then the statistics, the slabinfo table and an integrity check.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kheap.h"

struct task {
    uint32_t pid, state;
    uint64_t regs[32];
    void *stack;           /* 16 KiB kmalloc'd, page-aligned */
    struct file *files[16];
    char comm[16];
    uint8_t fpu[512];
};

struct inode {
    uint64_t ino, size;
    uint32_t mode, nlink, refs, magic;
    uint8_t pad[200];
};

struct dentry {
    struct inode *inode;
    char *name;            /* kmalloc'd string */
    uint32_t hash, refs;
};

struct file {
    struct dentry *dentry;
    uint64_t pos;
    uint32_t flags, refs;
};

struct skb {
    uint8_t *data;         /* kmalloc'd payload */
    uint32_t len, proto;
    struct skb *next;
};

static unsigned long ctor_calls;

/* Constructed state kept across free/alloc (Bonwick): the magic and the
 * zero reference count are set once per object, not once per use. */
static void inode_ctor(void *obj)
{
    struct inode *i = obj;
    memset(i, 0, sizeof *i);
    i->magic = 0x1a0de;
    ctor_calls++;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static kheap_cache_t *task_cache, *inode_cache, *dentry_cache, *file_cache, *skb_cache;

#define MAX_TASKS 256
#define MAX_DENTRIES 4096
static struct task *tasks[MAX_TASKS];
static struct dentry *dentries[MAX_DENTRIES];

static struct dentry *lookup(unsigned i)
{
    if (dentries[i])
        return dentries[i];
    struct dentry *d = kheap_cache_alloc(dentry_cache);
    struct inode *ino = kheap_cache_alloc(inode_cache);
    if (!d || !ino) {
        kheap_cache_free(dentry_cache, d);
        kheap_cache_free(inode_cache, ino);
        return NULL;
    }
    if (ino->magic != 0x1a0de || ino->refs != 0) {
        printf("demo: inode lost its constructed state\n");
        exit(1);
    }
    ino->ino = i;
    ino->refs = 1;
    char name[64];
    int n = snprintf(name, sizeof name, "/usr/lib/module-%u.so", i);
    d->name = kmalloc((size_t)n + 1);
    if (!d->name) {
        ino->refs = 0;
        kheap_cache_free(inode_cache, ino);
        kheap_cache_free(dentry_cache, d);
        return NULL;
    }
    memcpy(d->name, name, (size_t)n + 1);
    d->inode = ino;
    d->refs = 0;
    return dentries[i] = d;
}

static void evict(unsigned i)
{
    struct dentry *d = dentries[i];
    if (!d || d->refs)
        return;
    kfree(d->name);
    d->inode->refs = 0; /* back to constructed state before free */
    kheap_cache_free(inode_cache, d->inode);
    kheap_cache_free(dentry_cache, d);
    dentries[i] = NULL;
}

static void task_exit(unsigned t)
{
    struct task *tk = tasks[t];
    for (int f = 0; f < 16; f++) {
        if (tk->files[f]) {
            tk->files[f]->dentry->refs--;
            kheap_cache_free(file_cache, tk->files[f]);
        }
    }
    kfree(tk->stack);
    kheap_cache_free(task_cache, tk);
    tasks[t] = NULL;
}

static void task_start(unsigned t, uint32_t pid)
{
    struct task *tk = kheap_cache_alloc(task_cache);
    if (!tk)
        return;
    memset(tk, 0, sizeof *tk);
    tk->pid = pid;
    snprintf(tk->comm, sizeof tk->comm, "worker/%u", pid);
    tk->stack = kmalloc_aligned(16384, 4096);
    for (int f = 0; f < 16 && tk->stack; f++) {
        if (rnd(3))
            continue;
        struct dentry *d = lookup(rnd(MAX_DENTRIES));
        struct file *fl = d ? kheap_cache_alloc(file_cache) : NULL;
        if (!fl)
            break;
        fl->dentry = d;
        d->refs++;
        tk->files[f] = fl;
    }
    tasks[t] = tk;
}

static unsigned long packets;

static void packet_burst(void)
{
    static const uint32_t sizes[] = {64, 128, 576, 1500, 1500, 1500, 2048, 9000};
    struct skb *q = NULL;
    unsigned n = 16 + rnd(48);
    for (unsigned k = 0; k < n; k++) {
        struct skb *s = kheap_cache_alloc(skb_cache);
        if (!s)
            break;
        s->len = sizes[rnd(8)];
        s->data = kmalloc(s->len);
        if (!s->data) {
            kheap_cache_free(skb_cache, s);
            break;
        }
        memset(s->data, 0xee, s->len);
        s->next = q;
        q = s;
    }
    while (q) {
        struct skb *s = q;
        q = s->next;
        kfree(s->data);
        kheap_cache_free(skb_cache, s);
        packets++;
    }
}

int main(int argc, char **argv)
{
    unsigned rounds = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 0) : 20000;
    char buf[32768];

    printf("kheap demo: default heap of %u bytes ends at %#lx\n",
           (unsigned)KHEAP_DEFAULT_SIZE, (unsigned long)kheap_default_end());
    kheap_t *h = kheap_default();
    task_cache = kheap_cache_create(h, "task_struct", sizeof(struct task), 64, NULL, NULL);
    inode_cache = kheap_cache_create(h, "inode", sizeof(struct inode), 0, inode_ctor, NULL);
    dentry_cache = kheap_cache_create(h, "dentry", sizeof(struct dentry), 0, NULL, NULL);
    file_cache = kheap_cache_create(h, "filp", sizeof(struct file), 0, NULL, NULL);
    skb_cache = kheap_cache_create(h, "skbuff_head", sizeof(struct skb), 0, NULL, NULL);
    if (!task_cache || !inode_cache || !dentry_cache || !file_cache || !skb_cache) {
        printf("demo: cannot create caches\n");
        return 1;
    }

    /* A growing table, as a kernel's pid map would: krealloc doubling. */
    size_t table_len = 16;
    uint32_t *pid_table = kcalloc(table_len, sizeof *pid_table);
    uint32_t next_pid = 1;
    for (unsigned r = 0; r < rounds; r++) {
        unsigned t = rnd(MAX_TASKS);
        if (tasks[t]) {
            task_exit(t);
        } else {
            task_start(t, next_pid);
            if (next_pid >= table_len) {
                uint32_t *grown = krealloc(pid_table, 2 * table_len * sizeof *pid_table);
                if (grown) {
                    memset(grown + table_len, 0, table_len * sizeof *grown);
                    pid_table = grown;
                    table_len *= 2;
                }
            }
            if (next_pid < table_len)
                pid_table[next_pid] = t;
            next_pid++;
        }
        if (rnd(4) == 0)
            packet_burst();
        if (rnd(8) == 0)
            evict(rnd(MAX_DENTRIES));
    }

    printf("\n-- after %u rounds: %u processes started, %lu packets, %lu inode "
           "constructor calls --\n", rounds, next_pid - 1, packets, ctor_calls);
    kheap_format_stats(h, buf, sizeof buf);
    fputs(buf, stdout);
    printf("\n-- slabinfo --\n");
    kheap_format_slabinfo(h, buf, sizeof buf, false);
    fputs(buf, stdout);

    /* Shut down: every task exits, every dentry is evicted, caches go. */
    for (unsigned t = 0; t < MAX_TASKS; t++)
        if (tasks[t])
            task_exit(t);
    for (unsigned i = 0; i < MAX_DENTRIES; i++)
        evict(i);
    kfree(pid_table);
    int err = kheap_cache_destroy(task_cache) | kheap_cache_destroy(inode_cache) |
              kheap_cache_destroy(dentry_cache) | kheap_cache_destroy(file_cache) |
              kheap_cache_destroy(skb_cache);
    size_t back = kheap_reclaim(h);
    const void *addr = NULL;
    const char *problem = kheap_check_quiescent(h, &addr);
    struct kheap_stats s;
    kheap_get_stats(h, &s);
    printf("\n-- after shutdown: %zu bytes of empty slabs reclaimed --\n", back);
    kheap_format_stats(h, buf, sizeof buf);
    fputs(buf, stdout);
    printf("kheap_check: %s%s\n", problem ? problem : "clean", problem ? "" : "");
    if (problem || err || s.used_bytes != 0 || s.heap_free + s.metadata_bytes != s.heap_total) {
        printf("demo: FAILED (check %p, destroy %d, used %zu)\n", addr, err, s.used_bytes);
        return 1;
    }
    printf("demo: ok, the heap is whole again (%zu bytes free in one run)\n", s.heap_free);
    return 0;
}
