/* engine/http.c — see http.h. */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#define HTTP_HEAD_MAX (64 * 1024)      /* status line and headers */
#define HTTP_BODY_DEFAULT (8u << 20)
#define HTTP_CONNECT_DEFAULT_MS 10000
#define HTTP_HOST_MAX 256
#define HTTP_READ_CHUNK 16384

struct http_url {
  int tls;
  char host[HTTP_HOST_MAX];          /* without [] for IPv6 literals */
  char port[8];
  const char *target;                /* path and query, points into the URL */
};

struct http {
  int fd;                            /* -1: no connection */
  int tls_on;                        /* ssl is set up on fd */
  char origin[2 * HTTP_HOST_MAX + 32];   /* scheme, host, port, proxy of the connection */
  mbedtls_ssl_context ssl;
  mbedtls_ssl_config conf;           /* set up on the first https connection */
  int conf_ready;
  mbedtls_x509_crt own_ca;           /* http_set_ca_file */
  int own_ca_set;
  int (*cancel)(void *ud);
  void *cancel_ud;
  /* TLS session resumption (http_set_session_file) */
  char *sess_path;                   /* NULL: sessions are kept in memory only */
  int sess_loaded;                   /* the file was looked at */
  mbedtls_ssl_session sess;          /* the last good session, if sess_ok */
  int sess_ok;
  char sess_key[HTTP_HOST_MAX + 40]; /* "host:port ca" it belongs to */
  int chain_seen;                    /* this handshake verified a chain */
  int64_t deadline;                  /* monotonic ms; 0: none */
  char rx[HTTP_READ_CHUNK];          /* bytes read and not yet used */
  size_t rx_off, rx_len;
  int got;                           /* bytes of this answer arrived */
  unsigned connects;
  char err[256];
};

/* ---- process-wide TLS state --------------------------------------------- *
 *
 * A parsed CA bundle costs about 460 KB of heap for ~150 certificates, its
 * DER alone ~200 KB, and a handshake needs the one or two that issued the
 * server's chain.  So the bundle is indexed once: for every CA, a hash of
 * its subject and where its base64 lies in the PEM file (16 bytes a CA).
 * The handshake runs with an empty trust list and VERIFY_OPTIONAL; before a
 * byte is sent, tls_verify() verifies the server's chain
 * (mbedtls_x509_crt_verify_with_profile, host name included) against just
 * the CAs whose subject is the issuer or subject of a certificate in that
 * chain: the file is read again, those blocks decoded and their subjects
 * compared in full (a hash only picks candidates).  A bundle that changed
 * since (size or mtime) is indexed again first.  Every other check of the
 * handshake (key usage, host name, dates) must have passed as well.
 *
 * Indexing reads and base64-decodes the whole bundle (~3 ms for Debian's),
 * and nothing needs the index before the handshake is over: so the first
 * https connection starts it on a short-lived thread of its own and goes on
 * with name resolution, connect and handshake meanwhile; tls_verify() waits
 * for it (or indexes itself if no thread could be started). */

struct ca_ix {
  uint64_t subj_hash;                /* FNV-1a of the subject (tag and length included) */
  uint32_t b64_off, b64_len;         /* the base64 between BEGIN and END in the file */
};

static struct {
  pthread_once_t once;               /* the random generator */
  int ok;
  char why[200];
  pthread_once_t ix_once;            /* the first index (ca_init) */
  int seed_started;                  /* tls_prefetch() seeds (atomic) */
  int ix_started;                    /* tls_prefetch() indexes (atomic) */
  char ix_why[200];                  /* no CA bundle: why */
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  pthread_mutex_t mu;                /* the index below (re-indexed if the file changes) */
  char path[512];                    /* the bundle indexed */
  off_t size;
  struct timespec mtime;
  struct ca_ix *ix;
  size_t n;
  mbedtls_x509_crt none;             /* the handshake's (empty) trust list */
} g_tls = {.once = PTHREAD_ONCE_INIT, .ix_once = PTHREAD_ONCE_INIT,
         .mu = PTHREAD_MUTEX_INITIALIZER};

static const char *const ca_paths[] = {
  "/etc/ssl/certs/ca-certificates.crt",   /* Debian, Ubuntu, Alpine */
  "/etc/pki/tls/certs/ca-bundle.crt",     /* Fedora, RHEL */
  "/etc/ssl/ca-bundle.pem",               /* openSUSE */
  "/etc/ssl/cert.pem",                    /* BSDs, macOS */
  NULL,
};

/* Whole file into a NUL-terminated malloc'd buffer; NULL if unreadable.
 * st gets its size and mtime. */
static char *slurp(const char *path, struct stat *st)
{
  FILE *f = fopen(path, "re");
  char *d = NULL;
  size_t n;

  if (f && fstat(fileno(f), st) == 0 && st->st_size > 0 && st->st_size < (64L << 20) &&
      (d = malloc((size_t)st->st_size + 1))) {
    if ((n = fread(d, 1, (size_t)st->st_size, f)) != (size_t)st->st_size) {
      free(d);
      d = NULL;
    } else {
      d[n] = 0;
    }
  }
  if (f)
    fclose(f);
  return d;
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
  uint64_t h = 0xcbf29ce484222325ULL;

  while (n--)
    h = (h ^ *p++) * 0x100000001b3ULL;
  return h;
}

/* Where the subject Name (tag and length included, as mbedtls' subject_raw)
 * lies in a DER certificate, and the certificate's length: a walk over the
 * first fields of tbsCertificate, no more (a full parse of ~150 CAs costs
 * ~10 ms at start-up; the CAs a handshake needs are parsed then). */
static int der_subject(const unsigned char *der, size_t n, size_t *len, size_t *subj_off,
                       size_t *subj_len)
{
  const int seq = MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE;
  unsigned char *p = (unsigned char *)der, *end = p + n, *s;
  size_t l;

  if (mbedtls_asn1_get_tag(&p, end, &l, seq))
    return -1;
  *len = (size_t)(p - der) + l;
  end = p + l;
  if (mbedtls_asn1_get_tag(&p, end, &l, seq))                       /* tbsCertificate */
    return -1;
  end = p + l;
  if (p < end && *p == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED)) {
    if (mbedtls_asn1_get_tag(&p, end, &l, *p))                        /* [0] version */
      return -1;
    p += l;
  }
  if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_INTEGER))       /* serialNumber */
    return -1;
  p += l;
  for (int i = 0; i < 3; i++) {                   /* signature, issuer, validity */
    if (mbedtls_asn1_get_tag(&p, end, &l, seq))
      return -1;
    p += l;
  }
  s = p;
  if (mbedtls_asn1_get_tag(&p, end, &l, seq))                        /* subject */
    return -1;
  *subj_off = (size_t)(s - der);
  *subj_len = (size_t)(p - s) + l;
  return 0;
}

