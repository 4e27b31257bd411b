/* Who is calling (docs/security.md "Root API"): access and refresh tokens (HS256 JWTs that always
 * expire), roles, cluster credentials; logins hashed on the guard's workers with per-source limits;
 * users; join tokens (a node token is made by its cluster); the CA certificate. Handlers check
 * input and translate; the guard and the store do the rest. */
#include "api.h"
#include "guard.h"
#include "loop.h"
#include "pki.h"
#include "store.h"

#include <string.h>

#define PASSWORD_MIN 12
#define PASSWORD_MAX 1024

/* A hash of no password: unknown users cost a login as much as known ones. */
static const char no_user_hash[] = "pbkdf2-sha256$100000$00000000000000000000000000000000$"
                                   "0000000000000000000000000000000000000000000000000000000000000000";

/* ---- roles ---- */

static const struct {
  guint role;
  const char *name;
} role_names[] = {
    {ROLE_ADMIN, "Admin"},
    {ROLE_APPLICATION, "Application_Provider"},
    {ROLE_INFRASTRUCTURE, "Infrastructure_Provider"},
};

const char *api_role_name(guint role) {
  for (gsize k = 0; k < G_N_ELEMENTS(role_names); k++)
    if (role_names[k].role == role)
      return role_names[k].name;
  return "none";
}

guint api_role_parse(const char *name) {
  for (gsize k = 0; k < G_N_ELEMENTS(role_names); k++)
    if (g_strcmp0(role_names[k].name, name) == 0)
      return role_names[k].role;
  return 0;
}

/* "Admin or Infrastructure_Provider" */
static char *roles_text(guint roles) {
  GString *s = g_string_new(NULL);
  for (gsize k = 0; k < G_N_ELEMENTS(role_names); k++)
    if (roles & role_names[k].role)
      g_string_append_printf(s, "%s%s", s->len ? " or " : "", role_names[k].name);
  return g_string_free(s, FALSE);
}

/* ---- JWTs of users ---- */

static char *issue_token(Root *r, const char *user, const char *role, const char *typ, gint64 ttl_s) {
  g_autoptr(JsonObject) claims = json_object_new();
  gint64 now = root_now_ms() / 1000;
  g_autofree char *jti = od_random_hex(8);
  json_object_set_string_member(claims, "sub", user);
  json_object_set_string_member(claims, "typ", typ);
  json_object_set_string_member(claims, "role", role);
  /* What Oakestra's dashboard reads (docs/api.md "Tokens"): roles as a list, the organization (one
   * here: "root", whose SLA customerID is the user's own id) and the user's name. */
  JsonArray *roles = json_array_new();
  json_array_add_string_element(roles, role);
  json_object_set_array_member(claims, "roles", roles);
  json_object_set_string_member(claims, "organization", "root");
  json_object_set_string_member(claims, "user", user);
  json_object_set_string_member(claims, "type", typ);
  json_object_set_int_member(claims, "iat", now);
  json_object_set_int_member(claims, "nbf", now);
  json_object_set_int_member(claims, "exp", now + ttl_s);
  json_object_set_string_member(claims, "jti", jti);
  return od_jwt_sign(r->secret, sizeof r->secret, claims);
}

/* The user of a valid JWT of kind typ whose user still exists, or NULL with why. */
static StoreUser *verify_token(Root *r, const char *token, const char *typ, gint64 *exp, char **why) {
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonObject) claims =
      od_jwt_verify(r->secret, sizeof r->secret, token, root_now_ms() / 1000, &error);
  if (claims == NULL) {
    *why = g_strdup(error->message);
    return NULL;
  }
  if (g_strcmp0(api_str(claims, "typ"), typ) != 0 || api_str(claims, "sub") == NULL) {
    *why = g_strdup_printf("token is not a%s %s token", typ[0] == 'a' ? "n" : "", typ);
    return NULL;
  }
  if (exp != NULL)
    *exp = json_object_get_int_member_with_default(claims, "exp", 0);
  /* The role is the stored one: a user removed or demoted loses access at once. */
  StoreUser *u = store_user_get(r->store, api_str(claims, "sub"));
  if (u == NULL)
    *why = g_strdup("token user no longer exists");
  return u;
}

/* ---- clusters ---- */

