#include "oakuk-private.h"

#include <json-glib/json-glib.h>
#include <string.h>

G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_microservice, oakuk_microservice_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_node_report, oakuk_node_report_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_cluster_aggregate, oakuk_cluster_aggregate_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_placement, oakuk_placement_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_reservations, oakuk_reservations_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_error, oakuk_error_free)

/* ---- inputs ---- */

#define UK_AMD64 "\"virtualization\":\"unikernel\",\"arch\":[\"amd64\"],\"code\":\"http://k/amd64.tar.gz\""
#define UK_MULTI                                                                                             \
  "\"virtualization\":\"unikernel\",\"arch\":[\"amd64\",\"arm64\"],"                                         \
  "\"code\":\"http://k/amd64.tar.gz,http://k/arm64.tar.gz\""
#define CONTAINER "\"virtualization\":\"container\",\"code\":\"docker.io/library/nginx:1\""

/* A service from the fields that differ between tests (virtualization, arch, code, ...). */
static oakuk_microservice *svc(const char *fields, int memory, int vcpus) {
  g_autofree char *json =
      g_strdup_printf("{\"microserviceID\":\"s1\",\"microservice_name\":\"web\","
                      "\"microservice_namespace\":\"test\",\"memory\":%d,\"vcpus\":%d,%s}",
                      memory, vcpus, fields);
  oakuk_error *e = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse(json, (size_t)-1, &e);
  if (e)
    g_error("service %s: %s", json, oakuk_error_message(e));
  return ms;
}

/* A node report. virts: JSON list body ("\"container\",\"unikernel\""); accel "kvm"/"tcg" or NULL
 * (no unikernel object); emulated: JSON list body or "". */
static oakuk_node_report *node(const char *id, const char *arch, int vcpus, int memory, double cpu,
                               const char *virts, const char *accel, const char *emulated) {
  char cpubuf[G_ASCII_DTOSTR_BUF_SIZE];
  g_autofree char *uk = accel ? g_strdup_printf(",\"unikernel\":{\"accel\":\"%s\",\"qemu_version\":\"7.2.0\","
                                                "\"emulated_archs\":[%s]}",
                                                accel, emulated ? emulated : "")
                              : g_strdup("");
  g_autofree char *json = g_strdup_printf(
      "{\"id\":\"%s\",\"host\":\"host-%s\",\"ip\":\"10.18.0.1\",\"architecture\":\"%s\",\"cpu_percent\":%s,"
      "\"vcpus\":%d,\"memory\":%d,\"memory_total\":%d,\"memory_percent\":10.0,\"virtualization\":[%s]%s,"
      "\"instances\":[]}",
      id, id, arch, g_ascii_dtostr(cpubuf, sizeof cpubuf, cpu), vcpus, memory, memory * 2, virts, uk);
  oakuk_error *e = NULL;
  oakuk_node_report *r = oakuk_node_report_from_json(json, (size_t)-1, &e);
  if (e)
    g_error("node %s: %s", json, oakuk_error_message(e));
  return r;
}

#define BOTH "\"container\",\"unikernel\""
#define UK_ONLY "\"unikernel\""
#define CTR_ONLY "\"container\""

/* Holds a node list for a test. */
typedef struct {
  oakuk_node_report *nodes[16];
  size_t n;
} Nodes;

static void nodes_add(Nodes *ns, oakuk_node_report *r) {
  g_assert_cmpuint(ns->n, <, G_N_ELEMENTS(ns->nodes));
  ns->nodes[ns->n++] = r;
}

static void nodes_clear(Nodes *ns) {
  for (size_t i = 0; i < ns->n; i++)
    oakuk_node_report_unref(ns->nodes[i]);
  ns->n = 0;
}

/* Selects with defaults; asserts the return code matches whether a node was chosen. */
static oakuk_placement *pick(const oakuk_microservice *ms, const Nodes *ns, oakuk_reservations *res,
                             const char *key, const oakuk_sched_options *opts) {
  oakuk_placement *p = NULL;
  g_autoptr(oakuk_error) e = NULL;
  int rc = oakuk_sched_select_node(&p, ms, ns->nodes, ns->n, res, key, opts, &e);
  g_assert_nonnull(p);
  if (rc == 0) {
    g_assert_true(oakuk_placement_ok(p));
    g_assert_null(e);
  } else {
    g_assert_cmpint(rc, ==, OAKUK_ENOCAPACITY);
    g_assert_false(oakuk_placement_ok(p));
    g_assert_nonnull(e);
    g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_ENOCAPACITY);
  }
  return p;
}

static void assert_line(const oakuk_placement *p, size_t i, const char *expected) {
  g_assert_cmpuint(i, <, oakuk_placement_explanation_count(p));
  g_assert_cmpstr(oakuk_placement_explanation(p, i), ==, expected);
}

/* ---- options ---- */

static void test_options(void) {
  oakuk_sched_options o;
  memset(&o, 0xff, sizeof o);
  g_assert_cmpint(oakuk_sched_options_init(&o, OAKUK_SCHED_OPTIONS_VERSION), ==, 0);
  g_assert_cmpuint(o.version, ==, OAKUK_SCHED_OPTIONS_VERSION);
  g_assert_cmpint(o.policy, ==, OAKUK_SCHED_MOST_FREE);
  g_assert_cmpint(o.now_ms, ==, 0);
  g_assert_cmpint(o.timeout_ms, ==, 10000);
  g_assert_cmpint(oakuk_sched_options_init(&o, OAKUK_SCHED_OPTIONS_VERSION + 1), ==, OAKUK_EINVAL);

  g_autoptr(oakuk_microservice) ms = svc(CONTAINER, 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("n1", "amd64", 2, 1024, 1.0, CTR_ONLY, NULL, NULL));
  oakuk_sched_options bad = OAKUK_SCHED_OPTIONS_INIT;
  bad.version = 99;
  oakuk_placement *p = NULL;
  g_autoptr(oakuk_error) e = NULL;
  g_assert_cmpint(oakuk_sched_select_node(&p, ms, ns.nodes, ns.n, NULL, NULL, &bad, &e), ==, OAKUK_EINVAL);
  g_assert_null(p);
  g_assert_nonnull(strstr(oakuk_error_message(e), "version 99"));
  bad = (oakuk_sched_options)OAKUK_SCHED_OPTIONS_INIT;
  bad.policy = 7;
  oakuk_error_free(g_steal_pointer(&e));
  g_assert_cmpint(oakuk_sched_select_node(&p, ms, ns.nodes, ns.n, NULL, NULL, &bad, &e), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(e), "policy 7"));
  nodes_clear(&ns);
}

/* ---- node selection: ranking ---- */

