/* oakuk-node: options, state (node.json), registration with the cluster, the node's network and
 * runtimes, MQTT topics, periodic reports and signals. */
#include "join.h"
#include "logs.h"
#include "node.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <netdb.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define REGISTER_BACKOFF_MAX_S 16

char *node_state_path(Node *n, const char *leaf) {
  return g_build_filename(n->state_dir, leaf, NULL);
}

void node_reject(const char *topic, const char *problem) {
  od_log(G_LOG_LEVEL_WARNING, "mqtt-reject", "topic", topic, "msg", problem, NULL);
}

JsonNode *node_parse_payload(const char *topic, GBytes *payload, JsonNodeType want) {
  gsize len = 0;
  const char *data = g_bytes_get_data(payload, &len);
  g_autofree char *problem = NULL;
  JsonNode *root = node_payload_parse(data, len, want, &problem);
  if (root == NULL)
    node_reject(topic, problem);
  return root;
}

gboolean node_publish(Node *n, const char *leaf, const char *text) {
  if (n->mqtt == NULL || !n->mqtt_up)
    return FALSE;
  g_autofree char *topic = g_strdup_printf("nodes/%s/%s", n->id, leaf);
  g_autoptr(GError) error = NULL;
  if (!od_mqtt_publish(n->mqtt, topic, text, strlen(text), FALSE, NULL, NULL, &error)) {
    od_log(G_LOG_LEVEL_DEBUG, "publish", "topic", topic, "msg", error->message, NULL);
    return FALSE;
  }
  return TRUE;
}

/* ---- settings ---- */

typedef struct {
  char *state_dir, *cluster_url, *join_token, *join_token_file, *name, *underlay_ip, *virtualization,
      *insecure_registries, *qemu_user, *image_file_dirs, *image_cache_max, *listen;
  gboolean allow_emulation, stop_instances, leave, insecure, prune_images;
  gint report_interval;
  const char *config_path; /* borrowed from the common options */
} Args;

/* Every key [node] may hold (docs/node.md, "Configuration"); any other is refused at start. */
static const char *const node_config_keys[] = {"state_dir",
                                               "cluster_url",
                                               "join_token",
                                               "join_token_file",
                                               "name",
                                               "underlay_ip",
                                               "listen",
                                               "report_interval",
                                               "allow_emulation",
                                               "stop_instances",
                                               "leave",
                                               "insecure",
                                               "virtualization",
                                               "insecure_registries",
                                               "qemu_user",
                                               "image_file_dirs",
                                               "image_cache_max",
                                               NULL};

/* Every key a [registry HOST[:PORT]] group may hold (docs/node.md, "Registries"). */
static const char *const registry_config_keys[] = {"username", "password_file", NULL};

/* The local /healthz and /metrics endpoint (api.c). */
#define NODE_LISTEN_DEFAULT "127.0.0.1:10200"

static void args_clear(Args *a) {
  char **strs[] = {&a->state_dir, &a->cluster_url,     &a->join_token,      &a->join_token_file,
                   &a->name,      &a->underlay_ip,     &a->virtualization,  &a->insecure_registries,
                   &a->qemu_user, &a->image_file_dirs, &a->image_cache_max, &a->listen};
  for (gsize k = 0; k < G_N_ELEMENTS(strs); k++)
    g_clear_pointer(strs[k], g_free);
}

/* "--virtualization container,unikernel" (config [node] virtualization): what this node offers.
 * Default: both, each where the machine can (runc present; KVM, or emulation allowed). */
static gboolean parse_virtualization(Node *n, GKeyFile *kf, const char *arg, GError **error) {
  g_autofree char *conf = NULL;
  if (arg == NULL && !od_config_string(kf, "node", "virtualization", NULL, &conf, error))
    return FALSE;
  const char *text = arg ? arg : conf;
  n->offer_container = n->offer_unikernel = text == NULL;
  if (text == NULL)
    return TRUE;
  g_auto(GStrv) parts = g_strsplit(text, ",", -1);
  for (char **p = parts; *p; p++) {
    int32_t v = oakuk_virt_from_name(g_strstrip(*p));
    if (v == OAKUK_VIRT_CONTAINER)
      n->offer_container = TRUE;
    else if (v == OAKUK_VIRT_UNIKERNEL)
      n->offer_unikernel = TRUE;
    else {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                  "virtualization \"%s\": expected container and/or unikernel", *p);
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean config_bool(GKeyFile *kf, const char *key, gboolean *out, GError **error) {
  if (!g_key_file_has_key(kf, "node", key, NULL))
    return TRUE;
  g_autoptr(GError) local = NULL;
  gboolean v = g_key_file_get_boolean(kf, "node", key, &local);
  if (local != NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "[node] %s: %s", key, local->message);
    return FALSE;
  }
  *out = v;
  return TRUE;
}

static gboolean read_token_file(const char *path, char **out, GError **error) {
  g_autoptr(GError) local = NULL;
  if (!g_file_get_contents(path, out, NULL, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "join token file %s: %s", path, local->message);
    return FALSE;
  }
  g_strstrip(*out);
  return TRUE;
}

/* --qemu-user (config qemu_user, default oakuk-qemu): the unprivileged user QEMU runs as; "" runs it
 * as root, which is said at every start. --image-file-dirs (config image_file_dirs): the only
 * directories file:// images and oci-archive:file:// containers may come from (default: none). */
static void registry_auth_free(gpointer p) {
  NodeRegistryAuth *a = p;
  g_free(a->username);
  if (a->password)
    memset(a->password, 0, strlen(a->password));
  g_free(a->password);
  g_free(a);
}

/* [registry HOST[:PORT]] groups: username and password_file (its first line; the password itself
 * never sits in the configuration). Every group is checked at start, naming it when wrong. */
static gboolean load_registry_auth(Node *n, GKeyFile *kf, GError **error) {
  g_clear_pointer(&n->registry_auth, g_hash_table_unref);
  n->registry_auth = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, registry_auth_free);
  g_auto(GStrv) groups = kf ? g_key_file_get_groups(kf, NULL) : NULL;
  for (char **g = groups; g && *g; g++) {
    if (!g_str_has_prefix(*g, "registry "))
      continue;
    const char *host = *g + strlen("registry ");
    if (!*host || strpbrk(host, "/@ ")) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "config [%s]: expected [registry HOST[:PORT]]", *g);
      return FALSE;
    }
    g_autofree char *user = NULL, *pwfile = NULL;
    if (!od_config_string(kf, *g, "username", NULL, &user, error) ||
        !od_config_string(kf, *g, "password_file", NULL, &pwfile, error))
      return FALSE;
    if (!user || !*user || !pwfile) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "config [%s]: needs username and password_file", *g);
      return FALSE;
    }
    g_autofree char *text = NULL;
    g_autoptr(GError) local = NULL;
    if (!g_file_get_contents(pwfile, &text, NULL, &local)) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "config [%s] password_file: %s", *g, local->message);
      return FALSE;
    }
    text[strcspn(text, "\r\n")] = '\0';
    if (!*text) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "config [%s] password_file %s: its first line is empty",
                  *g, pwfile);
      return FALSE;
    }
    NodeRegistryAuth *ra = g_new0(NodeRegistryAuth, 1);
    ra->username = g_steal_pointer(&user);
    ra->password = g_strdup(text);
    memset(text, 0, strlen(text));
    g_hash_table_replace(n->registry_auth, g_ascii_strdown(host, -1), ra);
  }
  return TRUE;
}

