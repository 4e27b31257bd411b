/* Unit tests of the unikernel runtime's pure parts: command builder, network parameters,
 * kernel checks, probe, and deploy-time validation (no QEMU is started). */
#include "qemu-private.h"

#include <glib/gstdio.h>
#include <string.h>

typedef struct {
  char *tmp;
  char *x86_kernel;   /* ELF x86_64 with a "Unikraft Telesto 0.15.0" banner */
  char *x86_kernel16; /* ELF x86_64 with a "Unikraft Pan 0.16.1" banner */
  char *arm_kernel;   /* arm64 Image, no banner */
  char *initrd;
} Fixture;

static char *write_kernel(const char *dir, const char *name, const char *head_kind, const char *banner) {
  guint8 buf[4096];
  memset(buf, 0, sizeof buf);
  if (strcmp(head_kind, "multiboot") == 0) {
    /* As Unikraft builds x86 kernels for QEMU: a 32-bit ELF with a multiboot v1 header. */
    memcpy(buf, "\177ELF", 4);
    buf[4] = 1; /* 32-bit */
    buf[5] = 1; /* little endian */
    buf[6] = 1;
    buf[16] = 2; /* ET_EXEC */
    buf[18] = 3; /* EM_386 */
    guint32 mb[3] = {0x1BADB002u, 3, (guint32) - (0x1BADB002u + 3)};
    memcpy(buf + 64, mb, sizeof mb);
  } else if (strcmp(head_kind, "elf-aarch64") == 0) {
    memcpy(buf, "\177ELF", 4);
    buf[4] = 2;
    buf[5] = 1;
    buf[6] = 1;
    buf[16] = 2;
    buf[18] = 183; /* EM_AARCH64 */
  } else if (strcmp(head_kind, "arm64-image") == 0) {
    memcpy(buf + 56, "ARM\x64", 4);
  }
  if (banner)
    memcpy(buf + 2000, banner, strlen(banner));
  char *path = g_build_filename(dir, name, NULL);
  g_assert_true(g_file_set_contents(path, (char *)buf, sizeof buf, NULL));
  return path;
}

static void fixture_setup(Fixture *f, gconstpointer data) {
  f->tmp = g_dir_make_tmp("oakuk-test-qemu-XXXXXX", NULL);
  g_assert_nonnull(f->tmp);
  f->x86_kernel = write_kernel(f->tmp, "kernel-x86", "multiboot", "Unikraft Telesto 0.15.0~abc");
  f->x86_kernel16 = write_kernel(f->tmp, "kernel-x86-16", "multiboot", "Unikraft Pan 0.16.1");
  f->arm_kernel = write_kernel(f->tmp, "kernel-arm64", "arm64-image", NULL);
  f->initrd = g_build_filename(f->tmp, "initrd", NULL);
  g_assert_true(g_file_set_contents(f->initrd, "initrd", -1, NULL));
}

static void rm_tree(const char *path) {
  GDir *d = g_dir_open(path, 0, NULL);
  const char *e;
  while (d && (e = g_dir_read_name(d))) {
    g_autofree char *c = g_build_filename(path, e, NULL);
    if (g_file_test(c, G_FILE_TEST_IS_DIR) && !g_file_test(c, G_FILE_TEST_IS_SYMLINK))
      rm_tree(c);
    else
      g_unlink(c);
  }
  if (d)
    g_dir_close(d);
  g_rmdir(path);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
  rm_tree(f->tmp);
  g_free(f->tmp);
  g_free(f->x86_kernel);
  g_free(f->x86_kernel16);
  g_free(f->arm_kernel);
  g_free(f->initrd);
}

/* The argv joined by '|' (arguments never contain '|' here). */
static char *build(const oakuk_instance_spec *spec, oakuk_error **error) {
  char **argv = NULL;
  size_t argc = 0;
  if (oakuk_qemu_build_argv(&argv, &argc, spec, "/var/lib/oakuk/instances/i1", NULL, error) < 0)
    return NULL;
  g_assert_cmpuint(g_strv_length(argv), ==, argc);
  char *r = g_strjoinv("|", argv);
  oakuk_qemu_argv_free(argv);
  return r;
}

static oakuk_instance_spec *spec_x86(Fixture *f) {
  oakuk_instance_spec *s = oakuk_instance_spec_new("i1");
  oakuk_instance_spec_set_arch(s, "amd64");
  oakuk_instance_spec_set_kernel(s, f->x86_kernel);
  oakuk_instance_spec_set_memory_mb(s, 96);
  oakuk_instance_spec_set_vcpus(s, 2);
  return s;
}

static void test_argv_x86_tcg(Fixture *f, gconstpointer data) {
  oakuk_instance_spec *s = spec_x86(f);
  oakuk_instance_spec_set_accel(s, OAKUK_ACCEL_TCG);
  g_autofree char *got = build(s, NULL);
  g_autofree char *want =
      g_strdup_printf("qemu-system-x86_64|-name|i1|-machine|pc,accel=tcg|-cpu|max|-nodefaults|-no-user-"
                      "config|-nographic|-no-reboot|-sandbox|" OAKUK_QEMU_SANDBOX "|-device|pvpanic|"
                      "-serial|file:/var/lib/oakuk/instances/i1/serial.log|-kernel|%s|-m|96|-smp|2|"
                      "-qmp|unix:/var/lib/oakuk/instances/i1/qmp.sock,server=on,wait=off|-append|--",
                      f->x86_kernel);
  g_assert_cmpstr(got, ==, want);
  oakuk_instance_spec_unref(s);
}

