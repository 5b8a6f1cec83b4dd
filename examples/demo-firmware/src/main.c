/*
 * TestArena demo firmware.
 *
 * A tiny serial-console style firmware for the Xtensa lx106 core, meant to
 * run in QEMU's "sim" machine with -semihosting. The console is QEMU's
 * stdin/stdout, reached through the `simcall` instruction.
 *
 * No libc: everything needed (string helpers, number formatting, a small
 * unsigned divide) lives in this file.
 */

typedef unsigned int u32;
typedef int s32;
typedef unsigned char u8;

#define FW_VERSION "1.0"

/* ------------------------------------------------------------------------ */
/* Semihosting (QEMU target/xtensa/xtensa-semi.c)                            */
/* ------------------------------------------------------------------------ */

#define SYS_EXIT  1
#define SYS_READ  3
#define SYS_WRITE 4
#define SYS_SELECT_ONE 29

#define SELECT_ONE_READ 1

#define SEMI_EAGAIN 11
#define SEMI_EINTR  4

/* simcall: a2 = call number, a3..a5 = arguments; a2 = result, a3 = errno. */
static inline s32 simcall3(u32 nr, u32 arg1, u32 arg2, u32 arg3, u32 *err)
{
    register u32 a2 __asm__("a2") = nr;
    register u32 a3 __asm__("a3") = arg1;
    register u32 a4 __asm__("a4") = arg2;
    register u32 a5 __asm__("a5") = arg3;

    __asm__ __volatile__("simcall"
                         : "+r"(a2), "+r"(a3)
                         : "r"(a4), "r"(a5)
                         : "memory");
    if (err) {
        *err = a3;
    }
    return (s32)a2;
}

static void __attribute__((noreturn)) sys_exit(u32 code)
{
    for (;;) {
        simcall3(SYS_EXIT, code, 0, 0, 0);
    }
}

static inline u32 read_ccount(void)
{
    u32 v;
    __asm__ __volatile__("rsr.ccount %0" : "=r"(v));
    return v;
}

/* ------------------------------------------------------------------------ */
/* Tiny freestanding runtime                                                 */
/* ------------------------------------------------------------------------ */

/* GCC may emit calls to these even with -ffreestanding. The optimisation
 * attribute stops it from turning the loops back into self-calls. */
#define NO_LIBCALL __attribute__((optimize("no-tree-loop-distribute-patterns")))

NO_LIBCALL void *memcpy(void *dst, const void *src, unsigned long n)
{
    u8 *d = dst;
    const u8 *s = src;
    while (n--) {
        *d++ = *s++;
    }
    return dst;
}

NO_LIBCALL void *memmove(void *dst, const void *src, unsigned long n)
{
    u8 *d = dst;
    const u8 *s = src;
    if (d < s) {
        while (n--) {
            *d++ = *s++;
        }
    } else {
        d += n;
        s += n;
        while (n--) {
            *--d = *--s;
        }
    }
    return dst;
}

NO_LIBCALL void *memset(void *dst, int c, unsigned long n)
{
    u8 *d = dst;
    while (n--) {
        *d++ = (u8)c;
    }
    return dst;
}

NO_LIBCALL int memcmp(const void *a, const void *b, unsigned long n)
{
    const u8 *x = a, *y = b;
    for (; n; n--, x++, y++) {
        if (*x != *y) {
            return *x - *y;
        }
    }
    return 0;
}

static u32 str_len(const char *s)
{
    u32 n = 0;
    while (s[n]) {
        n++;
    }
    return n;
}

static int str_eq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

/* libgcc for lx106 has no __udivsi3/__umodsi3: restoring shift-subtract. */
static u32 udivmod(u32 num, u32 den, u32 *rem)
{
    u32 q = 0, r = 0;
    int bit;

    if (den == 0) {
        if (rem) {
            *rem = num;
        }
        return 0xffffffffu;
    }
    for (bit = 31; bit >= 0; bit--) {
        r = (r << 1) | ((num >> bit) & 1u);
        if (r >= den) {
            r -= den;
            q |= 1u << bit;
        }
    }
    if (rem) {
        *rem = r;
    }
    return q;
}

/* ------------------------------------------------------------------------ */
/* Console output: buffered, flushed in large writes                         */
/* ------------------------------------------------------------------------ */

#define OUT_BUF_SIZE 8192

static char out_buf[OUT_BUF_SIZE];
static u32 out_len;

