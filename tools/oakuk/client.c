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
           "5 root unreachable, 6 unknown service, instance, cluster, user, application or\n"
           "context.");
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

JsonObject *oak_object_of(JsonNode *n) {
  return n != NULL && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

JsonArray *oak_array_member(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n != NULL && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
}

gboolean oak_instance_leaving(JsonObject *in) {
  return g_strcmp0(oak_str(in, "status", ""), "UNDEPLOYED") == 0;
}

JsonObject *oak_fetch_instance(OakClient *cl, const char *sid, gint64 n, int *rc) {
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s/instances", sid);
  g_autoptr(JsonNode) list = oak_request(cl, "GET", path, NULL, NULL, rc);
  if (list == NULL || !JSON_NODE_HOLDS_ARRAY(list))
    return NULL;
  for (guint i = 0; i < json_array_get_length(json_node_get_array(list)); i++) {
    JsonObject *in = json_array_get_object_element(json_node_get_array(list), i);
    if (in != NULL && oak_int(in, "instance_number", -1) == n)
      return json_object_ref(in);
  }
  *rc = 0;
  return NULL;
}

JsonObject *oak_client_service(const char *cmd, const char *url, gboolean json, const char *what,
                               OakClient **client, int *exit_code) {
  *client = oak_client_new(cmd, url, json, TRUE, exit_code);
  return *client ? oak_find_service(*client, what, exit_code) : NULL;
}

gboolean oak_instance_up(JsonObject *in) {
  int32_t s = oakuk_instance_status_from_name(oak_str(in, "status", ""));
  return (s == OAKUK_STATUS_RUNNING && oak_bool(in, "ready", FALSE)) || s == OAKUK_STATUS_COMPLETED;
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

void oak_print_json_list(const char *key, JsonArray *list) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_array_member(o, key, json_array_ref(list));
  g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), o);
  oak_print_json(n);
}

/* ---- output formats ---- */

gboolean oak_output_parse(const char *cmd, const char *text, gboolean json, OakOutput *out) {
  static const struct {
    const char *name;
    OakOutput format;
  } formats[] = {{"json", OAK_OUTPUT_JSON}, {"yaml", OAK_OUTPUT_YAML}, {"wide", OAK_OUTPUT_WIDE}};
  *out = json ? OAK_OUTPUT_JSON : OAK_OUTPUT_TABLE;
  if (text == NULL)
    return TRUE;
  for (size_t i = 0; i < G_N_ELEMENTS(formats); i++)
    if (strcmp(text, formats[i].name) == 0) {
      if (json && formats[i].format != OAK_OUTPUT_JSON) {
        fprintf(stderr, "oakuk %s: --json and -o %s exclude each other\n", cmd, text);
        return FALSE;
      }
      *out = formats[i].format;
      return TRUE;
    }
  fprintf(stderr, "oakuk %s: -o \"%s\": unknown output format (json, yaml or wide)\n", cmd, text);
  return FALSE;
}

/* A string YAML reads back as the same string without quotes: a word that starts with a letter
 * and is none of YAML 1.1's booleans or null. Everything else is double-quoted. */
static gboolean yaml_plain(const char *s) {
  static const char *const reserved[] = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", NULL};
  if (!g_ascii_isalpha(*s))
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isalnum(*p) && !strchr("_./-", *p))
      return FALSE;
  for (const char *const *r = reserved; *r; r++)
    if (g_ascii_strcasecmp(s, *r) == 0)
      return FALSE;
  return TRUE;
}

static void yaml_string(GString *out, const char *text) {
  g_autofree char *valid = g_utf8_make_valid(text, -1);
  if (yaml_plain(valid)) {
    g_string_append(out, valid);
    return;
  }
  g_string_append_c(out, '"');
  for (const char *p = valid; *p; p = g_utf8_next_char(p)) {
    gunichar c = g_utf8_get_char(p);
    if (c == '"' || c == '\\')
      g_string_append_printf(out, "\\%c", (char)c);
    else if (c == '\n')
      g_string_append(out, "\\n");
    else if (c == '\t')
      g_string_append(out, "\\t");
    else if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x2028 || c == 0x2029 || c == 0xfeff ||
             c == 0xfffe || c == 0xffff)
      g_string_append_printf(out, "\\u%04x", c); /* not printable in YAML */
    else
      g_string_append_len(out, p, g_utf8_next_char(p) - p);
  }
  g_string_append_c(out, '"');
}

