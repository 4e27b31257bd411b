/* Unikernel runtime, part 1 (docs/architecture.md §10.1): capability probe and the QEMU command builder.
 * The instance lifecycle lives in qemu-runtime.c. */
#include "qemu-private.h"

#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <unistd.h>

/* How many bytes of the options struct version 1 has. */
#define OPTIONS_V1_SIZE G_STRUCT_OFFSET(oakuk_qemu_options, run_as)

OAKUK_API int oakuk_qemu_options_init(oakuk_qemu_options *opts, unsigned int version) {
  g_return_val_if_fail(opts != NULL, OAKUK_EINVAL);
  if (version != OAKUK_QEMU_OPTIONS_VERSION && version != OAKUK_QEMU_OPTIONS_VERSION_1)
    return OAKUK_EINVAL;
  oakuk_qemu_options init = OAKUK_QEMU_OPTIONS_INIT;
  init.version = version;
  /* A version-1 caller's struct ends before run_as: write only its part. */
  memcpy(opts, &init, version == OAKUK_QEMU_OPTIONS_VERSION_1 ? OPTIONS_V1_SIZE : sizeof init);
  return 0;
}

/* Reads opts of any known version (NULL: defaults) into a current-version *o. */
static int options_read(oakuk_qemu_options *o, const oakuk_qemu_options *opts, oakuk_error **error) {
  oakuk_qemu_options init = OAKUK_QEMU_OPTIONS_INIT;
  *o = init;
  if (!opts)
    return 0;
  if (opts->version == OAKUK_QEMU_OPTIONS_VERSION_1) {
    memcpy(o, opts, OPTIONS_V1_SIZE);
    o->version = OAKUK_QEMU_OPTIONS_VERSION;
    return 0;
  }
  if (opts->version != OAKUK_QEMU_OPTIONS_VERSION)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "version",
                           "oakuk_qemu_options: version %u, expected %u or %u", opts->version,
                           OAKUK_QEMU_OPTIONS_VERSION_1, OAKUK_QEMU_OPTIONS_VERSION);
  *o = *opts;
  return 0;
}

/* ---- architecture names ---- */

/* runs: the command builder knows a machine and cpu for guests of that architecture. The others
 * are named here for the host's own architecture only: a node never advertises them. */
static const struct {
  const char *goarch, *qemu, *machine1, *machine2;
  gboolean runs;
} arch_table[] = {
    {"amd64", "x86_64", "x86_64", NULL, TRUE},
    {"arm64", "aarch64", "aarch64", "arm64", TRUE},
    {"arm", "arm", "armv7l", "armv6l", FALSE},
    {"riscv64", "riscv64", "riscv64", NULL, FALSE},
};

const char *oakuk_qemu_goarch_from_machine(const char *machine) {
  for (size_t i = 0; i < G_N_ELEMENTS(arch_table); i++)
    if (g_strcmp0(machine, arch_table[i].machine1) == 0 || g_strcmp0(machine, arch_table[i].machine2) == 0)
      return arch_table[i].goarch;
  return NULL;
}

const char *oakuk_qemu_arch_suffix(const char *goarch) {
  for (size_t i = 0; i < G_N_ELEMENTS(arch_table); i++)
    if (g_strcmp0(goarch, arch_table[i].goarch) == 0)
      return arch_table[i].qemu;
  return NULL;
}

static const char *host_goarch(void) {
  struct utsname u;
  if (uname(&u) != 0)
    return NULL;
  return oakuk_qemu_goarch_from_machine(u.machine);
}

/* ---- probe ---- */

struct oakuk_qemu_caps {
  gint refcount;
  char *host_arch;
  bool kvm;
  char *kvm_reason;
  bool allow_emulation;
  GHashTable *paths;    /* goarch -> path */
  GHashTable *versions; /* goarch -> "x.y.z" */
  GPtrArray *emulated;  /* goarch, sorted */
};