char *api_cluster_of_bearer(Root *r, const char *bearer) {
  g_autofree char *id = NULL, *secret = NULL;
  if (bearer == NULL)
    return NULL;
  if (pki_credential_parse(bearer, &id, &secret)) {
    g_autoptr(StoreCluster) cl = store_cluster_get(r->store, id);
    g_autofree char *hash = od_sha256_hex(secret);
    return cl != NULL && *cl->cred_hash && od_str_equal_ct(hash, cl->cred_hash) ? g_steal_pointer(&id) : NULL;
  }
  /* A cluster registered before credentials existed still sends the JWT it got then. */
  g_autoptr(GPtrArray) all = store_clusters_with_jwt(r->store);
  for (guint k = 0; k < all->len; k++) {
    StoreCluster *cl = all->pdata[k];
    if (*cl->token && od_str_equal_ct(cl->token, bearer))
      return g_strdup(cl->id);
  }
  return NULL;
}

static gboolean authenticate_user(Req *q, const Route *route, const char *token) {
  g_autofree char *why = NULL;
  g_autoptr(StoreUser) u = verify_token(q->r, token, "access", &q->token_exp, &why);
  if (u == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path, "%s", why);
    return FALSE;
  }
  q->user = g_strdup(u->name);
  q->role = api_role_parse(u->role);
  if ((q->role & route->roles) == 0) {
    g_autofree char *needed = roles_text(route->roles);
    od_http_reply_error(q->msg, SOUP_STATUS_FORBIDDEN, "forbidden", q->path,
                        "%s %s needs the role %s; user %s is %s", route->method, q->path, needed, u->name,
                        u->role);
    return FALSE;
  }
  return TRUE;
}

gboolean api_authenticate(Req *q, const Route *route) {
  if (route->auth == AUTH_NONE || route->auth == AUTH_SELF)
    return TRUE;
  g_autofree char *token = od_http_bearer(q->msg);
  if (token == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path,
                        "missing 'Authorization: Bearer <token>'");
    return FALSE;
  }
  if (route->auth == AUTH_USER)
    return authenticate_user(q, route, token);
  /* Cluster endpoints: the credential of this very cluster. */
  g_autofree char *id = api_cluster_of_bearer(q->r, token);
  if (id == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path,
                        "not the credential of a registered cluster (revoked when the cluster was removed)");
    return FALSE;
  }
  if (g_strcmp0(id, q->cap[0]) != 0) {
    od_http_reply_error(q->msg, SOUP_STATUS_FORBIDDEN, "forbidden", q->path,
                        "credential belongs to cluster %s, not %s", id, q->cap[0]);
    return FALSE;
  }
  return TRUE;
}

/* ---- login and refresh ---- */

static void reply_tokens(Req *q, const char *user, const char *role) {
  g_autoptr(JsonObject) o = json_object_new();
  g_autofree char *token = issue_token(q->r, user, role, "access", q->r->cfg.token_ttl_s);
  g_autofree char *refresh = issue_token(q->r, user, role, "refresh", q->r->cfg.refresh_ttl_s);
  json_object_set_string_member(o, "message", "logged in");
  json_object_set_string_member(o, "token", token);
  json_object_set_string_member(o, "refresh_token", refresh);
  json_object_set_string_member(o, "role", role);
  api_reply_object(q, SOUP_STATUS_OK, o);
}

static void reply_busy(SoupServerMessage *msg, const char *path) {
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Retry-After", "1");
  od_http_reply_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "busy", path,
                      "%d password checks are under way or waiting: try again in 1 s",
                      GUARD_THREADS + GUARD_QUEUE);
}

static void reply_blocked(SoupServerMessage *msg, const char *path, const char *source, gint64 ms) {
  g_autofree char *secs = g_strdup_printf("%" G_GINT64_FORMAT, (ms + 999) / 1000);
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Retry-After", secs);
  od_http_reply_error(msg, 429, "too_many_requests", path,
                      "too many failed logins from %s: try again in %s s", source, secs);
  soup_server_message_set_status(msg, 429, "Too Many Requests"); /* libsoup 3.2 knows no phrase for it */
}

typedef struct {
  Root *r;
  SoupServerMessage *msg;
  char *path, *source, *user, *password, *stored;
  gint gone; /* atomic: the client left, nothing to check */
  gulong disconnected;
  gboolean ok;
} Login;

static void login_gone(SoupServerMessage *msg, gpointer data) {
  Login *l = data;
  g_atomic_int_set(&l->gone, 1);
}

static void wipe(char *s) {
  if (s != NULL)
    memset(s, 0, strlen(s));
  g_free(s);
}

static void login_free(Login *l) {
  g_free(l->path);
  g_free(l->source);
  g_free(l->user);
  wipe(l->password);
  g_free(l->stored);
  g_free(l);
}

static void login_work(gpointer data) {
  Login *l = data;
  if (!g_atomic_int_get(&l->gone))
    l->ok = od_password_verify(l->stored, l->password);
}