static void yaml_scalar(GString *out, JsonNode *n) {
  if (JSON_NODE_HOLDS_NULL(n)) {
    g_string_append(out, "null");
    return;
  }
  GType t = json_node_get_value_type(n);
  if (t == G_TYPE_STRING) {
    yaml_string(out, json_node_get_string(n));
  } else if (t == G_TYPE_BOOLEAN) {
    g_string_append(out, json_node_get_boolean(n) ? "true" : "false");
  } else if (t == G_TYPE_INT64) {
    g_string_append_printf(out, "%" G_GINT64_FORMAT, json_node_get_int(n));
  } else {
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    g_ascii_dtostr(buf, sizeof buf, json_node_get_double(n));
    /* YAML 1.1 reads a number without '.' as an integer, or "1e+20" as a string. */
    const char *e = strpbrk(buf, "eE");
    if (strchr(buf, '.') != NULL)
      g_string_append(out, buf);
    else if (e != NULL)
      g_string_append_printf(out, "%.*s.0%s", (int)(e - buf), buf, e);
    else
      g_string_append_printf(out, "%s.0", buf);
  }
}

/* A non-empty list or object: written as a block below its key or after its dash. */
static gboolean yaml_nested(JsonNode *n) {
  return (JSON_NODE_HOLDS_ARRAY(n) && json_array_get_length(json_node_get_array(n)) > 0) ||
         (JSON_NODE_HOLDS_OBJECT(n) && json_object_get_size(json_node_get_object(n)) > 0);
}

/* A scalar, or an empty list or object, on its key's or dash's line. */
static void yaml_inline(GString *out, JsonNode *n) {
  if (JSON_NODE_HOLDS_ARRAY(n))
    g_string_append(out, "[]");
  else if (JSON_NODE_HOLDS_OBJECT(n))
    g_string_append(out, "{}");
  else
    yaml_scalar(out, n);
  g_string_append_c(out, '\n');
}

static void yaml_block(GString *out, JsonNode *n, guint indent, gboolean first_inline);

static void yaml_mapping(GString *out, JsonObject *o, guint indent, gboolean first_inline) {
  g_autoptr(GList) keys = json_object_get_members(o);
  for (GList *l = keys; l != NULL; l = l->next) {
    if (l != keys || !first_inline)
      g_string_append_printf(out, "%*s", (int)indent, "");
    yaml_string(out, l->data);
    g_string_append_c(out, ':');
    JsonNode *v = json_object_get_member(o, l->data);
    if (yaml_nested(v)) {
      g_string_append_c(out, '\n');
      yaml_block(out, v, JSON_NODE_HOLDS_OBJECT(v) ? indent + 2 : indent, FALSE);
    } else {
      g_string_append_c(out, ' ');
      yaml_inline(out, v);
    }
  }
}

static void yaml_block(GString *out, JsonNode *n, guint indent, gboolean first_inline) {
  if (JSON_NODE_HOLDS_OBJECT(n)) {
    yaml_mapping(out, json_node_get_object(n), indent, first_inline);
    return;
  }
  JsonArray *a = json_node_get_array(n);
  for (guint i = 0; i < json_array_get_length(a); i++) {
    if (i > 0 || !first_inline)
      g_string_append_printf(out, "%*s", (int)indent, "");
    g_string_append(out, "- ");
    JsonNode *e = json_array_get_element(a, i);
    if (yaml_nested(e))
      yaml_block(out, e, indent + 2, TRUE);
    else
      yaml_inline(out, e);
  }
}

char *oak_yaml_text(JsonNode *node) {
  GString *out = g_string_new(NULL);
  if (yaml_nested(node))
    yaml_block(out, node, 0, FALSE);
  else
    yaml_inline(out, node);
  return g_string_free(out, FALSE);
}

void oak_print_as(OakOutput format, JsonNode *node) {
  if (format == OAK_OUTPUT_YAML) {
    g_autofree char *text = oak_yaml_text(node);
    fputs(text, stdout);
  } else {
    oak_print_json(node);
  }
}

/* ---- credentials ---- */

static char *strip_slashes(const char *url) {
  char *s = g_strdup(url);
  gsize len = strlen(s);
  while (len > 0 && s[len - 1] == '/')
    s[--len] = '\0';
  return s;
}

char *oak_context_option;

const char *oak_context_selected(void) {
  const char *env = g_getenv("OAKUK_CONTEXT");
  return oak_context_option && *oak_context_option ? oak_context_option : env && *env ? env : NULL;
}

char *oak_context_default_name(const char *url) {
  g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_NONE, NULL);
  const char *host = uri ? g_uri_get_host(uri) : NULL;
  int port = uri ? g_uri_get_port(uri) : -1;
  if (port <= 0)
    port = g_strcmp0(uri ? g_uri_get_scheme(uri) : NULL, "http") == 0 ? 80 : 443;
  if (host != NULL && strchr(host, ':') != NULL)
    return g_strdup_printf("[%s]:%d", host, port);
  return g_strdup_printf("%s:%d", host ? host : "unknown", port);
}