gboolean oakuk_qemu_cpuinfo_has_virt(const char *cpuinfo) {
  g_auto(GStrv) lines = g_strsplit(cpuinfo ? cpuinfo : "", "\n", -1);
  for (char **l = lines; *l; l++) {
    if (!g_str_has_prefix(*l, "flags"))
      continue;
    const char *colon = strchr(*l, ':');
    if (!colon)
      continue;
    g_auto(GStrv) flags = g_strsplit_set(colon + 1, " \t", -1);
    for (char **f = flags; *f; f++)
      if (strcmp(*f, "vmx") == 0 || strcmp(*f, "svm") == 0)
        return TRUE;
  }
  return FALSE;
}

/* Sets *reason and returns FALSE when KVM cannot run guests here. */
static gboolean probe_kvm(const char *host_arch, char **reason) {
  /* The cpu flag comes first: without vmx/svm (nested virtualization not exposed) /dev/kvm may
   * still open and answer, but its guests hang. */
  if (g_strcmp0(host_arch, "amd64") == 0) {
    g_autofree char *cpuinfo = NULL;
    if (!g_file_get_contents("/proc/cpuinfo", &cpuinfo, NULL, NULL) ||
        !oakuk_qemu_cpuinfo_has_virt(cpuinfo)) {
      *reason = g_strdup("/proc/cpuinfo flags have no vmx/svm: the cpu offers no hardware "
                         "virtualization (nested without VMX/SVM), KVM guests would hang");
      return FALSE;
    }
  }
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *reason = g_strdup_printf("/dev/kvm: %s", g_strerror(errno));
    return FALSE;
  }
  int v = ioctl(fd, KVM_GET_API_VERSION, 0);
  int saved = errno;
  close(fd);
  if (v != 12) {
    *reason = v < 0 ? g_strdup_printf("/dev/kvm: KVM_GET_API_VERSION: %s", g_strerror(saved))
                    : g_strdup_printf("/dev/kvm: KVM_GET_API_VERSION is %d, expected 12", v);
    return FALSE;
  }
  return TRUE;
}

static char *find_binary(const char *name, const char *search_path) {
  if (!search_path)
    return g_find_program_in_path(name);
  g_auto(GStrv) dirs = g_strsplit(search_path, ":", -1);
  for (char **d = dirs; *d; d++) {
    if (!**d)
      continue;
    char *p = g_build_filename(*d, name, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_EXECUTABLE) && !g_file_test(p, G_FILE_TEST_IS_DIR))
      return p;
    g_free(p);
  }
  return NULL;
}

/* "QEMU emulator version 7.2.22 (Debian ...)" -> "7.2.22". */
static char *qemu_version_of(const char *path) {
  const char *argv[] = {path, "--version", NULL};
  g_autofree char *out = NULL;
  int status = 0;
  if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL, &status,
                    NULL))
    return NULL;
  const char *p = out ? strstr(out, "version ") : NULL;
  if (!p)
    return NULL;
  p += strlen("version ");
  size_t n = strspn(p, "0123456789.");
  return n ? g_strndup(p, n) : NULL;
}

OAKUK_API int oakuk_qemu_probe(oakuk_qemu_caps **out, const oakuk_qemu_options *opts, oakuk_error **error) {
  g_return_val_if_fail(out != NULL, OAKUK_EINVAL);
  oakuk_qemu_options o;
  int rc = options_read(&o, opts, error);
  if (rc < 0)
    return rc;
  opts = &o;
  const char *host = host_goarch();
  if (!host)
    return oakuk_set_error(error, OAKUK_EUNSUPPORTED, 0, NULL, "probe: unknown host machine architecture");
  oakuk_qemu_caps *c = g_new0(oakuk_qemu_caps, 1);
  c->refcount = 1;
  c->host_arch = g_strdup(host);
  c->allow_emulation = opts->allow_emulation;
  c->paths = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  c->versions = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  c->emulated = g_ptr_array_new();
  for (size_t i = 0; i < G_N_ELEMENTS(arch_table); i++) {
    if (!arch_table[i].runs)
      continue;
    g_autofree char *bin = g_strconcat("qemu-system-", arch_table[i].qemu, NULL);
    char *path = find_binary(bin, opts->search_path);
    if (!path)
      continue;
    g_hash_table_insert(c->paths, (gpointer)arch_table[i].goarch, path);
    char *v = qemu_version_of(path);
    if (v)
      g_hash_table_insert(c->versions, (gpointer)arch_table[i].goarch, v);
    if (opts->allow_emulation && strcmp(arch_table[i].goarch, host) != 0)
      g_ptr_array_add(c->emulated, (gpointer)arch_table[i].goarch);
  }
  g_ptr_array_sort(c->emulated, (GCompareFunc)g_strcmp0);
  c->kvm = probe_kvm(host, &c->kvm_reason);
  *out = c;
  return 0;
}