/* The registry a reference names: its first component when that looks like a host (a dot, a port
 * or localhost), else Docker Hub (the distribution spec's rule). */
const NodeRegistryAuth *node_registry_auth(Node *n, const char *reference) {
  if (!n->registry_auth || !reference || g_str_has_prefix(reference, "oci-archive:"))
    return NULL;
  const char *slash = strchr(reference, '/');
  g_autofree char *first = slash ? g_ascii_strdown(reference, slash - reference) : NULL;
  gboolean is_host = first && (strpbrk(first, ".:") || strcmp(first, "localhost") == 0);
  if (is_host) {
    const NodeRegistryAuth *a = g_hash_table_lookup(n->registry_auth, first);
    if (a || (strcmp(first, "registry-1.docker.io") != 0 && strcmp(first, "index.docker.io") != 0))
      return a;
  }
  return g_hash_table_lookup(n->registry_auth, "docker.io");
}

/* --image-cache-max (config image_cache_max): bytes ("512M", "20G"; K/M/G/T are powers of 1024),
 * "N%" of the file system holding the state directory, or 0 for no limit. Default 20%. */
static gboolean parse_cache_max(const char *spec, guint64 *bytes, guint *percent) {
  *bytes = 0;
  *percent = 0;
  char *end = NULL;
  guint64 v = g_ascii_strtoull(spec, &end, 10);
  if (end == spec || v > G_MAXUINT32 * 1024ULL)
    return FALSE;
  if (strcmp(end, "%") == 0) {
    if (v < 1 || v > 100)
      return FALSE;
    *percent = (guint)v;
    return TRUE;
  }
  const char units[] = "KMGT";
  const char *u = *end ? strchr(units, g_ascii_toupper(*end)) : NULL;
  if (*end &&
      (!u || (end[1] && g_ascii_strcasecmp(end + 1, "B") != 0 && g_ascii_strcasecmp(end + 1, "iB") != 0)))
    return FALSE;
  for (const char *k = units; u && k <= u; k++)
    v *= 1024;
  *bytes = v;
  return TRUE;
}

static gboolean load_image_cache_max(Node *n, GKeyFile *kf, Args *a, GError **error) {
  g_autofree char *conf = NULL;
  if (a->image_cache_max == NULL && !od_config_string(kf, "node", "image_cache_max", "20%", &conf, error))
    return FALSE;
  const char *spec = a->image_cache_max ? a->image_cache_max : conf;
  guint64 bytes;
  guint pct;
  if (!parse_cache_max(spec, &bytes, &pct)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "--image-cache-max '%s' (or config image_cache_max): expected a size (512M, 20G), a share of "
                "the disk (1%%..100%%) or 0 for no limit",
                spec);
    return FALSE;
  }
  g_free(n->image_cache_max);
  n->image_cache_max = g_strdup(spec);
  n->image_cache_max_bytes = bytes;
  n->image_cache_max_percent = pct;
  return TRUE;
}

static gboolean load_sandbox_settings(Node *n, GKeyFile *kf, Args *a, GError **error) {
  g_autofree char *user = NULL, *dirs = NULL;
  if ((a->qemu_user == NULL && !od_config_string(kf, "node", "qemu_user", NODE_QEMU_USER, &user, error)) ||
      (a->image_file_dirs == NULL && !od_config_string(kf, "node", "image_file_dirs", NULL, &dirs, error)))
    return FALSE;
  g_free(n->qemu_user);
  n->qemu_user = g_strdup(a->qemu_user ? a->qemu_user : user);
  g_free(n->image_file_dirs);
  n->image_file_dirs = g_strdup(a->image_file_dirs ? a->image_file_dirs : dirs);
  if (n->image_file_dirs && *n->image_file_dirs) {
    g_auto(GStrv) list = g_strsplit(n->image_file_dirs, ":", -1);
    for (char **d = list; *d; d++)
      if (!g_path_is_absolute(*d)) {
        g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--image-file-dirs: '%s' is not an absolute path", *d);
        return FALSE;
      }
  }
  return TRUE;
}

/* --listen ADDR:PORT (config listen, default NODE_LISTEN_DEFAULT) on loopback only, or "off". */
static gboolean load_listen(Node *n, GKeyFile *kf, Args *a, GError **error) {
  g_autofree char *conf = NULL;
  if (a->listen == NULL && !od_config_string(kf, "node", "listen", NODE_LISTEN_DEFAULT, &conf, error))
    return FALSE;
  const char *text = a->listen ? a->listen : conf;
  g_clear_pointer(&n->listen, g_free);
  if (strcmp(text, "off") == 0)
    return TRUE;
  if (!node_api_check_listen(text, error))
    return FALSE;
  n->listen = g_strdup(text);
  return TRUE;
}

static gboolean load_settings(Node *n, Args *a, GError **error) {
  GKeyFile *kf = n->config;
  g_autofree char *token_file = NULL;
  if (!od_config_check_keys(kf, a->config_path, "node", node_config_keys, "registry ", registry_config_keys,
                            error) ||
      !load_listen(n, kf, a, error))
    return FALSE;
#define STR_SETTING(field, arg, key, def)                                                                    \
  if (a->arg != NULL)                                                                                        \
    n->field = g_strdup(a->arg);                                                                             \
  else if (!od_config_string(kf, "node", key, def, &n->field, error))                                        \
    return FALSE;
  STR_SETTING(state_dir, state_dir, "state_dir", "/var/lib/oakuk/node")
  STR_SETTING(cluster_url, cluster_url, "cluster_url", NULL)
  STR_SETTING(join_token, join_token, "join_token", NULL)
  STR_SETTING(name, name, "name", NULL)
  STR_SETTING(underlay_ip, underlay_ip, "underlay_ip", NULL)
#undef STR_SETTING
  if (a->join_token_file == NULL &&
      !od_config_string(kf, "node", "join_token_file", NULL, &token_file, error))
    return FALSE;
  const char *tf = a->join_token_file ? a->join_token_file : token_file;
  if (n->join_token != NULL && n->join_token[0] == '@') {
    g_autofree char *path = g_strdup(n->join_token + 1);
    g_clear_pointer(&n->join_token, g_free);
    if (!read_token_file(path, &n->join_token, error))
      return FALSE;
  } else if (n->join_token == NULL && tf != NULL && !read_token_file(tf, &n->join_token, error)) {
    return FALSE;
  }
  gint64 interval = 0;
  if (!od_config_int(kf, "node", "report_interval", 2, 1, 3600, &interval, error))
    return FALSE;
  if (a->report_interval != 0) {
    if (a->report_interval < 1 || a->report_interval > 3600) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--report-interval %d: must be 1..3600 seconds",
                  a->report_interval);
      return FALSE;
    }
    interval = a->report_interval;
  }
  n->report_interval_ms = interval * 1000;
  n->allow_emulation = FALSE;
  n->stop_instances = FALSE;
  n->leave = FALSE;
  n->insecure = FALSE;
  if (!config_bool(kf, "allow_emulation", &n->allow_emulation, error) ||
      !config_bool(kf, "stop_instances", &n->stop_instances, error) ||
      !config_bool(kf, "leave", &n->leave, error) || !config_bool(kf, "insecure", &n->insecure, error))
    return FALSE;
  n->allow_emulation |= a->allow_emulation;
  n->insecure |= a->insecure;
  n->leave |= a->leave;
  n->stop_instances |= a->stop_instances || n->leave; /* leaving takes what runs here along */
  if (!parse_virtualization(n, kf, a->virtualization, error))
    return FALSE;
  g_autofree char *insecure = NULL;
  if (a->insecure_registries == NULL &&
      !od_config_string(kf, "node", "insecure_registries", NULL, &insecure, error))
    return FALSE;
  g_free(n->insecure_registries);
  n->insecure_registries = g_strdup(a->insecure_registries ? a->insecure_registries : insecure);
  if (!load_sandbox_settings(n, kf, a, error) || !load_registry_auth(n, kf, error) ||
      !load_image_cache_max(n, kf, a, error))
    return FALSE;
  if (a->prune_images)
    return TRUE; /* pruning needs no cluster */
  if (n->cluster_url == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "--cluster-url (or config [node] cluster_url) is required");
    return FALSE;
  }
  g_autoptr(GUri) uri = g_uri_parse(n->cluster_url, G_URI_FLAGS_NONE, NULL);
  if (uri == NULL || g_uri_get_host(uri) == NULL ||
      (g_strcmp0(g_uri_get_scheme(uri), "http") != 0 && g_strcmp0(g_uri_get_scheme(uri), "https") != 0)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--cluster-url '%s' is not an http(s) URL",
                n->cluster_url);
    return FALSE;
  }
  if (!n->insecure && g_strcmp0(g_uri_get_scheme(uri), "http") == 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "--cluster-url %s: plain HTTP needs --insecure (the cluster serves https)", n->cluster_url);
    return FALSE;
  }
  struct in_addr ia;
  if (n->underlay_ip != NULL && inet_pton(AF_INET, n->underlay_ip, &ia) != 1) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--underlay-ip '%s' is not an IPv4 address",
                n->underlay_ip);
    return FALSE;
  }
  return TRUE;
}

