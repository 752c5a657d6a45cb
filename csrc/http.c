/* http.c -- the HTTP client over libcurl; see http.h. Knows nothing of Lua. */
#include "http.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#define IDLE_HANDLES_KEPT 16
#define PS_MAX_METHOD_LEN 31

struct ps_client {
  CURLSH *share;
  CURLM *multi;
  CURL **idle;                   /* reusable easy handles */
  size_t n_idle;
  char *ca_file, *cert_file, *key_file, *proxy, *user_agent;
  ps_buf ca_pem, cert_pem, key_pem;
  struct curl_slist *connect_to;
  int insecure, http2;
};

/* One running transfer. */
typedef struct {
  ps_client *client;
  const ps_request *req;
  ps_response *resp;
  CURL *easy;
  struct curl_slist *headers;
  long status;                   /* status of the response being received */
  size_t last_value_len_at;      /* offset of the last header's value length */
  int too_large, out_of_memory, is_head, in_use;
  char errbuf[CURL_ERROR_SIZE];
} xfer;

/* ------------------------------------------------------------- buffers */

static void buf_free(ps_buf *b)
{
  if (b->data) {
    explicit_bzero(b->data, b->cap);
    free(b->data);
  }
  b->data = NULL;
  b->len = b->cap = 0;
}

/* Makes room for `extra` more bytes: geometric growth; the old block is
 * wiped before it is freed (so no realloc). Returns 0 or -1. */
static int buf_reserve(ps_buf *b, size_t extra)
{
  size_t need, cap;
  char *p;
  if (extra <= b->cap - b->len) return 0;
  if (extra > SIZE_MAX - b->len) return -1;
  need = b->len + extra;
  cap = b->cap < 256 ? 256 : b->cap;
  while (cap < need) {
    if (cap > SIZE_MAX / 2) { cap = need; break; }
    cap *= 2;
  }
  p = malloc(cap);
  if (!p) return -1;
  if (b->data) {
    memcpy(p, b->data, b->len);
    explicit_bzero(b->data, b->cap);
    free(b->data);
  }
  b->data = p;
  b->cap = cap;
  return 0;
}