OAKUK_API oakuk_qemu_caps *oakuk_qemu_caps_ref(oakuk_qemu_caps *caps) {
  g_return_val_if_fail(caps != NULL, NULL);
  g_atomic_int_inc(&caps->refcount);
  return caps;
}

OAKUK_API void oakuk_qemu_caps_unref(oakuk_qemu_caps *c) {
  if (!c || !g_atomic_int_dec_and_test(&c->refcount))
    return;
  g_free(c->host_arch);
  g_free(c->kvm_reason);
  g_hash_table_unref(c->paths);
  g_hash_table_unref(c->versions);
  g_ptr_array_unref(c->emulated);
  g_free(c);
}

OAKUK_DEFINE_GETTER(const char *, oakuk_qemu_caps_host_arch, oakuk_qemu_caps, host_arch, NULL)

OAKUK_DEFINE_GETTER(bool, oakuk_qemu_caps_kvm, oakuk_qemu_caps, kvm, false)

OAKUK_DEFINE_GETTER(const char *, oakuk_qemu_caps_kvm_reason, oakuk_qemu_caps, kvm_reason, NULL)

OAKUK_API const char *oakuk_qemu_caps_qemu_path(const oakuk_qemu_caps *caps, const char *arch) {
  g_return_val_if_fail(caps != NULL && arch != NULL, NULL);
  return g_hash_table_lookup(caps->paths, arch);
}

OAKUK_API const char *oakuk_qemu_caps_qemu_version(const oakuk_qemu_caps *caps, const char *arch) {
  g_return_val_if_fail(caps != NULL && arch != NULL, NULL);
  return g_hash_table_lookup(caps->versions, arch);
}

OAKUK_API int32_t oakuk_qemu_caps_accel_for_arch(const oakuk_qemu_caps *caps, const char *arch) {
  g_return_val_if_fail(caps != NULL && arch != NULL, OAKUK_ACCEL_NONE);
  if (!g_hash_table_contains(caps->paths, arch))
    return OAKUK_ACCEL_NONE;
  if (caps->kvm && strcmp(arch, caps->host_arch) == 0)
    return OAKUK_ACCEL_KVM;
  return caps->allow_emulation ? OAKUK_ACCEL_TCG : OAKUK_ACCEL_NONE;
}

OAKUK_API int32_t oakuk_qemu_caps_accel(const oakuk_qemu_caps *caps) {
  g_return_val_if_fail(caps != NULL, OAKUK_ACCEL_NONE);
  int32_t a = oakuk_qemu_caps_accel_for_arch(caps, caps->host_arch);
  if (a == OAKUK_ACCEL_NONE && caps->emulated->len > 0)
    a = OAKUK_ACCEL_TCG; /* only foreign archs have a binary, and emulation is allowed */
  return a;
}

OAKUK_API size_t oakuk_qemu_caps_emulated_arch_count(const oakuk_qemu_caps *caps) {
  g_return_val_if_fail(caps != NULL, 0);
  return caps->emulated->len;
}

OAKUK_API const char *oakuk_qemu_caps_emulated_arch(const oakuk_qemu_caps *caps, size_t i) {
  g_return_val_if_fail(caps != NULL, NULL);
  return i < caps->emulated->len ? caps->emulated->pdata[i] : NULL;
}

