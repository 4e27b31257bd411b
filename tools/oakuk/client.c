/* Client of the root's native API for the control-plane commands: URL and credentials, JSON
 * requests with token refresh, service lookup and text tables. */
#include "client.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

gboolean oak_parse(const char *name, const char *params, const char *summary, GOptionEntry *entries,
                   int *argc, char ***argv) {
  g_autofree char *prg = g_strdup_printf("oakuk %s", name);
  g_autoptr(GOptionContext) ctx = g_option_context_new(params);
  g_option_context_set_summary(ctx, summary);
  g_option_context_set_description(
      ctx, "Exit status: 0 success, 1 the operation failed, 2 bad command line or invalid\n"
           "descriptor, 4 not logged in / credentials or the root's certificate refused,\n"
           "5 root unreachable, 6 unknown service, instance, cluster or user.");
  g_option_context_add_main_entries(ctx, entries, NULL);
  (*argv)[0] = prg;
  g_autoptr(GError) error = NULL;
  gboolean ok = g_option_context_parse(ctx, argc, argv, &error);
  (*argv)[0] = (char *)name;
  if (!ok) {
    fprintf(stderr, "oakuk %s: %s (see oakuk %s --help)\n", name, error->message, name);
    return FALSE;
  }
  return TRUE;
}

/* ---- JSON helpers ---- */

const char *oak_str(JsonObject *o, const char *key, const char *def) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : def;
}

gint64 oak_int(JsonObject *o, const char *key, gint64 def) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  if (n == NULL || !JSON_NODE_HOLDS_VALUE(n))
    return def;
  GType t = json_node_get_value_type(n);
  return t == G_TYPE_INT64    ? json_node_get_int(n)
         : t == G_TYPE_DOUBLE ? (gint64)json_node_get_double(n)
                              : def;
}

double oak_num(JsonObject *o, const char *key, double def) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  if (n == NULL || !JSON_NODE_HOLDS_VALUE(n))
    return def;
  GType t = json_node_get_value_type(n);
  return t == G_TYPE_INT64    ? (double)json_node_get_int(n)
         : t == G_TYPE_DOUBLE ? json_node_get_double(n)
                              : def;
}

gboolean oak_bool(JsonObject *o, const char *key, gboolean def) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN
             ? json_node_get_boolean(n)
             : def;
}

const char *oak_service_id(JsonObject *service) {
  return oak_str(service, "microserviceID", "");
}

char *oak_json_text(JsonNode *node, gboolean pretty) {
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_pretty(gen, pretty);
  json_generator_set_root(gen, node);
  gsize len = 0;
  g_autofree char *raw = json_generator_to_data(gen, &len);
  return oakuk_json_repair(raw, len);
}

JsonNode *oak_json_parse(const char *text, gsize len, GError **error) {
  oakuk_error *e = NULL;
  if (oakuk_json_check(text, len, OAKUK_JSON_DEPTH_DEFAULT, &e) != OAKUK_OK) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s", oakuk_error_message(e));
    oakuk_error_free(e);
    return NULL;
  }
  g_autoptr(JsonParser) p = json_parser_new_immutable();
  if (!json_parser_load_from_data(p, text, (gssize)len, error))
    return NULL;
  return json_parser_steal_root(p);
}

void oak_print_json(JsonNode *node) {
  g_autofree char *text = oak_json_text(node, TRUE);
  printf("%s\n", text);
}

/* ---- credentials ---- */

static char *strip_slashes(const char *url) {
  char *s = g_strdup(url);
  gsize len = strlen(s);
  while (len > 0 && s[len - 1] == '/')
    s[--len] = '\0';
  return s;
}

