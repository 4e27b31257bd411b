/* `oakuk run`: argument parsing only; run-session.c does the work. */
#include "client.h"
#include "oakuk-cli.h"
#include "run-session.h"
#include "run-state.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char summary[] =
    "Fetches IMAGE (a URL, a local Oakestra tar(.gz) or a bare kernel file, an OCI reference\n"
    "REGISTRY/NAME:TAG or NAME@sha256:..., or oci-archive:PATH|URL, whose platform for --arch or\n"
    "this machine is run), gives it a network namespace on the local bridge, runs it with QEMU in\n"
    "the foreground and shows its console.\n"
    "Ctrl-C (or SIGTERM, or `oakuk stop NAME`) stops the guest and removes everything the run\n"
    "made; the last run puts back the host settings the first changed (net.ipv4.ip_forward).\n"
    "ARGS after -- go to the guest.\n"
    "\n"
    "The guest is ready when it answers on the guest side of the first TCP -p mapping (or\n"
    "--ready-port), and/or shows --ready-serial TEXT on its console.\n"
    "\n"
    "With --detach it prints the instance's name once the guest runs (is ready, with a probe) and\n"
    "leaves it running; `oakuk ps` lists instances, `oakuk stop NAME` stops one.\n"
    "\n"
    "Exit status: 0 when stopped by a signal or when the guest powered off cleanly (--detach: when\n"
    "it runs), 1 on errors, 2 on a bad command line or option value, 3 when the guest crashed, was\n"
    "killed or failed to start (its last console lines are printed), 4 without root or\n"
    "CAP_NET_ADMIN, 7 when it was not ready within --ready-timeout (it is stopped).";

/* "--memory 128", min..max. */
static gboolean parse_number(const char *opt, const char *text, int64_t min, int64_t max, int64_t *out) {
  guint64 v = 0;
  if (!text || !g_ascii_string_to_unsigned(text, 10, (guint64)min, (guint64)max, &v, NULL)) {
    fprintf(stderr, "oakuk run: %s \"%s\": expected a number %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT "\n",
            opt, text ? text : "", min, max);
    return FALSE;
  }
  *out = (int64_t)v;
  return TRUE;
}

static gboolean usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static gboolean usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  fprintf(stderr, "oakuk run: %s\n", msg);
  return FALSE;
}

/* "HOST:GUEST[/tcp|/udp]", ports 1..65535, as oakuk_net_port_map_add takes it. */
static gboolean port_spec_ok(const char *spec) {
  g_autoptr(GRegex) re = g_regex_new("^([0-9]{1,5}):([0-9]{1,5})(/(tcp|udp))?$", 0, 0, NULL);
  g_autoptr(GMatchInfo) m = NULL;
  if (!g_regex_match(re, spec, 0, &m))
    return FALSE;
  for (int g = 1; g <= 2; g++) {
    g_autofree char *port = g_match_info_fetch(m, g);
    guint64 v = g_ascii_strtoull(port, NULL, 10);
    if (v < 1 || v > 65535)
      return FALSE;
  }
  return TRUE;
}

/* "a.b.c.d/n" without host bits, n 8..30 (room for the bridge, an instance and broadcast). */
static gboolean subnet_ok(const char *cidr) {
  g_auto(GStrv) parts = g_strsplit(cidr, "/", -1);
  struct in_addr a;
  guint64 prefix = 0;
  if (g_strv_length(parts) != 2 || inet_pton(AF_INET, parts[0], &a) != 1 ||
      !g_ascii_string_to_unsigned(parts[1], 10, 8, 30, &prefix, NULL))
    return FALSE;
  guint32 mask = 0xffffffffu << (32 - prefix);
  return (ntohl(a.s_addr) & ~mask) == 0;
}

/* "host[:port],...": registry host names or addresses, optional port. */
static gboolean registries_ok(const char *list) {
  g_autoptr(GRegex) re = g_regex_new("^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$", 0, 0, NULL);
  g_auto(GStrv) items = g_strsplit(list, ",", -1);
  if (!items[0])
    return FALSE;
  for (char **i = items; *i; i++)
    if (!g_regex_match(re, *i, 0, NULL))
      return FALSE;
  return TRUE;
}

/* What the guest command line can carry: no spaces, quotes, backslashes or control characters. */
static gboolean guest_arg_ok(const char *arg) {
  if (!*arg)
    return FALSE;
  for (const unsigned char *p = (const unsigned char *)arg; *p; p++)
    if (*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '\'' || *p == '\\')
      return FALSE;
  return TRUE;
}