static void test_argv_x86_kvm_net(Fixture *f, gconstpointer data) {
  oakuk_instance_spec *s = spec_x86(f);
  oakuk_instance_spec_set_accel(s, OAKUK_ACCEL_KVM);
  oakuk_instance_spec_set_network(s, "/run/netns/i1", "tap0", "10.18.0.5", 24, "10.18.0.1",
                                  "52:54:00:aa:bb:cc");
  oakuk_instance_spec_add_arg(s, "-c");
  oakuk_instance_spec_add_arg(s, "/nginx/conf/nginx.conf");
  g_autofree char *got = build(s, NULL);
  g_assert_nonnull(strstr(got, "|-machine|pc,accel=kvm|-cpu|host|"));
  g_assert_nonnull(strstr(got, "|-netdev|tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=on|"
                               "-device|virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:cc,romfile=|"));
  /* The kernel says Unikraft 0.15.0: the old parameter names, then "--", then the args. */
  g_assert_true(g_str_has_suffix(got, "|-append|netdev.ipv4_addr=10.18.0.5 netdev.ipv4_gw_addr=10.18.0.1 "
                                      "netdev.ipv4_subnet_mask=255.255.255.0 -- -c /nginx/conf/nginx.conf"));
  g_assert_null(strstr(got, "-fsdev"));
  oakuk_instance_spec_unref(s);
}

static void test_argv_tcg_no_vhost(Fixture *f, gconstpointer data) {
  oakuk_instance_spec *s = spec_x86(f);
  oakuk_instance_spec_set_network(s, "/run/netns/i1", "tap0", "10.18.0.5", 24, "10.18.0.1", NULL);
  g_autofree char *got = build(s, NULL);
  g_assert_nonnull(strstr(
      got,
      "|-netdev|tap,id=n0,ifname=tap0,script=no,downscript=no|-device|virtio-net-pci,netdev=n0,romfile=|"));
  g_assert_null(strstr(got, "vhost"));
  oakuk_instance_spec_unref(s);
}

static void test_argv_arm64_tcg(Fixture *f, gconstpointer data) {
  oakuk_instance_spec *s = oakuk_instance_spec_new("i1");
  oakuk_instance_spec_set_arch(s, "arm64");
  oakuk_instance_spec_set_kernel(s, f->arm_kernel);
  oakuk_instance_spec_set_initrd(s, f->initrd);
  oakuk_instance_spec_set_files_dir(s, f->tmp);
  oakuk_instance_spec_set_flavor(s, "linux");
  oakuk_instance_spec_set_cmdline_extra(s, " console=ttyAMA0 quiet ");
  oakuk_instance_spec_set_network(s, "/run/netns/i1", "tap0", "10.18.1.7", 20, "10.18.0.1",
                                  "52:54:00:00:00:01");
  g_autofree char *got = build(s, NULL);
  g_autofree char *want = g_strdup_printf(
      "qemu-system-aarch64|-name|i1|-machine|virt,accel=tcg|-cpu|cortex-a57|-nodefaults|-no-user-config|"
      "-nographic|-no-reboot|-sandbox|on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol="
      "deny|"
      "-serial|file:/var/lib/oakuk/instances/i1/"
      "serial.log|-kernel|%s|-initrd|%s|-m|64|-smp|1|"
      "-qmp|unix:/var/lib/oakuk/instances/i1/qmp.sock,server=on,wait=off|"
      "-netdev|tap,id=n0,ifname=tap0,script=no,downscript=no|-device|virtio-net-pci,netdev=n0,mac=52:54:00:"
      "00:00:01,romfile=|"
      "-fsdev|local,id=fs0,path=/var/lib/oakuk/instances/i1/files,security_model=none|"
      "-device|virtio-9p-pci,fsdev=fs0,mount_tag=fs0|"
      "-append|console=ttyAMA0 quiet netdev.ip=10.18.1.7/20:10.18.0.1 --",
      f->arm_kernel, f->initrd);
  g_assert_cmpstr(got, ==, want);
  oakuk_instance_spec_unref(s);
}

static gboolean have_program(const char *name) {
  g_autofree char *p = g_find_program_in_path(name);
  return p != NULL;
}

/* The runtime's command: every file a descriptor (QEMU runs as an unprivileged user that may not
 * reach the instance directory), the sandbox, no -runas (the child takes the user's identity
 * before exec: QEMU 7.2's -runas would be killed by elevateprivileges=deny). KVM's path is only
 * checked here: KVM guests hang on the project's machine. */
static char *build_runtime(const oakuk_instance_spec *s) {
  GError *err = NULL;
  GPtrArray *a = oakuk_qemu_build_argv_internal(s, "/var/lib/oakuk/instances/i1",
                                                "/usr/bin/qemu-system-x86_64", TRUE, TRUE, NULL, NULL, &err);
  g_assert_no_error(err);
  char *r = g_strjoinv("|", (char **)a->pdata);
  g_ptr_array_unref(a);
  return r;
}