OAKUK_API char *oakuk_qemu_caps_to_json(const oakuk_qemu_caps *caps) {
  g_return_val_if_fail(caps != NULL, NULL);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  const char *accel = oakuk_accel_name(oakuk_qemu_caps_accel(caps));
  if (accel) {
    json_builder_set_member_name(b, "accel");
    json_builder_add_string_value(b, accel);
  }
  const char *version = g_hash_table_lookup(caps->versions, caps->host_arch);
  if (!version && caps->emulated->len > 0)
    version = g_hash_table_lookup(caps->versions, caps->emulated->pdata[0]);
  if (version) {
    json_builder_set_member_name(b, "qemu_version");
    json_builder_add_string_value(b, version);
  }
  json_builder_set_member_name(b, "emulated_archs");
  json_builder_begin_array(b);
  for (guint i = 0; i < caps->emulated->len; i++)
    json_builder_add_string_value(b, caps->emulated->pdata[i]);
  json_builder_end_array(b);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *s = oakuk_json_node_to_string(root, FALSE);
  char *r = malloc(strlen(s) + 1);
  if (r)
    strcpy(r, s);
  return r;
}

/* ---- network parameters ---- */

static gboolean parse_ipv4(const char *s, guint32 *out) {
  if (!s)
    return FALSE;
  guint32 v = 0;
  int parts = 0;
  const char *p = s;
  while (parts < 4) {
    if (!g_ascii_isdigit(*p))
      return FALSE;
    guint n = 0;
    int digits = 0;
    while (g_ascii_isdigit(*p) && digits < 4) {
      n = n * 10 + (guint)(*p++ - '0');
      digits++;
    }
    if (digits > 3 || n > 255)
      return FALSE;
    v = (v << 8) | n;
    parts++;
    if (parts < 4 && *p++ != '.')
      return FALSE;
  }
  if (*p)
    return FALSE;
  *out = v;
  return TRUE;
}

int oakuk_qemu_mask_to_prefix(const char *mask) {
  guint32 m;
  if (!parse_ipv4(mask, &m))
    return -1;
  int prefix = 0;
  while (prefix < 32 && (m & (0x80000000u >> prefix)))
    prefix++;
  guint32 expect = prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
  return m == expect ? prefix : -1;
}

char *oakuk_qemu_prefix_to_mask(int prefix) {
  if (prefix < 0 || prefix > 32)
    return NULL;
  guint32 m = prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
  return g_strdup_printf("%u.%u.%u.%u", m >> 24, (m >> 16) & 255, (m >> 8) & 255, m & 255);
}

int oakuk_qemu_version_cmp(const char *a, const char *b) {
  g_auto(GStrv) pa = g_strsplit(a ? a : "", ".", 3);
  g_auto(GStrv) pb = g_strsplit(b ? b : "", ".", 3);
  for (int i = 0; i < 3; i++) {
    gint64 x = (pa[0] && i < (int)g_strv_length(pa)) ? g_ascii_strtoll(pa[i], NULL, 10) : 0;
    gint64 y = (pb[0] && i < (int)g_strv_length(pb)) ? g_ascii_strtoll(pb[i], NULL, 10) : 0;
    if (x != y)
      return x < y ? -1 : 1;
  }
  return 0;
}

char *oakuk_qemu_net_params(const char *flavor, const char *version, const char *ip, int prefix,
                            const char *gateway) {
  if (g_strcmp0(flavor, "unikraft") == 0 && version && oakuk_qemu_version_cmp(version, "0.16.1") < 0) {
    g_autofree char *mask = oakuk_qemu_prefix_to_mask(prefix);
    GString *s = g_string_new(NULL);
    g_string_append_printf(s, "netdev.ipv4_addr=%s", ip);
    if (gateway)
      g_string_append_printf(s, " netdev.ipv4_gw_addr=%s", gateway);
    g_string_append_printf(s, " netdev.ipv4_subnet_mask=%s", mask);
    return g_string_free(s, FALSE);
  }
  if (gateway)
    return g_strdup_printf("netdev.ip=%s/%d:%s", ip, prefix, gateway);
  return g_strdup_printf("netdev.ip=%s/%d", ip, prefix);
}

int64_t oakuk_qemu_memory_limit_mb(int64_t guest_mb, int32_t accel) {
  int64_t limit = guest_mb + 64 + (guest_mb + 9) / 10;
  if (accel != OAKUK_ACCEL_KVM)
    limit += 192;
  return limit;
}

/* ---- command builder ---- */