static void test_most_free(void) {
  g_autoptr(oakuk_microservice) ms = svc(UK_AMD64, 512, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("n1", "amd64", 2, 1024, 3.0, BOTH, "kvm", NULL));
  nodes_add(&ns, node("n2", "amd64", 4, 2048, 3.0, BOTH, "kvm", NULL));
  nodes_add(&ns, node("n3", "amd64", 8, 1536, 0.5, BOTH, "kvm", NULL));
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "n2");
  g_assert_cmpint(oakuk_placement_index(p), ==, 1);
  g_assert_cmpint(oakuk_placement_status(p), ==, OAKUK_STATUS_NODE_SCHEDULED);
  g_assert_cmpint(oakuk_placement_virt(p), ==, OAKUK_VIRT_UNIKERNEL);
  g_assert_cmpint(oakuk_placement_accel(p), ==, OAKUK_ACCEL_KVM);
  g_assert_cmpstr(oakuk_placement_arch(p), ==, "amd64");
  g_assert_cmpstr(oakuk_placement_code(p), ==, "http://k/amd64.tar.gz");
  g_assert_null(oakuk_placement_code_sha256(p));
  g_assert_cmpuint(oakuk_placement_explanation_count(p), ==, 3);
  assert_line(
      p, 0,
      "node n1: qualified, not chosen (rank 3; unikernel amd64 via kvm; 1024 MB, 2 vcpus free, cpu 3.0%)");
  assert_line(p, 1, "node n2: chosen (unikernel amd64 via kvm; most-free: 2048 MB, 4 vcpus free, cpu 3.0%)");
  assert_line(
      p, 2,
      "node n3: qualified, not chosen (rank 2; unikernel amd64 via kvm; 1536 MB, 8 vcpus free, cpu 0.5%)");
  g_autofree char *all = oakuk_placement_explain(p);
  g_autofree char *expected =
      g_strjoin("\n", oakuk_placement_explanation(p, 0), oakuk_placement_explanation(p, 1),
                oakuk_placement_explanation(p, 2), NULL);
  g_assert_cmpstr(all, ==, expected);
  g_assert_null(oakuk_placement_explanation(p, 3));
  nodes_clear(&ns);
}

static void test_best_fit(void) {
  g_autoptr(oakuk_microservice) ms = svc(CONTAINER, 1000, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("n1", "amd64", 4, 4096, 1.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("n2", "amd64", 4, 900, 1.0, CTR_ONLY, NULL, NULL));   /* too small */
  nodes_add(&ns, node("n3", "amd64", 4, 1200, 1.0, CTR_ONLY, NULL, NULL));  /* tightest fit */
  nodes_add(&ns, node("n4", "amd64", 2, 1200, 50.0, CTR_ONLY, NULL, NULL)); /* as tight, fewer cores */
  oakuk_sched_options o = OAKUK_SCHED_OPTIONS_INIT;
  o.policy = OAKUK_SCHED_BEST_FIT;
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, &o);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "n4");
  g_assert_cmpint(oakuk_placement_virt(p), ==, OAKUK_VIRT_CONTAINER);
  g_assert_cmpint(oakuk_placement_accel(p), ==, OAKUK_ACCEL_NONE);
  g_assert_cmpstr(oakuk_placement_arch(p), ==, "amd64");
  g_assert_cmpstr(oakuk_placement_code(p), ==, "docker.io/library/nginx:1");
  assert_line(p, 0,
              "node n1: qualified, not chosen (rank 3; container amd64; 4096 MB, 4 vcpus free, cpu 1.0%)");
  assert_line(p, 1,
              "node n2: insufficient resources: needs 1 vcpus / 1000 MB, free 4 vcpus / 900 MB (reserved 0 "
              "vcpus / 0 MB)");
  assert_line(p, 3, "node n4: chosen (container amd64; best-fit: 1200 MB, 2 vcpus free, cpu 50.0%)");

  /* The same nodes under most-free. */
  g_autoptr(oakuk_placement) q = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(q), ==, "n1");
  nodes_clear(&ns);
}

static void test_tie_break(void) {
  g_autoptr(oakuk_microservice) ms = svc(CONTAINER, 64, 1);
  /* Identical nodes: the lowest id wins whatever the input order. */
  const char *orders[2][3] = {{"b", "c", "a"}, {"c", "a", "b"}};
  for (size_t k = 0; k < 2; k++) {
    Nodes ns = {0};
    for (size_t i = 0; i < 3; i++)
      nodes_add(&ns, node(orders[k][i], "amd64", 4, 2048, 5.0, CTR_ONLY, NULL, NULL));
    g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
    g_assert_cmpstr(oakuk_placement_target(p), ==, "a");
    nodes_clear(&ns);
  }
  /* Same memory: more free cores, then lower cpu. */
  Nodes ns = {0};
  nodes_add(&ns, node("a", "amd64", 4, 2048, 5.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("b", "amd64", 8, 2048, 9.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("c", "amd64", 8, 2048, 2.0, CTR_ONLY, NULL, NULL));
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "c");
  assert_line(p, 0,
              "node a: qualified, not chosen (rank 3; container amd64; 2048 MB, 4 vcpus free, cpu 5.0%)");
  assert_line(p, 1,
              "node b: qualified, not chosen (rank 2; container amd64; 2048 MB, 8 vcpus free, cpu 9.0%)");
  nodes_clear(&ns);
}

/* ---- node selection: checks ---- */

static void test_inactive(void) {
  g_autoptr(oakuk_microservice) ms = svc(CONTAINER, 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("old", "amd64", 8, 8192, 1.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("new", "amd64", 2, 1024, 1.0, CTR_ONLY, NULL, NULL));
  oakuk_node_report_set_received_at_ms(ns.nodes[0], 100000);
  oakuk_node_report_set_received_at_ms(ns.nodes[1], 110000);
  oakuk_sched_options o = OAKUK_SCHED_OPTIONS_INIT;
  o.now_ms = 112300;
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, &o);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "new");
  assert_line(p, 0, "node old: inactive (last report 12.3 s ago, timeout 10.0 s)");

  /* now_ms 0 disables the timeout; a longer timeout keeps it too. */
  g_autoptr(oakuk_placement) q = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(q), ==, "old");
  o.timeout_ms = 20000;
  g_autoptr(oakuk_placement) r = pick(ms, &ns, NULL, NULL, &o);
  g_assert_cmpstr(oakuk_placement_target(r), ==, "old");

  /* Only inactive nodes: nobody qualifies. */
  o.timeout_ms = 1000;
  g_autoptr(oakuk_placement) s = pick(ms, &ns, NULL, NULL, &o);
  g_assert_cmpint(oakuk_placement_status(s), ==, OAKUK_STATUS_NO_QUALIFIED_WORKER);
  assert_line(s, 1, "node new: inactive (last report 2.3 s ago, timeout 1.0 s)");
  nodes_clear(&ns);
}