/* The source address of the route to the cluster: what other nodes reach us at by default. */
static gboolean route_source(Node *n, GError **error) {
  g_autoptr(GUri) uri = g_uri_parse(n->cluster_url, G_URI_FLAGS_NONE, NULL);
  const char *host = g_uri_get_host(uri);
  int port = g_uri_get_port(uri) > 0 ? g_uri_get_port(uri) : 80;
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_DGRAM}, *res = NULL;
  g_autofree char *ports = g_strdup_printf("%d", port);
  int rc = getaddrinfo(host, ports, &hints, &res);
  if (rc != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "--cluster-url host %s: %s (give --underlay-ip)", host,
                gai_strerror(rc));
    return FALSE;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in local = {0};
  socklen_t len = sizeof local;
  gboolean ok = fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0 &&
                getsockname(fd, (struct sockaddr *)&local, &len) == 0;
  int saved = errno;
  if (fd >= 0)
    close(fd);
  freeaddrinfo(res);
  if (!ok) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "no route to the cluster host %s: %s (give --underlay-ip)",
                host, g_strerror(saved));
    return FALSE;
  }
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &local.sin_addr, buf, sizeof buf);
  n->underlay_ip = g_strdup(buf);
  return TRUE;
}

/* ---- trust: the root CA (docs/security.md, "TLS and identities") ---- */

#define JOIN_TOKEN_PREFIX "oakuk1."
#define FINGERPRINT_LEN 64

static gboolean is_hex(const char *s) {
  for (; *s; s++)
    if (!g_ascii_isxdigit(*s))
      return FALSE;
  return TRUE;
}

static gboolean cluster_is_https(Node *n) {
  return g_ascii_strncasecmp(n->cluster_url, "https:", 6) == 0;
}

static char *ca_path(Node *n) {
  return g_build_filename(n->state_dir, "pki", "ca.crt", NULL);
}

/* A join token is oakuk1.<SHA-256 of the root CA, 64 hex>.<secret, hex>; the fingerprint is what the
 * first contact trusts. A plain secret (no CA to pin) only with --insecure. The token itself is
 * never part of a message. */
static gboolean parse_join_token(Node *n, GError **error) {
  if (n->join_token == NULL)
    return TRUE;
  if (g_str_has_prefix(n->join_token, JOIN_TOKEN_PREFIX)) {
    g_auto(GStrv) parts = g_strsplit(n->join_token + strlen(JOIN_TOKEN_PREFIX), ".", -1);
    if (g_strv_length(parts) == 2 && strlen(parts[0]) == FINGERPRINT_LEN && is_hex(parts[0]) &&
        *parts[1] != '\0' && is_hex(parts[1])) {
      n->ca_fingerprint = g_ascii_strdown(parts[0], -1);
      return TRUE;
    }
  } else if (n->insecure) {
    return TRUE;
  }
  g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
              "the join token is not oakuk1.<64 hex digits: the root CA's SHA-256>.<hex secret>%s",
              n->insecure ? "" : " (a plain secret is accepted only with --insecure)");
  return FALSE;
}

/* Loads <state>/pki/ca.crt when a first contact stored it. A join token naming another CA is
 * refused: joining another control plane means removing the old one's CA on purpose. */
static gboolean load_trust(Node *n, GError **error) {
  g_autofree char *path = ca_path(n);
  if (g_file_test(path, G_FILE_TEST_EXISTS)) {
    g_autofree char *pem = NULL;
    g_autoptr(GError) local = NULL;
    if (!g_file_get_contents(path, &pem, NULL, &local) ||
        (n->ca = od_tls_certificate_from_pem(pem, &local)) == NULL) {
      g_set_error(error, OD_ERROR, OD_ERROR_IO, "%s: %s", path, local->message);
      return FALSE;
    }
    g_autofree char *fp = od_tls_certificate_fingerprint(n->ca);
    if (n->ca_fingerprint != NULL && g_strcmp0(fp, n->ca_fingerprint) != 0) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                  "the join token names the CA %s, but this node trusts the CA %s (%s); remove that file "
                  "(and node.json) to join another control plane",
                  n->ca_fingerprint, fp, path);
      return FALSE;
    }
  }
  if (cluster_is_https(n) && n->ca == NULL && n->ca_fingerprint == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "%s is https, and nothing says which CA to trust: give a join token oakuk1.<CA "
                "fingerprint>.<secret> (or %s from an earlier registration)",
                n->cluster_url, path);
    return FALSE;
  }
  return TRUE;
}

/* Notes the fingerprint of the top of the chain the server presented (for the log when it is
 * refused); decides nothing: the pin's own handler, connected after this one, does. */
static gboolean note_presented_ca(SoupMessage *msg, GTlsCertificate *peer, GTlsCertificateFlags errors,
                                  gpointer data) {
  (void)errors;
  (void)data;
  GTlsCertificate *top = peer;
  for (int depth = 0; depth < 16 && g_tls_certificate_get_issuer(top) != NULL; depth++)
    top = g_tls_certificate_get_issuer(top);
  g_object_set_data_full(G_OBJECT(msg), "node-presented-ca", od_tls_certificate_fingerprint(top), g_free);
  return FALSE;
}

/* Every request to the cluster trusts the stored CA, or at the first contact the certificate with
 * the join token's fingerprint in the server's own chain. */
static void pin(Node *n, SoupMessage *msg) {
  if (!cluster_is_https(n))
    return;
  g_signal_connect(msg, "accept-certificate", G_CALLBACK(note_presented_ca), NULL);
  od_tls_pin_message(msg, n->ca, n->ca ? NULL : n->ca_fingerprint);
}