gboolean oak_context_name_valid(const char *name) {
  if (!g_utf8_validate(name, -1, NULL) || *name == '\0' || g_utf8_strlen(name, -1) > 128)
    return FALSE;
  for (const char *p = name; *p; p = g_utf8_next_char(p))
    if (!g_unichar_isprint(g_utf8_get_char(p)) || *p == ' ')
      return FALSE;
  return TRUE;
}

char *oak_config_path(void) {
  return g_build_filename(g_get_user_config_dir(), "oakuk", "credentials.json", NULL);
}

static JsonObject *context_of(JsonObject *config, const char *name) {
  JsonNode *all = name ? json_object_get_member(config, "contexts") : NULL;
  JsonNode *n =
      all && JSON_NODE_HOLDS_OBJECT(all) ? json_object_get_member(json_node_get_object(all), name) : NULL;
  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

JsonObject *oak_config_load(const char *path, const char *cmd) {
  g_autofree char *text = NULL;
  gsize len = 0;
  g_autoptr(GError) error = NULL;
  if (!g_file_get_contents(path, &text, &len, &error)) {
    if (g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      return json_object_new();
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return NULL;
  }
  g_autoptr(JsonNode) root = oak_json_parse(text, len, NULL);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    fprintf(stderr, "%s: %s is not a JSON object; ignored (run oakuk login again)\n", cmd, path);
    return json_object_new();
  }
  JsonObject *o = json_node_get_object(root);
  JsonNode *contexts = json_object_get_member(o, "contexts");
  if (contexts != NULL && JSON_NODE_HOLDS_OBJECT(contexts))
    return json_object_ref(o);
  JsonObject *config = json_object_new();
  const char *url = oak_str(o, "url", NULL);
  if (url != NULL && *url) { /* the one-root file of older versions: a context named after its root */
    g_autofree char *name = oak_context_default_name(url);
    JsonObject *all = json_object_new();
    json_object_set_object_member(all, name, json_object_ref(o));
    json_object_set_object_member(config, "contexts", all);
    json_object_set_string_member(config, "current", name);
  }
  return config;
}

gboolean oak_config_save(const char *path, JsonObject *config, GError **error) {
  g_autofree char *dir = g_path_get_dirname(path);
  if (g_mkdir_with_parents(dir, 0700) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "create %s: %s", dir, g_strerror(e));
    return FALSE;
  }
  g_autoptr(JsonNode) root = json_node_init_object(json_node_alloc(), config);
  g_autofree char *text = oak_json_text(root, TRUE);
  /* Written to a temporary file created 0600 and renamed: the tokens are never world-readable. */
  return g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error);
}

static gboolean same_url(JsonObject *ctx, const char *url) {
  g_autofree char *u = strip_slashes(oak_str(ctx, "url", ""));
  return strcmp(u, url) == 0;
}

/* The context holding credentials for url: the current one when it is for url, else the first. */
static const char *context_for_url(JsonObject *config, const char *url) {
  const char *current = oak_str(config, "current", NULL);
  if (current && context_of(config, current) && same_url(context_of(config, current), url))
    return current;
  JsonNode *all = json_object_get_member(config, "contexts");
  if (all == NULL || !JSON_NODE_HOLDS_OBJECT(all))
    return NULL;
  g_autoptr(GList) names = json_object_get_members(json_node_get_object(all));
  for (GList *l = names; l != NULL; l = l->next)
    if (context_of(config, l->data) && same_url(context_of(config, l->data), url))
      return l->data;
  return NULL;
}

static void load_credentials(OakClient *cl, JsonObject *ctx) {
  if (ctx == NULL || !same_url(ctx, cl->url))
    return; /* credentials of another root */
  cl->token = g_strdup(oak_str(ctx, "token", NULL));
  cl->refresh_token = g_strdup(oak_str(ctx, "refresh_token", NULL));
  cl->username = g_strdup(oak_str(ctx, "username", NULL));
  cl->insecure = oak_bool(ctx, "insecure", FALSE);
}

/* A name not taken by another root's context: base, else base-2, base-3 ... */
static char *free_name(JsonObject *config, const char *base, const char *url) {
  char *name = g_strdup(base);
  for (int i = 2; context_of(config, name) && !same_url(context_of(config, name), url); i++) {
    g_free(name);
    name = g_strdup_printf("%s-%d", base, i);
  }
  return name;
}

