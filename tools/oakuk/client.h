/* The `oakuk` client side of the root's native API (/api/v1/, docs/api.md): common options,
 * stored credentials, JSON requests with automatic token refresh, tables. */
#ifndef OAKUK_CLI_CLIENT_H
#define OAKUK_CLI_CLIENT_H

#include "oakuk-cli.h"
#include "trust.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <oakuk/oakuk.h>
#include <stdio.h>

/* Exit statuses of the control-plane commands, beyond those of oakuk-cli.h. */
#define OAKUK_CLI_INVALID 2 /* bad command line or invalid descriptor (same as OAKUK_CLI_USAGE) */
/* not logged in, the root refused the credentials, or its certificate was refused */
#define OAKUK_CLI_AUTH 4
#define OAKUK_CLI_UNREACHABLE 5 /* the root could not be reached */
#define OAKUK_CLI_NOT_FOUND 6   /* unknown service, instance, cluster, user, application or context */

#define OAKUK_CLI_DEFAULT_URL "https://127.0.0.1:10000"

typedef struct {
  char *cmd;       /* "oakuk status": prefix of every message */
  char *url;       /* root base URL without trailing slash */
  char *cred_path; /* $XDG_CONFIG_HOME/oakuk/credentials.json */
  char *context;   /* the context the credentials belong to (NULL: none yet; login names one) */
  char *token;     /* NULL until loaded */
  char *refresh_token;
  char *username;
  gboolean insecure;  /* the credentials were made by oakuk login --insecure (plain http) */
  gboolean json;      /* --json: machine-readable output */
  char *ca_path;      /* <config>/oakuk/ca-<host>-<port>.crt: the CA trusted for url */
  gboolean ca_stored; /* pin.ca came from ca_path */
  OakPin pin;         /* what an https request trusts */
  SoupSession *session;
} OakClient;

/* Options every control-plane command takes; add them to a command's GOptionEntry list. */
#define OAKUK_CLIENT_OPTIONS(url_var, json_var)                                                              \
  {                                                                                                          \
      "url",                                                                                                 \
      0,                                                                                                     \
      0,                                                                                                     \
      G_OPTION_ARG_STRING,                                                                                   \
      &(url_var),                                                                                            \
      "Root URL (default $OAKUK_URL, the URL of the current context, or " OAKUK_CLI_DEFAULT_URL ")",         \
      "URL"},                                                                                                \
      {"context",                                                                                            \
       0,                                                                                                    \
       0,                                                                                                    \
       G_OPTION_ARG_STRING,                                                                                  \
       &oak_context_option,                                                                                  \
       "Use the credentials and root of context NAME (default $OAKUK_CONTEXT, else the current one)",        \
       "NAME"},                                                                                              \
  {                                                                                                          \
    "json", 0, 0, G_OPTION_ARG_NONE, &(json_var), "Print JSON instead of a table", NULL                      \
  }

/* -o: how a list command prints what it got. */
typedef enum { OAK_OUTPUT_TABLE, OAK_OUTPUT_WIDE, OAK_OUTPUT_JSON, OAK_OUTPUT_YAML } OakOutput;
#define OAKUK_OUTPUT_OPTION(text_var)                                                                        \
  {                                                                                                          \
    "output", 'o', 0, G_OPTION_ARG_STRING, &(text_var),                                                      \
        "Output format: json, yaml, or wide (a table with more columns)", "FORMAT"                           \
  }
/* The format of -o text (NULL: a table) and --json (the same as -o json); FALSE after printing
 * why (bad usage). */
gboolean oak_output_parse(const char *cmd, const char *text, gboolean json, OakOutput *out);
/* node as YAML (block style; every string that could read as something else is double-quoted). */
char *oak_yaml_text(JsonNode *node);
/* Prints node as indented JSON or as YAML. */
void oak_print_as(OakOutput format, JsonNode *node);

/* The context selected for this command: --context, else $OAKUK_CONTEXT; NULL when neither. */
const char *oak_context_selected(void);
/* 1 to 128 printable characters, no spaces. */
gboolean oak_context_name_valid(const char *name);
/* The name a login gives a root's context when none is chosen: host:port of its URL. */
char *oak_context_default_name(const char *url);
/* The credentials file: {"current": NAME, "contexts": {NAME: {url, username, token, refresh_token,
 * insecure?}}}; the file of one root that older versions wrote is read as one context named after
 * that root. Returns an empty object when there is no file; NULL (after printing why) when it
 * cannot be read. */
JsonObject *oak_config_load(const char *path, const char *cmd);
gboolean oak_config_save(const char *path, JsonObject *config, GError **error);
/* $XDG_CONFIG_HOME/oakuk/credentials.json */
char *oak_config_path(void);

/* Parses argv with entries (ending with a NULL entry) and the usage string; on failure prints the
 * message and returns FALSE. *argc/argv then hold the positional arguments (argv[0] is the command). */
gboolean oak_parse(const char *name, const char *params, const char *summary, GOptionEntry *entries,
                   int *argc, char ***argv);

/* Creates the client for command name ("status"): picks the URL and loads the credentials and the
 * CA stored for that URL (when need_login, the absence of either is an error, and so is an http URL
 * whose credentials were not made with --insecure: returns NULL with *exit_code set). */