/* Characters that would split or escape a guest command-line token. */
static gboolean token_is_safe(const char *s, gboolean allow_space) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\'' || *p == '\\')
      return FALSE;
    if (*p == ' ' && !allow_space)
      return FALSE;
  }
  return TRUE;
}

static gboolean ifname_is_valid(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > 15)
    return FALSE;
  for (size_t i = 0; i < n; i++)
    if (!g_ascii_isalnum(s[i]) && !strchr("_.-", s[i]))
      return FALSE;
  return TRUE;
}

static gboolean mac_is_valid(const char *s) {
  if (!s || strlen(s) != 17)
    return FALSE;
  for (int i = 0; i < 17; i++)
    if (i % 3 == 2 ? s[i] != ':' : !g_ascii_isxdigit(s[i]))
      return FALSE;
  return TRUE;
}

/* QEMU option values: a ',' must be doubled or it starts the next option. */
static char *opt_escape(const char *s) {
  GString *r = g_string_new(NULL);
  for (; *s; s++) {
    if (*s == ',')
      g_string_append_c(r, ',');
    g_string_append_c(r, *s);
  }
  return g_string_free(r, FALSE);
}

static gboolean check_network(const oakuk_instance_spec *s, GError **error) {
  guint32 ip, gw;
  if (!ifname_is_valid(s->tap_name))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: tap name \"%s\" is not a valid interface name", s->name,
                       s->tap_name ? s->tap_name : ""),
           FALSE;
  if (!parse_ipv4(s->ip, &ip))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: guest ip \"%s\" is not an IPv4 address", s->name, s->ip ? s->ip : ""),
           FALSE;
  if (s->prefix < 1 || s->prefix > 32)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: guest prefix %d is outside 1..32",
                       s->name, s->prefix),
           FALSE;
  if (s->gateway && !parse_ipv4(s->gateway, &gw))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: gateway \"%s\" is not an IPv4 address", s->name, s->gateway),
           FALSE;
  if (s->mac && !mac_is_valid(s->mac))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: mac \"%s\" is not xx:xx:xx:xx:xx:xx",
                       s->name, s->mac),
           FALSE;
  return TRUE;
}

static gboolean check_tokens(const oakuk_instance_spec *s, GError **error) {
  for (guint i = 0; i < s->args->len; i++) {
    const char *a = s->args->pdata[i];
    if (!*a || !token_is_safe(a, FALSE))
      return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                         "instance %s: cmd[%u] \"%s\" is empty or has a space, quote, backslash or control "
                         "character (the guest command line cannot carry it)",
                         s->name, i, a),
             FALSE;
  }
  for (guint i = 0; i < s->env->len; i++) {
    const char *e = s->env->pdata[i];
    const char *eq = strchr(e, '=');
    if (!eq || eq == e || !token_is_safe(e, FALSE))
      return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                         "instance %s: environment[%u] \"%s\" is not KEY=VALUE without spaces, quotes, "
                         "backslashes or control characters",
                         s->name, i, e),
             FALSE;
  }
  if (s->cmdline_extra) {
    g_auto(GStrv) toks = g_strsplit(s->cmdline_extra, " ", -1);
    gboolean dashdash = FALSE;
    for (char **t = toks; *t; t++)
      dashdash = dashdash || strcmp(*t, "--") == 0;
    if (!token_is_safe(s->cmdline_extra, TRUE) || dashdash)
      return g_set_error(
                 error, OAKUK_ERROR, -OAKUK_EINVAL,
                 "instance %s: cmdline_extra \"%s\" has a quote, backslash, control character or \"--\"",
                 s->name, s->cmdline_extra),
             FALSE;
  }
  return TRUE;
}