/* Why a TLS handshake with the cluster failed, naming what we trust and what it presented. */
static char *refused_certificate(Node *n, SoupMessage *msg, const GError *error) {
  const char *presented = g_object_get_data(G_OBJECT(msg), "node-presented-ca");
  g_autofree char *trusted = n->ca ? od_tls_certificate_fingerprint(n->ca) : g_strdup(n->ca_fingerprint);
  g_autofree char *where = n->ca ? ca_path(n) : NULL;
  GUri *uri = soup_message_get_uri(msg);
  return g_strdup_printf("%s: the cluster's certificate is not from the CA %s (%s) or does not name %s; its "
                         "chain ends at %s",
                         error->message, trusted, where ? where : "the join token's", g_uri_get_host(uri),
                         presented ? presented : "(no certificate)");
}

/* After a registration: the CA the connection was verified with becomes <state>/pki/ca.crt (at the
 * first contact), and the answer's "ca" must be that same CA. */
static gboolean adopt_ca(Node *n, SoupMessage *msg, const char *reply_ca, GError **error) {
  g_autofree char *found = n->ca == NULL && cluster_is_https(n) ? od_tls_message_found_ca(msg) : NULL;
  if (found == NULL && n->ca == NULL && reply_ca != NULL && n->insecure) {
    od_log(G_LOG_LEVEL_WARNING, "trust", "msg",
           "trusting the CA of a plain-HTTP registration answer for MQTT over TLS (--insecure)", NULL);
    found = g_strdup(reply_ca);
  }
  if (found != NULL) {
    g_autofree char *dir = g_build_filename(n->state_dir, "pki", NULL);
    g_autofree char *path = ca_path(n);
    g_autoptr(GTlsCertificate) ca = od_tls_certificate_from_pem(found, error);
    if (ca == NULL || !od_state_dir_prepare(dir, error) || !od_tls_write_secret(path, found, error))
      return FALSE;
    n->ca = g_steal_pointer(&ca);
    g_autofree char *fp = od_tls_certificate_fingerprint(n->ca);
    od_log(G_LOG_LEVEL_MESSAGE, "trust", "fingerprint", fp, "file", path, "msg", "stored the root CA", NULL);
  }
  if (reply_ca != NULL && n->ca != NULL) {
    g_autofree char *want = od_tls_certificate_fingerprint(n->ca);
    g_autofree char *got = od_tls_fingerprint(reply_ca, NULL);
    if (g_strcmp0(want, got) != 0) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                  "registration reply: \"ca\" (%s) is not the CA this node trusts (%s)",
                  got ? got : "unreadable", want);
      return FALSE;
    }
  }
  return TRUE;
}

/* ---- node.json ---- */

static void load_identity(Node *n) {
  g_autofree char *path = node_state_path(n, "node.json");
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return;
  g_autoptr(JsonNode) root = od_json_parse(text, -1, NULL);
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  if (o == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "state", "file", path, "msg", "not a JSON object; registering anew", NULL);
    return;
  }
  n->id = g_strdup(json_object_get_string_member_with_default(o, "id", NULL));
  n->mqtt_host = g_strdup(json_object_get_string_member_with_default(o, "mqtt_host", NULL));
  n->mqtt_port = (guint16)json_object_get_int_member_with_default(o, "mqtt_port", 0);
  n->mqtt_username = g_strdup(json_object_get_string_member_with_default(o, "mqtt_username", NULL));
  n->mqtt_password = g_strdup(json_object_get_string_member_with_default(o, "mqtt_password", NULL));
  n->subnet = g_strdup(json_object_get_string_member_with_default(o, "subnet", NULL));
  n->mqtt_tls = json_object_get_boolean_member_with_default(o, "mqtt_tls", FALSE);
  n->registered_id = g_strdup(n->id);
}

/* Credentials in node.json, issued for the id this node runs as (not for an earlier --name). */
static gboolean have_credentials(Node *n) {
  return n->id && g_strcmp0(n->registered_id, n->id) == 0 && n->mqtt_host && n->mqtt_port &&
         n->mqtt_username && n->mqtt_password && n->subnet;
}

static gboolean save_identity(Node *n, GError **error) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "id", n->id);
  json_object_set_string_member(o, "cluster_url", n->cluster_url);
  json_object_set_string_member(o, "mqtt_host", n->mqtt_host);
  json_object_set_int_member(o, "mqtt_port", n->mqtt_port);
  json_object_set_string_member(o, "mqtt_username", n->mqtt_username);
  json_object_set_string_member(o, "mqtt_password", n->mqtt_password);
  json_object_set_string_member(o, "subnet", n->subnet);
  json_object_set_boolean_member(o, "mqtt_tls", n->mqtt_tls);
  g_autoptr(JsonNode) root = json_node_init_object(json_node_alloc(), o);
  g_autofree char *text = od_json_to_string(root, TRUE);
  g_autofree char *path = node_state_path(n, "node.json");
  g_autofree char *tmp = g_strdup_printf("%s.tmp", path);
  int fd = g_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  gboolean ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) && fsync(fd) == 0;
  int saved = errno;
  if (fd >= 0)
    close(fd);
  if (!ok || g_rename(tmp, path) != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "write %s: %s", path, g_strerror(ok ? errno : saved));
    g_unlink(tmp);
    return FALSE;
  }
  return TRUE;
}

/* ---- MQTT and reports ---- */

static gboolean on_report_tick(gpointer data) {
  Node *n = data;
  g_autofree char *text = node_report_json(n);
  node_publish(n, "information", text);
  return G_SOURCE_CONTINUE;
}

/* Where the runtime that has the instance keeps its console. */
static char *console_lookup(const char *instance, gpointer data) {
  Node *n = data;
  oakuk_runtime *rts[] = {n->uk_rt, n->ctr_rt};
  for (size_t k = 0; k < G_N_ELEMENTS(rts); k++) {
    char *p = rts[k] ? oakuk_runtime_instance_console_path(rts[k], instance) : NULL;
    if (p) {
      char *r = g_strdup(p);
      od_oakuk_free(p);
      return r;
    }
  }
  return NULL;
}

/* `oakuk logs`: answer with the tail of the instance's serial console or container output. */
static void on_logs_request(Node *n, const char *topic, GBytes *payload) {
  gsize len = 0;
  const char *data = g_bytes_get_data(payload, &len);
  g_autoptr(GError) error = NULL;
  g_autofree char *reply = node_logs_reply(console_lookup, n, data ? data : "", len, &error);
  if (reply == NULL) {
    node_reject(topic, error->message);
    return;
  }
  node_publish(n, "logs", reply);
}

static void on_message(const char *topic, GBytes *payload, gpointer data) {
  Node *n = data;
  g_autofree char *prefix = g_strdup_printf("nodes/%s/", n->id);
  const char *leaf = g_str_has_prefix(topic, prefix) ? topic + strlen(prefix) : "";
  if (strcmp(leaf, "control/deploy") == 0)
    insts_on_deploy(n, topic, payload);
  else if (strcmp(leaf, "control/delete") == 0)
    insts_on_delete(n, topic, payload);
  else if (strcmp(leaf, "net/services") == 0)
    netsync_on_services(n, topic, payload);
  else if (strcmp(leaf, "net/peers") == 0)
    netsync_on_peers(n, topic, payload);
  else if (strcmp(leaf, "control/logs") == 0)
    on_logs_request(n, topic, payload);
  else
    node_reject(topic, "unexpected topic");
}