static int buf_add(ps_buf *b, const void *p, size_t n)
{
  if (buf_reserve(b, n) != 0) return -1;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static char *dup_str(const char *s)
{
  size_t n;
  char *p;
  if (!s) return NULL;
  n = strlen(s) + 1;
  p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

static void free_str(char **s)
{
  if (*s) {
    explicit_bzero(*s, strlen(*s));
    free(*s);
    *s = NULL;
  }
}

static void wipe_slist(struct curl_slist *l)
{
  struct curl_slist *i;
  for (i = l; i; i = i->next)
    if (i->data) explicit_bzero(i->data, strlen(i->data));
  curl_slist_free_all(l);
}

/* --------------------------------------------------------------- errors */

const char *ps_kind_name(ps_kind kind)
{
  switch (kind) {
  case PS_OK: return "ok";
  case PS_ERR_TLS: return "tls";
  case PS_ERR_TIMEOUT: return "timeout";
  case PS_ERR_TOO_LARGE: return "too_large";
  case PS_ERR_INPUT: return "input";
  case PS_ERR_TRANSPORT: break;
  }
  return "transport";
}

static void set_error(ps_error *err, ps_kind kind, long code, const char *fmt, ...)
{
  va_list ap;
  size_t i;
  err->kind = kind;
  err->code = code;
  va_start(ap, fmt);
  (void)vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
  for (i = 0; err->message[i]; i++)          /* one line */
    if ((unsigned char)err->message[i] < 0x20) err->message[i] = ' ';
}

static ps_kind kind_of(CURLcode rc)
{
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return PS_ERR_TIMEOUT;
  case CURLE_SSL_CONNECT_ERROR: case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED: case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER: case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_USE_SSL_FAILED: case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_CACERT_BADFILE: case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_CRL_BADFILE: case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH: case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CLIENTCERT:
    return PS_ERR_TLS;
  case CURLE_UNSUPPORTED_PROTOCOL: case CURLE_URL_MALFORMAT:
    return PS_ERR_INPUT;
  case CURLE_FILESIZE_EXCEEDED:
    return PS_ERR_TOO_LARGE;
  default:
    return PS_ERR_TRANSPORT;
  }
}

/* ---------------------------------------------------------- input checks */

static int is_tchar(unsigned char c)
{
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return 1;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_token(const char *s, size_t n)
{
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++)
    if (!is_tchar((unsigned char)s[i])) return 0;
  return 1;
}

int ps_check_request(const ps_request *req, ps_error *err)
{
  size_t i, j;
  if (!is_token(req->method, req->method_len)) {
    set_error(err, PS_ERR_INPUT, 0, "method is not an HTTP token");
    return -1;
  }
  if (req->method_len > PS_MAX_METHOD_LEN) {
    set_error(err, PS_ERR_INPUT, 0, "method is longer than %d characters", PS_MAX_METHOD_LEN);
    return -1;
  }
  for (i = 0; i < req->url_len; i++) {
    unsigned char c = (unsigned char)req->url[i];
    if (c == '\r' || c == '\n' || c == 0) {
      set_error(err, PS_ERR_INPUT, 0, "URL contains CR, LF or NUL (at position %lu)",
                (unsigned long)i + 1);
      return -1;
    }
    if (c <= 0x20 || c == 0x7f) {
      set_error(err, PS_ERR_INPUT, 0, "URL contains a space or control character (at position %lu)",
                (unsigned long)i + 1);
      return -1;
    }
  }
  if (!((req->url_len > 7 && strncasecmp(req->url, "http://", 7) == 0) ||
        (req->url_len > 8 && strncasecmp(req->url, "https://", 8) == 0))) {
    set_error(err, PS_ERR_INPUT, 0, "URL must start with http:// or https://");
    return -1;
  }
  for (i = 0; i < req->n_headers; i++) {
    const ps_header *h = &req->headers[i];
    if (!is_token(h->name, h->name_len)) {
      set_error(err, PS_ERR_INPUT, 0, "a header name is not an HTTP token");
      return -1;
    }
    for (j = 0; j < h->value_len; j++) {
      unsigned char c = (unsigned char)h->value[j];
      if (c == '\r' || c == '\n' || c == 0) {
        set_error(err, PS_ERR_INPUT, 0, "header %.*s: value contains CR, LF or NUL",
                  (int)(h->name_len > 64 ? 64 : h->name_len), h->name);
        return -1;
      }
      if ((c < 0x20 && c != '\t') || c == 0x7f) {
        set_error(err, PS_ERR_INPUT, 0, "header %.*s: value contains a control character",
                  (int)(h->name_len > 64 ? 64 : h->name_len), h->name);
        return -1;
      }
    }
  }
  if (req->body && req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0) {
    set_error(err, PS_ERR_INPUT, 0, "a HEAD request cannot have a body");
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------ callbacks */

static int name_is(const char *p, size_t n, const char *lower)
{
  size_t i;
  if (strlen(lower) != n) return 0;
  for (i = 0; i < n; i++) {
    char c = p[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != lower[i]) return 0;
  }
  return 1;
}

static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* Adds one header entry: [size_t name_len][name][size_t value_len][value]. */
static int add_header(xfer *x, const char *name, size_t nlen, const char *value, size_t vlen)
{
  ps_buf *b = &x->resp->headers;
  size_t i;
  if (buf_reserve(b, 2 * sizeof(size_t) + nlen + vlen) != 0) return -1;
  memcpy(b->data + b->len, &nlen, sizeof nlen);
  b->len += sizeof nlen;
  for (i = 0; i < nlen; i++) {
    char c = name[i];
    b->data[b->len++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  x->last_value_len_at = b->len;
  memcpy(b->data + b->len, &vlen, sizeof vlen);
  b->len += sizeof vlen;
  buf_add(b, value, vlen);                     /* room reserved above */
  x->resp->n_headers++;
  return 0;
}

/* An obsolete folded continuation line: appended to the last value. */
static int fold_header(xfer *x, const char *p, size_t n)
{
  ps_buf *b = &x->resp->headers;
  size_t vlen;
  if (x->resp->n_headers == 0) return 0;
  memcpy(&vlen, b->data + x->last_value_len_at, sizeof vlen);
  if (buf_add(b, " ", 1) != 0 || buf_add(b, p, n) != 0) return -1;
  vlen += 1 + n;
  memcpy(b->data + x->last_value_len_at, &vlen, sizeof vlen);
  return 0;
}

static int over_cap(const xfer *x, const char *v, size_t n)
{
  size_t i, len = 0;
  if (x->is_head || x->status < 200 || x->status == 204 || x->status == 304) return 0;
  for (i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return 0;     /* not a plain length: the body check decides */
    if (len > (SIZE_MAX - 9) / 10) return 1;
    len = len * 10 + (size_t)(v[i] - '0');
  }
  return n > 0 && len > x->req->max_body_bytes;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
  xfer *x = ud;
  size_t n = size * nmemb, len = n, i;
  const char *colon, *name, *value;
  size_t nlen, vlen;
  while (len > 0 && (p[len - 1] == '\r' || p[len - 1] == '\n')) len--;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    /* A new response (after 1xx, or a proxy's): forget the previous headers. */
    ps_buf *b = &x->resp->headers;
    if (b->data) explicit_bzero(b->data, b->len);
    b->len = 0;
    x->resp->n_headers = 0;
    x->status = 0;
    for (i = 5; i < len && p[i] != ' '; i++) {}
    for (; i < len && p[i] == ' '; i++) {}
    for (; i < len && p[i] >= '0' && p[i] <= '9' && x->status < 1000; i++)
      x->status = x->status * 10 + (p[i] - '0');
    return n;
  }
  if (len == 0) return n;
  if (is_blank(p[0])) {
    for (i = 0; i < len && is_blank(p[i]); i++) {}
    while (len > i && is_blank(p[len - 1])) len--;
    if (fold_header(x, p + i, len - i) != 0) { x->out_of_memory = 1; return 0; }
    return n;
  }
  colon = memchr(p, ':', len);
  if (!colon) return n;                        /* not a header line: ignored */
  name = p;
  nlen = (size_t)(colon - p);
  while (nlen > 0 && is_blank(name[nlen - 1])) nlen--;
  value = colon + 1;
  vlen = len - (size_t)(value - p);
  while (vlen > 0 && is_blank(*value)) { value++; vlen--; }
  while (vlen > 0 && is_blank(value[vlen - 1])) vlen--;
  if (name_is(name, nlen, "content-length") && over_cap(x, value, vlen)) {
    x->too_large = 1;                          /* refuse before reading the body */
    return 0;
  }
  if (add_header(x, name, nlen, value, vlen) != 0) { x->out_of_memory = 1; return 0; }
  return n;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
  xfer *x = ud;
  ps_buf *b = &x->resp->body;
  size_t n = size * nmemb;
  if (n > x->req->max_body_bytes || b->len > x->req->max_body_bytes - n) {
    x->too_large = 1;
    return n ? 0 : 1;                          /* any value != n aborts */
  }
  if (buf_add(b, p, n) != 0) {
    x->out_of_memory = 1;
    return n ? 0 : 1;
  }
  return n;
}

/* --------------------------------------------------------------- client */

static int copy_pem(ps_buf *dst, const char *pem, size_t len)
{
  if (!pem) return 0;
  return buf_add(dst, pem, len);
}

void ps_client_free(ps_client *c)
{
  size_t i;
  if (!c) return;
  for (i = 0; i < c->n_idle; i++) curl_easy_cleanup(c->idle[i]);
  free(c->idle);
  if (c->multi) curl_multi_cleanup(c->multi);
  if (c->share) curl_share_cleanup(c->share);
  free_str(&c->ca_file);
  free_str(&c->cert_file);
  free_str(&c->key_file);
  free_str(&c->proxy);
  free_str(&c->user_agent);
  buf_free(&c->ca_pem);
  buf_free(&c->cert_pem);
  buf_free(&c->key_pem);
  if (c->connect_to) wipe_slist(c->connect_to);
  explicit_bzero(c, sizeof *c);
  free(c);
}

ps_client *ps_client_new(const ps_client_opts *o, ps_error *err)
{
  ps_client *c = calloc(1, sizeof *c);
  size_t i;
  if (!c) goto oom;
  c->insecure = o->insecure;
  c->http2 = o->http2;
  c->idle = calloc(IDLE_HANDLES_KEPT, sizeof *c->idle);
  if (!c->idle) goto oom;
  if ((o->ca_file && !(c->ca_file = dup_str(o->ca_file))) ||
      (o->cert_file && !(c->cert_file = dup_str(o->cert_file))) ||
      (o->key_file && !(c->key_file = dup_str(o->key_file))) ||
      (o->proxy && !(c->proxy = dup_str(o->proxy))) ||
      !(c->user_agent = dup_str(o->user_agent ? o->user_agent : PS_DEFAULT_USER_AGENT)) ||
      copy_pem(&c->ca_pem, o->ca_pem, o->ca_pem_len) != 0 ||
      copy_pem(&c->cert_pem, o->cert_pem, o->cert_pem_len) != 0 ||
      copy_pem(&c->key_pem, o->key_pem, o->key_pem_len) != 0)
    goto oom;
  for (i = 0; i < o->n_connect_to; i++) {
    struct curl_slist *l = curl_slist_append(c->connect_to, o->connect_to[i]);
    if (!l) goto oom;
    c->connect_to = l;
  }
  c->share = curl_share_init();
  c->multi = curl_multi_init();
  if (!c->share || !c->multi) goto oom;
  if (curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK ||
      curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
      curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
    set_error(err, PS_ERR_TRANSPORT, 0, "libcurl refused to set up a shared connection cache");
    ps_client_free(c);
    return NULL;
  }
  if (c->http2) curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  else curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
  return c;
oom:
  set_error(err, PS_ERR_TRANSPORT, CURLE_OUT_OF_MEMORY, "out of memory");
  ps_client_free(c);
  return NULL;
}

/* --------------------------------------------------------------- transfers */

static struct curl_blob blob_of(const ps_buf *b)
{
  struct curl_blob blob;
  blob.data = b->data;
  blob.len = b->len;
  blob.flags = CURL_BLOB_NOCOPY;               /* the client's copy outlives the handle's use */
  return blob;
}

static int has_header(const ps_request *req, const char *lower)
{
  size_t i;
  for (i = 0; i < req->n_headers; i++)
    if (name_is(req->headers[i].name, req->headers[i].name_len, lower)) return 1;
  return 0;
}

/* Appends "Name: value" (or "Name;" for an empty value, libcurl's way of
 * sending an empty header) to x->headers. */
static int add_request_header(xfer *x, const char *name, size_t nlen, const char *value, size_t vlen)
{
  struct curl_slist *l;
  char *line;
  if (nlen > SIZE_MAX / 2 || vlen > SIZE_MAX / 2) return -1;
  line = malloc(nlen + vlen + 3);
  if (!line) return -1;
  memcpy(line, name, nlen);
  if (vlen == 0 && value) {
    line[nlen] = ';';
    line[nlen + 1] = '\0';
  } else {
    line[nlen] = ':';
    line[nlen + 1] = ' ';
    if (vlen) memcpy(line + nlen + 2, value, vlen);
    line[nlen + 2 + vlen] = '\0';
    if (!value) line[nlen + 1] = '\0';       /* "Name:" removes a libcurl default header */
  }
  l = curl_slist_append(x->headers, line);
  explicit_bzero(line, nlen + vlen + 3);
  free(line);
  if (!l) return -1;
  x->headers = l;
  return 0;
}

static int is_https(const char *url)
{
  static const char scheme[] = "https://";
  size_t i;
  for (i = 0; i < sizeof scheme - 1; i++) {
    char ch = url[i];
    if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
    if (ch != scheme[i]) return 0;
  }
  return 1;
}

#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(h, opt, val); } while (0)

/* Prepares x->easy for x->req. Returns CURLE_OK or the failing code. */
static CURLcode setup_easy(xfer *x)
{
  ps_client *c = x->client;
  const ps_request *req = x->req;
  CURL *h = x->easy;
  CURLcode rc = CURLE_OK;
  char *url;
  size_t i;
  struct curl_blob blob;

  curl_easy_reset(h);
  SET(CURLOPT_SHARE, c->share);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_PRIVATE, (void *)x);
  SET(CURLOPT_ERRORBUFFER, x->errbuf);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_FOLLOWLOCATION, 0L);
  SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  SET(CURLOPT_HTTP_VERSION, c->http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
  /* Waiting for a connection that may multiplex only pays over TLS, where
   * HTTP/2 is negotiated: over plain HTTP it would serialise two requests. */
  if (c->http2 && is_https(req->url)) SET(CURLOPT_PIPEWAIT, 1L);
  SET(CURLOPT_TIMEOUT_MS, req->timeout_ms);
  SET(CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
  SET(CURLOPT_USERAGENT, c->user_agent);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, (void *)x);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, (void *)x);

  /* TLS */
  SET(CURLOPT_SSL_VERIFYPEER, c->insecure ? 0L : 1L);
  SET(CURLOPT_SSL_VERIFYHOST, c->insecure ? 0L : 2L);
  if (c->ca_pem.data) {
    blob = blob_of(&c->ca_pem);
    SET(CURLOPT_CAINFO, (char *)NULL);          /* only the given CAs, not the system store */
    SET(CURLOPT_CAPATH, (char *)NULL);
    SET(CURLOPT_CAINFO_BLOB, &blob);
  } else if (c->ca_file) {
    SET(CURLOPT_CAINFO, c->ca_file);
    SET(CURLOPT_CAPATH, (char *)NULL);
  }
  if (c->cert_pem.data) {
    blob = blob_of(&c->cert_pem);
    SET(CURLOPT_SSLCERT_BLOB, &blob);
    SET(CURLOPT_SSLCERTTYPE, "PEM");
  } else if (c->cert_file) {
    SET(CURLOPT_SSLCERT, c->cert_file);
    SET(CURLOPT_SSLCERTTYPE, "PEM");
  }
  if (c->key_pem.data) {
    blob = blob_of(&c->key_pem);
    SET(CURLOPT_SSLKEY_BLOB, &blob);
    SET(CURLOPT_SSLKEYTYPE, "PEM");
  } else if (c->key_file) {
    SET(CURLOPT_SSLKEY, c->key_file);
    SET(CURLOPT_SSLKEYTYPE, "PEM");
  }
  if (c->proxy) SET(CURLOPT_PROXY, c->proxy);
  if (c->connect_to) SET(CURLOPT_CONNECT_TO, c->connect_to);

  /* URL (a NUL-terminated copy; checked free of NULs already) */
  url = malloc(req->url_len + 1);
  if (!url) return CURLE_OUT_OF_MEMORY;
  memcpy(url, req->url, req->url_len);
  url[req->url_len] = '\0';
  SET(CURLOPT_URL, url);
  explicit_bzero(url, req->url_len);
  free(url);

  /* Method and body */
  x->is_head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
  if (x->is_head) {
    SET(CURLOPT_NOBODY, 1L);
  } else if (req->method_len == 3 && memcmp(req->method, "GET", 3) == 0 && !req->body) {
    SET(CURLOPT_HTTPGET, 1L);
  } else {
    int is_post = req->method_len == 4 && memcmp(req->method, "POST", 4) == 0;
    int wants_length = is_post || (req->method_len == 3 && memcmp(req->method, "PUT", 3) == 0) ||
                       (req->method_len == 5 && memcmp(req->method, "PATCH", 5) == 0);
    if (req->body || wants_length) {
      SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
      SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
    }
    if (!is_post) {
      char method[PS_MAX_METHOD_LEN + 1];
      if (req->method_len >= sizeof method) return CURLE_BAD_FUNCTION_ARGUMENT;
      memcpy(method, req->method, req->method_len);
      method[req->method_len] = '\0';
      SET(CURLOPT_CUSTOMREQUEST, method);       /* libcurl copies it */
    }
  }

  /* Request headers, plus: no libcurl-invented Content-Type or Expect. */
  for (i = 0; i < req->n_headers && rc == CURLE_OK; i++) {
    const ps_header *hd = &req->headers[i];
    if (add_request_header(x, hd->name, hd->name_len, hd->value, hd->value_len) != 0)
      rc = CURLE_OUT_OF_MEMORY;
  }
  if (rc == CURLE_OK && req->body && !has_header(req, "content-type") &&
      add_request_header(x, "Content-Type", 12, NULL, 0) != 0)
    rc = CURLE_OUT_OF_MEMORY;
  if (rc == CURLE_OK && !has_header(req, "expect") &&
      add_request_header(x, "Expect", 6, NULL, 0) != 0)
    rc = CURLE_OUT_OF_MEMORY;
  if (x->headers) SET(CURLOPT_HTTPHEADER, x->headers);
  return rc;
}

#undef SET

static CURL *take_handle(ps_client *c)
{
  if (c->n_idle > 0) return c->idle[--c->n_idle];
  return curl_easy_init();
}

static void give_handle(ps_client *c, CURL *h)
{
  if (!h) return;
  if (c->n_idle < IDLE_HANDLES_KEPT) {
    curl_easy_reset(h);                       /* drops our pointers into this transfer */
    c->idle[c->n_idle++] = h;
  } else {
    curl_easy_cleanup(h);
  }
}

static void release_xfer(xfer *x)
{
  if (x->headers) wipe_slist(x->headers);
  x->headers = NULL;
  give_handle(x->client, x->easy);
  x->easy = NULL;
  x->in_use = 0;
}

static void fail_transfer(xfer *x, CURLcode rc)
{
  ps_response *r = x->resp;
  if (x->too_large) {
    set_error(&r->err, PS_ERR_TOO_LARGE, rc,
              "response body larger than max_body_bytes (%lu bytes)",
              (unsigned long)x->req->max_body_bytes);
  } else if (x->out_of_memory || rc == CURLE_OUT_OF_MEMORY) {
    set_error(&r->err, PS_ERR_TRANSPORT, CURLE_OUT_OF_MEMORY, "out of memory");
  } else {
    ps_kind kind = kind_of(rc);
    /* A TLS alert after the handshake (TLS 1.3: the server refusing the
     * client certificate) reaches libcurl as a failed read or write. */
    if ((rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR) && is_https(x->req->url) &&
        strstr(x->errbuf, "SSL") && strstr(x->errbuf, " alert "))
      kind = PS_ERR_TLS;
    set_error(&r->err, kind, rc, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
  }
  buf_free(&r->body);
  buf_free(&r->headers);
  r->n_headers = 0;
}

static void finish_transfer(xfer *x, CURLcode rc)
{
  ps_response *r = x->resp;
  if (rc != CURLE_OK || x->too_large || x->out_of_memory) {
    fail_transfer(x, rc);
  } else {
    long status = 0, version = 0;
    double seconds = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &version);
    curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &seconds);
    r->err.kind = PS_OK;
    r->status = status;
    r->seconds = seconds;
    switch (version) {
    case CURL_HTTP_VERSION_1_0: r->http_version = "1.0"; break;
    case CURL_HTTP_VERSION_2_0: r->http_version = "2"; break;
    case CURL_HTTP_VERSION_3: r->http_version = "3"; break;
    default: r->http_version = "1.1"; break;
    }
  }
  release_xfer(x);
}

/* Starts request i in the free slot x; on failure records the error. */
static int start_transfer(ps_client *c, xfer *x, const ps_request *req, ps_response *resp)
{
  CURLcode rc;
  CURLMcode mc;
  memset(x, 0, sizeof *x);
  x->client = c;
  x->req = req;
  x->resp = resp;
  if (ps_check_request(req, &resp->err) != 0) return -1;
  x->easy = take_handle(c);
  if (!x->easy) {
    set_error(&resp->err, PS_ERR_TRANSPORT, CURLE_OUT_OF_MEMORY, "out of memory");
    return -1;
  }
  x->in_use = 1;
  rc = setup_easy(x);
  if (rc != CURLE_OK) {
    fail_transfer(x, rc);
    release_xfer(x);
    return -1;
  }
  mc = curl_multi_add_handle(c->multi, x->easy);
  if (mc != CURLM_OK) {
    set_error(&resp->err, PS_ERR_TRANSPORT, 0, "%s", curl_multi_strerror(mc));
    release_xfer(x);
    return -1;
  }
  return 0;
}

int ps_client_perform(ps_client *c, const ps_request *reqs, ps_response *resps,
                      size_t n, size_t concurrency)
{
  xfer *slots;
  size_t k, next = 0, active = 0, i;
  int result = 0;
  if (n == 0) return 0;
  k = concurrency == 0 ? 1 : concurrency;
  if (k > n) k = n;
  slots = calloc(k, sizeof *slots);
  if (!slots) {
    for (i = 0; i < n; i++)
      set_error(&resps[i].err, PS_ERR_TRANSPORT, CURLE_OUT_OF_MEMORY, "out of memory");
    return -1;
  }
  for (;;) {
    int running = 0, msgs = 0, done = 0;
    CURLMsg *m;
    CURLMcode mc;
    /* Fill the free slots. */
    for (i = 0; i < k && next < n; i++) {
      if (slots[i].in_use) continue;
      while (next < n) {
        size_t j = next++;
        if (start_transfer(c, &slots[i], &reqs[j], &resps[j]) == 0) { active++; break; }
      }
    }
    if (active == 0 && next >= n) break;
    mc = curl_multi_perform(c->multi, &running);
    if (mc != CURLM_OK) {
      for (i = 0; i < k; i++) {
        if (!slots[i].in_use) continue;
        curl_multi_remove_handle(c->multi, slots[i].easy);
        set_error(&slots[i].resp->err, PS_ERR_TRANSPORT, 0, "%s", curl_multi_strerror(mc));
        buf_free(&slots[i].resp->body);
        buf_free(&slots[i].resp->headers);
        slots[i].resp->n_headers = 0;
        release_xfer(&slots[i]);
      }
      for (; next < n; next++)
        set_error(&resps[next].err, PS_ERR_TRANSPORT, 0, "%s", curl_multi_strerror(mc));
      result = -1;
      break;
    }
    while ((m = curl_multi_info_read(c->multi, &msgs)) != NULL) {
      xfer *x = NULL;
      CURL *easy = m->easy_handle;
      CURLcode rc = m->data.result;
      if (m->msg != CURLMSG_DONE) continue;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
      curl_multi_remove_handle(c->multi, easy);
      if (x) {
        finish_transfer(x, rc);
        active--;
        done++;
      }
    }
    if (active > 0 && !done) {
      mc = curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
      (void)mc;
    }
  }
  explicit_bzero(slots, k * sizeof *slots);
  free(slots);
  return result;
}

int ps_response_next_header(const ps_response *r, size_t *pos, const char **name, size_t *name_len,
                            const char **value, size_t *value_len)
{
  const ps_buf *b = &r->headers;
  size_t p = *pos;
  if (!b->data || p + sizeof(size_t) > b->len) return 0;
  memcpy(name_len, b->data + p, sizeof(size_t));
  p += sizeof(size_t);
  *name = b->data + p;
  p += *name_len;
  memcpy(value_len, b->data + p, sizeof(size_t));
  p += sizeof(size_t);
  *value = b->data + p;
  p += *value_len;
  *pos = p;
  return 1;
}

void ps_response_clear(ps_response *r)
{
  buf_free(&r->body);
  buf_free(&r->headers);
  r->n_headers = 0;
}

/* --------------------------------------------------------------- misc */

void ps_version(ps_version_info *info)
{
  const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  info->curl_version = v->version;
  info->ssl_version = v->ssl_version;
  info->http2 = (v->features & CURL_VERSION_HTTP2) != 0;
  info->tls = (v->features & CURL_VERSION_SSL) != 0;
}

int ps_global_init(void)
{
  return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void ps_global_cleanup(void)
{
  curl_global_cleanup();
}
