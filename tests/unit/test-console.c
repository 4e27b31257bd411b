/* Unit tests of the console module: cleaning raw consoles (escape sequences, NULs, CRs, invalid
 * UTF-8) in one go and byte by byte, tails of console files, crash judgement. */
#include "oakuk-private.h"

#include <glib/gstdio.h>
#include <string.h>

/* The head of a real x86 serial log (SeaBIOS clears the screen before the guest writes), then an
 * arm64-style start with NULs, CRLFs, an OSC title, a C1 CSI and a broken UTF-8 byte. */
static const char RAW[] = "\x1b"
                          "c\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n"
                          "\0\0Booting from ROM..\r\n"
                          "\x1b]0;title\x07"
                          "Pandora 0.15.0~97523b55\r\n"
                          "\x1b(Bcolour \x1b[1;31mred\x1b[0m ok\r"
                          "progress\n"
                          "tab\there \xc2\x9b"
                          "31m caf\xc3\xa9 \xff bad\n"
                          "bell\x07 back\x08 del\x7f end\n";
static const char CLEAN[] = "SeaBIOS (version 1.16.2-debian-1.16.2-1)\n"
                            "Booting from ROM..\n"
                            "Pandora 0.15.0~97523b55\n"
                            "colour red ok\n"
                            "progress\n"
                            "tab\there 31m caf\xc3\xa9 \xef\xbf\xbd bad\n"
                            "bell back del end\n";

static char *clean_all(const char *data, size_t len) {
  oakuk_console *c = oakuk_console_new();
  char *a = oakuk_console_feed(c, data, len);
  char *b = oakuk_console_finish(c);
  oakuk_console_free(c);
  char *r = g_strconcat(a, b, NULL);
  oakuk_free(a);
  oakuk_free(b);
  return r;
}

static void test_clean_whole(void) {
  g_autofree char *out = clean_all(RAW, sizeof RAW - 1);
  g_assert_cmpstr(out, ==, CLEAN);
  g_assert_true(g_utf8_validate(out, -1, NULL));
}

/* Every way of cutting the stream in two gives the same text: state survives chunk borders. */
static void test_clean_split_anywhere(void) {
  for (size_t cut = 0; cut <= sizeof RAW - 1; cut++) {
    oakuk_console *c = oakuk_console_new();
    char *a = oakuk_console_feed(c, RAW, cut);
    char *b = oakuk_console_feed(c, RAW + cut, sizeof RAW - 1 - cut);
    char *d = oakuk_console_finish(c);
    oakuk_console_free(c);
    g_autofree char *all = g_strconcat(a, b, d, NULL);
    oakuk_free(a);
    oakuk_free(b);
    oakuk_free(d);
    if (strcmp(all, CLEAN) != 0)
      g_error("cut at %zu: got %s", cut, all);
  }
}

static void test_clean_byte_by_byte(void) {
  oakuk_console *c = oakuk_console_new();
  GString *all = g_string_new(NULL);
  for (size_t k = 0; k < sizeof RAW - 1; k++) {
    char *p = oakuk_console_feed(c, RAW + k, 1);
    g_assert_cmpuint(strlen(p), <=, 3 * 1 + 3);
    g_string_append(all, p);
    oakuk_free(p);
  }
  char *end = oakuk_console_finish(c);
  g_string_append(all, end);
  oakuk_free(end);
  oakuk_console_free(c);
  g_assert_cmpstr(all->str, ==, CLEAN);
  g_string_free(all, TRUE);
}

static void test_clean_edges(void) {
  /* A cut UTF-8 character at the end of the stream, a pending CR, a stray ESC before a newline. */
  g_autofree char *a = clean_all("ab\xc3", 3);
  g_assert_cmpstr(a, ==, "ab\xef\xbf\xbd");
  g_autofree char *b = clean_all("line\r", 5);
  g_assert_cmpstr(b, ==, "line\n");
  g_autofree char *c = clean_all("x\x1b\ny", 4);
  g_assert_cmpstr(c, ==, "x\ny");
  /* A stray OSC does not swallow the rest of the console for good. */
  GString *s = g_string_new("\x1b]");
  for (int k = 0; k < 5000; k++)
    g_string_append_c(s, 'z');
  g_string_append(s, "\nvisible\n");
  g_autofree char *d = clean_all(s->str, s->len);
  g_assert_nonnull(strstr(d, "visible\n"));
  g_string_free(s, TRUE);
  /* Overlong encodings and surrogates are not UTF-8. */
  g_autofree char *e = clean_all("\xc0\xaf|\xed\xa0\x80|", 7);
  g_assert_true(g_utf8_validate(e, -1, NULL));
  g_assert_null(strchr(e, '\xc0'));
}