static void on_state(gboolean connected, const char *reason, gpointer data) {
  Node *n = data;
  n->mqtt_up = connected;
  /* The broker took the credentials: registered, even when the cluster was away at the start. */
  n->registered |= connected;
  if (!connected) {
    od_log(G_LOG_LEVEL_WARNING, "mqtt", "msg", "broker connection lost; reconnecting", "reason", reason,
           NULL);
    return;
  }
  od_log(G_LOG_LEVEL_MESSAGE, "mqtt", "msg", "connected to the broker", "broker", n->mqtt_host, NULL);
  on_report_tick(n);
  insts_republish(n);
}

static gboolean start_mqtt(Node *n, GError **error) {
  g_autofree char *deploy = g_strdup_printf("nodes/%s/control/deploy", n->id);
  g_autofree char *del = g_strdup_printf("nodes/%s/control/delete", n->id);
  g_autofree char *services = g_strdup_printf("nodes/%s/net/services", n->id);
  g_autofree char *peers = g_strdup_printf("nodes/%s/net/peers", n->id);
  g_autofree char *logs = g_strdup_printf("nodes/%s/control/logs", n->id);
  const char *subs[] = {deploy, del, services, peers, logs, NULL};
  g_autofree char *client_id = g_strdup_printf("oakuk-node-%s", n->id);
  g_autofree char *will_topic = g_strdup_printf("nodes/%s/lwt", n->id);
  g_autofree char *will = g_strdup_printf("{\"id\":\"%s\"}", n->id);
  g_autofree char *ca_file = n->mqtt_tls ? ca_path(n) : NULL;
  OdMqttOptions o = {.host = n->mqtt_host,
                     .port = n->mqtt_port,
                     .client_id = client_id,
                     .username = n->mqtt_username,
                     .password = n->mqtt_password,
                     .will_topic = will_topic,
                     .will_payload = will,
                     .subscriptions = subs,
                     .ca_file = ca_file,
                     .metrics_name = "oakuk_node_mqtt_message_duration_seconds"};
  n->mqtt = od_mqtt_new(&o, on_message, on_state, n, error);
  if (n->mqtt == NULL)
    return FALSE;
  od_mqtt_start(n->mqtt);
  return TRUE;
}

/* ---- start ---- */

static void fatal(Node *n, const char *msg) {
  od_log(G_LOG_LEVEL_WARNING, "fatal", "msg", msg, NULL);
  n->exit_code = 1;
  g_main_loop_quit(n->loop);
}

/* After registration: the node network, re-adoption, MQTT and reports. */
static void node_start(Node *n) {
  g_autoptr(GError) error = NULL;
  if (!n->mqtt_tls && !n->insecure) {
    fatal(n, "the cluster's broker is reached without TLS (node.json has no \"mqtt_tls\": true); that needs "
             "--insecure");
    return;
  }
  oakuk_net_options no;
  oakuk_net_options_init(&no, OAKUK_NET_OPTIONS_VERSION);
  no.node_subnet = n->subnet;
  no.underlay_ip = n->underlay_ip;
  oakuk_error *err = NULL;
  n->net = oakuk_net_new(&no, &err);
  if (n->net == NULL || oakuk_net_setup_node(n->net, &err) != 0) {
    g_autofree char *m = g_strdup_printf("network (subnet %s): %s", n->subnet, oakuk_error_message(err));
    oakuk_error_free(err);
    fatal(n, m);
    return;
  }
  insts_restore(n);
  if (!start_mqtt(n, &error)) {
    fatal(n, error->message);
    return;
  }
  n->report_source = g_timeout_add(n->report_interval_ms, on_report_tick, n);
  g_autofree char *broker =
      g_strdup_printf("%s://%s:%u", n->mqtt_tls ? "ssl" : "tcp", n->mqtt_host, n->mqtt_port);
  od_log(G_LOG_LEVEL_MESSAGE, "start", "node", n->id, "subnet", n->subnet, "ip", n->underlay_ip, "broker",
         broker, "msg", "oakuk-node running", NULL);
}

static void register_schedule(Node *n);

static gboolean apply_registration(Node *n, SoupMessage *msg, GBytes *body, GError **error) {
  gsize len = 0;
  const char *data = g_bytes_get_data(body, &len);
  g_autoptr(JsonNode) root = od_json_parse(data ? data : "", (gssize)len, error);
  if (root == NULL)
    return FALSE;
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  const char *keys[] = {"id", "mqtt_host", "mqtt_username", "mqtt_password", "subnet"};
  for (gsize k = 0; k < G_N_ELEMENTS(keys); k++)
    if (o == NULL || json_object_get_string_member_with_default(o, keys[k], NULL) == NULL) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "registration reply: %s missing or not a string",
                  keys[k]);
      return FALSE;
    }
  gint64 port = json_object_get_int_member_with_default(o, "mqtt_port", 0);
  if (port < 1 || port > 65535) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "registration reply: mqtt_port missing or out of range");
    return FALSE;
  }
  JsonNode *tls_node = json_object_get_member(o, "mqtt_tls");
  JsonNode *ca_node = json_object_get_member(o, "ca");
  if ((tls_node && !JSON_NODE_HOLDS_NULL(tls_node) &&
       (!JSON_NODE_HOLDS_VALUE(tls_node) || json_node_get_value_type(tls_node) != G_TYPE_BOOLEAN)) ||
      (ca_node && !JSON_NODE_HOLDS_NULL(ca_node) &&
       (!JSON_NODE_HOLDS_VALUE(ca_node) || json_node_get_value_type(ca_node) != G_TYPE_STRING))) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "registration reply: mqtt_tls not a boolean or ca not a string");
    return FALSE;
  }
  gboolean tls = tls_node && JSON_NODE_HOLDS_VALUE(tls_node) && json_node_get_boolean(tls_node);
  const char *reply_ca = ca_node && JSON_NODE_HOLDS_VALUE(ca_node) ? json_node_get_string(ca_node) : NULL;
  if (!tls && !n->insecure) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "the cluster offers its broker without TLS (no \"mqtt_tls\": true in its registration "
                "answer); plain MQTT needs --insecure");
    return FALSE;
  }
  if (!adopt_ca(n, msg, reply_ca, error))
    return FALSE;
  if (tls && n->ca == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "registration reply: \"mqtt_tls\" without a CA to trust");
    return FALSE;
  }
  n->mqtt_tls = tls;
  g_free(n->id);
  n->id = g_strdup(json_object_get_string_member(o, "id"));
  g_free(n->mqtt_host);
  n->mqtt_host = g_strdup(json_object_get_string_member(o, "mqtt_host"));
  n->mqtt_port = (guint16)port;
  g_free(n->mqtt_username);
  n->mqtt_username = g_strdup(json_object_get_string_member(o, "mqtt_username"));
  g_free(n->mqtt_password);
  n->mqtt_password = g_strdup(json_object_get_string_member(o, "mqtt_password"));
  g_free(n->subnet);
  n->subnet = g_strdup(json_object_get_string_member(o, "subnet"));
  g_free(n->registered_id);
  n->registered_id = g_strdup(n->id);
  return save_identity(n, error);
}

