/*
 * insn_count: a QEMU TCG plugin that counts the guest instructions a program executes.
 *
 * At translation time each translation block gets an inline "add its instruction count to
 * the total" op, so counting costs one add per executed block and no callback. At exit the
 * total is written to the file named by the plugin argument `out=PATH` (or to QEMU's log).
 * With `tbs=PATH`, each translated block also counts its own executions, and at exit PATH gets
 * one line per block, "vaddr instructions executions" (hex, decimal, decimal; a block translated
 * twice appears twice): tools/arm-insn-count.sh --profile maps them to symbols.
 * The counters are plain u64s shared by all vCPU threads: exact for single-threaded guests
 * (run edgellm with -t 1), approximate otherwise.
 *
 * QEMU's qemu-plugin.h is not packaged by Debian, so the few declarations used here are
 * written out below; they follow QEMU 7.2's plugin API (plugin API version 1).
 *
 *   gcc -shared -fPIC -O2 -o libinsn_count.so insn_count.c
 *   qemu-aarch64 -plugin ./libinsn_count.so,out=/tmp/n.txt ./prog
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb,
                                                     enum qemu_plugin_op op, void *ptr,
                                                     uint64_t imm);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);
extern void qemu_plugin_outs(const char *string);

PLUGIN_EXPORT int qemu_plugin_version = 1;

static uint64_t executed;
static char out_path[4096];
static char tbs_path[4096];

/* One translated block, for tbs=PATH; kept in a list that is only ever prepended to. */
struct block {
    uint64_t vaddr;
    uint64_t n_insns;
    uint64_t execs;
    struct block *next;
};
static struct block *blocks;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
    if (tbs_path[0]) {
        struct block *b = calloc(1, sizeof *b);
        if (!b) {
            return;
        }
        b->vaddr = qemu_plugin_tb_vaddr(tb);
        b->n_insns = n;
        b->next = blocks;
        blocks = b;
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->execs, 1);
    }
}

static void write_blocks(void)
{
    FILE *f = fopen(tbs_path, "w");
    if (!f) {
        qemu_plugin_outs("insn_count: cannot write the tbs file\n");
        return;
    }
    for (struct block *b = blocks; b; b = b->next) {
        if (b->execs) {
            fprintf(f, "%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", b->vaddr, b->n_insns, b->execs);
        }
    }
    fclose(f);
}

static void on_guest_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    if (tbs_path[0]) {
        write_blocks();
    }
    char line[64];
    snprintf(line, sizeof line, "%" PRIu64 "\n", executed);
    if (out_path[0]) {
        FILE *f = fopen(out_path, "w");
        if (f) {
            fputs(line, f);
            fclose(f);
            return;
        }
    }
    qemu_plugin_outs("insn_count: ");
    qemu_plugin_outs(line);
}

PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                      char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
        } else if (strncmp(argv[i], "tbs=", 4) == 0) {
            snprintf(tbs_path, sizeof tbs_path, "%s", argv[i] + 4);
        } else {
            qemu_plugin_outs("insn_count: unknown argument (out=PATH, tbs=PATH)\n");
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_guest_exit, NULL);
    return 0;
}