typedef struct {
  char *dir;
} Fixture;

static void setup(Fixture *f, gconstpointer data) {
  f->dir = g_dir_make_tmp("oakuk-console-XXXXXX", NULL);
  g_assert_nonnull(f->dir);
}

static void teardown(Fixture *f, gconstpointer data) {
  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);
  g_assert_cmpint(system(cmd), ==, 0);
  g_free(f->dir);
}

static char *write_file(Fixture *f, const char *name, const char *data, gssize len) {
  char *path = g_build_filename(f->dir, name, NULL);
  g_assert_true(g_file_set_contents(path, data, len, NULL));
  return path;
}

static char *tail(const char *path, uint32_t lines, uint64_t bytes, uint32_t flags) {
  char *out = NULL;
  oakuk_error *err = NULL;
  int rc = oakuk_console_tail(&out, path, lines, bytes, flags, &err);
  g_assert_cmpint(rc, ==, 0);
  char *r = g_strdup(out);
  oakuk_free(out);
  return r;
}

static void test_tail(Fixture *f, gconstpointer data) {
  g_autofree char *path = write_file(f, "serial.log", RAW, sizeof RAW - 1);
  g_autofree char *t2 = tail(path, 2, 1 << 20, 0);
  g_assert_cmpstr(t2, ==, "tab\there 31m caf\xc3\xa9 \xef\xbf\xbd bad\nbell back del end");
  /* A window that starts inside a line leaves that line out. */
  g_autofree char *tw = tail(path, 100, 21, 0);
  g_assert_cmpstr(tw, ==, "bell back del end");
  g_autofree char *tc = tail(path, 100, 20, 0);
  g_assert_cmpstr(tc, ==, "");
  /* Blank lines kept by default, skipped on request. */
  g_autofree char *p2 = write_file(f, "blank.log", "a\n\n   \nb\n", -1);
  g_autofree char *all = tail(p2, 10, 1024, 0);
  g_assert_cmpstr(all, ==, "a\n\n   \nb");
  g_autofree char *skip = tail(p2, 10, 1024, OAKUK_CONSOLE_SKIP_EMPTY | OAKUK_CONSOLE_STRIP);
  g_assert_cmpstr(skip, ==, "a\nb");
  g_autofree char *p3 = write_file(f, "empty.log", "", 0);
  g_autofree char *none = tail(p3, 10, 1024, 0);
  g_assert_cmpstr(none, ==, "");
  g_autofree char *missing = g_build_filename(f->dir, "nope.log", NULL);
  char *out = NULL;
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_console_tail(&out, missing, 1, 1, 0, &err), ==, OAKUK_ENOTFOUND);
  g_assert_nonnull(strstr(oakuk_error_message(err), "nope.log"));
  g_assert_null(out);
  oakuk_error_free(err);
}

static void test_crash(Fixture *f, gconstpointer data) {
  struct {
    const char *log;
    int32_t kind;
    const char *line;
  } cases[] = {
      {"\x1b[2JPandora 0.15.0\nHello world\nUnikraft halted\n", OAKUK_CONSOLE_CRASH_NONE, NULL},
      {"Kernel command line: console=ttyS0 panic=-1\nok\n", OAKUK_CONSOLE_CRASH_NONE, NULL},
      {"boot\n[    0.10] CRIT: [libkvmplat] <traps.c @  100> Register dump\n"
       "[    0.11] CRIT: [libkvmplat] <traps.c @  120> Unhandled Trap 14 (page fault), error code=0x0\n"
       "[    0.12] CRIT: [libkvmplat] <traps.c @  130> Crashing\n",
       OAKUK_CONSOLE_CRASH_UNIKRAFT,
       "[    0.11] CRIT: [libkvmplat] <traps.c @  120> Unhandled Trap 14 (page fault), error code=0x0"},
      {"[    1.0] BUG: kernel NULL pointer dereference\n[    1.1] Oops: 0002 [#1]\n"
       "[    1.2] Kernel panic - not syncing: Fatal exception\n[    1.3] ---[ end trace ]---\n",
       OAKUK_CONSOLE_CRASH_LINUX, "[    1.2] Kernel panic - not syncing: Fatal exception"},
  };
  for (size_t k = 0; k < G_N_ELEMENTS(cases); k++) {
    g_autofree char *name = g_strdup_printf("c%zu.log", k);
    g_autofree char *path = write_file(f, name, cases[k].log, -1);
    char *line = NULL;
    g_assert_cmpint(oakuk_console_crash(&line, path), ==, cases[k].kind);
    g_assert_cmpstr(line, ==, cases[k].line);
    oakuk_free(line);
  }
  g_autofree char *missing = g_build_filename(f->dir, "missing.log", NULL);
  g_assert_cmpint(oakuk_console_crash(NULL, missing), ==, OAKUK_CONSOLE_CRASH_NONE);
  g_assert_cmpint(oakuk_console_line_crash("all good, no crash here"), ==, OAKUK_CONSOLE_CRASH_NONE);
  g_assert_cmpint(oakuk_console_line_crash("[ 0.1] CRIT: [lib] x"), ==, OAKUK_CONSOLE_CRASH_UNIKRAFT);
  /* As real Unikraft 0.16.3 and 0.15.0 print them (a 9p image without its share). */
  g_assert_cmpint(
      oakuk_console_line_crash(
          "[    0.1] ERR:  [libukboot] <boot.c @  405> Init function at 0x1234 returned error -1"),
      ==, OAKUK_CONSOLE_CRASH_UNIKRAFT);
  g_assert_cmpint(
      oakuk_console_line_crash("CRIT: [libvfscore] <automount.c @  262> Failed to mount fs0 (9pfs) at /: -1"),
      ==, OAKUK_CONSOLE_CRASH_UNIKRAFT);
  g_assert_cmpint(oakuk_console_line_crash("[    0.2] ERR:  [appx] <main.c @ 3> could not open a file"), ==,
                  OAKUK_CONSOLE_CRASH_NONE);
}