/* Every option value checked before anything is fetched or made: a bad one is exit 2. */
static gboolean values_ok(const OakukRunOptions *o, const char *arch, const char *files, const char *subnet) {
  if (o->name && !oakuk_run_name_is_valid(o->name))
    return usage_error("--name \"%s\": use 1-64 characters of A-Z a-z 0-9 . _ -, not starting with \".\"",
                       o->name);
  if (arch && strcmp(arch, "amd64") != 0 && strcmp(arch, "arm64") != 0)
    return usage_error("--arch \"%s\": expected amd64 or arm64", arch);
  if (o->uk_version && !g_regex_match_simple("^[0-9]+(\\.[0-9]+){0,2}$", o->uk_version, 0, 0))
    return usage_error("--uk-version \"%s\": expected X.Y.Z", o->uk_version);
  if (files && !g_file_test(files, G_FILE_TEST_IS_DIR))
    return usage_error("--files %s: not a directory", files);
  if (subnet && !subnet_ok(subnet))
    return usage_error("--subnet \"%s\": expected an IPv4 network a.b.c.d/8..30 without host bits", subnet);
  for (char **p = o->ports; p && *p; p++)
    if (!port_spec_ok(*p))
      return usage_error("-p \"%s\": expected HOST:GUEST[/tcp|/udp] with ports 1..65535", *p);
  if (o->insecure_registries && !registries_ok(o->insecure_registries))
    return usage_error("--insecure-registry \"%s\": expected HOST[:PORT],...", o->insecure_registries);
  if (o->username && !*o->username)
    return usage_error("--username: empty");
  for (char **a = o->args; a && *a; a++)
    if (!guest_arg_ok(*a))
      return usage_error("guest argument \"%s\": empty or has a space, quote, backslash or control character "
                         "(the guest command line cannot carry it)",
                         *a);
  return TRUE;
}

