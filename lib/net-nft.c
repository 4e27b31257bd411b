/* nftables over netlink (libnftnl + libmnl): the table "ip oakuk" of the node and of NAT-mode
 * instance namespaces, built as the expressions nft(8) would compile the rules in net.c's comments
 * to (nft --debug=netlink), and read back the same way. One OakukNft is one transaction: the kernel
 * applies all of it or nothing. Not libnftables: its parser, evaluator and caches kept ~1.2 MB
 * mapped in oakuk-node for a dozen fixed rules (docs/node.md). */
#include "net-private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define TABLE "oakuk"
#define FAMILY NFPROTO_IPV4
/* nft's datatype ids (src/datatype.h), shown by `nft list` as the maps' types. */
#define TYPE_INTEGER 4
#define TYPE_IPADDR 7
#define TYPE_INET_PROTOCOL 12
#define TYPE_INET_SERVICE 13
#define TYPE_BITS 6
/* A transaction is at most BATCH_LIMIT bytes; the buffer is twice that, as libmnl requires (the
 * message that crosses the limit is still written). OAKUK_NET_MAX_BACKENDS backends take ~50 kB. */
#define BATCH_LIMIT (128 * 1024)
#define RECV_SIZE (64 * 1024) /* dump messages may exceed MNL_SOCKET_BUFFER_SIZE (a page) */

typedef struct {
  guint32 seq;
  char *what; /* for errors: "add rule oakuk postrouting" */
} Op;

struct OakukNft {
  char *buf;
  struct mnl_nlmsg_batch *batch;
  guint32 seq, set_id;
  GArray *ops; /* Op */
  gboolean full;
};

OakukNft *oakuk_nft_new(void) {
  OakukNft *t = g_new0(OakukNft, 1);
  t->buf = g_malloc(2 * BATCH_LIMIT);
  t->batch = mnl_nlmsg_batch_start(t->buf, BATCH_LIMIT);
  t->seq = (guint32)time(NULL);
  t->ops = g_array_new(FALSE, FALSE, sizeof(Op));
  nftnl_batch_begin(mnl_nlmsg_batch_current(t->batch), t->seq++);
  mnl_nlmsg_batch_next(t->batch);
  return t;
}

void oakuk_nft_free(OakukNft *t) {
  if (t == NULL)
    return;
  for (guint i = 0; i < t->ops->len; i++)
    g_free(g_array_index(t->ops, Op, i).what);
  g_array_unref(t->ops);
  mnl_nlmsg_batch_stop(t->batch);
  g_free(t->buf);
  g_free(t);
}

/* A message of the batch: its header, to be filled by a libnftnl builder. */
static struct nlmsghdr *msg(OakukNft *t, guint16 type, guint16 flags, char *what) {
  Op op = {t->seq, what};
  g_array_append_val(t->ops, op);
  return nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(t->batch), type, FAMILY, flags | NLM_F_ACK, t->seq++);
}

static void next(OakukNft *t) {
  if (!t->full && !mnl_nlmsg_batch_next(t->batch))
    t->full = TRUE; /* later messages overwrite the last one; commit refuses the transaction */
}

static struct mnl_socket *nl_open(GError **error) {
  struct mnl_socket *nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
  if (nl == NULL || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    int e = errno;
    if (nl)
      mnl_socket_close(nl);
    oakuk_net_fail_errno(error, e, "nftables: netlink socket");
    return NULL;
  }
  struct timeval tv = {5, 0};
  setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return nl;
}

static const char *op_what(OakukNft *t, guint32 seq) {
  for (guint i = 0; i < t->ops->len; i++)
    if (g_array_index(t->ops, Op, i).seq == seq)
      return g_array_index(t->ops, Op, i).what;
  return "batch";
}