/* base64 digit values; -2 for blanks and line breaks, -1 for the rest. */
static const signed char b64_val[256] = {
  -1, -1, -1, -1, -1, -1, -1, -1, -1, -2, -2, -1, -1, -2, -1, -1,
  -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
  -2, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
  52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
  -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
  15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
  -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
  41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
  -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
  -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
  -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
  -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
  -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
  -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
  -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
  -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

/* Decodes the base64 b64[0..len) into *der (grown as needed); its length, 0 if bad.
 * Blanks and line breaks are skipped; '=' may only pad the end.  CA
 * certificates are public, so this is a plain table decoder rather than
 * mbedtls's constant-time one, which took most of the ~3 ms an index of
 * Debian's bundle cost at every start. */
static size_t pem_decode(const char *b64, size_t len, unsigned char **der, size_t *dcap)
{
  uint32_t acc = 0;
  size_t n = 0, bits = 0, pad = 0;

  if (len > *dcap) {
    unsigned char *d = realloc(*der, len);
    if (!d)
      return 0;
    *der = d;
    *dcap = len;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)b64[i];
    int v = b64_val[c];
    if (v == -2)
      continue;
    if (c == '=') {
      pad++;
      continue;
    }
    if (v < 0 || pad)
      return 0;
    acc = acc << 6 | (uint32_t)v;
    if ((bits += 6) >= 8) {
      bits -= 8;
      (*der)[n++] = (unsigned char)(acc >> bits);
    }
  }
  return pad > 2 || (bits && (acc & ((1u << bits) - 1))) ? 0 : n;
}

#define PEM_BEGIN "-----BEGIN CERTIFICATE-----"
#define PEM_END "-----END CERTIFICATE-----"

/* Indexes every CA certificate of the PEM bundle at path into g_tls (whose
 * old index it replaces); the number indexed.  Called with g_tls.mu held or
 * before any other thread can see g_tls. */
static size_t ca_index(const char *path)
{
  struct stat st;
  char *pem = slurp(path, &st), *p = pem, *e;
  unsigned char *der = NULL;
  size_t dcap = 0, cap = 0;

  free(g_tls.ix);
  g_tls.ix = NULL;
  g_tls.n = 0;
  while (p && (p = strstr(p, PEM_BEGIN)) && (e = strstr(p, PEM_END))) {
    size_t n, len, so, sl;
    p += sizeof PEM_BEGIN - 1;
    if ((n = pem_decode(p, (size_t)(e - p), &der, &dcap)) &&
        der_subject(der, n, &len, &so, &sl) == 0 && len <= n && (size_t)(e - pem) < UINT32_MAX) {
      if (g_tls.n == cap) {
        struct ca_ix *ix = realloc(g_tls.ix, (cap = cap ? cap * 2 : 256) * sizeof *ix);
        if (!ix)
          break;
        g_tls.ix = ix;
      }
      g_tls.ix[g_tls.n++] = (struct ca_ix){fnv1a(der + so, sl), (uint32_t)(p - pem),
                                           (uint32_t)(e - p)};
    }
    p = e + sizeof PEM_END - 1;
  }
  if (g_tls.ix && g_tls.n < cap) {   /* give back the slack */
    struct ca_ix *ix = realloc(g_tls.ix, (g_tls.n ? g_tls.n : 1) * sizeof *ix);
    if (ix)
      g_tls.ix = ix;
  }
  free(der);
  free(pem);
  if (pem) {
    if (path != g_tls.path)   /* ca_collect indexes g_tls.path again: no overlap */
      snprintf(g_tls.path, sizeof g_tls.path, "%s", path);
    g_tls.size = st.st_size;
    g_tls.mtime = st.st_mtim;
  }
  return g_tls.n;
}

static void tls_global_init(void)
{
  mbedtls_entropy_init(&g_tls.entropy);
  mbedtls_ctr_drbg_init(&g_tls.drbg);
  mbedtls_x509_crt_init(&g_tls.none);
  if (mbedtls_ctr_drbg_seed(&g_tls.drbg, mbedtls_entropy_func, &g_tls.entropy,
                            (const unsigned char *)"skynet-http", 11)) {
    snprintf(g_tls.why, sizeof g_tls.why, "cannot seed the TLS random generator");
    return;
  }
  g_tls.ok = 1;
}

/* The first index of the CA bundle: $SSL_CERT_FILE, else the first system
 * bundle found. */
static void ca_init(void)
{
  const char *env = getenv("SSL_CERT_FILE");

  if (env && *env) {
    if (!ca_index(env))
      snprintf(g_tls.ix_why, sizeof g_tls.ix_why, "cannot read CA bundle '%.120s' (SSL_CERT_FILE)",
               env);
  } else {
    for (int i = 0; ca_paths[i] && !g_tls.n; i++)
      if (access(ca_paths[i], R_OK) == 0)
        ca_index(ca_paths[i]);
    if (!g_tls.n)
      snprintf(g_tls.ix_why, sizeof g_tls.ix_why,
               "no CA bundle found (install ca-certificates or set SSL_CERT_FILE)");
  }
}

static void tls_global_init(void);

/* The prefetch thread: the random generator, then, when arg is set, the
 * first index. */
static void *tls_prefetch_thread(void *arg)
{
  pthread_once(&g_tls.once, tls_global_init);
  if (arg)
    pthread_once(&g_tls.ix_once, ca_init);
  return NULL;
}

/* Starts, once per process, what the first TLS connection will need on a
 * thread of its own, so that it runs while that connection resolves the
 * name and connects: seeding the random generator (~0.6 ms: entropy, AES
 * key schedules) and, with_ca (a chain will be checked), the CA index. */
static void tls_prefetch(int with_ca)
{
  int seed = !__atomic_exchange_n(&g_tls.seed_started, 1, __ATOMIC_ACQ_REL);
  int ix = with_ca && !__atomic_exchange_n(&g_tls.ix_started, 1, __ATOMIC_ACQ_REL);
  pthread_attr_t a;
  pthread_t th;

  if ((!seed && !ix) || pthread_attr_init(&a))
    return;
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&a, 256 * 1024);
  /* else tls_conf() seeds and tls_verify() indexes, on the connection's thread */
  (void)pthread_create(&th, &a, tls_prefetch_thread, ix ? &g_tls : NULL);
  pthread_attr_destroy(&a);
}

/* Whether the CA of index entry x may anchor chain: its hash matches the
 * issuer or the subject of one of the chain's certificates. */
static int ca_candidate(const struct ca_ix *x, const mbedtls_x509_crt *chain)
{
  for (const mbedtls_x509_crt *c = chain; c; c = c->next)
    if (fnv1a(c->issuer_raw.p, c->issuer_raw.len) == x->subj_hash ||
        fnv1a(c->subject_raw.p, c->subject_raw.len) == x->subj_hash)
      return 1;
  return 0;
}

/* Parses into trust the candidates of pem (the bundle as indexed) whose
 * subject really is an issuer or subject in chain; -1 if pem no longer
 * matches the index. */