static void load_credentials(OakClient *cl) {
  g_autofree char *text = NULL;
  gsize len = 0;
  if (!g_file_get_contents(cl->cred_path, &text, &len, NULL))
    return;
  g_autoptr(JsonNode) root = oak_json_parse(text, len, NULL);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    fprintf(stderr, "%s: %s is not a JSON object; ignored (run oakuk login again)\n", cl->cmd, cl->cred_path);
    return;
  }
  JsonObject *o = json_node_get_object(root);
  g_autofree char *url = strip_slashes(oak_str(o, "url", ""));
  if (strcmp(url, cl->url) != 0)
    return; /* credentials of another root */
  cl->token = g_strdup(oak_str(o, "token", NULL));
  cl->refresh_token = g_strdup(oak_str(o, "refresh_token", NULL));
  cl->username = g_strdup(oak_str(o, "username", NULL));
  cl->insecure = oak_bool(o, "insecure", FALSE);
}

static char *stored_url(const char *path) {
  g_autofree char *text = NULL;
  gsize len = 0;
  if (!g_file_get_contents(path, &text, &len, NULL))
    return NULL;
  g_autoptr(JsonNode) root = oak_json_parse(text, len, NULL);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root))
    return NULL;
  const char *url = oak_str(json_node_get_object(root), "url", NULL);
  return url && *url ? g_strdup(url) : NULL;
}

gboolean oak_client_save(OakClient *cl, GError **error) {
  g_autofree char *dir = g_path_get_dirname(cl->cred_path);
  if (g_mkdir_with_parents(dir, 0700) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "create %s: %s", dir, g_strerror(e));
    return FALSE;
  }
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "url");
  json_builder_add_string_value(b, cl->url);
  json_builder_set_member_name(b, "username");
  json_builder_add_string_value(b, cl->username ? cl->username : "");
  json_builder_set_member_name(b, "token");
  json_builder_add_string_value(b, cl->token ? cl->token : "");
  json_builder_set_member_name(b, "refresh_token");
  json_builder_add_string_value(b, cl->refresh_token ? cl->refresh_token : "");
  if (cl->insecure) {
    json_builder_set_member_name(b, "insecure");
    json_builder_add_boolean_value(b, TRUE);
  }
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = oak_json_text(root, TRUE);
  /* Written to a temporary file created 0600 and renamed: the tokens are never world-readable. */
  return g_file_set_contents_full(cl->cred_path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error);
}

static gboolean is_https(OakClient *cl) {
  return g_ascii_strncasecmp(cl->url, "https:", 6) == 0;
}

/* https: the CA stored for the URL, which a logged-in command needs. http: only with credentials
 * that oakuk login --insecure made. */
static gboolean load_trust(OakClient *cl, gboolean need_login, int *exit_code) {
  if (!is_https(cl)) {
    if (need_login && !cl->insecure) {
      fprintf(stderr,
              "%s: %s is plain HTTP and the credentials for it were not made with --insecure; use https, or "
              "run: oakuk login %s --insecure\n",
              cl->cmd, cl->url, cl->url);
      *exit_code = OAKUK_CLI_AUTH;
      return FALSE;
    }
    return TRUE;
  }
  cl->ca_path = oak_ca_path(cl->url);
  if (!g_file_test(cl->ca_path, G_FILE_TEST_EXISTS)) {
    if (need_login) {
      fprintf(stderr, "%s: no CA is stored for %s (%s); run: oakuk login %s\n", cl->cmd, cl->url, cl->ca_path,
              cl->url);
      *exit_code = OAKUK_CLI_AUTH;
      return FALSE;
    }
    return TRUE;
  }
  g_autoptr(GError) error = NULL;
  cl->pin.ca = oak_ca_load(cl->ca_path, &error);
  if (cl->pin.ca == NULL) {
    fprintf(stderr, "%s: the CA stored for %s: %s (remove it and log in again)\n", cl->cmd, cl->url,
            error->message);
    *exit_code = OAKUK_CLI_FAILED;
    return FALSE;
  }
  cl->ca_stored = TRUE;
  return TRUE;
}

