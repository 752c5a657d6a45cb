/*
 * core.c -- luaopen_pullsecret_core: the Lua binding of the C core.
 *
 * Mechanics only; the policy (retries, redaction, error objects) lives in
 * the Lua layer. This file converts Lua values to the C APIs of http.h,
 * b64.h, encode.h and jwt.h and back; it holds no libcurl code.
 *
 *   local core = require "pullsecret.core"
 *   core.b64encode(s [, "url"])      -> string   ("url": URL-safe alphabet, no padding)
 *   core.b64decode(s [, "url"])      -> string | nil, "invalid base64 at position N (why)"
 *       Strict (see b64.h): no whitespace, no mixed alphabets, standard input
 *       must be padded, base64url padding optional but complete when present,
 *       non-zero unused bits refused. N is 1-based (input length + 1 when the
 *       input ends too early).
 *   core.urlencode(s)                -> RFC 3986 percent-encoding (A-Z a-z 0-9 - . _ ~ kept)
 *   core.form_encode{ {name, value}, ... } -> "name=value&..." (x-www-form-urlencoded, space -> '+')
 *   core.jwt_claims(token)           -> header_json, payload_json, signature | nil, errmsg
 *       No signature check. A 2-part token (signature missing) still returns
 *       its decoded header and payload texts, with signature = nil, so the Lua
 *       layer can report it malformed with a reason.
 *   core.go_json_string(s)           -> "\"...\"" exactly as Go's encoding/json writes it
 *   core.version()                   -> { curl=, http2=, tls=, ssl= }
 *   core.client{...}                 -> client   (see the client section below)
 *
 * Errors: wrong argument types raise ("client: 'insecure' must be a
 * boolean, got string"); bad data returns nil plus a message (codecs) or
 * an error table (client).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "b64.h"
#include "http.h"
#include "encode.h"
#include "jwt.h"

/* ---------------------------------------------------------------- codecs */

static int alphabet_arg(lua_State *L, int arg)
{
  static const char *const names[] = { "std", "url", NULL };
  return luaL_checkoption(L, arg, "std", names) == 1 ? PS_B64_URL : PS_B64_STD;
}

static int l_b64encode(lua_State *L)
{
  size_t n, len;
  const char *s = luaL_checklstring(L, 1, &n);
  int alphabet = alphabet_arg(L, 2);
  luaL_Buffer b;
  len = ps_b64_encoded_len(n, alphabet);
  if (len == 0 && n > 0) return luaL_error(L, "b64encode: input too long");
  ps_b64_encode((const unsigned char *)s, n, luaL_buffinitsize(L, &b, len), alphabet);
  luaL_pushresultsize(&b, len);
  return 1;
}

/* Pushes "invalid base64 at position N (why[: 'c'])"; pos is 0-based in s. */
static void push_b64_error(lua_State *L, const char *prefix, const char *s, size_t n,
                           size_t pos, size_t base, const char *why)
{
  char what[32] = "";
  if (pos < n && strstr(why, "character") == why) {
    unsigned char c = (unsigned char)s[pos];
    if (c > 0x20 && c < 0x7f) (void)snprintf(what, sizeof what, ": '%c'", c);
    else (void)snprintf(what, sizeof what, ": byte 0x%02x", c);
  }
  lua_pushfstring(L, "%sinvalid base64 at position %I (%s%s)", prefix,
                  (lua_Integer)base + (lua_Integer)pos + 1, why, what);
}

static int l_b64decode(lua_State *L)
{
  size_t n, outlen = 0, errpos = 0;
  const char *s = luaL_checklstring(L, 1, &n);
  int alphabet = alphabet_arg(L, 2);
  const char *why = NULL;
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, ps_b64_decoded_max(n));
  if (ps_b64_decode(s, n, out, &outlen, alphabet, &errpos, &why) != 0) {
    lua_pushnil(L);
    push_b64_error(L, "", s, n, errpos, 0, why);
    return 2;
  }
  luaL_pushresultsize(&b, outlen);
  return 1;
}

static int l_urlencode(lua_State *L)
{
  size_t n, len;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  if (n > ((size_t)-1) / 3) return luaL_error(L, "urlencode: input too long");
  len = ps_percent_encode(s, n, luaL_buffinitsize(L, &b, 3 * n), PS_PCT_URL);
  luaL_pushresultsize(&b, len);
  return 1;
}