static int ca_parse_candidates(const char *pem, size_t pem_len, const mbedtls_x509_crt *chain,
                               mbedtls_x509_crt *trust)
{
  unsigned char *der = NULL;
  size_t dcap = 0;
  int rc = 0;

  for (size_t i = 0; i < g_tls.n && rc == 0; i++) {
    const struct ca_ix *x = &g_tls.ix[i];
    size_t n, len, so, sl;
    if (!ca_candidate(x, chain))
      continue;
    if ((size_t)x->b64_off + x->b64_len > pem_len ||
        !(n = pem_decode(pem + x->b64_off, x->b64_len, &der, &dcap)) ||
        der_subject(der, n, &len, &so, &sl) || len > n || fnv1a(der + so, sl) != x->subj_hash) {
      rc = -1;
      break;
    }
    for (const mbedtls_x509_crt *c = chain; c; c = c->next)
      if ((c->issuer_raw.len == sl && !memcmp(c->issuer_raw.p, der + so, sl)) ||
          (c->subject_raw.len == sl && !memcmp(c->subject_raw.p, der + so, sl))) {
        mbedtls_x509_crt_parse_der(trust, der, len);
        break;
      }
  }
  free(der);
  return rc;
}

/* The indexed CAs that may anchor chain, parsed into trust: the bundle is
 * read again (indexed again if it changed since). */
static void ca_collect(const mbedtls_x509_crt *chain, mbedtls_x509_crt *trust)
{
  struct stat st;
  char *pem;

  pthread_mutex_lock(&g_tls.mu);
  pem = slurp(g_tls.path, &st);
  if (pem && (st.st_size != g_tls.size || st.st_mtim.tv_sec != g_tls.mtime.tv_sec ||
              st.st_mtim.tv_nsec != g_tls.mtime.tv_nsec))
    ca_index(g_tls.path);
  if (pem && ca_parse_candidates(pem, strlen(pem), chain, trust)) {
    mbedtls_x509_crt_free(trust);   /* changed under us: once more, indexed afresh */
    mbedtls_x509_crt_init(trust);
    free(pem);
    ca_index(g_tls.path);
    pem = slurp(g_tls.path, &st);
    if (pem && ca_parse_candidates(pem, strlen(pem), chain, trust)) {
      mbedtls_x509_crt_free(trust);
      mbedtls_x509_crt_init(trust);
    }
  }
  free(pem);
  pthread_mutex_unlock(&g_tls.mu);
}

/* ---- small helpers ------------------------------------------------------ */