static void test_argv_runtime_kvm(Fixture *f, gconstpointer data) {
  oakuk_instance_spec *s = spec_x86(f);
  oakuk_instance_spec_set_accel(s, OAKUK_ACCEL_KVM);
  oakuk_instance_spec_set_initrd(s, f->initrd);
  oakuk_instance_spec_set_files_dir(s, f->tmp);
  oakuk_instance_spec_set_network(s, "/run/netns/i1", "tap0", "10.18.0.5", 24, "10.18.0.1",
                                  "52:54:00:aa:bb:cc");
  g_autofree char *got = build_runtime(s);
  const char *want =
      "/usr/bin/"
      "qemu-system-x86_64|-name|i1|-machine|pc,accel=kvm|-cpu|host|-nodefaults|-no-user-config|-nographic|"
      "-no-reboot|-sandbox|on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny|-S|"
      "-device|pvpanic|-add-fd|fd=5,set=1|-serial|file:/dev/fdset/1|-kernel|/proc/self/fd/3|"
      "-initrd|/proc/self/fd/4|-m|96|-smp|2|-chardev|socket,id=qmp,fd=6,server=on,wait=off|"
      "-mon|chardev=qmp,mode=control|-netdev|tap,id=n0,fd=7,vhost=on,vhostfd=8|"
      "-device|virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:cc,romfile=|"
      "-fsdev|local,id=fs0,path=/proc/self/fd/"
      "9,security_model=none|-device|virtio-9p-pci,fsdev=fs0,mount_tag=fs0|"
      "-append|netdev.ipv4_addr=10.18.0.5 netdev.ipv4_gw_addr=10.18.0.1 "
      "netdev.ipv4_subnet_mask=255.255.255.0 --";
  g_assert_cmpstr(got, ==, want);
  /* Nothing names a host path any more, and QEMU is not asked to change its uid. */
  g_assert_null(strstr(got, "/var/lib/oakuk"));
  g_assert_null(strstr(got, f->tmp));
  g_assert_null(strstr(got, "-runas"));
  g_assert_null(strstr(got, "ifname="));
  oakuk_instance_spec_unref(s);
}

static void test_argv_runtime_tcg(Fixture *f, gconstpointer data) {
  oakuk_instance_spec *s = spec_x86(f);
  oakuk_instance_spec_set_accel(s, OAKUK_ACCEL_TCG);
  oakuk_instance_spec_set_network(s, "/run/netns/i1", "tap0", "10.18.0.5", 24, "10.18.0.1", NULL);
  g_autofree char *got = build_runtime(s);
  g_assert_nonnull(strstr(got, "|-machine|pc,accel=tcg|-cpu|max|"));
  g_assert_nonnull(strstr(got, "|-netdev|tap,id=n0,fd=7|-device|virtio-net-pci,netdev=n0,romfile=|"));
  g_assert_null(strstr(got, "vhost"));
  g_assert_null(strstr(got, "-initrd"));
  g_assert_null(strstr(got, "-fsdev"));
  g_assert_nonnull(strstr(got, "|-sandbox|" OAKUK_QEMU_SANDBOX "|"));
  oakuk_instance_spec_unref(s);
}