static void login_done(gpointer data) {
  Login *l = data;
  g_signal_handler_disconnect(l->msg, l->disconnected);
  gint64 now = root_now_ms();
  g_autoptr(StoreUser) u = l->ok ? store_user_get(l->r->store, l->user) : NULL;
  if (g_atomic_int_get(&l->gone)) {
    /* not checked: neither a success nor a failure */
  } else if (u != NULL) {
    guard_success(l->r->guard, l->source);
    Req q = {.r = l->r, .msg = l->msg, .path = l->path};
    reply_tokens(&q, u->name, u->role);
  } else {
    gint64 block = guard_failure(l->r->guard, l->source, now);
    g_autofree char *blocked = block ? g_strdup_printf("%" G_GINT64_FORMAT, block / 1000) : NULL;
    od_log(G_LOG_LEVEL_MESSAGE, "login", "user", l->user, "source", l->source, "result", "denied", "msg",
           blocked ? "wrong username or password: the source is refused for a while"
                   : "wrong username or password",
           blocked ? "blocked_s" : NULL, blocked, NULL);
    od_http_reply_error(l->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", l->path,
                        "invalid username or password");
  }
  api_release(l->msg);
  login_free(l);
}

static void h_login(Req *q) {
  const char *source = soup_server_message_get_remote_host(q->msg);
  source = source ? source : "unknown";
  gint64 wait_ms = guard_blocked_ms(q->r->guard, source, root_now_ms());
  if (wait_ms > 0) {
    reply_blocked(q->msg, q->path, source, wait_ms);
    return;
  }
  g_autoptr(JsonObject) body = api_body_object(q, FALSE);
  const char *user, *password;
  if (body == NULL || !api_require_string(q, body, "username", &user) ||
      !api_require_string(q, body, "password", &password))
    return;
  Login *l = g_new0(Login, 1);
  l->r = q->r;
  l->msg = q->msg;
  l->path = g_strdup(q->path);
  l->source = g_strdup(source);
  l->user = g_strdup(user);
  l->password = g_strdup(password);
  l->stored = store_user_password(q->r->store, user);
  if (l->stored == NULL)
    l->stored = g_strdup(no_user_hash);
  if (!guard_run(q->r->guard, login_work, login_done, l)) {
    login_free(l);
    reply_busy(q->msg, q->path);
    return;
  }
  api_hold(q->msg);
  l->disconnected = g_signal_connect(q->msg, "disconnected", G_CALLBACK(login_gone), l);
}

static void h_refresh(Req *q) {
  g_autofree char *token = NULL;
  if (!api_body_empty(q)) {
    g_autoptr(JsonObject) body = api_body_object(q, FALSE);
    if (body == NULL)
      return;
    token = g_strdup(api_str(body, "refresh_token"));
  }
  if (token == NULL)
    token = od_http_bearer(q->msg);
  if (token == NULL) {
    od_http_reply_error(
        q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path,
        "missing refresh token ('Authorization: Bearer <refresh_token>' or {\"refresh_token\": ...})");
    return;
  }
  g_autofree char *why = NULL;
  g_autoptr(StoreUser) u = verify_token(q->r, token, "refresh", NULL, &why);
  if (u == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path, "%s", why);
    return;
  }
  reply_tokens(q, u->name, u->role);
}

/* ---- users ---- */

static gboolean valid_user_name(const char *s) {
  gsize len = strlen(s);
  if (len == 0 || len > 64)
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && *p != '.')
      return FALSE;
  return TRUE;
}

static JsonObject *user_object(const char *name, const char *role) {
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "username", name);
  json_object_set_string_member(o, "role", role);
  return o;
}

char *api_user_oid(const char *name) {
  g_autofree char *salted = g_strconcat("oakuk-user:", name, NULL);
  g_autofree char *hex = od_sha256_hex(salted);
  return g_strndup(hex, 24);
}

/* A user as Oakestra's documents have it (docs/api.md "Oakestra-compatible endpoints"): its id,
 * name and roles; email and creation time are not kept (""), the password hash never shown. */
static JsonObject *user_doc(const char *name, const char *role) {
  JsonObject *o = json_object_new(), *id = json_object_new();
  g_autofree char *oid = api_user_oid(name);
  json_object_set_string_member(id, "$oid", oid);
  json_object_set_object_member(o, "_id", id);
  json_object_set_string_member(o, "name", name);
  json_object_set_string_member(o, "email", "");
  json_object_set_string_member(o, "created_at", "");
  JsonArray *roles = json_array_new();
  json_array_add_string_element(roles, role);
  json_object_set_array_member(o, "roles", roles);
  return o;
}

/* Oakestra answers a user's own documents only to that user: 403 otherwise. */
static gboolean is_self(Req *q) {
  if (g_strcmp0(q->cap[0], q->user) == 0)
    return TRUE;
  od_http_reply_error(q->msg, SOUP_STATUS_FORBIDDEN, "forbidden", "", "only user %s may read this",
                      q->cap[0]);
  return FALSE;
}