OakClient *oak_client_new(const char *name, const char *url_option, gboolean json, gboolean need_login,
                          int *exit_code);
void oak_client_free(OakClient *cl);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OakClient, oak_client_free)

/* Writes token, refresh token, user, URL and the insecure mark to the client's context in the
 * credentials file (mode 0600), keeping the other contexts; make_current also makes it the current
 * context. */
gboolean oak_client_save(OakClient *cl, gboolean make_current, GError **error);

/* Sends method path (e.g. "/api/v1/services") with an optional JSON body (body_text, or NULL) and
 * the bearer token; a 401 is retried once after refreshing the token. Returns the parsed answer
 * (JSON null for an empty body) on 2xx. On failure prints "<cmd>: <reason>" and returns NULL with
 * *exit_code set (unreachable, auth, not found, failed). *status gets the HTTP status (0 when the
 * root was not reached); may be NULL. */
JsonNode *oak_request(OakClient *cl, const char *method, const char *path, const char *body_text,
                      guint *status, int *exit_code);
/* Like oak_request without authentication or refresh (login). */
JsonNode *oak_request_anon(OakClient *cl, const char *method, const char *path, const char *body_text,
                           guint *status, int *exit_code);

/* https: the top of the certificate chain the root presents, from a handshake alone (the request
 * is refused before anything is sent); NULL after printing why (*exit_code set). */
GTlsCertificate *oak_client_probe_ca(OakClient *cl, int *exit_code);

/* Finds a service by id, job name (app.appns.svc.svcns) or unique service name. Returns a new
 * reference to its document, or NULL after printing why (*exit_code set). */
JsonObject *oak_find_service(OakClient *cl, const char *what, int *exit_code);

/* Small JSON readers that accept absent members. */
const char *oak_str(JsonObject *o, const char *key, const char *def);
gint64 oak_int(JsonObject *o, const char *key, gint64 def);
double oak_num(JsonObject *o, const char *key, double def);
gboolean oak_bool(JsonObject *o, const char *key, gboolean def);
const char *oak_service_id(JsonObject *service);
/* n's object, or NULL when n is not one. */
JsonObject *oak_object_of(JsonNode *n);
/* o's member key when it is an array, else NULL. */
JsonArray *oak_array_member(JsonObject *o, const char *key);
/* An instance entry being removed (UNDEPLOYED until its cluster confirms). */
gboolean oak_instance_leaving(JsonObject *in);
/* The instance_list entry n of service sid now (a new reference); NULL with *rc 0 when it is gone,
 * NULL with *rc set when the root did not answer. */
JsonObject *oak_fetch_instance(OakClient *cl, const char *sid, gint64 n, int *rc);
/* The client of command cmd (logged in) and the service what names (id, job name or unique name);
 * NULL with *exit_code set when either fails (*client may then still be set). */
JsonObject *oak_client_service(const char *cmd, const char *url, gboolean json, const char *what,
                               OakClient **client, int *exit_code);
/* An instance entry that is running and found ready by its node (RUNNING alone says only that QEMU
 * or runc is up), or a one-shot one that completed: done waiting. */
gboolean oak_instance_up(JsonObject *in);
/* Replaces the instances of service sid that run another revision than its current one, one at a
 * time, each only after its replacement is running and ready; on failure rolls the service back
 * to the revision the instance being replaced ran (rollout.c, docs/cli.md "apply"). Progress goes
 * to stdout (not with cl->json); report gets {replaced: [{old, new}], rolled_back_to?, error?}.
 * OAKUK_CLI_OK when every instance runs the current revision. */
int oak_rollout(OakClient *cl, const char *sid, const char *job_name, gint64 timeout_s, JsonObject *report);
void oak_print_json(JsonNode *node);
/* Prints {"key": list} as oak_print_json does. */
void oak_print_json_list(const char *key, JsonArray *list);
/* Serializes node as valid JSON whatever its strings hold (control characters escaped). */
char *oak_json_text(JsonNode *node, gboolean pretty);
/* The strict check (oakuk_json_check), then json-glib: the root, or NULL with error set. */
JsonNode *oak_json_parse(const char *text, gsize len, GError **error);

/* A text table: columns sized to their content; the last column is cut to the terminal width. */
typedef struct OakTable OakTable;
OakTable *oak_table_new(const char *const *headers);
void oak_table_add(OakTable *t, const char *const *cells);
void oak_table_print(OakTable *t, FILE *to);
void oak_table_free(OakTable *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OakTable, oak_table_free)

/* Opens the controlling terminal for a question, or returns NULL when there is none. */
FILE *oak_tty_open(void);
/* Asks on the terminal (echo off when secret); NULL at end of input. */
char *oak_tty_ask(FILE *tty, const char *prompt, gboolean secret);
/* The first line of a file (a password file); NULL with error. */
char *oak_read_first_line(const char *path, GError **error);

/* Width of the terminal on stdout ($COLUMNS when set), or 0 when unlimited (not a terminal). */
guint oak_terminal_width(void);

/* SIGINT/SIGTERM end waits instead of the process; oak_nap sleeps ms and returns FALSE once one
 * arrived. */
void oak_catch_interrupts(void);
gboolean oak_nap(guint ms);

#endif
