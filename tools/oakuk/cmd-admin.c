/* Administration of the control plane: join tokens and users (the root's /api/v1/tokens and
 * /api/v1/users, docs/security.md; docs/cli.md). */
#include "client.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NO_ENTRY                                                                                             \
  { NULL, 0, 0, 0, NULL, NULL, NULL }

#define TTL_MIN_S 60
#define TTL_MAX_S 31536000
#define USES_MAX 1000
#define UNSET G_MININT /* an option not given */

static const char *const roles[] = {"Admin", "Application_Provider", "Infrastructure_Provider"};

static char *json_text(JsonBuilder *b) {
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return oak_json_text(root, FALSE);
}

/* "90", "90s", "15m", "2h", "7d" as seconds; -1 when it is none of these. */
static gint64 parse_duration(const char *text) {
  char *end = NULL;
  guint64 v = g_ascii_strtoull(text, &end, 10);
  if (end == text || v > G_MAXINT32)
    return -1;
  gint64 unit = 0;
  switch (*end) {
  case '\0':
  case 's': unit = 1; break;
  case 'm': unit = 60; break;
  case 'h': unit = 3600; break;
  case 'd': unit = 86400; break;
  default: return -1;
  }
  if (*end != '\0' && end[1] != '\0')
    return -1;
  return (gint64)v * unit;
}

/* A name as a path segment (no '/', nothing empty). */
static gboolean valid_name(const char *cmd, const char *what, const char *name) {
  if (*name != '\0' && strchr(name, '/') == NULL && strcmp(name, ".") != 0 && strcmp(name, "..") != 0)
    return TRUE;
  fprintf(stderr, "%s: \"%s\" is not a %s\n", cmd, name, what);
  return FALSE;
}

/* ---- token ---- */

static int token_create(const char *kind, const char *ttl, gint uses, const char *cluster, const char *url,
                        gboolean json) {
  const char *cmd = "oakuk token create";
  gint64 ttl_s = ttl ? parse_duration(ttl) : 0;
  const char *problem = strcmp(kind, "cluster") != 0 && strcmp(kind, "node") != 0 ? "expected cluster or node"
                        : ttl && (ttl_s < TTL_MIN_S || ttl_s > TTL_MAX_S)
                            ? "--ttl: a duration from 60s (1m) to 365d, as 90s, 15m, 2h or 7d"
                        : uses != UNSET && (uses < 1 || uses > USES_MAX) ? "--uses: from 1 to 1000"
                        : strcmp(kind, "node") == 0 && cluster == NULL
                            ? "a node token is made by its cluster: give --cluster NAME"
                        : strcmp(kind, "cluster") == 0 && cluster != NULL
                            ? "--cluster goes with node tokens only"
                            : NULL;
  if (problem == NULL && cluster != NULL && !valid_name(cmd, "cluster name", cluster))
    return OAKUK_CLI_USAGE;
  if (problem != NULL) {
    fprintf(stderr, "%s: %s\n", cmd, problem);
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = oak_client_new("token create", url, json, TRUE, &rc);
  if (cl == NULL)
    return rc;
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "kind");
  json_builder_add_string_value(b, kind);
  if (ttl != NULL) {
    json_builder_set_member_name(b, "ttl_s");
    json_builder_add_int_value(b, ttl_s);
  }
  if (uses != UNSET) {
    json_builder_set_member_name(b, "uses");
    json_builder_add_int_value(b, uses);
  }
  if (cluster != NULL) {
    json_builder_set_member_name(b, "cluster");
    json_builder_add_string_value(b, cluster);
  }
  json_builder_end_object(b);
  g_autofree char *body = json_text(b);
  g_autoptr(JsonNode) n = oak_request(cl, "POST", "/api/v1/tokens", body, NULL, &rc);
  if (n == NULL)
    return rc;
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
  const char *token = oak_str(o, "token", NULL);
  if (token == NULL || *token == '\0') {
    fprintf(stderr, "%s: the root's answer has no token\n", cmd);
    return OAKUK_CLI_FAILED;
  }
  if (json)
    oak_print_json(n);
  else
    printf("%s\n", token); /* alone on stdout: `oakuk token create ... > file` */
  return OAKUK_CLI_OK;
}

