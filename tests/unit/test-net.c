/* Pure parts of the net module: parsing, naming and option validation (no kernel access). */
#include "net-private.h"

static void test_cidr(void) {
  guint32 net;
  guint prefix;
  g_autoptr(GError) err = NULL;
  g_assert_true(oakuk_net_parse_cidr("10.18.3.0/24", "f", &net, &prefix, NULL));
  g_assert_cmphex(net, ==, 0x0a120300);
  g_assert_cmpuint(prefix, ==, 24);
  g_assert_false(oakuk_net_parse_cidr("10.18.3.1/24", "options.node_subnet", &net, &prefix, &err));
  g_assert_nonnull(strstr(err->message, "options.node_subnet"));
  g_assert_nonnull(strstr(err->message, "host bits"));
  g_clear_error(&err);
  const char *bad[] = {"10.18.3.0", "10.18.3.0/33", "10.18.3/24", "x/24", "10.18.3.0/", "10.18.3.0/2a", ""};
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_false(oakuk_net_parse_cidr(bad[i], "f", &net, &prefix, &err));
    g_assert_error(err, OAKUK_ERROR, -OAKUK_EINVAL);
    g_clear_error(&err);
  }
  g_assert_true(oakuk_net_in_cidr(0x0a1203fe, 0x0a120300, 24));
  g_assert_false(oakuk_net_in_cidr(0x0a120400, 0x0a120300, 24));
  g_autofree char *s = oakuk_net_ip_str(0x0a120301);
  g_assert_cmpstr(s, ==, "10.18.3.1");
}

static void test_port_spec(void) {
  guint h, g;
  const char *proto;
  g_autoptr(GError) err = NULL;
  g_assert_true(oakuk_net_parse_port_spec("8080:80", &h, &g, &proto, NULL));
  g_assert_cmpuint(h, ==, 8080);
  g_assert_cmpuint(g, ==, 80);
  g_assert_cmpstr(proto, ==, "tcp");
  g_assert_true(oakuk_net_parse_port_spec("53:5353/udp", &h, &g, &proto, NULL));
  g_assert_cmpstr(proto, ==, "udp");
  const char *bad[] = {"8080", "0:80", "70000:80", "80:80/sctp", ":80", "80:", "a:b", "-1:80", "80:80/"};
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_false(oakuk_net_parse_port_spec(bad[i], &h, &g, &proto, &err));
    g_assert_nonnull(strstr(err->message, bad[i]));
    g_clear_error(&err);
  }
}

static void test_names(void) {
  const char *name = "aggr.aggr.testaggr.aggr.instance.0-with-a-rather-long-name-beyond-sixty-chars";
  g_autofree char *a = oakuk_net_host_ifname(name);
  g_autofree char *b = oakuk_net_host_ifname(name);
  g_autofree char *c = oakuk_net_host_ifname("other.instance.0");
  g_assert_cmpstr(a, ==, b);
  g_assert_cmpstr(a, !=, c);
  g_assert_cmpuint(strlen(a), <=, 15);
  g_assert_true(g_str_has_prefix(a, "oakuk-"));
  g_autofree char *eth = oakuk_net_eth_mac(name);
  g_assert_true(g_str_has_prefix(eth, "02:6f:6b:"));
  g_assert_cmpuint(strlen(eth), ==, 17);
  g_autofree char *chain = oakuk_net_service_chain(0x0a1e0001);
  g_assert_cmpstr(chain, ==, "svc_10_30_0_1");
}

static void test_vx_mac(void) {
  guint8 mac[6];
  guint32 ip = 0;
  oakuk_net_vx_mac(0xc0a84d02, mac);
  g_assert_cmphex(mac[0], ==, 0x0e);
  g_assert_true(oakuk_net_vx_mac_to_ip(mac, &ip));
  g_assert_cmphex(ip, ==, 0xc0a84d02);
  mac[0] = 0x02;
  g_assert_false(oakuk_net_vx_mac_to_ip(mac, &ip));
}

