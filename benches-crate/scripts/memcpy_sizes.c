/* memcpy calls by call site and size, for `memcpy_sizes.sh` (issue 18): an LD_PRELOAD shim.
 * SIGUSR1 clears the table and starts counting; SIGUSR2 stops and writes the process maps and
 * one line per (return address, size) with its count to $MC_OUT (default /tmp/mc.out). With
 * MC_WHOLE=1 it counts from the start and writes at exit instead (a benchmark run whole). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>

typedef void *(*memcpy_fn)(void *, const void *, size_t);
static memcpy_fn real_memcpy;
static atomic_int enabled;
static atomic_flag lock = ATOMIC_FLAG_INIT;
#define SLOTS (1 << 16)
struct slot { uintptr_t caller; size_t size; uint64_t count; };
static struct slot table[SLOTS];

static void *slow_copy(void *d, const void *s, size_t n) {
  volatile unsigned char *dd = d; const unsigned char *ss = s;
  for (size_t i = 0; i < n; i++) dd[i] = ss[i];
  return d;
}

static void record(uintptr_t caller, size_t n) {
  while (atomic_flag_test_and_set(&lock)) {}
  size_t h = (caller * 0x9E3779B97F4A7C15ull ^ n * 0xC2B2AE3D27D4EB4Full) >> 48;
  for (size_t i = 0; i < SLOTS; i++) {
    struct slot *s = &table[(h + i) & (SLOTS - 1)];
    if (s->count == 0) { s->caller = caller; s->size = n; s->count = 1; break; }
    if (s->caller == caller && s->size == n) { s->count++; break; }
  }
  atomic_flag_clear(&lock);
}

void *memcpy(void *d, const void *s, size_t n) {
  if (atomic_load_explicit(&enabled, memory_order_relaxed))
    record((uintptr_t)__builtin_return_address(0), n);
  if (!real_memcpy) return slow_copy(d, s, n);
  return real_memcpy(d, s, n);
}

static void on_start(int sig) { (void)sig; memset(table, 0, sizeof table); atomic_store(&enabled, 1); }
static void on_dump(int sig) {
  (void)sig; atomic_store(&enabled, 0);
  const char *path = getenv("MC_OUT"); if (!path) path = "/tmp/mc.out";
  FILE *f = fopen(path, "w"); if (!f) return;
  FILE *m = fopen("/proc/self/maps", "r"); char line[512];
  while (m && fgets(line, sizeof line, m)) fprintf(f, "MAP %s", line);
  if (m) fclose(m);
  for (size_t i = 0; i < SLOTS; i++) if (table[i].count)
    fprintf(f, "%lx %zu %lu\n", (unsigned long)table[i].caller, table[i].size, (unsigned long)table[i].count);
  fclose(f);
}

__attribute__((destructor)) static void fini(void) {
  if (getenv("MC_WHOLE")) on_dump(0);
}

__attribute__((constructor)) static void init(void) {
  real_memcpy = (memcpy_fn)dlsym(RTLD_NEXT, "memcpy");
  signal(SIGUSR1, on_start); signal(SIGUSR2, on_dump);
  if (getenv("MC_WHOLE")) atomic_store(&enabled, 1);
}