static void h_user_doc(Req *q) {
  if (!is_self(q))
    return;
  g_autoptr(StoreUser) u = store_user_get(q->r->store, q->user);
  if (u == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", "", "no user %s", q->cap[0]);
    return;
  }
  g_autoptr(JsonObject) o = user_doc(u->name, u->role);
  api_reply_object(q, SOUP_STATUS_OK, o);
}

static void h_permission(Req *q) {
  if (!is_self(q))
    return;
  g_autoptr(JsonObject) o = json_object_new();
  JsonArray *roles = json_array_new();
  json_array_add_string_element(roles, api_role_name(q->role));
  json_object_set_array_member(o, "roles", roles);
  api_reply_object(q, SOUP_STATUS_OK, o);
}

/* Every user's document (none unless any). */
static void reply_user_docs(Req *q, gboolean any) {
  g_autoptr(JsonArray) out = json_array_new();
  g_autoptr(GPtrArray) all = store_users_all(q->r->store);
  for (guint k = 0; any && k < all->len; k++) {
    StoreUser *u = all->pdata[k];
    json_array_add_object_element(out, user_doc(u->name, u->role));
  }
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), out);
  od_http_reply_json(q->msg, SOUP_STATUS_OK, node);
}

/* GET /api/users/ and /api/users/<organization>: every user of the one organization, "root". */
static void h_users_compat(Req *q) {
  reply_user_docs(q, q->cap[0] == NULL || strcmp(q->cap[0], "root") == 0);
}

/* GET /api/organization/: the one organization there is, every user a member with its role. */
static void h_organizations(Req *q) {
  g_autoptr(JsonArray) out = json_array_new();
  JsonObject *org = json_object_new(), *id = json_object_new();
  json_object_set_string_member(id, "$oid", "root");
  json_object_set_object_member(org, "_id", id);
  json_object_set_string_member(org, "name", "root");
  JsonArray *members = json_array_new();
  g_autoptr(GPtrArray) all = store_users_all(q->r->store);
  for (guint k = 0; k < all->len; k++) {
    StoreUser *u = all->pdata[k];
    JsonObject *m = json_object_new();
    g_autofree char *oid = api_user_oid(u->name);
    json_object_set_string_member(m, "user_id", oid);
    JsonArray *roles = json_array_new();
    json_array_add_string_element(roles, u->role);
    json_object_set_array_member(m, "roles", roles);
    json_array_add_object_element(members, m);
  }
  json_object_set_array_member(org, "member", members);
  json_array_add_object_element(out, org);
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), out);
  od_http_reply_json_string(q->msg, SOUP_STATUS_OK, node); /* a JSON string holding it, as Oakestra */
}

static void h_users(Req *q) {
  g_autoptr(JsonArray) out = json_array_new();
  g_autoptr(GPtrArray) all = store_users_all(q->r->store);
  for (guint k = 0; k < all->len; k++) {
    StoreUser *u = all->pdata[k];
    json_array_add_object_element(out, user_object(u->name, u->role));
  }
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), out);
  od_http_reply_json(q->msg, SOUP_STATUS_OK, node);
}

typedef struct {
  Root *r;
  SoupServerMessage *msg;
  char *path, *by, *name, *role, *password, *hash;
  gboolean compat; /* POST /api/auth/register: Oakestra's answer and field names */
} NewUser;

static void new_user_work(gpointer data) {
  NewUser *n = data;
  n->hash = od_password_hash(n->password);
}

static void new_user_free(NewUser *n) {
  g_free(n->path);
  g_free(n->by);
  g_free(n->name);
  g_free(n->role);
  wipe(n->password);
  g_free(n->hash);
  g_free(n);
}

static void new_user_done(gpointer data) {
  NewUser *n = data;
  Store *s = n->r->store;
  g_autoptr(GError) error = NULL;
  if (store_user_exists(s, n->name)) { /* created while this one was hashed */
    od_http_reply_error(n->msg, SOUP_STATUS_CONFLICT, "conflict", "username", "username: user %s exists",
                        n->name);
  } else if (!store_begin(s, &error) || !store_user_insert(s, n->name, n->hash, n->role, &error) ||
             !store_commit(s, &error)) {
    store_rollback(s);
    Req q = {.r = n->r, .msg = n->msg, .path = n->path};
    api_reply_internal(&q, error);
  } else {
    od_log(G_LOG_LEVEL_MESSAGE, "user", "user", n->name, "role", n->role, "by", n->by, "msg", "user created",
           NULL);
    g_autoptr(JsonObject) o = n->compat ? user_doc(n->name, n->role) : user_object(n->name, n->role);
    g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
    od_http_reply_json(n->msg, n->compat ? SOUP_STATUS_OK : SOUP_STATUS_CREATED, node);
  }
  if (n->compat)
    api_compat_error_shape(n->msg);
  api_release(n->msg);
  new_user_free(n);
}

