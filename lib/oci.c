/* OCI images (docs/architecture.md §11): references, the distribution API over libsoup (anonymous, basic and
 * bearer-token auth; pull and push), the content-addressed blob cache, layer unpacking with
 * whiteouts, and single-layer image building. Everything here blocks: callers run it in a thread. */
#include "archive-safe.h"
#include "oci-private.h"
#include "sysutil-private.h"

#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <libsoup/soup.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#define set_gerror(err, code, ...) g_set_error(err, OAKUK_ERROR, -(code), __VA_ARGS__)

#define MANIFEST_MAX_BYTES (4 * 1024 * 1024)
#define CONFIG_MAX_BYTES (4 * 1024 * 1024)
#define LAYER_MAX_ENTRIES 1000000
#define LAYER_MAX_BYTES (G_GUINT64_CONSTANT(16) * 1024 * 1024 * 1024)
#define CHUNK (64 * 1024)

/* ---------------------------------------------------------------------------------------------- */
/* References */

/* Members of JSON from outside, by type: NULL when absent or of another type (json-glib's own
 * getters emit criticals on a type mismatch). */

gboolean oakuk_oci_digest_is_valid(const char *d) {
  if (!d || !g_str_has_prefix(d, "sha256:") || strlen(d) != 7 + 64)
    return FALSE;
  for (const char *p = d + 7; *p; p++)
    if (!g_ascii_isdigit(*p) && !(*p >= 'a' && *p <= 'f'))
      return FALSE;
  return TRUE;
}

/* The reference grammar of the distribution spec (docker/distribution's reference package):
 *   reference := name [":" tag] ["@" digest]
 *   name      := [domain "/"] path-component ["/" path-component]*
 *   domain    := host [":" port]; host := domain-name | IPv4 | "[" IPv6 "]"
 *   domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
 *   path-component   := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
 *   tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
 *   digest    := "sha256:" 64 lower-case hex digits (the only algorithm pulled here)
 * The first component is the domain when it has a '.' or a ':' or is "localhost"; a name is at
 * most 255 characters. Anything else is refused before a registry is asked. */
#define REF_NAME_MAX 255

static gboolean path_component_ok(const char *c) {
  const char *p = c;
  if (!g_ascii_islower(*p) && !g_ascii_isdigit(*p))
    return FALSE;
  while (*p) {
    while (g_ascii_islower(*p) || g_ascii_isdigit(*p))
      p++;
    if (!*p)
      return TRUE;
    /* A separator: ".", "_", "__" or a run of '-', then alphanumerics again. */
    if (*p == '.')
      p++;
    else if (p[0] == '_' && p[1] == '_')
      p += 2;
    else if (*p == '_')
      p++;
    else if (*p == '-')
      while (*p == '-')
        p++;
    else
      return FALSE;
    if (!g_ascii_islower(*p) && !g_ascii_isdigit(*p))
      return FALSE;
  }
  return TRUE;
}

static gboolean domain_component_ok(const char *c, size_t n) {
  if (n == 0 || !g_ascii_isalnum(c[0]) || !g_ascii_isalnum(c[n - 1]))
    return FALSE;
  for (size_t k = 0; k < n; k++)
    if (!g_ascii_isalnum(c[k]) && c[k] != '-')
      return FALSE;
  return TRUE;
}

/* host[:port]; *why says what is wrong. */
static gboolean domain_ok(const char *d, const char **why) {
  const char *host_end;
  if (d[0] == '[') {
    const char *close = strchr(d, ']');
    if (!close) {
      *why = "an IPv6 address needs its closing ']'";
      return FALSE;
    }
    g_autofree char *v6 = g_strndup(d + 1, (size_t)(close - d - 1));
    struct in6_addr a;
    if (inet_pton(AF_INET6, v6, &a) != 1) {
      *why = "is not an IPv6 address in brackets";
      return FALSE;
    }
    host_end = close + 1;
  } else {
    host_end = d + strcspn(d, ":");
    if (host_end == d) {
      *why = "has no host";
      return FALSE;
    }
    for (const char *c = d; c < host_end;) {
      const char *dot = memchr(c, '.', (size_t)(host_end - c));
      size_t n = dot ? (size_t)(dot - c) : (size_t)(host_end - c);
      if (!domain_component_ok(c, n)) {
        *why = "has a host name part that is not letters, digits and inner '-'";
        return FALSE;
      }
      c += n + (dot ? 1 : 0);
      if (dot && c == host_end) {
        *why = "ends its host name with '.'";
        return FALSE;
      }
    }
  }
  if (*host_end == '\0')
    return TRUE;
  const char *port = host_end + 1;
  gboolean digits = *host_end == ':' && *port;
  for (const char *c = port; digits && *c; c++)
    digits = g_ascii_isdigit(*c);
  if (!digits || strlen(port) > 5 || atoi(port) < 1 || atoi(port) > 65535) {
    *why = "has a port that is not a number from 1 to 65535";
    return FALSE;
  }
  return TRUE;
}

static gboolean tag_is_valid(const char *t) {
  size_t n = strlen(t);
  if (n == 0 || n > 128 || !(g_ascii_isalnum(t[0]) || t[0] == '_'))
    return FALSE;
  for (const char *p = t; *p; p++)
    if (!g_ascii_isalnum(*p) && !strchr("._-", *p))
      return FALSE;
  return TRUE;
}

void oakuk_oci_ref_clear(OakukOciRef *r) {
  g_clear_pointer(&r->registry, g_free);
  g_clear_pointer(&r->repository, g_free);
  g_clear_pointer(&r->tag, g_free);
  g_clear_pointer(&r->digest, g_free);
}

static gboolean ref_fail(OakukOciRef *out, GError **error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static gboolean ref_fail(OakukOciRef *out, GError **error, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  oakuk_oci_ref_clear(out);
  g_set_error_literal(error, OAKUK_ERROR, -OAKUK_EINVAL, msg);
  return FALSE;
}

gboolean oakuk_oci_ref_parse(const char *text, OakukOciRef *out, GError **error) {
  memset(out, 0, sizeof *out);
  if (!text || !*text)
    return ref_fail(out, error, "image reference is empty");
  for (const char *c = text; *c; c++)
    if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
      return ref_fail(out, error, "image reference %s: has a space, control or non-ASCII character", text);
  g_autofree char *rest = g_strdup(text);
  char *at = strchr(rest, '@');
  if (at) {
    *at = '\0';
    const char *d = at + 1;
    if (!g_str_has_prefix(d, "sha256:"))
      return ref_fail(out, error,
                      "image reference %s: digest %s: only sha256:<64 hex digits> digests are pulled", text,
                      d);
    if (!oakuk_oci_digest_is_valid(d))
      return ref_fail(out, error, "image reference %s: digest %s is not sha256:<64 lower-case hex digits>",
                      text, d);
    out->digest = g_strdup(d);
  }
  /* The domain: a first component with '.' or ':', or "localhost". */
  char *name = rest;
  char *slash = strchr(rest, '/');
  if (slash && (memchr(rest, '.', (size_t)(slash - rest)) || memchr(rest, ':', (size_t)(slash - rest)) ||
                ((size_t)(slash - rest) == strlen("localhost") && strncmp(rest, "localhost", 9) == 0))) {
    *slash = '\0';
    const char *why = NULL;
    if (!domain_ok(rest, &why))
      return ref_fail(out, error, "image reference %s: registry \"%s\" %s", text, rest, why);
    out->registry = g_strdup(rest);
    name = slash + 1;
  } else {
    out->registry = g_strdup("registry-1.docker.io");
  }
  /* The tag: after the last ':' of the path (a ':' before it was the domain's port). */
  char *colon = strrchr(name, ':');
  if (colon) {
    *colon = '\0';
    if (!tag_is_valid(colon + 1))
      return ref_fail(
          out, error,
          "image reference %s: tag \"%s\" is not valid (1 to 128 of A-Z a-z 0-9 _ . -, not starting "
          "with . or -)",
          text, colon + 1);
    out->tag = g_strdup(colon + 1);
  } else if (!out->digest) {
    out->tag = g_strdup("latest");
  }
  if (!*name)
    return ref_fail(out, error, "image reference %s: no repository name", text);
  g_auto(GStrv) parts = g_strsplit(name, "/", -1);
  for (char **p = parts; *p; p++)
    if (!path_component_ok(*p))
      return ref_fail(out, error,
                      "image reference %s: repository \"%s\": path component \"%s\" is not valid (lower-case "
                      "a-z 0-9, separated inside by one '.', one or two '_' or '-'s)",
                      text, name, *p);
  if (strlen(name) + (name == rest ? 0 : strlen(rest) + 1) > REF_NAME_MAX)
    return ref_fail(out, error, "image reference %s: the name is longer than %d characters", text,
                    REF_NAME_MAX);
  out->repository = strcmp(out->registry, "registry-1.docker.io") == 0 && !strchr(name, '/')
                        ? g_strconcat("library/", name, NULL)
                        : g_strdup(name);
  return TRUE;
}

static char *registry_host(const char *registry) {
  if (registry[0] == '[') {
    const char *e = strchr(registry, ']');
    return e ? g_strndup(registry + 1, (size_t)(e - registry - 1)) : g_strdup(registry);
  }
  const char *c = strrchr(registry, ':');
  return c ? g_strndup(registry, (size_t)(c - registry)) : g_strdup(registry);
}

gboolean oakuk_oci_registry_is_insecure(const char *registry, const char *insecure) {
  g_autofree char *host = registry_host(registry);
  if (!insecure)
    return strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0 || g_str_has_prefix(host, "127.");
  g_auto(GStrv) list = g_strsplit(insecure, ",", -1);
  for (char **l = list; *l; l++) {
    g_strstrip(*l);
    if (**l && (strcmp(*l, registry) == 0 || strcmp(*l, host) == 0))
      return TRUE;
  }
  return FALSE;
}

GHashTable *oakuk_oci_parse_challenge(const char *header, char **scheme) {
  while (*header == ' ')
    header++;
  const char *sp = strchr(header, ' ');
  *scheme = sp ? g_strndup(header, (size_t)(sp - header)) : g_strdup(header);
  GHashTable *params = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  const char *p = sp ? sp + 1 : header + strlen(header);
  while (*p) {
    while (*p == ' ' || *p == ',')
      p++;
    if (!*p)
      break;
    const char *eq = strchr(p, '=');
    if (!eq)
      goto bad;
    g_autofree char *key = g_ascii_strdown(p, eq - p);
    g_strstrip(key);
    p = eq + 1;
    GString *v = g_string_new(NULL);
    if (*p == '"') {
      for (p++; *p && *p != '"'; p++) {
        if (*p == '\\' && p[1])
          p++;
        g_string_append_c(v, *p);
      }
      if (*p != '"') {
        g_string_free(v, TRUE);
        goto bad;
      }
      p++;
    } else {
      while (*p && *p != ',')
        g_string_append_c(v, *p++);
    }
    g_hash_table_replace(params, g_steal_pointer(&key), g_string_free(v, FALSE));
  }
  return params;
bad:
  g_hash_table_unref(params);
  g_clear_pointer(scheme, g_free);
  return NULL;
}

char *oakuk_oci_digest_bytes(GBytes *data) {
  g_autofree char *hex = g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, data);
  return g_strconcat("sha256:", hex, NULL);
}

