/* The oakuk test kernel: to QEMU and on its console it looks like a Unikraft x86_64 QEMU image of
 * one version, so the runtime can be tested against that format without downloading one.
 * Built once per imitated version with UKGUEST_VERSION, UKGUEST_CODENAME and UKGUEST_NETDEV_IP
 * (1 where that version configures its address from netdev.ip=, 0 where from netdev.ipv4_*). */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

#define MB_BOOT_MAGIC 0x2BADB002u
#define MB_INFO_CMDLINE (1u << 2)

struct mb_info {
  u32 flags, mem_lower, mem_upper, boot_device, cmdline;
};

/* The project tells a Unikraft kernel, and its version, by this string anywhere in the file. */
__attribute__((used, section(".rodata.version"))) static const char version_tag[] =
    "Unikraft " UKGUEST_CODENAME " " UKGUEST_VERSION;

#define COM1 0x3f8
#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
/* SeaBIOS puts the PIIX4 power management block of QEMU's pc machine at 0x600; PM1a_CNT is at +4. */
#define ACPI_PM1A_CNT 0x604
#define ACPI_SLP_EN 0x2000 /* with SLP_TYP 0, which QEMU's PIIX4 takes as S5 (power off) */
#define PVPANIC_PORT 0x505

#define CMDLINE_MAX 2048
#define TOKENS_MAX 128