gboolean oakuk_nft_commit(OakukNft *t, GError **error) {
  if (t->full)
    return oakuk_net_fail_errno(error, E2BIG, "nftables: transaction of %u operations larger than %d kB",
                                t->ops->len, BATCH_LIMIT / 1024);
  nftnl_batch_end(mnl_nlmsg_batch_current(t->batch), t->seq++);
  mnl_nlmsg_batch_next(t->batch);
  struct mnl_socket *nl = nl_open(error);
  if (nl == NULL)
    return FALSE;
  gboolean ok = TRUE;
  if (mnl_socket_sendto(nl, mnl_nlmsg_batch_head(t->batch), mnl_nlmsg_batch_size(t->batch)) < 0) {
    ok = oakuk_net_fail_errno(error, errno, "nftables: send");
    mnl_socket_close(nl);
    return ok;
  }
  /* Every message asked for an ACK: one answer each, 0 or an errno. The transaction is all or
   * nothing, so the first error is its outcome. */
  guint answers = 0;
  g_autofree char *rbuf = g_malloc(RECV_SIZE);
  while (ok && answers < t->ops->len) {
    ssize_t got = mnl_socket_recvfrom(nl, rbuf, RECV_SIZE);
    if (got < 0) {
      ok = oakuk_net_fail_errno(error, errno, "nftables: %u of %u answers", answers, t->ops->len);
      break;
    }
    int n = (int)got;
    for (struct nlmsghdr *h = (struct nlmsghdr *)rbuf; ok && mnl_nlmsg_ok(h, n); h = mnl_nlmsg_next(h, &n)) {
      if (h->nlmsg_type != NLMSG_ERROR)
        continue;
      answers++;
      const struct nlmsgerr *e = mnl_nlmsg_get_payload(h);
      if (e->error != 0)
        ok = oakuk_net_fail_errno(error, -e->error, "nftables: %s", op_what(t, h->nlmsg_seq));
    }
  }
  mnl_socket_close(nl);
  return ok;
}

/* ---------------------------------------------------------------- objects */

void oakuk_nft_add_table(OakukNft *t) {
  struct nftnl_table *o = nftnl_table_alloc();
  nftnl_table_set_str(o, NFTNL_TABLE_NAME, TABLE);
  nftnl_table_nlmsg_build_payload(msg(t, NFT_MSG_NEWTABLE, NLM_F_CREATE, g_strdup("add table ip " TABLE)), o);
  nftnl_table_free(o);
  next(t);
}

void oakuk_nft_delete_table(OakukNft *t) {
  struct nftnl_table *o = nftnl_table_alloc();
  nftnl_table_set_str(o, NFTNL_TABLE_NAME, TABLE);
  nftnl_table_nlmsg_build_payload(msg(t, NFT_MSG_DELTABLE, 0, g_strdup("delete table ip " TABLE)), o);
  nftnl_table_free(o);
  next(t);
}

static struct nftnl_chain *chain_new(const char *name) {
  struct nftnl_chain *c = nftnl_chain_alloc();
  nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, TABLE);
  nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
  return c;
}

void oakuk_nft_add_nat_chain(OakukNft *t, const char *name, int hook, int prio) {
  struct nftnl_chain *c = chain_new(name);
  nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, (guint32)hook);
  nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, prio);
  nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, "nat");
  nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);
  nftnl_chain_nlmsg_build_payload(
      msg(t, NFT_MSG_NEWCHAIN, NLM_F_CREATE, g_strdup_printf("add chain %s", name)), c);
  nftnl_chain_free(c);
  next(t);
}

void oakuk_nft_add_chain(OakukNft *t, const char *name) {
  struct nftnl_chain *c = chain_new(name);
  nftnl_chain_nlmsg_build_payload(
      msg(t, NFT_MSG_NEWCHAIN, NLM_F_CREATE, g_strdup_printf("add chain %s", name)), c);
  nftnl_chain_free(c);
  next(t);
}

void oakuk_nft_delete_chain(OakukNft *t, const char *name) {
  struct nftnl_chain *c = chain_new(name);
  nftnl_chain_nlmsg_build_payload(msg(t, NFT_MSG_DELCHAIN, 0, g_strdup_printf("delete chain %s", name)), c);
  nftnl_chain_free(c);
  next(t);
}

void oakuk_nft_flush_chain(OakukNft *t, const char *name) {
  struct nftnl_rule *r = nftnl_rule_alloc();
  nftnl_rule_set_str(r, NFTNL_RULE_TABLE, TABLE);
  nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, name);
  nftnl_rule_nlmsg_build_payload(msg(t, NFT_MSG_DELRULE, 0, g_strdup_printf("flush chain %s", name)), r);
  nftnl_rule_free(r);
  next(t);
}