static void test_direct(void) {
  g_autoptr(oakuk_microservice) ms = svc(
      CONTAINER ",\"constraints\":[{\"type\":\"direct\",\"cluster\":\"c9\",\"node\":\"n1;host-n3\"}]", 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("n1", "amd64", 2, 1024, 1.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("n2", "amd64", 8, 8192, 1.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("n3", "amd64", 4, 2048, 1.0, CTR_ONLY, NULL, NULL)); /* matched by host */
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "n3");
  assert_line(p, 1, "node n2: excluded by direct constraint (allowed nodes: n1, host-n3)");
  assert_line(p, 0,
              "node n1: qualified, not chosen (rank 2; container amd64; 1024 MB, 2 vcpus free, cpu 1.0%)");
  nodes_clear(&ns);
}

static void test_target_node(void) {
  g_autoptr(oakuk_microservice) ms = svc(CONTAINER ",\"target_node\":\"n1\"", 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("n1", "amd64", 2, 1024, 1.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("n2", "amd64", 8, 8192, 1.0, CTR_ONLY, NULL, NULL));
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "n1");
  assert_line(p, 1, "node n2: excluded by target_node constraint (allowed nodes: n1)");
  nodes_clear(&ns);
}

static void test_arch_constraint(void) {
  /* Container: the node's own arch must be allowed. */
  g_autoptr(oakuk_microservice) ctr =
      svc(CONTAINER ",\"constraints\":[{\"type\":\"arch\",\"allowed\":[\"amd64\"]}]", 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("arm", "arm64", 8, 8192, 1.0, BOTH, "kvm", NULL));
  nodes_add(&ns, node("x86", "amd64", 2, 1024, 1.0, BOTH, "kvm", NULL));
  g_autoptr(oakuk_placement) p = pick(ctr, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "x86");
  assert_line(p, 0, "node arm: architecture arm64 not allowed by arch constraint (allowed: amd64)");

  /* Unikernel with both kernels, restricted to arm64: the arm64 node although it has less memory. */
  g_autoptr(oakuk_microservice) uk =
      svc(UK_MULTI ",\"constraints\":[{\"type\":\"arch\",\"allowed\":[\"arm64\"]}]", 64, 1);
  g_autoptr(oakuk_placement) q = pick(uk, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(q), ==, "arm");
  g_assert_cmpstr(oakuk_placement_arch(q), ==, "arm64");
  g_assert_cmpstr(oakuk_placement_code(q), ==, "http://k/arm64.tar.gz");
  assert_line(q, 1, "node x86: architecture amd64 not allowed by arch constraint (allowed: arm64)");
  nodes_clear(&ns);
}

static void test_container_checks(void) {
  g_autoptr(oakuk_microservice) ms = svc(CONTAINER ",\"arch\":[\"amd64\"]", 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("uk", "amd64", 8, 8192, 1.0, UK_ONLY, "kvm", NULL));
  nodes_add(&ns, node("arm", "arm64", 8, 8192, 1.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("ok", "amd64", 1, 128, 1.0, CTR_ONLY, NULL, NULL));
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "ok");
  assert_line(p, 0, "node uk: does not offer container");
  assert_line(p, 1, "node arm: arch arm64 not in service arch (amd64)");
  nodes_clear(&ns);
}

/* A node report with accelerators: base JSON of node() plus "gpus"/"tpus". */
static oakuk_node_report *node_with_accelerators(const char *id, int gpus, int tpus) {
  g_autofree char *json = g_strdup_printf(
      "{\"id\":\"%s\",\"architecture\":\"amd64\",\"vcpus\":8,\"memory\":8192,\"gpus\":%d,\"tpus\":%d,"
      "\"virtualization\":[\"container\"]}",
      id, gpus, tpus);
  oakuk_error *e = NULL;
  oakuk_node_report *r = oakuk_node_report_from_json(json, (size_t)-1, &e);
  if (e)
    g_error("node %s: %s", json, oakuk_error_message(e));
  return r;
}

/* A service asking for GPUs or TPUs never lands on a node without them: every node reports none
 * (oakuk-node, or a report from before the key), so none qualifies and the reason says why. */
static void test_accelerators_refused(void) {
  g_autoptr(oakuk_microservice) gpu = svc(CONTAINER ",\"vgpus\":1", 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("big", "amd64", 64, 65536, 1.0, CTR_ONLY, NULL, NULL)); /* no "gpus" key */
  nodes_add(&ns, node_with_accelerators("tpu", 0, 4));
  oakuk_placement *p = NULL;
  g_autoptr(oakuk_error) e = NULL;
  g_assert_cmpint(oakuk_sched_select_node(&p, gpu, ns.nodes, ns.n, NULL, NULL, NULL, &e), ==,
                  OAKUK_ENOCAPACITY);
  g_assert_false(oakuk_placement_ok(p));
  g_assert_cmpint(oakuk_placement_status(p), ==, OAKUK_STATUS_NO_QUALIFIED_WORKER);
  assert_line(p, 0, "node big: reports 0 GPUs, the service asks for 1 (vgpus)");
  assert_line(p, 1, "node tpu: reports 0 GPUs, the service asks for 1 (vgpus)");
  g_assert_cmpstr(oakuk_error_message(e), ==,
                  "NO_QUALIFIED_WORKER_FOUND: no node can run container (2 candidates rejected); no node "
                  "reports the 1 GPU the service asks for (vgpus)");
  oakuk_placement_unref(p);

  /* A node left out by a constraint does not hide the reason of the others. */
  g_autoptr(oakuk_microservice) pinned =
      svc(CONTAINER ",\"vgpus\":1,\"constraints\":[{\"type\":\"direct\",\"node\":\"tpu\"}]", 64, 1);
  g_autoptr(oakuk_error) e2 = NULL;
  g_assert_cmpint(oakuk_sched_select_node(&p, pinned, ns.nodes, ns.n, NULL, NULL, NULL, &e2), ==,
                  OAKUK_ENOCAPACITY);
  assert_line(p, 0, "node big: excluded by direct constraint (allowed nodes: tpu)");
  g_assert_nonnull(
      strstr(oakuk_error_message(e2), "; no node reports the 1 GPU the service asks for (vgpus)"));
  oakuk_placement_unref(p);

  /* TPUs likewise; a node that reports enough takes the service. */
  g_autoptr(oakuk_microservice) tpu = svc(CONTAINER ",\"vtpus\":2", 64, 1);
  nodes_add(&ns, node_with_accelerators("one", 0, 1));
  g_autoptr(oakuk_placement) q = pick(tpu, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(q), ==, "tpu");
  assert_line(q, 0, "node big: reports 0 TPUs, the service asks for 2 (vtpus)");
  assert_line(q, 2, "node one: reports 1 TPU, the service asks for 2 (vtpus)");

  /* vgpus: 0 asks for nothing: the bigger node wins as before. */
  g_autoptr(oakuk_microservice) none = svc(CONTAINER ",\"vgpus\":0,\"vtpus\":0", 64, 1);
  g_autoptr(oakuk_placement) r = pick(none, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(r), ==, "big");
  nodes_clear(&ns);
}

static void test_unikernel_arch_mismatch(void) {
  g_autoptr(oakuk_microservice) ms = svc(UK_AMD64, 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("arm", "arm64", 8, 8192, 1.0, BOTH, "kvm", NULL));
  nodes_add(&ns, node("ctr", "amd64", 8, 8192, 1.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("arm-emu", "arm64", 8, 8192, 1.0, BOTH, "kvm", "\"riscv64\""));
  oakuk_placement *p = NULL;
  g_autoptr(oakuk_error) e = NULL;
  g_assert_cmpint(oakuk_sched_select_node(&p, ms, ns.nodes, ns.n, NULL, NULL, NULL, &e), ==,
                  OAKUK_ENOCAPACITY);
  g_assert_nonnull(p);
  g_assert_false(oakuk_placement_ok(p));
  g_assert_null(oakuk_placement_target(p));
  g_assert_cmpint(oakuk_placement_index(p), ==, -1);
  g_assert_cmpint(oakuk_placement_status(p), ==, OAKUK_STATUS_NO_QUALIFIED_WORKER);
  g_assert_cmpstr(oakuk_error_message(e), ==,
                  "NO_QUALIFIED_WORKER_FOUND: no node can run unikernel amd64 (3 candidates rejected)");
  assert_line(p, 0, "node arm: arch arm64 has no kernel (service has amd64)");
  assert_line(p, 1, "node ctr: does not offer unikernel");
  assert_line(p, 2, "node arm-emu: arch arm64 has no kernel (service has amd64)");
  oakuk_placement_unref(p);
  nodes_clear(&ns);
}

static void test_emulation(void) {
  /* An amd64 node without KVM, and an arm64 KVM node that emulates amd64. */
  Nodes ns = {0};
  nodes_add(&ns, node("tcg", "amd64", 8, 8192, 1.0, UK_ONLY, "tcg", NULL));
  nodes_add(&ns, node("arm", "arm64", 4, 4096, 1.0, UK_ONLY, "kvm", "\"amd64\""));

  g_autoptr(oakuk_microservice) forbid = svc(UK_AMD64, 64, 1);
  g_autoptr(oakuk_placement) p = pick(forbid, &ns, NULL, NULL, NULL);
  g_assert_cmpint(oakuk_placement_status(p), ==, OAKUK_STATUS_NO_QUALIFIED_WORKER);
  assert_line(p, 0, "node tcg: unikernel amd64 needs emulation (no KVM) but emulation is forbidden");
  assert_line(p, 1, "node arm: unikernel amd64 needs emulation (no KVM) but emulation is forbidden");

  g_autoptr(oakuk_microservice) allow = svc(UK_AMD64 ",\"emulation\":\"allow\"", 64, 1);
  g_autoptr(oakuk_placement) q = pick(allow, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(q), ==, "tcg");
  g_assert_cmpint(oakuk_placement_accel(q), ==, OAKUK_ACCEL_TCG);
  g_assert_cmpstr(oakuk_placement_arch(q), ==, "amd64");
  assert_line(q, 0, "node tcg: chosen (unikernel amd64 via tcg; most-free: 8192 MB, 8 vcpus free, cpu 1.0%)");
  assert_line(
      q, 1,
      "node arm: qualified, not chosen (rank 2; unikernel amd64 via tcg; 4096 MB, 4 vcpus free, cpu 1.0%)");
  nodes_clear(&ns);
}

static void test_kvm_beats_tcg(void) {
  g_autoptr(oakuk_microservice) ms = svc(UK_MULTI ",\"emulation\":\"allow\"", 256, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("big-tcg", "amd64", 32, 65536, 0.0, UK_ONLY, "tcg", "\"arm64\""));
  nodes_add(&ns, node("small-kvm", "arm64", 1, 512, 90.0, UK_ONLY, "kvm", NULL));
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "small-kvm");
  g_assert_cmpint(oakuk_placement_accel(p), ==, OAKUK_ACCEL_KVM);
  g_assert_cmpstr(oakuk_placement_arch(p), ==, "arm64");
  g_assert_cmpstr(oakuk_placement_code(p), ==, "http://k/arm64.tar.gz");
  assert_line(p, 0,
              "node big-tcg: qualified, not chosen (rank 2; unikernel amd64 via tcg; 65536 MB, 32 vcpus "
              "free, cpu 0.0%)");
  /* Best-fit too: KVM first, whatever the policy. */
  oakuk_sched_options o = OAKUK_SCHED_OPTIONS_INIT;
  o.policy = OAKUK_SCHED_BEST_FIT;
  nodes_add(&ns, node("tiny-tcg", "amd64", 1, 300, 0.0, UK_ONLY, "tcg", NULL));
  g_autoptr(oakuk_placement) q = pick(ms, &ns, NULL, NULL, &o);
  g_assert_cmpstr(oakuk_placement_target(q), ==, "small-kvm");
  nodes_clear(&ns);
}

static void test_multiarch_code(void) {
  g_autoptr(oakuk_microservice) ms =
      svc(UK_MULTI ",\"code_sha256\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,"
                   "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"",
          64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("arm", "arm64", 2, 1024, 1.0, UK_ONLY, "kvm", NULL));
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_code(p), ==, "http://k/arm64.tar.gz");
  g_assert_cmpstr(oakuk_placement_code_sha256(p), ==,
                  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
  nodes_clear(&ns);
}

/* ---- variants in order of preference ---- */

#define UK_OR_CTR                                                                                            \
  "\"virtualization\":[\"unikernel\",\"container\"],\"arch\":[\"amd64\"],"                                   \
  "\"code\":{\"unikernel\":\"http://k/amd64.tar.gz\",\"container\":\"docker.io/library/nginx:1\"}"

static void test_variants_unikernel_first(void) {
  g_autoptr(oakuk_microservice) ms = svc(UK_OR_CTR, 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("ctr", "amd64", 16, 16384, 1.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("kvm", "amd64", 2, 1024, 1.0, UK_ONLY, "kvm", NULL));
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "kvm");
  g_assert_cmpint(oakuk_placement_virt(p), ==, OAKUK_VIRT_UNIKERNEL);
  g_assert_cmpstr(oakuk_placement_code(p), ==, "http://k/amd64.tar.gz");
  assert_line(p, 0,
              "node ctr: qualified, not chosen (rank 2; container amd64; 16384 MB, 16 vcpus free, cpu 1.0%)");
  nodes_clear(&ns);
}

static void test_variants_container_over_tcg(void) {
  g_autoptr(oakuk_microservice) ms = svc(UK_OR_CTR ",\"emulation\":\"allow\"", 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("tcg", "amd64", 16, 16384, 1.0, UK_ONLY, "tcg", NULL));
  nodes_add(&ns, node("ctr", "amd64", 2, 1024, 1.0, CTR_ONLY, NULL, NULL));
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "ctr");
  g_assert_cmpint(oakuk_placement_virt(p), ==, OAKUK_VIRT_CONTAINER);
  g_assert_cmpstr(oakuk_placement_code(p), ==, "docker.io/library/nginx:1");
  assert_line(
      p, 0,
      "node tcg: qualified, not chosen (rank 2; unikernel amd64 via tcg; 16384 MB, 16 vcpus free, cpu 1.0%)");
  assert_line(p, 1, "node ctr: chosen (container amd64; most-free: 1024 MB, 2 vcpus free, cpu 1.0%)");

  /* Without a container node, the unikernel runs under TCG. */
  oakuk_node_report_unref(ns.nodes[--ns.n]);
  g_autoptr(oakuk_placement) q = pick(ms, &ns, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(q), ==, "tcg");
  g_assert_cmpint(oakuk_placement_virt(q), ==, OAKUK_VIRT_UNIKERNEL);
  g_assert_cmpint(oakuk_placement_accel(q), ==, OAKUK_ACCEL_TCG);
  nodes_clear(&ns);
}

