/* `oakuk-cluster join ROOT_URL TOKEN` and `oakuk-node join CLUSTER_URL TOKEN` (docs/deploy.md):
 * checks the URL and the token, writes the token into the state directory (0600) and a config file
 * naming it, then starts the daemon: through systemd when systemd runs the machine, else in the
 * foreground. Join writes only what the daemon's config keys already read: a daemon started by
 * hand with --config FILE behaves the same. */
#include "join.h"
#include "daemon-common.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef OAKUK_SYSCONFDIR
#define OAKUK_SYSCONFDIR "/etc"
#endif

#define JOIN_TOKEN_PREFIX "oakuk1."
#define JOIN_FINGERPRINT_LEN 64
#define JOIN_TOKEN_FILE "join-token"
#define JOIN_NAME_MAX 63

typedef struct {
  char *name, *config, *state_dir;
  gboolean no_start, force, insecure;
  char **rest;
  mode_t umask; /* the caller's, for the daemon started in the foreground */
} JoinArgs;

static void join_args_clear(JoinArgs *a) {
  g_clear_pointer(&a->name, g_free);
  g_clear_pointer(&a->config, g_free);
  g_clear_pointer(&a->state_dir, g_free);
  g_clear_pointer(&a->rest, g_strfreev);
}

static void step(const OdJoinKind *k, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void step(const OdJoinKind *k, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *text = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  printf("%s join: %s\n", k->program, text);
  fflush(stdout);
}

static gboolean all_hex(const char *s) {
  for (; *s; s++)
    if (!g_ascii_isxdigit(*s))
      return FALSE;
  return TRUE;
}

/* The token's CA fingerprint (lower case) in *fingerprint, NULL for a plain secret (--insecure
 * only). The token itself is a secret: no message repeats it. */
static gboolean check_token(const char *token, gboolean insecure, gboolean https, char **fingerprint,
                            GError **error) {
  *fingerprint = NULL;
  if (g_str_has_prefix(token, JOIN_TOKEN_PREFIX)) {
    g_auto(GStrv) parts = g_strsplit(token + strlen(JOIN_TOKEN_PREFIX), ".", -1);
    if (g_strv_length(parts) == 2 && strlen(parts[0]) == JOIN_FINGERPRINT_LEN && all_hex(parts[0]) &&
        *parts[1] != '\0' && all_hex(parts[1])) {
      *fingerprint = g_ascii_strdown(parts[0], -1);
      return TRUE;
    }
  } else if (insecure && !https && *token != '\0' && strlen(token) <= 256) {
    for (const char *p = token; *p; p++)
      if (!g_ascii_isgraph(*p))
        goto bad;
    return TRUE;
  }
bad:
  g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
              "TOKEN: not a join token oakuk1.<64 hex digits: the root CA's SHA-256>.<hex secret>%s",
              https ? "" : " (a plain secret only with --insecure and an http:// URL)");
  return FALSE;
}

/* A base URL: http(s)://HOST[:PORT][/], nothing else; http only with --insecure. Returns it
 * without the trailing slash. */
static char *check_url(const OdJoinKind *k, const char *text, gboolean insecure, gboolean *https,
                       GError **error) {
  g_autoptr(GUri) uri = g_uri_parse(text, G_URI_FLAGS_NONE, NULL);
  const char *scheme = uri ? g_uri_get_scheme(uri) : NULL;
  const char *path = uri ? g_uri_get_path(uri) : NULL;
  if (uri == NULL || (g_strcmp0(scheme, "https") != 0 && g_strcmp0(scheme, "http") != 0) ||
      g_uri_get_host(uri) == NULL || *g_uri_get_host(uri) == '\0' || g_uri_get_userinfo(uri) != NULL ||
      g_uri_get_query(uri) != NULL || g_uri_get_fragment(uri) != NULL || (*path && strcmp(path, "/") != 0)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s '%s': not a base URL https://HOST[:PORT]", k->url_name,
                text);
    return NULL;
  }
  *https = strcmp(scheme, "https") == 0;
  if (!*https && !insecure) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "%s '%s': plain HTTP needs --insecure (everything, the token too, would cross the network in "
                "clear)",
                k->url_name, text);
    return NULL;
  }
  return g_strndup(text, strlen(text) - (*path ? 1 : 0));
}

static gboolean check_name(const char *name, GError **error) {
  gsize len = strlen(name);
  gboolean ok = len > 0 && len <= JOIN_NAME_MAX && g_ascii_isalnum(name[0]);
  for (const char *p = name; ok && *p; p++)
    ok = g_ascii_isalnum(*p) || strchr("-_.", *p) != NULL;
  if (!ok)
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "--name '%s': 1 to %d letters, digits, '-', '_' or '.', starting with a letter or digit",
                name, JOIN_NAME_MAX);
  return ok;
}