/* run_as: an unprivileged user that exists; never root; checked when the runtime is made. */
static void test_run_as(Fixture *f, gconstpointer data) {
  OakukQemuUser u;
  GError *err = NULL;
  g_assert_false(oakuk_qemu_user_lookup("oakuk-no-such-user-x", &u, &err));
  g_assert_error(err, OAKUK_ERROR, -OAKUK_EINVAL);
  g_assert_nonnull(strstr(err->message, "run_as: no user \"oakuk-no-such-user-x\""));
  g_clear_error(&err);
  g_assert_false(oakuk_qemu_user_lookup("root", &u, &err));
  g_assert_nonnull(strstr(err->message, "is root"));
  g_clear_error(&err);
  g_assert_false(oakuk_qemu_user_lookup("0", &u, &err));
  g_assert_nonnull(strstr(err->message, "is root"));
  g_clear_error(&err);
  g_assert_true(oakuk_qemu_user_lookup("nobody", &u, &err));
  g_assert_cmpuint(u.uid, !=, 0);
  g_assert_cmpstr(u.name, ==, "nobody");
  g_autofree char *num = g_strdup_printf("%u", (unsigned)u.uid);
  OakukQemuUser by_uid;
  g_assert_true(oakuk_qemu_user_lookup(num, &by_uid, &err));
  g_assert_cmpstr(by_uid.name, ==, "nobody");
  oakuk_qemu_user_clear(&by_uid);
  /* Who may read what: owner, group and other bits, by the user's ids. */
  struct stat st = {.st_uid = 0, .st_gid = 0, .st_mode = S_IFREG | 0600};
  g_assert_false(oakuk_qemu_user_can_read(&u, &st));
  st.st_mode = S_IFREG | 0644;
  g_assert_true(oakuk_qemu_user_can_read(&u, &st));
  st.st_mode = S_IFREG | 0640;
  st.st_gid = u.gid;
  g_assert_true(oakuk_qemu_user_can_read(&u, &st));
  st.st_uid = u.uid;
  st.st_mode = S_IFREG | 0044; /* the owner class decides for the owner */
  g_assert_false(oakuk_qemu_user_can_read(&u, &st));
  oakuk_qemu_user_clear(&u);

  if (!have_program("qemu-system-x86_64")) {
    g_test_skip("needs qemu-system-x86_64 for the runtime part");
    return;
  }
  g_autofree char *state = g_build_filename(f->tmp, "state", NULL);
  oakuk_qemu_options o = OAKUK_QEMU_OPTIONS_INIT;
  g_assert_null(o.run_as);
  o.allow_emulation = true;
  o.run_as = "oakuk-no-such-user-x";
  oakuk_error *oerr = NULL;
  g_assert_null(oakuk_qemu_runtime_new(state, &o, &oerr));
  g_assert_cmpint(oakuk_error_code(oerr), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_path(oerr), ==, "run_as");
  g_assert_nonnull(strstr(oakuk_error_message(oerr), "oakuk-no-such-user-x"));
  g_clear_pointer(&oerr, oakuk_error_free);
  o.run_as = "root";
  g_assert_null(oakuk_qemu_runtime_new(state, &o, &oerr));
  g_assert_nonnull(strstr(oakuk_error_message(oerr), "is root"));
  g_clear_pointer(&oerr, oakuk_error_free);
  /* A kernel the user cannot read is refused at deploy, before QEMU starts. */
  o.run_as = "nobody";
  oakuk_runtime *rt = oakuk_qemu_runtime_new(state, &o, &oerr);
  g_assert_nonnull(rt);
  g_assert_cmpint(g_chmod(f->x86_kernel, 0600), ==, 0);
  oakuk_instance_spec *s = spec_x86(f);
  oakuk_instance_spec_set_accel(s, OAKUK_ACCEL_TCG);
  g_assert_cmpint(oakuk_runtime_deploy(rt, s, &oerr), ==, OAKUK_EPERM);
  g_assert_nonnull(strstr(oakuk_error_message(oerr), "is not readable by user nobody (run_as)"));
  g_clear_pointer(&oerr, oakuk_error_free);
  g_assert_cmpuint(oakuk_runtime_instance_count(rt), ==, 0);
  oakuk_instance_spec_unref(s);
  oakuk_runtime_unref(rt);
}

/* A version-1 options struct is shorter: init fills only its part, the probe reads only that. */
static void test_options_v1(void) {
  struct {
    unsigned int version;
    bool allow_emulation;
    const char *search_path;
    guint8 guard[16];
  } v1;
  memset(&v1, 0x33, sizeof v1);
  g_assert_cmpint(oakuk_qemu_options_init((oakuk_qemu_options *)&v1, 1), ==, 0);
  g_assert_cmpuint(v1.version, ==, 1);
  g_assert_null(v1.search_path);
  for (gsize k = 0; k < sizeof v1.guard; k++)
    g_assert_cmpuint(v1.guard[k], ==, 0x33);
  oakuk_qemu_caps *caps = NULL;
  g_assert_cmpint(oakuk_qemu_probe(&caps, (oakuk_qemu_options *)&v1, NULL), ==, 0);
  oakuk_qemu_caps_unref(caps);
  oakuk_qemu_options o;
  g_assert_cmpint(oakuk_qemu_options_init(&o, 3), ==, OAKUK_EINVAL);
  g_assert_cmpint(oakuk_qemu_options_init(&o, OAKUK_QEMU_OPTIONS_VERSION), ==, 0);
  g_assert_null(o.run_as);
}

static void test_net_unikraft_new(Fixture *f, gconstpointer data) {
  /* Detected from the banner "Unikraft Pan 0.16.1". */
  oakuk_instance_spec *s = spec_x86(f);
  oakuk_instance_spec_set_kernel(s, f->x86_kernel16);
  oakuk_instance_spec_set_network(s, "/run/netns/i1", "tap0", "192.168.1.2", 30, "192.168.1.1", NULL);
  g_autofree char *got = build(s, NULL);
  g_assert_true(g_str_has_suffix(got, "|-append|netdev.ip=192.168.1.2/30:192.168.1.1 --"));
  /* An explicit older version wins over the banner. */
  oakuk_instance_spec_set_flavor(s, "unikraft");
  oakuk_instance_spec_set_version(s, "0.15.0");
  g_autofree char *old = build(s, NULL);
  g_assert_true(g_str_has_suffix(old, "|-append|netdev.ipv4_addr=192.168.1.2 netdev.ipv4_gw_addr=192.168.1.1 "
                                      "netdev.ipv4_subnet_mask=255.255.255.252 --"));
  oakuk_instance_spec_unref(s);
}