/* ---------------------------------------------------------------------------------------------- */
/* Client */

struct OakukOciClient {
  SoupSession *session;
  char *registry;
  char *base;          /* "http(s)://registry" */
  char *basic;         /* "Basic ..." or NULL */
  char *authorization; /* header value that worked, or NULL */
  gboolean insecure;
  const char *insecure_list;
  GCancellable *cancel; /* stops every request and body read; NULL = none */
};

OakukOciClient *oakuk_oci_client_new(const char *registry, const char *username, const char *password,
                                     const oakuk_container_options *opts, GError **error) {
  oakuk_container_options defaults = OAKUK_CONTAINER_OPTIONS_INIT;
  const oakuk_container_options *o = opts ? opts : &defaults;
  const char *host = registry;
  gboolean want_http = FALSE;
  if (g_str_has_prefix(registry, "http://")) {
    host = registry + 7;
    want_http = TRUE;
  } else if (g_str_has_prefix(registry, "https://")) {
    host = registry + 8;
  }
  g_autofree char *h = g_strdup(host);
  if (g_str_has_suffix(h, "/"))
    h[strlen(h) - 1] = '\0';
  if (!*h || strchr(h, '/'))
    return set_gerror(error, OAKUK_EINVAL, "registry \"%s\": expected host[:port]", registry), NULL;
  gboolean insecure = oakuk_oci_registry_is_insecure(h, o->insecure_registries);
  if (want_http && !insecure)
    return set_gerror(error, OAKUK_EPERM,
                      "registry %s: plain http is allowed only for registries marked insecure", h),
           NULL;
  OakukOciClient *c = g_new0(OakukOciClient, 1);
  c->session = soup_session_new_with_options("timeout", o->timeout_s, "idle-timeout", 60, "user-agent",
                                             "liboakuk/"
                                             "0.1",
                                             NULL);
  oakuk_session_use_env_proxy(c->session);
  c->registry = g_steal_pointer(&h);
  c->insecure = insecure;
  c->insecure_list = o->insecure_registries;
  c->base = g_strconcat(insecure ? "http://" : "https://", c->registry, NULL);
  if (username && password) {
    g_autofree char *up = g_strdup_printf("%s:%s", username, password);
    g_autofree char *b64 = g_base64_encode((const guchar *)up, strlen(up));
    c->basic = g_strconcat("Basic ", b64, NULL);
    memset(up, 0, strlen(up));
  }
  return c;
}

void oakuk_oci_client_free(OakukOciClient *c) {
  if (!c)
    return;
  g_object_unref(c->session);
  g_free(c->registry);
  g_free(c->base);
  g_free(c->basic);
  g_free(c->authorization);
  g_clear_object(&c->cancel);
  g_free(c);
}

void oakuk_oci_client_set_cancellable(OakukOciClient *c, GCancellable *cancel) {
  g_set_object(&c->cancel, cancel);
}

static int status_code(guint status) {
  if (status == 401 || status == 403)
    return OAKUK_EPERM;
  if (status == 404 || status == 410)
    return OAKUK_ENOTFOUND;
  if (status == 400)
    return OAKUK_EINVAL;
  return OAKUK_EIO;
}

/* A transport failure (no HTTP status) as an error naming the registry. */
static void transport_error(OakukOciClient *c, GError *err, const char *what, GError **error) {
  if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
    set_gerror(error, OAKUK_ECANCELLED, "registry %s: %s: cancelled", c->registry, what);
    return;
  }
  int code = g_error_matches(err, G_IO_ERROR, G_IO_ERROR_TIMED_OUT) ? OAKUK_ETIMEOUT : OAKUK_EIO;
  set_gerror(error, code, "registry %s unreachable (%s): %s", c->registry, what, err->message);
}