/* A named map of the table, or an anonymous constant set/map bound to the next rule. */
static struct nftnl_set *set_new(OakukNft *t, const char *name, guint32 flags, guint32 key_type,
                                 guint32 key_len, guint32 data_type, guint32 data_len) {
  struct nftnl_set *s = nftnl_set_alloc();
  nftnl_set_set_str(s, NFTNL_SET_TABLE, TABLE);
  nftnl_set_set_str(s, NFTNL_SET_NAME, name);
  nftnl_set_set_u32(s, NFTNL_SET_FAMILY, FAMILY);
  nftnl_set_set_u32(s, NFTNL_SET_FLAGS, flags);
  nftnl_set_set_u32(s, NFTNL_SET_KEY_TYPE, key_type);
  nftnl_set_set_u32(s, NFTNL_SET_KEY_LEN, key_len);
  if (flags & NFT_SET_MAP) {
    nftnl_set_set_u32(s, NFTNL_SET_DATA_TYPE, data_type);
    nftnl_set_set_u32(s, NFTNL_SET_DATA_LEN, data_len);
  }
  nftnl_set_set_u32(s, NFTNL_SET_ID, ++t->set_id);
  return s;
}

static void set_add(OakukNft *t, struct nftnl_set *s, char *what) {
  nftnl_set_nlmsg_build_payload(msg(t, NFT_MSG_NEWSET, NLM_F_CREATE, what), s);
  next(t);
}

static void elems_add(OakukNft *t, struct nftnl_set *s, guint16 type, guint16 flags, char *what) {
  nftnl_set_elems_nlmsg_build_payload(msg(t, type, flags, what), s);
  next(t);
}

/* The ports map: inet_proto . inet_service : ipv4_addr . inet_service (each field in 4 bytes). */
static struct nftnl_set *ports_map(OakukNft *t) {
  return set_new(t, "ports", NFT_SET_MAP, TYPE_INET_PROTOCOL << TYPE_BITS | TYPE_INET_SERVICE, 8,
                 TYPE_IPADDR << TYPE_BITS | TYPE_INET_SERVICE, 8);
}

static struct nftnl_set *services_map(OakukNft *t) {
  return set_new(t, "services", NFT_SET_MAP, TYPE_IPADDR, 4, NFT_DATA_VERDICT, 0);
}

void oakuk_nft_add_maps(OakukNft *t) {
  struct nftnl_set *p = ports_map(t), *s = services_map(t);
  set_add(t, p, g_strdup("add map ports"));
  set_add(t, s, g_strdup("add map services"));
  nftnl_set_free(p);
  nftnl_set_free(s);
}

static void port_key(guint8 key[8], gboolean udp, guint host) {
  memset(key, 0, 8);
  key[0] = udp ? IPPROTO_UDP : IPPROTO_TCP;
  guint16 p = htons((guint16)host);
  memcpy(key + 4, &p, 2);
}

void oakuk_nft_port_add(OakukNft *t, gboolean udp, guint host, const char *comment, guint32 ip, guint guest) {
  g_autofree char *what = g_strdup_printf("add element ports { %s . %u }", udp ? "udp" : "tcp", host);
  struct nftnl_set *s = ports_map(t);
  struct nftnl_set_elem *e = nftnl_set_elem_alloc();
  guint8 key[8], data[8] = {0};
  port_key(key, udp, host);
  guint32 a = htonl(ip);
  guint16 g = htons((guint16)guest);
  memcpy(data, &a, 4);
  memcpy(data + 4, &g, 2);
  nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, sizeof key);
  nftnl_set_elem_set(e, NFTNL_SET_ELEM_DATA, data, sizeof data);
  struct nftnl_udata_buf *u = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);
  nftnl_udata_put_strz(u, 0 /* NFTNL_UDATA_SET_ELEM_COMMENT */, comment);
  nftnl_set_elem_set(e, NFTNL_SET_ELEM_USERDATA, nftnl_udata_buf_data(u), nftnl_udata_buf_len(u));
  nftnl_udata_buf_free(u);
  nftnl_set_elem_add(s, e);
  elems_add(t, s, NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, g_steal_pointer(&what));
  nftnl_set_free(s);
}

void oakuk_nft_port_delete(OakukNft *t, gboolean udp, guint host) {
  g_autofree char *what = g_strdup_printf("delete element ports { %s . %u }", udp ? "udp" : "tcp", host);
  struct nftnl_set *s = ports_map(t);
  struct nftnl_set_elem *e = nftnl_set_elem_alloc();
  guint8 key[8];
  port_key(key, udp, host);
  nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, sizeof key);
  nftnl_set_elem_add(s, e);
  elems_add(t, s, NFT_MSG_DELSETELEM, 0, g_steal_pointer(&what));
  nftnl_set_free(s);
}

