/*
 * http.h -- the HTTP client of the C core, over libcurl. Knows nothing of Lua.
 *
 * A ps_client owns:
 *  - a CURLSH share (connection cache, TLS sessions, DNS) used by every
 *    transfer, so sequential requests keep their connection alive;
 *  - a CURLM multi handle (HTTP/2 multiplexing on) that runs every
 *    transfer, one at a time (ps_client_perform with n = 1) or many at once;
 *  - a pool of easy handles, reset and reused between transfers;
 *  - copies of its options; PEM texts are wiped before they are freed.
 *
 * Mechanics only: no retries, no redirects followed, no logging. Nothing
 * here prints, exits or aborts; every allocation is checked.
 * Buffers that held request headers, response headers or bodies are wiped
 * with explicit_bzero before being freed.
 */
#ifndef PULLSECRET_HTTP_H
#define PULLSECRET_HTTP_H

#include <stddef.h>

/* Error kinds, as the Lua layer names them. */
typedef enum {
  PS_OK = 0,
  PS_ERR_TRANSPORT,
  PS_ERR_TLS,
  PS_ERR_TIMEOUT,
  PS_ERR_TOO_LARGE,
  PS_ERR_INPUT
} ps_kind;

const char *ps_kind_name(ps_kind kind);

typedef struct {
  ps_kind kind;
  long code;              /* the libcurl code, or 0 for our own input checks */
  char message[256];      /* one line; never contains request headers or bodies */
} ps_error;

/* Client options. Strings are NUL-terminated and copied by ps_client_new;
 * NULL means unset. PEM texts carry their length. */
typedef struct {
  const char *ca_file, *cert_file, *key_file;
  const char *ca_pem, *cert_pem, *key_pem;
  size_t ca_pem_len, cert_pem_len, key_pem_len;
  const char *proxy;
  const char *user_agent;
  const char *const *connect_to;   /* "HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT" */
  size_t n_connect_to;
  int insecure;                    /* 1: no peer or host name verification */
  int http2;                       /* 1: offer h2 over TLS (ALPN) */
} ps_client_opts;

typedef struct {
  const char *name, *value;
  size_t name_len, value_len;
} ps_header;

/* One request. Pointers are borrowed for the duration of ps_client_perform. */
typedef struct {
  const char *method; size_t method_len;
  const char *url; size_t url_len;
  const ps_header *headers; size_t n_headers;
  const char *body; size_t body_len;   /* body == NULL: no body */
  long timeout_ms, connect_timeout_ms;
  size_t max_body_bytes;
} ps_request;

#define PS_VERSION "0.1"
#define PS_DEFAULT_USER_AGENT "pullsecret/" PS_VERSION
#define PS_DEFAULT_TIMEOUT_MS 30000L
#define PS_DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define PS_DEFAULT_MAX_BODY_BYTES ((size_t)16 * 1024 * 1024)

typedef struct {
  char *data;
  size_t len, cap;
} ps_buf;

/* The outcome of one request: err.kind == PS_OK, or an error. */
typedef struct {
  ps_error err;
  long status;
  const char *http_version;     /* "1.0", "1.1", "2", "3" (static) */
  double seconds;
  ps_buf body;
  ps_buf headers;               /* n_headers entries; read them with ps_response_next_header */
  size_t n_headers;
} ps_response;

typedef struct ps_client ps_client;

/* Returns NULL with *err set (out of memory, libcurl init failure). */
ps_client *ps_client_new(const ps_client_opts *opts, ps_error *err);

/* Releases everything; wipes the copies of PEM texts. NULL is fine. */
void ps_client_free(ps_client *c);

/* Runs n requests, at most `concurrency` at a time, and fills resps[i] for
 * reqs[i] (resps must be zeroed by the caller, and later released with
 * ps_response_clear). A request refused by the input checks gets kind
 * PS_ERR_INPUT and never reaches the network. Returns 0, or -1 when
 * nothing could be run at all (each response then holds the error). */
int ps_client_perform(ps_client *c, const ps_request *reqs, ps_response *resps,
                      size_t n, size_t concurrency);

/* Iterates over the headers of the final response, in received order:
 * start with *pos = 0; returns 1 and sets name/value (names lower-cased,
 * values without surrounding blanks), or 0 after the last one. */
int ps_response_next_header(const ps_response *r, size_t *pos, const char **name, size_t *name_len,
                            const char **value, size_t *value_len);

/* Wipes and frees the buffers of a response. */
void ps_response_clear(ps_response *r);

/* Input checks, exposed for the binding and for fuzzing. Return 0 or -1
 * with a message in err (kind PS_ERR_INPUT, code 0). */
int ps_check_request(const ps_request *req, ps_error *err);

typedef struct {
  const char *curl_version, *ssl_version;
  int http2, tls;
} ps_version_info;

void ps_version(ps_version_info *info);

/* curl_global_init / cleanup, reference counted by libcurl. */
int ps_global_init(void);
void ps_global_cleanup(void);

#endif