/* Fetches a bearer token for the challenge; returns "Bearer <token>". */
static char *bearer_token(OakukOciClient *c, GHashTable *params, GError **error) {
  const char *realm = g_hash_table_lookup(params, "realm");
  if (!realm)
    return set_gerror(error, OAKUK_EPERM, "registry %s: bearer challenge without a realm", c->registry), NULL;
  g_autoptr(GUri) uri = g_uri_parse(realm, G_URI_FLAGS_NONE, NULL);
  if (!uri || (g_strcmp0(g_uri_get_scheme(uri), "https") != 0 &&
               !(g_strcmp0(g_uri_get_scheme(uri), "http") == 0 && g_uri_get_host(uri) &&
                 oakuk_oci_registry_is_insecure(g_uri_get_host(uri), c->insecure_list))))
    return set_gerror(error, OAKUK_EPERM,
                      "registry %s: token realm %s is not https (nor an insecure registry)", c->registry,
                      realm),
           NULL;
  GString *url = g_string_new(realm);
  char sep = strchr(realm, '?') ? '&' : '?';
  const char *keys[] = {"service", "scope"};
  for (size_t k = 0; k < G_N_ELEMENTS(keys); k++) {
    const char *v = g_hash_table_lookup(params, keys[k]);
    if (!v)
      continue;
    g_autofree char *e = g_uri_escape_string(v, NULL, FALSE);
    g_string_append_printf(url, "%c%s=%s", sep, keys[k], e);
    sep = '&';
  }
  g_autofree char *u = g_string_free(url, FALSE);
  g_autoptr(SoupMessage) m = soup_message_new("GET", u);
  if (!m)
    return set_gerror(error, OAKUK_EPERM, "registry %s: bad token realm %s", c->registry, realm), NULL;
  if (c->basic)
    soup_message_headers_replace(soup_message_get_request_headers(m), "Authorization", c->basic);
  GError *err = NULL;
  g_autoptr(GBytes) body = soup_session_send_and_read(c->session, m, c->cancel, &err);
  if (!body) {
    transport_error(c, err, "token endpoint", error);
    g_error_free(err);
    return NULL;
  }
  guint st = soup_message_get_status(m);
  if (st != 200)
    return set_gerror(error, OAKUK_EPERM,
                      "registry %s: authentication refused by token endpoint %s (HTTP %u)%s", c->registry,
                      realm, st, c->basic ? "" : "; no credentials given"),
           NULL;
  g_autoptr(JsonParser) p = json_parser_new();
  gsize n;
  const char *data = g_bytes_get_data(body, &n);
  if (!oakuk_json_precheck(data, n, NULL) || !json_parser_load_from_data(p, data, (gssize)n, NULL) ||
      !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
    return set_gerror(error, OAKUK_EPERM, "registry %s: token endpoint %s answered no JSON object",
                      c->registry, realm),
           NULL;
  JsonObject *o = json_node_get_object(json_parser_get_root(p));
  const char *tok = str_of(o, "token");
  if (!tok)
    tok = str_of(o, "access_token");
  if (!tok || !*tok)
    return set_gerror(error, OAKUK_EPERM, "registry %s: token endpoint %s answered no token", c->registry,
                      realm),
           NULL;
  return g_strconcat("Bearer ", tok, NULL);
}

/* Answers a 401: picks the Authorization header for the retry. */
static gboolean authenticate(OakukOciClient *c, SoupMessage *m, GError **error) {
  const char *hdr = soup_message_headers_get_one(soup_message_get_response_headers(m), "WWW-Authenticate");
  g_autofree char *scheme = NULL;
  g_autoptr(GHashTable) params = hdr ? oakuk_oci_parse_challenge(hdr, &scheme) : NULL;
  if (params && g_ascii_strcasecmp(scheme, "bearer") == 0) {
    char *auth = bearer_token(c, params, error);
    if (!auth)
      return FALSE;
    g_free(c->authorization);
    c->authorization = auth;
    return TRUE;
  }
  if (c->basic && !c->authorization) {
    c->authorization = g_strdup(c->basic);
    return TRUE;
  }
  return set_gerror(error, OAKUK_EPERM, "registry %s: authentication required (HTTP 401)%s", c->registry,
                    c->basic ? ": credentials refused" : " and no credentials given"),
         FALSE;
}

/* Sends a request, authenticating once on 401. Returns the message (status may be any); body
 * streamed into *in when in is not NULL, else read into *body. */
static SoupMessage *request(OakukOciClient *c, const char *method, const char *url, const char *accept,
                            const char *content_type, GBytes *payload, GInputStream **in, GBytes **body,
                            const char *what, GError **error) {
  for (int attempt = 0; attempt < 2; attempt++) {
    SoupMessage *m = soup_message_new(method, url);
    if (!m)
      return set_gerror(error, OAKUK_EINVAL, "registry %s: bad URL %s", c->registry, url), NULL;
    SoupMessageHeaders *h = soup_message_get_request_headers(m);
    if (accept)
      soup_message_headers_replace(h, "Accept", accept);
    if (c->authorization)
      soup_message_headers_replace(h, "Authorization", c->authorization);
    if (payload)
      soup_message_set_request_body_from_bytes(m, content_type ? content_type : "application/octet-stream",
                                               payload);
    GError *err = NULL;
    GInputStream *stream = NULL;
    GBytes *b = NULL;
    if (in)
      stream = soup_session_send(c->session, m, c->cancel, &err);
    else
      b = soup_session_send_and_read(c->session, m, c->cancel, &err);
    if (!stream && !b) {
      transport_error(c, err, what, error);
      g_error_free(err);
      g_object_unref(m);
      return NULL;
    }
    if (soup_message_get_status(m) == 401 && attempt == 0) {
      g_clear_object(&stream);
      g_clear_pointer(&b, g_bytes_unref);
      gboolean ok = authenticate(c, m, error);
      g_object_unref(m);
      if (!ok)
        return NULL;
      continue;
    }
    if (in)
      *in = stream;
    else
      *body = b;
    return m;
  }
  g_assert_not_reached();
}

static gboolean http_failed(OakukOciClient *c, SoupMessage *m, GBytes *body, const char *what,
                            GError **error) {
  guint st = soup_message_get_status(m);
  /* Registry errors are {"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}. */
  g_autofree char *detail = NULL;
  if (body) {
    gsize n;
    const char *d = g_bytes_get_data(body, &n);
    g_autoptr(JsonNode) root = n > 0 && n < 65536 ? oakuk_json_parse(d, n, NULL) : NULL;
    if (root && JSON_NODE_HOLDS_OBJECT(root)) {
      JsonObject *o = json_node_get_object(root);
      JsonArray *errs = array_of(o, "errors");
      if (errs && json_array_get_length(errs) > 0 && JSON_NODE_HOLDS_OBJECT(json_array_get_element(errs, 0)))
        detail = g_strdup(str_of(json_array_get_object_element(errs, 0), "message"));
    }
  }
  if (st == 401)
    return set_gerror(error, OAKUK_EPERM, "registry %s: %s: authentication required (HTTP 401)%s",
                      c->registry, what, c->basic ? ": credentials refused" : " and no credentials given"),
           FALSE;
  return set_gerror(error, status_code(st), "registry %s: %s: HTTP %u %s%s%s", c->registry, what, st,
                    soup_message_get_reason_phrase(m) ? soup_message_get_reason_phrase(m) : "",
                    detail ? ": " : "", detail ? detail : ""),
         FALSE;
}

static const char *manifest_accept = OAKUK_OCI_MEDIA_INDEX
    ", " OAKUK_OCI_MEDIA_MANIFEST ", " OAKUK_DOCKER_MEDIA_LIST ", " OAKUK_DOCKER_MEDIA_MANIFEST;

GBytes *oakuk_oci_client_get_manifest(OakukOciClient *c, const char *repo, const char *ref, char **media_type,
                                      char **digest, GError **error) {
  g_autofree char *url = g_strdup_printf("%s/v2/%s/manifests/%s", c->base, repo, ref);
  g_autofree char *what = g_strdup_printf("manifest %s:%s", repo, ref);
  g_autoptr(GBytes) body = NULL;
  g_autoptr(SoupMessage) m = request(c, "GET", url, manifest_accept, NULL, NULL, NULL, &body, what, error);
  if (!m)
    return NULL;
  if (soup_message_get_status(m) != 200)
    return http_failed(c, m, body, what, error), NULL;
  if (g_bytes_get_size(body) > MANIFEST_MAX_BYTES)
    return set_gerror(error, OAKUK_EINVAL, "registry %s: %s is larger than %d bytes", c->registry, what,
                      MANIFEST_MAX_BYTES),
           NULL;
  g_autofree char *d = oakuk_oci_digest_bytes(body);
  if (oakuk_oci_digest_is_valid(ref) && strcmp(d, ref) != 0)
    return set_gerror(error, OAKUK_EVERIFY, "registry %s: %s: digest mismatch (received %s)", c->registry,
                      what, d),
           NULL;
  const char *ct = soup_message_headers_get_content_type(soup_message_get_response_headers(m), NULL);
  *media_type = g_strdup(ct);
  *digest = g_steal_pointer(&d);
  return g_steal_pointer(&body);
}

gboolean oakuk_oci_client_push_blob(OakukOciClient *c, const char *repo, const char *digest, GBytes *data,
                                    GError **error) {
  g_autofree char *what = g_strdup_printf("blob %s in %s", digest, repo);
  g_autofree char *url = g_strdup_printf("%s/v2/%s/blobs/%s", c->base, repo, digest);
  g_autoptr(GBytes) body = NULL;
  g_autoptr(SoupMessage) head = request(c, "HEAD", url, NULL, NULL, NULL, NULL, &body, what, error);
  if (!head)
    return FALSE;
  if (soup_message_get_status(head) == 200)
    return TRUE;
  g_clear_pointer(&body, g_bytes_unref);
  g_autofree char *post = g_strdup_printf("%s/v2/%s/blobs/uploads/", c->base, repo);
  g_autoptr(SoupMessage) m = request(c, "POST", post, NULL, NULL, NULL, NULL, &body, what, error);
  if (!m)
    return FALSE;
  if (soup_message_get_status(m) != 202)
    return http_failed(c, m, body, what, error);
  const char *loc = soup_message_headers_get_one(soup_message_get_response_headers(m), "Location");
  g_autofree char *abs = loc ? g_uri_resolve_relative(post, loc, G_URI_FLAGS_NONE, NULL) : NULL;
  if (!abs)
    return set_gerror(error, OAKUK_EIO, "registry %s: %s: upload answer without a usable Location",
                      c->registry, what),
           FALSE;
  g_autofree char *esc = g_uri_escape_string(digest, NULL, FALSE);
  g_autofree char *put = g_strdup_printf("%s%cdigest=%s", abs, strchr(abs, '?') ? '&' : '?', esc);
  g_clear_pointer(&body, g_bytes_unref);
  g_autoptr(SoupMessage) pm =
      request(c, "PUT", put, NULL, "application/octet-stream", data, NULL, &body, what, error);
  if (!pm)
    return FALSE;
  if (soup_message_get_status(pm) != 201)
    return http_failed(c, pm, body, what, error);
  return TRUE;
}

char *oakuk_oci_client_push_manifest(OakukOciClient *c, const char *repo, const char *tag,
                                     const char *media_type, GBytes *manifest, GError **error) {
  g_autofree char *what = g_strdup_printf("manifest %s:%s", repo, tag);
  g_autofree char *url = g_strdup_printf("%s/v2/%s/manifests/%s", c->base, repo, tag);
  g_autoptr(GBytes) body = NULL;
  g_autoptr(SoupMessage) m = request(c, "PUT", url, NULL, media_type, manifest, NULL, &body, what, error);
  if (!m)
    return NULL;
  if (soup_message_get_status(m) != 201)
    return http_failed(c, m, body, what, error), NULL;
  return oakuk_oci_digest_bytes(manifest);
}

/* ---------------------------------------------------------------------------------------------- */
/* Platform */

OAKUK_API const char *oakuk_container_platform_arch(void) {
  struct utsname u;
  if (uname(&u) != 0)
    return "unknown";
  const char *m = u.machine;
  if (strcmp(m, "x86_64") == 0)
    return "amd64";
  if (strcmp(m, "aarch64") == 0 || strcmp(m, "arm64") == 0)
    return "arm64";
  if (g_str_has_prefix(m, "arm"))
    return "arm";
  if (strcmp(m, "riscv64") == 0)
    return "riscv64";
  if (strcmp(m, "i686") == 0 || strcmp(m, "i386") == 0)
    return "386";
  if (strcmp(m, "ppc64le") == 0)
    return "ppc64le";
  if (strcmp(m, "s390x") == 0)
    return "s390x";
  return "unknown";
}

OAKUK_API const char *oakuk_container_platform_variant(void) {
  struct utsname u;
  if (uname(&u) != 0 || !g_str_has_prefix(u.machine, "arm"))
    return NULL;
  if (g_str_has_prefix(u.machine, "armv6"))
    return "v6";
  if (g_str_has_prefix(u.machine, "armv5"))
    return "v5";
  return "v7";
}

/* ---------------------------------------------------------------------------------------------- */
/* Image sources: a registry or an OCI layout (from oci-archive:) */

typedef struct {
  const char *reference;
  OakukOciClient *client; /* registry source */
  char *repo;
  char *layout;         /* directory of an unpacked OCI layout */
  GCancellable *cancel; /* NULL, or stops blob downloads and copies */
} Source;

static JsonObject *parse_object(GBytes *b, const char *what, GError **error, JsonParser **keep) {
  gsize n;
  const char *d = g_bytes_get_data(b, &n);
  JsonParser *p = json_parser_new();
  GError *err = NULL;
  if (!oakuk_json_precheck(d, n, &err) || !json_parser_load_from_data(p, d, (gssize)n, &err) ||
      !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
    set_gerror(error, OAKUK_EINVAL, "%s: not a JSON object%s%s", what, err ? ": " : "",
               err ? err->message : "");
    g_clear_error(&err);
    g_object_unref(p);
    return NULL;
  }
  *keep = p;
  return json_node_get_object(json_parser_get_root(p));
}

static GBytes *layout_blob(Source *s, const char *digest, gsize max, GError **error) {
  g_autofree char *path = g_build_filename(s->layout, "blobs", "sha256", digest + 7, NULL);
  g_autofree char *data = NULL;
  gsize n = 0;
  GError *err = NULL;
  if (!g_file_get_contents(path, &data, &n, &err)) {
    set_gerror(error, OAKUK_ENOTFOUND, "image %s: blob %s is not in the archive", s->reference, digest);
    g_error_free(err);
    return NULL;
  }
  if (n > max)
    return set_gerror(error, OAKUK_EINVAL, "image %s: blob %s is larger than %zu bytes", s->reference, digest,
                      max),
           NULL;
  return g_bytes_new_take(g_steal_pointer(&data), n);
}

/* A manifest or index by digest (or the registry's tag). *media_type may come from the body. */
static GBytes *source_manifest(Source *s, const char *ref, char **digest, GError **error) {
  if (s->client) {
    g_autofree char *mt = NULL;
    return oakuk_oci_client_get_manifest(s->client, s->repo, ref, &mt, digest, error);
  }
  GBytes *b = layout_blob(s, ref, MANIFEST_MAX_BYTES, error);
  if (!b)
    return NULL;
  *digest = oakuk_oci_digest_bytes(b);
  if (strcmp(*digest, ref) != 0) {
    set_gerror(error, OAKUK_EVERIFY, "image %s: manifest %s: digest mismatch (received %s)", s->reference,
               ref, *digest);
    g_clear_pointer(digest, g_free);
    g_bytes_unref(b);
    return NULL;
  }
  return b;
}

static const char *media_of(JsonObject *o) {
  JsonNode *n = json_object_get_member(o, "mediaType");
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : "";
}

gboolean oakuk_oci_is_index(JsonObject *o) {
  const char *mt = media_of(o);
  return strcmp(mt, OAKUK_OCI_MEDIA_INDEX) == 0 || strcmp(mt, OAKUK_DOCKER_MEDIA_LIST) == 0 ||
         (!*mt && json_object_has_member(o, "manifests") && !json_object_has_member(o, "layers"));
}

char *oakuk_oci_index_pick(JsonObject *index, const char *arch, const char *variant, const char *reference,
                           GError **error) {
  JsonArray *ms = array_of(index, "manifests");
  g_autoptr(GString) seen = g_string_new(NULL);
  const char *fallback = NULL;
  for (guint k = 0; ms && k < json_array_get_length(ms); k++) {
    JsonNode *n = json_array_get_element(ms, k);
    if (!JSON_NODE_HOLDS_OBJECT(n))
      continue;
    JsonObject *e = json_node_get_object(n);
    const char *d = str_of(e, "digest");
    if (!oakuk_oci_digest_is_valid(d))
      continue;
    if (!json_object_has_member(e, "platform")) {
      fallback = fallback ? fallback : d;
      continue;
    }
    JsonObject *p = object_of(e, "platform");
    if (!p)
      continue;
    const char *os = str_of(p, "os") ? str_of(p, "os") : "";
    const char *a = str_of(p, "architecture") ? str_of(p, "architecture") : "";
    const char *v = str_of(p, "variant");
    if (seen->len < 1024)
      g_string_append_printf(seen, "%s%.32s/%.32s%s%.32s", seen->len ? ", " : "", os, a, v ? "/" : "",
                             v ? v : "");
    if (strcmp(os, "linux") == 0 && strcmp(a, arch) == 0 &&
        (!variant || !v || strcmp(v, variant) == 0 || (strcmp(arch, "arm64") == 0)))
      return g_strdup(d);
  }
  if (fallback && seen->len == 0)
    return g_strdup(fallback);
  set_gerror(error, OAKUK_EUNSUPPORTED,
             "image %s: no manifest for this node's platform linux/%s%s%s (index has: %s)", reference, arch,
             variant ? "/" : "", variant ? variant : "", seen->len ? seen->str : "nothing");
  return NULL;
}

static char *pick_platform(Source *s, JsonObject *index, GError **error) {
  return oakuk_oci_index_pick(index, oakuk_container_platform_arch(), oakuk_container_platform_variant(),
                              s->reference, error);
}

/* ---------------------------------------------------------------------------------------------- */
/* Blob cache */

typedef struct {
  OakukOciProgress cb;
  gpointer data;
  guint layer, layers;
  int last;
} Progress;

static void progress(Progress *p, gint64 got, gint64 total) {
  if (!p || !p->cb)
    return;
  int pct = total > 0 ? (int)(got * 100 / total) : 0;
  if (pct > 100)
    pct = 100;
  if (pct == p->last)
    return;
  if (pct != 100 && pct != 0 && pct - p->last < 5)
    return;
  p->last = pct;
  p->cb(p->layer, p->layers, pct, p->data);
}

/* Streams in into a temporary file in blobs/, verifying digest and size; renames it into place. */
static gboolean store_stream(const char *blobs, Source *s, GInputStream *in, const char *digest, gint64 size,
                             Progress *prog, const char *what, GError **error) {
  g_autofree char *tmpl = g_build_filename(blobs, ".tmp-XXXXXX", NULL);
  int fd = g_mkstemp_full(tmpl, O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0)
    return set_gerror(error, OAKUK_EIO, "create %s: %s", tmpl, g_strerror(errno)), FALSE;
  g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
  g_autofree guint8 *buf = g_malloc(CHUNK);
  gint64 got = 0;
  gboolean ok = TRUE;
  GError *err = NULL;
  for (;;) {
    gssize n = g_input_stream_read(in, buf, CHUNK, s->cancel, &err);
    if (n < 0) {
      if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        set_gerror(error, OAKUK_ECANCELLED, "image %s: %s: cancelled", s->reference, what);
      else
        set_gerror(error, OAKUK_EIO, "image %s: %s: download interrupted: %s", s->reference, what,
                   err->message);
      g_clear_error(&err);
      ok = FALSE;
      break;
    }
    if (n == 0)
      break;
    got += n;
    if (size >= 0 && got > size) {
      set_gerror(error, OAKUK_EVERIFY,
                 "image %s: %s: larger than the %" G_GINT64_FORMAT " bytes the manifest says", s->reference,
                 what, size);
      ok = FALSE;
      break;
    }
    g_checksum_update(sum, buf, (gsize)n);
    if (write(fd, buf, (size_t)n) != n) {
      set_gerror(error, OAKUK_EIO, "write %s: %s", tmpl, g_strerror(errno));
      ok = FALSE;
      break;
    }
    progress(prog, got, size);
  }
  close(fd);
  if (ok) {
    g_autofree char *d = g_strconcat("sha256:", g_checksum_get_string(sum), NULL);
    if (strcmp(d, digest) != 0) {
      set_gerror(error, OAKUK_EVERIFY, "image %s: %s %s: digest mismatch (received %s)", s->reference, what,
                 digest, d);
      ok = FALSE;
    } else if (size >= 0 && got != size) {
      set_gerror(error, OAKUK_EVERIFY,
                 "image %s: %s %s: %" G_GINT64_FORMAT " bytes instead of %" G_GINT64_FORMAT, s->reference,
                 what, digest, got, size);
      ok = FALSE;
    }
  }
  g_autofree char *dest = g_build_filename(blobs, digest + 7, NULL);
  if (ok && rename(tmpl, dest) != 0) {
    set_gerror(error, OAKUK_EIO, "rename %s: %s", dest, g_strerror(errno));
    ok = FALSE;
  }
  if (!ok)
    unlink(tmpl);
  return ok;
}

/* Makes blob digest present in blobs/ (downloading and verifying it when missing). */
static gboolean fetch_blob(const char *blobs, Source *s, const char *digest, gint64 size, Progress *prog,
                           const char *what, GError **error) {
  g_autofree char *dest = g_build_filename(blobs, digest + 7, NULL);
  if (g_file_test(dest, G_FILE_TEST_IS_REGULAR)) {
    progress(prog, 1, 1);
    return TRUE;
  }
  g_autoptr(GInputStream) in = NULL;
  if (s->layout) {
    g_autofree char *path = g_build_filename(s->layout, "blobs", "sha256", digest + 7, NULL);
    g_autoptr(GFile) f = g_file_new_for_path(path);
    in = G_INPUT_STREAM(g_file_read(f, NULL, NULL));
    if (!in)
      return set_gerror(error, OAKUK_ENOTFOUND, "image %s: %s %s is not in the archive", s->reference, what,
                        digest),
             FALSE;
    return store_stream(blobs, s, in, digest, size, prog, what, error);
  }
  g_autofree char *url = g_strdup_printf("%s/v2/%s/blobs/%s", s->client->base, s->repo, digest);
  g_autofree char *w = g_strdup_printf("%s %s", what, digest);
  g_autoptr(SoupMessage) m = request(s->client, "GET", url, NULL, NULL, NULL, &in, NULL, w, error);
  if (!m)
    return FALSE;
  if (soup_message_get_status(m) != 200) {
    g_autoptr(GBytes) body = g_input_stream_read_bytes(in, 65536, NULL, NULL);
    return http_failed(s->client, m, body, w, error);
  }
  return store_stream(blobs, s, in, digest, size, prog, what, error);
}

static GBytes *read_blob(const char *blobs, const char *digest, gsize max, GError **error) {
  g_autofree char *path = g_build_filename(blobs, digest + 7, NULL);
  g_autofree char *data = NULL;
  gsize n = 0;
  if (!g_file_get_contents(path, &data, &n, error))
    return NULL;
  if (n > max)
    return set_gerror(error, OAKUK_EINVAL, "blob %s is larger than %zu bytes", digest, max), NULL;
  return g_bytes_new_take(g_steal_pointer(&data), n);
}

/* ---------------------------------------------------------------------------------------------- */
/* Layers */

typedef struct {
  const char *rootfs;
  const char *what;
  struct archive *r, *w;
  GHashTable *added; /* paths written by this layer (opaque whiteouts keep them) */
  guint64 entries, bytes;
  guint64 max_entries, max_bytes; /* for all the layers applied so far */
} Layer;

/* No component of rel's parent may be a symlink: whiteouts and hard links must never act
 * through one (it could point out of the rootfs on the host). */
static gboolean parent_is_real(Layer *l, const char *rel, GError **error) {
  g_auto(GStrv) parts = g_strsplit(rel, "/", -1);
  guint n = g_strv_length(parts);
  g_autoptr(GString) p = g_string_new(l->rootfs);
  for (guint k = 0; k + 1 < n; k++) {
    g_string_append_printf(p, "/%s", parts[k]);
    struct stat st;
    if (lstat(p->str, &st) != 0)
      return TRUE; /* missing: nothing to act on */
    if (S_ISLNK(st.st_mode))
      return set_gerror(error, OAKUK_EPERM, "%s: entry %s goes through the symlink %s", l->what, rel,
                        p->str + strlen(l->rootfs) + 1),
             FALSE;
  }
  return TRUE;
}

static gboolean whiteout(Layer *l, const char *dir, const char *base, GError **error) {
  if (strcmp(base, ".wh..wh..opq") == 0) {
    g_autofree char *d = *dir ? g_build_filename(l->rootfs, dir, NULL) : g_strdup(l->rootfs);
    g_autofree char *rel_probe = g_strconcat(dir, "/x", NULL);
    if (!parent_is_real(l, rel_probe, error))
      return FALSE;
    g_autoptr(GDir) gd = g_dir_open(d, 0, NULL);
    const char *e;
    while (gd && (e = g_dir_read_name(gd))) {
      g_autofree char *rel = *dir ? g_strconcat(dir, "/", e, NULL) : g_strdup(e);
      if (g_hash_table_contains(l->added, rel))
        continue;
      g_autofree char *full = g_build_filename(l->rootfs, rel, NULL);
      if (!oakuk_rm_rf(full, error))
        return FALSE;
    }
    return TRUE;
  }
  const char *target = base + strlen(".wh.");
  if (!*target || strcmp(target, ".") == 0 || strcmp(target, "..") == 0)
    return set_gerror(error, OAKUK_EPERM, "%s: whiteout %s/%s names no file", l->what, dir, base), FALSE;
  g_autofree char *rel = *dir ? g_strconcat(dir, "/", target, NULL) : g_strdup(target);
  if (!parent_is_real(l, rel, error))
    return FALSE;
  g_autofree char *full = g_build_filename(l->rootfs, rel, NULL);
  return oakuk_rm_rf(full, error);
}

static gboolean layer_corrupt(Layer *l, const char *at, GError **error) {
  const char *msg = archive_error_string(l->r);
  return set_gerror(error, OAKUK_EINVAL, "%s: corrupt or truncated layer%s%s: %s", l->what, at ? " at " : "",
                    at ? at : "", msg ? msg : "unknown error"),
         FALSE;
}

/* Resolves the normalised path through the rootfs's symlinks (lower layers' and this one's), with
 * "/" as the rootfs (the container's view); the last component is followed with follow_last. */
static char *layer_resolve(Layer *l, const char *what, const char *dir, const char *path,
                           gboolean follow_last, GError **error) {
  g_autofree char *via = NULL;
  char *resolved = NULL;
  OakukArchiveResolve r = oakuk_archive_resolve(dir, path, follow_last, TRUE, oakuk_archive_readlink_disk,
                                                (gpointer)l->rootfs, &resolved, &via);
  if (r != OAKUK_ARCHIVE_RESOLVE_OK) {
    g_autofree char *why = oakuk_archive_resolve_describe(r, via);
    set_gerror(error, OAKUK_EPERM, "%s: %s %s", l->what, what, why);
  }
  return resolved;
}

static gboolean layer_entry(Layer *l, struct archive_entry *e, GError **error) {
  OakukArchivePathCheck why;
  const char *raw = archive_entry_pathname(e);
  g_autofree char *name = oakuk_archive_normalize_path(raw, &why);
  if (why == OAKUK_ARCHIVE_PATH_MISSING)
    return set_gerror(error, OAKUK_EINVAL, "%s: an entry has no name (corrupt layer)", l->what), FALSE;
  if (!name)
    return set_gerror(error, OAKUK_EPERM, "%s: entry %s %s", l->what, raw,
                      why == OAKUK_ARCHIVE_PATH_ABSOLUTE ? "is an absolute path"
                                                         : "has a '..' component (path traversal)"),
           FALSE;
  if (++l->entries > l->max_entries)
    return set_gerror(error, OAKUK_EINVAL, "%s: more than %" G_GUINT64_FORMAT " entries", l->what,
                      l->max_entries),
           FALSE;
  if (!*name)
    return TRUE;
  g_autofree char *base = g_path_get_basename(name);
  g_autofree char *dir = g_path_get_dirname(name);
  if (strcmp(dir, ".") == 0)
    dir[0] = '\0';
  /* Whiteouts never act through a symlink: they name paths of the layer's own directories. */
  if (g_str_has_prefix(base, ".wh."))
    return whiteout(l, dir, base, error);
  /* Everything else is written where the kernel would put it in the rootfs (through the links of
   * the lower layers and of this one), and never outside. */
  g_autofree char *ewhat = g_strdup_printf("entry %s", name);
  g_autofree char *rname = layer_resolve(l, ewhat, "", name, FALSE, error);
  if (!rname)
    return FALSE;
  const char *hardlink = archive_entry_hardlink(e);
  mode_t type = archive_entry_filetype(e);
  g_autofree char *dest = g_build_filename(l->rootfs, rname, NULL);
  if (hardlink) {
    g_autofree char *t = oakuk_archive_normalize_path(hardlink, &why);
    if (!t || !*t)
      return set_gerror(error, OAKUK_EPERM, "%s: hard link %s -> %s leaves the layer", l->what, name,
                        hardlink),
             FALSE;
    g_autofree char *hwhat = g_strdup_printf("hard link %s -> %s", name, hardlink);
    g_autofree char *rt = layer_resolve(l, hwhat, "", t, FALSE, error);
    if (!rt)
      return FALSE;
    g_autofree char *ht = g_build_filename(l->rootfs, rt, NULL);
    archive_entry_set_hardlink(e, ht);
  } else if (type == AE_IFLNK) {
    const char *target = archive_entry_symlink(e);
    g_autofree char *rdir = g_path_get_dirname(rname);
    g_autofree char *swhat =
        g_strdup_printf("symlink %s -> %s leaves the image: it", name, target ? target : "");
    g_autofree char *rt =
        target && *target ? layer_resolve(l, swhat, strcmp(rdir, ".") == 0 ? "" : rdir, target, TRUE, error)
                          : NULL;
    if (!rt) {
      if (error && !*error)
        set_gerror(error, OAKUK_EPERM, "%s: symlink %s has an empty target", l->what, name);
      return FALSE;
    }
  } else if (type != AE_IFREG && type != AE_IFDIR) {
    const char *kind = type == AE_IFCHR   ? "a character device"
                       : type == AE_IFBLK ? "a block device"
                       : type == AE_IFIFO ? "a fifo"
                                          : "of an unsupported type";
    return set_gerror(error, OAKUK_EPERM, "%s: %s is %s; layers may hold only files, directories and links",
                      l->what, name, kind),
           FALSE;
  }
  /* A non-directory replaces whatever a lower layer had there; a directory merges. */
  struct stat st;
  if (lstat(dest, &st) == 0 && (type != AE_IFDIR || !S_ISDIR(st.st_mode)) && !oakuk_rm_rf(dest, error))
    return FALSE;
  archive_entry_set_pathname(e, dest);
  if (archive_write_header(l->w, e) < ARCHIVE_WARN)
    return set_gerror(error, OAKUK_EPERM, "%s: extract %s: %s", l->what, name, archive_error_string(l->w)),
           FALSE;
  for (;;) {
    const void *buf;
    size_t size;
    la_int64_t off;
    int r = archive_read_data_block(l->r, &buf, &size, &off);
    if (r == ARCHIVE_EOF)
      break;
    if (r < ARCHIVE_WARN)
      return layer_corrupt(l, name, error);
    l->bytes += size;
    if (l->bytes > l->max_bytes)
      return set_gerror(error, OAKUK_EINVAL, "%s: unpacks to more than %" G_GUINT64_FORMAT " bytes", l->what,
                        l->max_bytes),
             FALSE;
    if (archive_write_data_block(l->w, buf, size, off) < ARCHIVE_WARN)
      return set_gerror(error, OAKUK_EIO, "%s: write %s: %s", l->what, name, archive_error_string(l->w)),
             FALSE;
  }
  if (archive_write_finish_entry(l->w) < ARCHIVE_WARN)
    return set_gerror(error, OAKUK_EIO, "%s: extract %s: %s", l->what, name, archive_error_string(l->w)),
           FALSE;
  g_hash_table_add(l->added, g_steal_pointer(&rname));
  return TRUE;
}

/* Every link of the rootfs still resolves inside it once the layer is applied: a link of this
 * layer can change where a lower layer's link leads. */
static gboolean layer_check_links(Layer *l, GError **error) {
  g_autofree char *link = NULL, *target = NULL, *via = NULL;
  OakukArchiveResolve why;
  if (oakuk_archive_check_tree(l->rootfs, TRUE, &link, &target, &why, &via))
    return TRUE;
  if (!link)
    return set_gerror(error, OAKUK_EIO, "%s: check the rootfs: %s", l->what, target), FALSE;
  g_autofree char *desc = oakuk_archive_resolve_describe(why, via);
  return set_gerror(error, OAKUK_EPERM, "%s: symlink %s -> %s leaves the image: it %s", l->what, link, target,
                    desc),
         FALSE;
}

gboolean oakuk_oci_apply_layer(const char *rootfs, const char *layer_path, const char *what, GError **error) {
  guint64 entries = 0, bytes = 0;
  return oakuk_oci_apply_layer_limited(rootfs, layer_path, what, &entries, LAYER_MAX_ENTRIES, &bytes,
                                       LAYER_MAX_BYTES, error);
}

gboolean oakuk_oci_apply_layer_limited(const char *rootfs, const char *layer_path, const char *what,
                                       guint64 *entries, guint64 max_entries, guint64 *bytes,
                                       guint64 max_bytes, GError **error) {
  Layer l = {.rootfs = rootfs,
             .what = what,
             .entries = *entries,
             .bytes = *bytes,
             .max_entries = max_entries,
             .max_bytes = max_bytes};
  l.r = archive_read_new();
  oakuk_archive_support_filters(l.r);
  archive_read_support_format_tar(l.r);
  l.w = archive_write_disk_new();
  archive_write_disk_set_options(l.w, ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                          ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM |
                                          ARCHIVE_EXTRACT_TIME);
  l.added = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  gboolean ok = TRUE;
  if (archive_read_open_filename(l.r, layer_path, CHUNK) != ARCHIVE_OK) {
    ok = layer_corrupt(&l, NULL, error);
  } else {
    for (;;) {
      struct archive_entry *e;
      int r = archive_read_next_header(l.r, &e);
      if (r == ARCHIVE_EOF)
        break;
      if (r < ARCHIVE_WARN) {
        ok = layer_corrupt(&l, NULL, error);
        break;
      }
      if (!layer_entry(&l, e, error)) {
        ok = FALSE;
        break;
      }
    }
  }
  archive_read_free(l.r);
  archive_write_free(l.w);
  g_hash_table_unref(l.added);
  *entries = l.entries;
  *bytes = l.bytes;
  return ok && layer_check_links(&l, error);
}

/* ---------------------------------------------------------------------------------------------- */
/* Pull */

void oakuk_oci_image_free(OakukOciImage *img) {
  if (!img)
    return;
  g_free(img->manifest_digest);
  g_free(img->rootfs);
  g_ptr_array_unref(img->entrypoint);
  g_ptr_array_unref(img->cmd);
  g_ptr_array_unref(img->env);
  g_free(img->workdir);
  g_free(img->user);
  g_free(img);
}

static GPtrArray *string_list(JsonObject *o, const char *key) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  if (n && JSON_NODE_HOLDS_ARRAY(n)) {
    JsonArray *arr = json_node_get_array(n);
    for (guint k = 0; k < json_array_get_length(arr); k++) {
      JsonNode *e = json_array_get_element(arr, k);
      if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING)
        g_ptr_array_add(a, g_strdup(json_node_get_string(e)));
    }
  }
  return a;
}