/* "HTTP 409 name_taken: <message>" from the {"error": {"code", "message"}} of an answer, else the
 * start of its body. */
static char *http_problem(guint status, GBytes *body) {
  gsize len = 0;
  const char *text = g_bytes_get_data(body, &len);
  g_autoptr(JsonNode) root = od_json_parse(text ? text : "", (gssize)len, NULL);
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonNode *e = o ? json_object_get_member(o, "error") : NULL;
  JsonObject *eo = e && JSON_NODE_HOLDS_OBJECT(e) ? json_node_get_object(e) : NULL;
  const char *code = eo ? json_object_get_string_member_with_default(eo, "code", NULL) : NULL;
  const char *message = eo ? json_object_get_string_member_with_default(eo, "message", NULL) : NULL;
  if (code != NULL && message != NULL)
    return g_strdup_printf("HTTP %u %s: %s", status, code, message);
  return g_strdup_printf("HTTP %u: %.*s", status, (int)MIN(len, 400), text ? text : "");
}

static void on_registered(GObject *src, GAsyncResult *res, gpointer data) {
  Node *n = data;
  SoupMessage *msg = soup_session_get_async_result_message(SOUP_SESSION(src), res);
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) body = soup_session_send_and_read_finish(SOUP_SESSION(src), res, &error);
  guint status = body ? soup_message_get_status(msg) : 0;
  g_autofree char *problem = NULL;
  if (body != NULL && status == SOUP_STATUS_CREATED) {
    if (apply_registration(n, msg, body, &error)) {
      n->registered = TRUE;
      od_log(G_LOG_LEVEL_MESSAGE, "register", "node", n->id, "subnet", n->subnet, "broker",
             n->mqtt_tls ? "tls" : "plain", "msg", "registered", NULL);
      node_start(n);
      return;
    }
    problem = g_strdup(error->message);
  } else if (body != NULL) {
    problem = http_problem(status, body);
  } else if (g_error_matches(error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE)) {
    problem = refused_certificate(n, msg, error);
  } else {
    problem = g_strdup(error->message);
  }
  if (status == SOUP_STATUS_CONFLICT) {
    /* The name belongs to a registered node, and this one has not its credential: running under it
     * would take that node's place. */
    g_autofree char *m = g_strdup_printf(
        "the cluster at %s has another node registered as %s (%s): start this node with another --name, or "
        "remove that node first (oakuk node remove %s)",
        n->cluster_url, n->id, problem, n->id);
    fatal(n, m);
    return;
  }
  gboolean permanent = status >= 400 && status < 500;
  if (have_credentials(n)) {
    /* The cluster is away (or refuses a new registration): the last credentials may still work. */
    od_log(G_LOG_LEVEL_WARNING, "register", "url", n->cluster_url, "msg", problem, "action",
           "continuing with the credentials in node.json", NULL);
    node_start(n);
    return;
  }
  if (permanent) {
    g_autofree char *m = g_strdup_printf("registration at %s refused: %s", n->cluster_url, problem);
    fatal(n, m);
    return;
  }
  g_autofree char *wait = g_strdup_printf("%" G_GINT64_FORMAT, n->register_backoff_s);
  od_log(G_LOG_LEVEL_WARNING, "register", "url", n->cluster_url, "msg", problem, "retry_s", wait, NULL);
  register_schedule(n);
}

static gboolean do_register(gpointer data) {
  Node *n = data;
  n->register_source = 0;
  g_autofree char *report = node_report_json(n);
  g_autoptr(JsonNode) caps = od_json_parse(report, -1, NULL);
  g_autoptr(JsonObject) body = json_object_new();
  json_object_set_member(body, "capabilities", json_node_copy(caps));
  json_object_set_string_member(body, "join_token", n->join_token ? n->join_token : "");
  /* A node registered before proves it is that node with its current MQTT password. */
  if (n->mqtt_password != NULL && g_strcmp0(n->registered_id, n->id) == 0)
    json_object_set_string_member(body, "credential", n->mqtt_password);
  g_autoptr(JsonNode) root = json_node_init_object(json_node_alloc(), json_object_ref(body));
  g_autofree char *text = od_json_to_string(root, FALSE);
  g_autofree char *base = g_strdup(n->cluster_url);
  while (g_str_has_suffix(base, "/"))
    base[strlen(base) - 1] = '\0';
  g_autofree char *url = g_strdup_printf("%s/api/node/register", base);
  g_autoptr(SoupMessage) msg = soup_message_new("POST", url);
  g_autoptr(GBytes) bytes = g_bytes_new(text, strlen(text));
  soup_message_set_request_body_from_bytes(msg, "application/json", bytes);
  pin(n, msg);
  soup_session_send_and_read_async(n->session, msg, G_PRIORITY_DEFAULT, NULL, on_registered, n);
  return G_SOURCE_REMOVE;
}

static void register_schedule(Node *n) {
  n->register_source = g_timeout_add_seconds((guint)n->register_backoff_s, do_register, n);
  n->register_backoff_s = MIN(n->register_backoff_s * 2, REGISTER_BACKOFF_MAX_S);
}

/* ---- lifecycle ---- */

static gboolean on_signal(gpointer data) {
  Node *n = data;
  od_log(G_LOG_LEVEL_MESSAGE, "stop", "msg",
         n->leave            ? "stopping instances and removing the node network (--leave)"
         : n->stop_instances ? "stopping instances"
                             : "instances keep running",
         NULL);
  g_main_loop_quit(n->loop);
  return G_SOURCE_CONTINUE;
}

/* The user QEMU runs as exists, or is created (a system user without home or shell). */
static gboolean ensure_qemu_user(const char *user, GError **error) {
  if (getpwnam(user) != NULL)
    return TRUE;
  const char *argv[] = {
      "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", user, NULL};
  g_autofree char *err_out = NULL;
  gint status = 0;
  g_autoptr(GError) local = NULL;
  if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                    NULL, &err_out, &status, &local) ||
      !g_spawn_check_wait_status(status, NULL) || getpwnam(user) == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "--qemu-user %s: no such user, and useradd failed: %s", user,
                local     ? local->message
                : err_out ? g_strstrip(err_out)
                          : "");
    return FALSE;
  }
  od_log(G_LOG_LEVEL_MESSAGE, "sandbox", "user", user, "msg", "created the user QEMU runs as", NULL);
  return TRUE;
}

/* The image cache, bounded by --image-cache-max (a share of the state directory's file system
 * computed now). */
static gboolean open_image_cache(Node *n, GError **error) {
  g_autofree char *images = node_state_path(n, "images");
  oakuk_image_cache_options io;
  oakuk_image_cache_options_init(&io, OAKUK_IMAGE_CACHE_OPTIONS_VERSION);
  io.file_allowed_dirs = n->image_file_dirs;
  io.insecure_registries = n->insecure_registries;
  io.max_cache_bytes = n->image_cache_max_bytes;
  struct statvfs fs;
  if (n->image_cache_max_percent > 0) {
    if (statvfs(n->state_dir, &fs) != 0) {
      g_set_error(error, OD_ERROR, OD_ERROR_IO, "--image-cache-max %s: size of %s: %s", n->image_cache_max,
                  n->state_dir, g_strerror(errno));
      return FALSE;
    }
    io.max_cache_bytes = (guint64)fs.f_blocks * fs.f_frsize / 100 * n->image_cache_max_percent;
  }
  oakuk_error *err = NULL;
  n->images = oakuk_image_cache_new(images, &io, &err);
  if (n->images == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "image cache %s: %s", images, oakuk_error_message(err));
    oakuk_error_free(err);
    return FALSE;
  }
  g_autofree char *max = g_strdup_printf("%" G_GUINT64_FORMAT, (guint64)io.max_cache_bytes);
  od_log(G_LOG_LEVEL_INFO, "image-cache", "dir", images, "max_bytes", max, "msg",
         "unused images are evicted above max_bytes, least recently used first", NULL);
  return TRUE;
}