static gboolean read_token(const char *arg, char **out, GError **error) {
  if (arg[0] != '@') {
    *out = g_strstrip(g_strdup(arg));
    return TRUE;
  }
  g_autoptr(GError) local = NULL;
  if (!g_file_get_contents(arg + 1, out, NULL, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "TOKEN file %s: %s", arg + 1, local->message);
    return FALSE;
  }
  g_strstrip(*out);
  return TRUE;
}

/* An existing config may be rewritten for the same URL (a new token), for another only with
 * --force; its other settings are kept. */
static GKeyFile *load_existing_config(const OdJoinKind *k, JoinArgs *a, const char *url, mode_t *mode,
                                      GError **error) {
  g_autoptr(GKeyFile) kf = g_key_file_new();
  GStatBuf st;
  *mode = 0644;
  if (g_stat(a->config, &st) != 0)
    return g_steal_pointer(&kf);
  /* An operator's file may hold secrets (an external broker's password): keep its mode. */
  *mode = st.st_mode & 0777;
  g_autoptr(GError) local = NULL;
  if (!g_key_file_load_from_file(kf, a->config, G_KEY_FILE_KEEP_COMMENTS, &local)) {
    if (!a->force) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s exists and cannot be read (%s); --force replaces it",
                  a->config, local->message);
      return NULL;
    }
    return g_key_file_new();
  }
  g_autofree char *old = g_key_file_get_string(kf, k->group, k->url_key, NULL);
  if (old != NULL && strcmp(old, url) != 0) {
    if (!a->force) {
      g_set_error(
          error, OD_ERROR, OD_ERROR_INVALID,
          "%s already joins %s ([%s] %s); refusing to join %s (--force replaces it, keeping its other "
          "settings)",
          a->config, old, k->group, k->url_key, url);
      return NULL;
    }
    step(k, "%s joined %s: replacing it (--force)", a->config, old);
  }
  return g_steal_pointer(&kf);
}

/* A state directory that already trusts a CA (an earlier join) cannot join another control plane
 * by changing a file: the operator removes it on purpose. */
static gboolean check_state_ca(const char *state_dir, const char *fingerprint, GError **error) {
  g_autofree char *path = g_build_filename(state_dir, "pki", "ca.crt", NULL);
  g_autofree char *pem = NULL;
  if (fingerprint == NULL || !g_file_get_contents(path, &pem, NULL, NULL))
    return TRUE;
  g_autofree char *have = od_tls_fingerprint(pem, NULL);
  if (have != NULL && strcmp(have, fingerprint) != 0) {
    g_set_error(
        error, OD_ERROR, OD_ERROR_INVALID,
        "%s trusts the CA %s, the token names the CA %s: this state belongs to another control plane; "
        "remove %s to join this one",
        path, have, fingerprint, state_dir);
    return FALSE;
  }
  return TRUE;
}

