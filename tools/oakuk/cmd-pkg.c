/* `oakuk pkg`: packages unikernel kernels as one multi-architecture OCI image in KraftKit's layout
 * (liboakuk's oakuk_oci_package_*), written as an OCI layout tarball or pushed to a registry, as
 * `kraft pkg` does. Argument parsing and composition only; the library does the work. */
#include "client.h"
#include "oakuk-cli.h"

#include <errno.h>
#include <oakuk/oakuk.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char description[] =
    "Packs one kernel per architecture (each recognised by its content) into one OCI index in\n"
    "KraftKit's layout (a manifest per platform, os \"qemu\", the kernel at /unikraft/bin/kernel),\n"
    "with urunc's annotations, so KraftKit, urunc and oakuk can run it; writes it as an OCI layout\n"
    "tarball (run it as oci-archive:file://PATH) or pushes it, and prints the index's digest and\n"
    "each platform's manifest digest. ARGS after -- are kernel arguments, like --cmd.\n"
    "\n"
    "--kernel and --initrd take ARCH=PATH (amd64, arm64) or just PATH (the kernel's own arch).\n"
    "--from-tar ARCH=PATH converts an Oakestra unikernel tarball (kernel, initrd, files/,\n"
    "oakuk.json); the files/ of the first tarball that has any become the image's files unless\n"
    "--files is given.\n"
    "\n"
    "Exit status: 0 success, 1 the packaging or the push failed, 2 bad command line (a missing,\n"
    "unreadable or unrecognised file is named in the message).";

typedef struct {
  oakuk_oci_package *pkg;
  GHashTable *initrds; /* arch → path, from --initrd, taken by the kernel of that arch */
  char *files_dir;     /* from --files, or the first --from-tar's files/ */
  char *tmp;           /* a scratch image cache for --from-tar, removed at the end */
  char *version;       /* the Unikraft version of the first --from-tar that has one */
} Pkg;

static int usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  fprintf(stderr, "oakuk pkg: %s (see oakuk pkg --help)\n", msg);
  return OAKUK_CLI_USAGE;
}