static int l_form_encode(lua_State *L)
{
  lua_Integer i, count;
  size_t total = 0, o = 0;
  luaL_Buffer b;
  char *out;
  luaL_checktype(L, 1, LUA_TTABLE);
  count = (lua_Integer)lua_rawlen(L, 1);
  if (count > INT32_MAX / 2) return luaL_error(L, "form_encode: too many entries");
  lua_settop(L, 1);
  /* index 2: the names and values in a table of our own, so that nothing
   * run between the passes (a finalizer) can change what was sized. */
  lua_createtable(L, (int)(2 * count), 0);
  /* First pass: check every entry (errors name it) and size the output. */
  for (i = 1; i <= count; i++) {
    size_t nn, vn;
    if (lua_rawgeti(L, 1, i) != LUA_TTABLE)
      return luaL_error(L, "form_encode: entry %I must be a {name, value} table, got %s",
                        i, luaL_typename(L, -1));
    if (lua_rawgeti(L, -1, 1) != LUA_TSTRING || lua_rawgeti(L, -2, 2) != LUA_TSTRING)
      return luaL_error(L, "form_encode: entry %I must hold two strings {name, value}", i);
    lua_tolstring(L, -2, &nn);
    lua_tolstring(L, -1, &vn);
    if (nn > ((size_t)-1) / 8 || vn > ((size_t)-1) / 8 ||
        total > ((size_t)-1) / 2 - 3 * (nn + vn) - 2)
      return luaL_error(L, "form_encode: input too long");
    total += 3 * (nn + vn) + 2;
    lua_rawseti(L, 2, 2 * i);                     /* the value */
    lua_rawseti(L, 2, 2 * i - 1);                 /* the name */
    lua_pop(L, 1);
  }
  /* Second pass: the strings stay referenced by our table, so their
   * pointers remain valid after popping them. */
  out = luaL_buffinitsize(L, &b, total);
  for (i = 1; i <= count; i++) {
    size_t nn, vn;
    const char *name, *value;
    lua_rawgeti(L, 2, 2 * i - 1);
    lua_rawgeti(L, 2, 2 * i);
    name = lua_tolstring(L, -2, &nn);
    value = lua_tolstring(L, -1, &vn);
    lua_pop(L, 2);
    if (i > 1) out[o++] = '&';
    o += ps_percent_encode(name, nn, out + o, PS_PCT_FORM);
    out[o++] = '=';
    o += ps_percent_encode(value, vn, out + o, PS_PCT_FORM);
  }
  luaL_pushresultsize(&b, o);
  return 1;
}

/* Decodes segment k of a JWT into a new string on the stack; on failure
 * pushes an error message instead and returns 0. */
static int push_jwt_segment(lua_State *L, const char *tok,
                            const ps_jwt_parts *p, int k, const char *label)
{
  size_t outlen = 0, errpos = 0;
  const char *why = NULL;
  luaL_Buffer b;
  unsigned char *out;
  const char *pad = memchr(tok + p->off[k], '=', p->len[k]);
  if (pad) {                                     /* compact JWS segments are unpadded */
    lua_pushfstring(L, "invalid JWT %s: padding '=' at position %I (JWT segments are unpadded base64url)",
                    label, (lua_Integer)(pad - tok) + 1);
    return 0;
  }
  out = (unsigned char *)luaL_buffinitsize(L, &b, ps_b64_decoded_max(p->len[k]));
  if (ps_b64_decode(tok + p->off[k], p->len[k], out, &outlen, PS_B64_URL, &errpos, &why) != 0) {
    char prefix[48];
    (void)snprintf(prefix, sizeof prefix, "invalid JWT %s: ", label);
    push_b64_error(L, prefix, tok + p->off[k], p->len[k], errpos, p->off[k], why);
    return 0;
  }
  luaL_pushresultsize(&b, outlen);
  return 1;
}