/* The parents 0755 (a unit's user must reach its directory), the directory itself 0700. */
static gboolean prepare_state_dir(const char *dir, GError **error) {
  g_autofree char *parent = g_path_get_dirname(dir);
  if (g_mkdir_with_parents(parent, 0755) != 0 || (g_mkdir(dir, 0700) != 0 && errno != EEXIST) ||
      chmod(dir, 0700) != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "state directory %s: %s", dir, g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

/* The token belongs to whoever owns the state directory: a unit's user, once systemd gave it the
 * directory (it hands over a directory's contents only when the directory's owner differs). */
static gboolean write_token(const char *state_dir, const char *path, const char *text, GError **error) {
  GStatBuf st;
  if (!od_tls_write_secret(path, text, error))
    return FALSE;
  if (g_stat(state_dir, &st) == 0 && (st.st_uid != geteuid() || st.st_gid != getegid()) &&
      chown(path, st.st_uid, st.st_gid) != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "chown %s: %s", path, g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

static gboolean write_config(const OdJoinKind *k, JoinArgs *a, GKeyFile *kf, mode_t mode, const char *url,
                             const char *token_path, GError **error) {
  g_autofree char *token_value = k->token_key_at ? g_strconcat("@", token_path, NULL) : g_strdup(token_path);
  g_key_file_set_string(kf, k->group, k->url_key, url);
  g_key_file_set_string(kf, k->group, k->token_key, token_value);
  for (const char *const *s = k->stale_keys; s && *s; s++)
    g_key_file_remove_key(kf, k->group, *s, NULL);
  if (a->name != NULL)
    g_key_file_set_string(kf, k->group, "name", a->name);
  if (a->state_dir != NULL)
    g_key_file_set_string(kf, k->group, "state_dir", a->state_dir);
  if (a->insecure)
    g_key_file_set_boolean(kf, k->group, "insecure", TRUE);
  g_autofree char *comment = g_strdup_printf(" Written by `%s join`; every key: %s/oakuk/%s.example",
                                             k->program, OAKUK_SYSCONFDIR, k->config_name);
  if (g_key_file_get_comment(kf, NULL, NULL, NULL) == NULL)
    g_key_file_set_comment(kf, NULL, NULL, comment, NULL);
  g_autofree char *dir = g_path_get_dirname(a->config);
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "config directory %s: %s", dir, g_strerror(errno));
    return FALSE;
  }
  gsize len = 0;
  g_autofree char *text = g_key_file_to_data(kf, &len, NULL);
  g_autoptr(GError) local = NULL;
  if (!g_file_set_contents_full(a->config, text, len, G_FILE_SET_CONTENTS_CONSISTENT, (int)mode, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "write %s: %s", a->config, local->message);
    return FALSE;
  }
  return TRUE;
}

static gboolean systemd_running(void) {
  return g_file_test("/run/systemd/system", G_FILE_TEST_IS_DIR);
}

static gboolean run_step(const OdJoinKind *k, const char *const *argv, GError **error) {
  g_autofree char *line = g_strjoinv(" ", (char **)argv);
  step(k, "running %s", line);
  int status = 0;
  g_autoptr(GError) local = NULL;
  if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_CHILD_INHERITS_STDIN, NULL, NULL,
                    NULL, NULL, &status, &local) ||
      !g_spawn_check_wait_status(status, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "%s: %s", line, local->message);
    return FALSE;
  }
  return TRUE;
}

static int start_daemon(const OdJoinKind *k, JoinArgs *a, const char *unit) {
  g_autoptr(GError) error = NULL;
  if (a->no_start) {
    step(k, "not started (--no-start); start it with `systemctl enable --now %s` or `%s --config %s`", unit,
         k->program, a->config);
    return 0;
  }
  if (systemd_running()) {
    const char *sysusers[] = {"systemd-sysusers", NULL};
    const char *reload[] = {"systemctl", "daemon-reload", NULL};
    const char *enable[] = {"systemctl", "enable", "--now", unit, NULL};
    if ((k->system_user && !run_step(k, sysusers, &error)) || !run_step(k, reload, &error) ||
        !run_step(k, enable, &error)) {
      fprintf(stderr, "%s join: %s (see journalctl -u %s)\n", k->program, error->message, unit);
      return 1;
    }
    step(k, "%s is running; follow it with `journalctl -u %s -f`", unit, unit);
    return 0;
  }
  step(k, "systemd does not run this machine: starting %s --config %s in the foreground", k->program,
       a->config);
  const char *argv[] = {k->program, "--config", a->config, NULL};
  umask(a->umask);
  execv("/proc/self/exe", (char **)argv);
  fprintf(stderr, "%s join: exec %s: %s\n", k->program, k->program, g_strerror(errno));
  return 1;
}

/* With systemd the unit reads the default config and state directory: other paths would be
 * written and then not used. */
static gboolean check_unit_paths(const OdJoinKind *k, JoinArgs *a, const char *default_config,
                                 const char *unit, GError **error) {
  if (a->no_start || !systemd_running())
    return TRUE;
  const char *what = strcmp(a->config, default_config) != 0                            ? "--config"
                     : a->state_dir && strcmp(a->state_dir, k->default_state_dir) != 0 ? "--state-dir"
                                                                                       : NULL;
  if (what == NULL)
    return TRUE;
  g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
              "%s: the %s unit reads %s and keeps its state in %s; with other paths add --no-start and run "
              "%s yourself",
              what, unit, default_config, k->default_state_dir, k->program);
  return FALSE;
}