static void con_flush(void)
{
    u32 off = 0;

    while (off < out_len) {
        u32 err = 0;
        s32 n = simcall3(SYS_WRITE, 1, (u32)(out_buf + off), out_len - off, &err);
        if (n > 0) {
            off += (u32)n;
        } else if (n < 0 && (err == SEMI_EAGAIN || err == SEMI_EINTR)) {
            continue;
        } else {
            /* stdout is gone: nobody can talk to us any more. */
            sys_exit(1);
        }
    }
    out_len = 0;
}

static void con_write(const char *s, u32 n)
{
    while (n) {
        u32 room = OUT_BUF_SIZE - out_len;
        u32 chunk = n < room ? n : room;
        memcpy(out_buf + out_len, s, chunk);
        out_len += chunk;
        s += chunk;
        n -= chunk;
        if (out_len == OUT_BUF_SIZE) {
            con_flush();
        }
    }
}

static void con_puts(const char *s)
{
    con_write(s, str_len(s));
}

static void con_putc(char c)
{
    if (out_len == OUT_BUF_SIZE) {
        con_flush();
    }
    out_buf[out_len++] = c;
}

static void con_line(const char *s)
{
    con_puts(s);
    con_putc('\n');
}

static void con_dec(u32 v)
{
    char tmp[11];
    int i = 0;

    do {
        u32 r;
        v = udivmod(v, 10, &r);
        tmp[i++] = (char)('0' + r);
    } while (v);
    while (i) {
        con_putc(tmp[--i]);
    }
}

static void con_hex32(u32 v)
{
    static const char digits[] = "0123456789abcdef";
    int shift;

    con_puts("0x");
    for (shift = 28; shift >= 0; shift -= 4) {
        con_putc(digits[(v >> shift) & 0xf]);
    }
}

/* ------------------------------------------------------------------------ */
/* Console input: line assembly from (possibly partial) semihosting reads    */
/* ------------------------------------------------------------------------ */

#define IN_BUF_SIZE   256
#define LINE_MAX_LEN  1024

static char in_buf[IN_BUF_SIZE];
static u32 in_pos, in_len;

/* Pause between polls when no input is pending (CCOUNT ticks, ~0.2 ms). */
#define POLL_PAUSE_TICKS 8000u

/*
 * Waits up to 20 ms for stdin to become readable.
 * Returns >0 if readable (or EOF pending), 0 on timeout, <0 if unsupported.
 *
 * Why not just a blocking read: with a plain host fd, QEMU's read() blocks
 * inside the vCPU thread, and QEMU then cannot act on SIGTERM/SIGINT until
 * input arrives. Waiting in short select() slices keeps it killable.
 */
static s32 stdin_wait(void)
{
    static u32 tv[2]; /* struct timeval { tv_sec; tv_usec; } */

    tv[0] = 0;
    tv[1] = 20000;
    return simcall3(SYS_SELECT_ONE, 0, SELECT_ONE_READ, (u32)tv, 0);
}

static void poll_pause(void)
{
    u32 start = read_ccount();
    while (read_ccount() - start < POLL_PAUSE_TICKS) {
    }
}

/*
 * Returns the next input byte, or -1 on EOF.
 *
 * Two QEMU behaviours are handled:
 *  - no chardev console (e.g. -nographic -monitor none, -display none
 *    -serial none): simcalls go straight to the host's fd 0; select waits,
 *    read may return partial data, 0 means EOF.
 *  - chardev console (explicit -serial stdio/...): select and read never
 *    block (read gives -1/EAGAIN while nothing is buffered, at most 16 bytes
 *    at a time), so we poll. EOF is never reported in this mode.
 */
static int con_getc(void)
{
    while (in_pos == in_len) {
        u32 err = 0;
        s32 n;

        con_flush();
        n = stdin_wait();
        if (n == 0) {
            /* Host select timed out, or chardev console has nothing yet. */
            poll_pause();
            continue;
        }
        n = simcall3(SYS_READ, 0, (u32)in_buf, IN_BUF_SIZE, &err);
        if (n > 0) {
            in_pos = 0;
            in_len = (u32)n;
        } else if (n == 0) {
            return -1;
        } else if (err == SEMI_EAGAIN || err == SEMI_EINTR) {
            poll_pause();
        } else {
            return -1;
        }
    }
    return (u8)in_buf[in_pos++];
}

