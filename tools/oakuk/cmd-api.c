/* Control-plane commands that change or inspect one service: login, apply, deploy, undeploy,
 * explain, logs (the root's native API, docs/cli.md). */
#include "client.h"

#include <oakuk/oakuk.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NO_ENTRY                                                                                             \
  { NULL, 0, 0, 0, NULL, NULL, NULL }

static char *json_text(JsonBuilder *b) {
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return oak_json_text(root, FALSE);
}

/* ---- login ---- */

static char *chomp_line(char *s) {
  s[strcspn(s, "\r\n")] = '\0';
  return s;
}

/* Reads one line from fp; NULL at end of file. */
static char *read_line(FILE *fp) {
  g_autoptr(GString) s = g_string_new(NULL);
  int ch;
  while ((ch = fgetc(fp)) != EOF && ch != '\n')
    g_string_append_c(s, (char)ch);
  if (ch == EOF && s->len == 0)
    return NULL;
  return chomp_line(g_string_free(g_steal_pointer(&s), FALSE));
}

static char *get_password(const char *file, gboolean from_stdin, const char *user, const char *url,
                          int *exit_code) {
  char *pw = NULL;
  if (file != NULL) {
    g_autoptr(GError) error = NULL;
    pw = oak_read_first_line(file, &error);
    if (pw == NULL) {
      fprintf(stderr, "oakuk login: --password-file: %s\n", error->message);
      *exit_code = OAKUK_CLI_FAILED;
      return NULL;
    }
  } else if (from_stdin) {
    pw = read_line(stdin);
  } else if (isatty(STDIN_FILENO)) {
    g_autofree char *prompt = g_strdup_printf("Password for %s at %s: ", user, url);
    FILE *tty = oak_tty_open();
    if (tty != NULL) {
      pw = oak_tty_ask(tty, prompt, TRUE);
      fclose(tty);
    }
  } else {
    fprintf(stderr,
            "oakuk login: no terminal to ask the password on; use --password-stdin or --password-file\n");
    *exit_code = OAKUK_CLI_USAGE;
    return NULL;
  }
  if (pw == NULL || *pw == '\0') {
    fprintf(stderr, "oakuk login: empty password%s\n",
            from_stdin ? " on stdin"
            : file     ? " in --password-file"
                       : "");
    g_free(pw);
    *exit_code = OAKUK_CLI_USAGE;
    return NULL;
  }
  return pw;
}

/* The CA the login trusts, from --ca-file, --ca-fingerprint, the one stored for the URL, or the one
 * the server presents, confirmed on the terminal. A CA other than the stored one is refused. */
static int choose_trust(OakClient *cl, const char *ca_file, const char *ca_fp) {
  g_autofree char *stored = cl->pin.ca ? oak_tls_fingerprint(cl->pin.ca) : NULL;
  g_autofree char *given = NULL;
  g_autoptr(GTlsCertificate) given_ca = NULL;
  if (ca_file != NULL) {
    g_autoptr(GError) error = NULL;
    given_ca = oak_ca_load(ca_file, &error);
    if (given_ca == NULL) {
      fprintf(stderr, "oakuk login: --ca-file %s\n", error->message);
      return OAKUK_CLI_USAGE;
    }
    given = oak_tls_fingerprint(given_ca);
  } else if (ca_fp != NULL && (given = oak_fingerprint_normalize(ca_fp)) == NULL) {
    fprintf(stderr, "oakuk login: --ca-fingerprint \"%s\" is not a SHA-256 fingerprint (64 hex digits)\n",
            ca_fp);
    return OAKUK_CLI_USAGE;
  }
  if (stored != NULL) {
    if (given != NULL && strcmp(given, stored) != 0) {
      fprintf(stderr,
              "oakuk login: refused: the CA trusted for %s is %s (%s), not %s; if its CA really changed, "
              "remove %s and log in again\n",
              cl->url, stored, cl->ca_path, given, cl->ca_path);
      return OAKUK_CLI_AUTH;
    }
    return OAKUK_CLI_OK; /* pin.ca: the stored one */
  }
  if (given_ca != NULL) {
    cl->pin.ca = g_steal_pointer(&given_ca);
    return OAKUK_CLI_OK;
  }
  if (given != NULL) {
    cl->pin.fingerprint = g_steal_pointer(&given);
    return OAKUK_CLI_OK;
  }
  FILE *tty = oak_tty_open();
  if (tty == NULL) {
    fprintf(
        stderr,
        "oakuk login: no CA is stored for %s and there is no terminal to confirm the one it presents; give "
        "--ca-fingerprint FP or --ca-file FILE (the root's <state>/pki/ca.crt)\n",
        cl->url);
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(GTlsCertificate) presented = oak_client_probe_ca(cl, &rc);
  if (presented == NULL) {
    fclose(tty);
    return rc;
  }
  g_autofree char *fp = oak_tls_fingerprint(presented);
  g_autofree char *subject = NULL;
  g_object_get(presented, "subject-name", &subject, NULL);
  fprintf(tty,
          "The root at %s presents a certificate from the CA\n  %s\nSHA-256 fingerprint %s\n"
          "Compare it with the fingerprint in a join token (oakuk1.<fingerprint>.<secret>) or, on the root,\n"
          "openssl x509 -in <state>/pki/ca.crt -outform DER | sha256sum\n",
          cl->url, subject ? subject : "(no name)", fp);
  g_autofree char *answer = oak_tty_ask(tty, "Trust it? [y/N] ", FALSE);
  fclose(tty);
  if (answer == NULL ||
      (g_ascii_strcasecmp(g_strstrip(answer), "y") != 0 && g_ascii_strcasecmp(answer, "yes") != 0)) {
    fprintf(stderr, "oakuk login: the CA %s of %s is not trusted; nothing was stored\n", fp, cl->url);
    return OAKUK_CLI_FAILED;
  }
  cl->pin.fingerprint = g_steal_pointer(&fp);
  return OAKUK_CLI_OK;
}

/* After a successful login: the CA the exchange was verified with is kept for the later commands. */
static gboolean keep_ca(OakClient *cl) {
  if (cl->ca_stored || cl->ca_path == NULL)
    return TRUE;
  GTlsCertificate *ca = cl->pin.ca ? cl->pin.ca : cl->pin.found;
  g_autoptr(GError) error = NULL;
  if (ca == NULL || !oak_ca_store(cl->ca_path, ca, &error)) {
    fprintf(stderr, "oakuk login: store the CA: %s\n", error ? error->message : "no CA was found");
    return FALSE;
  }
  return TRUE;
}

static void print_login(OakClient *cl, const char *username, gboolean json) {
  g_autofree char *fp = NULL;
  GTlsCertificate *ca = cl->pin.ca ? cl->pin.ca : cl->pin.found;
  if (ca != NULL)
    fp = oak_tls_fingerprint(ca);
  if (!json) {
    printf("logged in to %s as %s (context %s, now the current one; credentials in %s)\n", cl->url, username,
           cl->context, cl->cred_path);
    if (fp != NULL)
      printf("the root's CA %s is pinned in %s\n", fp, cl->ca_path);
    return;
  }
  g_autoptr(JsonObject) out = json_object_new();
  json_object_set_string_member(out, "url", cl->url);
  json_object_set_string_member(out, "username", username);
  json_object_set_string_member(out, "context", cl->context);
  if (fp != NULL) {
    json_object_set_string_member(out, "ca_fingerprint", fp);
    json_object_set_string_member(out, "ca_file", cl->ca_path);
  }
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), out);
  oak_print_json(node);
}