/* Checks and creates a user (its password hashed on the login workers). The fields are named
 * name_key and role_key in errors (the native API's or Oakestra's). */
static void create_user(Req *q, const char *name, const char *password, const char *role,
                        const char *name_key, const char *role_key) {
  if (!valid_user_name(name)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", name_key,
                        "%s: '%s' must be 1-64 characters of letters, digits, '-', '_' or '.'", name_key,
                        name);
    return;
  }
  glong len = g_utf8_strlen(password, -1);
  if (len < PASSWORD_MIN || strlen(password) > PASSWORD_MAX) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "password",
                        "password: %d to %d characters are required, it has %ld", PASSWORD_MIN, PASSWORD_MAX,
                        len);
    return;
  }
  if (api_role_parse(role) == 0) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", role_key,
                        "%s: '%s' is none of Admin, Application_Provider, Infrastructure_Provider", role_key,
                        role);
    return;
  }
  if (store_user_exists(q->r->store, name)) {
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "conflict", name_key, "%s: user %s exists", name_key,
                        name);
    return;
  }
  NewUser *n = g_new0(NewUser, 1);
  n->r = q->r;
  n->msg = q->msg;
  n->path = g_strdup(q->path);
  n->by = g_strdup(q->user);
  n->name = g_strdup(name);
  n->role = g_strdup(role);
  n->password = g_strdup(password);
  n->compat = q->compat;
  if (!guard_run(q->r->guard, new_user_work, new_user_done, n)) {
    new_user_free(n);
    reply_busy(q->msg, q->path);
    return;
  }
  api_hold(q->msg);
}

static void h_user_create(Req *q) {
  g_autoptr(JsonObject) body = api_body_object(q, FALSE);
  const char *name, *password, *role;
  if (body == NULL || !api_require_string(q, body, "username", &name) ||
      !api_require_string(q, body, "password", &password) || !api_require_string(q, body, "role", &role))
    return;
  create_user(q, name, password, role, "username", "role");
}

/* The one role of Oakestra's roles[] (users here have one); NULL with the reply sent otherwise. */
static const char *one_role(Req *q, JsonObject *body) {
  JsonNode *n = json_object_get_member(body, "roles");
  JsonArray *a = n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
  JsonNode *e = a && json_array_get_length(a) == 1 ? json_array_get_element(a, 0) : NULL;
  if (e == NULL || !JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "roles",
                        "roles: a list of exactly one role is required (a user has one role here: Admin, "
                        "Application_Provider or Infrastructure_Provider)");
    return NULL;
  }
  return json_node_get_string(e);
}

/* Oakestra's POST /api/auth/register {name, password, roles, email?, created_at?} (Admin): email and
 * created_at are not kept (docs/api.md). */
static void h_register(Req *q) {
  g_autoptr(JsonObject) body = api_body_object(q, FALSE);
  const char *name, *password, *role;
  if (body == NULL || !api_require_string(q, body, "name", &name) ||
      !api_require_string(q, body, "password", &password) || (role = one_role(q, body)) == NULL)
    return;
  create_user(q, name, password, role, "name", "roles");
}

/* Removes user name (never the last Admin); FALSE with the reply sent when it did not. */
static gboolean delete_user(Req *q, const char *name) {
  g_autoptr(StoreUser) u = store_user_get(q->r->store, name);
  if (u == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", q->path, "user %s not found", name);
    return FALSE;
  }
  if (strcmp(u->role, "Admin") == 0 && store_user_count_role(q->r->store, "Admin") <= 1) {
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "conflict", q->path,
                        "user %s is the last Admin: create another Admin first", name);
    return FALSE;
  }
  g_autoptr(GError) error = NULL;
  if (!store_begin(q->r->store, &error) || !store_user_delete(q->r->store, name, &error) ||
      !store_commit(q->r->store, &error)) {
    store_rollback(q->r->store);
    api_reply_internal(q, error);
    return FALSE;
  }
  od_log(G_LOG_LEVEL_MESSAGE, "user", "user", name, "by", q->user, "msg", "user removed", NULL);
  return TRUE;
}

static void h_user_delete(Req *q) {
  if (!delete_user(q, q->cap[0]))
    return;
  g_autofree char *m = g_strdup_printf("user %s removed; its tokens no longer work", q->cap[0]);
  api_reply_message(q, SOUP_STATUS_OK, m);
}