static void test_variants_reasons_joined(void) {
  g_autoptr(oakuk_microservice) ms = svc(UK_OR_CTR, 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("arm", "arm64", 8, 8192, 1.0, BOTH, "kvm", NULL));
  g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
  assert_line(
      p, 0, "node arm: arch arm64 has no kernel (service has amd64); arch arm64 not in service arch (amd64)");
  oakuk_placement *q = NULL;
  g_autoptr(oakuk_error) e = NULL;
  oakuk_sched_select_node(&q, ms, ns.nodes, ns.n, NULL, NULL, NULL, &e);
  g_assert_cmpstr(oakuk_error_message(e), ==,
                  "NO_QUALIFIED_WORKER_FOUND: no node can run unikernel amd64 or container amd64 (1 "
                  "candidates rejected)");
  oakuk_placement_unref(q);
  nodes_clear(&ns);
}

/* ---- resources and reservations ---- */

static void test_insufficient(void) {
  g_autoptr(oakuk_microservice) ms = svc(CONTAINER, 512, 2);
  g_autoptr(oakuk_reservations) res = oakuk_reservations_new();
  oakuk_reservations_add(res, "other.instance.0", "n1", 1, 0);
  Nodes ns = {0};
  nodes_add(&ns, node("n1", "amd64", 2, 2048, 3.0, CTR_ONLY, NULL, NULL));
  oakuk_placement *p = NULL;
  g_autoptr(oakuk_error) e = NULL;
  g_assert_cmpint(oakuk_sched_select_node(&p, ms, ns.nodes, ns.n, res, "web.instance.0", NULL, &e), ==,
                  OAKUK_ENOCAPACITY);
  g_assert_cmpint(oakuk_placement_status(p), ==, OAKUK_STATUS_NO_WORKER_CAPACITY);
  assert_line(p, 0,
              "node n1: insufficient resources: needs 2 vcpus / 512 MB, free 1 vcpus / 2048 MB (reserved 1 "
              "vcpus / 0 MB)");
  g_assert_cmpstr(oakuk_error_message(e), ==,
                  "NO_WORKER_CAPACITY: no qualified node has 2 vcpus / 512 MB free for container (1 "
                  "candidates rejected)");
  /* A failed selection reserves nothing. */
  int64_t v = -1, m = -1;
  oakuk_reservations_total(res, "n1", &v, &m);
  g_assert_cmpint(v, ==, 1);
  oakuk_placement_unref(p);
  /* Once the other instance shows up in the report (reservation dropped), it fits. */
  g_assert_true(oakuk_reservations_remove(res, "other.instance.0"));
  g_autoptr(oakuk_placement) q = pick(ms, &ns, res, "web.instance.0", NULL);
  g_assert_cmpstr(oakuk_placement_target(q), ==, "n1");
  oakuk_reservations_total(res, "n1", &v, &m);
  g_assert_cmpint(v, ==, 2);
  g_assert_cmpint(m, ==, 512);
  nodes_clear(&ns);
}

