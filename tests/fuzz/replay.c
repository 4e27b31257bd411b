/* Runs a libFuzzer harness over files and directories of inputs without libFuzzer: the corpora kept
 * in tests/fuzz/corpus/ are replayed by the ordinary build as regression tests. */
#include <glib.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static guint replay(const char *path) {
  if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    guint n = 0;
    for (const char *name; dir && (name = g_dir_read_name(dir)) != NULL;) {
      g_autofree char *child = g_build_filename(path, name, NULL);
      n += replay(child);
    }
    return n;
  }
  g_autofree char *data = NULL;
  gsize len = 0;
  if (!g_file_get_contents(path, &data, &len, NULL)) {
    fprintf(stderr, "cannot read %s\n", path);
    return 0;
  }
  LLVMFuzzerTestOneInput((const uint8_t *)data, len);
  return 1;
}

int main(int argc, char **argv) {
  guint n = 0;
  for (int i = 1; i < argc; i++)
    n += replay(argv[i]);
  printf("%u inputs replayed\n", n);
  return n > 0 ? 0 : 1;
}