/* Oakestra's DELETE /api/user/<name> (Admin): the remaining users. */
static void h_user_delete_compat(Req *q) {
  if (delete_user(q, q->cap[0]))
    reply_user_docs(q, TRUE);
}

/* A password set on the login workers: Oakestra's PUT /api/user/<name> (Admin, no old password)
 * and its change by the user, POST /api/user/<name> {oldPassword, newPassword}. */
typedef struct {
  Root *r;
  SoupServerMessage *msg;
  char *path, *name, *old, *new_, *stored, *hash;
  gboolean check_old, old_ok;
} SetPassword;

static void set_password_free(SetPassword *p) {
  g_free(p->path);
  g_free(p->name);
  wipe(p->old);
  wipe(p->new_);
  g_free(p->stored);
  g_free(p->hash);
  g_free(p);
}

static void set_password_work(gpointer data) {
  SetPassword *p = data;
  p->old_ok = !p->check_old || od_password_verify(p->stored, p->old);
  if (p->old_ok)
    p->hash = od_password_hash(p->new_);
}

static void set_password_done(gpointer data) {
  SetPassword *p = data;
  Store *s = p->r->store;
  g_autoptr(GError) error = NULL;
  g_autofree char *now = store_user_password(s, p->name);
  if (!p->old_ok) {
    od_http_reply_error(p->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "oldPassword",
                        "Old password is not valid!");
  } else if (now == NULL || g_strcmp0(now, p->stored) != 0) { /* removed or changed meanwhile */
    od_http_reply_error(p->msg, SOUP_STATUS_CONFLICT, "conflict", "", "user %s changed meanwhile: try again",
                        p->name);
  } else if (!store_begin(s, &error) || !store_user_set_password(s, p->name, p->hash, &error) ||
             !store_commit(s, &error)) {
    store_rollback(s);
    Req q = {.r = p->r, .msg = p->msg, .path = p->path};
    api_reply_internal(&q, error);
  } else {
    od_log(G_LOG_LEVEL_MESSAGE, "user", "user", p->name, "msg", "password changed", NULL);
    g_autoptr(JsonObject) o = json_object_new();
    api_reply_object(&(Req){.r = p->r, .msg = p->msg}, SOUP_STATUS_OK, o);
  }
  api_compat_error_shape(p->msg);
  api_release(p->msg);
  set_password_free(p);
}

static void set_password(Req *q, const char *name, const char *old, const char *new_, const char *new_key) {
  glong len = g_utf8_strlen(new_, -1);
  if (len < PASSWORD_MIN || strlen(new_) > PASSWORD_MAX) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", new_key,
                        "%s: %d to %d characters are required, it has %ld", new_key, PASSWORD_MIN,
                        PASSWORD_MAX, len);
    return;
  }
  if (old != NULL && strcmp(old, new_) == 0) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", new_key,
                        "Old password can't be the new password!");
    return;
  }
  SetPassword *p = g_new0(SetPassword, 1);
  p->r = q->r;
  p->msg = q->msg;
  p->path = g_strdup(q->path);
  p->name = g_strdup(name);
  p->old = g_strdup(old);
  p->new_ = g_strdup(new_);
  p->check_old = old != NULL;
  p->stored = store_user_password(q->r->store, name);
  if (p->stored == NULL) {
    set_password_free(p);
    od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", "", "User does not exists");
    return;
  }
  if (!guard_run(q->r->guard, set_password_work, set_password_done, p)) {
    set_password_free(p);
    reply_busy(q->msg, q->path);
    return;
  }
  api_hold(q->msg);
}

/* Oakestra's POST /api/user/<name>: the user changes its own password. */
static void h_password_change(Req *q) {
  if (!is_self(q))
    return;
  g_autoptr(JsonObject) body = api_body_object(q, FALSE);
  const char *old, *new_;
  if (body == NULL || !api_require_string(q, body, "oldPassword", &old) ||
      !api_require_string(q, body, "newPassword", &new_))
    return;
  set_password(q, q->user, old, new_, "newPassword");
}

/* Oakestra's PUT /api/user/<name> (Admin): roles (one) and a non-empty password change; name must
 * be the path's; email, created_at and _id are not kept. Answers "ok", as Oakestra. */