static void test_alias(void) {
  g_autofree char *alias = oakuk_net_alias_format(OAKUK_NET_UK_NAT, 0x0a120305, "a.b:c");
  gint mode = -1;
  guint32 ip = 0;
  g_autofree char *name = NULL;
  g_assert_cmpstr(alias, ==, "oakuk:nat:10.18.3.5:a.b:c");
  g_assert_true(oakuk_net_alias_parse(alias, &mode, &ip, &name));
  g_assert_cmpint(mode, ==, OAKUK_NET_UK_NAT);
  g_assert_cmphex(ip, ==, 0x0a120305);
  g_assert_cmpstr(name, ==, "a.b:c");
  g_assert_false(oakuk_net_alias_parse("oakuk:bogus:10.18.3.5:x", &mode, &ip, &name));
  g_assert_false(oakuk_net_alias_parse("something else", &mode, &ip, &name));
  g_assert_false(oakuk_net_alias_parse(NULL, &mode, &ip, &name));
}

static void test_instance_name(void) {
  g_autoptr(GError) err = NULL;
  g_autofree char *long_name = g_strnfill(101, 'a');
  g_assert_true(oakuk_net_check_instance_name("aggr.aggr.testaggr.aggr.instance.0", NULL));
  g_assert_false(oakuk_net_check_instance_name(long_name, &err));
  g_assert_nonnull(strstr(err->message, "1-100"));
  g_clear_error(&err);
  g_assert_false(oakuk_net_check_instance_name("../etc", &err));
  g_clear_error(&err);
  g_assert_false(oakuk_net_check_instance_name("a/b", &err));
  g_assert_nonnull(strstr(err->message, "'/'"));
  g_clear_error(&err);
  g_assert_false(oakuk_net_check_instance_name("", &err));
}

/* Option validation happens before any kernel access, so it runs unprivileged. */
static void test_options(void) {
  oakuk_net_options o;
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_net_options_init(&o, 99), ==, OAKUK_EINVAL);
  g_assert_cmpint(oakuk_net_options_init(&o, OAKUK_NET_OPTIONS_VERSION), ==, 0);
  g_assert_cmpstr(o.bridge, ==, "oakuk0");
  g_assert_cmpstr(o.service_cidr, ==, "10.30.0.0/16");
  g_assert_cmpuint(o.vxlan_id, ==, 4242);
  g_assert_null(oakuk_net_new(&o, &err)); /* node_subnet is required */
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(err), "options.node_subnet"));
  g_clear_pointer(&err, oakuk_error_free);
  o.node_subnet = "10.18.3.0/24";
  o.bridge = "a-bridge-name-too-long";
  g_assert_null(oakuk_net_new(&o, &err));
  g_assert_nonnull(strstr(oakuk_error_message(err), "options.bridge"));
  g_clear_pointer(&err, oakuk_error_free);
  o.bridge = "oakuk0";
  o.underlay_ip = "300.1.1.1";
  g_assert_null(oakuk_net_new(&o, &err));
  g_assert_nonnull(strstr(oakuk_error_message(err), "options.underlay_ip"));
  g_clear_pointer(&err, oakuk_error_free);
  o.underlay_ip = NULL;
  o.netns_path = "/nonexistent/netns";
  g_assert_null(oakuk_net_new(&o, &err));
  g_assert_nonnull(strstr(oakuk_error_message(err), "/nonexistent/netns"));
  g_assert_cmpint(oakuk_error_errno(err), ==, ENOENT);
  g_clear_pointer(&err, oakuk_error_free);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/net/cidr/parse", test_cidr);
  g_test_add_func("/net/port-spec/parse", test_port_spec);
  g_test_add_func("/net/names/hashed", test_names);
  g_test_add_func("/net/names/vx-mac", test_vx_mac);
  g_test_add_func("/net/names/alias", test_alias);
  g_test_add_func("/net/names/instance", test_instance_name);
  g_test_add_func("/net/options/validate", test_options);
  return g_test_run();
}