static int64_t now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum err fail(struct http *h, enum err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum err fail(struct http *h, enum err e, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(h->err, sizeof h->err, fmt, ap);
  va_end(ap);
  return e;
}

static void tls_strerror(int rc, char *out, size_t n)
{
  mbedtls_strerror(rc, out, n);
}

/* Splits url; ERR_INVAL for anything but http(s)://host[:port][/target]. */
static enum err url_parse(const char *url, struct http_url *u)
{
  const char *p, *host, *end, *colon = NULL;
  size_t hl;

  memset(u, 0, sizeof *u);
  if (strncmp(url, "https://", 8) == 0)
    u->tls = 1, p = url + 8;
  else if (strncmp(url, "http://", 7) == 0)
    p = url + 7;
  else
    return ERR_INVAL;
  host = p;
  if (*p == '[') {
    host = ++p;
    if (!(end = strchr(p, ']')))
      return ERR_INVAL;
    hl = (size_t)(end - host);
    p = end + 1;
    if (*p == ':')
      colon = p;
  } else {
    while (*p && *p != '/' && *p != ':' && *p != '?' && *p != '#')
      p++;
    hl = (size_t)(p - host);
    if (*p == ':')
      colon = p;
  }
  if (hl == 0 || hl >= sizeof u->host || memchr(host, '@', hl))
    return ERR_INVAL;
  memcpy(u->host, host, hl);
  if (colon) {
    size_t pl = strspn(colon + 1, "0123456789");
    if (pl == 0 || pl >= sizeof u->port)
      return ERR_INVAL;
    memcpy(u->port, colon + 1, pl);
    p = colon + 1 + pl;
  } else {
    snprintf(u->port, sizeof u->port, "%s", u->tls ? "443" : "80");
  }
  if (*p && *p != '/' && *p != '?')
    return ERR_INVAL;
  u->target = *p ? p : "/";
  return ERR_OK;
}

/* ---- proxies ------------------------------------------------------------ */

/* Whether no_proxy (a comma list of names, .domains and "*") covers host. */
static int no_proxy_match(const char *list, const char *host)
{
  size_t hl = strlen(host);

  while (list && *list) {
    size_t n = strcspn(list, ", ");
    const char *e = list;
    if (n == 1 && *e == '*')
      return 1;
    if (n && *e == '.')
      e++, n--;
    if (n && n <= hl && strncasecmp(host + hl - n, e, n) == 0 &&
        (n == hl || host[hl - n - 1] == '.'))
      return 1;
    list += strcspn(list, ",");
    list += strspn(list, ", ");
  }
  return 0;
}

/* The proxy for u from the environment into px; 0 when none applies, -1
 * when one is set that we cannot use (not http://host:port, credentials). */
static int proxy_for(const struct http_url *u, struct http_url *px)
{
  const char *v = u->tls ? getenv("https_proxy") : getenv("http_proxy");
  const char *np = getenv("no_proxy");
  char tmp[600];

  if (u->tls && (!v || !*v))
    v = getenv("HTTPS_PROXY");
  if (!np || !*np)
    np = getenv("NO_PROXY");
  if (!v || !*v || no_proxy_match(np, u->host))
    return 0;
  if (!strstr(v, "://")) {   /* "host:port" as many people write it */
    snprintf(tmp, sizeof tmp, "http://%s", v);
    v = tmp;
  }
  return url_parse(v, px) == ERR_OK && !px->tls ? 1 : -1;
}

/* ---- the socket --------------------------------------------------------- */

/* Waits for ev on h->fd until the deadline, asking the cancel hook. */
static enum err wait_fd(struct http *h, short ev, int64_t until)
{
  for (;;) {
    struct pollfd p = {h->fd, ev, 0};
    int64_t left = until ? until - now_ms() : -1;
    int rc;
    if (h->cancel && h->cancel(h->cancel_ud))
      return fail(h, ERR_CANCELLED, "cancelled");
    if (until && left <= 0)
      return ERR_TIMEOUT;
    if (h->cancel && (left < 0 || left > HTTP_CANCEL_POLL_MS))
      left = HTTP_CANCEL_POLL_MS;
    rc = poll(&p, 1, (int)left);
    if (rc > 0)
      return ERR_OK;
    if (rc < 0 && errno != EINTR)
      return fail(h, ERR_NET, "poll: %s", strerror(errno));
  }
}

static enum err timed_out(struct http *h, const char *what)
{
  return fail(h, ERR_TIMEOUT, "timed out %s", what);
}

static enum err connect_one(struct http *h, const struct addrinfo *ai, int64_t until)
{
  int one = 1, soerr = 0;
  socklen_t sl = sizeof soerr;
  enum err e;

  h->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (h->fd < 0)
    return fail(h, ERR_NET, "socket: %s", strerror(errno));
  setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(h->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  if (connect(h->fd, ai->ai_addr, ai->ai_addrlen) == 0)
    return ERR_OK;
  if (errno != EINPROGRESS)
    return fail(h, ERR_NET, "%s", strerror(errno));
  if ((e = wait_fd(h, POLLOUT, until)))
    return e;
  getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
  return soerr ? fail(h, ERR_NET, "%s", strerror(soerr)) : ERR_OK;
}

/* TCP connection to host:port, each address in turn. */
static enum err tcp_connect(struct http *h, const char *host, const char *port, long ctimeout)
{
  struct addrinfo hints = {0}, *res = NULL, *ai;
  int64_t until = now_ms() + ctimeout;
  enum err e = ERR_NET;
  int rc;

  if (h->deadline && h->deadline < until)
    until = h->deadline;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
    return fail(h, ERR_NET, "cannot resolve host '%s': %s", host, gai_strerror(rc));
  for (ai = res; ai; ai = ai->ai_next) {
    e = connect_one(h, ai, until);
    if (!e)
      break;
    close(h->fd);
    h->fd = -1;
    if (e == ERR_CANCELLED)
      break;
    if (e == ERR_TIMEOUT) {
      fail(h, ERR_TIMEOUT, "timed out connecting to %s port %s", host, port);
      break;
    }
  }
  freeaddrinfo(res);
  if (e == ERR_NET) {
    char why[sizeof h->err];
    snprintf(why, sizeof why, "%s", h->err);
    fail(h, e, "cannot connect to %s port %s: %.120s", host, port, why);
  }
  if (!e)
    h->connects++;
  return e;
}

/* ---- TLS ---------------------------------------------------------------- */

static int bio_send(void *ctx, const unsigned char *b, size_t n)
{
  struct http *h = ctx;
  ssize_t w = send(h->fd, b, n, MSG_NOSIGNAL);

  if (w >= 0)
    return (int)w;
  if (errno == EAGAIN || errno == EINTR)
    return MBEDTLS_ERR_SSL_WANT_WRITE;
  return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
                                               : MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *ctx, unsigned char *b, size_t n)
{
  struct http *h = ctx;
  ssize_t r = recv(h->fd, b, n, 0);

  if (r >= 0)
    return (int)r;
  if (errno == EAGAIN || errno == EINTR)
    return MBEDTLS_ERR_SSL_WANT_READ;
  return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
}

static const mbedtls_ecp_group_id tls_curves[] = {
  MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_NONE,
};

static enum err tls_conf(struct http *h)
{
  pthread_once(&g_tls.once, tls_global_init);
  if (h->conf_ready)
    return ERR_OK;
  if (!g_tls.ok)
    return fail(h, ERR_NET, "TLS: %s", g_tls.why);
  mbedtls_ssl_config_init(&h->conf);
  if (mbedtls_ssl_config_defaults(&h->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT)) {
    mbedtls_ssl_config_free(&h->conf);
    return fail(h, ERR_NOMEM, "TLS: cannot set up");
  }
  if (h->own_ca_set) {
    mbedtls_ssl_conf_authmode(&h->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&h->conf, &h->own_ca, NULL);
  } else {   /* the chain is verified by tls_verify() against the index */
    mbedtls_ssl_conf_authmode(&h->conf, MBEDTLS_SSL_VERIFY_OPTIONAL);
    mbedtls_ssl_conf_ca_chain(&h->conf, &g_tls.none, NULL);
  }
  mbedtls_ssl_conf_rng(&h->conf, mbedtls_ctr_drbg_random, &g_tls.drbg);
  /* mbedtls 2.x offers its curves largest first (secp521r1), and a server
   * that takes the client's order then spends ~10x longer on the key
   * exchange: offer what browsers do. */
  mbedtls_ssl_conf_curves(&h->conf, tls_curves);
  mbedtls_ssl_conf_min_version(&h->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_session_tickets(&h->conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
  h->conf_ready = 1;
  return ERR_OK;
}

static enum err tls_wait(struct http *h, int rc, const char *what)
{
  enum err e;

  if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE)
    return ERR_NET;
  e = wait_fd(h, rc == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT, h->deadline);
  return e == ERR_TIMEOUT ? timed_out(h, what) : e;
}

/* After a VERIFY_OPTIONAL handshake: the server's chain against the CAs of
 * the index that can anchor it, and nothing else wrong with it. */
static enum err tls_verify(struct http *h, const char *host)
{
  const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&h->ssl);
  uint32_t flags = mbedtls_ssl_get_verify_result(&h->ssl);
  mbedtls_x509_crt trust;
  char msg[160];

  flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_NOT_TRUSTED;   /* that is decided here */
  if (!peer)
    return fail(h, ERR_NET, "TLS: '%s' sent no certificate", host);
  pthread_once(&g_tls.ix_once, ca_init);   /* waits for tls_prefetch()'s thread */
  pthread_mutex_lock(&g_tls.mu);
  size_t n_ca = g_tls.n;
  pthread_mutex_unlock(&g_tls.mu);
  if (!n_ca)   /* none at start (ix_why says why), or the bundle went unreadable since */
    return fail(h, ERR_NET, "TLS: %s",
                g_tls.ix_why[0] ? g_tls.ix_why : "the CA bundle can no longer be read");
  if (!flags) {
    mbedtls_x509_crt_init(&trust);
    ca_collect(peer, &trust);
    if (mbedtls_x509_crt_verify_with_profile((mbedtls_x509_crt *)peer, &trust, NULL,
                                             &mbedtls_x509_crt_profile_default, host, &flags,
                                             NULL, NULL) == 0)
      flags = 0;
    else if (!flags)
      flags = MBEDTLS_X509_BADCERT_NOT_TRUSTED;
    mbedtls_x509_crt_free(&trust);
  }
  if (!flags)
    return ERR_OK;
  mbedtls_x509_crt_verify_info(msg, sizeof msg, "", flags);
  msg[strcspn(msg, "\n")] = 0;
  return fail(h, ERR_NET, "TLS: certificate of '%s' not trusted: %s", host, msg);
}

/* ---- TLS session resumption ---------------------------------------------
 * After a full handshake whose chain passed, the session (TLS 1.2: the
 * master secret and the server's ticket or session id) is kept, and the next
 * connection to the same host and port offers it: a server that accepts it
 * skips the key exchange, its signature and the certificate chain, which is
 * most of a handshake's cost.  A resumed session was verified when it was
 * made, so there is no chain to check; a server that refuses it gets a full
 * handshake, verified as always.  With http_set_session_file() it is also
 * written to a file (mode 0600, replaced atomically) and read back by the
 * next process: a restart then resumes too.  The file holds the session's
 * master secret, so it is only read when it is a regular file of ours that
 * nobody else can read or write, and only used for the host and port it was
 * made for while what its chain was checked against is unchanged
 * (sess_key_of), within SESS_MAX_AGE_S. */

#define SESS_MAGIC "skynet-tls-session 1\n"
#define SESS_MAX_AGE_S (24 * 3600)
#define SESS_FILE_MAX 8192

/* The system bundle skynet trusts (as ca_init picks it, without reading
 * it): $SSL_CERT_FILE, else the first readable of ca_paths; NULL if none. */
static const char *ca_bundle_path(void)
{
  const char *env = getenv("SSL_CERT_FILE");

  if (env && *env)
    return env;
  for (int i = 0; ca_paths[i]; i++)
    if (access(ca_paths[i], R_OK) == 0)
      return ca_paths[i];
  return NULL;
}

/* What a session is good for: the server, and what its chain was checked
 * against: every certificate of the handle's CA file, or the system bundle
 * as it is now (path, size, modification time).  A trust that changed since
 * gets no resumption, so a full handshake, verified against it. */
static void sess_key_of(const struct http *h, const char *host, const char *port, char *out,
                        size_t n)
{
  const char *bundle;
  char desc[600];
  struct stat st;
  uint64_t id = 0;
  int k;

  if (h->own_ca_set) {
    for (const mbedtls_x509_crt *c = &h->own_ca; c && c->raw.p; c = c->next)
      id = id * 31 + fnv1a(c->raw.p, c->raw.len);
  } else if ((bundle = ca_bundle_path()) && stat(bundle, &st) == 0 &&
             (k = snprintf(desc, sizeof desc, "%s %lld %lld.%09ld", bundle,
                           (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                           st.st_mtim.tv_nsec)) > 0) {
    id = fnv1a((const unsigned char *)desc, (size_t)k < sizeof desc ? (size_t)k : sizeof desc);
  }
  snprintf(out, n, "%s:%s %s-%016llx", host, port, h->own_ca_set ? "ca" : "system",
           (unsigned long long)id);
}

static void sess_drop(struct http *h)
{
  if (h->sess_ok)
    mbedtls_ssl_session_free(&h->sess);
  h->sess_ok = 0;
}

/* Reads the file once: MAGIC, the key line, the unix time it was saved at
 * as a line, then the session as mbedtls_ssl_session_save wrote it. */
static void sess_load(struct http *h)
{
  unsigned char buf[SESS_FILE_MAX];
  const unsigned char *p, *key_end, *t_end;
  struct stat st;
  ssize_t n = 0;
  long long saved;
  int fd;

  h->sess_loaded = 1;
  if (!h->sess_path || (fd = open(h->sess_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
    return;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
      !(st.st_mode & 077) && st.st_size < (off_t)sizeof buf)
    n = read(fd, buf, sizeof buf);
  close(fd);
  if (n <= (ssize_t)strlen(SESS_MAGIC) || memcmp(buf, SESS_MAGIC, strlen(SESS_MAGIC)))
    return;
  p = buf + strlen(SESS_MAGIC);
  if (!(key_end = memchr(p, '\n', (size_t)(buf + n - p))) ||
      (size_t)(key_end - p) >= sizeof h->sess_key ||
      !(t_end = memchr(key_end + 1, '\n', (size_t)(buf + n - key_end - 1))))
    return;
  saved = strtoll((const char *)key_end + 1, NULL, 10);
  if (saved > (long long)time(NULL) + 60 || (long long)time(NULL) - saved > SESS_MAX_AGE_S)
    return;
  mbedtls_ssl_session_init(&h->sess);
  if (mbedtls_ssl_session_load(&h->sess, t_end + 1, (size_t)(buf + n - t_end - 1))) {
    mbedtls_ssl_session_free(&h->sess);
    return;
  }
  memcpy(h->sess_key, p, (size_t)(key_end - p));
  h->sess_key[key_end - p] = '\0';
  h->sess_ok = 1;
}

/* Writes the session kept in h to its file; failures only cost the next
 * process a full handshake, so they are logged nowhere and not synced. */
static void sess_save(struct http *h)
{
  unsigned char blob[SESS_FILE_MAX];
  char head[sizeof h->sess_key + 64], tmp[4200];
  size_t len = 0;
  int fd, hl, ok;

  if (!h->sess_path ||
      mbedtls_ssl_session_save(&h->sess, blob, sizeof blob, &len) ||
      (hl = snprintf(head, sizeof head, SESS_MAGIC "%s\n%lld\n", h->sess_key,
                     (long long)time(NULL))) >= (int)sizeof head ||
      snprintf(tmp, sizeof tmp, "%s.%d.%p", h->sess_path, (int)getpid(), (void *)h) >=
          (int)sizeof tmp)
    return;
  if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0)
    return;
  ok = write(fd, head, (size_t)hl) == hl && write(fd, blob, len) == (ssize_t)len;
  ok &= close(fd) == 0;
  if (!ok || rename(tmp, h->sess_path))
    unlink(tmp);
}

/* Whether h has a session to offer host:port (reading its file the first
 * time); its key in key. */
static int sess_usable(struct http *h, const char *host, const char *port, char *key, size_t n)
{
  if (!h->sess_loaded)
    sess_load(h);
  sess_key_of(h, host, port, key, n);
  return h->sess_ok && !strcmp(key, h->sess_key);
}

/* Called by mbedtls for each certificate of a chain it receives: a full
 * handshake (a resumed one receives none). */
static int tls_saw_chain(void *ud, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
  (void)crt;
  (void)depth;
  (void)flags;
  ((struct http *)ud)->chain_seen = 1;
  return 0;
}

/* The handshake on h->fd; resume: offer the kept session (sess_usable
 * said so for key, this connection's). */
static enum err tls_start(struct http *h, const char *host, const char *key, int resume)
{
  char msg[160];
  int rc, offered;
  enum err e;

  if ((e = tls_conf(h)))
    return e;
  mbedtls_ssl_init(&h->ssl);
  h->tls_on = 1;
  if (mbedtls_ssl_setup(&h->ssl, &h->conf) || mbedtls_ssl_set_hostname(&h->ssl, host))
    return fail(h, ERR_NOMEM, "TLS: cannot set up");
  mbedtls_ssl_set_bio(&h->ssl, h, bio_send, bio_recv, NULL);
  mbedtls_ssl_set_verify(&h->ssl, tls_saw_chain, h);
  offered = resume && mbedtls_ssl_set_session(&h->ssl, &h->sess) == 0;
  h->chain_seen = 0;
  while ((rc = mbedtls_ssl_handshake(&h->ssl)) != 0) {
    if ((e = tls_wait(h, rc, "in the TLS handshake")) == ERR_OK)
      continue;
    if (offered) {              /* never offer a session that failed once */
      sess_drop(h);
      if (h->sess_path && e == ERR_NET)   /* nor let the next process offer it */
        unlink(h->sess_path);
    }
    if (e != ERR_NET)
      return e;
    uint32_t v = mbedtls_ssl_get_verify_result(&h->ssl);
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && v) {
      mbedtls_x509_crt_verify_info(msg, sizeof msg, "", v);
      msg[strcspn(msg, "\n")] = 0;
      return fail(h, ERR_NET, "TLS: certificate of '%s' not trusted: %s", host, msg);
    }
    tls_strerror(rc, msg, sizeof msg);
    return fail(h, ERR_NET, "TLS handshake with '%s' failed: %s", host, msg);
  }
  if (!h->chain_seen && offered)   /* resumed: verified when it was made */
    return ERR_OK;
  if (!h->chain_seen)
    return fail(h, ERR_NET, "TLS: '%s' sent no certificate", host);
  if (!h->own_ca_set && (e = tls_verify(h, host)))
    return e;
  sess_drop(h);
  mbedtls_ssl_session_init(&h->sess);
  if (mbedtls_ssl_get_session(&h->ssl, &h->sess) == 0) {
    h->sess_ok = 1;
    snprintf(h->sess_key, sizeof h->sess_key, "%s", key);
    sess_save(h);
  } else {
    mbedtls_ssl_session_free(&h->sess);
  }
  return ERR_OK;
}

/* ---- the connection ----------------------------------------------------- */

void http_close(struct http *h)
{
  if (h->tls_on) {
    if (h->fd >= 0)
      mbedtls_ssl_close_notify(&h->ssl);   /* best effort: never waits */
    mbedtls_ssl_free(&h->ssl);
    h->tls_on = 0;
  }
  if (h->fd >= 0)
    close(h->fd);
  h->fd = -1;
  h->origin[0] = 0;
  h->rx_off = h->rx_len = 0;
}

/* After send() or recv() on the plain socket failed: ERR_OK once the socket
 * is ready for events again when it would only have blocked, else the
 * failure ("<lost>: <reason>", or a timeout while <waiting>). */
static enum err sock_again(struct http *h, short events, const char *lost, const char *waiting)
{
  enum err e;

  if (errno != EAGAIN && errno != EINTR)
    return fail(h, ERR_NET, "%s: %s", lost, strerror(errno));
  if ((e = wait_fd(h, events, h->deadline)))
    return e == ERR_TIMEOUT ? timed_out(h, waiting) : e;
  return ERR_OK;
}

/* Whether the idle kept connection is still usable: readable while idle
 * means EOF, a reset or a close_notify. */
static int conn_alive(struct http *h)
{
  struct pollfd p = {h->fd, POLLIN, 0};

  return h->fd >= 0 && poll(&p, 1, 0) == 0;
}

static enum err raw_write(struct http *h, const char *b, size_t n)
{
  while (n) {
    int w;
    enum err e;
    if (h->tls_on) {
      w = mbedtls_ssl_write(&h->ssl, (const unsigned char *)b, n);
      if (w < 0) {
        if ((e = tls_wait(h, w, "sending the request")) == ERR_OK)
          continue;
        return e == ERR_NET ? fail(h, e, "connection lost while sending") : e;
      }
    } else {
      w = (int)send(h->fd, b, n > (1u << 30) ? (1u << 30) : n, MSG_NOSIGNAL);
      if (w < 0) {
        if ((e = sock_again(h, POLLOUT, "connection lost while sending", "sending the request")))
          return e;
        continue;
      }
    }
    b += w;
    n -= (size_t)w;
  }
  return ERR_OK;
}

/* Reads more into h->rx (which must have room); ERR_IO at a clean EOF. */
static enum err raw_read(struct http *h)
{
  char *p;
  size_t room;
  enum err e;

  if (h->rx_off) {
    memmove(h->rx, h->rx + h->rx_off, h->rx_len - h->rx_off);
    h->rx_len -= h->rx_off;
    h->rx_off = 0;
  }
  p = h->rx + h->rx_len;
  room = sizeof h->rx - h->rx_len;
  if (room == 0)
    return fail(h, ERR_NET, "malformed answer: line too long");
  for (;;) {
    int r;
    if (h->tls_on) {
      r = mbedtls_ssl_read(&h->ssl, (unsigned char *)p, room);
      if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || r == MBEDTLS_ERR_SSL_CONN_EOF || r == 0)
        return ERR_IO;
      if (r < 0) {
        if ((e = tls_wait(h, r, "waiting for the answer")) == ERR_OK)
          continue;
        if (e != ERR_NET)
          return e;
        return r == MBEDTLS_ERR_NET_CONN_RESET ? fail(h, ERR_NET, "connection reset by the server")
                                               : fail(h, ERR_NET, "TLS error while reading");
      }
    } else {
      r = (int)recv(h->fd, p, room, 0);
      if (r == 0)
        return ERR_IO;
      if (r < 0) {
        if ((e = sock_again(h, POLLIN, "connection lost", "waiting for the answer")))
          return e;
        continue;
      }
    }
    h->rx_len += (size_t)r;
    h->got = 1;
    return ERR_OK;
  }
}

/* CONNECT host:port through the proxy already connected on h->fd. */
static enum err proxy_tunnel(struct http *h, const struct http_url *u, const struct http_url *px)
{
  char req[HTTP_HOST_MAX * 2 + 100];
  int ipv6 = strchr(u->host, ':') != NULL, status = 0;
  enum err e;

  snprintf(req, sizeof req, "CONNECT %s%s%s:%s HTTP/1.1\r\nHost: %s%s%s:%s\r\n\r\n",
           ipv6 ? "[" : "", u->host, ipv6 ? "]" : "", u->port,
           ipv6 ? "[" : "", u->host, ipv6 ? "]" : "", u->port);
  if ((e = raw_write(h, req, strlen(req))))
    return e;
  for (;;) {
    char *end;
    h->rx[h->rx_len < sizeof h->rx ? h->rx_len : sizeof h->rx - 1] = 0;
    if ((end = strstr(h->rx, "\r\n\r\n"))) {
      if (sscanf(h->rx, "HTTP/1.%*d %d", &status) != 1 || status / 100 != 2)
        return fail(h, ERR_NET, "proxy %s port %s refused the tunnel (HTTP %d)",
                    px->host, px->port, status);
      h->rx_off = h->rx_len = 0;   /* nothing may follow before our TLS or request */
      h->got = 0;
      return ERR_OK;
    }
    if (h->rx_len >= sizeof h->rx - 1)
      return fail(h, ERR_NET, "proxy %s port %s: answer too long", px->host, px->port);
    if ((e = raw_read(h)))
      return e == ERR_IO ? fail(h, ERR_NET, "proxy %s port %s closed the connection",
                                px->host, px->port) : e;
  }
}

/* A connection to u's origin: the kept one when alive, else a new one. */
static enum err conn_get(struct http *h, const struct http_url *u, long ctimeout, int *reused)
{
  char origin[sizeof h->origin], key[sizeof h->sess_key];
  struct http_url px;
  int via = proxy_for(u, &px), resume;
  enum err e;

  if (via < 0)
    return fail(h, ERR_NET, "cannot use the proxy in %s: only http://host:port, without "
                "credentials", u->tls ? "https_proxy" : "http_proxy");
  snprintf(origin, sizeof origin, "%c:%s:%s:%s:%s", u->tls ? 's' : 'p', u->host, u->port,
           via ? px.host : "", via ? px.port : "");
  *reused = 0;
  if (h->fd >= 0 && strcmp(origin, h->origin) == 0 && conn_alive(h)) {
    *reused = 1;
    return ERR_OK;
  }
  http_close(h);
  /* The CA index is needed to check a chain: not when a session is resumed
   * (if the server refuses it, tls_verify indexes then). */
  resume = u->tls && sess_usable(h, u->host, u->port, key, sizeof key);
  if (u->tls)
    tls_prefetch(!h->own_ca_set && !resume);
  if (via) {
    if ((e = tcp_connect(h, px.host, px.port, ctimeout)) || (e = proxy_tunnel(h, u, &px)))
      goto out;
  } else if ((e = tcp_connect(h, u->host, u->port, ctimeout))) {
    goto out;
  }
  if (u->tls && (e = tls_start(h, u->host, key, resume)))
    goto out;
  snprintf(h->origin, sizeof h->origin, "%s", origin);
out:
  if (e)
    http_close(h);
  return e;
}

/* ---- the answer --------------------------------------------------------- */

/* Line at the read position (without CRLF) into line and len, reading more as
 * needed; the line is consumed.  max bounds its length. */
static enum err read_line(struct http *h, const char **line, size_t *len, size_t max)
{
  for (;;) {
    char *s = h->rx + h->rx_off, *nl = memchr(s, '\n', h->rx_len - h->rx_off);
    enum err e;
    if (nl) {
      *line = s;
      *len = (size_t)(nl - s);
      if (*len && s[*len - 1] == '\r')
        (*len)--;
      h->rx_off += (size_t)(nl - s) + 1;
      return ERR_OK;
    }
    if (h->rx_len - h->rx_off >= max)
      return fail(h, ERR_NET, "malformed answer: line too long");
    if ((e = raw_read(h)))
      return e;
  }
}

static enum err eof_error(struct http *h, enum err e)
{
  if (e != ERR_IO)
    return e;
  return fail(h, ERR_NET, h->got ? "connection closed before the answer was complete"
                                  : "connection closed without an answer");
}

static enum err read_head(struct http *h, struct http_resp *rs)
{
  const char *line;
  size_t len;
  enum err e;

  for (;;) {
    if ((e = read_line(h, &line, &len, sizeof h->rx)))
      return eof_error(h, e);
    if (rs->head.len == 0 && len == 0)
      continue;                               /* stray CRLF before the status line */
    if (len == 0)
      break;
    if (buf_append(&rs->head, line, len) || buf_append(&rs->head, "\r\n", 2))
      return fail(h, ERR_NET, "malformed answer: headers over %d bytes", HTTP_HEAD_MAX);
  }
  if (sscanf(buf_str(&rs->head), "HTTP/1.%*1d %3d", &rs->status) != 1 || rs->status < 100)
    return fail(h, ERR_NET, "malformed answer: no HTTP/1.x status line");
  return ERR_OK;
}

/* Moves up to n body bytes (all that is buffered if n is SIZE_MAX) to body. */
static enum err take(struct http *h, struct http_resp *rs, size_t n, size_t max)
{
  size_t have = h->rx_len - h->rx_off, k = n < have ? n : have;

  if (rs->body.len + k > max)
    return fail(h, ERR_TOOBIG, "answer larger than %zu bytes", max);
  if (buf_append(&rs->body, h->rx + h->rx_off, k))
    return fail(h, ERR_NOMEM, "out of memory");
  h->rx_off += k;
  return ERR_OK;
}

static enum err body_length(struct http *h, struct http_resp *rs, size_t n, size_t max)
{
  enum err e;

  if (n > max)
    return fail(h, ERR_TOOBIG, "answer larger than %zu bytes", max);
  while (rs->body.len < n) {
    if ((e = take(h, rs, n - rs->body.len, max)))
      return e;
    if (rs->body.len < n && (e = raw_read(h)))
      return eof_error(h, e);
  }
  return ERR_OK;
}

static enum err body_chunked(struct http *h, struct http_resp *rs, size_t max)
{
  const char *line;
  size_t len;
  enum err e;

  for (;;) {
    char hex[20], *end;
    unsigned long long n;
    if ((e = read_line(h, &line, &len, 1024)))
      return eof_error(h, e);
    snprintf(hex, sizeof hex, "%.*s", (int)(len < 19 ? len : 19), line);
    n = strtoull(hex, &end, 16);
    if (end == hex || n > max)
      return n > max ? fail(h, ERR_TOOBIG, "answer larger than %zu bytes", max)
                     : fail(h, ERR_NET, "malformed answer: bad chunk size");
    if (n == 0)
      break;
    if ((e = body_length(h, rs, rs->body.len + (size_t)n, max)))
      return e;
    if ((e = read_line(h, &line, &len, 1024)))
      return eof_error(h, e);
    if (len)
      return fail(h, ERR_NET, "malformed answer: chunk longer than announced");
  }
  do {                                        /* trailers, up to the empty line */
    if ((e = read_line(h, &line, &len, 8192)))
      return eof_error(h, e);
  } while (len);
  return ERR_OK;
}

static enum err body_to_eof(struct http *h, struct http_resp *rs, size_t max)
{
  enum err e;

  for (;;) {
    if ((e = take(h, rs, (size_t)-1, max)))
      return e;
    if ((e = raw_read(h)))
      return e == ERR_IO ? ERR_OK : e;
  }
}

/* Reads the body as the head says; *keep says whether the connection may
 * serve another request. */
static enum err read_body(struct http *h, const struct http_req *rq, struct http_resp *rs,
                          size_t max, int *keep)
{
  char v[64];
  int http10 = strncmp(buf_str(&rs->head), "HTTP/1.0", 8) == 0;

  *keep = !http10;
  if (http_resp_header(rs, "Connection", v, sizeof v))
    *keep = strcasestr(v, "close") ? 0 : strcasestr(v, "keep-alive") ? 1 : *keep;
  if ((rq->method && strcmp(rq->method, "HEAD") == 0) || rs->status / 100 == 1 ||
      rs->status == 204 || rs->status == 304)
    return ERR_OK;
  if (http_resp_header(rs, "Transfer-Encoding", v, sizeof v) && strcasestr(v, "chunked"))
    return body_chunked(h, rs, max);
  if (http_resp_header(rs, "Content-Length", v, sizeof v)) {
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (end == v || *end)
      return fail(h, ERR_NET, "malformed answer: bad Content-Length");
    if (n > max)
      return fail(h, ERR_TOOBIG, "answer larger than %zu bytes", max);
    return body_length(h, rs, (size_t)n, max);
  }
  *keep = 0;
  return body_to_eof(h, rs, max);
}

/* ---- the request -------------------------------------------------------- */

static enum err build_head(const struct http_req *rq, const struct http_url *u, struct buf *b)
{
  const char *m = rq->method ? rq->method : rq->body ? "POST" : "GET";
  int ipv6 = strchr(u->host, ':') != NULL;
  int dflt = strcmp(u->port, u->tls ? "443" : "80") == 0;
  enum err e;

  e = buf_printf(b, "%s %s HTTP/1.1\r\nHost: %s%s%s%s%s\r\n", m, u->target, ipv6 ? "[" : "",
                 u->host, ipv6 ? "]" : "", dflt ? "" : ":", dflt ? "" : u->port);
  for (size_t i = 0; !e && rq->headers && rq->headers[i]; i++)
    e = buf_printf(b, "%s\r\n", rq->headers[i]);
  if (!e && (rq->body || strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0))
    e = buf_printf(b, "Content-Length: %zu\r\n", rq->body ? rq->body_len : 0);
  if (!e)
    e = buf_appends(b, "\r\n");
  return e;
}

/* One try on the current or a new connection. */
static enum err attempt(struct http *h, const struct http_req *rq, const struct http_url *u,
                        const struct buf *head, int body_in_head, struct http_resp *rs,
                        int *reused)
{
  size_t max = rq->max_response ? rq->max_response : HTTP_BODY_DEFAULT;
  int keep = 0;
  enum err e;

  h->got = 0;
  if ((e = conn_get(h, u, rq->connect_timeout_ms > 0 ? rq->connect_timeout_ms
                                                     : HTTP_CONNECT_DEFAULT_MS, reused)))
    return e;
  h->rx_off = h->rx_len = 0;
  if ((e = raw_write(h, head->data, head->len)) ||
      (!body_in_head && rq->body_len && (e = raw_write(h, rq->body, rq->body_len))))
    goto out;
  do {                                        /* 1xx answers come before the real one */
    buf_clear(&rs->head);
    rs->status = 0;
    if ((e = read_head(h, rs)))
      goto out;
  } while (rs->status / 100 == 1);
  e = read_body(h, rq, rs, max, &keep);
out:
  if (e || !keep || h->rx_off != h->rx_len)
    http_close(h);
  return e;
}

enum err http_do(struct http *h, const struct http_req *rq, struct http_resp *rs)
{
  struct buf head = BUF_INIT(HTTP_HEAD_MAX + 8192);
  struct http_url u;
  int reused = 0;
  enum err e;

  memset(rs, 0, sizeof *rs);
  buf_init(&rs->head, HTTP_HEAD_MAX);
  buf_init(&rs->body, rq->max_response ? rq->max_response : HTTP_BODY_DEFAULT);
  h->err[0] = 0;
  if (!rq->url || url_parse(rq->url, &u))
    return fail(h, ERR_INVAL, "not an http:// or https:// URL");
  if ((e = build_head(rq, &u, &head))) {
    buf_release(&head);
    return fail(h, e, "request headers too large");
  }
  /* A small body goes in the same write as the head: one segment, not two. */
  int body_in_head = rq->body && rq->body_len <= HTTP_READ_CHUNK &&
                     buf_append(&head, rq->body, rq->body_len) == ERR_OK;
  h->deadline = rq->timeout_ms > 0 ? now_ms() + rq->timeout_ms : 0;
  e = attempt(h, rq, &u, &head, body_in_head, rs, &reused);
  if (e == ERR_NET && reused && !h->got) {   /* the server dropped the idle connection */
    buf_clear(&rs->head);
    buf_clear(&rs->body);
    rs->status = 0;
    e = attempt(h, rq, &u, &head, body_in_head, rs, &reused);
  }
  buf_release(&head);
  if (!e)
    h->err[0] = 0;
  else if (!h->err[0])
    fail(h, e, "%s", err_str(e));
  return e;
}

/* ---- handles, answers --------------------------------------------------- */

struct http *http_new(void)
{
  struct http *h = calloc(1, sizeof *h);

  if (h)
    h->fd = -1;
  return h;
}

void http_free(struct http *h)
{
  if (!h)
    return;
  http_close(h);
  if (h->conf_ready)
    mbedtls_ssl_config_free(&h->conf);
  if (h->own_ca_set)
    mbedtls_x509_crt_free(&h->own_ca);
  sess_drop(h);
  free(h->sess_path);
  free(h);
}

enum err http_set_session_file(struct http *h, const char *path)
{
  char *p = path ? strdup(path) : NULL;

  if (path && !p)
    return ERR_NOMEM;
  free(h->sess_path);
  h->sess_path = p;
  h->sess_loaded = 0;
  return ERR_OK;
}

void http_set_cancel(struct http *h, int (*fn)(void *ud), void *ud)
{
  h->cancel = fn;
  h->cancel_ud = ud;
}

enum err http_set_ca_file(struct http *h, const char *path)
{
  http_close(h);
  if (h->conf_ready)
    mbedtls_ssl_config_free(&h->conf);
  h->conf_ready = 0;
  if (h->own_ca_set)
    mbedtls_x509_crt_free(&h->own_ca);
  mbedtls_x509_crt_init(&h->own_ca);
  h->own_ca_set = 1;
  sess_drop(h);
  if (mbedtls_x509_crt_parse_file(&h->own_ca, path) < 0 || !h->own_ca.version)
    return fail(h, ERR_IO, "cannot read CA file '%.150s'", path);
  return ERR_OK;
}

const char *http_errstr(const struct http *h) { return h->err; }
unsigned http_connects(const struct http *h) { return h->connects; }

void http_resp_release(struct http_resp *rs)
{
  if (!rs)
    return;
  buf_release(&rs->head);
  buf_release(&rs->body);
  rs->status = 0;
}

int http_resp_header(const struct http_resp *rs, const char *name, char *out, size_t n)
{
  const char *s = buf_str(&rs->head), *line = strstr(s, "\r\n");
  size_t nl = strlen(name);

  while (line && line[2]) {
    line += 2;
    const char *end = strstr(line, "\r\n");
    if (!end)
      break;
    if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
      const char *v = line + nl + 1;
      const char *e = end;
      while (v < e && (*v == ' ' || *v == '\t'))
        v++;
      while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
      snprintf(out, n, "%.*s", (int)(e - v), v);
      return 1;
    }
    line = end;
  }
  if (n)
    out[0] = 0;
  return 0;
}

/* ---- multipart/form-data ------------------------------------------------ */

void http_form_init(struct http_form *f, size_t max)
{
  unsigned char r[12];

  memset(f, 0, sizeof *f);
  buf_init(&f->body, max);
  if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
    uint64_t x = (uint64_t)now_ms() ^ (uint64_t)(uintptr_t)f;
    memcpy(r, &x, sizeof x);
  }
  snprintf(f->boundary, sizeof f->boundary, "skynet-");
  for (size_t i = 0; i < sizeof r; i++)
    snprintf(f->boundary + 7 + 2 * i, 3, "%02x", r[i]);
  snprintf(f->content_type, sizeof f->content_type,
           "Content-Type: multipart/form-data; boundary=%s", f->boundary);
}