/*
 * Reads one line (without its terminator) into buf. Accepts "\n" and "\r\n"
 * (a lone "\r" also ends a line; a "\n" right after it is swallowed).
 * Returns the length, -1 on EOF with nothing read, or -2 if the line was
 * longer than max-1 bytes (the rest of it is discarded).
 */
static s32 read_line(char *buf, u32 max)
{
    static int last_was_cr;
    u32 len = 0;
    int overflow = 0;

    for (;;) {
        int c = con_getc();

        if (c < 0) {
            if (len == 0 && !overflow) {
                return -1;
            }
            break;
        }
        if (c == '\n' && last_was_cr) {
            last_was_cr = 0;
            continue;
        }
        last_was_cr = (c == '\r');
        if (c == '\r' || c == '\n') {
            break;
        }
        if (len + 1 < max) {
            buf[len++] = (char)c;
        } else {
            overflow = 1;
        }
    }
    buf[len] = 0;
    return overflow ? -2 : (s32)len;
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                  */
/* ------------------------------------------------------------------------ */

/* Calibrated against QEMU's virtual clock: the lx106 core model runs CCOUNT
 * at 40 MHz of QEMU_CLOCK_VIRTUAL (real time without -icount). */
#define CCOUNT_PER_MS 40000u
#define SLOW_DELAY_MS 100u

static void delay_ms(u32 ms)
{
    /* One deadline per chunk (not per ms) so polling overshoot does not add
     * up; chunks keep the tick count well inside 32 bits. */
    while (ms) {
        u32 chunk = ms < 1000u ? ms : 1000u;
        u32 ticks = chunk * CCOUNT_PER_MS;
        u32 start = read_ccount();

        while (read_ccount() - start < ticks) {
        }
        ms -= chunk;
    }
}

static int parse_u32(const char *s, u32 *out)
{
    u32 v = 0;

    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        u32 d;
        if (*s < '0' || *s > '9') {
            return 0;
        }
        d = (u32)(*s - '0');
        if (v > 429496729u || (v == 429496729u && d > 5)) {
            return 0;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

static int arg_number(const char *cmd, const char *arg, u32 *out)
{
    if (parse_u32(arg, out)) {
        return 1;
    }
    con_puts("ERROR: ");
    con_puts(cmd);
    con_puts(": invalid number '");
    con_puts(arg);
    con_line("'");
    return 0;
}

static void cmd_help(void)
{
    con_line("commands:");
    con_line("  ping         reply 'pong'");
    con_line("  echo <text>  print <text>");
    con_line("  spam <n>     print n lines, then 'spam done'");
    con_line("  slow <n>     print n lines ~100 ms apart, then 'slow done'");
    con_line("  color        print a line with ANSI colour codes");
    con_line("  bytes        print a line with non-UTF-8 bytes");
    con_line("  panic        crash (Guru Meditation) and stop responding");
    con_line("  exception    crash (ESP8266-style epc1= line) and stop responding");
    con_line("  hang         stop responding, silently");
    con_line("  exit [n]     quit QEMU with exit code n (default 0)");
    con_line("  help         this list");
}

static void cmd_spam(u32 n)
{
    static const char tail[] = " the quick brown fox jumps over the lazy dog\n";
    /* Decimal counter kept as text and incremented in place. */
    char num[11];
    u32 digits = 1;
    u32 i;

    num[0] = '1';
    for (i = 0; i < n; i++) {
        int k;

        con_write("line ", 5);
        con_write(num, digits);
        con_write(tail, sizeof(tail) - 1);

        for (k = (int)digits - 1; k >= 0; k--) {
            if (num[k] != '9') {
                num[k]++;
                break;
            }
            num[k] = '0';
        }
        if (k < 0) {
            memmove(num + 1, num, digits);
            num[0] = '1';
            digits++;
        }
    }
    con_line("spam done");
}

static void cmd_slow(u32 n)
{
    u32 i;

    for (i = 1; i <= n; i++) {
        delay_ms(SLOW_DELAY_MS);
        con_puts("slow line ");
        con_dec(i);
        con_putc('\n');
        con_flush();
    }
    con_line("slow done");
}

static void __attribute__((noreturn)) cmd_panic(void)
{
    u32 a0, a1;

    __asm__ __volatile__("mov %0, a0\n\tmov %1, a1" : "=r"(a0), "=r"(a1));

    con_line("Guru Meditation Error: Core  0 panic'ed (LoadProhibited). "
             "Exception was unhandled.");
    con_line("Core  0 register dump:");
    con_puts("PC      : ");
    con_hex32((u32)&cmd_panic);
    con_puts("  PS      : 0x00060030  A0      : ");
    con_hex32(a0);
    con_puts("  A1      : ");
    con_hex32(a1);
    con_putc('\n');
    con_line("EXCVADDR: 0x00000000  EXCCAUSE: 0x0000001c");
    con_putc('\n');
    con_puts("Backtrace: ");
    con_hex32((u32)&cmd_panic);
    con_putc(':');
    con_hex32(a1);
    con_putc(' ');
    con_hex32(a0);
    con_putc(':');
    con_hex32(a1 + 32);
    con_putc('\n');
    con_putc('\n');
    con_flush();
    for (;;) {
    }
}

/* An ESP8266-style fatal exception: the exception line and its register line, with this
 * function's own address as the faulting PC (epc1), for crash-decoding tests. */
static void __attribute__((noreturn, noinline)) cmd_exception(void)
{
    con_line("Fatal exception (28):");
    con_puts("epc1=");
    con_hex32((u32)&cmd_exception);
    con_line(" epc2=0x00000000 epc3=0x00000000 excvaddr=0x00000000 depc=0x00000000");
    con_flush();
    for (;;) {
    }
}

static void __attribute__((noreturn)) cmd_hang(void)
{
    con_flush();
    for (;;) {
    }
}

static void run_command(char *line)
{
    char *cmd = line;
    char *arg;
    char *end;
    u32 n;

    /* Trim leading/trailing blanks. */
    while (*cmd == ' ' || *cmd == '\t') {
        cmd++;
    }
    end = cmd + str_len(cmd);
    while (end > cmd && (end[-1] == ' ' || end[-1] == '\t')) {
        *--end = 0;
    }
    if (!*cmd) {
        return;
    }

    /* Split "cmd arg..." at the first blank; arg keeps the rest verbatim. */
    arg = cmd;
    while (*arg && *arg != ' ' && *arg != '\t') {
        arg++;
    }
    if (*arg) {
        *arg++ = 0;
        while (*arg == ' ' || *arg == '\t') {
            arg++;
        }
    }

    if (str_eq(cmd, "ping")) {
        con_line("pong");
    } else if (str_eq(cmd, "echo")) {
        con_line(arg);
    } else if (str_eq(cmd, "spam")) {
        if (arg_number(cmd, arg, &n)) {
            cmd_spam(n);
        }
    } else if (str_eq(cmd, "slow")) {
        if (arg_number(cmd, arg, &n)) {
            cmd_slow(n);
        }
    } else if (str_eq(cmd, "color")) {
        con_line("\x1b[32mgreen\x1b[0m \x1b[31mred\x1b[0m \x1b[1;34mbold blue\x1b[0m");
    } else if (str_eq(cmd, "bytes")) {
        con_line("bytes: \xff\xfe \x80\xc3( end");
    } else if (str_eq(cmd, "panic")) {
        cmd_panic();
    } else if (str_eq(cmd, "exception")) {
        cmd_exception();
    } else if (str_eq(cmd, "hang")) {
        cmd_hang();
    } else if (str_eq(cmd, "exit")) {
        n = 0;
        if (*arg && !arg_number(cmd, arg, &n)) {
            return;
        }
        con_flush();
        sys_exit(n);
    } else if (str_eq(cmd, "help")) {
        cmd_help();
    } else {
        con_puts("ERROR: unknown command '");
        con_puts(cmd);
        con_line("'");
    }
}

static char line[LINE_MAX_LEN];

void __attribute__((noreturn)) fw_main(void)
{
    con_line("TestArena demo firmware " FW_VERSION);
    con_line("ready");

    for (;;) {
        s32 n;

        con_puts("> ");
        n = read_line(line, sizeof(line));
        if (n == -1) {
            /* stdin closed */
            con_flush();
            sys_exit(0);
        }
        /* Local echo, like a serial terminal: completes the prompt line so
         * the command's own output starts on a fresh line. */
        con_line(line);
        if (n == -2) {
            con_puts("ERROR: line too long (max ");
            con_dec(LINE_MAX_LEN - 1);
            con_line(" bytes)");
            continue;
        }
        run_command(line);
    }
}