static void test_net_params(void) {
  g_autofree char *a = oakuk_qemu_net_params("unikraft", "0.15.0", "10.0.0.2", 24, "10.0.0.1");
  g_assert_cmpstr(
      a, ==, "netdev.ipv4_addr=10.0.0.2 netdev.ipv4_gw_addr=10.0.0.1 netdev.ipv4_subnet_mask=255.255.255.0");
  g_autofree char *b = oakuk_qemu_net_params("unikraft", "0.16.1", "10.0.0.2", 24, "10.0.0.1");
  g_assert_cmpstr(b, ==, "netdev.ip=10.0.0.2/24:10.0.0.1");
  g_autofree char *c = oakuk_qemu_net_params("unikraft", "0.16.0", "10.0.0.2", 16, "10.0.0.1");
  g_assert_cmpstr(
      c, ==, "netdev.ipv4_addr=10.0.0.2 netdev.ipv4_gw_addr=10.0.0.1 netdev.ipv4_subnet_mask=255.255.0.0");
  g_autofree char *d = oakuk_qemu_net_params("linux", "6.1.0", "10.0.0.2", 24, "10.0.0.1");
  g_assert_cmpstr(d, ==, "netdev.ip=10.0.0.2/24:10.0.0.1");
  g_autofree char *e = oakuk_qemu_net_params("unikraft", "1.0.0", "10.0.0.2", 8, NULL);
  g_assert_cmpstr(e, ==, "netdev.ip=10.0.0.2/8");
}

static void test_prefix_mask(void) {
  g_assert_cmpint(oakuk_qemu_mask_to_prefix("255.255.255.0"), ==, 24);
  g_assert_cmpint(oakuk_qemu_mask_to_prefix("255.255.240.0"), ==, 20);
  g_assert_cmpint(oakuk_qemu_mask_to_prefix("255.255.255.255"), ==, 32);
  g_assert_cmpint(oakuk_qemu_mask_to_prefix("0.0.0.0"), ==, 0);
  g_assert_cmpint(oakuk_qemu_mask_to_prefix("255.0.255.0"), ==, -1);
  g_assert_cmpint(oakuk_qemu_mask_to_prefix("255.255.256.0"), ==, -1);
  g_assert_cmpint(oakuk_qemu_mask_to_prefix("255.255.255"), ==, -1);
  for (int p = 0; p <= 32; p++) {
    g_autofree char *m = oakuk_qemu_prefix_to_mask(p);
    g_assert_cmpint(oakuk_qemu_mask_to_prefix(m), ==, p);
  }
  g_autofree char *m30 = oakuk_qemu_prefix_to_mask(30);
  g_assert_cmpstr(m30, ==, "255.255.255.252");
  g_assert_null(oakuk_qemu_prefix_to_mask(33));
  g_assert_null(oakuk_qemu_prefix_to_mask(-1));
}

static void test_version_cmp(void) {
  g_assert_cmpint(oakuk_qemu_version_cmp("0.15.0", "0.16.1"), <, 0);
  g_assert_cmpint(oakuk_qemu_version_cmp("0.16.1", "0.16.1"), ==, 0);
  g_assert_cmpint(oakuk_qemu_version_cmp("0.16.3", "0.16.1"), >, 0);
  g_assert_cmpint(oakuk_qemu_version_cmp("0.9.9", "0.16.1"), <, 0);
  g_assert_cmpint(oakuk_qemu_version_cmp("1", "0.16.1"), >, 0);
}

static void test_dashdash_always(Fixture *f, gconstpointer data) {
  oakuk_instance_spec *s = spec_x86(f);
  oakuk_instance_spec_set_cmdline_extra(s, "console=ttyS0 quiet panic=-1");
  g_autofree char *a = build(s, NULL);
  g_assert_true(g_str_has_suffix(a, "|-append|console=ttyS0 quiet panic=-1 --"));
  oakuk_instance_spec_add_arg(s, "hello");
  oakuk_instance_spec_add_env(s, "GREETING=hi");
  oakuk_instance_spec_set_flavor(s, "linux");
  g_autofree char *b = build(s, NULL);
  g_assert_true(g_str_has_suffix(b, "|-append|console=ttyS0 quiet panic=-1 GREETING=hi -- hello"));
  oakuk_instance_spec_set_flavor(s, "unikraft");
  oakuk_instance_spec_set_version(s, "0.16.3");
  g_autofree char *c = build(s, NULL);
  g_assert_true(
      g_str_has_suffix(c, "|-append|console=ttyS0 quiet panic=-1 env.vars=[ GREETING=hi ] -- hello"));
  oakuk_instance_spec_unref(s);
}

static void expect_einval(oakuk_instance_spec *s, const char *needle) {
  oakuk_error *err = NULL;
  char *r = build(s, &err);
  g_assert_null(r);
  g_assert_nonnull(err);
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EINVAL);
  if (!strstr(oakuk_error_message(err), needle))
    g_error("message \"%s\" lacks \"%s\"", oakuk_error_message(err), needle);
  oakuk_error_free(err);
}