static void service_elem(OakukNft *t, guint32 ip, const char *chain, gboolean add) {
  g_autofree char *ips = oakuk_net_ip_str(ip);
  struct nftnl_set *s = services_map(t);
  struct nftnl_set_elem *e = nftnl_set_elem_alloc();
  guint32 a = htonl(ip);
  nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, &a, 4);
  if (add) {
    nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_VERDICT, (guint32)NFT_JUMP);
    nftnl_set_elem_set_str(e, NFTNL_SET_ELEM_CHAIN, chain);
  }
  nftnl_set_elem_add(s, e);
  elems_add(t, s, add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM, add ? NLM_F_CREATE : 0,
            g_strdup_printf("%s element services { %s }", add ? "add" : "delete", ips));
  nftnl_set_free(s);
}

void oakuk_nft_service_add(OakukNft *t, guint32 ip, const char *chain) {
  service_elem(t, ip, chain, TRUE);
}

void oakuk_nft_service_delete(OakukNft *t, guint32 ip) {
  service_elem(t, ip, NULL, FALSE);
}

/* ---------------------------------------------------------------- rules */

#define REG1 NFT_REG_1
#define REG9 NFT_REG32_01

/* An expression with up to three u32 attributes (attr < 0: unused). */
static void expr3(struct nftnl_rule *r, const char *name, int a1, guint32 v1, int a2, guint32 v2, int a3,
                  guint32 v3) {
  struct nftnl_expr *e = nftnl_expr_alloc(name);
  const int attr[] = {a1, a2, a3};
  const guint32 val[] = {v1, v2, v3};
  for (guint i = 0; i < G_N_ELEMENTS(attr); i++)
    if (attr[i] >= 0)
      nftnl_expr_set_u32(e, (guint16)attr[i], val[i]);
  nftnl_rule_add_expr(r, e);
}

static void cmp(struct nftnl_rule *r, guint32 reg, guint32 op, const void *data, guint32 len) {
  struct nftnl_expr *e = nftnl_expr_alloc("cmp");
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, reg);
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
  nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
  nftnl_rule_add_expr(r, e);
}

static void load(struct nftnl_rule *r, guint32 base, guint32 offset, guint32 len, guint32 reg) {
  struct nftnl_expr *e = nftnl_expr_alloc("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, reg);
  nftnl_rule_add_expr(r, e);
}

static void load_meta(struct nftnl_rule *r, guint32 key) {
  expr3(r, "meta", NFTNL_EXPR_META_KEY, key, NFTNL_EXPR_META_DREG, REG1, -1, 0);
}

/* reg1 &= mask (4 bytes, network order) */
static void and_mask(struct nftnl_rule *r, guint32 mask) {
  guint32 zero = 0;
  struct nftnl_expr *e = nftnl_expr_alloc("bitwise");
  nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, REG1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, REG1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, 4);
  nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, &mask, 4);
  nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, &zero, 4);
  nftnl_rule_add_expr(r, e);
}

/* ip saddr/daddr (offset 12/16) [!=] net/prefix: whole bytes compared directly, as nft does. */
static void ip_in(struct nftnl_rule *r, guint32 offset, guint32 net, guint prefix, gboolean neq) {
  guint32 a = htonl(net);
  if (prefix % 8 == 0) {
    load(r, NFT_PAYLOAD_NETWORK_HEADER, offset, prefix / 8, REG1);
    cmp(r, REG1, neq ? NFT_CMP_NEQ : NFT_CMP_EQ, &a, prefix / 8);
    return;
  }
  load(r, NFT_PAYLOAD_NETWORK_HEADER, offset, 4, REG1);
  and_mask(r, htonl(prefix ? ~0u << (32 - prefix) : 0));
  cmp(r, REG1, neq ? NFT_CMP_NEQ : NFT_CMP_EQ, &a, 4);
}

/* meta iifname/oifname [!=] name */
static void ifname(struct nftnl_rule *r, guint32 key, const char *name, gboolean neq) {
  char buf[IFNAMSIZ] = {0};
  g_strlcpy(buf, name, sizeof buf);
  load_meta(r, key);
  cmp(r, REG1, neq ? NFT_CMP_NEQ : NFT_CMP_EQ, buf, sizeof buf);
}