OakClient *oak_client_new(const char *name, const char *url_option, gboolean json, gboolean need_login,
                          int *exit_code) {
  OakClient *cl = g_new0(OakClient, 1);
  cl->cmd = g_strdup_printf("oakuk %s", name);
  cl->json = json;
  cl->cred_path = g_build_filename(g_get_user_config_dir(), "oakuk", "credentials.json", NULL);
  g_autofree char *stored = stored_url(cl->cred_path);
  const char *env = g_getenv("OAKUK_URL");
  const char *url = url_option ? url_option : env && *env ? env : stored ? stored : OAKUK_CLI_DEFAULT_URL;
  g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_NONE, NULL);
  if (uri == NULL ||
      (g_strcmp0(g_uri_get_scheme(uri), "http") != 0 && g_strcmp0(g_uri_get_scheme(uri), "https") != 0) ||
      g_uri_get_host(uri) == NULL || !*g_uri_get_host(uri)) {
    fprintf(stderr, "%s: --url \"%s\" is not an http(s) URL with a host\n", cl->cmd, url);
    *exit_code = OAKUK_CLI_USAGE;
    oak_client_free(cl);
    return NULL;
  }
  cl->url = strip_slashes(url);
  load_credentials(cl);
  if (need_login && (cl->token == NULL || !*cl->token)) {
    fprintf(stderr, "%s: not logged in to %s (run: oakuk login %s)\n", cl->cmd, cl->url, cl->url);
    *exit_code = OAKUK_CLI_AUTH;
    oak_client_free(cl);
    return NULL;
  }
  if (!load_trust(cl, need_login, exit_code)) {
    oak_client_free(cl);
    return NULL;
  }
  /* No CA database: every server certificate goes to the message's pin (oak_pin_message), which
   * trusts only the root's CA, never the system's. */
  cl->session = soup_session_new_with_options("timeout", 30, "user-agent", "oakuk/" OAKUK_CLI_VERSION, NULL);
  soup_session_set_tls_database(cl->session, NULL);
  return cl;
}

void oak_client_free(OakClient *cl) {
  if (cl == NULL)
    return;
  g_free(cl->cmd);
  g_free(cl->url);
  g_free(cl->cred_path);
  g_free(cl->token);
  g_free(cl->refresh_token);
  g_free(cl->username);
  g_free(cl->ca_path);
  oak_pin_clear(&cl->pin);
  g_clear_object(&cl->session);
  g_free(cl);
}

/* ---- requests ---- */

typedef struct {
  guint status;
  GBytes *body;
  char *transport_error;
  gboolean refused; /* the server's certificate was refused */
} Answer;

static void answer_clear(Answer *a) {
  g_clear_pointer(&a->body, g_bytes_unref);
  g_clear_pointer(&a->transport_error, g_free);
}

static void send_raw(OakClient *cl, const char *method, const char *path, const char *body,
                     const char *bearer, Answer *a) {
  g_autofree char *full = g_strconcat(cl->url, path, NULL);
  g_autoptr(SoupMessage) msg = soup_message_new(method, full);
  if (msg == NULL) {
    a->transport_error = g_strdup_printf("invalid request URL %s", full);
    return;
  }
  if (bearer != NULL) {
    g_autofree char *h = g_strconcat("Bearer ", bearer, NULL);
    soup_message_headers_replace(soup_message_get_request_headers(msg), "Authorization", h);
  }
  if (body != NULL) {
    g_autoptr(GBytes) b = g_bytes_new(body, strlen(body));
    soup_message_set_request_body_from_bytes(msg, "application/json", b);
  }
  if (is_https(cl))
    oak_pin_message(&cl->pin, msg);
  g_autoptr(GError) error = NULL;
  a->body = soup_session_send_and_read(cl->session, msg, NULL, &error);
  if (a->body == NULL) {
    a->refused = is_https(cl) && cl->pin.refused;
    a->transport_error = g_strdup(error->message);
    return;
  }
  a->status = soup_message_get_status(msg);
}