static void test_bad_args(Fixture *f, gconstpointer data) {
  const char *bad[] = {"a\"b", "it's", "back\\slash", "new\nline", "tab\there", "two words", "", "esc\x1b"};
  for (size_t k = 0; k < G_N_ELEMENTS(bad); k++) {
    oakuk_instance_spec *s = spec_x86(f);
    oakuk_instance_spec_add_arg(s, "ok");
    oakuk_instance_spec_add_arg(s, bad[k]);
    expect_einval(s, "cmd[1]");
    oakuk_instance_spec_unref(s);
  }
  oakuk_instance_spec *s = spec_x86(f);
  oakuk_instance_spec_add_env(s, "NOEQUALS");
  expect_einval(s, "environment[0]");
  oakuk_instance_spec_unref(s);
  s = spec_x86(f);
  oakuk_instance_spec_set_cmdline_extra(s, "quiet -- evil");
  expect_einval(s, "cmdline_extra");
  oakuk_instance_spec_unref(s);
  s = spec_x86(f);
  oakuk_instance_spec_set_network(s, "/run/netns/i1", "tap0", "10.0.0.300", 24, "10.0.0.1", NULL);
  expect_einval(s, "guest ip");
  oakuk_instance_spec_set_network(s, "/run/netns/i1", "a-very-long-tap-name", "10.0.0.3", 24, "10.0.0.1",
                                  NULL);
  expect_einval(s, "tap name");
  oakuk_instance_spec_set_network(s, "/run/netns/i1", "tap0", "10.0.0.3", 24, "10.0.0.1",
                                  "52:54:00:zz:00:01");
  expect_einval(s, "mac");
  oakuk_instance_spec_unref(s);
  s = spec_x86(f);
  oakuk_instance_spec_set_flavor(s, "osv");
  expect_einval(s, "flavor");
  oakuk_instance_spec_unref(s);
}

static void test_wrong_arch(Fixture *f, gconstpointer data) {
  oakuk_instance_spec *s = spec_x86(f);
  oakuk_instance_spec_set_kernel(s, f->arm_kernel);
  expect_einval(s, "is built for arm64 but the instance runs amd64 guests");
  g_autofree char *elf_arm = write_kernel(f->tmp, "elf-arm64", "elf-aarch64", NULL);
  oakuk_instance_spec_set_kernel(s, elf_arm);
  expect_einval(s, "arm64");
  oakuk_instance_spec_set_arch(s, "arm64");
  oakuk_instance_spec_set_kernel(s, f->x86_kernel);
  expect_einval(s, "is built for amd64 but the instance runs arm64 guests");
  g_autofree char *junk = write_kernel(f->tmp, "junk", "none", NULL);
  oakuk_instance_spec_set_kernel(s, junk);
  expect_einval(s, junk);
  g_autofree char *missing = g_build_filename(f->tmp, "missing", NULL);
  oakuk_instance_spec_set_kernel(s, missing);
  expect_einval(s, missing);
  oakuk_instance_spec_unref(s);
}

static void test_probe(void) {
  oakuk_qemu_caps *caps = NULL;
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_qemu_probe(&caps, NULL, &err), ==, 0);
  g_assert_null(err);
  g_assert_true(oakuk_arch_is_known(oakuk_qemu_caps_host_arch(caps)));
  g_autofree char *cpuinfo = NULL;
  g_assert_true(g_file_get_contents("/proc/cpuinfo", &cpuinfo, NULL, NULL));
  if (strcmp(oakuk_qemu_caps_host_arch(caps), "amd64") == 0 && !oakuk_qemu_cpuinfo_has_virt(cpuinfo)) {
    /* This project's machine: /dev/kvm exists but the cpu shows no vmx/svm; guests would hang. */
    g_assert_false(oakuk_qemu_caps_kvm(caps));
    g_assert_nonnull(strstr(oakuk_qemu_caps_kvm_reason(caps), "no vmx/svm"));
    g_assert_cmpint(oakuk_qemu_caps_accel(caps), ==, OAKUK_ACCEL_NONE);
    g_autofree char *json = oakuk_qemu_caps_to_json(caps);
    g_assert_null(strstr(json, "\"accel\""));
  }
  if (oakuk_qemu_caps_kvm(caps))
    g_assert_null(oakuk_qemu_caps_kvm_reason(caps));
  g_assert_cmpuint(oakuk_qemu_caps_emulated_arch_count(caps), ==, 0);
  oakuk_qemu_caps_unref(caps);
}