gboolean oak_client_save(OakClient *cl, gboolean make_current, GError **error) {
  /* Read again: another command may have changed another context meanwhile. */
  g_autoptr(JsonObject) config = oak_config_load(cl->cred_path, cl->cmd);
  if (config == NULL) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "%s cannot be read", cl->cred_path);
    return FALSE;
  }
  if (cl->context == NULL) {
    g_autofree char *base = oak_context_default_name(cl->url);
    cl->context = free_name(config, base, cl->url);
  }
  JsonObject *ctx = json_object_new();
  json_object_set_string_member(ctx, "url", cl->url);
  json_object_set_string_member(ctx, "username", cl->username ? cl->username : "");
  json_object_set_string_member(ctx, "token", cl->token ? cl->token : "");
  json_object_set_string_member(ctx, "refresh_token", cl->refresh_token ? cl->refresh_token : "");
  if (cl->insecure)
    json_object_set_boolean_member(ctx, "insecure", TRUE);
  JsonNode *all = json_object_get_member(config, "contexts");
  if (all == NULL || !JSON_NODE_HOLDS_OBJECT(all)) {
    json_object_set_object_member(config, "contexts", json_object_new());
    all = json_object_get_member(config, "contexts");
  }
  json_object_set_object_member(json_node_get_object(all), cl->context, ctx);
  if (make_current || oak_str(config, "current", NULL) == NULL)
    json_object_set_string_member(config, "current", cl->context);
  return oak_config_save(cl->cred_path, config, error);
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

/* Picks the root and the context of its credentials: --url, else the selected context's URL, else
 * $OAKUK_URL, else the current context's; credentials from the selected context, else from one made
 * for that URL. A login may name a context that does not exist yet. */
static gboolean choose_context(OakClient *cl, JsonObject *config, const char *url_option, int *exit_code) {
  gboolean login = strcmp(cl->cmd, "oakuk login") == 0;
  const char *sel = oak_context_selected();
  JsonObject *ctx = context_of(config, sel);
  if (sel != NULL && ctx == NULL && login && !oak_context_name_valid(sel)) {
    fprintf(stderr, "%s: --context \"%s\": a context name is 1 to 128 printable characters without spaces\n",
            cl->cmd, sel);
    *exit_code = OAKUK_CLI_USAGE;
    return FALSE;
  }
  if (sel != NULL && ctx == NULL && !login) {
    fprintf(stderr,
            "%s: no context \"%s\" (oakuk context list shows them; oakuk login --context %s makes it)\n",
            cl->cmd, sel, sel);
    *exit_code = OAKUK_CLI_NOT_FOUND;
    return FALSE;
  }
  const char *env = g_getenv("OAKUK_URL");
  JsonObject *current = context_of(config, oak_str(config, "current", NULL));
  const char *url = url_option    ? url_option
                    : ctx         ? oak_str(ctx, "url", "")
                    : env && *env ? env
                    : current     ? oak_str(current, "url", "")
                                  : OAKUK_CLI_DEFAULT_URL;
  g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_NONE, NULL);
  if (uri == NULL ||
      (g_strcmp0(g_uri_get_scheme(uri), "http") != 0 && g_strcmp0(g_uri_get_scheme(uri), "https") != 0) ||
      g_uri_get_host(uri) == NULL || !*g_uri_get_host(uri)) {
    fprintf(stderr, "%s: --url \"%s\" is not an http(s) URL with a host\n", cl->cmd, url);
    *exit_code = OAKUK_CLI_USAGE;
    return FALSE;
  }
  cl->url = strip_slashes(url);
  if (ctx != NULL && !same_url(ctx, cl->url) && !login) {
    fprintf(stderr, "%s: context \"%s\" is for %s, not %s (give one of --context and --url)\n", cl->cmd, sel,
            oak_str(ctx, "url", ""), cl->url);
    *exit_code = OAKUK_CLI_USAGE;
    return FALSE;
  }
  cl->context = g_strdup(sel ? sel : context_for_url(config, cl->url));
  load_credentials(cl, context_of(config, cl->context));
  return TRUE;
}

OakClient *oak_client_new(const char *name, const char *url_option, gboolean json, gboolean need_login,
                          int *exit_code) {
  OakClient *cl = g_new0(OakClient, 1);
  cl->cmd = g_strdup_printf("oakuk %s", name);
  cl->json = json;
  cl->cred_path = oak_config_path();
  g_autoptr(JsonObject) config = oak_config_load(cl->cred_path, cl->cmd);
  if (config == NULL) {
    *exit_code = OAKUK_CLI_FAILED;
    oak_client_free(cl);
    return NULL;
  }
  if (!choose_context(cl, config, url_option, exit_code)) {
    oak_client_free(cl);
    return NULL;
  }
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
  g_free(cl->context);
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
  if (!oak_client_save(cl, FALSE, &error))
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