static void lookup(struct nftnl_rule *r, guint32 sreg, gint64 dreg, const char *set, guint32 set_id) {
  struct nftnl_expr *e = nftnl_expr_alloc("lookup");
  nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, sreg);
  if (dreg >= 0)
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, (guint32)dreg);
  nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set);
  if (set_id)
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, set_id);
  nftnl_rule_add_expr(r, e);
}

static void masq(struct nftnl_rule *r) {
  nftnl_rule_add_expr(r, nftnl_expr_alloc("masq"));
}

static void dnat(struct nftnl_rule *r, guint32 addr_reg, guint32 proto_reg) {
  struct nftnl_expr *e = nftnl_expr_alloc("nat");
  nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT);
  nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY, NFPROTO_IPV4);
  nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, addr_reg);
  if (proto_reg)
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, proto_reg);
  nftnl_rule_add_expr(r, e);
}

static struct nftnl_rule *rule_new(const char *chain) {
  struct nftnl_rule *r = nftnl_rule_alloc();
  nftnl_rule_set_str(r, NFTNL_RULE_TABLE, TABLE);
  nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
  nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, FAMILY);
  return r;
}

static void rule_add(OakukNft *t, struct nftnl_rule *r, const char *chain) {
  nftnl_rule_nlmsg_build_payload(
      msg(t, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, g_strdup_printf("add rule %s", chain)), r);
  nftnl_rule_free(r);
  next(t);
}

/* The node's rules; the maps must exist or be added in the same transaction (set ids 1 and 2). */
void oakuk_nft_node_rules(OakukNft *t, const char *bridge, guint32 subnet, guint subnet_prefix,
                          guint32 overlay, guint overlay_prefix, guint32 service, guint service_prefix) {
  static const char *const vchains[] = {"prerouting", "output"};
  for (guint i = 0; i < G_N_ELEMENTS(vchains); i++) {
    /* ip daddr vmap @services */
    struct nftnl_rule *r = rule_new(vchains[i]);
    load(r, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, REG1);
    lookup(r, REG1, NFT_REG_VERDICT, "services", 0);
    rule_add(t, r, vchains[i]);
    /* fib daddr type local dnat ip to meta l4proto . th dport map @ports */
    r = rule_new(vchains[i]);
    expr3(r, "fib", NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR, NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE,
          NFTNL_EXPR_FIB_DREG, REG1);
    guint32 local = RTN_LOCAL;
    cmp(r, REG1, NFT_CMP_EQ, &local, 4);
    load_meta(r, NFT_META_L4PROTO);
    load(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, REG9);
    lookup(r, REG1, REG1, "ports", 0);
    dnat(r, REG1, REG9);
    rule_add(t, r, vchains[i]);
  }
  /* ip saddr 127.0.0.0/8 oifname BRIDGE masquerade */
  struct nftnl_rule *r = rule_new("postrouting");
  ip_in(r, 12, 0x7f000000, 8, FALSE);
  ifname(r, NFT_META_OIFNAME, bridge, FALSE);
  masq(r);
  rule_add(t, r, "postrouting");
  /* ct status dnat oifname BRIDGE ip saddr SUBNET masquerade */
  r = rule_new("postrouting");
  expr3(r, "ct", NFTNL_EXPR_CT_KEY, NFT_CT_STATUS, NFTNL_EXPR_CT_DREG, REG1, -1, 0);
  and_mask(r, IPS_DST_NAT); /* ct status is host order, as nft compiles it */
  guint32 zero = 0;
  cmp(r, REG1, NFT_CMP_NEQ, &zero, 4);
  ifname(r, NFT_META_OIFNAME, bridge, FALSE);
  ip_in(r, 12, subnet, subnet_prefix, FALSE);
  masq(r);
  rule_add(t, r, "postrouting");
  /* ip saddr SUBNET ip daddr != SUBNET ip daddr != OVERLAY ip daddr != SERVICES oifname != BRIDGE
   * masquerade: instances reach the outside world through the node's address */
  r = rule_new("postrouting");
  ip_in(r, 12, subnet, subnet_prefix, FALSE);
  ip_in(r, 16, subnet, subnet_prefix, TRUE);
  ip_in(r, 16, overlay, overlay_prefix, TRUE);
  ip_in(r, 16, service, service_prefix, TRUE);
  ifname(r, NFT_META_OIFNAME, bridge, TRUE);
  masq(r);
  rule_add(t, r, "postrouting");
}