int oakuk_cmd_token(int argc, char **argv) {
  g_autofree char *url = NULL, *ttl = NULL, *cluster = NULL;
  gboolean json = FALSE;
  gint uses = UNSET;
  GOptionEntry entries[] = {
      OAKUK_CLIENT_OPTIONS(url, json),
      {"ttl", 0, 0, G_OPTION_ARG_STRING, &ttl, "How long the token is valid (default 1h; 1m to 365d)",
       "DURATION"},
      {"uses", 0, 0, G_OPTION_ARG_INT, &uses, "How many registrations it allows (default 1, at most 1000)",
       "N"},
      {"cluster", 0, 0, G_OPTION_ARG_STRING, &cluster, "The cluster a node token is for", "NAME"},
      NO_ENTRY,
  };
  if (!oak_parse("token", "create cluster|node",
                 "Create a join token: for a new cluster (oakuk-cluster --join-token), or for a new node of "
                 "cluster NAME (oakuk-node --join-token). The token alone is printed on stdout.",
                 entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  if (argc != 3 || strcmp(argv[1], "create") != 0) {
    fprintf(stderr,
            "oakuk token: expected: create cluster|node [--ttl DURATION] [--uses N] [--cluster NAME]\n");
    return OAKUK_CLI_USAGE;
  }
  return token_create(argv[2], ttl, uses, cluster, url, json);
}

/* ---- user ---- */

static char *new_password(const char *name, const char *file, int *exit_code) {
  if (file != NULL) {
    g_autoptr(GError) error = NULL;
    char *pw = oak_read_first_line(file, &error);
    if (pw == NULL) {
      fprintf(stderr, "oakuk user create: --password-file: %s\n", error->message);
      *exit_code = OAKUK_CLI_FAILED;
    }
    return pw;
  }
  FILE *tty = oak_tty_open();
  if (tty == NULL) {
    fprintf(stderr, "oakuk user create: no terminal to ask %s's password on; use --password-file FILE\n",
            name);
    *exit_code = OAKUK_CLI_USAGE;
    return NULL;
  }
  g_autofree char *prompt = g_strdup_printf("Password for the new user %s: ", name);
  g_autofree char *pw = oak_tty_ask(tty, prompt, TRUE);
  g_autofree char *again = pw ? oak_tty_ask(tty, "The same again: ", TRUE) : NULL;
  fclose(tty);
  if (pw == NULL || again == NULL || strcmp(pw, again) != 0) {
    fprintf(stderr, "oakuk user create: %s\n", pw && again ? "the passwords differ" : "no password given");
    *exit_code = OAKUK_CLI_USAGE;
    return NULL;
  }
  return g_steal_pointer(&pw);
}

static int user_create(const char *name, const char *role, const char *pwfile, const char *url,
                       gboolean json) {
  if (!valid_name("oakuk user create", "user name", name))
    return OAKUK_CLI_USAGE;
  if (role == NULL || !g_strv_contains(roles, role)) {
    fprintf(stderr,
            "oakuk user create: %s: give --role Admin, Application_Provider or Infrastructure_Provider\n",
            role ? "unknown role" : "no role");
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = oak_client_new("user create", url, json, TRUE, &rc);
  if (cl == NULL)
    return rc;
  g_autofree char *pw = new_password(name, pwfile, &rc);
  if (pw == NULL)
    return rc;
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "username");
  json_builder_add_string_value(b, name);
  json_builder_set_member_name(b, "password");
  json_builder_add_string_value(b, pw);
  json_builder_set_member_name(b, "role");
  json_builder_add_string_value(b, role);
  json_builder_end_object(b);
  g_autofree char *body = json_text(b);
  memset(pw, 0, strlen(pw));
  g_autoptr(JsonNode) n = oak_request(cl, "POST", "/api/v1/users", body, NULL, &rc);
  memset(body, 0, strlen(body));
  if (n == NULL)
    return rc;
  if (json)
    oak_print_json(n);
  else
    printf("user %s created (%s)\n", name, role);
  return OAKUK_CLI_OK;
}

static int user_list(const char *url, OakOutput format) {
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = oak_client_new("user list", url, format == OAK_OUTPUT_JSON, TRUE, &rc);
  if (cl == NULL)
    return rc;
  g_autoptr(JsonNode) n = oak_request(cl, "GET", "/api/v1/users", NULL, NULL, &rc);
  if (n == NULL)
    return rc;
  if (!JSON_NODE_HOLDS_ARRAY(n)) {
    fprintf(stderr, "oakuk user list: GET /api/v1/users: expected a list\n");
    return OAKUK_CLI_FAILED;
  }
  if (format == OAK_OUTPUT_JSON || format == OAK_OUTPUT_YAML) {
    oak_print_as(format, n);
    return OAKUK_CLI_OK;
  }
  const char *headers[] = {"USER", "ROLE", NULL}; /* wide: there is nothing more to show */
  g_autoptr(OakTable) t = oak_table_new(headers);
  JsonArray *list = json_node_get_array(n);
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *u = json_array_get_object_element(list, i);
    const char *cells[] = {oak_str(u, "username", "?"), oak_str(u, "role", "?")};
    oak_table_add(t, cells);
  }
  oak_table_print(t, stdout);
  return OAKUK_CLI_OK;
}

static int user_remove(const char *name, const char *url, gboolean json) {
  if (!valid_name("oakuk user remove", "user name", name))
    return OAKUK_CLI_USAGE;
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = oak_client_new("user remove", url, json, TRUE, &rc);
  if (cl == NULL)
    return rc;
  g_autofree char *escaped = g_uri_escape_string(name, NULL, FALSE);
  g_autofree char *path = g_strdup_printf("/api/v1/users/%s", escaped);
  g_autoptr(JsonNode) n = oak_request(cl, "DELETE", path, NULL, NULL, &rc);
  if (n == NULL)
    return rc;
  if (json)
    oak_print_json(n);
  else
    printf("user %s removed\n", name);
  return OAKUK_CLI_OK;
}

int oakuk_cmd_user(int argc, char **argv) {
  g_autofree char *url = NULL, *role = NULL, *pwfile = NULL, *output = NULL;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
      OAKUK_CLIENT_OPTIONS(url, json),
      {"output", 'o', 0, G_OPTION_ARG_STRING, &output, "list: output format json, yaml or wide", "FORMAT"},
      {"role", 0, 0, G_OPTION_ARG_STRING, &role,
       "create: Admin, Application_Provider or Infrastructure_Provider", "ROLE"},
      {"password-file", 0, 0, G_OPTION_ARG_FILENAME, &pwfile,
       "create: the new user's password is the first line of FILE (else asked on the terminal)", "FILE"},
      NO_ENTRY,
  };
  if (!oak_parse("user", "create NAME --role ROLE | list | remove NAME",
                 "Manage the root's users (Admin only). Passwords have at least 12 characters and are never "
                 "command-line arguments.",
                 entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  const char *verb = argc >= 2 ? argv[1] : "";
  OakOutput format;
  if (output != NULL && strcmp(verb, "list") != 0) {
    fprintf(stderr, "oakuk user %s: -o goes with list only (else use --json)\n", verb);
    return OAKUK_CLI_USAGE;
  }
  if (!oak_output_parse("user", output, json, &format))
    return OAKUK_CLI_USAGE;
  if (strcmp(verb, "create") == 0 && argc == 3)
    return user_create(argv[2], role, pwfile, url, json);
  if ((role != NULL || pwfile != NULL) && strcmp(verb, "create") != 0) {
    fprintf(stderr, "oakuk user %s: --role and --password-file go with create only\n", verb);
    return OAKUK_CLI_USAGE;
  }
  if (strcmp(verb, "list") == 0 && argc == 2)
    return user_list(url, format);
  if (strcmp(verb, "remove") == 0 && argc == 3)
    return user_remove(argv[2], url, json);
  fprintf(stderr,
          "oakuk user: expected create NAME --role ROLE [--password-file FILE], list, or remove NAME\n");
  return OAKUK_CLI_USAGE;
}