static void test_reservations(void) {
  g_autoptr(oakuk_reservations) res = oakuk_reservations_new();
  int64_t v = -1, m = -1;
  oakuk_reservations_total(res, "n1", &v, &m);
  g_assert_cmpint(v, ==, 0);
  g_assert_cmpint(m, ==, 0);
  oakuk_reservations_add(res, "a", "n1", 1, 100);
  oakuk_reservations_add(res, "b", "n1", 2, 200);
  oakuk_reservations_add(res, "c", "n2", 4, 400);
  oakuk_reservations_total(res, "n1", &v, &m);
  g_assert_cmpint(v, ==, 3);
  g_assert_cmpint(m, ==, 300);
  /* Replacing a key moves it. */
  oakuk_reservations_add(res, "b", "n2", 1, 10);
  oakuk_reservations_total(res, "n1", &v, NULL);
  g_assert_cmpint(v, ==, 1);
  oakuk_reservations_total(res, "n2", NULL, &m);
  g_assert_cmpint(m, ==, 410);
  g_assert_true(oakuk_reservations_remove(res, "a"));
  g_assert_false(oakuk_reservations_remove(res, "a"));
  oakuk_reservations_total(res, "n1", &v, &m);
  g_assert_cmpint(v, ==, 0);
  g_assert_cmpint(m, ==, 0);
  oakuk_reservations *r2 = oakuk_reservations_ref(res);
  g_assert_true(r2 == res);
  oakuk_reservations_unref(r2);
  oakuk_reservations_unref(NULL);
}

