/* `oakuk run`: argument parsing only; run-session.c does the work. */
#include "client.h"
#include "oakuk-cli.h"
#include "run-session.h"

#include <stdio.h>
#include <string.h>

static const char summary[] =
    "Fetches IMAGE (a URL, a local Oakestra tar(.gz) or a bare kernel file, an OCI reference\n"
    "REGISTRY/NAME:TAG or NAME@sha256:..., or oci-archive:PATH|URL, whose platform for --arch or\n"
    "this machine is run), gives it a network namespace on the local bridge, runs it with QEMU in\n"
    "the foreground and shows its console.\n"
    "Ctrl-C stops the guest and removes everything the run made. ARGS after -- go to the guest.\n"
    "\n"
    "The guest is ready when it answers on the guest side of the first TCP -p mapping (or\n"
    "--ready-port), and/or shows --ready-serial TEXT on its console.\n"
    "\n"
    "Exit status: 0 when stopped by a signal or when the guest powered off cleanly, 1 on errors,\n"
    "2 on a bad command line, 3 when the guest crashed, was killed or failed to start (its last\n"
    "console lines are printed), 7 when it was not ready within --ready-timeout (it is stopped).";

/* "--memory 128", positive, at most max. */
static gboolean parse_positive(const char *opt, const char *text, int64_t max, int64_t *out) {
  guint64 v = 0;
  if (!text || !g_ascii_string_to_unsigned(text, 10, 1, (guint64)max, &v, NULL)) {
    fprintf(stderr, "oakuk run: %s \"%s\": expected a number 1..%" G_GINT64_FORMAT "\n", opt,
            text ? text : "", max);
    return FALSE;
  }
  *out = (int64_t)v;
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
  gboolean allow_emulation = FALSE;
  GOptionEntry entries[] = {
      {"arch", 0, 0, G_OPTION_ARG_STRING, &arch, "Guest architecture (amd64, arm64; default: the kernel's)",
       "A"},
      {"memory", 'm', 0, G_OPTION_ARG_STRING, &memory, "Guest memory in MB (default 128)", "MB"},
      {"vcpus", 0, 0, G_OPTION_ARG_STRING, &vcpus, "Virtual CPUs (default 1)", "N"},
      {"port", 'p', 0, G_OPTION_ARG_STRING_ARRAY, &ports,
       "Map 127.0.0.1/node port HOST to the guest's GUEST (repeatable)", "HOST:GUEST[/tcp|udp]"},
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
      {"name", 0, 0, G_OPTION_ARG_STRING, &name, "Instance name (default run-<random>)", "NAME"},
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
  };
  int64_t v;
  if (memory) {
    if (!parse_positive("--memory", memory, 1024 * 1024, &v))
      return OAKUK_CLI_USAGE;
    o.memory_mb = v;
  }
  if (vcpus) {
    if (!parse_positive("--vcpus", vcpus, 256, &v))
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