/* Whether s is safe inside a quoted header parameter. */
static int form_name_ok(const char *s)
{
  for (; s && *s; s++)
    if (*s == '"' || *s == '\r' || *s == '\n' || *s == '\\')
      return 0;
  return 1;
}

enum err http_form_add(struct http_form *f, const char *name, const char *filename,
                       const char *type, const void *data, size_t len)
{
  enum err e;

  if (!name || !form_name_ok(name) || !form_name_ok(filename) || !form_name_ok(type))
    return ERR_INVAL;
  if (len >= strlen(f->boundary) && memmem(data, len, f->boundary, strlen(f->boundary)))
    return ERR_INVAL;                         /* 2^-96: never in practice */
  e = buf_printf(&f->body, "--%s\r\nContent-Disposition: form-data; name=\"%s\"", f->boundary,
                 name);
  if (!e && filename)
    e = buf_printf(&f->body, "; filename=\"%s\"", filename);
  if (!e && type)
    e = buf_printf(&f->body, "\r\nContent-Type: %s", type);
  if (!e)
    e = buf_appends(&f->body, "\r\n\r\n");
  if (!e)
    e = buf_append(&f->body, data, len);
  if (!e)
    e = buf_appends(&f->body, "\r\n");
  return e;
}

enum err http_form_finish(struct http_form *f)
{
  return buf_printf(&f->body, "--%s--\r\n", f->boundary);
}

void http_form_release(struct http_form *f)
{
  buf_release(&f->body);
}
