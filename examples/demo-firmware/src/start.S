/*
 * Reset entry for the QEMU Xtensa "sim" machine (lx106 core, call0 ABI).
 *
 * QEMU loads the ELF itself and jumps to its entry point, which the linker
 * script places at the start of sysrom (0x50000000). All we have to do is
 * set up a stack, clear .bss and call into C.
 */
    .section .entry.text, "ax"
    .align  4
    .global _start
    .type   _start, @function
_start:
    /* The entry must be code: jump over the literal pool that follows. */
    j       1f

    .literal_position
    .literal .Lstack_top, _stack_top
    .literal .Lbss_start, _bss_start
    .literal .Lbss_end, _bss_end
    .literal .Lmain, fw_main

    .align  4
1:
    l32r    a1, .Lstack_top         /* sp */
    movi    a0, 0                   /* terminate backtraces */

    l32r    a2, .Lbss_start
    l32r    a3, .Lbss_end
    movi    a4, 0
2:
    bgeu    a2, a3, 3f
    s32i    a4, a2, 0
    addi    a2, a2, 4
    j       2b
3:
    l32r    a0, .Lmain
    callx0  a0

    /* fw_main never returns; if it does, exit(0) through semihosting. */
    movi    a2, 1
    movi    a3, 0
    simcall
4:
    j       4b
    .size   _start, . - _start