static inline void outb(u16 port, u8 v) {
  __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outw(u16 port, u16 v) {
  __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port) {
  u8 v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

static __attribute__((noreturn)) void halt_forever(void) {
  for (;;)
    __asm__ volatile("cli; hlt");
}

static void serial_init(void) {
  outb(COM1 + 1, 0x00); /* output is polled: no interrupts */
  outb(COM1 + 3, 0x80); /* divisor latch: 115200 baud */
  outb(COM1 + 0, 0x01);
  outb(COM1 + 1, 0x00);
  outb(COM1 + 3, 0x03); /* 8N1 */
  outb(COM1 + 2, 0xc7);
  outb(COM1 + 4, 0x03);
}

static void putc_raw(char c) {
  while (!(inb(COM1 + 5) & 0x20))
    ;
  outb(COM1, (u8)c);
}

/* A serial console wants CR LF, as Unikraft's own console driver sends. */
static void putch(char c) {
  if (c == '\n')
    putc_raw('\r');
  putc_raw(c);
}

static void put_num(u32 v, u32 base, u32 width, char pad) {
  char buf[12];
  u32 n = 0;
  do {
    buf[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v != 0);
  for (; width > n; width--)
    putch(pad);
  while (n > 0)
    putch(buf[--n]);
}

/* %s, %c, %u and %x, with an optional 0 flag and width: what the messages below use. */
static __attribute__((format(printf, 1, 2))) void kprintf(const char *fmt, ...) {
  __builtin_va_list ap;
  __builtin_va_start(ap, fmt);
  while (*fmt != '\0') {
    if (*fmt != '%') {
      putch(*fmt++);
      continue;
    }
    fmt++;
    char pad = ' ';
    if (*fmt == '0')
      pad = *fmt++;
    u32 width = 0;
    while (*fmt >= '0' && *fmt <= '9')
      width = width * 10 + (u32)(*fmt++ - '0');
    switch (*fmt) {
    case 's':
      for (const char *s = __builtin_va_arg(ap, const char *); *s != '\0'; s++)
        putch(*s);
      break;
    case 'c': putch((char)__builtin_va_arg(ap, int)); break;
    case 'u': put_num(__builtin_va_arg(ap, u32), 10, width, pad); break;
    case 'x': put_num(__builtin_va_arg(ap, u32), 16, width, pad); break;
    case '\0': __builtin_va_end(ap); return;
    default: putch(*fmt); break;
    }
    fmt++;
  }
  __builtin_va_end(ap);
}

static u8 cmos_read(u8 reg) {
  outb(CMOS_INDEX, reg);
  return inb(CMOS_DATA);
}

static u32 from_bcd(u32 v) {
  return (v >> 4) * 10 + (v & 0x0f);
}

/* Seconds into the current hour. Two equal reads outside an update cycle are a consistent pair. */
static u32 rtc_now(void) {
  u32 s, m;
  for (;;) {
    while (cmos_read(0x0a) & 0x80)
      __asm__ volatile("pause");
    s = cmos_read(0x00);
    m = cmos_read(0x02);
    if (s == cmos_read(0x00) && m == cmos_read(0x02))
      break;
  }
  if (!(cmos_read(0x0b) & 0x04)) {
    s = from_bcd(s);
    m = from_bcd(m);
  }
  return m * 60 + s;
}

/* The first tick after the call only finds a second boundary, so one more is waited for: the
 * sleep then lasts at least secs seconds. */
static void rtc_sleep(u32 secs) {
  u32 last = rtc_now();
  for (u32 ticks = 0; secs > 0 && ticks < secs + 1;) {
    __asm__ volatile("pause");
    u32 now = rtc_now();
    if (now != last) {
      ticks++;
      last = now;
    }
  }
}

static u32 boot_time;

static u32 uptime(void) {
  return (rtc_now() + 3600 - boot_time) % 3600;
}

static __attribute__((noreturn)) void power_off(void) {
  kprintf("ukguest: powering off\n");
  outw(ACPI_PM1A_CNT, ACPI_SLP_EN);
  halt_forever();
}

static __attribute__((noreturn)) void crash(void) {
  u32 t = uptime();
  kprintf("[%5u.000000] CRIT: [libkvmplat] <traps.c @  120> Unhandled Trap 14 (page fault), "
          "error code=0x0\n",
          t);
  kprintf("[%5u.000000] CRIT: [libkvmplat] <traps.c @  121> ukguest: crash requested on the command "
          "line\n",
          t);
  kprintf("[%5u.000000] CRIT: [libkvmplat] <traps.c @  122> Crashing\n", t);
  outb(PVPANIC_PORT, 1);
  power_off();
}

/* An empty IDT turns the breakpoint into a triple fault: the CPU resets, and QEMU with -no-reboot
 * reports a guest reset and exits. */
static __attribute__((noreturn)) void reset(void) {
  static const struct __attribute__((packed)) {
    u16 limit;
    u32 base;
  } empty_idt = {0, 0};
  kprintf("ukguest: resetting\n");
  __asm__ volatile("lidt %0; int3" : : "m"(empty_idt));
  halt_forever();
}

static u32 str_len(const char *s) {
  u32 n = 0;
  while (s[n] != '\0')
    n++;
  return n;
}

static int str_eq(const char *a, const char *b) {
  while (*a != '\0' && *a == *b)
    a++, b++;
  return *a == *b;
}

/* The rest of s after prefix, or 0 when s does not start with it. */
static char *after(char *s, const char *prefix) {
  while (*prefix != '\0')
    if (*s++ != *prefix++)
      return 0;
  return s;
}

/* Length of the run of s before any character of stops. */
static u32 span_until(const char *s, const char *stops) {
  u32 n = 0;
  for (; s[n] != '\0'; n++)
    for (const char *t = stops; *t != '\0'; t++)
      if (s[n] == *t)
        return n;
  return n;
}

/* A decimal number of at most 4 digits and value <= max, the whole of s[0..len). */
static int parse_uint(const char *s, u32 len, u32 max, u32 *out) {
  u32 v = 0;
  if (len == 0 || len > 4)
    return 0;
  for (u32 i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return 0;
    v = v * 10 + (u32)(s[i] - '0');
  }
  if (v > max)
    return 0;
  *out = v;
  return 1;
}

static int parse_quad(const char *s, u32 len, u32 *out) {
  u32 ip = 0, start = 0, parts = 0, part;
  for (u32 i = 0; i <= len; i++) {
    if (i < len && s[i] != '.')
      continue;
    if (parts == 4 || i - start > 3 || !parse_uint(s + start, i - start, 255, &part))
      return 0;
    ip = ip << 8 | part;
    parts++;
    start = i + 1;
  }
  if (parts != 4)
    return 0;
  *out = ip;
  return 1;
}

static const char *quad_str(u32 ip, char buf[16]) {
  char *p = buf;
  for (int shift = 24; shift >= 0; shift -= 8) {
    u32 v = (ip >> shift) & 0xff;
    if (v >= 100)
      *p++ = (char)('0' + v / 100);
    if (v >= 10)
      *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    *p++ = shift > 0 ? '.' : '\0';
  }
  return buf;
}

struct params {
  char *ip, *ipv4_addr, *ipv4_gw, *ipv4_mask; /* whole tokens, or 0 */
  char *env[TOKENS_MAX];
  u32 nenv;
};

struct ipconf {
  u32 addr, mask, gw;
};

static void parse_params(char **tok, u32 n, struct params *p) {
  int in_env = 0;
  for (u32 i = 0; i < n; i++) {
    char *t = tok[i], *v;
    if (!in_env && (v = after(t, "env.vars=[")) != 0) {
      in_env = 1;
      t = v;
    }
    if (in_env) {
      u32 len = str_len(t);
      if (len > 0 && t[len - 1] == ']') {
        t[len - 1] = '\0';
        in_env = 0;
      }
      if (*t != '\0')
        p->env[p->nenv++] = t;
    } else if (after(t, "netdev.ip=") != 0) {
      p->ip = t;
    } else if (after(t, "netdev.ipv4_addr=") != 0) {
      p->ipv4_addr = t;
    } else if (after(t, "netdev.ipv4_gw_addr=") != 0) {
      p->ipv4_gw = t;
    } else if (after(t, "netdev.ipv4_subnet_mask=") != 0) {
      p->ipv4_mask = t;
    }
  }
}

/* The value of a "name=value" token, or "(none)" for no token. */
static const char *value_or_none(const char *token) {
  return token != 0 ? token + span_until(token, "=") + 1 : "(none)";
}

/* netdev.ip=ADDR[/PREFIX][:GW[:...]], as Unikraft >= 0.16.1 takes it; the DNS, hostname and domain
 * fields after the gateway are not needed here. Without a prefix the mask is /24, the old
 * convention's default. */
static int parse_netdev_ip(const char *token, struct ipconf *c) {
  const char *v = value_or_none(token);
  u32 n = span_until(v, "/:"), prefix = 24;
  if (!parse_quad(v, n, &c->addr))
    return 0;
  v += n;
  if (*v == '/') {
    n = span_until(++v, ":");
    if (!parse_uint(v, n, 32, &prefix))
      return 0;
    v += n;
  }
  c->mask = prefix == 0 ? 0 : ~0u << (32 - prefix);
  c->gw = 0;
  if (*v == ':') {
    n = span_until(++v, ":");
    if (n > 0 && !parse_quad(v, n, &c->gw))
      return 0;
  }
  return 1;
}

static int parse_quad_param(const char *token, u32 *out) {
  const char *v = value_or_none(token);
  return parse_quad(v, str_len(v), out);
}

/* Whether the address was configured; a malformed value is reported and configures nothing. */
static int configure(struct params *p, struct ipconf *c) {
  char *bad = 0;
  if (UKGUEST_NETDEV_IP) {
    if (p->ip == 0)
      return 0;
    if (!parse_netdev_ip(p->ip, c))
      bad = p->ip;
  } else {
    if (p->ipv4_addr == 0)
      return 0;
    c->mask = 0xffffff00;
    c->gw = 0;
    if (!parse_quad_param(p->ipv4_addr, &c->addr))
      bad = p->ipv4_addr;
    else if (p->ipv4_mask != 0 && !parse_quad_param(p->ipv4_mask, &c->mask))
      bad = p->ipv4_mask;
    else if (p->ipv4_gw != 0 && !parse_quad_param(p->ipv4_gw, &c->gw))
      bad = p->ipv4_gw;
  }
  if (bad != 0)
    kprintf("ukguest: bad netdev parameter %s\n", bad);
  return bad == 0;
}

static u32 split(char *s, char **tok, u32 max) {
  u32 n = 0;
  while (*s != '\0' && n < max) {
    while (*s == ' ' || *s == '\t')
      *s++ = '\0';
    if (*s == '\0')
      break;
    tok[n++] = s;
    while (*s != '\0' && *s != ' ' && *s != '\t')
      s++;
  }
  return n;
}

static void banner(void) {
  /* Consoles start dirty: reset the terminal, stop line wrapping, clear it, plain attributes. */
  kprintf("\x1b"
          "c\x1b[?7l\x1b[2J\x1b[0m");
  putc_raw('\0');
  putc_raw('\0');
  /* The first newline ends whatever line the firmware left unfinished ("Booting from ROM.."). */
  kprintf("\n\n");
  kprintf("   .-----------------------------.\n");
  kprintf("   |  o a k u k   test  kernel   |\n");
  kprintf("   '-----------------------------'\n");
  kprintf("                  %s %s~oakuktest\n", UKGUEST_CODENAME, UKGUEST_VERSION);
}

static __attribute__((noreturn)) void act(char **args, u32 n) {
  u32 secs;
  for (u32 i = 0; i < n; i++) {
    const char *s = after(args[i], "sleep=");
    if (str_eq(args[i], "exit")) {
      power_off();
    } else if (str_eq(args[i], "stay")) {
      kprintf("ukguest: staying up\n");
      halt_forever();
    } else if (str_eq(args[i], "ticks")) {
      /* A guest whose state shows on its console: a counter and the RTC's time, every second
       * (a snapshot restore must carry on from both). */
      kprintf("ukguest: ticking\n");
      for (u32 n = 1, t = rtc_now();; n++) {
        for (u32 last = t; t == last; t = rtc_now())
          __asm__ volatile("pause");
        kprintf("ukguest: tick %u at %u:%u%u\n", n, t / 60, (t % 60) / 10, t % 10);
      }
    } else if (str_eq(args[i], "crash")) {
      crash();
    } else if (str_eq(args[i], "reset")) {
      reset();
    } else if (s != 0 && parse_uint(s, str_len(s), 3600, &secs)) {
      kprintf("ukguest: sleeping %u s\n", secs);
      rtc_sleep(secs);
      power_off();
    }
  }
  power_off();
}

static char cmdline[CMDLINE_MAX];
static char *tokens[TOKENS_MAX];
static struct params params;

__attribute__((noreturn)) void ukguest_main(u32 magic, const struct mb_info *mbi);

__attribute__((noreturn)) void ukguest_main(u32 magic, const struct mb_info *mbi) {
  serial_init();
  boot_time = rtc_now();
  banner();
  if (magic != MB_BOOT_MAGIC) {
    kprintf("ukguest: not started by a multiboot loader (EAX 0x%x)\n", magic);
    power_off();
  }
  if (mbi->flags & MB_INFO_CMDLINE) {
    const char *src = (const char *)(unsigned long)mbi->cmdline;
    for (u32 i = 0; i < CMDLINE_MAX - 1 && src[i] != '\0'; i++)
      cmdline[i] = src[i];
  }
  kprintf("ukguest: cmdline: %s\n", cmdline);

  /* QEMU's multiboot loader puts the kernel's path first: it is argv[0], neither parameter nor
   * argument. Without "--", Unikraft parses no parameters and passes every token on. */
  u32 n = split(cmdline, tokens, TOKENS_MAX), dashes = 0;
  for (u32 i = 1; i < n && dashes == 0; i++)
    if (str_eq(tokens[i], "--"))
      dashes = i;
  u32 first = dashes ? dashes + 1 : 1;
  char **args = tokens + first;
  u32 nargs = n > first ? n - first : 0;
  if (dashes)
    parse_params(tokens + 1, dashes - 1, &params);

  kprintf("ukguest: netdev.ip=%s\n", value_or_none(params.ip));
  kprintf("ukguest: netdev.ipv4_addr=%s netdev.ipv4_gw_addr=%s netdev.ipv4_subnet_mask=%s\n",
          value_or_none(params.ipv4_addr), value_or_none(params.ipv4_gw), value_or_none(params.ipv4_mask));
  for (u32 i = 0; i < params.nenv; i++)
    kprintf("ukguest: env %s\n", params.env[i]);

  struct ipconf c;
  if (configure(&params, &c)) {
    char a[16], m[16], g[16];
    kprintf("en1: Set IPv4 address %s mask %s gw %s\n", quad_str(c.addr, a), quad_str(c.mask, m),
            quad_str(c.gw, g));
  }

  kprintf("Hello from the oakuk test kernel\n");
  kprintf("ukguest: argv:");
  for (u32 i = 0; i < nargs; i++)
    kprintf(" \"%s\"", args[i]);
  kprintf("\n");
  act(args, nargs);
}