/* --prune-images: removes every image no instance of this process uses (none: the node is not
 * running here) and the blobs they came from, says how much, and exits. */
static int prune_images(Node *n) {
  g_autoptr(GError) error = NULL;
  if (!od_state_dir_prepare(n->state_dir, &error) || !open_image_cache(n, &error)) {
    od_log(G_LOG_LEVEL_CRITICAL, "prune", "msg", error->message, NULL);
    return 1;
  }
  guint64 freed = 0;
  oakuk_error *err = NULL;
  if (oakuk_image_cache_prune(&freed, n->images, 0, &err) != 0) {
    od_log(G_LOG_LEVEL_CRITICAL, "prune", "msg", oakuk_error_message(err), NULL);
    oakuk_error_free(err);
    return 1;
  }
  printf("pruned %" G_GUINT64_FORMAT " bytes; the image cache holds %" G_GUINT64_FORMAT " bytes\n", freed,
         (guint64)oakuk_image_cache_size(n->images));
  return 0;
}

static gboolean make_runtimes(Node *n, GError **error) {
  oakuk_qemu_options qo;
  oakuk_qemu_options_init(&qo, OAKUK_QEMU_OPTIONS_VERSION);
  qo.allow_emulation = n->allow_emulation;
  if (n->qemu_user && *n->qemu_user) {
    if (!ensure_qemu_user(n->qemu_user, error))
      return FALSE;
    qo.run_as = n->qemu_user;
  } else {
    od_log(G_LOG_LEVEL_WARNING, "sandbox", "msg",
           "--qemu-user is empty: QEMU runs as root (still under -sandbox)", NULL);
  }
  oakuk_error *err = NULL;
  if (oakuk_qemu_probe(&n->caps, &qo, &err) != 0 ||
      (n->uk_rt = oakuk_qemu_runtime_new(n->state_dir, &qo, &err)) == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "unikernel runtime in %s: %s", n->state_dir,
                oakuk_error_message(err));
    oakuk_error_free(err);
    return FALSE;
  }
  oakuk_runtime_set_status_callback(n->uk_rt, insts_on_runtime_status, n);
  oakuk_runtime_set_ready_callback(n->uk_rt, insts_on_runtime_ready, n);
  g_autofree char *ctr_dir = node_state_path(n, "container");
  oakuk_container_options co;
  oakuk_container_options_init(&co, OAKUK_CONTAINER_OPTIONS_VERSION);
  co.insecure_registries = n->insecure_registries;
  co.file_allowed_dirs = n->image_file_dirs;
  if (!n->offer_container) {
    od_log(G_LOG_LEVEL_MESSAGE, "runtime", "virtualization", "container", "msg",
           "disabled by --virtualization", "action", "containers are not offered", NULL);
  } else if ((n->ctr_rt = oakuk_container_runtime_new(ctr_dir, &co, &err)) == NULL) {
    od_log(G_LOG_LEVEL_MESSAGE, "runtime", "virtualization", "container", "msg", oakuk_error_message(err),
           "action", "containers are not offered", NULL);
    oakuk_error_free(err);
  } else {
    oakuk_runtime_set_status_callback(n->ctr_rt, insts_on_runtime_status, n);
    oakuk_runtime_set_ready_callback(n->ctr_rt, insts_on_runtime_ready, n);
  }
  if (!open_image_cache(n, error))
    return FALSE;
  const char *accel = oakuk_accel_name(oakuk_qemu_caps_accel(n->caps));
  od_log(G_LOG_LEVEL_MESSAGE, "probe", "arch", oakuk_qemu_caps_host_arch(n->caps), "accel",
         accel ? accel : "none", "kvm", oakuk_qemu_caps_kvm(n->caps) ? "yes" : "no", "container",
         n->ctr_rt ? "yes" : "no", NULL);
  return TRUE;
}

static void node_free(Node *n) {
  g_clear_pointer(&n->registry_auth, g_hash_table_unref);
  if (n->insts)
    insts_shutdown(n);
  if (n->report_source)
    g_source_remove(n->report_source);
  if (n->register_source)
    g_source_remove(n->register_source);
  g_clear_pointer(&n->mqtt, od_mqtt_free);
  node_api_stop(n);
  g_clear_pointer(&n->pools, g_hash_table_unref); /* pooled QEMUs: never kept over a restart */
  g_clear_pointer(&n->uk_rt, oakuk_runtime_unref);
  g_clear_pointer(&n->ctr_rt, oakuk_runtime_unref);
  if (n->insts && n->stop_instances)
    insts_forget(n);
  if (n->leave && n->net) {
    /* Nothing of the node stays: its bridge, VXLAN device and nftables table go too. */
    oakuk_error *err = NULL;
    if (oakuk_net_teardown_node(n->net, &err) != 0) {
      od_log(G_LOG_LEVEL_WARNING, "leave", "msg", oakuk_error_message(err), NULL);
      oakuk_error_free(err);
    } else {
      od_log(G_LOG_LEVEL_MESSAGE, "leave", "msg",
             "node network removed (bridge, VXLAN device, nftables table)", NULL);
    }
  }
  g_clear_pointer(&n->insts, g_hash_table_unref);
  g_clear_pointer(&n->services, g_hash_table_unref);
  g_clear_pointer(&n->peers, g_hash_table_unref);
  g_clear_pointer(&n->net, oakuk_net_unref);
  g_clear_pointer(&n->images, oakuk_image_cache_unref);
  g_clear_pointer(&n->caps, oakuk_qemu_caps_unref);
  g_clear_object(&n->session);
  g_clear_object(&n->ca);
  g_clear_pointer(&n->loop, g_main_loop_unref);
  g_clear_pointer(&n->config, g_key_file_unref);
  char **strs[] = {&n->state_dir,
                   &n->cluster_url,
                   &n->join_token,
                   &n->name,
                   &n->underlay_ip,
                   &n->id,
                   &n->mqtt_host,
                   &n->mqtt_username,
                   &n->mqtt_password,
                   &n->subnet,
                   &n->insecure_registries,
                   &n->qemu_user,
                   &n->image_file_dirs,
                   &n->ca_fingerprint,
                   &n->registered_id,
                   &n->image_cache_max,
                   &n->listen};
  for (gsize k = 0; k < G_N_ELEMENTS(strs); k++)
    g_clear_pointer(strs[k], g_free);
}