int oakuk_cmd_run(int argc, char **argv) {
  /* Everything after the first "--" belongs to the guest, untouched by option parsing. */
  int sep = argc;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--") == 0) {
      sep = i;
      break;
    }
  g_autofree char *arch = NULL, *memory = NULL, *vcpus = NULL, *flavor = NULL, *uk_version = NULL,
                  *files = NULL, *state_dir = NULL, *subnet = NULL, *name = NULL, *net = NULL,
                  *ready_port = NULL, *ready_serial = NULL, *ready_timeout = NULL, *insecure = NULL,
                  *username = NULL, *password_file = NULL;
  g_auto(GStrv) ports = NULL;
  gboolean allow_emulation = FALSE, detach = FALSE;
  GOptionEntry entries[] = {
      {"arch", 0, 0, G_OPTION_ARG_STRING, &arch, "Guest architecture (amd64, arm64; default: the kernel's)",
       "A"},
      {"memory", 'm', 0, G_OPTION_ARG_STRING, &memory, "Guest memory in MB (default 128)", "MB"},
      {"vcpus", 0, 0, G_OPTION_ARG_STRING, &vcpus, "Virtual CPUs (default 1)", "N"},
      {"port", 'p', 0, G_OPTION_ARG_STRING_ARRAY, &ports,
       "Map 127.0.0.1/node port HOST to the guest's GUEST (repeatable)", "HOST:GUEST[/tcp|udp]"},
      {"detach", 'd', 0, G_OPTION_ARG_NONE, &detach,
       "Print the name once the guest runs (is ready, with a probe) and leave it running", NULL},
      {"allow-emulation", 0, 0, G_OPTION_ARG_NONE, &allow_emulation,
       "Run under TCG when KVM is unusable or the guest is of another architecture", NULL},
      {"flavor", 0, 0, G_OPTION_ARG_STRING, &flavor, "unikraft or linux (default: detected)", "F"},
      {"uk-version", 0, 0, G_OPTION_ARG_STRING, &uk_version,
       "Unikraft version, selects the network parameter convention (default: detected)", "X.Y.Z"},
      {"files", 0, 0, G_OPTION_ARG_FILENAME, &files,
       "Directory shared with the guest as fs0 (default: the image's files/)", "DIR"},
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir,
       "Image cache and instance state (default /var/lib/oakuk/run, or $XDG_RUNTIME_DIR/oakuk/run)", "DIR"},
      {"subnet", 0, 0, G_OPTION_ARG_STRING, &subnet,
       "Subnet of the local bridge (default " OAKUK_RUN_DEFAULT_SUBNET ")", "CIDR"},
      {"name", 0, 0, G_OPTION_ARG_STRING, &name,
       "Instance name, 1-64 of A-Z a-z 0-9 . _ - (default run-<random>)", "NAME"},
      {"net", 0, 0, G_OPTION_ARG_STRING, &net,
       "direct (the guest owns the instance IP, default) or nat (guest 192.168.1.2 behind DNAT)", "MODE"},
      {"ready-port", 0, 0, G_OPTION_ARG_STRING, &ready_port,
       "Guest TCP port that answers once the guest is ready (default: the first -p's guest port; 0: none)",
       "PORT"},
      {"ready-serial", 0, 0, G_OPTION_ARG_STRING, &ready_serial,
       "Text the guest prints on its console once it is ready", "TEXT"},
      {"ready-timeout", 0, 0, G_OPTION_ARG_STRING, &ready_timeout,
       "Stop the guest (exit 7) when it is not ready after S seconds (default 120; 0: wait for good)", "S"},
      {"insecure-registry", 0, 0, G_OPTION_ARG_STRING, &insecure,
       "OCI registries reached over plain http, comma-separated HOST[:PORT] (default: loopback only)",
       "LIST"},
      {"username", 'u', 0, G_OPTION_ARG_STRING, &username, "OCI registry user", "USER"},
      {"password-file", 0, 0, G_OPTION_ARG_FILENAME, &password_file,
       "With --username: the registry password is the first line of FILE", "FILE"},
      {NULL, 0, 0, 0, NULL, NULL, NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("IMAGE [-- ARGS...]");
  g_option_context_set_summary(ctx, "Run a unikernel image on this machine.");
  g_option_context_set_description(ctx, summary);
  g_option_context_add_main_entries(ctx, entries, NULL);
  /* Parse a copy: GOption rearranges and frees what it consumes. */
  int pargc = sep;
  g_autofree char **pargv = g_new0(char *, sep + 1);
  memcpy(pargv, argv, sizeof(char *) * (size_t)sep);
  char **parse_v = pargv;
  g_autoptr(GError) err = NULL;
  g_autofree char *prgname = g_strdup("oakuk run");
  pargv[0] = prgname;
  if (!g_option_context_parse(ctx, &pargc, &parse_v, &err)) {
    fprintf(stderr, "oakuk run: %s (see oakuk run --help)\n", err->message);
    return OAKUK_CLI_USAGE;
  }
  if (pargc != 2) {
    fprintf(stderr, "oakuk run: %s (see oakuk run --help)\n",
            pargc < 2 ? "IMAGE is missing" : "exactly one IMAGE expected; guest arguments go after --");
    return OAKUK_CLI_USAGE;
  }
  if ((username != NULL) != (password_file != NULL)) {
    fprintf(stderr, "oakuk run: --username and --password-file go together\n");
    return OAKUK_CLI_USAGE;
  }
  g_autofree char *password = NULL;
  if (password_file && !(password = oak_read_first_line(password_file, &err))) {
    fprintf(stderr, "oakuk run: --password-file %s: %s\n", password_file, err->message);
    return OAKUK_CLI_USAGE;
  }
  OakukRunOptions o = {
      .image = parse_v[1],
      .name = name,
      .arch = arch,
      .memory_mb = OAKUK_RUN_DEFAULT_MEMORY_MB,
      .vcpus = 1,
      .ports = ports,
      .allow_emulation = allow_emulation,
      .flavor = flavor,
      .uk_version = uk_version,
      .files_dir = files,
      .state_dir = state_dir,
      .subnet = subnet ? subnet : OAKUK_RUN_DEFAULT_SUBNET,
      .net_nat = net != NULL && strcmp(net, "nat") == 0,
      .args = sep < argc ? argv + sep + 1 : NULL,
      .ready_port = -1,
      .ready_serial = ready_serial,
      .ready_timeout_s = OAKUK_RUN_DEFAULT_READY_TIMEOUT_S,
      .insecure_registries = insecure,
      .username = username,
      .password = password,
      .detach = detach,
  };
  if (!values_ok(&o, arch, files, subnet))
    return OAKUK_CLI_USAGE;
  int64_t v;
  if (memory) {
    if (!parse_number("--memory", memory, 16, 1024 * 1024, &v))
      return OAKUK_CLI_USAGE;
    o.memory_mb = v;
  }
  if (vcpus) {
    if (!parse_number("--vcpus", vcpus, 1, 256, &v))
      return OAKUK_CLI_USAGE;
    o.vcpus = (int32_t)v;
  }
  if (ready_port) {
    guint64 p = 0;
    if (!g_ascii_string_to_unsigned(ready_port, 10, 0, 65535, &p, NULL)) {
      fprintf(stderr, "oakuk run: --ready-port \"%s\": expected a port 0..65535\n", ready_port);
      return OAKUK_CLI_USAGE;
    }
    o.ready_port = (int32_t)p;
  }
  if (ready_timeout) {
    guint64 t = 0;
    if (!g_ascii_string_to_unsigned(ready_timeout, 10, 0, 86400, &t, NULL)) {
      fprintf(stderr, "oakuk run: --ready-timeout \"%s\": expected seconds 0..86400\n", ready_timeout);
      return OAKUK_CLI_USAGE;
    }
    o.ready_timeout_s = (int64_t)t;
  }
  if (ready_serial && (!*ready_serial || strlen(ready_serial) > 256)) {
    fprintf(stderr, "oakuk run: --ready-serial: expected 1 to 256 characters\n");
    return OAKUK_CLI_USAGE;
  }
  if (flavor && strcmp(flavor, "unikraft") != 0 && strcmp(flavor, "linux") != 0) {
    fprintf(stderr, "oakuk run: --flavor \"%s\": expected unikraft or linux\n", flavor);
    return OAKUK_CLI_USAGE;
  }
  if (net && strcmp(net, "direct") != 0 && strcmp(net, "nat") != 0) {
    fprintf(stderr, "oakuk run: --net \"%s\": expected direct or nat\n", net);
    return OAKUK_CLI_USAGE;
  }
  return oakuk_run_session(&o);
}