/* Prints "oakuk pkg: <context>: <message>"; a bad input is a usage error, anything else a failure. */
static int lib_error(oakuk_error *err, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int lib_error(oakuk_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *ctx = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  int code = oakuk_error_code(err);
  fprintf(stderr, "oakuk pkg: %s: %s\n", ctx, oakuk_error_message(err));
  oakuk_error_free(err);
  return code == OAKUK_EINVAL ? OAKUK_CLI_USAGE : OAKUK_CLI_FAILED;
}

static gboolean known_arch(const char *a) {
  return strcmp(a, "amd64") == 0 || strcmp(a, "arm64") == 0;
}

/* "ARCH=PATH" or "PATH": *arch NULL for the latter. Returns FALSE (message printed) when ARCH is
 * not one oakuk packs. A PATH may itself hold '=': only a known arch before it splits. */
static gboolean split_arch(const char *opt, const char *value, char **arch, char **path) {
  const char *eq = strchr(value, '=');
  const char *slash = strchr(value, '/');
  *arch = NULL;
  if (eq && (!slash || eq < slash)) {
    g_autofree char *a = g_strndup(value, (gsize)(eq - value));
    if (!known_arch(a)) {
      usage_error("%s %s: architecture \"%s\" is not amd64 or arm64", opt, value, a);
      return FALSE;
    }
    *arch = g_steal_pointer(&a);
    *path = g_strdup(eq + 1);
  } else {
    *path = g_strdup(value);
  }
  if (!**path) {
    g_free(*arch);
    g_free(*path);
    usage_error("%s %s: no file named", opt, value);
    return FALSE;
  }
  return TRUE;
}

/* A file the user named must exist and be a regular file; said before the library reads it. */
static gboolean regular_file(const char *opt, const char *value, const char *path) {
  if (access(path, R_OK) != 0) {
    usage_error("%s %s: %s", opt, value, g_strerror(errno));
    return FALSE;
  }
  if (!g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
    usage_error("%s %s: not a regular file", opt, value);
    return FALSE;
  }
  return TRUE;
}

static int add_kernel(Pkg *p, const char *opt, const char *value, const char *arch, const char *kernel,
                      const char *tar_initrd) {
  oakuk_error *err = NULL;
  const char *karch = oakuk_image_kernel_arch(kernel, &err);
  if (!karch)
    return lib_error(err, "%s %s", opt, value);
  if (arch && strcmp(arch, karch) != 0)
    return usage_error("%s %s: the kernel is an %s kernel, not %s", opt, value, karch, arch);
  const char *initrd = g_hash_table_lookup(p->initrds, arch ? arch : karch);
  if (initrd && tar_initrd)
    return usage_error("%s %s: the tarball has an initrd, and --initrd %s=%s gives another", opt, value,
                       arch ? arch : karch, initrd);
  if (oakuk_oci_package_add_kernel(p->pkg, arch, kernel, initrd ? initrd : tar_initrd, &err) != 0)
    return lib_error(err, "%s %s", opt, value);
  g_hash_table_remove(p->initrds, arch ? arch : karch); /* taken: what is left had no kernel */
  return OAKUK_CLI_OK;
}

/* --from-tar: the tarball is unpacked by liboakuk's image cache (the same checks a node makes) into
 * a scratch cache; its kernel, initrd and files then go into the package like --kernel's. */
static int add_tarball(Pkg *p, const char *value, const char *arch, const char *path, gboolean use_files,
                       gboolean uk_version_given) {
  g_autofree char *abs = g_canonicalize_filename(path, NULL);
  g_autofree char *dir = g_path_get_dirname(abs);
  g_autofree char *url = g_filename_to_uri(abs, NULL, NULL);
  if (!p->tmp) {
    p->tmp = g_dir_make_tmp("oakuk-pkg-XXXXXX", NULL);
    if (!p->tmp) {
      fprintf(stderr, "oakuk pkg: a scratch directory in %s: %s\n", g_get_tmp_dir(), g_strerror(errno));
      return OAKUK_CLI_FAILED;
    }
  }
  g_autofree char *cache_dir = g_build_filename(p->tmp, "cache", NULL);
  oakuk_image_cache_options opts;
  oakuk_image_cache_options_init(&opts, OAKUK_IMAGE_CACHE_OPTIONS_VERSION);
  opts.file_allowed_dirs = dir;
  oakuk_error *err = NULL;
  oakuk_image_cache *cache = oakuk_image_cache_new(cache_dir, &opts, &err);
  if (!cache)
    return lib_error(err, "scratch image cache %s", cache_dir);
  oakuk_image *img = oakuk_image_cache_fetch_sync(cache, url, NULL, NULL, NULL, &err);
  oakuk_image_cache_unref(cache);
  if (!img)
    return lib_error(err, "--from-tar %s", value);
  const char *version = oakuk_image_version(img);
  const char *extra = oakuk_image_cmdline_extra(img);
  int rc = add_kernel(p, "--from-tar", value, arch, oakuk_image_kernel(img), oakuk_image_initrd(img));
  /* The package's version says "Unikraft" (it marks every kernel as one): only a Unikraft tarball's
   * is taken, a Linux guest's kernel release is not. */
  if (g_strcmp0(oakuk_image_flavor(img), "unikraft") != 0 || uk_version_given)
    version = NULL;
  if (rc == OAKUK_CLI_OK && version && p->version && strcmp(version, p->version) != 0)
    rc = usage_error("--from-tar %s: Unikraft %s, but an earlier tarball is Unikraft %s (--uk-version X.Y.Z "
                     "chooses)",
                     value, version, p->version);
  if (rc == OAKUK_CLI_OK && version && oakuk_oci_package_set_version(p->pkg, version, &err) != 0)
    rc = lib_error(err, "--from-tar %s: oakuk.json version", value);
  if (rc == OAKUK_CLI_OK && version && !p->version)
    p->version = g_strdup(version);
  /* Per kernel: the guests' consoles differ by architecture. */
  const char *karch = oakuk_image_arch(img);
  if (rc == OAKUK_CLI_OK && extra && karch &&
      oakuk_oci_package_set_kernel_cmdline_extra(p->pkg, karch, extra, &err) != 0)
    rc = lib_error(err, "--from-tar %s: oakuk.json cmdline_extra", value);
  const char *files = oakuk_image_files_dir(img);
  if (rc == OAKUK_CLI_OK && files && use_files) {
    if (!p->files_dir)
      p->files_dir = g_strdup(files);
    else
      fprintf(stderr,
              "oakuk pkg: --from-tar %s: its files/ is left out (the image has one set of files: "
              "the first tarball's; --files DIR chooses)\n",
              value);
  }
  oakuk_image_unref(img); /* the scratch cache keeps the tree until it is removed */
  return rc;
}

static void print_digests(const oakuk_oci_package *pkg, const char *digest, const char *pinned) {
  printf("index %s\n", digest);
  for (size_t i = 0; i < oakuk_oci_package_manifest_count(pkg); i++)
    printf("%s %s\n", oakuk_oci_package_manifest_arch(pkg, i), oakuk_oci_package_manifest_digest(pkg, i));
  if (pinned)
    printf("pinned %s\n", pinned);
}

static void rm_tree(const char *dir) {
  if (!dir)
    return;
  const char *argv[] = {"rm", "-rf", "--one-file-system", dir, NULL};
  g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
               NULL, NULL, NULL);
}