/* The case: five 1-vcpu services onto nodes with 4 free vcpus must not all land on one. */
static void test_spread_with_reservations(void) {
  g_autoptr(oakuk_microservice) ms = svc(CONTAINER, 128, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("n1", "amd64", 4, 8192, 1.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("n2", "amd64", 4, 4096, 1.0, CTR_ONLY, NULL, NULL));

  /* Without reservations the unchanged reports send every one to n1. */
  for (int i = 0; i < 5; i++) {
    g_autoptr(oakuk_placement) p = pick(ms, &ns, NULL, NULL, NULL);
    g_assert_cmpstr(oakuk_placement_target(p), ==, "n1");
  }

  g_autoptr(oakuk_reservations) res = oakuk_reservations_new();
  int on_n1 = 0, on_n2 = 0;
  for (int i = 0; i < 5; i++) {
    g_autofree char *key = g_strdup_printf("web.instance.%d", i);
    g_autoptr(oakuk_placement) p = pick(ms, &ns, res, key, NULL);
    g_assert_true(oakuk_placement_ok(p));
    if (g_strcmp0(oakuk_placement_target(p), "n1") == 0)
      on_n1++;
    else
      on_n2++;
  }
  g_assert_cmpint(on_n1, ==, 4);
  g_assert_cmpint(on_n2, ==, 1);
  int64_t v = 0, m = 0;
  oakuk_reservations_total(res, "n1", &v, &m);
  g_assert_cmpint(v, ==, 4);
  g_assert_cmpint(m, ==, 512);

  /* Three more fit on n2, then both nodes are full. */
  for (int i = 5; i < 8; i++) {
    g_autofree char *key = g_strdup_printf("web.instance.%d", i);
    g_autoptr(oakuk_placement) p = pick(ms, &ns, res, key, NULL);
    g_assert_cmpstr(oakuk_placement_target(p), ==, "n2");
  }
  g_autoptr(oakuk_placement) full = pick(ms, &ns, res, "web.instance.8", NULL);
  g_assert_cmpint(oakuk_placement_status(full), ==, OAKUK_STATUS_NO_WORKER_CAPACITY);
  assert_line(full, 0,
              "node n1: insufficient resources: needs 1 vcpus / 128 MB, free 0 vcpus / 7680 MB (reserved 4 "
              "vcpus / 512 MB)");
  nodes_clear(&ns);
}

static void test_no_nodes(void) {
  g_autoptr(oakuk_microservice) ms = svc(CONTAINER, 64, 1);
  oakuk_placement *p = NULL;
  g_autoptr(oakuk_error) e = NULL;
  g_assert_cmpint(oakuk_sched_select_node(&p, ms, NULL, 0, NULL, NULL, NULL, &e), ==, OAKUK_ENOCAPACITY);
  g_assert_cmpuint(oakuk_placement_explanation_count(p), ==, 0);
  g_autofree char *all = oakuk_placement_explain(p);
  g_assert_cmpstr(all, ==, "");
  g_assert_cmpstr(oakuk_error_message(e), ==,
                  "NO_QUALIFIED_WORKER_FOUND: no node can run container (0 candidates rejected)");
  oakuk_placement_unref(p);
}

/* The placement keeps what it explains alive after the caller drops its references. */
static void test_placement_outlives_inputs(void) {
  oakuk_microservice *ms = svc(UK_AMD64, 64, 1);
  Nodes ns = {0};
  nodes_add(&ns, node("n1", "amd64", 2, 1024, 1.0, BOTH, "kvm", NULL));
  nodes_add(&ns, node("n2", "arm64", 2, 1024, 1.0, BOTH, "kvm", NULL));
  oakuk_placement *p = pick(ms, &ns, NULL, NULL, NULL);
  oakuk_microservice_unref(ms);
  nodes_clear(&ns);
  g_assert_cmpstr(oakuk_placement_code(p), ==, "http://k/amd64.tar.gz");
  assert_line(p, 1, "node n2: arch arm64 has no kernel (service has amd64)");
  oakuk_placement *again = oakuk_placement_ref(p);
  oakuk_placement_unref(p);
  g_assert_cmpstr(oakuk_placement_target(again), ==, "n1");
  oakuk_placement_unref(again);
}

/* The explanation describes the decision as it was made, even when asked for after the
 * reservations and report times changed. */
static void test_placement_snapshot(void) {
  g_autoptr(oakuk_microservice) ms = svc(CONTAINER, 100, 1);
  g_autoptr(oakuk_reservations) res = oakuk_reservations_new();
  oakuk_reservations_add(res, "old.instance.0", "n1", 1, 100);
  Nodes ns = {0};
  nodes_add(&ns, node("n1", "amd64", 2, 1024, 1.0, CTR_ONLY, NULL, NULL));
  nodes_add(&ns, node("n2", "amd64", 2, 512, 1.0, CTR_ONLY, NULL, NULL));
  oakuk_node_report_set_received_at_ms(ns.nodes[1], 1000);
  oakuk_sched_options o = OAKUK_SCHED_OPTIONS_INIT;
  o.now_ms = 20000;
  g_autoptr(oakuk_placement) p = pick(ms, &ns, res, "web.instance.0", &o);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "n1");
  oakuk_reservations_remove(res, "old.instance.0");
  oakuk_reservations_remove(res, "web.instance.0");
  oakuk_node_report_set_received_at_ms(ns.nodes[1], 19000);
  assert_line(p, 0, "node n1: chosen (container amd64; most-free: 924 MB, 1 vcpus free, cpu 1.0%)");
  assert_line(p, 1, "node n2: inactive (last report 19.0 s ago, timeout 10.0 s)");
  nodes_clear(&ns);
}

/* ---- cluster selection ---- */

static oakuk_cluster_aggregate *cluster(const char *id, const char *name, const char *json) {
  oakuk_error *e = NULL;
  oakuk_cluster_aggregate *agg = oakuk_cluster_aggregate_from_json(json, (size_t)-1, &e);
  if (e)
    g_error("aggregate %s: %s", json, oakuk_error_message(e));
  oakuk_cluster_aggregate_set_identity(agg, id, name);
  return agg;
}

#define AGG_X86                                                                                              \
  "{\"cpu_percent\":10.0,\"memory_percent\":20.0,\"cpu_cores\":16,\"cumulative_memory_in_mb\":16000,"        \
  "\"number_of_nodes\":2,\"active_nodes\":2,\"virtualization\":[\"container\",\"unikernel\"],\"arch\":["     \
  "\"amd64\"],"                                                                                              \
  "\"aggregation_per_architecture\":{\"amd64\":{\"cpu_percent\":10.0,\"cpu_cores\":8,\"memory\":20.0,"       \
  "\"memory_in_mb\":8000,\"accel\":\"kvm\"}},\"jobs\":[]}"
#define AGG_ARM                                                                                              \
  "{\"cpu_percent\":30.0,\"memory_percent\":50.0,\"cpu_cores\":4,\"cumulative_memory_in_mb\":2000,"          \
  "\"number_of_nodes\":1,\"active_nodes\":1,\"virtualization\":[\"unikernel\"],\"arch\":[\"arm64\"],"        \
  "\"aggregation_per_architecture\":{\"arm64\":{\"cpu_percent\":30.0,\"cpu_cores\":4,\"memory\":50.0,"       \
  "\"memory_in_mb\":2000,\"accel\":\"kvm\"}},\"jobs\":[]}"
#define AGG_CTR                                                                                              \
  "{\"cpu_percent\":5.0,\"memory_percent\":10.0,\"cpu_cores\":64,\"cumulative_memory_in_mb\":64000,"         \
  "\"number_of_nodes\":4,\"active_nodes\":4,\"virtualization\":[\"docker\"],\"arch\":[\"amd64\",\"arm64\"]," \
  "\"aggregation_per_architecture\":{},\"jobs\":[]}"

typedef struct {
  oakuk_cluster_aggregate *c[8];
  size_t n;
} Clusters;

static void clusters_clear(Clusters *cs) {
  for (size_t i = 0; i < cs->n; i++)
    oakuk_cluster_aggregate_unref(cs->c[i]);
  cs->n = 0;
}

static oakuk_placement *pick_cluster(const oakuk_microservice *ms, const Clusters *cs,
                                     oakuk_reservations *res, const char *key,
                                     const oakuk_sched_options *opts, oakuk_error **e) {
  oakuk_placement *p = NULL;
  int rc = oakuk_sched_select_cluster(&p, ms, cs->c, cs->n, res, key, opts, e);
  g_assert_nonnull(p);
  g_assert_cmpint(rc, ==, oakuk_placement_ok(p) ? 0 : OAKUK_ENOCAPACITY);
  g_assert_cmpint(oakuk_placement_status(p), ==,
                  oakuk_placement_ok(p) ? OAKUK_STATUS_CLUSTER_SCHEDULED : OAKUK_STATUS_NO_ACTIVE_CLUSTER);
  return p;
}