/* Reads the image config blob into img. */
static gboolean load_config(OakukOciImage *img, GBytes *config, const char *reference, GError **error) {
  g_autoptr(JsonParser) p = NULL;
  g_autofree char *what = g_strdup_printf("image %s: config", reference);
  JsonObject *o = parse_object(config, what, error, &p);
  if (!o)
    return FALSE;
  JsonObject *c = object_of(o, "config");
  img->entrypoint = string_list(c, "Entrypoint");
  img->cmd = string_list(c, "Cmd");
  img->env = string_list(c, "Env");
  const char *wd = str_of(c, "WorkingDir");
  img->workdir = wd && *wd ? g_strdup(wd) : NULL;
  const char *user = str_of(c, "User");
  img->user = user && *user ? g_strdup(user) : NULL;
  return TRUE;
}

/* Flattens the manifest's layers (all in blobs/) into unpacked/<hex>/rootfs, atomically. */
static gboolean unpack_image(const char *images, const char *blobs, const OakukOciManifest *man,
                             const char *mdigest, GBytes *config, const char *reference, GError **error) {
  g_autofree char *unpacked = g_build_filename(images, "unpacked", NULL);
  g_autofree char *final = g_build_filename(unpacked, mdigest + 7, NULL);
  if (g_file_test(final, G_FILE_TEST_IS_DIR))
    return TRUE;
  if (g_mkdir_with_parents(unpacked, 0700) != 0)
    return set_gerror(error, OAKUK_EIO, "create %s: %s", unpacked, g_strerror(errno)), FALSE;
  g_autofree char *tmpl = g_build_filename(unpacked, ".tmp-XXXXXX", NULL);
  if (!g_mkdtemp_full(tmpl, 0700))
    return set_gerror(error, OAKUK_EIO, "create %s: %s", tmpl, g_strerror(errno)), FALSE;
  g_autofree char *rootfs = g_build_filename(tmpl, "rootfs", NULL);
  gboolean ok = mkdir(rootfs, 0755) == 0;
  if (!ok)
    set_gerror(error, OAKUK_EIO, "create %s: %s", rootfs, g_strerror(errno));
  guint n = man->n_layers;
  for (guint k = 0; ok && k < n; k++) {
    const char *d = man->layers[k].digest;
    g_autofree char *path = g_build_filename(blobs, d + 7, NULL);
    g_autofree char *what = g_strdup_printf("image %s: layer %u/%u (%s)", reference, k + 1, n, d);
    ok = oakuk_oci_apply_layer(rootfs, path, what, error);
  }
  g_autofree char *cfg = g_build_filename(tmpl, "config.json", NULL);
  if (ok)
    ok = g_file_set_contents(cfg, g_bytes_get_data(config, NULL), (gssize)g_bytes_get_size(config), error);
  if (ok && rename(tmpl, final) != 0 && !g_file_test(final, G_FILE_TEST_IS_DIR)) {
    set_gerror(error, OAKUK_EIO, "rename %s: %s", final, g_strerror(errno));
    ok = FALSE;
  }
  if (!ok || g_file_test(tmpl, G_FILE_TEST_EXISTS))
    oakuk_rm_rf(tmpl, NULL);
  return ok;
}

