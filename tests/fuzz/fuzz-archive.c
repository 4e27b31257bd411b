/* libFuzzer harness for archive entries: any bytes are unpacked as a unikernel image (image.c) and as
 * a container layer (oci.c) into a fresh directory inside a jail. Whatever the archive holds
 * (absolute paths, "..", symlink chains, hard links to outside, devices, whiteouts), nothing may
 * appear outside the tree, and an accepted tree's every link must resolve inside it. */
#include "archive-safe.h"
#include "oakuk-private.h"
#include "oci-private.h"
#include "sysutil-private.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *jail;

static guint count_entries(const char *dir) {
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  guint n = 0;
  while (d && g_dir_read_name(d))
    n++;
  return n;
}

static void reset(const char *path) {
  oakuk_rm_rf(path, NULL);
  if (g_mkdir(path, 0755) != 0)
    abort();
}

/* The jail holds only archive, tree/ and outside/; outside/ stays empty. */
static void check_jail(const char *what) {
  g_autofree char *outside = g_build_filename(jail, "outside", NULL);
  if (count_entries(outside) != 0 || count_entries(jail) != 3) {
    fprintf(stderr, "%s: something was written outside the tree\n", what);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (jail == NULL) {
    jail = g_dir_make_tmp("oakuk-fuzz-archive-XXXXXX", NULL);
    g_autofree char *outside = g_build_filename(jail, "outside", NULL);
    g_mkdir(outside, 0755);
  }
  g_autofree char *archive = g_build_filename(jail, "archive", NULL);
  g_autofree char *tree = g_build_filename(jail, "tree", NULL);
  if (!g_file_set_contents(archive, (const char *)data, (gssize)size, NULL))
    abort();
  oakuk_image_cache_options o;
  oakuk_image_cache_options_init(&o, OAKUK_IMAGE_CACHE_OPTIONS_VERSION);
  o.max_unpacked_bytes = 8 * 1024 * 1024;
  o.max_entries = 1000;
  reset(tree);
  GError *err = NULL;
  gboolean ok = oakuk_image_unpack_archive(archive, tree, "fuzz", &o, NULL, &err);
  check_jail("image");
  if (ok) {
    g_autofree char *link = NULL, *target = NULL, *via = NULL;
    OakukArchiveResolve why;
    if (!oakuk_archive_check_tree(tree, FALSE, &link, &target, &why, &via)) {
      fprintf(stderr, "image: accepted, but %s -> %s leaves the tree\n", link, target);
      abort();
    }
  } else if (err == NULL) {
    abort();
  }
  g_clear_error(&err);
  reset(tree);
  ok = oakuk_oci_apply_layer(tree, archive, "fuzz layer", &err);
  check_jail("layer");
  if (ok) {
    g_autofree char *link = NULL, *target = NULL, *via = NULL;
    OakukArchiveResolve why;
    if (!oakuk_archive_check_tree(tree, TRUE, &link, &target, &why, &via)) {
      fprintf(stderr, "layer: accepted, but %s -> %s leaves the rootfs\n", link, target);
      abort();
    }
  } else if (err == NULL) {
    abort();
  }
  g_clear_error(&err);
  oakuk_rm_rf(tree, NULL);
  g_mkdir(tree, 0755);
  return 0;
}