/*
 * core.jwt_claims(token) -> header_json, payload_json, signature
 *                         | nil, errmsg
 * No signature check. The texts are returned as decoded, not parsed.
 * A 3-part token returns its signature segment (base64url text, possibly
 * empty). A 2-part token (signature missing, e.g. truncated) still returns
 * the decoded header and payload texts, with signature = nil: the Lua layer
 * decides it is malformed. Base64 errors name the 1-based position in the
 * whole token.
 */
static int l_jwt_claims(lua_State *L)
{
  size_t n;
  const char *tok = luaL_checklstring(L, 1, &n);
  const char *why = NULL;
  ps_jwt_parts p;
  if (ps_jwt_split(tok, n, &p, &why) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "invalid JWT: %s", why);
    return 2;
  }
  if (!push_jwt_segment(L, tok, &p, 0, "header")) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  if (!push_jwt_segment(L, tok, &p, 1, "payload")) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  if (p.has_signature) lua_pushlstring(L, tok + p.off[2], p.len[2]);
  else lua_pushnil(L);
  return 3;
}

static int l_go_json_string(lua_State *L)
{
  size_t n, len;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  if (n > PS_GO_JSON_MAX_INPUT) return luaL_error(L, "go_json_string: input too long");
  len = ps_go_json_string(s, n, luaL_buffinitsize(L, &b, 6 * n + 2));
  luaL_pushresultsize(&b, len);
  return 1;
}

static int l_version(lua_State *L)
{
  ps_version_info v;
  ps_version(&v);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, v.curl_version ? v.curl_version : "");
  lua_setfield(L, -2, "curl");
  lua_pushboolean(L, v.http2);
  lua_setfield(L, -2, "http2");
  lua_pushboolean(L, v.tls);
  lua_setfield(L, -2, "tls");
  if (v.ssl_version) {
    lua_pushstring(L, v.ssl_version);
    lua_setfield(L, -2, "ssl");
  }
  return 1;
}

/* ---------------------------------------------------------------- client */
/*
 *   local c = core.client{ ca_file=|ca_pem=, cert_file=|cert_pem=, key_file=|key_pem=,
 *                          insecure=false, proxy=nil, http2=true, user_agent="pullsecret/0.1",
 *                          connect_to={"host:port:addr:port", ...} }
 *     -> client | nil, err          (err: creation failed, e.g. out of memory)
 *   c:request{ method=, url=, headers={[name]=value}, body=, timeout_ms=30000,
 *              connect_timeout_ms=10000, max_body_bytes=16 MiB }
 *     -> { status=, headers={lower-cased name = values joined ", "},
 *          raw_headers={{name, value}, ...}, body=, http_version="1.1"|"2", seconds= }
 *      | nil, { kind="transport"|"tls"|"timeout"|"too_large"|"input", code=, message= }
 *     method defaults to "GET", or "POST" when a body is given. The request is
 *     sent as given: no Content-Type or Expect header is invented, redirects
 *     are not followed, 4xx/5xx are results. Refused before sending (kind
 *     "input", code 0): CR/LF/NUL or blanks in the URL, a scheme other than
 *     http/https, a method or header name that is not an HTTP token, CR/LF/NUL
 *     or other control characters (except tab) in a header value.
 *   c:batch({req, ...} [, {concurrency=8}]) -> { res | {error=err}, ... } in input order
 *   c:close()   idempotent; also __gc and __close. Afterwards: "client is closed".
 *
 * Argument type errors raise. The Lua values are converted into C
 * structures (pointing into Lua strings, arrays in Lua-owned userdata)
 * before any C resource is allocated, and C results live in a box whose
 * __gc frees them, so no raise can leak C memory.
 */

#define CLIENT_MT "pullsecret.core.client"
#define RESULTS_MT "pullsecret.core.results"
#define DEFAULT_CONCURRENCY 8

typedef struct { ps_client *c; } client_box;
typedef struct { ps_response *r; size_t n; } results_box;

/* Reads field `name` of the table at idx as an optional string. The value
 * is stored under the same name in the anchor table (absolute index): an
 * __index metamethod may have made it, and then nothing else references it,
 * so without the anchor the collector could free it while C points into it. */
