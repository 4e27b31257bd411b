/* libFuzzer harness for oakuk-root's HTTP handling: each input is what one client sends on one
 * connection, served the whole way (libsoup's parser, daemons/common/http.c's limits, the router and
 * the handlers) by a root set up as its main.c does, --insecure, with its store in a temporary state
 * directory. "@TOKEN@" in an input becomes an access token of user Admin, so that the handlers behind
 * authentication are fuzzed too. No input can make the root dial out: calls go only to registered
 * clusters, and registering one takes a join token or cluster secret, of which there is none. */
#include "api.h"
#include "guard.h"
#include "link.h"
#include "loop.h"
#include "pki.h"
#include "store.h"

#include "fuzz-http.h"

#include <stdlib.h>

/* The daemon's set-up functions are static in its main.c: the harness takes that file in, without
 * its main(). */
int oakuk_root_main(int argc, char **argv);
#define main oakuk_root_main
#include "../../daemons/root/main.c"
#undef main

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static Root root;
static char *admin_token;

static void fail(const char *what, GError *error) {
  fprintf(stderr, "fuzz-http-root: %s: %s\n", what, error ? error->message : "failed");
  abort();
}

static void teardown(void) {
  g_autofree char *dir = g_strdup(root.state_dir);
  root_free(&root);
  g_free(admin_token);
  if (dir != NULL)
    fuzz_http_remove_tree(dir);
}

/* What auth-api.c issues at a login of Admin, valid for a day. */
static char *issue_admin_token(void) {
  g_autoptr(JsonObject) claims = json_object_new();
  gint64 now = root_now_ms() / 1000;
  json_object_set_string_member(claims, "sub", "Admin");
  json_object_set_string_member(claims, "typ", "access");
  json_object_set_string_member(claims, "role", "Admin");
  json_object_set_int_member(claims, "iat", now);
  json_object_set_int_member(claims, "exp", now + 86400);
  json_object_set_string_member(claims, "jti", "fuzz");
  return od_jwt_sign(root.secret, sizeof root.secret, claims);
}

/* main() of daemons/root/main.c with --insecure and an empty configuration, listening on loopback only
 * (the harness hands its connections to the server itself). */
static void setup(void) {
  fuzz_http_quiet_logs();
  g_autoptr(GError) error = NULL;
  g_autoptr(GKeyFile) config = g_key_file_new();
  TlsArgs tls = {.insecure = TRUE};
  g_autofree char *listen = fuzz_http_loopback_listen();
  root.state_dir = g_dir_make_tmp("oakuk-fuzz-root-XXXXXX", &error);
  if (root.state_dir == NULL)
    fail("state dir", error);
  atexit(teardown);
  root.started_ms = root_now_ms();
  root.http_counts = g_hash_table_new(g_direct_hash, g_direct_equal);
  if (!tls_config(config, &tls, &error) || !load_config(config, &root.cfg, root.state_dir, &error) ||
      !open_state(&root, FALSE, &error))
    fail("state", error);
  root.server = soup_server_new("server-header", "oakuk-root", NULL);
  if (!setup_tls(&root, &tls, listen, &error))
    fail("tls", error);
  tls_args_clear(&tls);
  root.link = link_new(root.ca);
  root.guard = guard_new();
  root.loop = loop_new(&root);
  load_clusters(&root);
  root_api_register(&root);
  if (!od_http_server_listen(root.server, listen, &error))
    fail("listen", error);
  loop_start(root.loop);
  admin_token = issue_admin_token();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (root.server == NULL)
    setup();
  const char *const subst[] = {"@TOKEN@", admin_token, NULL};
  g_autoptr(GBytes) request = fuzz_http_substitute(data, size, subst);
  fuzz_http_serve(root.server, request);
  return 0;
}