static gboolean check_kernel(const oakuk_instance_spec *s, const char *arch, GError **error) {
  if (!s->kernel)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: no kernel given", s->name), FALSE;
  if (!g_file_test(s->kernel, G_FILE_TEST_IS_REGULAR))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: kernel %s: not a regular file",
                       s->name, s->kernel),
           FALSE;
  if (s->initrd && !g_file_test(s->initrd, G_FILE_TEST_IS_REGULAR))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: initrd %s: not a regular file",
                       s->name, s->initrd),
           FALSE;
  if (s->files_dir && !g_file_test(s->files_dir, G_FILE_TEST_IS_DIR))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: files %s: not a directory", s->name,
                       s->files_dir),
           FALSE;
  oakuk_error *oe = NULL;
  const char *karch = oakuk_image_kernel_arch(s->kernel, &oe);
  if (!karch) {
    g_set_error(error, OAKUK_ERROR, -oakuk_error_code(oe), "instance %s: %s", s->name,
                oakuk_error_message(oe));
    oakuk_error_free(oe);
    return FALSE;
  }
  if (strcmp(karch, arch) != 0)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: kernel %s is built for %s but the instance runs %s guests", s->name,
                       s->kernel, karch, arch),
           FALSE;
  return TRUE;
}

/* Flavor and version from the spec, else from the kernel. */
static gboolean resolve_flavor(const oakuk_instance_spec *s, char **flavor, char **version, GError **error) {
  if (s->flavor && strcmp(s->flavor, "unikraft") != 0 && strcmp(s->flavor, "linux") != 0)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: flavor \"%s\" is not unikraft or linux", s->name, s->flavor),
           FALSE;
  if (s->version && !g_regex_match_simple("^[0-9]+(\\.[0-9]+){0,2}$", s->version, 0, 0))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: version \"%s\" is not x.y.z", s->name,
                       s->version),
           FALSE;
  *flavor = g_strdup(s->flavor);
  *version = g_strdup(s->version);
  if (*flavor && (*version || strcmp(*flavor, "linux") == 0))
    return TRUE;
  const char *dflavor = NULL;
  char *dversion = NULL;
  oakuk_error *oe = NULL;
  if (oakuk_image_kernel_unikraft_version(&dflavor, &dversion, s->kernel, &oe) < 0) {
    g_set_error(error, OAKUK_ERROR, -oakuk_error_code(oe), "instance %s: %s", s->name,
                oakuk_error_message(oe));
    oakuk_error_free(oe);
    return FALSE;
  }
  if (!*flavor)
    *flavor = g_strdup(dflavor);
  if (!*version && g_strcmp0(*flavor, dflavor) == 0)
    *version = g_strdup(dversion);
  oakuk_free(dversion);
  return TRUE;
}

static char *build_append(const oakuk_instance_spec *s, const char *flavor, const char *version) {
  GPtrArray *parts = g_ptr_array_new_with_free_func(g_free);
  char *extra = g_strstrip(g_strdup(s->cmdline_extra ? s->cmdline_extra : ""));
  if (*extra)
    g_ptr_array_add(parts, extra);
  else
    g_free(extra);
  if (s->env->len > 0) {
    if (g_strcmp0(flavor, "unikraft") == 0) {
      GString *e = g_string_new("env.vars=[");
      for (guint i = 0; i < s->env->len; i++)
        g_string_append_printf(e, " %s", (char *)s->env->pdata[i]);
      g_string_append(e, " ]");
      g_ptr_array_add(parts, g_string_free(e, FALSE));
    } else {
      /* Linux hands unrecognised KEY=VALUE parameters to init as its environment. */
      for (guint i = 0; i < s->env->len; i++)
        g_ptr_array_add(parts, g_strdup(s->env->pdata[i]));
    }
  }
  if (s->netns_path)
    g_ptr_array_add(parts, oakuk_qemu_net_params(flavor, version, s->ip, s->prefix, s->gateway));
  /* Unikraft only reads its parameters when "--" follows them, so it is always there. */
  g_ptr_array_add(parts, g_strdup("--"));
  for (guint i = 0; i < s->args->len; i++)
    g_ptr_array_add(parts, g_strdup(s->args->pdata[i]));
  g_ptr_array_add(parts, NULL);
  char *r = g_strjoinv(" ", (char **)parts->pdata);
  g_ptr_array_unref(parts);
  return r;
}

static void add(GPtrArray *a, const char *s) {
  g_ptr_array_add(a, g_strdup(s));
}