static void h_user_put(Req *q) {
  g_autoptr(JsonObject) body = api_body_object(q, FALSE);
  if (body == NULL)
    return;
  g_autoptr(StoreUser) u = store_user_get(q->r->store, q->cap[0]);
  if (u == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", "", "user %s not found", q->cap[0]);
    return;
  }
  const char *name = api_str(body, "name");
  if (json_object_get_member(body, "name") != NULL && g_strcmp0(name, u->name) != 0) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "name",
                        "name: renaming a user is not supported (create another one)");
    return;
  }
  const char *role = json_object_get_member(body, "roles") ? one_role(q, body) : u->role;
  if (role == NULL)
    return;
  if (api_role_parse(role) == 0) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "roles",
                        "roles: '%s' is none of Admin, Application_Provider, Infrastructure_Provider", role);
    return;
  }
  if (strcmp(u->role, "Admin") == 0 && strcmp(role, "Admin") != 0 &&
      store_user_count_role(q->r->store, "Admin") <= 1) {
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "conflict", "roles",
                        "user %s is the last Admin: create another Admin first", u->name);
    return;
  }
  const char *password = api_str(body, "password");
  if (password != NULL && *password != '\0' && g_utf8_strlen(password, -1) < PASSWORD_MIN) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "password",
                        "password: %d to %d characters are required", PASSWORD_MIN, PASSWORD_MAX);
    return;
  }
  g_autoptr(GError) error = NULL;
  if (strcmp(role, u->role) != 0 &&
      (!store_begin(q->r->store, &error) || !store_user_set_role(q->r->store, u->name, role, &error) ||
       !store_commit(q->r->store, &error))) {
    store_rollback(q->r->store);
    api_reply_internal(q, error);
    return;
  }
  if (strcmp(role, u->role) != 0)
    od_log(G_LOG_LEVEL_MESSAGE, "user", "user", u->name, "role", role, "by", q->user, "msg", "role changed",
           NULL);
  if (password != NULL && *password != '\0') {
    set_password(q, u->name, NULL, password, "password"); /* answers {} when done */
    return;
  }
  g_autoptr(JsonNode) ok = json_node_init_string(json_node_alloc(), "ok");
  od_http_reply_json(q->msg, SOUP_STATUS_OK, ok);
}

/* ---- join tokens ---- */

static void cluster_token(Req *q, gint64 ttl, gint64 uses) {
  g_autofree char *hash = NULL;
  g_autofree char *token = pki_join_token_new(q->r, &hash);
  gint64 expires = root_now_ms() / 1000 + ttl;
  g_autoptr(GError) error = NULL;
  if (!store_begin(q->r->store, &error) || !store_join_token_add(q->r->store, hash, expires, uses, &error) ||
      !store_commit(q->r->store, &error)) {
    store_rollback(q->r->store);
    api_reply_internal(q, error);
    return;
  }
  g_autofree char *uses_text = g_strdup_printf("%" G_GINT64_FORMAT, uses);
  od_log(G_LOG_LEVEL_MESSAGE, "token", "kind", "cluster", "uses", uses_text, "by", q->user, "msg",
         "cluster join token created", NULL);
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "token", token);
  json_object_set_string_member(o, "kind", "cluster");
  json_object_set_int_member(o, "expires_at", expires * 1000);
  json_object_set_int_member(o, "uses", uses);
  api_reply_object(q, SOUP_STATUS_CREATED, o);
}

static void node_token_done(gpointer data, const char *cid, guint status, JsonNode *body, const char *why) {
  SoupServerMessage *msg = data;
  JsonObject *o = body && JSON_NODE_HOLDS_OBJECT(body) ? json_node_get_object(body) : NULL;
  if (!SOUP_STATUS_IS_SUCCESSFUL(status)) {
    api_pass_on(msg, cid, status, body, why);
    return;
  }
  if (api_str(o, "token") == NULL) {
    od_http_reply_error(msg, SOUP_STATUS_BAD_GATEWAY, "cluster_error", "token",
                        "cluster %s answered HTTP %u without a token", cid, status);
  } else {
    json_object_set_string_member(o, "kind", "node");
    od_http_reply_json(msg, status, body);
  }
  api_release(msg);
}

static void node_token(Req *q, const char *cluster, gint64 ttl, gint64 uses) {
  g_autofree char *cid = store_cluster_id_by_name(q->r->store, cluster);
  g_autoptr(StoreCluster) by_id = cid == NULL ? store_cluster_get(q->r->store, cluster) : NULL;
  if (cid == NULL && by_id != NULL)
    cid = g_strdup(by_id->id);
  if (cid == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", "cluster", "cluster: %s not found",
                        cluster);
    return;
  }
  if (!loop_cluster_active(q->r->loop, cid)) {
    od_http_reply_error(q->msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "cluster_unavailable", "cluster",
                        "cluster: %s sends no aggregates: try again when it is back", cluster);
    return;
  }
  g_autoptr(JsonObject) ask = json_object_new();
  json_object_set_int_member(ask, "ttl_s", ttl);
  json_object_set_int_member(ask, "uses", uses);
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), ask);
  g_autofree char *uses_text = g_strdup_printf("%" G_GINT64_FORMAT, uses);
  od_log(G_LOG_LEVEL_MESSAGE, "token", "kind", "node", "cluster", cid, "uses", uses_text, "by", q->user,
         "msg", "node join token asked from the cluster", NULL);
  api_hold(q->msg);
  api_cluster_call(q->r, cid, "POST", "/api/v1/tokens", node, 10, node_token_done, q->msg);
}