static void test_cluster_per_arch(void) {
  Clusters cs = {{cluster("id-x86", "x86", AGG_X86), cluster("id-arm", "arm", AGG_ARM),
                  cluster("id-ctr", "ctr", AGG_CTR)},
                 3};
  /* An arm64-only unikernel goes to the cluster with an arm64 entry although x86 has more memory. */
  g_autoptr(oakuk_microservice) arm = svc("\"virtualization\":\"unikernel\",\"arch\":[\"arm64\"],"
                                          "\"code\":\"http://k/arm64.tar.gz\"",
                                          256, 1);
  g_autoptr(oakuk_placement) p = pick_cluster(arm, &cs, NULL, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "id-arm");
  g_assert_cmpint(oakuk_placement_index(p), ==, 1);
  g_assert_cmpstr(oakuk_placement_arch(p), ==, "arm64");
  g_assert_cmpint(oakuk_placement_accel(p), ==, OAKUK_ACCEL_KVM);
  assert_line(p, 0, "cluster x86: arch amd64 has no kernel (service has arm64)");
  assert_line(p, 1,
              "cluster arm: chosen (unikernel arm64 via kvm; most-free: 2000 MB, 4 vcpus free, cpu 30.0%)");
  assert_line(p, 2, "cluster ctr: does not offer unikernel");

  /* With both kernels, the x86 cluster's larger amd64 entry wins. */
  g_autoptr(oakuk_microservice) multi = svc(UK_MULTI, 256, 1);
  g_autoptr(oakuk_placement) q = pick_cluster(multi, &cs, NULL, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(q), ==, "id-x86");
  g_assert_cmpstr(oakuk_placement_code(q), ==, "http://k/amd64.tar.gz");
  assert_line(q, 1,
              "cluster arm: qualified, not chosen (rank 2; unikernel arm64 via kvm; 2000 MB, 4 vcpus free, "
              "cpu 30.0%)");

  /* A container goes by the whole cluster: "docker" counts as container. */
  g_autoptr(oakuk_microservice) ctr = svc(CONTAINER ",\"arch\":[\"arm64\"]", 256, 1);
  g_autoptr(oakuk_placement) r = pick_cluster(ctr, &cs, NULL, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(r), ==, "id-ctr");
  g_assert_cmpstr(oakuk_placement_arch(r), ==, "arm64");
  g_assert_cmpint(oakuk_placement_virt(r), ==, OAKUK_VIRT_CONTAINER);
  assert_line(r, 0, "cluster x86: arch amd64 not in service arch (arm64)");
  assert_line(r, 1, "cluster arm: does not offer container");
  clusters_clear(&cs);
}

static void test_cluster_emulation(void) {
  Clusters cs = {
      {cluster("id-tcg", "tcg",
               "{\"cpu_percent\":1.0,\"memory_percent\":1.0,\"cpu_cores\":8,\"cumulative_memory_in_mb\":"
               "8000,\"number_of_nodes\":1,\"active_nodes\":1,\"virtualization\":[\"unikernel\"],\"arch\":["
               "\"amd64\"],"
               "\"aggregation_per_architecture\":{\"amd64\":{\"cpu_percent\":1.0,\"cpu_cores\":8,"
               "\"memory\":1.0,\"memory_in_mb\":8000,\"accel\":\"tcg\"}}}")},
      1};
  g_autoptr(oakuk_microservice) forbid = svc(UK_AMD64, 64, 1);
  g_autoptr(oakuk_error) e = NULL;
  g_autoptr(oakuk_placement) p = pick_cluster(forbid, &cs, NULL, NULL, NULL, &e);
  g_assert_false(oakuk_placement_ok(p));
  assert_line(p, 0, "cluster tcg: unikernel amd64 needs emulation (no KVM) but emulation is forbidden");
  g_assert_cmpstr(oakuk_error_message(e), ==,
                  "NoActiveClusterWithCapacity: no cluster can run unikernel amd64 (1 candidates rejected)");
  g_autoptr(oakuk_microservice) allow = svc(UK_AMD64 ",\"emulation\":\"allow\"", 64, 1);
  g_autoptr(oakuk_placement) q = pick_cluster(allow, &cs, NULL, NULL, NULL, NULL);
  g_assert_cmpint(oakuk_placement_accel(q), ==, OAKUK_ACCEL_TCG);
  clusters_clear(&cs);
}

static void test_cluster_constraints(void) {
  Clusters cs = {{cluster("id-a", "a", AGG_X86), cluster("id-b", "b", AGG_CTR)}, 2};
  g_autoptr(oakuk_microservice) only_a =
      svc(CONTAINER ",\"constraints\":[{\"type\":\"clusters\",\"allowed\":[\"a\"]}]", 64, 1);
  g_autoptr(oakuk_placement) p = pick_cluster(only_a, &cs, NULL, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "id-a");
  assert_line(p, 1, "cluster b: excluded by clusters constraint (allowed: a)");

  /* direct: the cluster part (by id here); the node part is for the cluster's own scheduler. */
  g_autoptr(oakuk_microservice) direct =
      svc(CONTAINER ",\"constraints\":[{\"type\":\"direct\",\"cluster\":\"id-a\",\"node\":\"x1\"}]", 64, 1);
  g_autoptr(oakuk_placement) q = pick_cluster(direct, &cs, NULL, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(q), ==, "id-a");
  assert_line(q, 1, "cluster b: excluded by direct constraint (allowed cluster: id-a)");

  /* Without constraints the bigger container cluster wins. */
  g_autoptr(oakuk_microservice) free_ms = svc(CONTAINER, 64, 1);
  g_autoptr(oakuk_placement) r = pick_cluster(free_ms, &cs, NULL, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(r), ==, "id-b");
  clusters_clear(&cs);
}

/* Root level: a cluster whose active nodes report no GPUs (its aggregate says 0, or nothing: an
 * older cluster) does not get a service asking for them. */
static void test_cluster_accelerators(void) {
  Clusters cs = {{cluster("id-a", "a", AGG_CTR),
                  cluster("id-g", "g",
                          "{\"cpu_cores\":2,\"cumulative_memory_in_mb\":1000,\"number_of_nodes\":1,"
                          "\"gpus\":2,\"virtualization\":[\"container\"],\"arch\":[\"amd64\"]}")},
                 2};
  g_autoptr(oakuk_microservice) gpu = svc(CONTAINER ",\"vgpus\":1", 64, 1);
  g_autoptr(oakuk_placement) p = pick_cluster(gpu, &cs, NULL, NULL, NULL, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "id-g");
  assert_line(p, 0, "cluster a: its active nodes report 0 GPUs, the service asks for 1 (vgpus)");
  g_autoptr(oakuk_microservice) three = svc(CONTAINER ",\"vgpus\":3", 64, 1);
  g_autoptr(oakuk_error) e = NULL;
  g_autoptr(oakuk_placement) q = pick_cluster(three, &cs, NULL, NULL, NULL, &e);
  g_assert_false(oakuk_placement_ok(q));
  assert_line(q, 1, "cluster g: its active nodes report 2 GPUs, the service asks for 3 (vgpus)");
  g_assert_nonnull(
      strstr(oakuk_error_message(e), "no cluster reports the 3 GPUs the service asks for (vgpus)"));
  clusters_clear(&cs);
}