static void test_probe_emulation(void) {
  if (!have_program("qemu-system-x86_64") || !have_program("qemu-system-aarch64")) {
    g_test_skip("needs qemu-system-x86_64 and qemu-system-aarch64");
    return;
  }
  oakuk_qemu_options opts;
  g_assert_cmpint(oakuk_qemu_options_init(&opts, OAKUK_QEMU_OPTIONS_VERSION), ==, 0);
  opts.allow_emulation = true;
  oakuk_qemu_caps *caps = NULL;
  g_assert_cmpint(oakuk_qemu_probe(&caps, &opts, NULL), ==, 0);
  const char *host = oakuk_qemu_caps_host_arch(caps);
  const char *foreign = strcmp(host, "amd64") == 0 ? "arm64" : "amd64";
  g_assert_cmpint(oakuk_qemu_caps_accel_for_arch(caps, foreign), ==, OAKUK_ACCEL_TCG);
  g_assert_cmpint(oakuk_qemu_caps_accel_for_arch(caps, "riscv64"), ==,
                  oakuk_qemu_caps_qemu_path(caps, "riscv64") ? OAKUK_ACCEL_TCG : OAKUK_ACCEL_NONE);
  const char *v = oakuk_qemu_caps_qemu_version(caps, host);
  g_assert_nonnull(v);
  g_assert_true(g_regex_match_simple("^[0-9]+\\.[0-9]+", v, 0, 0));
  g_autofree char *json = oakuk_qemu_caps_to_json(caps);
  g_autofree char *want_accel =
      g_strdup_printf("\"accel\":\"%s\"", oakuk_qemu_caps_kvm(caps) ? "kvm" : "tcg");
  g_assert_nonnull(strstr(json, want_accel));
  g_autofree char *want_ver = g_strdup_printf("\"qemu_version\":\"%s\"", v);
  g_assert_nonnull(strstr(json, want_ver));
  g_autofree char *want_arch = g_strdup_printf("\"%s\"", foreign);
  g_assert_nonnull(strstr(strstr(json, "\"emulated_archs\":["), want_arch));
  g_assert_null(strstr(strstr(json, "\"emulated_archs\":["), host));
  oakuk_qemu_caps_unref(caps);
  /* A search path without QEMU: nothing to run, nothing advertised. */
  opts.search_path = "/nonexistent";
  g_assert_cmpint(oakuk_qemu_probe(&caps, &opts, NULL), ==, 0);
  g_assert_null(oakuk_qemu_caps_qemu_path(caps, host));
  g_assert_cmpint(oakuk_qemu_caps_accel(caps), ==, OAKUK_ACCEL_NONE);
  g_autofree char *none = oakuk_qemu_caps_to_json(caps);
  g_assert_cmpstr(none, ==, "{\"emulated_archs\":[]}");
  oakuk_qemu_caps_unref(caps);
  /* QEMUs for architectures the command builder cannot run are never advertised: a service for
   * them would be placed here and then fail. */
  g_autofree char *dir = g_dir_make_tmp("oakuk-qemu-bins-XXXXXX", NULL);
  const char *bins[] = {"qemu-system-arm", "qemu-system-riscv64", "qemu-system-aarch64",
                        "qemu-system-x86_64"};
  for (size_t k = 0; k < G_N_ELEMENTS(bins); k++) {
    g_autofree char *p = g_build_filename(dir, bins[k], NULL);
    g_assert_true(g_file_set_contents(p, "#!/bin/sh\necho 'QEMU emulator version 7.2.0'\n", -1, NULL));
    g_assert_cmpint(g_chmod(p, 0755), ==, 0);
  }
  opts.search_path = dir;
  g_assert_cmpint(oakuk_qemu_probe(&caps, &opts, NULL), ==, 0);
  g_assert_cmpuint(oakuk_qemu_caps_emulated_arch_count(caps), ==, 1);
  g_assert_cmpstr(oakuk_qemu_caps_emulated_arch(caps, 0), ==, foreign);
  g_assert_cmpint(oakuk_qemu_caps_accel_for_arch(caps, "arm"), ==, OAKUK_ACCEL_NONE);
  g_assert_cmpint(oakuk_qemu_caps_accel_for_arch(caps, "riscv64"), ==, OAKUK_ACCEL_NONE);
  g_assert_null(oakuk_qemu_caps_qemu_path(caps, "arm"));
  g_autofree char *only = oakuk_qemu_caps_to_json(caps);
  g_assert_null(strstr(only, "riscv64"));
  g_assert_null(strstr(only, "\"arm\""));
  oakuk_qemu_caps_unref(caps);
  for (size_t k = 0; k < G_N_ELEMENTS(bins); k++) {
    g_autofree char *p = g_build_filename(dir, bins[k], NULL);
    g_unlink(p);
  }
  g_rmdir(dir);
}

static void test_cpuinfo(void) {
  g_assert_true(oakuk_qemu_cpuinfo_has_virt("processor\t: 0\nflags\t\t: fpu vme vmx sse\n"));
  g_assert_true(oakuk_qemu_cpuinfo_has_virt("flags\t\t: fpu svm\n"));
  g_assert_false(oakuk_qemu_cpuinfo_has_virt("flags\t\t: fpu vmxx svmm hypervisor\nvmx flags\t: ept\n"));
}

static void test_memory_limit(void) {
  g_assert_cmpint(oakuk_qemu_memory_limit_mb(100, OAKUK_ACCEL_KVM), ==, 174);
  g_assert_cmpint(oakuk_qemu_memory_limit_mb(100, OAKUK_ACCEL_TCG), ==, 366);
}

static void test_spec(void) {
  oakuk_instance_spec *s = oakuk_instance_spec_new("a.b.c.d.instance.0");
  g_assert_cmpstr(oakuk_instance_spec_name(s), ==, "a.b.c.d.instance.0");
  g_assert_cmpint(oakuk_instance_spec_virt(s), ==, OAKUK_VIRT_UNIKERNEL);
  g_assert_cmpint(oakuk_instance_spec_memory_mb(s), ==, 64);
  g_assert_cmpint(oakuk_instance_spec_vcpus(s), ==, 1);
  g_assert_null(oakuk_instance_spec_netns_path(s));
  oakuk_instance_spec_set_network(s, "/run/netns/x", "tap0", "10.0.0.2", 24, "10.0.0.1", "52:54:00:00:00:02");
  g_assert_cmpstr(oakuk_instance_spec_tap_name(s), ==, "tap0");
  g_assert_cmpint(oakuk_instance_spec_prefix(s), ==, 24);
  oakuk_instance_spec_add_arg(s, "x");
  g_assert_cmpuint(oakuk_instance_spec_arg_count(s), ==, 1);
  g_assert_cmpstr(oakuk_instance_spec_arg(s, 0), ==, "x");
  g_assert_null(oakuk_instance_spec_arg(s, 1));
  oakuk_instance_spec_set_graceful_stop_s(s, 5);
  g_assert_cmpint(oakuk_instance_spec_graceful_stop_s(s), ==, 5);
  oakuk_instance_spec_unref(s);
}