/* A descriptor (digest, size) inside a manifest: path names it in errors ("config", "layers[2]"). */
static gboolean descriptor_parse(JsonNode *n, const char *reference, const char *path, OakukOciBlob *out,
                                 GError **error) {
  if (!n || !JSON_NODE_HOLDS_OBJECT(n))
    return set_gerror(error, OAKUK_EINVAL, "image %s: manifest: %s is not an object", reference, path), FALSE;
  JsonObject *o = json_node_get_object(n);
  const char *d = str_of(o, "digest");
  if (!oakuk_oci_digest_is_valid(d))
    return set_gerror(error, OAKUK_EINVAL, "image %s: manifest: %s.digest is not sha256:<64 hex>", reference,
                      path),
           FALSE;
  JsonNode *sz = json_object_get_member(o, "size");
  if (!sz || !JSON_NODE_HOLDS_VALUE(sz) || json_node_get_value_type(sz) != G_TYPE_INT64 ||
      json_node_get_int(sz) < 0)
    return set_gerror(error, OAKUK_EINVAL, "image %s: manifest: %s.size is not a non-negative integer",
                      reference, path),
           FALSE;
  out->digest = g_strdup(d);
  out->size = json_node_get_int(sz);
  return TRUE;
}

void oakuk_oci_manifest_free(OakukOciManifest *m) {
  if (!m)
    return;
  g_free(m->config.digest);
  for (guint k = 0; k < m->n_layers; k++)
    g_free(m->layers[k].digest);
  g_free(m->layers);
  g_free(m);
}