static JsonNode *parse_bytes(GBytes *body, GError **error) {
  gsize len = 0;
  const char *data = body ? g_bytes_get_data(body, &len) : NULL;
  if (len == 0)
    return json_node_new(JSON_NODE_NULL);
  return oak_json_parse(data, len, error);
}

/* The message of the root's {"error": {...}} object, or the start of the body. */
static char *error_message(Answer *a) {
  g_autoptr(JsonNode) n = parse_bytes(a->body, NULL);
  JsonObject *o = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
  JsonNode *e = o ? json_object_get_member(o, "error") : NULL;
  const char *message =
      e && JSON_NODE_HOLDS_OBJECT(e) ? oak_str(json_node_get_object(e), "message", NULL) : NULL;
  /* A refusal by role says so: the message alone names the role, not that it was a refusal. */
  if (message != NULL && a->status == SOUP_STATUS_FORBIDDEN)
    return g_strdup_printf("forbidden (HTTP 403): %s", message);
  if (message != NULL)
    return g_strdup(message);
  gsize len = 0;
  const char *data = a->body ? g_bytes_get_data(a->body, &len) : "";
  g_autofree char *start = g_strndup(data ? data : "", MIN(len, 200));
  return g_strdup_printf("HTTP %u %s", a->status, start);
}

static gboolean refresh(OakClient *cl) {
  if (cl->refresh_token == NULL || !*cl->refresh_token)
    return FALSE;
  Answer a = {0};
  send_raw(cl, "POST", "/api/auth/refresh", NULL, cl->refresh_token, &a);
  g_autoptr(JsonNode) n = a.status == SOUP_STATUS_OK ? parse_bytes(a.body, NULL) : NULL;
  answer_clear(&a);
  JsonObject *o = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
  if (oak_str(o, "token", NULL) == NULL)
    return FALSE;
  g_free(cl->token);
  g_free(cl->refresh_token);
  cl->token = g_strdup(oak_str(o, "token", NULL));
  cl->refresh_token = g_strdup(oak_str(o, "refresh_token", cl->refresh_token));
  g_autoptr(GError) error = NULL;
  if (!oak_client_save(cl, &error))
    fprintf(stderr, "%s: warning: refreshed token not saved: %s\n", cl->cmd, error->message);
  return TRUE;
}

static JsonNode *request(OakClient *cl, gboolean auth, const char *method, const char *path, const char *body,
                         guint *status, int *exit_code) {
  Answer a = {0};
  send_raw(cl, method, path, body, auth ? cl->token : NULL, &a);
  if (auth && a.status == SOUP_STATUS_UNAUTHORIZED && refresh(cl)) {
    answer_clear(&a);
    send_raw(cl, method, path, body, cl->token, &a);
  }
  if (status != NULL)
    *status = a.status;
  if (a.refused) {
    g_autofree char *why = oak_pin_refusal(&cl->pin, cl->url, cl->ca_stored ? cl->ca_path : NULL);
    fprintf(stderr, "%s: refused: %s\n", cl->cmd, why);
    *exit_code = OAKUK_CLI_AUTH;
    answer_clear(&a);
    return NULL;
  }
  if (a.transport_error != NULL) {
    fprintf(stderr, "%s: cannot reach the root at %s: %s\n", cl->cmd, cl->url, a.transport_error);
    *exit_code = OAKUK_CLI_UNREACHABLE;
    answer_clear(&a);
    return NULL;
  }
  if (!SOUP_STATUS_IS_SUCCESSFUL(a.status)) {
    g_autofree char *m = error_message(&a);
    if (a.status == SOUP_STATUS_UNAUTHORIZED && auth) {
      fprintf(stderr, "%s: the root at %s refused the stored credentials (%s); run oakuk login\n", cl->cmd,
              cl->url, m);
      *exit_code = OAKUK_CLI_AUTH;
    } else {
      fprintf(stderr, "%s: %s\n", cl->cmd, m);
      *exit_code = a.status == SOUP_STATUS_UNAUTHORIZED ? OAKUK_CLI_AUTH
                   : a.status == SOUP_STATUS_NOT_FOUND  ? OAKUK_CLI_NOT_FOUND
                                                        : OAKUK_CLI_FAILED;
    }
    answer_clear(&a);
    return NULL;
  }
  g_autoptr(GError) error = NULL;
  JsonNode *n = parse_bytes(a.body, &error);
  answer_clear(&a);
  if (n == NULL) {
    fprintf(stderr, "%s: %s %s: the root answered malformed JSON: %s\n", cl->cmd, method, path,
            error->message);
    *exit_code = OAKUK_CLI_FAILED;
  }
  return n;
}