static void test_cluster_inactive_and_reservations(void) {
  Clusters cs = {{cluster("id-a", "a", AGG_X86), cluster("id-b", "b", AGG_X86)}, 2};
  oakuk_cluster_aggregate_set_received_at_ms(cs.c[0], 1000);
  oakuk_cluster_aggregate_set_received_at_ms(cs.c[1], 50000);
  oakuk_sched_options o = OAKUK_SCHED_OPTIONS_INIT;
  o.now_ms = 51000;
  o.timeout_ms = 15000;
  g_autoptr(oakuk_microservice) ms = svc(UK_AMD64, 3000, 1);
  g_autoptr(oakuk_reservations) res = oakuk_reservations_new();
  g_autoptr(oakuk_placement) p = pick_cluster(ms, &cs, res, "i0", &o, NULL);
  g_assert_cmpstr(oakuk_placement_target(p), ==, "id-b");
  assert_line(p, 0, "cluster a: inactive (last report 50.0 s ago, timeout 15.0 s)");
  /* Reservations come off the per-arch entry: 8000 MB holds two 3000 MB unikernels, not three. */
  g_autoptr(oakuk_placement) q = pick_cluster(ms, &cs, res, "i1", &o, NULL);
  g_assert_true(oakuk_placement_ok(q));
  g_autoptr(oakuk_error) e = NULL;
  g_autoptr(oakuk_placement) r = pick_cluster(ms, &cs, res, "i2", &o, &e);
  g_assert_false(oakuk_placement_ok(r));
  assert_line(r, 1,
              "cluster b: insufficient resources: needs 1 vcpus / 3000 MB, free 6 vcpus / 2000 MB "
              "(reserved 2 vcpus / 6000 MB)");
  clusters_clear(&cs);
}

/* Reads applications[0].microservices[0] of a thesis SLA, optionally overriding memory. */
static oakuk_microservice *thesis_service(const char *file, int memory) {
  g_autofree char *path = g_build_filename(g_getenv("OAKUK_FIXTURES"), "thesis", file, NULL);
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) err = NULL;
  g_assert_true(json_parser_load_from_file(parser, path, &err));
  g_assert_no_error(err);
  JsonObject *root = json_node_get_object(json_parser_get_root(parser));
  JsonObject *app = json_array_get_object_element(json_object_get_array_member(root, "applications"), 0);
  JsonObject *svc_obj = json_array_get_object_element(json_object_get_array_member(app, "microservices"), 0);
  if (memory > 0)
    json_object_set_int_member(svc_obj, "memory", memory);
  g_autoptr(JsonNode) node_ = json_node_init_object(json_node_alloc(), svc_obj);
  g_autofree char *json = json_to_string(node_, FALSE);
  oakuk_error *e = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse(json, (size_t)-1, &e);
  if (e)
    g_error("%s: %s", path, oakuk_error_message(e));
  return ms;
}

static void test_cluster_thesis(void) {
  g_autofree char *path =
      g_build_filename(g_getenv("OAKUK_FIXTURES"), "thesis", "cluster-aggregate-listing-4.8.json", NULL);
  g_autofree char *text = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(path, &text, &len, NULL));
  Clusters cs = {{cluster("c1", "thesis", text)}, 1};

  g_autoptr(oakuk_microservice) nginx = thesis_service("nginx-unikernel.json", 0);
  g_assert_cmpint(oakuk_microservice_memory_mb(nginx), ==, 1000);
  g_autoptr(oakuk_placement) p = pick_cluster(nginx, &cs, NULL, NULL, NULL, NULL);
  g_assert_true(oakuk_placement_ok(p));
  g_assert_cmpstr(oakuk_placement_target(p), ==, "c1");
  g_assert_cmpint(oakuk_placement_virt(p), ==, OAKUK_VIRT_UNIKERNEL);
  g_assert_cmpstr(oakuk_placement_arch(p), ==, "amd64");
  g_assert_cmpstr(oakuk_placement_code(p), ==, "http://192.168.1.173:8001/nginxx86.tar.gz");
  /* Listing 4.8's entry carries no accel: treated as KVM, as Oakestra does. */
  g_assert_cmpint(oakuk_placement_accel(p), ==, OAKUK_ACCEL_KVM);
  assert_line(p, 0,
              "cluster thesis: chosen (unikernel amd64 via kvm (assumed); most-free: 7627 MB, 12 vcpus free, "
              "cpu 0.9%)");

  g_autoptr(oakuk_microservice) big = thesis_service("nginx-unikernel.json", 8000);
  g_autoptr(oakuk_error) e = NULL;
  g_autoptr(oakuk_placement) q = pick_cluster(big, &cs, NULL, NULL, NULL, &e);
  g_assert_false(oakuk_placement_ok(q));
  assert_line(q, 0,
              "cluster thesis: insufficient resources: needs 1 vcpus / 8000 MB, free 12 vcpus / 7627 MB "
              "(reserved 0 vcpus / 0 MB)");
  g_assert_cmpstr(
      oakuk_error_message(e), ==,
      "NoActiveClusterWithCapacity: no qualified cluster has 1 vcpus / 8000 MB free for unikernel amd64 "
      "(1 candidates rejected)");
  clusters_clear(&cs);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/sched/options/init-and-validation", test_options);
  g_test_add_func("/sched/node/most-free", test_most_free);
  g_test_add_func("/sched/node/best-fit", test_best_fit);
  g_test_add_func("/sched/node/tie-break", test_tie_break);
  g_test_add_func("/sched/node/inactive", test_inactive);
  g_test_add_func("/sched/node/direct-constraint", test_direct);
  g_test_add_func("/sched/node/target-node", test_target_node);
  g_test_add_func("/sched/node/arch-constraint", test_arch_constraint);
  g_test_add_func("/sched/node/no-nodes", test_no_nodes);
  g_test_add_func("/sched/container/checks", test_container_checks);
  g_test_add_func("/sched/node/accelerators-refused", test_accelerators_refused);
  g_test_add_func("/sched/unikernel/arch-mismatch", test_unikernel_arch_mismatch);
  g_test_add_func("/sched/unikernel/emulation", test_emulation);
  g_test_add_func("/sched/unikernel/kvm-beats-tcg", test_kvm_beats_tcg);
  g_test_add_func("/sched/unikernel/multiarch-code", test_multiarch_code);
  g_test_add_func("/sched/variants/unikernel-first", test_variants_unikernel_first);
  g_test_add_func("/sched/variants/container-over-tcg", test_variants_container_over_tcg);
  g_test_add_func("/sched/variants/reasons-joined", test_variants_reasons_joined);
  g_test_add_func("/sched/resources/insufficient", test_insufficient);
  g_test_add_func("/sched/resources/spread-with-reservations", test_spread_with_reservations);
  g_test_add_func("/sched/reservations/add-remove-total", test_reservations);
  g_test_add_func("/sched/placement/outlives-inputs", test_placement_outlives_inputs);
  g_test_add_func("/sched/placement/snapshot", test_placement_snapshot);
  g_test_add_func("/sched/cluster/per-arch", test_cluster_per_arch);
  g_test_add_func("/sched/cluster/emulation", test_cluster_emulation);
  g_test_add_func("/sched/cluster/constraints", test_cluster_constraints);
  g_test_add_func("/sched/cluster/accelerators", test_cluster_accelerators);
  g_test_add_func("/sched/cluster/inactive-and-reservations", test_cluster_inactive_and_reservations);
  g_test_add_func("/sched/cluster/thesis-aggregate", test_cluster_thesis);
  return g_test_run();
}