OakukOciManifest *oakuk_oci_manifest_parse(JsonObject *m, const char *reference, GError **error) {
  JsonArray *layers = array_of(m, "layers");
  if (!layers)
    return set_gerror(error, OAKUK_EINVAL, "image %s: manifest has no layers array", reference), NULL;
  guint n = json_array_get_length(layers);
  if (n > OAKUK_OCI_MAX_LAYERS)
    return set_gerror(error, OAKUK_EINVAL, "image %s: manifest has %u layers; the limit is %d", reference, n,
                      OAKUK_OCI_MAX_LAYERS),
           NULL;
  g_autoptr(OakukOciManifest) out = g_new0(OakukOciManifest, 1);
  out->layers = g_new0(OakukOciBlob, MAX(n, 1));
  if (!descriptor_parse(json_object_get_member(m, "config"), reference, "config", &out->config, error))
    return NULL;
  for (guint k = 0; k < n; k++) {
    g_autofree char *path = g_strdup_printf("layers[%u]", k);
    if (!descriptor_parse(json_array_get_element(layers, k), reference, path, &out->layers[k], error))
      return NULL;
    out->n_layers = k + 1;
  }
  return g_steal_pointer(&out);
}

/* Downloads (or reads from the layout) an oci-archive: tarball into dir, keeping only the layout's
 * index.json and blobs/sha256/<hex> regular files. */
static gboolean open_archive(const char *url, const char *dir, const oakuk_container_options *o,
                             GError **error);

static OakukOciImage *pull_from(Source *s, const char *images, const char *top_ref, OakukOciProgress cb,
                                gpointer data, GError **error) {
  g_autofree char *blobs = g_build_filename(images, "blobs", "sha256", NULL);
  if (g_mkdir_with_parents(blobs, 0700) != 0)
    return set_gerror(error, OAKUK_EIO, "create %s: %s", blobs, g_strerror(errno)), NULL;
  g_autofree char *digest = NULL;
  g_autoptr(GBytes) body = NULL;
  g_autoptr(JsonParser) p = NULL;
  JsonObject *m = NULL;
  g_autofree char *what = g_strdup_printf("image %s: manifest", s->reference);
  if (top_ref) {
    body = source_manifest(s, top_ref, &digest, error);
    if (!body || !(m = parse_object(body, what, error, &p)))
      return NULL;
  } else {
    /* An OCI layout: its index.json is the top-level index. */
    g_autofree char *path = g_build_filename(s->layout, "index.json", NULL);
    g_autofree char *text = NULL;
    gsize n;
    if (!g_file_get_contents(path, &text, &n, NULL))
      return set_gerror(error, OAKUK_EINVAL, "image %s: the archive has no index.json", s->reference), NULL;
    body = g_bytes_new_take(g_steal_pointer(&text), n);
    if (!(m = parse_object(body, what, error, &p)))
      return NULL;
  }
  for (int depth = 0; oakuk_oci_is_index(m); depth++) {
    if (depth > 2)
      return set_gerror(error, OAKUK_EINVAL, "image %s: indexes nested too deeply", s->reference), NULL;
    g_autofree char *dd = pick_platform(s, m, error);
    if (!dd)
      return NULL;
    g_clear_pointer(&digest, g_free);
    g_clear_pointer(&body, g_bytes_unref);
    g_clear_object(&p);
    body = source_manifest(s, dd, &digest, error);
    if (!body || !(m = parse_object(body, what, error, &p)))
      return NULL;
  }
  g_autoptr(OakukOciManifest) man = oakuk_oci_manifest_parse(m, s->reference, error);
  if (!man)
    return NULL;
  const char *cdigest = man->config.digest;
  if (!fetch_blob(blobs, s, cdigest, man->config.size, NULL, "config", error))
    return NULL;
  guint n = man->n_layers;
  for (guint k = 0; k < n; k++) {
    Progress prog = {cb, data, k + 1, n, -1};
    g_autofree char *w = g_strdup_printf("layer %u/%u", k + 1, n);
    progress(&prog, 0, 1);
    if (!fetch_blob(blobs, s, man->layers[k].digest, man->layers[k].size, &prog, w, error))
      return NULL;
  }
  g_autoptr(GBytes) config = read_blob(blobs, cdigest, CONFIG_MAX_BYTES, error);
  if (!config)
    return NULL;
  g_autoptr(OakukOciImage) img = g_new0(OakukOciImage, 1);
  if (!load_config(img, config, s->reference, error) ||
      !unpack_image(images, blobs, man, digest, config, s->reference, error))
    return NULL;
  img->manifest_digest = g_steal_pointer(&digest);
  img->rootfs = g_build_filename(images, "unpacked", img->manifest_digest + 7, "rootfs", NULL);
  return g_steal_pointer(&img);
}

/* Recent resolutions: images/refs/<sha256 of the reference> holds {"reference", "digest",
 * "credentials"} after each registry pull. A digest reference whose image is unpacked, or a tag
 * resolved less than OAKUK_OCI_TAG_TTL_S seconds ago, is used without asking the registry (the
 * manifest round trip is most of a cached deploy's pull time). "credentials" is "" when the pull
 * needed none, else the sha256 of the username and password that were accepted: a private image is
 * only reused for the same credentials, anything else goes to the registry and its auth. */
static char *resolution_path(const char *images, const char *reference) {
  g_autofree char *h = g_compute_checksum_for_string(G_CHECKSUM_SHA256, reference, -1);
  return g_build_filename(images, "refs", h, NULL);
}