static int join(const OdJoinKind *k, JoinArgs *a, const char *url_arg, const char *token_arg) {
  g_autoptr(GError) error = NULL;
  g_autofree char *default_config = g_build_filename(OAKUK_SYSCONFDIR, "oakuk", k->config_name, NULL);
  g_autofree char *unit = g_strconcat(k->program, ".service", NULL);
  g_autofree char *url = NULL, *token = NULL, *fingerprint = NULL, *token_path = NULL, *token_line = NULL;
  g_autoptr(GKeyFile) kf = NULL;
  gboolean https = FALSE;
  mode_t mode = 0644;
  if (a->config == NULL)
    a->config = g_strdup(default_config);
  const char *state_dir = a->state_dir ? a->state_dir : k->default_state_dir;
  if ((url = check_url(k, url_arg, a->insecure, &https, &error)) == NULL ||
      !read_token(token_arg, &token, &error) ||
      !check_token(token, a->insecure, https, &fingerprint, &error) ||
      (a->name != NULL && !check_name(a->name, &error)) || !g_path_is_absolute(a->config) ||
      !g_path_is_absolute(state_dir) || !check_unit_paths(k, a, default_config, unit, &error) ||
      !check_state_ca(state_dir, fingerprint, &error))
    goto fail;
  step(k, "%s is a valid URL; the token is well formed%s%s", url, fingerprint ? " and pins the root CA " : "",
       fingerprint ? fingerprint : " (a plain secret: --insecure)");
  kf = load_existing_config(k, a, url, &mode, &error);
  if (kf == NULL || !prepare_state_dir(state_dir, &error))
    goto fail;
  step(k, "state directory %s (0700)", state_dir);
  token_path = g_build_filename(state_dir, JOIN_TOKEN_FILE, NULL);
  token_line = g_strconcat(token, "\n", NULL);
  if (!write_token(state_dir, token_path, token_line, &error))
    goto fail;
  step(k, "wrote the join token to %s (0600)", token_path);
  if (!write_config(k, a, kf, mode, url, token_path, &error))
    goto fail;
  step(k, "wrote %s (%04o): [%s] %s = %s, %s = %s%s%s%s", a->config, (unsigned)mode, k->group, k->url_key,
       url, k->token_key, k->token_key_at ? "@" : "", token_path, a->name ? ", name = " : "",
       a->name ? a->name : "");
  return start_daemon(k, a, unit);
fail:
  if (error == NULL)
    g_set_error(&error, OD_ERROR, OD_ERROR_INVALID, "--config and --state-dir must be absolute paths");
  fprintf(stderr, "%s join: %s\n", k->program, error->message);
  return 1;
}

int od_join_main(const OdJoinKind *k, int argc, char **argv) {
  /* The modes join states (a config the unit's user reads, parents it traverses) are the modes
   * the files get, whatever the caller's umask. */
  JoinArgs a = {.umask = umask(022)};
  g_autofree char *state_help = g_strdup_printf("State directory (default %s)", k->default_state_dir);
  g_autofree char *config_help =
      g_strdup_printf("Configuration file to write (default %s/oakuk/%s)", OAKUK_SYSCONFDIR, k->config_name);
  const GOptionEntry entries[] = {
      {"name", 0, 0, G_OPTION_ARG_STRING, &a.name, "Name to register as (default: the host name)", "NAME"},
      {"config", 'c', 0, G_OPTION_ARG_FILENAME, &a.config, config_help, "FILE"},
      {"state-dir", 's', 0, G_OPTION_ARG_FILENAME, &a.state_dir, state_help, "DIR"},
      {"no-start", 0, 0, G_OPTION_ARG_NONE, &a.no_start, "Write the configuration only; start nothing", NULL},
      {"force", 0, 0, G_OPTION_ARG_NONE, &a.force, "Replace a configuration that joins another URL", NULL},
      {"insecure", 0, 0, G_OPTION_ARG_NONE, &a.insecure,
       "Allow an http:// URL and a plain token (everything crosses the network in clear)", NULL},
      {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_STRING_ARRAY, &a.rest, NULL, NULL},
      G_OPTION_ENTRY_NULL};
  g_autofree char *params = g_strdup_printf("%s TOKEN", k->url_name);
  g_autoptr(GOptionContext) ctx = g_option_context_new(params);
  g_autofree char *prgname = g_strdup_printf("%s join", k->program);
  g_set_prgname(prgname);
  g_autofree char *summary = g_strdup_printf(
      "Checks %s and TOKEN (oakuk1.<CA fingerprint>.<secret>, or @FILE holding it), writes the token to\n"
      "<state>/%s (0600) and a configuration naming it, makes the state directory (0700), then starts\n"
      "%s: `systemctl enable --now %s.service` when systemd runs the machine, else in the foreground.",
      k->url_name, JOIN_TOKEN_FILE, k->program, k->program);
  g_option_context_set_summary(ctx, summary);
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autoptr(GError) error = NULL;
  int rc = 2;
  if (!g_option_context_parse(ctx, &argc, &argv, &error))
    fprintf(stderr, "%s join: %s\n", k->program, error->message);
  else if (a.rest == NULL || g_strv_length(a.rest) != 2)
    fprintf(stderr, "%s join: expected %s TOKEN (see %s join --help)\n", k->program, k->url_name, k->program);
  else
    rc = join(k, &a, a.rest[0], a.rest[1]);
  join_args_clear(&a);
  return rc;
}