static const char *opt_string(lua_State *L, int idx, const char *name, size_t *len,
                              const char *what, int anchor)
{
  const char *s;
  int t = lua_getfield(L, idx, name);
  if (len) *len = 0;
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  if (t != LUA_TSTRING)
    luaL_error(L, "%s: '%s' must be a string, got %s", what, name, luaL_typename(L, -1));
  s = lua_tolstring(L, -1, len);
  lua_setfield(L, anchor, name);                  /* pops it; the anchor keeps it alive */
  return s;
}

static const char *opt_path(lua_State *L, int idx, const char *name, const char *what,
                            int anchor)
{
  size_t len;
  const char *s = opt_string(L, idx, name, &len, what, anchor);
  if (s && strlen(s) != len) luaL_error(L, "%s: '%s' contains a NUL byte", what, name);
  return s;
}

/* A string option that goes into a request line or header: no control
 * characters at all (CR or LF would start a header of their own). */
static const char *opt_line(lua_State *L, int idx, const char *name, const char *what,
                            int anchor)
{
  size_t len, i;
  const char *s = opt_string(L, idx, name, &len, what, anchor);
  for (i = 0; s && i < len; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      luaL_error(L, "%s: '%s' contains a control character (byte %I)", what, name, (lua_Integer)i + 1);
  return s;
}

static int opt_boolean(lua_State *L, int idx, const char *name, int dflt, const char *what)
{
  int t = lua_getfield(L, idx, name), v = dflt;
  if (t == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
  else if (t != LUA_TNIL)
    luaL_error(L, "%s: '%s' must be a boolean, got %s", what, name, luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

static lua_Integer opt_integer(lua_State *L, int idx, const char *name, lua_Integer dflt,
                               lua_Integer min, lua_Integer max, const char *what)
{
  lua_Integer v = dflt;
  int t = lua_getfield(L, idx, name);
  if (t != LUA_TNIL) {
    int isint = 0;
    v = lua_tointegerx(L, -1, &isint);
    if (t != LUA_TNUMBER || !isint)
      luaL_error(L, "%s: '%s' must be an integer, got %s", what, name, luaL_typename(L, -1));
    if (v < min || v > max)
      luaL_error(L, "%s: '%s' must be between %I and %I", what, name, min, max);
  }
  lua_pop(L, 1);
  return v;
}

static void exclusive(lua_State *L, const void *a, const void *b, const char *an, const char *bn)
{
  if (a && b) luaL_error(L, "client: '%s' and '%s' are exclusive", an, bn);
}

static void push_error(lua_State *L, const ps_error *err)
{
  lua_createtable(L, 0, 3);
  lua_pushstring(L, ps_kind_name(err->kind));
  lua_setfield(L, -2, "kind");
  lua_pushinteger(L, err->code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, err->message);
  lua_setfield(L, -2, "message");
}

static int l_client(lua_State *L)
{
  ps_client_opts o;
  ps_error err;
  client_box *box;
  const char *what = "client";
  memset(&o, 0, sizeof o);
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_createtable(L, 0, 8);                       /* index 2: keeps the strings read alive */
  o.ca_file = opt_path(L, 1, "ca_file", what, 2);
  o.cert_file = opt_path(L, 1, "cert_file", what, 2);
  o.key_file = opt_path(L, 1, "key_file", what, 2);
  o.ca_pem = opt_string(L, 1, "ca_pem", &o.ca_pem_len, what, 2);
  o.cert_pem = opt_string(L, 1, "cert_pem", &o.cert_pem_len, what, 2);
  o.key_pem = opt_string(L, 1, "key_pem", &o.key_pem_len, what, 2);
  o.proxy = opt_line(L, 1, "proxy", what, 2);
  o.user_agent = opt_line(L, 1, "user_agent", what, 2);
  o.insecure = opt_boolean(L, 1, "insecure", 0, what);
  o.http2 = opt_boolean(L, 1, "http2", 1, what);
  exclusive(L, o.ca_file, o.ca_pem, "ca_file", "ca_pem");
  exclusive(L, o.cert_file, o.cert_pem, "cert_file", "cert_pem");
  exclusive(L, o.key_file, o.key_pem, "key_file", "key_pem");
  if ((o.ca_pem && o.ca_pem_len == 0) || (o.cert_pem && o.cert_pem_len == 0) ||
      (o.key_pem && o.key_pem_len == 0))
    return luaL_error(L, "client: a PEM option is an empty string");
  switch (lua_getfield(L, 1, "connect_to")) {   /* stays at index 3 */
  case LUA_TNIL:
    break;
  case LUA_TTABLE: {
    size_t i, n = lua_rawlen(L, 3);
    const char **list = lua_newuserdatauv(L, (n ? n : 1) * sizeof *list, 0);  /* index 4 */
    for (i = 0; i < n; i++) {
      size_t len;
      if (lua_rawgeti(L, 3, (lua_Integer)i + 1) != LUA_TSTRING)
        return luaL_error(L, "client: connect_to[%I] must be a string", (lua_Integer)i + 1);
      list[i] = lua_tolstring(L, -1, &len);
      if (strlen(list[i]) != len)
        return luaL_error(L, "client: connect_to[%I] contains a NUL byte", (lua_Integer)i + 1);
      lua_pop(L, 1);
    }
    o.connect_to = list;
    o.n_connect_to = n;
    break;
  }
  default:
    return luaL_error(L, "client: 'connect_to' must be a list of strings, got %s",
                      luaL_typename(L, -1));
  }
  /* All Lua conversions done; the box exists before the C client does. */
  box = lua_newuserdatauv(L, sizeof *box, 0);
  box->c = NULL;
  luaL_setmetatable(L, CLIENT_MT);
  box->c = ps_client_new(&o, &err);
  if (!box->c) {
    lua_pushnil(L);
    push_error(L, &err);
    return 2;
  }
  return 1;
}

static ps_client *check_client(lua_State *L)
{
  client_box *box = luaL_checkudata(L, 1, CLIENT_MT);
  if (!box->c) luaL_error(L, "client is closed");
  return box->c;
}

/* The one destroy function: close, __gc and __close. Idempotent. */
static int l_client_close(lua_State *L)
{
  client_box *box = luaL_checkudata(L, 1, CLIENT_MT);
  if (box->c) {
    ps_client *c = box->c;
    box->c = NULL;
    ps_client_free(c);
  }
  return 0;
}

static int l_client_tostring(lua_State *L)
{
  client_box *box = luaL_checkudata(L, 1, CLIENT_MT);
  if (box->c) lua_pushfstring(L, "pullsecret.core.client (%p)", (void *)box);
  else lua_pushliteral(L, "pullsecret.core.client (closed)");
  return 1;
}

static void free_results(results_box *box)
{
  if (box->r) {
    size_t i;
    for (i = 0; i < box->n; i++) ps_response_clear(&box->r[i]);
    free(box->r);
    box->r = NULL;
  }
}

static int l_results_gc(lua_State *L)
{
  free_results(luaL_checkudata(L, 1, RESULTS_MT));
  return 0;
}

/*
 * Converts the request table at idx into *req. Pushes one value, an anchor
 * table holding the Lua-owned header array and every string and table read
 * (fields may come from __index metamethods, referenced by nothing else),
 * which the caller must keep referenced until the request is done.
 */
static void parse_request(lua_State *L, int idx, ps_request *req, const char *what)
{
  size_t n = 0, i = 0;
  ps_header *hs;
  int anchor;
  lua_Integer max_cap = (size_t)LUA_MAXINTEGER < SIZE_MAX / 4 ? LUA_MAXINTEGER
                                                              : (lua_Integer)(SIZE_MAX / 4);
  idx = lua_absindex(L, idx);
  memset(req, 0, sizeof *req);
  lua_createtable(L, 0, 5);
  anchor = lua_gettop(L);
  req->url = opt_string(L, idx, "url", &req->url_len, what, anchor);
  if (!req->url) luaL_error(L, "%s: 'url' must be a string, got nil", what);
  req->body = opt_string(L, idx, "body", &req->body_len, what, anchor);
  req->method = opt_string(L, idx, "method", &req->method_len, what, anchor);
  if (!req->method) {
    req->method = req->body ? "POST" : "GET";
    req->method_len = strlen(req->method);
  }
  req->timeout_ms = (long)opt_integer(L, idx, "timeout_ms", PS_DEFAULT_TIMEOUT_MS, 1,
                                      INT32_MAX, what);
  req->connect_timeout_ms = (long)opt_integer(L, idx, "connect_timeout_ms",
                                              PS_DEFAULT_CONNECT_TIMEOUT_MS, 1, INT32_MAX, what);
  req->max_body_bytes = (size_t)opt_integer(L, idx, "max_body_bytes",
                                            (lua_Integer)PS_DEFAULT_MAX_BODY_BYTES, 0, max_cap,
                                            what);
  switch (lua_getfield(L, idx, "headers")) {
  case LUA_TNIL:
    break;
  case LUA_TTABLE:
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "%s: 'headers' must map strings to strings (got %s = %s)", what,
                   luaL_typename(L, -2), luaL_typename(L, -1));
      n++;
      lua_pop(L, 1);
    }
    break;
  default:
    luaL_error(L, "%s: 'headers' must be a table, got %s", what, luaL_typename(L, -1));
  }
  hs = lua_newuserdatauv(L, (n ? n : 1) * sizeof *hs, 0);
  /* The names and values are anchored themselves, not only through the
   * headers table: code run while later fields or requests are read (an
   * __index, a finalizer) may empty that table and collect them. */
  lua_createtable(L, (int)(2 * n), 0);
  if (n) {
    lua_pushnil(L);
    while (lua_next(L, -4)) {
      if (i < n) {
        hs[i].name = lua_tolstring(L, -2, &hs[i].name_len);
        hs[i].value = lua_tolstring(L, -1, &hs[i].value_len);
        lua_pushvalue(L, -2);
        lua_rawseti(L, -4, (lua_Integer)(2 * i + 1));
        lua_pushvalue(L, -1);
        lua_rawseti(L, -4, (lua_Integer)(2 * i + 2));
        i++;
      }
      lua_pop(L, 1);
    }
  }
  lua_setfield(L, anchor, "header_strings");
  lua_setfield(L, anchor, "header_array");
  lua_setfield(L, anchor, "headers");             /* the headers table (or nil) */
  req->headers = hs;
  req->n_headers = i;
}

/* Pushes the Lua form of one response: the result table or {error=err}
 * (in_batch), or nil, err. Returns the number of values pushed. */
static int push_response(lua_State *L, const ps_response *r, int in_batch)
{
  size_t pos = 0, nlen, vlen;
  const char *name, *value;
  lua_Integer k = 0;
  if (r->err.kind != PS_OK) {
    if (in_batch) {
      lua_createtable(L, 0, 1);
      push_error(L, &r->err);
      lua_setfield(L, -2, "error");
      return 1;
    }
    lua_pushnil(L);
    push_error(L, &r->err);
    return 2;
  }
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, r->status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, r->http_version ? r->http_version : "1.1");
  lua_setfield(L, -2, "http_version");
  lua_pushnumber(L, (lua_Number)r->seconds);
  lua_setfield(L, -2, "seconds");
  lua_createtable(L, 0, (int)(r->n_headers < 64 ? r->n_headers : 64));   /* headers */
  lua_createtable(L, (int)(r->n_headers < 64 ? r->n_headers : 64), 0);   /* raw_headers */
  while (ps_response_next_header(r, &pos, &name, &nlen, &value, &vlen)) {
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, name, nlen);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, value, vlen);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, ++k);
    lua_pushlstring(L, name, nlen);
    if (lua_rawget(L, -3) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushlstring(L, value, vlen);
    } else {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, value, vlen);
      lua_concat(L, 3);
    }
    lua_pushlstring(L, name, nlen);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_setfield(L, -3, "raw_headers");
  lua_setfield(L, -2, "headers");
  return 1;
}