static char *credentials_hash(const char *username, const char *password) {
  if (!username || !password)
    return g_strdup("");
  g_autofree char *up = g_strdup_printf("%s\n%s", username, password);
  char *h = g_compute_checksum_for_string(G_CHECKSUM_SHA256, up, -1);
  memset(up, 0, strlen(up));
  return h;
}

static OakukOciImage *resolution_lookup(const char *images, const char *reference, gboolean by_digest,
                                        const char *username, const char *password) {
  g_autofree char *path = resolution_path(images, reference);
  struct stat st;
  if (stat(path, &st) != 0)
    return NULL;
  gint64 age = g_get_real_time() / G_USEC_PER_SEC - (gint64)st.st_mtime;
  if (!by_digest && (age < 0 || age >= OAKUK_OCI_TAG_TTL_S))
    return NULL;
  g_autoptr(JsonParser) p = json_parser_new();
  if (!json_parser_load_from_file(p, path, NULL) || !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
    return NULL;
  JsonObject *o = json_node_get_object(json_parser_get_root(p));
  const char *digest = str_of(o, "digest");
  const char *creds = str_of(o, "credentials");
  if (g_strcmp0(str_of(o, "reference"), reference) != 0 || !oakuk_oci_digest_is_valid(digest) || !creds)
    return NULL;
  g_autofree char *mine = credentials_hash(username, password);
  if (*creds && strcmp(creds, mine) != 0)
    return NULL;
  g_autofree char *cfgpath = g_build_filename(images, "unpacked", digest + 7, "config.json", NULL);
  g_autofree char *rootfs = g_build_filename(images, "unpacked", digest + 7, "rootfs", NULL);
  g_autofree char *text = NULL;
  gsize n;
  if (!g_file_test(rootfs, G_FILE_TEST_IS_DIR) || !g_file_get_contents(cfgpath, &text, &n, NULL))
    return NULL;
  g_autoptr(GBytes) config = g_bytes_new_take(g_steal_pointer(&text), n);
  g_autoptr(OakukOciImage) img = g_new0(OakukOciImage, 1);
  if (!load_config(img, config, reference, NULL))
    return NULL;
  img->manifest_digest = g_strdup(digest);
  img->rootfs = g_steal_pointer(&rootfs);
  return g_steal_pointer(&img);
}

static void resolution_store(const char *images, const char *reference, const char *digest,
                             gboolean authenticated, const char *username, const char *password) {
  g_autofree char *dir = g_build_filename(images, "refs", NULL);
  g_autofree char *path = resolution_path(images, reference);
  g_autofree char *creds = authenticated ? credentials_hash(username, password) : g_strdup("");
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "reference");
  json_builder_add_string_value(b, reference);
  json_builder_set_member_name(b, "digest");
  json_builder_add_string_value(b, digest);
  json_builder_set_member_name(b, "credentials");
  json_builder_add_string_value(b, creds);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = oakuk_json_node_to_string(root, FALSE);
  GError *err = NULL;
  if (g_mkdir_with_parents(dir, 0700) != 0 ||
      !g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_NONE, 0600, &err))
    g_debug("image %s: resolution not recorded: %s", reference, err ? err->message : g_strerror(errno));
  g_clear_error(&err);
}

OakukOciImage *oakuk_oci_pull(const char *images_dir, const char *reference, const char *username,
                              const char *password, const oakuk_container_options *opts, OakukOciProgress cb,
                              gpointer data, GError **error) {
  Source s = {.reference = reference};
  OakukOciImage *img = NULL;
  if (g_str_has_prefix(reference, "oci-archive:")) {
    g_autofree char *tmpdir = g_build_filename(images_dir, ".archive-XXXXXX", NULL);
    if (g_mkdir_with_parents(images_dir, 0700) != 0 || !g_mkdtemp_full(tmpdir, 0700))
      return set_gerror(error, OAKUK_EIO, "create %s: %s", tmpdir, g_strerror(errno)), NULL;
    s.layout = g_strdup(tmpdir);
    if (open_archive(reference + strlen("oci-archive:"), tmpdir, opts, error))
      img = pull_from(&s, images_dir, NULL, cb, data, error);
    oakuk_rm_rf(tmpdir, NULL);
    g_free(s.layout);
    return img;
  }
  OakukOciRef ref;
  if (!oakuk_oci_ref_parse(reference, &ref, error))
    return NULL;
  img = resolution_lookup(images_dir, reference, ref.digest != NULL, username, password);
  if (img) {
    oakuk_oci_ref_clear(&ref);
    return img;
  }
  s.client = oakuk_oci_client_new(ref.registry, username, password, opts, error);
  s.repo = ref.repository;
  if (s.client)
    img = pull_from(&s, images_dir, ref.digest ? ref.digest : ref.tag, cb, data, error);
  if (img)
    resolution_store(images_dir, reference, img->manifest_digest, s.client->authorization != NULL, username,
                     password);
  oakuk_oci_client_free(s.client);
  oakuk_oci_ref_clear(&ref);
  return img;
}

/* ---------------------------------------------------------------------------------------------- */
/* oci-archive: */

static gboolean layout_name_ok(const char *name) {
  if (strcmp(name, "index.json") == 0 || strcmp(name, "oci-layout") == 0)
    return TRUE;
  if (!g_str_has_prefix(name, "blobs/sha256/"))
    return FALSE;
  g_autofree char *d = g_strconcat("sha256:", name + strlen("blobs/sha256/"), NULL);
  return oakuk_oci_digest_is_valid(d);
}

static gboolean open_archive(const char *url, const char *dir, const oakuk_container_options *o,
                             GError **error) {
  g_autofree char *local = NULL;
  g_autofree char *download = NULL;
  int local_fd = -1;
  if (g_str_has_prefix(url, "file:")) {
    /* Only a regular file inside file_allowed_dirs (archive-safe.h): never any host path. */
    g_autofree char *bad = NULL;
    g_auto(GStrv) dirs = oakuk_archive_local_dirs(o ? o->file_allowed_dirs : NULL, &bad);
    if (bad)
      return set_gerror(error, OAKUK_EINVAL, "oci-archive %s: file_allowed_dirs: \"%s\" is not absolute", url,
                        bad),
             FALSE;
    if (!oakuk_archive_local_check(url, dirs, "file_allowed_dirs", &local, error) ||
        (local_fd = oakuk_archive_local_open(url, local, dirs, "file_allowed_dirs", NULL, error)) < 0)
      return g_prefix_error(error, "oci-archive "), FALSE;
  } else if (g_str_has_prefix(url, "http://") || g_str_has_prefix(url, "https://")) {
    g_autoptr(GUri) u = g_uri_parse(url, G_URI_FLAGS_NONE, NULL);
    if (!u || !g_uri_get_host(u))
      return set_gerror(error, OAKUK_EINVAL, "oci-archive %s: bad URL", url), FALSE;
    g_autofree char *hostport = g_uri_get_port(u) > 0
                                    ? g_strdup_printf("%s:%d", g_uri_get_host(u), g_uri_get_port(u))
                                    : g_strdup(g_uri_get_host(u));
    g_autoptr(OakukOciClient) c = oakuk_oci_client_new(
        g_str_has_prefix(url, "http://") ? g_strconcat("http://", hostport, NULL) : hostport, NULL, NULL, o,
        error);
    if (!c)
      return FALSE;
    g_autoptr(GInputStream) in = NULL;
    g_autoptr(SoupMessage) m = request(c, "GET", url, NULL, NULL, NULL, &in, NULL, "oci-archive", error);
    if (!m)
      return FALSE;
    if (soup_message_get_status(m) != 200)
      return http_failed(c, m, NULL, url, error);
    download = g_build_filename(dir, "archive.tar", NULL);
    g_autoptr(GFile) f = g_file_new_for_path(download);
    g_autoptr(GFileOutputStream) out = g_file_replace(f, NULL, FALSE, G_FILE_CREATE_PRIVATE, NULL, error);
    if (!out || g_output_stream_splice(G_OUTPUT_STREAM(out), in, G_OUTPUT_STREAM_SPLICE_CLOSE_TARGET, NULL,
                                       error) < 0)
      return FALSE;
  } else {
    return set_gerror(error, OAKUK_EINVAL, "oci-archive %s: use an http://, https:// or file:// URL", url),
           FALSE;
  }
  struct archive *r = archive_read_new();
  oakuk_archive_support_filters(r);
  archive_read_support_format_tar(r);
  gboolean ok = TRUE;
  if ((local_fd >= 0 ? archive_read_open_fd(r, local_fd, CHUNK)
                     : archive_read_open_filename(r, download, CHUNK)) != ARCHIVE_OK) {
    ok = (set_gerror(error, archive_errno(r) == ENOENT ? OAKUK_ENOTFOUND : OAKUK_EINVAL, "oci-archive %s: %s",
                     url, archive_error_string(r)),
          FALSE);
  }
  g_autofree char *blobs = g_build_filename(dir, "blobs", "sha256", NULL);
  g_mkdir_with_parents(blobs, 0700);
  struct archive_entry *e;
  int rc;
  while (ok && (rc = archive_read_next_header(r, &e)) != ARCHIVE_EOF) {
    if (rc < ARCHIVE_WARN) {
      ok = (set_gerror(error, OAKUK_EINVAL, "oci-archive %s: %s", url, archive_error_string(r)), FALSE);
      break;
    }
    OakukArchivePathCheck why;
    g_autofree char *name = oakuk_archive_normalize_path(archive_entry_pathname(e), &why);
    if (!name || archive_entry_filetype(e) != AE_IFREG || !layout_name_ok(name))
      continue; /* only the layout's own files are read; anything else is ignored */
    g_autofree char *dest = g_build_filename(dir, name, NULL);
    int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || archive_read_data_into_fd(r, fd) < ARCHIVE_WARN)
      ok = (set_gerror(error, OAKUK_EIO, "oci-archive %s: extract %s: %s", url, name,
                       fd < 0 ? g_strerror(errno) : archive_error_string(r)),
            FALSE);
    if (fd >= 0)
      close(fd);
  }
  archive_read_free(r);
  if (local_fd >= 0)
    close(local_fd);
  if (download)
    unlink(download);
  return ok;
}