static gboolean is_http_url(const char *s) {
  g_autoptr(GUri) uri = g_uri_parse(s, G_URI_FLAGS_NONE, NULL);
  return uri != NULL &&
         (g_strcmp0(g_uri_get_scheme(uri), "http") == 0 || g_strcmp0(g_uri_get_scheme(uri), "https") == 0);
}

int oakuk_cmd_login(int argc, char **argv) {
  g_autofree char *url = NULL, *user = NULL, *pwfile = NULL, *ca_file = NULL, *ca_fp = NULL;
  gboolean json = FALSE, from_stdin = FALSE, insecure = FALSE;
  GOptionEntry entries[] = {
      OAKUK_CLIENT_OPTIONS(url, json),
      {"username", 'u', 0, G_OPTION_ARG_STRING, &user, "User name (default Admin)", "NAME"},
      {"password-file", 0, 0, G_OPTION_ARG_FILENAME, &pwfile, "Read the password from the first line of FILE",
       "FILE"},
      {"password-stdin", 0, 0, G_OPTION_ARG_NONE, &from_stdin,
       "Read the password from the first line of stdin", NULL},
      {"ca-fingerprint", 0, 0, G_OPTION_ARG_STRING, &ca_fp,
       "Trust the root's CA with this SHA-256 fingerprint (hex, colons allowed)", "FP"},
      {"ca-file", 0, 0, G_OPTION_ARG_FILENAME, &ca_file,
       "Trust the CA in FILE (the root's <state>/pki/ca.crt)", "FILE"},
      {"insecure", 0, 0, G_OPTION_ARG_NONE, &insecure,
       "Allow a plain http:// URL (a root run with --insecure)", NULL},
      NO_ENTRY,
  };
  if (!oak_parse(
          "login", "[URL]",
          "Log in to the root and store the tokens (mode 0600) for the other commands. An https root's CA "
          "is pinned at the first login (--ca-file, --ca-fingerprint, or confirmed on the terminal) and "
          "trusted alone from then on.",
          entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  if (argc > 2 || (argc == 2 && !is_http_url(argv[1]))) {
    fprintf(stderr, "oakuk login: %s\n",
            argc > 2 ? "at most one argument, the root's URL, is expected"
                     : "the argument is not an http(s) URL (the password is never an argument)");
    return OAKUK_CLI_USAGE;
  }
  const char *problem = pwfile && from_stdin ? "--password-file and --password-stdin exclude each other"
                        : ca_file && ca_fp   ? "--ca-file and --ca-fingerprint exclude each other"
                        : argc == 2 && url && strcmp(argv[1], url) != 0
                            ? "the URL is given twice (argument and --url)"
                            : NULL;
  if (problem != NULL) {
    fprintf(stderr, "oakuk login: %s\n", problem);
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = oak_client_new("login", argc == 2 ? argv[1] : url, json, FALSE, &rc);
  if (cl == NULL)
    return rc;
  if (cl->ca_path == NULL) { /* http */
    if (!insecure) {
      fprintf(stderr,
              "oakuk login: %s is plain HTTP: the password and tokens would cross the network readable; use "
              "https, or --insecure if the root runs --insecure on purpose\n",
              cl->url);
      return OAKUK_CLI_USAGE;
    }
    fprintf(stderr, "oakuk login: warning: %s is plain HTTP (--insecure)\n", cl->url);
  } else if ((rc = choose_trust(cl, ca_file, ca_fp)) != OAKUK_CLI_OK) {
    return rc;
  }
  const char *username = user ? user : "Admin";
  g_autofree char *pw = get_password(pwfile, from_stdin, username, cl->url, &rc);
  if (pw == NULL)
    return rc;
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "username");
  json_builder_add_string_value(b, username);
  json_builder_set_member_name(b, "password");
  json_builder_add_string_value(b, pw);
  json_builder_end_object(b);
  g_autofree char *body = json_text(b);
  memset(pw, 0, strlen(pw));
  g_autoptr(JsonNode) n = oak_request_anon(cl, "POST", "/api/auth/login", body, NULL, &rc);
  if (n == NULL)
    return rc;
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
  if (oak_str(o, "token", NULL) == NULL || oak_str(o, "refresh_token", NULL) == NULL) {
    fprintf(stderr, "oakuk login: the root's answer has no token/refresh_token\n");
    return OAKUK_CLI_FAILED;
  }
  if (!keep_ca(cl))
    return OAKUK_CLI_FAILED;
  g_free(cl->token);
  g_free(cl->refresh_token);
  g_free(cl->username);
  cl->token = g_strdup(oak_str(o, "token", NULL));
  cl->refresh_token = g_strdup(oak_str(o, "refresh_token", NULL));
  cl->username = g_strdup(username);
  cl->insecure = cl->ca_path == NULL;
  g_autoptr(GError) error = NULL;
  if (!oak_client_save(cl, TRUE, &error)) {
    fprintf(stderr, "oakuk login: store credentials: %s\n", error->message);
    return OAKUK_CLI_FAILED;
  }
  print_login(cl, username, json);
  return OAKUK_CLI_OK;
}

/* ---- apply ---- */

/* Validates path locally; prints every problem as "path: message". Its warnings ("path: message")
 * go to warnings: printed when the root's answer does not carry its own. */
static int validate_descriptor(const char *path, GPtrArray *warnings) {
  oakuk_error *err = NULL;
  oakuk_descriptor *d = oakuk_descriptor_parse_file(path, &err);
  if (d != NULL) {
    for (size_t i = 0; i < oakuk_descriptor_warning_count(d); i++)
      g_ptr_array_add(warnings, g_strdup(oakuk_descriptor_warning(d, i)));
    oakuk_descriptor_unref(d);
    return OAKUK_CLI_OK;
  }
  int rc = oakuk_error_code(err) == OAKUK_EIO ? OAKUK_CLI_FAILED : OAKUK_CLI_INVALID;
  size_t n = oakuk_error_item_count(err);
  if (n == 0) {
    const char *p = oakuk_error_path(err);
    fprintf(stderr, "%s%s%s\n", p && *p ? p : "", p && *p ? ": " : "", oakuk_error_message(err));
  }
  for (size_t i = 0; i < n; i++) {
    const char *p = oakuk_error_item_path(err, i);
    const char *m = oakuk_error_item_message(err, i);
    fprintf(stderr, "%s: %s\n", p && *p ? p : "(document)", m ? m : "");
  }
  if (rc == OAKUK_CLI_INVALID)
    fprintf(stderr, "oakuk apply: %s: invalid descriptor (%zu problem%s); nothing was sent\n", path,
            MAX(n, 1), MAX(n, 1) == 1 ? "" : "s");
  oakuk_error_free(err);
  return rc;
}

/* Prints the registration's warnings as "warning: PATH: MESSAGE" on stderr: the root's
 * (answer.warnings, docs/api.md), or the local parse's when the answer has none (an older root). */
static void print_apply_warnings(JsonNode *answer, GPtrArray *local) {
  JsonObject *o = answer && JSON_NODE_HOLDS_OBJECT(answer) ? json_node_get_object(answer) : NULL;
  JsonNode *wn = o ? json_object_get_member(o, "warnings") : NULL;
  if (wn == NULL || !JSON_NODE_HOLDS_ARRAY(wn)) {
    for (guint i = 0; i < local->len; i++)
      fprintf(stderr, "warning: %s\n", (const char *)local->pdata[i]);
    return;
  }
  JsonArray *wa = json_node_get_array(wn);
  for (guint i = 0; i < json_array_get_length(wa); i++) {
    JsonNode *e = json_array_get_element(wa, i);
    JsonObject *w = JSON_NODE_HOLDS_OBJECT(e) ? json_node_get_object(e) : NULL;
    fprintf(stderr, "warning: %s: %s\n", oak_str(w, "path", ""), oak_str(w, "message", ""));
  }
}

/* One service line of apply: "  service JOB ID: what happened". */
static void print_change(JsonObject *c) {
  const char *change = oak_str(c, "change", "?");
  printf("  service %s %s: ", oak_str(c, "job_name", ""), oak_str(c, "id", ""));
  if (strcmp(change, "updated") == 0)
    printf("updated to revision %" G_GINT64_FORMAT " (was %" G_GINT64_FORMAT ")\n", oak_int(c, "revision", 0),
           oak_int(c, "previous_revision", 0));
  else if (strcmp(change, "unchanged") == 0)
    printf("unchanged (revision %" G_GINT64_FORMAT ")\n", oak_int(c, "revision", 0));
  else if (strcmp(change, "kept") == 0)
    printf("kept: not in the file (`oakuk delete service %s` removes it)\n", oak_str(c, "job_name", ""));
  else
    printf("%s\n", change);
}

int oakuk_cmd_apply(int argc, char **argv) {
  g_autofree char *url = NULL;
  gboolean json = FALSE, no_rollout = FALSE;
  gint timeout = 300;
  GOptionEntry entries[] = {
      OAKUK_CLIENT_OPTIONS(url, json),
      {"timeout", 0, 0, G_OPTION_ARG_INT, &timeout,
       "Roll back when a new instance is not running and ready after S seconds (default 300)", "S"},
      {"no-rollout", 0, 0, G_OPTION_ARG_NONE, &no_rollout,
       "Only store the changed services; their instances keep running the revision they run", NULL},
      NO_ENTRY,
  };
  if (!oak_parse(
          "apply", "SLA.json",
          "Create or update the applications of an SLA descriptor (validated locally first). A changed "
          "service gets a new revision and its instances are replaced one at a time, each after its "
          "replacement is running and ready; a replacement that fails or is not ready in time rolls the "
          "service back.",
          entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  if (argc != 2 || timeout <= 0) {
    fprintf(stderr, "oakuk apply: %s\n",
            argc != 2 ? "exactly one descriptor file expected" : "--timeout must be positive");
    return OAKUK_CLI_USAGE;
  }
  g_autoptr(GPtrArray) warnings = g_ptr_array_new_with_free_func(g_free);
  int rc = validate_descriptor(argv[1], warnings);
  if (rc != OAKUK_CLI_OK)
    return rc;
  g_autoptr(OakClient) cl = oak_client_new("apply", url, json, TRUE, &rc);
  if (cl == NULL)
    return rc;
  g_autofree char *text = NULL;
  g_autoptr(GError) error = NULL;
  if (!g_file_get_contents(argv[1], &text, NULL, &error)) {
    fprintf(stderr, "oakuk apply: %s\n", error->message);
    return OAKUK_CLI_FAILED;
  }
  g_autoptr(JsonNode) n = oak_request(cl, "PUT", "/api/v1/applications", text, NULL, &rc);
  print_apply_warnings(n, warnings);
  if (n == NULL)
    return rc;
  JsonArray *apps = oak_array_member(oak_object_of(n), "applications");
  g_autoptr(JsonArray) out = json_array_new();
  rc = OAKUK_CLI_OK;
  for (guint i = 0; apps != NULL && i < json_array_get_length(apps); i++) {
    JsonObject *app = json_array_get_object_element(apps, i);
    JsonObject *entry = json_object_new();
    json_object_set_string_member(entry, "id", oak_str(app, "applicationID", ""));
    json_object_set_string_member(entry, "name", oak_str(app, "application_name", ""));
    json_object_set_string_member(entry, "namespace", oak_str(app, "application_namespace", ""));
    json_object_set_string_member(entry, "change", oak_str(app, "change", ""));
    json_array_add_object_element(out, entry);
    if (!json)
      printf("application %s.%s %s: %s\n", oak_str(app, "application_name", ""),
             oak_str(app, "application_namespace", ""), oak_str(app, "applicationID", ""),
             oak_str(app, "change", ""));
    JsonArray *changes = oak_array_member(app, "services");
    JsonArray *list = json_array_new();
    json_object_set_array_member(entry, "services", list);
    for (guint j = 0; changes != NULL && j < json_array_get_length(changes); j++) {
      JsonObject *c = json_array_get_object_element(changes, j);
      json_array_add_object_element(list, json_object_ref(c));
      if (!json) {
        print_change(c);
        fflush(stdout);
      }
    }
    /* Rollouts after every line is printed: services that are not new and in the file (an unchanged
     * one too: a rollout an earlier apply left unfinished goes on). */
    for (guint j = 0; !no_rollout && changes != NULL && j < json_array_get_length(changes); j++) {
      JsonObject *c = json_array_get_object_element(changes, j);
      const char *change = oak_str(c, "change", "");
      if (strcmp(change, "updated") != 0 && strcmp(change, "unchanged") != 0)
        continue;
      JsonObject *report = json_object_new();
      json_object_set_object_member(c, "rollout", report);
      if (oak_rollout(cl, oak_str(c, "id", ""), oak_str(c, "job_name", ""), timeout, report) != OAKUK_CLI_OK)
        rc = OAKUK_CLI_FAILED;
    }
  }
  if (json)
    oak_print_json_list("applications", out);
  return rc;
}

/* ---- explain ---- */

static void print_lines(JsonArray *lines, const char *indent) {
  for (guint i = 0; lines != NULL && i < json_array_get_length(lines); i++) {
    JsonNode *e = json_array_get_element(lines, i);
    if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING)
      printf("%s%s\n", indent, json_node_get_string(e));
  }
}

/* Prints the root's cluster-level explanation and each cluster's node-level one. */
static int print_explanation(OakClient *cl, JsonObject *service, gboolean json) {
  int rc = OAKUK_CLI_FAILED;
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s/explain", oak_service_id(service));
  g_autoptr(JsonNode) n = oak_request(cl, "GET", path, NULL, NULL, &rc);
  if (n == NULL)
    return rc;
  if (json) {
    oak_print_json(n);
    return OAKUK_CLI_OK;
  }
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
  printf("%s: cluster selection at the root:\n", oak_str(service, "job_name", "?"));
  JsonArray *lines = oak_array_member(o, "lines");
  if (lines == NULL || json_array_get_length(lines) == 0)
    printf("  (no scheduling has happened yet)\n");
  print_lines(lines, "  ");
  JsonArray *insts = oak_array_member(o, "instances");
  for (guint i = 0; insts != NULL && i < json_array_get_length(insts); i++) {
    JsonObject *in = json_array_get_object_element(insts, i);
    const char *detail = oak_str(in, "status_detail", "");
    printf("instance %" G_GINT64_FORMAT ": %s%s%s%s%s\n", oak_int(in, "instance_number", 0),
           oak_str(in, "status", "?"), *oak_str(in, "cluster_name", "") ? " on cluster " : "",
           oak_str(in, "cluster_name", ""), *detail ? ": " : "", detail);
    JsonNode *rf = json_object_get_member(in, "cluster_refusals");
    if (rf != NULL && JSON_NODE_HOLDS_OBJECT(rf)) {
      g_autoptr(GList) ids = json_object_get_members(json_node_get_object(rf));
      for (GList *l = ids; l != NULL; l = l->next)
        printf("  refused by cluster %s: %s\n", (char *)l->data,
               oak_str(json_node_get_object(rf), l->data, ""));
    }
  }
  JsonArray *cls = oak_array_member(o, "clusters");
  for (guint i = 0; cls != NULL && i < json_array_get_length(cls); i++) {
    JsonObject *c = json_array_get_object_element(cls, i);
    if (oak_str(c, "error", NULL) != NULL) {
      printf("cluster %s: node selection unknown (%s)\n", oak_str(c, "cluster_name", "?"),
             oak_str(c, "error", ""));
      continue;
    }
    printf("cluster %s: node selection for instance %" G_GINT64_FORMAT ":\n", oak_str(c, "cluster_name", "?"),
           oak_int(c, "instance", 0));
    print_lines(oak_array_member(c, "lines"), "  ");
  }
  return OAKUK_CLI_OK;
}

/* ---- describe ---- */

/* A descriptor value as text: strings as they are, anything else as compact JSON. */
static char *value_text(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  if (n == NULL || JSON_NODE_HOLDS_NULL(n))
    return NULL;
  if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
    return *json_node_get_string(n) ? g_strdup(json_node_get_string(n)) : NULL;
  return oak_json_text(n, FALSE);
}

static void print_service_fields(JsonObject *s) {
  static const struct {
    const char *label, *key;
  } fields[] = {{"Virtualization", "virtualization"},
                {"Arch", "arch"},
                {"Code", "code"},
                {"Cmd", "cmd"},
                {"Memory (MB)", "memory"},
                {"vCPUs", "vcpus"},
                {"Port", "port"},
                {"Addresses", "addresses"},
                {"Restart", "restart"},
                {"Emulation", "emulation"},
                {"Unikernel", "unikernel"},
                {"Readiness", "readiness"},
                {"Constraints", "constraints"}};
  printf("%-16s %s\n", "Service:", oak_str(s, "job_name", "?"));
  printf("%-16s %s\n", "ID:", oak_service_id(s));
  printf("%-16s %s.%s (%s)\n", "Application:", oak_str(s, "app_name", "?"), oak_str(s, "app_ns", "?"),
         oak_str(s, "applicationID", "?"));
  printf("%-16s %" G_GINT64_FORMAT "\n", "Revision:", oak_int(s, "revision", 1));
  for (gsize k = 0; k < G_N_ELEMENTS(fields); k++) {
    g_autofree char *v = value_text(s, fields[k].key);
    if (v != NULL && strcmp(v, "[]") != 0 && strcmp(v, "{}") != 0) {
      g_autofree char *label = g_strdup_printf("%s:", fields[k].label);
      printf("%-16s %s\n", label, v);
    }
  }
}

static void print_instance_table(JsonObject *s) {
  static const char *const headers[] = {"INSTANCE", "REV",  "CLUSTER", "NODE",   "STATUS",
                                        "READY",    "CPU%", "MEM-MB",  "DETAIL", NULL};
  JsonArray *insts = oak_array_member(s, "instance_list");
  printf("\nInstances:%s\n", insts == NULL || json_array_get_length(insts) == 0 ? " none" : "");
  if (insts == NULL || json_array_get_length(insts) == 0)
    return;
  g_autoptr(OakTable) t = oak_table_new(headers);
  for (guint i = 0; i < json_array_get_length(insts); i++) {
    JsonObject *in = json_array_get_object_element(insts, i);
    g_autofree char *n = g_strdup_printf("%" G_GINT64_FORMAT, oak_int(in, "instance_number", 0));
    g_autofree char *rev = g_strdup_printf("%" G_GINT64_FORMAT, oak_int(in, "revision", 1));
    g_autofree char *cpu = g_strdup_printf("%.1f", oak_num(in, "cpu", 0));
    g_autofree char *mem = g_strdup_printf("%.1f", oak_num(in, "memory", 0));
    const char *cells[] = {n,
                           rev,
                           oak_str(in, "cluster_name", ""),
                           oak_str(in, "node_id", ""),
                           oak_str(in, "status", ""),
                           oak_bool(in, "ready", FALSE) ? "yes" : "no",
                           cpu,
                           mem,
                           oak_str(in, "status_detail", "")};
    oak_table_add(t, cells);
  }
  oak_table_print(t, stdout);
}

int oakuk_cmd_describe(int argc, char **argv) {
  g_autofree char *url = NULL;
  gboolean json = FALSE;
  GOptionEntry entries[] = {OAKUK_CLIENT_OPTIONS(url, json), NO_ENTRY};
  if (!oak_parse(
          "describe", "SERVICE",
          "Show a service in full: its spec and revision, its instances (revision, where, status, readiness, "
          "CPU and memory) and why the scheduler placed or refused them.",
          entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  if (argc != 2) {
    fprintf(stderr, "oakuk describe: exactly one SERVICE expected\n");
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = NULL;
  g_autoptr(JsonObject) service = oak_client_service("describe", url, json, argv[1], &cl, &rc);
  if (service == NULL)
    return rc;
  if (json) {
    g_autofree char *path = g_strdup_printf("/api/v1/services/%s/explain", oak_service_id(service));
    g_autoptr(JsonNode) explain = oak_request(cl, "GET", path, NULL, NULL, &rc);
    if (explain == NULL)
      return rc;
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_object_member(o, "service", json_object_ref(service));
    json_object_set_member(o, "explain", json_node_ref(explain));
    g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), o);
    oak_print_json(n);
    return OAKUK_CLI_OK;
  }
  print_service_fields(service);
  print_instance_table(service);
  printf("\n");
  fflush(stdout);
  return print_explanation(cl, service, FALSE);
}

int oakuk_cmd_explain(int argc, char **argv) {
  g_autofree char *url = NULL;
  gboolean json = FALSE;
  GOptionEntry entries[] = {OAKUK_CLIENT_OPTIONS(url, json), NO_ENTRY};
  if (!oak_parse("explain", "SERVICE", "Show why the scheduler placed or refused a service's instances.",
                 entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  if (argc != 2) {
    fprintf(stderr, "oakuk explain: exactly one SERVICE expected\n");
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = NULL;
  g_autoptr(JsonObject) service = oak_client_service("explain", url, json, argv[1], &cl, &rc);
  return service ? print_explanation(cl, service, json) : rc;
}

/* ---- deploy ---- */

static gboolean status_failed(const char *status) {
  int32_t s = oakuk_instance_status_from_name(status);
  return s == OAKUK_STATUS_FAILED || s == OAKUK_STATUS_DEAD || s == OAKUK_STATUS_NO_ACTIVE_CLUSTER ||
         s == OAKUK_STATUS_NO_QUALIFIED_WORKER || s == OAKUK_STATUS_NO_WORKER_CAPACITY ||
         s == OAKUK_STATUS_UNDEPLOYED;
}

static gboolean status_running(JsonObject *in) {
  return oakuk_instance_status_from_name(oak_str(in, "status", "")) == OAKUK_STATUS_RUNNING;
}

/* What a progress line says after the status: the readiness of a running instance, then the detail. */
static char *progress_note(JsonObject *in) {
  const char *detail = oak_str(in, "status_detail", "");
  g_autofree char *ready = NULL;
  if (status_running(in) && !oak_bool(in, "ready", FALSE))
    ready = g_strdup("running, waiting for readiness");
  else if (status_running(in) && oak_int(in, "ready_ms", -1) >= 0)
    ready = g_strdup_printf("ready %" G_GINT64_FORMAT " ms after the request", oak_int(in, "ready_ms", -1));
  else if (status_running(in))
    ready = g_strdup("ready");
  if (ready == NULL)
    return g_strdup(detail);
  return *detail ? g_strdup_printf("%s; %s", ready, detail) : g_steal_pointer(&ready);
}

static void print_instance(OakClient *cl, JsonObject *in) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), in);
  if (cl->json)
    oak_print_json(node);
}

static int report_failure(OakClient *cl, JsonObject *service, JsonObject *in) {
  fprintf(stderr, "oakuk deploy: instance %" G_GINT64_FORMAT " of %s: %s%s%s\n",
          oak_int(in, "instance_number", 0), oak_str(service, "job_name", "?"), oak_str(in, "status", "?"),
          *oak_str(in, "status_detail", "") ? ": " : "", oak_str(in, "status_detail", ""));
  if (!cl->json) {
    fflush(stdout);
    print_explanation(cl, service, FALSE);
  }
  return OAKUK_CLI_FAILED;
}

/* Polls the instance every 0.5 s, printing each change of status, readiness or detail. */
static int wait_instance(OakClient *cl, JsonObject *service, gint64 n, gint64 timeout_s) {
  oak_catch_interrupts();
  gint64 start = g_get_monotonic_time();
  g_autofree char *last = NULL;
  const char *sid = oak_service_id(service);
  while (TRUE) {
    int rc = OAKUK_CLI_FAILED;
    g_autoptr(JsonObject) in = oak_fetch_instance(cl, sid, n, &rc);
    if (in == NULL && rc != 0)
      return rc;
    double t = (double)(g_get_monotonic_time() - start) / G_USEC_PER_SEC;
    if (in == NULL) {
      fprintf(stderr, "oakuk deploy: instance %" G_GINT64_FORMAT " of %s is gone (undeployed)\n", n,
              oak_str(service, "job_name", "?"));
      return OAKUK_CLI_FAILED;
    }
    const char *status = oak_str(in, "status", "?");
    g_autofree char *note = progress_note(in);
    g_autofree char *now = g_strdup_printf("%s\n%s", status, note);
    if (g_strcmp0(now, last) != 0 && !cl->json) {
      const char *where = oak_str(in, "node_id", "");
      printf("[%6.1fs] %-28s%s%s%s%s\n", t, status, *where ? "node " : "", where, *where && *note ? "  " : "",
             note);
      fflush(stdout);
    }
    g_free(last);
    last = g_steal_pointer(&now);
    if (oak_instance_up(in)) {
      print_instance(cl, in);
      return OAKUK_CLI_OK;
    }
    if (status_failed(status))
      return report_failure(cl, service, in);
    if (t >= (double)timeout_s) {
      const char *detail = oak_str(in, "status_detail", "");
      fprintf(stderr,
              "oakuk deploy: timed out after %" G_GINT64_FORMAT " s; instance %" G_GINT64_FORMAT
              " is %s%s%s%s\n",
              timeout_s, n, status, status_running(in) ? ", not ready yet" : "", *detail ? ": " : "", detail);
      return OAKUK_CLI_FAILED;
    }
    if (!oak_nap(500)) {
      fprintf(stderr, "oakuk deploy: interrupted; instance %" G_GINT64_FORMAT " keeps deploying\n", n);
      return OAKUK_CLI_FAILED;
    }
  }
}

int oakuk_cmd_deploy(int argc, char **argv) {
  g_autofree char *url = NULL;
  gboolean json = FALSE, wait = FALSE;
  gint timeout = 300;
  GOptionEntry entries[] = {
      OAKUK_CLIENT_OPTIONS(url, json),
      {"wait", 'w', 0, G_OPTION_ARG_NONE, &wait,
       "Show progress until the instance is running and ready (exit 0) or fails (exit 1)", NULL},
      {"timeout", 0, 0, G_OPTION_ARG_INT, &timeout, "With --wait: give up after S seconds (default 300)",
       "S"},
      NO_ENTRY,
  };
  if (!oak_parse("deploy", "SERVICE", "Deploy one more instance of a service (id, job name or unique name).",
                 entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  if (argc != 2 || timeout <= 0) {
    fprintf(stderr, "oakuk deploy: %s\n",
            argc != 2 ? "exactly one SERVICE expected" : "--timeout must be positive");
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = NULL;
  g_autoptr(JsonObject) service = oak_client_service("deploy", url, json, argv[1], &cl, &rc);
  if (service == NULL)
    return rc;
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s/instances", oak_service_id(service));
  g_autoptr(JsonNode) n = oak_request(cl, "POST", path, "{}", NULL, &rc);
  if (n == NULL)
    return rc;
  JsonObject *in = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
  gint64 num = oak_int(in, "instance_number", -1);
  if (num < 0) {
    fprintf(stderr, "oakuk deploy: the root's answer has no instance_number\n");
    return OAKUK_CLI_FAILED;
  }
  if (!json)
    printf("instance %" G_GINT64_FORMAT " of %s requested: %s\n", num, oak_str(service, "job_name", "?"),
           oak_str(in, "status", "?"));
  if (status_failed(oak_str(in, "status", "")))
    return report_failure(cl, service, in);
  if (!wait) {
    print_instance(cl, in);
    return OAKUK_CLI_OK;
  }
  return wait_instance(cl, service, num, timeout);
}

/* ---- undeploy ---- */

static gboolean parse_instance_number(const char *cmd, const char *text, gint64 *n) {
  if (!g_ascii_string_to_signed(text, 10, 0, G_MAXINT32, n, NULL)) {
    fprintf(stderr, "oakuk %s: instance \"%s\" is not a non-negative integer\n", cmd, text);
    return FALSE;
  }
  return TRUE;
}

/* The instance numbers of the service (all, or just the one given, which must exist). */
static GArray *pick_instances(const char *cmd, JsonObject *service, const char *which, int *rc) {
  GArray *out = g_array_new(FALSE, FALSE, sizeof(gint64));
  gint64 want = -1;
  if (which != NULL && !parse_instance_number(cmd, which, &want)) {
    *rc = OAKUK_CLI_USAGE;
    g_array_unref(out);
    return NULL;
  }
  JsonArray *list = json_object_get_array_member(service, "instance_list");
  for (guint i = 0; list != NULL && i < json_array_get_length(list); i++) {
    gint64 n = oak_int(json_array_get_object_element(list, i), "instance_number", -1);
    if (n >= 0 && (want < 0 || n == want))
      g_array_append_val(out, n);
  }
  if (want >= 0 && out->len == 0) {
    fprintf(stderr, "oakuk %s: service %s has no instance %" G_GINT64_FORMAT "\n", cmd,
            oak_str(service, "job_name", "?"), want);
    *rc = OAKUK_CLI_NOT_FOUND;
    g_array_unref(out);
    return NULL;
  }
  return out;
}

int oakuk_cmd_undeploy(int argc, char **argv) {
  g_autofree char *url = NULL;
  gboolean json = FALSE, wait = FALSE;
  gint timeout = 60;
  GOptionEntry entries[] = {
      OAKUK_CLIENT_OPTIONS(url, json),
      {"wait", 'w', 0, G_OPTION_ARG_NONE, &wait, "Wait until the clusters confirmed the removal", NULL},
      {"timeout", 0, 0, G_OPTION_ARG_INT, &timeout, "With --wait: give up after S seconds (default 60)", "S"},
      NO_ENTRY,
  };
  if (!oak_parse("undeploy", "SERVICE [INSTANCE]", "Remove one instance of a service, or all of them.",
                 entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  if (argc < 2 || argc > 3 || timeout <= 0) {
    fprintf(stderr, "oakuk undeploy: %s\n",
            timeout <= 0 ? "--timeout must be positive" : "SERVICE [INSTANCE] expected");
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = NULL;
  g_autoptr(JsonObject) service = oak_client_service("undeploy", url, json, argv[1], &cl, &rc);
  if (service == NULL)
    return rc;
  g_autoptr(GArray) nums = pick_instances("undeploy", service, argc == 3 ? argv[2] : NULL, &rc);
  if (nums == NULL)
    return rc;
  if (nums->len == 0 && !json)
    printf("%s has no instances\n", oak_str(service, "job_name", "?"));
  const char *sid = oak_service_id(service);
  for (guint i = 0; i < nums->len; i++) {
    gint64 n = g_array_index(nums, gint64, i);
    g_autofree char *path = g_strdup_printf("/api/v1/services/%s/instances/%" G_GINT64_FORMAT, sid, n);
    g_autoptr(JsonNode) a = oak_request(cl, "DELETE", path, NULL, NULL, &rc);
    if (a == NULL)
      return rc;
    if (!json)
      printf("instance %" G_GINT64_FORMAT ": %s\n", n,
             oak_str(JSON_NODE_HOLDS_OBJECT(a) ? json_node_get_object(a) : NULL, "message", "undeploying"));
  }
  oak_catch_interrupts();
  gint64 deadline = g_get_monotonic_time() + (gint64)timeout * G_USEC_PER_SEC;
  for (guint i = 0; wait && i < nums->len; i++) {
    gint64 n = g_array_index(nums, gint64, i);
    while (TRUE) {
      g_autoptr(JsonObject) in = oak_fetch_instance(cl, sid, n, &rc);
      if (in == NULL && rc != 0)
        return rc;
      if (in == NULL)
        break;
      if (g_get_monotonic_time() > deadline || !oak_nap(500)) {
        fprintf(stderr, "oakuk undeploy: instance %" G_GINT64_FORMAT " still %s\n", n,
                oak_str(in, "status", "?"));
        return OAKUK_CLI_FAILED;
      }
    }
  }
  if (json)
    printf("{\"service\": \"%s\", \"undeployed\": %u}\n", sid, nums->len);
  return OAKUK_CLI_OK;
}

/* ---- logs ---- */

/* Line i of a log answer ("" when it is not a string). */
static const char *line_at(JsonArray *lines, guint i) {
  JsonNode *e = json_array_get_element(lines, i);
  return JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING ? json_node_get_string(e)
                                                                                  : "";
}

/* Where the new lines of now begin, now and before being the tails of one log, before taken
 * earlier: now is taken to continue before at the smallest shift that makes them agree (a log that
 * repeats itself can hide lines behind that choice). *gap when they do not overlap at all. */
static guint new_lines_from(JsonArray *before, JsonArray *now, gboolean *gap) {
  guint nb = before ? json_array_get_length(before) : 0, nn = json_array_get_length(now);
  *gap = FALSE;
  for (guint d = 0; d < nb; d++) {
    guint overlap = nb - d, k = 0;
    if (overlap > nn)
      continue;
    while (k < overlap && strcmp(line_at(before, d + k), line_at(now, k)) == 0)
      k++;
    if (k == overlap)
      return overlap;
  }
  *gap = nb > 0 && nn > 0;
  return 0;
}

typedef struct {
  gint64 number;
  char *path, *name, *node;
  JsonArray *seen; /* the last answer's lines */
} Followed;

static void followed_clear(gpointer p) {
  Followed *f = p;
  g_free(f->path);
  g_free(f->name);
  g_free(f->node);
  if (f->seen)
    json_array_unref(f->seen);
}

/* Prints a log line: plain, prefixed with its instance when several are shown, or as an NDJSON
 * object with --json. */
static void print_log_line(OakClient *cl, const Followed *f, const char *line, gboolean prefix) {
  if (cl->json) {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "instance", f->name ? f->name : "");
    json_object_set_string_member(o, "node", f->node ? f->node : "");
    json_object_set_string_member(o, "line", line);
    g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), o);
    g_autofree char *text = oak_json_text(n, FALSE);
    printf("%s\n", text);
  } else if (prefix) {
    printf("[%s] %s\n", f->name ? f->name : "?", line);
  } else {
    printf("%s\n", line);
  }
}

/* One poll of f: prints what is new since the last one. FALSE when the root gave no answer. */
static gboolean follow_once(OakClient *cl, Followed *f, gboolean prefix, int *rc) {
  g_autoptr(JsonNode) a = oak_request(cl, "GET", f->path, NULL, NULL, rc);
  JsonObject *o = oak_object_of(a);
  JsonArray *lines = oak_array_member(o, "lines");
  if (lines == NULL)
    return FALSE;
  if (f->name == NULL) {
    f->name = g_strdup(oak_str(o, "instance", "?"));
    f->node = g_strdup(oak_str(o, "node", ""));
  }
  gboolean gap = FALSE;
  guint from = new_lines_from(f->seen, lines, &gap);
  if (gap)
    fprintf(stderr,
            "oakuk logs: %s: its log does not continue the last answer (more new lines than --lines in a "
            "second, or it started again): lines may be missing\n",
            f->name);
  for (guint i = from; i < json_array_get_length(lines); i++)
    print_log_line(cl, f, line_at(lines, i), prefix);
  fflush(stdout);
  if (f->seen)
    json_array_unref(f->seen);
  f->seen = json_array_ref(lines);
  return TRUE;
}

/* -f: polls every instance's log every second until interrupted or none answers any more. */
static int follow(OakClient *cl, GArray *followed) {
  oak_catch_interrupts();
  int result = OAKUK_CLI_OK;
  guint live = followed->len;
  gboolean prefix = followed->len > 1;
  while (live > 0) {
    for (guint i = 0; i < followed->len; i++) {
      Followed *f = &g_array_index(followed, Followed, i);
      int rc = OAKUK_CLI_FAILED;
      if (f->path != NULL && !follow_once(cl, f, prefix, &rc)) {
        fprintf(stderr, "oakuk logs: instance %" G_GINT64_FORMAT ": no longer followed\n", f->number);
        g_clear_pointer(&f->path, g_free);
        live--;
        result = rc;
      }
    }
    if (!oak_nap(1000))
      break;
  }
  return result;
}

int oakuk_cmd_logs(int argc, char **argv) {
  g_autofree char *url = NULL;
  gboolean json = FALSE, follow_on = FALSE;
  gint lines = 100;
  GOptionEntry entries[] = {
      OAKUK_CLIENT_OPTIONS(url, json),
      {"lines", 'n', 0, G_OPTION_ARG_INT, &lines, "Last N lines (default 100, at most 10000)", "N"},
      {"follow", 'f', 0, G_OPTION_ARG_NONE, &follow_on,
       "Then keep printing new lines (asked every second) until interrupted; with several instances each "
       "line "
       "is prefixed with its instance, with --json one JSON object per line",
       NULL},
      NO_ENTRY,
  };
  if (!oak_parse("logs", "SERVICE [INSTANCE]",
                 "Show the serial console (unikernel) or output (container) of a service's instances.",
                 entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  if (argc < 2 || argc > 3 || lines < 1 || lines > 10000) {
    fprintf(stderr, "oakuk logs: %s\n",
            argc < 2 || argc > 3 ? "SERVICE [INSTANCE] expected" : "--lines must be 1..10000");
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = NULL;
  g_autoptr(JsonObject) service = oak_client_service("logs", url, json, argv[1], &cl, &rc);
  if (service == NULL)
    return rc;
  g_autoptr(GArray) nums = pick_instances("logs", service, argc == 3 ? argv[2] : NULL, &rc);
  if (nums == NULL)
    return rc;
  if (nums->len == 0) {
    fprintf(stderr, "oakuk logs: %s has no instances\n", oak_str(service, "job_name", "?"));
    return OAKUK_CLI_NOT_FOUND;
  }
  if (follow_on) {
    g_autoptr(GArray) followed = g_array_new(FALSE, TRUE, sizeof(Followed));
    g_array_set_clear_func(followed, followed_clear);
    for (guint i = 0; i < nums->len; i++) {
      Followed f = {.number = g_array_index(nums, gint64, i)};
      f.path = g_strdup_printf("/api/v1/services/%s/instances/%" G_GINT64_FORMAT "/logs?lines=%d",
                               oak_service_id(service), f.number, lines);
      g_array_append_val(followed, f);
    }
    return follow(cl, followed);
  }
  int result = OAKUK_CLI_OK;
  for (guint i = 0; i < nums->len; i++) {
    gint64 n = g_array_index(nums, gint64, i);
    g_autofree char *path =
        g_strdup_printf("/api/v1/services/%s/instances/%" G_GINT64_FORMAT "/logs?lines=%d",
                        oak_service_id(service), n, lines);
    g_autoptr(JsonNode) a = oak_request(cl, "GET", path, NULL, NULL, &rc);
    if (a == NULL) {
      result = rc;
      continue;
    }
    if (json) {
      oak_print_json(a);
      continue;
    }
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(a) ? json_node_get_object(a) : NULL;
    if (nums->len > 1)
      printf("==> %s (node %s) <==\n", oak_str(o, "instance", "?"), oak_str(o, "node", "?"));
    print_lines(oak_array_member(o, "lines"), "");
  }
  return result;
}
