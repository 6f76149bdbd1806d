/* proc_ports_test: the test-port reservation of tests/support/fm_proc.h. Two processes
 * asking at the same time get disjoint blocks (the flock is held for a process's life), the
 * ports lie below the kernel's ephemeral range, and a process hands out each port of its
 * block once before wrapping around. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../support/fm_proc.h"

static int s_ephemeral_lo(void)
{
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    int lo = 32768, hi = 0;
    if (f) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2)
            lo = 32768;
        fclose(f);
    }
    return lo;
}

static const char *s_self; /* this executable, run again as a second test process */

static void test_disjoint_blocks(void **state)
{
    (void)state;
    int mine = fm_proc_free_port(); /* this process now holds its block */
    assert_true(mine >= FM_PROC_PORT_BASE);
    assert_true(mine < s_ephemeral_lo());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "'%s' --port", s_self);
    FILE *p = popen(cmd, "r"); /* a fresh process, as a parallel ctest would start */
    assert_non_null(p);
    int theirs = -1;
    assert_int_equal(fscanf(p, "%d", &theirs), 1);
    assert_int_equal(pclose(p), 0);
    assert_true(theirs >= FM_PROC_PORT_BASE);
    int mine_block = (mine - FM_PROC_PORT_BASE) / FM_PROC_PORT_BLOCK;
    int their_block = (theirs - FM_PROC_PORT_BASE) / FM_PROC_PORT_BLOCK;
    assert_int_not_equal(mine_block, their_block);
}

static void test_each_port_once(void **state)
{
    (void)state;
    int first = fm_proc_free_port();
    int base = FM_PROC_PORT_BASE +
               (first - FM_PROC_PORT_BASE) / FM_PROC_PORT_BLOCK * FM_PROC_PORT_BLOCK;
    uint8_t seen[FM_PROC_PORT_BLOCK] = {0};
    seen[first - base] = 1;
    for (int i = 1; i < FM_PROC_PORT_BLOCK; i++) {
        int port = fm_proc_free_port();
        assert_true(port >= base && port < base + FM_PROC_PORT_BLOCK);
        assert_false(seen[port - base]); /* no repeat before the block is used up */
        seen[port - base] = 1;
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--port") == 0) {
        printf("%d\n", fm_proc_free_port());
        return 0;
    }
    s_self = argv[0];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disjoint_blocks),
        cmocka_unit_test(test_each_port_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
