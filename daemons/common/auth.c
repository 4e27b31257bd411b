/* Randomness, secrets, password hashing (PBKDF2-HMAC-SHA256) and HS256 JWTs. */
#include "daemon-common.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define PBKDF2_ITERATIONS 100000
#define PBKDF2_SALT_LEN 16

void od_random_bytes(guint8 *buf, gsize len) {
  gsize done = 0;
  while (done < len) {
    ssize_t r = getrandom(buf + done, len - done, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      g_error("getrandom: %s", g_strerror(errno));
    done += (gsize)r;
  }
}

static char *hex_encode(const guint8 *buf, gsize len) {
  static const char digits[] = "0123456789abcdef";
  char *out = g_malloc(len * 2 + 1);
  for (gsize i = 0; i < len; i++) {
    out[2 * i] = digits[buf[i] >> 4];
    out[2 * i + 1] = digits[buf[i] & 15];
  }
  out[len * 2] = '\0';
  return out;
}

static gboolean hex_decode(const char *hex, guint8 *out, gsize len) {
  if (strlen(hex) != len * 2)
    return FALSE;
  for (gsize i = 0; i < len; i++) {
    int hi = g_ascii_xdigit_value(hex[2 * i]), lo = g_ascii_xdigit_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return FALSE;
    out[i] = (guint8)(hi << 4 | lo);
  }
  return TRUE;
}

char *od_random_hex(gsize len) {
  g_autofree guint8 *buf = g_malloc(len);
  od_random_bytes(buf, len);
  return hex_encode(buf, len);
}

char *od_object_id(void) {
  guint8 buf[12];
  guint32 now = (guint32)(g_get_real_time() / G_USEC_PER_SEC);
  buf[0] = now >> 24;
  buf[1] = now >> 16;
  buf[2] = now >> 8;
  buf[3] = now;
  od_random_bytes(buf + 4, 8);
  return hex_encode(buf, sizeof buf);
}

gboolean od_is_object_id(const char *s) {
  if (s == NULL || strlen(s) != 24)
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isxdigit(*p) || g_ascii_isupper(*p))
      return FALSE;
  return TRUE;
}

gboolean od_secret_load_or_create(const char *path, guint8 *out, gsize len, gboolean *created,
                                  GError **error) {
  *created = FALSE;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    od_random_bytes(out, len);
    g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, out, len) != (ssize_t)len || fsync(fd) != 0 || close(fd) != 0 ||
        rename(tmp, path) != 0) {
      int e = errno;
      g_set_error(error, OD_ERROR, OD_ERROR_IO, "secret %s: %s", path, g_strerror(e));
      return FALSE;
    }
    *created = TRUE;
    return TRUE;
  }
  if (fd < 0) {
    int e = errno;
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "secret %s: %s", path, g_strerror(e));
    return FALSE;
  }
  struct stat st;
  ssize_t r = -1;
  if (fstat(fd, &st) == 0 && st.st_size == (off_t)len)
    r = read(fd, out, len);
  close(fd);
  if (r != (ssize_t)len) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "secret %s: expected exactly %zu bytes", path, (size_t)len);
    return FALSE;
  }
  if ((st.st_mode & 077) != 0)
    g_warning("secret %s is readable by group/others (mode %o)", path, (unsigned)(st.st_mode & 0777));
  return TRUE;
}

static void hmac_sha256(const guint8 *key, gsize key_len, const guint8 *data, gsize len, guint8 out[32]) {
  g_autoptr(GHmac) h = g_hmac_new(G_CHECKSUM_SHA256, key, key_len);
  g_hmac_update(h, data, len);
  gsize out_len = 32;
  g_hmac_get_digest(h, out, &out_len);
}

/* PBKDF2 with a single output block (dkLen = 32 = hLen). The keyed HMAC state is computed once
 * and copied per iteration. */
static void pbkdf2_sha256(const char *password, const guint8 *salt, gsize salt_len, guint iterations,
                          guint8 out[32]) {
  g_autoptr(GHmac) keyed = g_hmac_new(G_CHECKSUM_SHA256, (const guint8 *)password, strlen(password));
  g_autofree guint8 *block = g_malloc(salt_len + 4);
  memcpy(block, salt, salt_len);
  block[salt_len] = 0;
  block[salt_len + 1] = 0;
  block[salt_len + 2] = 0;
  block[salt_len + 3] = 1;
  guint8 u[32];
  gsize len = 32;
  g_autoptr(GHmac) h = g_hmac_copy(keyed);
  g_hmac_update(h, block, salt_len + 4);
  g_hmac_get_digest(h, u, &len);
  memcpy(out, u, 32);
  for (guint i = 1; i < iterations; i++) {
    g_autoptr(GHmac) hi = g_hmac_copy(keyed);
    g_hmac_update(hi, u, 32);
    len = 32;
    g_hmac_get_digest(hi, u, &len);
    for (int j = 0; j < 32; j++)
      out[j] ^= u[j];
  }
}

