/* libFuzzer harness for oakuk-cluster's HTTP handling: each input is what one client (the root, a
 * node, a user) sends on one connection, served the whole way (libsoup's parser,
 * daemons/common/http.c's limits, the router and the handlers) by a cluster set up as its main.c does,
 * --insecure, with its store in a temporary state directory and registered with a root as if
 * root.c had done it. "@TOKEN@" in an input becomes the credential the root holds for the cluster and
 * "@JOIN@" a node join token, so that the root's calls and node registrations get past
 * authentication. Nothing reaches the network: the broker is neither started nor connected to (no
 * MQTT), and the root's URL is a closed port on loopback. */
#include "loop.h"

#include "fuzz-http.h"

#include <stdlib.h>

/* The daemon's set-up functions are static in its main.c: the harness takes that file in, without
 * its main(). */
int oakuk_cluster_main(int argc, char **argv);
#define main oakuk_cluster_main
#include "../../daemons/cluster/main.c"
#undef main

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROOT_CREDENTIAL "oakukc.0123456789abcdef01234567.fuzz-root-credential"

static Cluster cluster;
static char *join_token, *join_hash;

static void fail(const char *what, GError *error) {
  fprintf(stderr, "fuzz-http-cluster: %s: %s\n", what, error ? error->message : "failed");
  abort();
}

static void teardown(void) {
  g_autofree char *dir = g_strdup(cluster.state_dir);
  cluster_free(&cluster);
  g_free(join_token);
  g_free(join_hash);
  if (dir != NULL)
    fuzz_http_remove_tree(dir);
}

/* A node join token with uses left; a new one when the inputs used it up. */
static void refresh_join_token(void) {
  if (join_hash != NULL && store_join_token_usable(cluster.store, join_hash, cluster_wall_ms() / 1000))
    return;
  g_clear_pointer(&join_token, g_free);
  g_clear_pointer(&join_hash, g_free);
  g_autoptr(GError) error = NULL;
  gint64 expires_ms = 0;
  if (loop_join_token_new(&cluster, 86400, 1000, &join_token, &expires_ms, &error) != SOUP_STATUS_CREATED)
    fail("join token", error);
  join_hash = loop_join_token_hash(join_token);
}

/* main() and run() of daemons/cluster/main.c with --insecure and without the broker and the link to
 * the root, listening on loopback only (the harness hands its connections to the server itself). */
static void setup(void) {
  fuzz_http_quiet_logs();
  g_autoptr(GError) error = NULL;
  g_autofree char *state_dir = g_dir_make_tmp("oakuk-fuzz-cluster-XXXXXX", &error);
  if (state_dir == NULL)
    fail("state dir", error);
  g_autofree char *listen = fuzz_http_loopback_listen();
  Args a = {.state_dir = state_dir,
            .listen = listen,
            .root_url = "http://127.0.0.1:1",
            .name = "fuzz",
            .mosquitto = "/nonexistent/mosquitto",
            .insecure = TRUE};
  Cluster *c = &cluster;
  c->config = g_key_file_new();
  cluster_tables_new(c);
  if (!load_settings(c, &a, &error) || !open_state(c, &error))
    fail("state", error);
  atexit(teardown);
  if (!derive_urls(c, &error) || !check_schemes(c, &error))
    fail("urls", error);
  load_registration(c);
  c->loop = g_main_loop_new(NULL, FALSE);
  c->session = od_tls_session_new();
  g_object_set(c->session, "timeout", 10, "idle-timeout", 30, "user-agent", "oakuk-cluster", NULL);
  soup_session_set_proxy_resolver(c->session, NULL);
  if (!start_server(c, &error) || !broker_prepare(c, &error))
    fail("server", error);
  loop_start(c);
  /* As root.c keeps a registration: nodes get /24s of the subnet, the root's calls the credential. */
  c->cluster_id = g_strdup("0123456789abcdef01234567");
  c->token = g_strdup(ROOT_CREDENTIAL);
  c->subnet = g_strdup("10.18.16.0/20");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (cluster.server == NULL)
    setup();
  refresh_join_token();
  const char *const subst[] = {"@TOKEN@", ROOT_CREDENTIAL, "@JOIN@", join_token, NULL};
  g_autoptr(GBytes) request = fuzz_http_substitute(data, size, subst);
  fuzz_http_serve(cluster.server, request);
  return 0;
}