/* Allocates the results box (on the stack) with n zeroed responses. */
static results_box *new_results(lua_State *L, size_t n)
{
  results_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->r = NULL;
  box->n = 0;
  luaL_setmetatable(L, RESULTS_MT);
  box->r = calloc(n ? n : 1, sizeof *box->r);
  if (box->r) box->n = n;
  return box;
}

static void oom_error(ps_error *err)
{
  err->kind = PS_ERR_TRANSPORT;
  err->code = 27;                                  /* CURLE_OUT_OF_MEMORY */
  strcpy(err->message, "out of memory");
}

static int l_client_request(lua_State *L)
{
  ps_client *c;
  ps_request req;
  results_box *box;
  int nret;
  (void)check_client(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  parse_request(L, 2, &req, "request");           /* anchor at index 3 */
  box = new_results(L, 1);                         /* index 4 */
  if (!box->r) {
    ps_error err;
    oom_error(&err);
    lua_pushnil(L);
    push_error(L, &err);
    return 2;
  }
  /* Metamethods run while the request was read: the client may be closed now. */
  c = check_client(L);
  ps_client_perform(c, &req, box->r, 1, 1);
  nret = push_response(L, &box->r[0], 0);
  free_results(box);
  return nret;
}

static int l_client_batch(lua_State *L)
{
  ps_client *c;
  size_t n, i;
  lua_Integer concurrency = DEFAULT_CONCURRENCY;
  ps_request *reqs;
  results_box *box;
  (void)check_client(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    concurrency = opt_integer(L, 3, "concurrency", DEFAULT_CONCURRENCY, 1, 1024, "batch");
  }
  lua_settop(L, 2);
  n = lua_rawlen(L, 2);
  reqs = lua_newuserdatauv(L, (n ? n : 1) * sizeof *reqs, 0);   /* index 3 */
  lua_createtable(L, (int)(n < 1024 ? n : 1024), 0);             /* index 4: anchors */
  for (i = 0; i < n; i++) {
    char what[48];
    (void)snprintf(what, sizeof what, "batch: request %lu", (unsigned long)i + 1);
    if (lua_rawgeti(L, 2, (lua_Integer)i + 1) != LUA_TTABLE)
      return luaL_error(L, "%s must be a table, got %s", what, luaL_typename(L, -1));
    parse_request(L, -1, &reqs[i], what);
    lua_rawseti(L, 4, (lua_Integer)i + 1);         /* keep the request's anchor */
    lua_pop(L, 1);
  }
  box = new_results(L, n);                         /* index 5 */
  if (!box->r) {
    ps_error err;
    oom_error(&err);
    lua_createtable(L, (int)(n < 1024 ? n : 1024), 0);
    for (i = 0; i < n; i++) {
      lua_createtable(L, 0, 1);
      push_error(L, &err);
      lua_setfield(L, -2, "error");
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
  }
  c = check_client(L);                             /* metamethods may have closed it */
  ps_client_perform(c, reqs, box->r, n, (size_t)concurrency);
  lua_createtable(L, (int)(n < 1024 ? n : 1024), 0);
  for (i = 0; i < n; i++) {
    push_response(L, &box->r[i], 1);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    ps_response_clear(&box->r[i]);                 /* free as we go */
  }
  free_results(box);
  return 1;
}

static const luaL_Reg client_methods[] = {
  { "request", l_client_request },
  { "batch", l_client_batch },
  { "close", l_client_close },
  { NULL, NULL }
};

static const luaL_Reg client_meta[] = {
  { "__gc", l_client_close },
  { "__close", l_client_close },
  { "__tostring", l_client_tostring },
  { "__index", NULL },
  { NULL, NULL }
};

/* A sentinel whose __gc balances curl_global_init when the state closes. */
static int l_global_gc(lua_State *L)
{
  (void)L;
  ps_global_cleanup();
  return 0;
}

/* ---------------------------------------------------------------- module */

static const luaL_Reg core_funcs[] = {
  { "b64encode", l_b64encode },
  { "b64decode", l_b64decode },
  { "urlencode", l_urlencode },
  { "form_encode", l_form_encode },
  { "jwt_claims", l_jwt_claims },
  { "go_json_string", l_go_json_string },
  { "version", l_version },
  { "client", l_client },
  { NULL, NULL }
};

int luaopen_pullsecret_core(lua_State *L);

int luaopen_pullsecret_core(lua_State *L)
{
  if (ps_global_init() != 0) return luaL_error(L, "pullsecret.core: libcurl initialisation failed");
  /* the sentinel is created first, so it is finalized after every client */
  lua_newuserdatauv(L, 1, 0);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_global_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "pullsecret.core.global");
  if (luaL_newmetatable(L, CLIENT_MT)) {
    luaL_setfuncs(L, client_meta, 0);
    luaL_newlib(L, client_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, RESULTS_MT)) {
    lua_pushcfunction(L, l_results_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, core_funcs);
  return 1;
}