/* ---------------------------------------------------------------------------------------------- */
/* Sessions: one image source, read document by document (unikernel images, resolution) */

struct OakukOciSession {
  Source s;
  OakukOciRef ref; /* registry sources */
  char *reference;
  char *tmpdir; /* the unpacked layout of an oci-archive:, removed with the session */
};

void oakuk_oci_session_free(OakukOciSession *ss) {
  if (!ss)
    return;
  oakuk_oci_client_free(ss->s.client);
  g_clear_object(&ss->s.cancel);
  if (ss->tmpdir)
    oakuk_rm_rf(ss->tmpdir, NULL);
  g_free(ss->tmpdir);
  oakuk_oci_ref_clear(&ss->ref);
  g_free(ss->reference);
  g_free(ss);
}

OakukOciSession *oakuk_oci_session_open(const char *work_dir, const char *reference, const char *username,
                                        const char *password, const oakuk_container_options *opts,
                                        GCancellable *cancel, GError **error) {
  g_autoptr(OakukOciSession) ss = g_new0(OakukOciSession, 1);
  ss->reference = g_strdup(reference);
  ss->s.reference = ss->reference;
  ss->s.cancel = cancel ? g_object_ref(cancel) : NULL;
  if (g_str_has_prefix(reference, "oci-archive:")) {
    g_autofree char *tmpdir = g_build_filename(work_dir, ".archive-XXXXXX", NULL);
    if (g_mkdir_with_parents(work_dir, 0700) != 0 || !g_mkdtemp_full(tmpdir, 0700))
      return set_gerror(error, OAKUK_EIO, "create %s: %s", tmpdir, g_strerror(errno)), NULL;
    ss->tmpdir = g_steal_pointer(&tmpdir);
    ss->s.layout = ss->tmpdir;
    if (!open_archive(reference + strlen("oci-archive:"), ss->tmpdir, opts, error))
      return NULL;
    return g_steal_pointer(&ss);
  }
  if (!oakuk_oci_ref_parse(reference, &ss->ref, error))
    return NULL;
  ss->s.client = oakuk_oci_client_new(ss->ref.registry, username, password, opts, error);
  if (!ss->s.client)
    return NULL;
  oakuk_oci_client_set_cancellable(ss->s.client, cancel);
  ss->s.repo = ss->ref.repository;
  return g_steal_pointer(&ss);
}

const char *oakuk_oci_session_registry(OakukOciSession *ss) {
  return ss->s.client ? ss->ref.registry : NULL;
}

const char *oakuk_oci_session_repository(OakukOciSession *ss) {
  return ss->s.client ? ss->ref.repository : NULL;
}

gboolean oakuk_oci_session_authenticated(OakukOciSession *ss) {
  return ss->s.client && ss->s.client->authorization;
}

GBytes *oakuk_oci_session_top(OakukOciSession *ss, char **digest, GError **error) {
  if (ss->s.client)
    return source_manifest(&ss->s, ss->ref.digest ? ss->ref.digest : ss->ref.tag, digest, error);
  g_autofree char *path = g_build_filename(ss->s.layout, "index.json", NULL);
  g_autofree char *text = NULL;
  gsize n;
  if (!g_file_get_contents(path, &text, &n, NULL))
    return set_gerror(error, OAKUK_EINVAL, "image %s: the archive has no index.json", ss->reference), NULL;
  if (n > MANIFEST_MAX_BYTES)
    return set_gerror(error, OAKUK_EINVAL, "image %s: index.json is larger than %d bytes", ss->reference,
                      MANIFEST_MAX_BYTES),
           NULL;
  GBytes *b = g_bytes_new_take(g_steal_pointer(&text), n);
  *digest = oakuk_oci_digest_bytes(b);
  return b;
}

GBytes *oakuk_oci_session_manifest(OakukOciSession *ss, const char *digest, GError **error) {
  g_autofree char *got = NULL;
  return source_manifest(&ss->s, digest, &got, error);
}

GBytes *oakuk_oci_session_blob(OakukOciSession *ss, const char *digest, gint64 size, gsize max,
                               GError **error) {
  if (size > (gint64)max)
    return set_gerror(error, OAKUK_EINVAL, "image %s: blob %s is larger than %zu bytes", ss->reference,
                      digest, max),
           NULL;
  g_autoptr(GBytes) b = NULL;
  if (ss->s.layout) {
    b = layout_blob(&ss->s, digest, max, error);
  } else {
    g_autofree char *url = g_strdup_printf("%s/v2/%s/blobs/%s", ss->s.client->base, ss->s.repo, digest);
    g_autofree char *what = g_strdup_printf("blob %s", digest);
    g_autoptr(SoupMessage) m = request(ss->s.client, "GET", url, NULL, NULL, NULL, NULL, &b, what, error);
    if (!m)
      return NULL;
    if (soup_message_get_status(m) != 200)
      return http_failed(ss->s.client, m, b, what, error), NULL;
    if (g_bytes_get_size(b) > max)
      return set_gerror(error, OAKUK_EINVAL, "image %s: blob %s is larger than %zu bytes", ss->reference,
                        digest, max),
             NULL;
  }
  if (!b)
    return NULL;
  g_autofree char *d = oakuk_oci_digest_bytes(b);
  if (strcmp(d, digest) != 0 || (size >= 0 && (gint64)g_bytes_get_size(b) != size))
    return set_gerror(error, OAKUK_EVERIFY,
                      "image %s: blob %s: digest or size mismatch (received %s, %zu bytes)", ss->reference,
                      digest, d, g_bytes_get_size(b)),
           NULL;
  return g_steal_pointer(&b);
}

gboolean oakuk_oci_session_fetch_blob(OakukOciSession *ss, const char *blobs_dir, const char *digest,
                                      gint64 size, OakukOciProgress cb, gpointer data, guint layer,
                                      guint layers, const char *what, GError **error) {
  if (g_cancellable_set_error_if_cancelled(ss->s.cancel, NULL))
    return set_gerror(error, OAKUK_ECANCELLED, "image %s: cancelled", ss->reference), FALSE;
  if (g_mkdir_with_parents(blobs_dir, 0700) != 0)
    return set_gerror(error, OAKUK_EIO, "create %s: %s", blobs_dir, g_strerror(errno)), FALSE;
  Progress prog = {cb, data, layer, layers, -1};
  progress(&prog, 0, 1);
  return fetch_blob(blobs_dir, &ss->s, digest, size, cb ? &prog : NULL, what, error);
}

/* ---------------------------------------------------------------------------------------------- */
/* Unikernel platforms */

const char *oakuk_oci_unikernel_goarch(const char *architecture) {
  if (!architecture)
    return NULL;
  if (strcmp(architecture, "x86_64") == 0 || strcmp(architecture, "amd64") == 0)
    return "amd64";
  if (strcmp(architecture, "arm64") == 0 || strcmp(architecture, "aarch64") == 0)
    return "arm64";
  if (strcmp(architecture, "arm") == 0)
    return "arm";
  if (strcmp(architecture, "riscv64") == 0)
    return "riscv64";
  return NULL;
}

const char *oakuk_oci_unikernel_os_refusal(const char *os) {
  if (!os || strcmp(os, "qemu") == 0 || strcmp(os, "linux") == 0)
    return NULL;
  if (strcmp(os, "fc") == 0 || strcmp(os, "firecracker") == 0)
    return "a Firecracker image (platform fc)";
  if (strcmp(os, "xen") == 0)
    return "a Xen image (platform xen)";
  return "a platform other than qemu";
}

char *oakuk_oci_index_pick_unikernel(JsonObject *index, const char *arch, const char *reference,
                                     JsonObject **entry_out, GError **error) {
  JsonArray *ms = array_of(index, "manifests");
  g_autoptr(GString) seen = g_string_new(NULL);
  g_autoptr(GString) refused = g_string_new(NULL);
  JsonObject *qemu = NULL, *linux_ = NULL, *fallback = NULL;
  guint with_platform = 0;
  if (entry_out)
    *entry_out = NULL;
  for (guint k = 0; ms && k < json_array_get_length(ms); k++) {
    JsonNode *n = json_array_get_element(ms, k);
    if (!JSON_NODE_HOLDS_OBJECT(n))
      continue;
    JsonObject *e = json_node_get_object(n);
    if (!oakuk_oci_digest_is_valid(str_of(e, "digest")))
      continue;
    if (!json_object_has_member(e, "platform")) {
      fallback = fallback ? fallback : e;
      continue;
    }
    JsonObject *p = object_of(e, "platform");
    if (!p)
      continue;
    with_platform++;
    const char *os = str_of(p, "os") ? str_of(p, "os") : "";
    const char *a = str_of(p, "architecture") ? str_of(p, "architecture") : "";
    if (seen->len < 1024)
      g_string_append_printf(seen, "%s%.32s/%.32s", seen->len ? ", " : "", os, a);
    if (g_strcmp0(oakuk_oci_unikernel_goarch(a), arch) != 0)
      continue;
    const char *why = oakuk_oci_unikernel_os_refusal(os);
    if (!why) {
      if (strcmp(os, "qemu") == 0)
        qemu = qemu ? qemu : e;
      else if (strcmp(os, "linux") == 0)
        linux_ = linux_ ? linux_ : e;
    } else if (refused->len < 1024) {
      g_string_append_printf(refused, "%s%.32s/%.32s (%s)", refused->len ? ", " : "", os, a, why);
    }
  }
  JsonObject *chosen = qemu ? qemu : linux_;
  if (!chosen && fallback && with_platform == 0)
    chosen = fallback;
  if (chosen) {
    if (entry_out)
      *entry_out = chosen;
    return g_strdup(str_of(chosen, "digest"));
  }
  if (refused->len)
    set_gerror(error, OAKUK_EUNSUPPORTED,
               "image %s: no kernel for QEMU on %s: the index has only %s; oakuk runs unikernels under QEMU "
               "(platform os \"qemu\", or \"linux\" for urunc images)",
               reference, arch, refused->str);
  else
    set_gerror(error, OAKUK_EUNSUPPORTED, "image %s has no kernel for %s (the index has: %s)", reference,
               arch, seen->len ? seen->str : "nothing");
  return NULL;
}

JsonObject *oakuk_oci_parse_object(GBytes *b, const char *what, JsonParser **keep, GError **error) {
  return parse_object(b, what, error, keep);
}