static int run(Node *n, Args *a) {
  g_autoptr(GError) error = NULL;
  if (!load_settings(n, a, &error))
    goto fail;
  if (a->prune_images)
    return prune_images(n);
  if (n->insecure)
    od_log(G_LOG_LEVEL_WARNING, "insecure", "msg",
           "--insecure: plain HTTP to the cluster and plain MQTT are allowed; whoever is on the path can "
           "read and "
           "change what this node and its cluster say",
           NULL);
  if (!od_state_dir_prepare(n->state_dir, &error) || !parse_join_token(n, &error) || !load_trust(n, &error))
    goto fail;
  load_identity(n);
  if (n->name != NULL) {
    g_free(n->id);
    n->id = g_strdup(n->name);
  } else if (n->id == NULL) {
    n->id = g_strdup(g_get_host_name());
  }
  if (n->join_token == NULL && !have_credentials(n)) {
    g_set_error(&error, OD_ERROR, OD_ERROR_INVALID,
                "--join-token or --join-token-file is required for the first registration");
    goto fail;
  }
  if (n->underlay_ip == NULL && !route_source(n, &error))
    goto fail;
  if (!make_runtimes(n, &error))
    goto fail;
  insts_init(n);
  n->services = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  n->peers = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  n->loop = g_main_loop_new(NULL, FALSE);
  /* Trusts no CA by itself: each request pins the root CA (pin()). */
  n->session = od_tls_session_new();
  g_object_set(n->session, "timeout", 10, "user-agent", "oakuk-node", NULL);
  /* Control-plane peers are reached directly: no system proxy lookup (which also keeps GIO's
   * proxy modules and libproxy out of the daemon). */
  soup_session_set_proxy_resolver(n->session, NULL);
  if (!node_api_start(n, &error))
    goto fail;
  if (n->listen != NULL)
    od_log(G_LOG_LEVEL_MESSAGE, "listen", "listen", n->listen, "msg", "serving /healthz and /metrics", NULL);
  g_unix_signal_add(SIGTERM, on_signal, n);
  g_unix_signal_add(SIGINT, on_signal, n);
  n->register_backoff_s = 1;
  do_register(n);
  g_main_loop_run(n->loop);
  od_log(G_LOG_LEVEL_MESSAGE, "stop", "msg", "oakuk-node stopped", NULL);
  return n->exit_code;
fail:
  od_log(G_LOG_LEVEL_WARNING, "fatal", "msg", error->message, NULL);
  return 1;
}

/* `oakuk-node join CLUSTER_URL TOKEN` (docs/deploy.md): the config it writes is read by load_settings;
 * join_token would win over join_token_file, so an old one goes. */
static const char *const node_stale_token_keys[] = {"join_token", NULL};
static const OdJoinKind node_join = {.program = "oakuk-node",
                                     .group = "node",
                                     .url_key = "cluster_url",
                                     .url_name = "CLUSTER_URL",
                                     .token_key = "join_token_file",
                                     .token_key_at = FALSE,
                                     .stale_keys = node_stale_token_keys,
                                     .default_state_dir = "/var/lib/oakuk/node",
                                     .config_name = "node.conf",
                                     .system_user = FALSE};

int main(int argc, char **argv) {
  Args a = {0};
  OdCommonOptions common = {0};
  Node n = {0};
  if (argc > 1 && strcmp(argv[1], "join") == 0)
    return od_join_main(&node_join, argc - 1, argv + 1);
  const GOptionEntry entries[] = {
      {"state-dir", 's', 0, G_OPTION_ARG_FILENAME, &a.state_dir,
       "State directory: images/, instances/, jobs/, node.json (default /var/lib/oakuk/node)", "DIR"},
      {"cluster-url", 0, 0, G_OPTION_ARG_STRING, &a.cluster_url, "Base URL of oakuk-cluster", "URL"},
      {"join-token", 0, 0, G_OPTION_ARG_STRING, &a.join_token,
       "Node join token oakuk1.<CA fingerprint>.<secret> (oakuk token create node), or @FILE", "TOKEN"},
      {"join-token-file", 0, 0, G_OPTION_ARG_FILENAME, &a.join_token_file, "Read the join token from FILE",
       "FILE"},
      {"name", 0, 0, G_OPTION_ARG_STRING, &a.name,
       "Node id (default: the registered one, else the host name)", "NAME"},
      {"underlay-ip", 0, 0, G_OPTION_ARG_STRING, &a.underlay_ip,
       "Address other nodes reach this one at (default: source address of the route to the cluster)", "IP"},
      {"virtualization", 0, 0, G_OPTION_ARG_STRING, &a.virtualization,
       "What this node offers: container,unikernel (default: both, where the machine can)", "LIST"},
      {"insecure-registries", 0, 0, G_OPTION_ARG_STRING, &a.insecure_registries,
       "Registries pulled over plain http (default: loopback only)", "HOST[:PORT],..."},
      {"qemu-user", 0, 0, G_OPTION_ARG_STRING, &a.qemu_user,
       "Unprivileged user QEMU runs as, created if missing (default " NODE_QEMU_USER "; \"\": root)", "USER"},
      {"image-file-dirs", 0, 0, G_OPTION_ARG_STRING, &a.image_file_dirs,
       "Directories file:// images may come from (default: none, file:// is refused)", "DIR[:DIR...]"},
      {"allow-emulation", 0, 0, G_OPTION_ARG_NONE, &a.allow_emulation,
       "Run and advertise unikernels under TCG (no KVM, or foreign architectures)", NULL},
      {"report-interval", 0, 0, G_OPTION_ARG_INT, &a.report_interval, "Seconds between reports (default 2)",
       "S"},
      {"stop-instances", 0, 0, G_OPTION_ARG_NONE, &a.stop_instances,
       "Stop the instances on SIGTERM (default: they keep running and are re-adopted)", NULL},
      {"leave", 0, 0, G_OPTION_ARG_NONE, &a.leave,
       "On SIGTERM stop the instances and remove the node's bridge, VXLAN device and nftables table", NULL},
      {"image-cache-max", 0, 0, G_OPTION_ARG_STRING, &a.image_cache_max,
       "Most the image cache holds; unused images are evicted, least recently used first (default 20%)",
       "SIZE|N%|0"},
      {"prune-images", 0, 0, G_OPTION_ARG_NONE, &a.prune_images,
       "Remove every cached image and blob (run it while the node is stopped) and exit", NULL},
      {"insecure", 0, 0, G_OPTION_ARG_NONE, &a.insecure,
       "Allow plain HTTP to the cluster and plain MQTT (warned at every start)", NULL},
      {"listen", 'l', 0, G_OPTION_ARG_STRING, &a.listen,
       "Serve /healthz and /metrics here, a loopback address only (default " NODE_LISTEN_DEFAULT
       "; off: none)",
       "ADDR:PORT"},
      G_OPTION_ENTRY_NULL};
  g_autoptr(GError) error = NULL;
  if (!od_options_parse(
          &argc, &argv,
          "oakuk node: runs unikernels and containers for its cluster.\n\n"
          "First start on a new machine: oakuk-node join CLUSTER_URL TOKEN (see oakuk-node join "
          "--help).",
          entries, &common, &n.config, &error)) {
    fprintf(stderr, "oakuk-node: %s\n", error->message);
    args_clear(&a);
    return 2;
  }
  if (common.version) {
    printf("oakuk-node %s\n", OAKUK_NODE_VERSION);
    args_clear(&a);
    od_common_options_clear(&common);
    g_clear_pointer(&n.config, g_key_file_unref);
    return 0;
  }
  a.config_path = common.config_path;
  od_log_init("oakuk-node", common.log_format, common.verbose);
  int rc = run(&n, &a);
  node_free(&n);
  args_clear(&a);
  od_common_options_clear(&common);
  return rc;
}