/* In a NAT-mode instance namespace: iifname ETH ip daddr IP dnat to GUEST;
 * oifname ETH ip saddr GUEST_NET masquerade. */
void oakuk_nft_instance_nat_rules(OakukNft *t, const char *eth, guint32 ip, guint32 guest, guint32 guest_net,
                                  guint guest_prefix) {
  struct nftnl_rule *r = rule_new("prerouting");
  ifname(r, NFT_META_IIFNAME, eth, FALSE);
  ip_in(r, 16, ip, 32, FALSE);
  guint32 g = htonl(guest);
  struct nftnl_expr *e = nftnl_expr_alloc("immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, REG1);
  nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, &g, 4);
  nftnl_rule_add_expr(r, e);
  dnat(r, REG1, 0);
  rule_add(t, r, "prerouting");
  r = rule_new("postrouting");
  ifname(r, NFT_META_OIFNAME, eth, FALSE);
  ip_in(r, 12, guest_net, guest_prefix, FALSE);
  masq(r);
  rule_add(t, r, "postrouting");
}

/* CHAIN: [meta l4proto { tcp, udp } th dport PORT] dnat ip to numgen inc mod N map { 0 : B0, ... } */
void oakuk_nft_service_rule(OakukNft *t, const char *chain, guint port, const guint32 *backends, guint n) {
  struct nftnl_rule *r = rule_new(chain);
  if (port) {
    struct nftnl_set *protos =
        set_new(t, "__set%d", NFT_SET_ANONYMOUS | NFT_SET_CONSTANT, TYPE_INET_PROTOCOL, 1, 0, 0);
    nftnl_set_set_u32(protos, NFTNL_SET_DESC_SIZE, 2);
    for (guint i = 0; i < 2; i++) {
      guint8 p = i ? IPPROTO_UDP : IPPROTO_TCP;
      struct nftnl_set_elem *e = nftnl_set_elem_alloc();
      nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, &p, 1);
      nftnl_set_elem_add(protos, e);
    }
    set_add(t, protos, g_strdup_printf("add set for %s", chain));
    elems_add(t, protos, NFT_MSG_NEWSETELEM, NLM_F_CREATE, g_strdup_printf("add elements for %s", chain));
    load_meta(r, NFT_META_L4PROTO);
    lookup(r, REG1, -1, "__set%d", nftnl_set_get_u32(protos, NFTNL_SET_ID));
    nftnl_set_free(protos);
    guint16 p = htons((guint16)port);
    load(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, REG1);
    cmp(r, REG1, NFT_CMP_EQ, &p, 2);
  }
  struct nftnl_set *map = set_new(t, "__map%d", NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP,
                                  TYPE_INTEGER, 4, TYPE_IPADDR, 4);
  nftnl_set_set_u32(map, NFTNL_SET_DESC_SIZE, n);
  /* For nft list: the keys are host-order integers (what numgen yields), the data big-endian. */
  struct nftnl_udata_buf *u = nftnl_udata_buf_alloc(64);
  nftnl_udata_put_u32(u, 0 /* NFTNL_UDATA_SET_KEYBYTEORDER */, 1 /* host */);
  nftnl_udata_put_u32(u, 1 /* NFTNL_UDATA_SET_DATABYTEORDER */, 2 /* big endian */);
  nftnl_set_set_data(map, NFTNL_SET_USERDATA, nftnl_udata_buf_data(u), nftnl_udata_buf_len(u));
  nftnl_udata_buf_free(u);
  for (guint i = 0; i < n; i++) {
    guint32 k = i, v = htonl(backends[i]);
    struct nftnl_set_elem *e = nftnl_set_elem_alloc();
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, &k, 4);
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_DATA, &v, 4);
    nftnl_set_elem_add(map, e);
  }
  set_add(t, map, g_strdup_printf("add map for %s", chain));
  elems_add(t, map, NFT_MSG_NEWSETELEM, NLM_F_CREATE, g_strdup_printf("add backends for %s", chain));
  expr3(r, "numgen", NFTNL_EXPR_NG_DREG, REG1, NFTNL_EXPR_NG_MODULUS, n, NFTNL_EXPR_NG_TYPE,
        NFT_NG_INCREMENTAL);
  lookup(r, REG1, REG1, "__map%d", nftnl_set_get_u32(map, NFTNL_SET_ID));
  nftnl_set_free(map);
  dnat(r, REG1, 0);
  rule_add(t, r, chain);
}