static int package(Pkg *p, char **kernels, char **initrds, char **tars, const char *files, char **cmd,
                   char **guest_args, char **env, const char *uk_version, const char *cmdline_extra) {
  oakuk_error *err = NULL;
  for (char **i = initrds; i && *i; i++) {
    g_autofree char *arch = NULL, *path = NULL;
    if (!split_arch("--initrd", *i, &arch, &path))
      return OAKUK_CLI_USAGE;
    if (!arch)
      return usage_error("--initrd %s: say which kernel it goes with: --initrd amd64=%s", *i, path);
    if (!regular_file("--initrd", *i, path))
      return OAKUK_CLI_USAGE;
    if (g_hash_table_contains(p->initrds, arch))
      return usage_error("--initrd %s: a second initrd for %s", *i, arch);
    g_hash_table_insert(p->initrds, g_steal_pointer(&arch), g_steal_pointer(&path));
  }
  if (files) {
    if (!g_file_test(files, G_FILE_TEST_IS_DIR))
      return usage_error("--files %s: not a directory", files);
    p->files_dir = g_strdup(files);
  }
  for (char **k = kernels; k && *k; k++) {
    g_autofree char *arch = NULL, *path = NULL;
    if (!split_arch("--kernel", *k, &arch, &path) || !regular_file("--kernel", *k, path))
      return OAKUK_CLI_USAGE;
    int rc = add_kernel(p, "--kernel", *k, arch, path, NULL);
    if (rc != OAKUK_CLI_OK)
      return rc;
  }
  for (char **t = tars; t && *t; t++) {
    g_autofree char *arch = NULL, *path = NULL;
    if (!split_arch("--from-tar", *t, &arch, &path) || !regular_file("--from-tar", *t, path))
      return OAKUK_CLI_USAGE;
    int rc = add_tarball(p, *t, arch, path, files == NULL, uk_version != NULL);
    if (rc != OAKUK_CLI_OK)
      return rc;
  }
  /* An --initrd whose kernel never came would be dropped silently. */
  GHashTableIter it;
  gpointer left;
  g_hash_table_iter_init(&it, p->initrds);
  if (g_hash_table_iter_next(&it, &left, NULL))
    return usage_error("--initrd %s=...: no kernel for %s", (const char *)left, (const char *)left);
  if (p->files_dir && oakuk_oci_package_set_files_dir(p->pkg, p->files_dir, &err) != 0)
    return lib_error(err, "--files %s", p->files_dir);
  for (char **c = cmd; c && *c; c++)
    if (oakuk_oci_package_add_arg(p->pkg, *c, &err) != 0)
      return lib_error(err, "--cmd \"%s\"", *c);
  for (char **c = guest_args; c && *c; c++)
    if (oakuk_oci_package_add_arg(p->pkg, *c, &err) != 0)
      return lib_error(err, "argument \"%s\" after --", *c);
  for (char **e = env; e && *e; e++) {
    if (!strchr(*e, '=') || **e == '=')
      return usage_error("--env %s: expected KEY=value", *e);
    if (oakuk_oci_package_add_env(p->pkg, *e, &err) != 0)
      return lib_error(err, "--env %s", *e);
  }
  if (uk_version && oakuk_oci_package_set_version(p->pkg, uk_version, &err) != 0)
    return lib_error(err, "--uk-version %s", uk_version);
  if (cmdline_extra && oakuk_oci_package_set_cmdline_extra(p->pkg, cmdline_extra, &err) != 0)
    return lib_error(err, "--cmdline-extra \"%s\"", cmdline_extra);
  return OAKUK_CLI_OK;
}