JsonNode *oak_request(OakClient *cl, const char *method, const char *path, const char *body_text,
                      guint *status, int *exit_code) {
  return request(cl, TRUE, method, path, body_text, status, exit_code);
}

JsonNode *oak_request_anon(OakClient *cl, const char *method, const char *path, const char *body_text,
                           guint *status, int *exit_code) {
  return request(cl, FALSE, method, path, body_text, status, exit_code);
}

GTlsCertificate *oak_client_probe_ca(OakClient *cl, int *exit_code) {
  Answer a = {0};
  cl->pin.probe = TRUE;
  send_raw(cl, "GET", "/healthz", NULL, NULL, &a);
  cl->pin.probe = FALSE;
  if (cl->pin.presented == NULL) {
    fprintf(stderr, "%s: cannot reach the root at %s: %s\n", cl->cmd, cl->url,
            a.transport_error ? a.transport_error : "it presented no certificate");
    *exit_code = OAKUK_CLI_UNREACHABLE;
  }
  answer_clear(&a);
  return cl->pin.presented ? g_object_ref(cl->pin.presented) : NULL;
}

JsonObject *oak_find_service(OakClient *cl, const char *what, int *exit_code) {
  g_autoptr(JsonNode) all = oak_request(cl, "GET", "/api/v1/services", NULL, NULL, exit_code);
  if (all == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_ARRAY(all)) {
    fprintf(stderr, "%s: GET /api/v1/services: expected a list\n", cl->cmd);
    *exit_code = OAKUK_CLI_FAILED;
    return NULL;
  }
  JsonArray *list = json_node_get_array(all);
  g_autoptr(GPtrArray) by_name = g_ptr_array_new();
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *s = json_array_get_object_element(list, i);
    if (s == NULL)
      continue;
    if (strcmp(oak_service_id(s), what) == 0 || g_strcmp0(oak_str(s, "job_name", NULL), what) == 0)
      return json_object_ref(s);
    if (g_strcmp0(oak_str(s, "service_name", NULL), what) == 0)
      g_ptr_array_add(by_name, s);
  }
  if (by_name->len == 1)
    return json_object_ref(by_name->pdata[0]);
  if (by_name->len > 1) {
    fprintf(stderr, "%s: service name \"%s\" is ambiguous; use one of:", cl->cmd, what);
    for (guint i = 0; i < by_name->len; i++)
      fprintf(stderr, " %s", oak_str(by_name->pdata[i], "job_name", "?"));
    fprintf(stderr, "\n");
    *exit_code = OAKUK_CLI_USAGE;
    return NULL;
  }
  fprintf(stderr, "%s: no service \"%s\" (give its id, its job name app.appns.svc.svcns or its name)\n",
          cl->cmd, what);
  *exit_code = OAKUK_CLI_NOT_FOUND;
  return NULL;
}

/* ---- the terminal ---- */

FILE *oak_tty_open(void) {
  return fopen("/dev/tty", "r+");
}

/* Reads one line from fp without its line end; NULL at end of file. */
static char *read_line(FILE *fp) {
  g_autoptr(GString) s = g_string_new(NULL);
  int ch;
  while ((ch = fgetc(fp)) != EOF && ch != '\n')
    if (ch != '\r')
      g_string_append_c(s, (char)ch);
  if (ch == EOF && s->len == 0)
    return NULL;
  return g_string_free(g_steal_pointer(&s), FALSE);
}