char *od_password_hash(const char *password) {
  guint8 salt[PBKDF2_SALT_LEN], dk[32];
  od_random_bytes(salt, sizeof salt);
  pbkdf2_sha256(password, salt, sizeof salt, PBKDF2_ITERATIONS, dk);
  g_autofree char *salt_hex = hex_encode(salt, sizeof salt);
  g_autofree char *dk_hex = hex_encode(dk, sizeof dk);
  return g_strdup_printf("pbkdf2-sha256$%d$%s$%s", PBKDF2_ITERATIONS, salt_hex, dk_hex);
}

gboolean od_password_verify(const char *stored, const char *password) {
  if (stored == NULL || password == NULL)
    return FALSE;
  g_auto(GStrv) parts = g_strsplit(stored, "$", 0);
  guint64 iterations = 0;
  guint8 salt[PBKDF2_SALT_LEN], want[32], got[32];
  if (g_strv_length(parts) != 4 || strcmp(parts[0], "pbkdf2-sha256") != 0 ||
      !g_ascii_string_to_unsigned(parts[1], 10, 1, 10000000, &iterations, NULL) ||
      !hex_decode(parts[2], salt, sizeof salt) || !hex_decode(parts[3], want, sizeof want))
    return FALSE;
  pbkdf2_sha256(password, salt, sizeof salt, (guint)iterations, got);
  guint8 diff = 0;
  for (int i = 0; i < 32; i++)
    diff |= got[i] ^ want[i];
  return diff == 0;
}

char *od_password_generate(void) {
  static const char alphabet[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  guint8 buf[20];
  od_random_bytes(buf, sizeof buf);
  char *out = g_malloc(sizeof buf + 1);
  /* 256 % 56 leaves a tiny bias; 20 characters keep > 110 bits regardless. */
  for (gsize i = 0; i < sizeof buf; i++)
    out[i] = alphabet[buf[i] % (sizeof alphabet - 1)];
  out[sizeof buf] = '\0';
  return out;
}

char *od_sha256_hex(const char *s) {
  return g_compute_checksum_for_string(G_CHECKSUM_SHA256, s, -1);
}

gboolean od_str_equal_ct(const char *a, const char *b) {
  if (a == NULL || b == NULL)
    return FALSE;
  gsize la = strlen(a), lb = strlen(b);
  guint8 diff = la != lb;
  for (gsize i = 0; i < la; i++)
    diff |= (guint8)a[i] ^ (guint8)b[i % (lb ? lb : 1)];
  return diff == 0;
}

/* ---- JWT ---- */

static char *b64url_encode(const guint8 *data, gsize len) {
  char *s = g_base64_encode(data, len);
  char *w = s;
  for (char *r = s; *r; r++) {
    if (*r == '=')
      continue;
    *w++ = *r == '+' ? '-' : *r == '/' ? '_' : *r;
  }
  *w = '\0';
  return s;
}

static guint8 *b64url_decode(const char *s, gsize len, gsize *out_len) {
  GString *b = g_string_sized_new(len + 4);
  for (gsize i = 0; i < len; i++) {
    char c = s[i];
    if (!(g_ascii_isalnum(c) || c == '-' || c == '_')) {
      g_string_free(b, TRUE);
      return NULL;
    }
    g_string_append_c(b, c == '-' ? '+' : c == '_' ? '/' : c);
  }
  if (b->len % 4 == 1) {
    g_string_free(b, TRUE);
    return NULL;
  }
  while (b->len % 4 != 0)
    g_string_append_c(b, '=');
  guint8 *out = g_base64_decode(b->str, out_len);
  g_string_free(b, TRUE);
  return out;
}

char *od_jwt_sign(const guint8 *key, gsize key_len, JsonObject *claims) {
  static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), claims);
  g_autofree char *payload = od_json_to_string(node, FALSE);
  g_autofree char *h64 = b64url_encode((const guint8 *)header, strlen(header));
  g_autofree char *p64 = b64url_encode((const guint8 *)payload, strlen(payload));
  g_autofree char *signing = g_strconcat(h64, ".", p64, NULL);
  guint8 mac[32];
  hmac_sha256(key, key_len, (const guint8 *)signing, strlen(signing), mac);
  g_autofree char *s64 = b64url_encode(mac, sizeof mac);
  return g_strconcat(signing, ".", s64, NULL);
}