/* The tail of a serial log leaves out empty lines and escapes; a Linux panic is named by its
 * panic line even when a register dump longer than any tail follows it. */
static void test_serial_logs(Fixture *f, gconstpointer data) {
  GString *s = g_string_new("\x1b"
                            "c\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r\n");
  for (int k = 1; k <= 14; k++)
    g_string_append_printf(s, "line %d\r\n\r\n", k);
  g_string_append(s, "\x1b"
                     "c\x1b[?7l\x1b[2J\x1b[0mline 15\r\n");
  g_autofree char *path = write_file(f, "serial.log", s->str, (gssize)s->len);
  g_string_free(s, TRUE);
  g_autofree char *t = tail(path, 10, 16384, OAKUK_CONSOLE_SKIP_EMPTY | OAKUK_CONSOLE_STRIP);
  g_assert_cmpstr(t, ==,
                  "line 6\nline 7\nline 8\nline 9\nline 10\nline 11\nline 12\nline 13\nline 14\nline 15");
  g_assert_cmpint(oakuk_console_crash(NULL, path), ==, OAKUK_CONSOLE_CRASH_NONE);
  GString *p = g_string_new("oakuk-guest: ready ip=none files=no args=crash\r\n"
                            "oakuk-guest: panic: crash requested\r\n"
                            "[    5.40] sysrq: Trigger a crash\r\n"
                            "[    5.41] Kernel panic - not syncing: sysrq triggered crash\r\n"
                            "[    5.42] Call Trace:\r\n [    5.42]  sysrq_handle_crash+0x16/0x20\r\n");
  for (int k = 0; k < 14; k++)
    g_string_append_printf(p, "[    5.44] R%02d: 0000000000000000\r\n", k);
  g_string_append(p, "[    5.45] Kernel Offset: disabled\r\n");
  g_autofree char *panic = write_file(f, "panic.log", p->str, (gssize)p->len);
  g_string_free(p, TRUE);
  g_autofree char *ptail = tail(panic, 10, 16384, OAKUK_CONSOLE_SKIP_EMPTY);
  g_assert_cmpint(oakuk_console_line_crash(ptail), ==, OAKUK_CONSOLE_CRASH_NONE);
  char *line = NULL;
  g_assert_cmpint(oakuk_console_crash(&line, panic), ==, OAKUK_CONSOLE_CRASH_LINUX);
  g_assert_cmpstr(line, ==, "[    5.41] Kernel panic - not syncing: sysrq triggered crash");
  oakuk_free(line);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/console/clean/whole", test_clean_whole);
  g_test_add_func("/console/clean/split-anywhere", test_clean_split_anywhere);
  g_test_add_func("/console/clean/byte-by-byte", test_clean_byte_by_byte);
  g_test_add_func("/console/clean/edges", test_clean_edges);
  g_test_add("/console/tail", Fixture, NULL, setup, test_tail, teardown);
  g_test_add("/console/crash", Fixture, NULL, setup, test_crash, teardown);
  g_test_add("/console/serial-logs", Fixture, NULL, setup, test_serial_logs, teardown);
  return g_test_run();
}