/* ---------------------------------------------------------------- reading */

typedef int (*DumpFn)(const struct nlmsghdr *h, void *data);

/* One request (a dump, or a get) in the current namespace; fn sees each answer message. Returns
 * 0, or the errno the kernel answered. */
static int request(guint16 type, guint16 flags, void (*build)(struct nlmsghdr *h, gpointer obj), gpointer obj,
                   DumpFn fn, void *data) {
  g_autoptr(GError) error = NULL;
  struct mnl_socket *nl = nl_open(&error);
  if (nl == NULL)
    return EIO;
  g_autofree char *buf = g_malloc(RECV_SIZE);
  guint32 seq = (guint32)time(NULL);
  struct nlmsghdr *h = nftnl_nlmsg_build_hdr(buf, type, FAMILY, flags | NLM_F_ACK, seq);
  build(h, obj);
  int rc = 0;
  if (mnl_socket_sendto(nl, h, h->nlmsg_len) < 0) {
    rc = errno;
  } else {
    guint32 portid = mnl_socket_get_portid(nl);
    for (;;) {
      ssize_t n = mnl_socket_recvfrom(nl, buf, RECV_SIZE);
      if (n < 0) {
        rc = errno;
        break;
      }
      int r = mnl_cb_run(buf, (size_t)n, seq, portid, fn, data);
      if (r < 0) {
        rc = errno;
        break;
      }
      if (r == MNL_CB_STOP)
        break;
    }
  }
  mnl_socket_close(nl);
  return rc;
}

static void build_table(struct nlmsghdr *h, gpointer obj) {
  nftnl_table_nlmsg_build_payload(h, obj);
}

static void build_elems(struct nlmsghdr *h, gpointer obj) {
  nftnl_set_elems_nlmsg_build_payload(h, obj);
}

static void build_rule(struct nlmsghdr *h, gpointer obj) {
  nftnl_rule_nlmsg_build_payload(h, obj);
}

static int ignore(const struct nlmsghdr *h, void *data) {
  return MNL_CB_OK;
}

gboolean oakuk_nft_has_table(void) {
  struct nftnl_table *o = nftnl_table_alloc();
  nftnl_table_set_str(o, NFTNL_TABLE_NAME, TABLE);
  int rc = request(NFT_MSG_GETTABLE, 0, build_table, o, ignore, NULL);
  nftnl_table_free(o);
  return rc == 0;
}

typedef struct {
  void (*each)(struct nftnl_set_elem *e, gpointer data);
  gpointer data;
} ElemScan;

static int elems_cb(const struct nlmsghdr *h, void *data) {
  ElemScan *s = data;
  struct nftnl_set *set = nftnl_set_alloc();
  if (nftnl_set_elems_nlmsg_parse(h, set) == 0) {
    struct nftnl_set_elems_iter *it = nftnl_set_elems_iter_create(set);
    for (struct nftnl_set_elem *e = it ? nftnl_set_elems_iter_next(it) : NULL; e;
         e = nftnl_set_elems_iter_next(it))
      s->each(e, s->data);
    if (it)
      nftnl_set_elems_iter_destroy(it);
  }
  nftnl_set_free(set);
  return MNL_CB_OK;
}

/* Each element of set `name` of the table; FALSE when the set cannot be read. */
static gboolean scan_elems(const char *name, void (*each)(struct nftnl_set_elem *e, gpointer data),
                           gpointer data) {
  struct nftnl_set *s = nftnl_set_alloc();
  nftnl_set_set_str(s, NFTNL_SET_TABLE, TABLE);
  nftnl_set_set_str(s, NFTNL_SET_NAME, name);
  nftnl_set_set_u32(s, NFTNL_SET_FAMILY, FAMILY);
  ElemScan scan = {each, data};
  int rc = request(NFT_MSG_GETSETELEM, NLM_F_DUMP, build_elems, s, elems_cb, &scan);
  nftnl_set_free(s);
  return rc == 0;
}

static int comment_cb(const struct nftnl_udata *attr, void *data) {
  if (nftnl_udata_type(attr) == 0 /* NFTNL_UDATA_SET_ELEM_COMMENT */ && nftnl_udata_len(attr) > 0) {
    const char *v = nftnl_udata_get(attr);
    *(char **)data = g_strndup(v, nftnl_udata_len(attr));
  }
  return MNL_CB_OK;
}

