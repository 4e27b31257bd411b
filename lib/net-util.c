/* Pure helpers of the net module: parsing and naming, no kernel access. */
#include "net-private.h"

#include <arpa/inet.h>
#include <string.h>

gboolean oakuk_net_parse_ip(const char *s, guint32 *out) {
  struct in_addr a;
  if (s == NULL || inet_pton(AF_INET, s, &a) != 1)
    return FALSE;
  *out = ntohl(a.s_addr);
  return TRUE;
}

char *oakuk_net_ip_str(guint32 ip) {
  return g_strdup_printf("%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
}

static guint32 mask_of(guint prefix) {
  return prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
}

gboolean oakuk_net_in_cidr(guint32 ip, guint32 net, guint prefix) {
  return (ip & mask_of(prefix)) == net;
}

gboolean oakuk_net_parse_cidr(const char *s, const char *field, guint32 *net, guint *prefix, GError **error) {
  const char *slash = s ? strchr(s, '/') : NULL;
  if (slash == NULL) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "%s: \"%s\" is not an IPv4 CIDR (a.b.c.d/n)", field,
                s ? s : "(null)");
    return FALSE;
  }
  g_autofree char *addr = g_strndup(s, slash - s);
  char *end = NULL;
  guint64 p = g_ascii_strtoull(slash + 1, &end, 10);
  guint32 ip;
  if (!oakuk_net_parse_ip(addr, &ip) || end == slash + 1 || *end != '\0' || p > 32) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "%s: \"%s\" is not an IPv4 CIDR (a.b.c.d/n)", field, s);
    return FALSE;
  }
  if ((ip & ~mask_of((guint)p)) != 0) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "%s: \"%s\" has host bits set", field, s);
    return FALSE;
  }
  *net = ip;
  *prefix = (guint)p;
  return TRUE;
}

static gboolean parse_port(const char *s, guint *out) {
  char *end = NULL;
  if (s == NULL || !g_ascii_isdigit(*s))
    return FALSE;
  guint64 v = g_ascii_strtoull(s, &end, 10);
  if (*end != '\0' || v == 0 || v > 65535)
    return FALSE;
  *out = (guint)v;
  return TRUE;
}

gboolean oakuk_net_parse_port_spec(const char *spec, guint *host, guint *guest, const char **proto,
                                   GError **error) {
  g_autofree char *copy = g_strdup(spec ? spec : "");
  char *slash = strchr(copy, '/');
  *proto = "tcp";
  if (slash != NULL) {
    *slash = '\0';
    if (g_strcmp0(slash + 1, "tcp") == 0)
      *proto = "tcp";
    else if (g_strcmp0(slash + 1, "udp") == 0)
      *proto = "udp";
    else
      goto bad;
  }
  char *colon = strchr(copy, ':');
  if (colon == NULL)
    goto bad;
  *colon = '\0';
  if (!parse_port(copy, host) || !parse_port(colon + 1, guest))
    goto bad;
  return TRUE;
bad:
  g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
              "port mapping \"%s\": expected HOST:GUEST[/tcp|/udp] with ports 1-65535",
              spec ? spec : "(null)");
  return FALSE;
}

static void name_digest(const char *name, guint8 out[32]) {
  g_autoptr(GChecksum) c = g_checksum_new(G_CHECKSUM_SHA256);
  gsize len = 32;
  g_checksum_update(c, (const guchar *)name, -1);
  g_checksum_get_digest(c, out, &len);
}

char *oakuk_net_host_ifname(const char *name) {
  guint8 d[32];
  name_digest(name, d);
  return g_strdup_printf("oakuk-%02x%02x%02x", d[0], d[1], d[2]);
}

char *oakuk_net_eth_mac(const char *name) {
  guint8 d[32];
  name_digest(name, d);
  return g_strdup_printf("02:6f:6b:%02x:%02x:%02x", d[3], d[4], d[5]);
}

/* 0e:KIND:a:b:c:d, locally administered unicast */
static void mac_of_ip(guint8 kind, guint32 ip, guint8 mac[6]) {
  mac[0] = 0x0e;
  mac[1] = kind;
  mac[2] = ip >> 24;
  mac[3] = (ip >> 16) & 0xff;
  mac[4] = (ip >> 8) & 0xff;
  mac[5] = ip & 0xff;
}

void oakuk_net_vx_mac(guint32 underlay, guint8 mac[6]) {
  mac_of_ip(0x6b, underlay, mac);
}

void oakuk_net_bridge_mac(guint32 subnet, guint8 mac[6]) {
  mac_of_ip(0x62, subnet, mac);
}

gboolean oakuk_net_vx_mac_to_ip(const guint8 mac[6], guint32 *underlay) {
  if (mac[0] != 0x0e || mac[1] != 0x6b)
    return FALSE;
  *underlay = ((guint32)mac[2] << 24) | ((guint32)mac[3] << 16) | ((guint32)mac[4] << 8) | mac[5];
  return TRUE;
}

gboolean oakuk_net_check_instance_name(const char *name, GError **error) {
  gsize len = name ? strlen(name) : 0;
  if (len == 0 || len > 100 || name[0] == '.') {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                "instance name \"%s\": must be 1-100 characters and not start with '.'", name ? name : "");
    return FALSE;
  }
  for (const char *p = name; *p; p++) {
    if (!g_ascii_isalnum(*p) && *p != '.' && *p != '-' && *p != '_') {
      g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                  "instance name \"%s\": character '%c' not allowed (use [A-Za-z0-9._-])", name, *p);
      return FALSE;
    }
  }
  return TRUE;
}

const char *oakuk_net_mode_name(gint mode) {
  switch (mode) {
  case OAKUK_NET_CONTAINER: return "container";
  case OAKUK_NET_UK_DIRECT: return "direct";
  case OAKUK_NET_UK_NAT: return "nat";
  default: return NULL;
  }
}

char *oakuk_net_alias_format(gint mode, guint32 ip, const char *name) {
  g_autofree char *ips = oakuk_net_ip_str(ip);
  return g_strdup_printf("oakuk:%s:%s:%s", oakuk_net_mode_name(mode), ips, name);
}

gboolean oakuk_net_alias_parse(const char *alias, gint *mode, guint32 *ip, char **name) {
  if (alias == NULL || !g_str_has_prefix(alias, "oakuk:"))
    return FALSE;
  g_auto(GStrv) parts = g_strsplit(alias + 6, ":", 3);
  if (g_strv_length(parts) != 3 || !oakuk_net_parse_ip(parts[1], ip))
    return FALSE;
  for (gint m = OAKUK_NET_CONTAINER; m <= OAKUK_NET_UK_NAT; m++) {
    if (g_strcmp0(parts[0], oakuk_net_mode_name(m)) == 0) {
      *mode = m;
      *name = g_strdup(parts[2]);
      return TRUE;
    }
  }
  return FALSE;
}

char *oakuk_net_service_chain(guint32 ip) {
  return g_strdup_printf("svc_%u_%u_%u_%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
}