/* kind: the body's, or fixed (the old name of the cluster kind). */
static void make_token(Req *q, JsonObject *body, const char *fixed_kind) {
  const char *kind = fixed_kind;
  if (kind == NULL && !api_require_string(q, body, "kind", &kind))
    return;
  if (fixed_kind != NULL && json_object_has_member(body, "kind") &&
      g_strcmp0(api_str(body, "kind"), fixed_kind) != 0) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "kind",
                        "kind: this path makes cluster tokens only (POST /api/v1/tokens makes node tokens)");
    return;
  }
  if (strcmp(kind, "cluster") != 0 && strcmp(kind, "node") != 0) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "kind",
                        "kind: '%s' is neither cluster nor node", kind);
    return;
  }
  gint64 ttl, uses;
  if (!api_optional_int(q, body, "ttl_s", 60, 365 * 86400, q->r->cfg.join_token_ttl_s, &ttl) ||
      !api_optional_int(q, body, "uses", 1, 1000, 1, &uses))
    return;
  JsonNode *cn = json_object_get_member(body, "cluster");
  if (strcmp(kind, "cluster") == 0) {
    if (cn != NULL) {
      od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "cluster",
                          "cluster: only a node token names a cluster");
      return;
    }
    cluster_token(q, ttl, uses);
    return;
  }
  const char *cluster = api_str(body, "cluster");
  if (cluster == NULL || *cluster == '\0') {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "cluster",
                        "cluster: the name of the cluster the node joins is required");
    return;
  }
  node_token(q, cluster, ttl, uses);
}

static void h_tokens(Req *q) {
  g_autoptr(JsonObject) body = api_body_object(q, FALSE);
  if (body != NULL)
    make_token(q, body, NULL);
}

static void h_cluster_tokens(Req *q) {
  g_autoptr(JsonObject) body = api_body_object(q, TRUE);
  if (body != NULL)
    make_token(q, body, "cluster");
}

/* ---- the CA ---- */

static void h_pki_ca(Req *q) {
  soup_server_message_set_status(q->msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response(q->msg, "application/x-pem-file", SOUP_MEMORY_COPY, q->r->ca_pem,
                                   strlen(q->r->ca_pem));
}

const Route root_auth_routes[] = {
    {"POST", "api/auth/login", AUTH_NONE, h_login, TRUE, 0},
    {"POST", "api/auth/refresh", AUTH_SELF, h_refresh, TRUE, 0},
    {"GET", "api/v1/pki/ca", AUTH_NONE, h_pki_ca, FALSE, 0},
    {"GET", "api/v1/users", AUTH_USER, h_users, FALSE, ROLE_ADMIN},
    {"POST", "api/v1/users", AUTH_USER, h_user_create, FALSE, ROLE_ADMIN},
    {"DELETE", "api/v1/users/*", AUTH_USER, h_user_delete, FALSE, ROLE_ADMIN},
    {"POST", "api/v1/tokens", AUTH_USER, h_tokens, FALSE, ROLES_INFRA},
    {"POST", "api/v1/clusters/tokens", AUTH_USER, h_cluster_tokens, FALSE, ROLES_INFRA},
    /* Oakestra's user, permission and organization reads (its dashboard's login and navbar) */
    {"GET", "api/user/*", AUTH_USER, h_user_doc, TRUE, ROLES_ALL},
    {"GET", "api/permission/*", AUTH_USER, h_permission, TRUE, ROLES_ALL},
    {"GET", "api/users", AUTH_USER, h_users_compat, TRUE, ROLE_ADMIN},
    {"GET", "api/users/*", AUTH_USER, h_users_compat, TRUE, ROLE_ADMIN},
    {"GET", "api/organization", AUTH_USER, h_organizations, TRUE, ROLE_ADMIN},
    {"POST", "api/auth/register", AUTH_USER, h_register, TRUE, ROLE_ADMIN},
    {"PUT", "api/user/*", AUTH_USER, h_user_put, TRUE, ROLE_ADMIN},
    {"DELETE", "api/user/*", AUTH_USER, h_user_delete_compat, TRUE, ROLE_ADMIN},
    {"POST", "api/user/*", AUTH_USER, h_password_change, TRUE, ROLES_ALL},
};
const gsize root_auth_route_count = G_N_ELEMENTS(root_auth_routes);