int oakuk_cmd_pkg(int argc, char **argv) {
  /* Everything after the first "--" is kernel arguments, untouched by option parsing. */
  int sep = argc;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--") == 0) {
      sep = i;
      break;
    }
  g_auto(GStrv) kernels = NULL, initrds = NULL, tars = NULL, cmd = NULL, env = NULL;
  g_autofree char *files = NULL, *uk_version = NULL, *cmdline_extra = NULL, *output = NULL, *push = NULL,
                  *name = NULL, *username = NULL, *password_file = NULL, *insecure = NULL;
  gboolean password_stdin = FALSE;
  GOptionEntry entries[] = {
      {"kernel", 'k', 0, G_OPTION_ARG_STRING_ARRAY, &kernels, "A kernel (repeatable, one per architecture)",
       "[ARCH=]PATH"},
      {"initrd", 0, 0, G_OPTION_ARG_STRING_ARRAY, &initrds, "The initrd of ARCH's kernel", "ARCH=PATH"},
      {"from-tar", 0, 0, G_OPTION_ARG_STRING_ARRAY, &tars, "An Oakestra unikernel tarball (repeatable)",
       "[ARCH=]PATH"},
      {"files", 0, 0, G_OPTION_ARG_FILENAME, &files, "Directory whose tree becomes the guest's fs0 share",
       "DIR"},
      {"cmd", 0, 0, G_OPTION_ARG_STRING_ARRAY, &cmd, "A kernel argument (repeatable; also after --)", "ARG"},
      {"env", 'e', 0, G_OPTION_ARG_STRING_ARRAY, &env, "An environment entry (repeatable)", "KEY=VALUE"},
      {"uk-version", 0, 0, G_OPTION_ARG_STRING, &uk_version,
       "Unikraft version (default: read from each kernel)", "X.Y.Z"},
      {"cmdline-extra", 0, 0, G_OPTION_ARG_STRING, &cmdline_extra,
       "Kernel arguments before the network parameters (oakuk.json's cmdline_extra)", "ARGS"},
      {"output", 'o', 0, G_OPTION_ARG_FILENAME, &output, "Write an OCI layout tarball", "FILE"},
      {"name", 0, 0, G_OPTION_ARG_STRING, &name,
       "With --output: the image's name in its annotations (default oakuk/unikernel:latest)", "NAME:TAG"},
      {"push", 0, 0, G_OPTION_ARG_STRING, &push, "Push to a registry", "REGISTRY/NAME:TAG"},
      {"username", 'u', 0, G_OPTION_ARG_STRING, &username, "With --push: the registry user", "USER"},
      {"password-file", 0, 0, G_OPTION_ARG_FILENAME, &password_file,
       "With --username: the password is the first line of FILE", "FILE"},
      {"password-stdin", 0, 0, G_OPTION_ARG_NONE, &password_stdin,
       "With --username: read the password from stdin", NULL},
      {"insecure-registry", 0, 0, G_OPTION_ARG_STRING, &insecure,
       "Registries reached over plain http, comma-separated HOST[:PORT] (default: loopback only)", "LIST"},
      {NULL, 0, 0, 0, NULL, NULL, NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("[-- ARGS...]");
  g_option_context_set_summary(ctx, "Package unikernels as a multi-architecture OCI image.");
  g_option_context_set_description(ctx, description);
  g_option_context_add_main_entries(ctx, entries, NULL);
  int pargc = sep;
  g_autofree char **pargv = g_new0(char *, sep + 1);
  memcpy(pargv, argv, sizeof(char *) * (size_t)sep);
  char **parse_v = pargv;
  g_autofree char *prgname = g_strdup("oakuk pkg");
  pargv[0] = prgname;
  g_autoptr(GError) gerr = NULL;
  if (!g_option_context_parse(ctx, &pargc, &parse_v, &gerr))
    return usage_error("%s", gerr->message);
  if (pargc > 1)
    return usage_error("unexpected argument \"%s\"; kernel arguments go after -- or in --cmd", parse_v[1]);
  if (!kernels && !tars)
    return usage_error("no kernel: give --kernel ARCH=PATH or --from-tar ARCH=PATH");
  if ((output != NULL) == (push != NULL))
    return usage_error("give exactly one of --output FILE and --push REGISTRY/NAME:TAG");
  if (name && !output)
    return usage_error("--name goes with --output (--push names the image itself)");
  if ((username || password_file || password_stdin || insecure) && !push)
    return usage_error(
        "--username, --password-file, --password-stdin and --insecure-registry go with --push");
  if ((password_file || password_stdin) && !username)
    return usage_error("a password without --username");
  if (password_file && password_stdin)
    return usage_error("give one of --password-file and --password-stdin");
  g_autofree char *password = NULL;
  if (password_file && !(password = oak_read_first_line(password_file, &gerr)))
    return usage_error("--password-file %s: %s", password_file, gerr->message);
  if (password_stdin) {
    char line[4096];
    if (!fgets(line, sizeof line, stdin))
      return usage_error("--password-stdin: nothing on stdin");
    line[strcspn(line, "\r\n")] = '\0';
    password = g_strdup(line);
  }
  if (username && !password)
    return usage_error("--username %s: give its password with --password-file or --password-stdin", username);

  Pkg p = {.pkg = oakuk_oci_package_new(),
           .initrds = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free)};
  int rc = package(&p, kernels, initrds, tars, files, cmd, sep < argc ? argv + sep + 1 : NULL, env,
                   uk_version, cmdline_extra);
  oakuk_error *err = NULL;
  g_autofree char *digest_raw = NULL;
  if (rc == OAKUK_CLI_OK && output) {
    char *d = NULL;
    if (oakuk_oci_package_write_archive(&d, p.pkg, name ? name : "oakuk/unikernel:latest", output, &err) != 0)
      rc = lib_error(err, "--output %s", output);
    digest_raw = g_strdup(d);
    oakuk_free(d);
    if (rc == OAKUK_CLI_OK) {
      print_digests(p.pkg, digest_raw, NULL);
      g_autofree char *abs = g_canonicalize_filename(output, NULL);
      fprintf(stderr, "oakuk pkg: wrote %s (run it as oci-archive:file://%s)\n", output, abs);
    }
  } else if (rc == OAKUK_CLI_OK) {
    oakuk_container_options copts = OAKUK_CONTAINER_OPTIONS_INIT;
    copts.insecure_registries = insecure;
    char *d = NULL;
    if (oakuk_oci_package_push(&d, p.pkg, push, username, password, &copts, &err) != 0)
      rc = lib_error(err, "--push %s", push);
    digest_raw = g_strdup(d);
    oakuk_free(d);
    if (rc == OAKUK_CLI_OK) {
      /* name:tag → name@digest: the reference that keeps naming these bits after the tag moves. */
      const char *slash = strrchr(push, '/');
      const char *colon = strrchr(slash ? slash : push, ':');
      g_autofree char *repo = colon ? g_strndup(push, (gsize)(colon - push)) : g_strdup(push);
      g_autofree char *pinned = g_strdup_printf("%s@%s", repo, digest_raw);
      print_digests(p.pkg, digest_raw, pinned);
    }
  }
  if (password)
    memset(password, 0, strlen(password));
  rm_tree(p.tmp);
  g_free(p.tmp);
  g_free(p.files_dir);
  g_free(p.version);
  g_hash_table_unref(p.initrds);
  oakuk_oci_package_unref(p.pkg);
  return rc;
}