static void addf(GPtrArray *a, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void addf(GPtrArray *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_ptr_array_add(a, g_strdup_vprintf(fmt, ap));
  va_end(ap);
}

static GPtrArray *build_argv(const oakuk_instance_spec *s, const char *dir, const char *qemu_binary,
                             gboolean paused, gboolean fds, char **flavor_out, char **version_out,
                             GError **error) {
  if (!oakuk_instance_name_is_valid(s->name))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance name \"%s\": use 1-200 characters of A-Z a-z 0-9 . _ -", s->name),
           NULL;
  const char *arch = s->arch ? s->arch : host_goarch();
  const char *suffix = oakuk_qemu_arch_suffix(arch);
  if (!suffix || (strcmp(arch, "amd64") != 0 && strcmp(arch, "arm64") != 0))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EUNSUPPORTED,
                       "instance %s: arch \"%s\" is not amd64 or arm64", s->name, arch ? arch : "?"),
           NULL;
  if (s->accel != OAKUK_ACCEL_KVM && s->accel != OAKUK_ACCEL_TCG)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: accel %d is not KVM or TCG", s->name,
                       s->accel),
           NULL;
  if (s->memory_mb < 16 || s->memory_mb > 1024 * 1024)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: memory %" G_GINT64_FORMAT " MB is outside 16..1048576", s->name,
                       s->memory_mb),
           NULL;
  if (s->vcpus < 1 || s->vcpus > 256)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: vcpus %d is outside 1..256", s->name,
                       s->vcpus),
           NULL;
  if (s->netns_path && !check_network(s, error))
    return NULL;
  if (!check_tokens(s, error) || !check_kernel(s, arch, error))
    return NULL;
  g_autofree char *flavor = NULL, *version = NULL;
  if (!resolve_flavor(s, &flavor, &version, error))
    return NULL;

  gboolean kvm = s->accel == OAKUK_ACCEL_KVM, x86 = strcmp(arch, "amd64") == 0;
  g_autofree char *edir = opt_escape(dir);
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  if (qemu_binary)
    add(a, qemu_binary);
  else
    addf(a, "qemu-system-%s", suffix);
  add(a, "-name");
  add(a, s->name);
  add(a, "-machine");
  addf(a, "%s,accel=%s", x86 ? "pc" : "virt", kvm ? "kvm" : "tcg");
  add(a, "-cpu");
  /* TCG on x86: "max" enables every feature TCG emulates (x2apic, rdrand, pdpe1gb, fsgsbase...),
   * a superset of what Unikraft's x86 platform and the Debian kernel probe for; qemu64 lacks
   * x2apic and rdrand. arm64: cortex-a57, the core Unikraft's arm64 platform is tested on. */
  add(a, kvm ? "host" : x86 ? "max" : "cortex-a57");
  add(a, "-nodefaults");
  add(a, "-no-user-config");
  add(a, "-nographic");
  /* A guest that panics with panic=-1 (or triple-faults) would otherwise reboot forever and never
   * be reported DEAD: make every guest reset end QEMU. */
  add(a, "-no-reboot");
  /* A seccomp filter from QEMU's start: no set*uid/gid, no fork/exec/clone of processes or
   * namespaces, no scheduling changes, no obsolete calls. */
  add(a, "-sandbox");
  add(a, OAKUK_QEMU_SANDBOX);
  if (paused)
    add(a, "-S");
  if (x86) {
    /* Guests that know it (Unikraft >= 0.16 on a crash, Linux with its pvpanic driver) report a
     * panic here, and QMP says so: QEMU exits 0 after a crash as after a clean power-off. */
    add(a, "-device");
    add(a, "pvpanic");
  }
  /* With fds, every file comes as a descriptor the runtime opened (qemu-private.h): QEMU runs as
   * an unprivileged user that may not even reach the instance directory. */
  if (fds) {
    add(a, "-add-fd");
    addf(a, "fd=%d,set=1", OAKUK_QEMU_FD_SERIAL);
    add(a, "-serial");
    add(a, "file:/dev/fdset/1");
  } else {
    add(a, "-serial");
    addf(a, "file:%s/serial.log", edir);
  }
  add(a, "-kernel");
  if (fds)
    addf(a, "/proc/self/fd/%d", OAKUK_QEMU_FD_KERNEL);
  else
    add(a, s->kernel);
  if (s->initrd) {
    add(a, "-initrd");
    if (fds)
      addf(a, "/proc/self/fd/%d", OAKUK_QEMU_FD_INITRD);
    else
      add(a, s->initrd);
  }
  add(a, "-m");
  addf(a, "%" G_GINT64_FORMAT, s->memory_mb);
  add(a, "-smp");
  addf(a, "%d", s->vcpus);
  if (fds) {
    add(a, "-chardev");
    addf(a, "socket,id=qmp,fd=%d,server=on,wait=off", OAKUK_QEMU_FD_QMP);
    add(a, "-mon");
    add(a, "chardev=qmp,mode=control");
  } else {
    add(a, "-qmp");
    addf(a, "unix:%s/qmp.sock,server=on,wait=off", edir);
  }
  if (s->netns_path && fds) {
    add(a, "-netdev");
    if (kvm)
      addf(a, "tap,id=n0,fd=%d,vhost=on,vhostfd=%d", OAKUK_QEMU_FD_TAP, OAKUK_QEMU_FD_VHOST);
    else
      addf(a, "tap,id=n0,fd=%d", OAKUK_QEMU_FD_TAP);
  } else if (s->netns_path) {
    add(a, "-netdev");
    addf(a, "tap,id=n0,ifname=%s,script=no,downscript=no%s", s->tap_name, kvm ? ",vhost=on" : "");
  }
  if (s->netns_path) {
    add(a, "-device");
    /* romfile= (empty): no iPXE option ROM. Nobody network-boots a unikernel; SeaBIOS would
     * still initialise iPXE (a few hundred ms under TCG) and print its banner on the console. */
    if (s->mac)
      addf(a, "virtio-net-pci,netdev=n0,mac=%s,romfile=", s->mac);
    else
      add(a, "virtio-net-pci,netdev=n0,romfile=");
  }
  if (s->files_dir) {
    add(a, "-fsdev");
    if (fds)
      addf(a, "local,id=fs0,path=/proc/self/fd/%d,security_model=none", OAKUK_QEMU_FD_FILES);
    else
      addf(a, "local,id=fs0,path=%s/files,security_model=none", edir);
    add(a, "-device");
    add(a, "virtio-9p-pci,fsdev=fs0,mount_tag=fs0");
  }
  add(a, "-append");
  g_ptr_array_add(a, build_append(s, flavor, version));
  g_ptr_array_add(a, NULL);
  if (flavor_out)
    *flavor_out = g_steal_pointer(&flavor);
  if (version_out)
    *version_out = g_steal_pointer(&version);
  return a;
}