static void each_port(struct nftnl_set_elem *e, gpointer data) {
  guint32 klen = 0, dlen = 0, ulen = 0;
  const guint8 *key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
  const guint8 *val = nftnl_set_elem_get(e, NFTNL_SET_ELEM_DATA, &dlen);
  const void *ud = nftnl_set_elem_get(e, NFTNL_SET_ELEM_USERDATA, &ulen);
  if (key == NULL || val == NULL || klen != 8 || dlen != 8)
    return;
  char *comment = NULL;
  if (ud != NULL)
    nftnl_udata_parse(ud, ulen, comment_cb, &comment);
  guint16 host, guest;
  guint32 ip;
  memcpy(&host, key + 4, 2);
  memcpy(&ip, val, 4);
  memcpy(&guest, val + 4, 2);
  OakukNetPort *p = g_new0(OakukNetPort, 1);
  p->instance = comment ? comment : g_strdup("");
  p->proto = key[0] == IPPROTO_UDP ? "udp" : "tcp";
  p->host = ntohs(host);
  p->guest = ntohs(guest);
  p->ip = ntohl(ip);
  g_hash_table_replace(data, g_strdup_printf("%s/%u", p->proto, p->host), p);
}

void oakuk_nft_scan_ports(GHashTable *ports) {
  scan_elems("ports", each_port, ports);
}

static void each_service(struct nftnl_set_elem *e, gpointer data) {
  guint32 klen = 0;
  const guint32 *key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
  if (key != NULL && klen == 4)
    g_ptr_array_add(data, oakuk_net_ip_str(ntohl(*key)));
}

void oakuk_nft_scan_services(GPtrArray *ips) {
  scan_elems("services", each_service, ips);
}

typedef struct {
  guint port;
  char *map;
  gboolean dport_next;
} RuleScan;

static int expr_cb(struct nftnl_expr *e, void *data) {
  RuleScan *s = data;
  const char *name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
  if (g_strcmp0(name, "payload") == 0) {
    s->dport_next = nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_BASE) == NFT_PAYLOAD_TRANSPORT_HEADER &&
                    nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET) == 2;
  } else if (g_strcmp0(name, "cmp") == 0 && s->dport_next) {
    guint32 len = 0;
    const guint16 *v = nftnl_expr_get(e, NFTNL_EXPR_CMP_DATA, &len);
    if (v != NULL && len == 2)
      s->port = ntohs(*v);
    s->dport_next = FALSE;
  } else if (g_strcmp0(name, "lookup") == 0 && nftnl_expr_is_set(e, NFTNL_EXPR_LOOKUP_DREG)) {
    g_free(s->map);
    s->map = g_strdup(nftnl_expr_get_str(e, NFTNL_EXPR_LOOKUP_SET));
  }
  return 0;
}

static int rule_cb(const struct nlmsghdr *h, void *data) {
  struct nftnl_rule *r = nftnl_rule_alloc();
  if (nftnl_rule_nlmsg_parse(h, r) == 0)
    nftnl_expr_foreach(r, expr_cb, data);
  nftnl_rule_free(r);
  return MNL_CB_OK;
}

static void each_backend(struct nftnl_set_elem *e, gpointer data) {
  guint32 klen = 0, dlen = 0;
  const guint32 *key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
  const guint32 *val = nftnl_set_elem_get(e, NFTNL_SET_ELEM_DATA, &dlen);
  if (key == NULL || val == NULL || klen != 4 || dlen != 4)
    return;
  GPtrArray *b = data;
  if (*key >= b->len)
    g_ptr_array_set_size(b, (guint)*key + 1);
  g_free(b->pdata[*key]);
  b->pdata[*key] = oakuk_net_ip_str(ntohl(*val));
}

gboolean oakuk_nft_scan_service_chain(const char *chain, guint *port, GPtrArray *backends) {
  struct nftnl_rule *r = nftnl_rule_alloc();
  nftnl_rule_set_str(r, NFTNL_RULE_TABLE, TABLE);
  nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
  nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, FAMILY);
  RuleScan s = {0};
  int rc = request(NFT_MSG_GETRULE, NLM_F_DUMP, build_rule, r, rule_cb, &s);
  nftnl_rule_free(r);
  *port = s.port;
  if (rc == 0 && s.map != NULL)
    scan_elems(s.map, each_backend, backends);
  g_free(s.map);
  return rc == 0;
}