JsonObject *od_jwt_verify(const guint8 *key, gsize key_len, const char *token, gint64 now_s, GError **error) {
  const char *dot1 = token ? strchr(token, '.') : NULL;
  const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
  if (dot2 == NULL || strchr(dot2 + 1, '.') != NULL || strlen(token) > 8192) {
    g_set_error(error, OD_ERROR, OD_ERROR_AUTH, "token is not a JWT");
    return NULL;
  }
  gsize hlen = 0, plen = 0, slen = 0;
  g_autofree guint8 *hdr = b64url_decode(token, dot1 - token, &hlen);
  g_autofree guint8 *payload = b64url_decode(dot1 + 1, dot2 - dot1 - 1, &plen);
  g_autofree guint8 *sig = b64url_decode(dot2 + 1, strlen(dot2 + 1), &slen);
  if (hdr == NULL || payload == NULL || sig == NULL || slen != 32) {
    g_set_error(error, OD_ERROR, OD_ERROR_AUTH, "token is not a JWT");
    return NULL;
  }
  guint8 mac[32];
  hmac_sha256(key, key_len, (const guint8 *)token, dot2 - token, mac);
  guint8 diff = 0;
  for (int i = 0; i < 32; i++)
    diff |= mac[i] ^ sig[i];
  if (diff != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_AUTH, "token signature is invalid");
    return NULL;
  }
  g_autoptr(JsonNode) h = od_json_parse((const char *)hdr, hlen, NULL);
  if (h == NULL || !JSON_NODE_HOLDS_OBJECT(h) ||
      g_strcmp0(json_object_get_string_member_with_default(json_node_get_object(h), "alg", ""), "HS256") !=
          0) {
    g_set_error(error, OD_ERROR, OD_ERROR_AUTH, "token algorithm is not HS256");
    return NULL;
  }
  g_autoptr(JsonNode) p = od_json_parse((const char *)payload, plen, NULL);
  if (p == NULL || !JSON_NODE_HOLDS_OBJECT(p)) {
    g_set_error(error, OD_ERROR, OD_ERROR_AUTH, "token claims are not a JSON object");
    return NULL;
  }
  JsonObject *claims = json_node_get_object(p);
  JsonNode *exp = json_object_get_member(claims, "exp");
  /* A token without an expiry would be valid for as long as the key lives: none is accepted. */
  if (exp == NULL || !JSON_NODE_HOLDS_VALUE(exp) || json_node_get_value_type(exp) != G_TYPE_INT64) {
    g_set_error(error, OD_ERROR, OD_ERROR_AUTH, "token has no expiry");
    return NULL;
  }
  if (json_node_get_int(exp) < now_s) {
    g_set_error(error, OD_ERROR, OD_ERROR_AUTH, "token has expired");
    return NULL;
  }
  return json_object_ref(claims);
}

/* mosquitto 2.0's password file format ($7$: PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte hash,
 * both base64). The passwords are random secrets of ours, so mosquitto's own 101 iterations are
 * enough, and they keep a flood of wrong logins cheap for the broker. */
#define MOSQ_ITERATIONS 101

char *od_mosquitto_password_line(const char *username, const char *password) {
  guint8 salt[12], hash[64];
  od_random_bytes(salt, sizeof salt);
  gnutls_datum_t key = {(unsigned char *)password, (unsigned int)strlen(password)};
  gnutls_datum_t s = {salt, sizeof salt};
  if (gnutls_pbkdf2(GNUTLS_MAC_SHA512, &key, &s, MOSQ_ITERATIONS, hash, sizeof hash) != 0)
    return NULL;
  g_autofree char *salt64 = g_base64_encode(salt, sizeof salt);
  g_autofree char *hash64 = g_base64_encode(hash, sizeof hash);
  return g_strdup_printf("%s:$7$%d$%s$%s", username, MOSQ_ITERATIONS, salt64, hash64);
}