OAKUK_API int oakuk_qemu_build_argv(char ***argv_out, size_t *argc_out, const oakuk_instance_spec *spec,
                                    const char *instance_dir, const char *qemu_binary, oakuk_error **error) {
  g_return_val_if_fail(argv_out != NULL && spec != NULL && instance_dir != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  GPtrArray *a = build_argv(spec, instance_dir, qemu_binary, FALSE, FALSE, NULL, NULL, &err);
  if (!a)
    return oakuk_propagate_gerror(error, err);
  /* Copy into malloc'ed memory: callers free with oakuk_qemu_argv_free. */
  char **r = calloc(a->len, sizeof(char *));
  for (guint i = 0; r && i + 1 < a->len; i++)
    r[i] = strdup(a->pdata[i]);
  if (argc_out)
    *argc_out = a->len - 1;
  g_ptr_array_unref(a);
  *argv_out = r;
  return r ? 0 : oakuk_set_error(error, OAKUK_EGENERIC, ENOMEM, NULL, "out of memory");
}

OAKUK_API void oakuk_qemu_argv_free(char **argv) {
  if (!argv)
    return;
  for (char **p = argv; *p; p++)
    free(*p);
  free(argv);
}

GPtrArray *oakuk_qemu_build_argv_internal(const oakuk_instance_spec *spec, const char *dir,
                                          const char *qemu_binary, gboolean paused, gboolean pass_fds,
                                          char **flavor, char **version, GError **error) {
  return build_argv(spec, dir, qemu_binary, paused, pass_fds, flavor, version, error);
}