char *oak_tty_ask(FILE *tty, const char *prompt, gboolean secret) {
  struct termios old, quiet;
  gboolean restore = secret && tcgetattr(fileno(tty), &old) == 0;
  if (restore) {
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
  }
  fprintf(tty, "%s", prompt);
  fflush(tty);
  char *line = read_line(tty);
  if (restore) {
    tcsetattr(fileno(tty), TCSAFLUSH, &old);
    fprintf(tty, "\n");
  }
  return line;
}

char *oak_read_first_line(const char *path, GError **error) {
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, error))
    return NULL;
  text[strcspn(text, "\r\n")] = '\0';
  return g_strdup(text);
}

/* ---- tables ---- */

struct OakTable {
  guint ncols;
  GPtrArray *rows; /* GStrv each, the first one the headers */
};

OakTable *oak_table_new(const char *const *headers) {
  OakTable *t = g_new0(OakTable, 1);
  t->ncols = g_strv_length((char **)headers);
  t->rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
  oak_table_add(t, headers);
  return t;
}

void oak_table_add(OakTable *t, const char *const *cells) {
  char **row = g_new0(char *, t->ncols + 1);
  for (guint i = 0; i < t->ncols; i++) {
    const char *c = cells[i] && *cells[i] ? cells[i] : "-";
    /* One line per row: control characters (newlines in a detail) become spaces. */
    row[i] = g_strdup(c);
    for (char *p = row[i]; *p; p++)
      if ((unsigned char)*p < 0x20)
        *p = ' ';
  }
  g_ptr_array_add(t->rows, row);
}

guint oak_terminal_width(void) {
  const char *env = g_getenv("COLUMNS");
  guint64 v = 0;
  if (env && g_ascii_string_to_unsigned(env, 10, 20, 10000, &v, NULL))
    return (guint)v;
  struct winsize ws;
  if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  return 0;
}

void oak_table_print(OakTable *t, FILE *to) {
  g_autofree guint *w = g_new0(guint, t->ncols);
  for (guint r = 0; r < t->rows->len; r++)
    for (guint c = 0; c < t->ncols; c++)
      w[c] = MAX(w[c], (guint)g_utf8_strlen(((char **)t->rows->pdata[r])[c], -1));
  guint term = oak_terminal_width();
  guint before = 0;
  for (guint c = 0; c + 1 < t->ncols; c++)
    before += w[c] + 2;
  for (guint r = 0; r < t->rows->len; r++) {
    char **row = t->rows->pdata[r];
    GString *line = g_string_new(NULL);
    for (guint c = 0; c + 1 < t->ncols; c++) {
      g_string_append(line, row[c]);
      for (guint pad = (guint)g_utf8_strlen(row[c], -1); pad < w[c] + 2; pad++)
        g_string_append_c(line, ' ');
    }
    const char *last = row[t->ncols - 1];
    glong len = g_utf8_strlen(last, -1);
    if (term > 0 && before + 4 <= term && (guint)len > term - before) {
      /* Cut the last column (the detail) to the width, marking the cut. */
      g_autofree char *cut = g_utf8_substring(last, 0, term - before - 3);
      g_string_append_printf(line, "%s...", cut);
    } else {
      g_string_append(line, last);
    }
    fprintf(to, "%s\n", line->str);
    g_string_free(line, TRUE);
  }
}

void oak_table_free(OakTable *t) {
  if (t == NULL)
    return;
  g_ptr_array_unref(t->rows);
  g_free(t);
}

/* ---- interruptible waits ---- */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig) {
  (void)sig;
  interrupted = 1;
}

void oak_catch_interrupts(void) {
  struct sigaction sa = {0};
  sa.sa_handler = on_interrupt;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

gboolean oak_nap(guint ms) {
  for (guint t = 0; t < ms && !interrupted; t += 50)
    g_usleep(50 * 1000);
  return !interrupted;
}