/* Deploy refuses invalid specs synchronously, before any QEMU starts. */
static void test_runtime_validation(Fixture *f, gconstpointer data) {
  if (!have_program("qemu-system-x86_64")) {
    g_test_skip("needs qemu-system-x86_64");
    return;
  }
  oakuk_qemu_options opts = OAKUK_QEMU_OPTIONS_INIT;
  opts.allow_emulation = true;
  g_autofree char *state = g_build_filename(f->tmp, "state", NULL);
  oakuk_error *err = NULL;
  oakuk_runtime *rt = oakuk_qemu_runtime_new(state, &opts, &err);
  g_assert_nonnull(rt);
  g_assert_cmpint(oakuk_runtime_virt(rt), ==, OAKUK_VIRT_UNIKERNEL);

  oakuk_instance_spec *s = oakuk_instance_spec_new("../escape");
  oakuk_instance_spec_set_kernel(s, f->x86_kernel);
  g_assert_cmpint(oakuk_runtime_deploy(rt, s, &err), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(err), "../escape"));
  g_clear_pointer(&err, oakuk_error_free);
  oakuk_instance_spec_unref(s);

  s = oakuk_instance_spec_new("wrongarch");
  oakuk_instance_spec_set_arch(s, "amd64");
  oakuk_instance_spec_set_kernel(s, f->arm_kernel);
  g_assert_cmpint(oakuk_runtime_deploy(rt, s, &err), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(err), "arm64"));
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpuint(oakuk_runtime_instance_count(rt), ==, 0);
  g_autofree char *idir = g_build_filename(state, "instances", "wrongarch", NULL);
  g_assert_false(g_file_test(idir, G_FILE_TEST_EXISTS));

  oakuk_instance_spec_set_kernel(s, f->x86_kernel);
  oakuk_instance_spec_set_network(s, "/nonexistent/netns", "tap0", "10.0.0.2", 24, "10.0.0.1", NULL);
  g_assert_cmpint(oakuk_runtime_deploy(rt, s, &err), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(err), "/nonexistent/netns"));
  g_clear_pointer(&err, oakuk_error_free);
  oakuk_instance_spec_unref(s);

  oakuk_qemu_caps *caps = NULL;
  g_assert_cmpint(oakuk_qemu_probe(&caps, NULL, NULL), ==, 0);
  if (!oakuk_qemu_caps_kvm(caps)) {
    s = spec_x86(f);
    oakuk_instance_spec_set_accel(s, OAKUK_ACCEL_KVM);
    g_assert_cmpint(oakuk_runtime_deploy(rt, s, &err), ==, OAKUK_EUNSUPPORTED);
    g_assert_nonnull(strstr(oakuk_error_message(err), "kvm"));
    g_clear_pointer(&err, oakuk_error_free);
    oakuk_instance_spec_unref(s);
  }
  oakuk_qemu_caps_unref(caps);

  g_assert_cmpint(oakuk_runtime_undeploy(rt, "nosuch", &err), ==, OAKUK_ENOTFOUND);
  g_assert_nonnull(strstr(oakuk_error_message(err), "nosuch"));
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpint(oakuk_runtime_instance_status(rt, "nosuch"), ==, -1);
  oakuk_runtime_unref(rt);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
#define FT(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  FT("/qemu/argv/x86-tcg", test_argv_x86_tcg);
  FT("/qemu/argv/x86-kvm-net", test_argv_x86_kvm_net);
  FT("/qemu/argv/tcg-no-vhost", test_argv_tcg_no_vhost);
  FT("/qemu/argv/arm64-tcg-initrd-9p", test_argv_arm64_tcg);
  FT("/qemu/argv/unikraft-version-detect", test_net_unikraft_new);
  FT("/qemu/argv/runtime-kvm-fds", test_argv_runtime_kvm);
  FT("/qemu/argv/runtime-tcg-fds", test_argv_runtime_tcg);
  FT("/qemu/runtime/run-as", test_run_as);
  FT("/qemu/argv/dashdash-always", test_dashdash_always);
  FT("/qemu/argv/bad-args", test_bad_args);
  FT("/qemu/argv/wrong-arch", test_wrong_arch);
  FT("/qemu/runtime/validation", test_runtime_validation);
  g_test_add_func("/qemu/net/params", test_net_params);
  g_test_add_func("/qemu/net/prefix-mask", test_prefix_mask);
  g_test_add_func("/qemu/version-cmp", test_version_cmp);
  g_test_add_func("/qemu/probe/kvm", test_probe);
  g_test_add_func("/qemu/probe/emulation", test_probe_emulation);
  g_test_add_func("/qemu/probe/cpuinfo", test_cpuinfo);
  g_test_add_func("/qemu/memory-limit", test_memory_limit);
  g_test_add_func("/qemu/spec", test_spec);
  g_test_add_func("/qemu/options-v1", test_options_v1);
  return g_test_run();
}
