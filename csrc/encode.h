/*
 * encode.h -- percent-encoding and Go-style JSON string literals.
 *
 * ps_percent_encode: RFC 3986 percent-encoding. The unreserved characters
 * A-Z a-z 0-9 - . _ ~ are kept, every other byte becomes %XX (upper-case
 * hex). With PS_PCT_FORM a space becomes '+' instead of %20, as in
 * application/x-www-form-urlencoded (the same output as Go's
 * url.QueryEscape). Output is at most 3 * n bytes.
 *
 * ps_go_json_string: the string as Go's encoding/json writes it, quotes
 * included: '"' and '\\' backslash-escaped; \b \f \n \r \t short escapes;
 * other bytes below 0x20 as \u00xx (lower-case hex); '<' '>' '&' as
 * \u003c \u003e \u0026; U+2028 and U+2029 as \u2028 \u2029; each byte of
 * invalid UTF-8 (bad lead or continuation bytes, overlong forms,
 * surrogates, code points above U+10FFFF, truncated sequences) as \ufffd;
 * DEL and '/' and all other valid UTF-8 unchanged. Output is at most
 * 6 * n + 2 bytes.
 */
#ifndef PULLSECRET_ENCODE_H
#define PULLSECRET_ENCODE_H

#include <stddef.h>

enum { PS_PCT_URL = 0, PS_PCT_FORM = 1 };

size_t ps_percent_encode(const char *in, size_t n, char *out, int mode);

/* Largest n whose ps_go_json_string output fits in size_t. */
#define PS_GO_JSON_MAX_INPUT ((((size_t)-1) - 2) / 6)
size_t ps_go_json_string(const char *in, size_t n, char *out);

/* Length of the valid UTF-8 sequence starting at s (1 to 4), or 0 if the
 * bytes at s do not start one (n > 0). Same acceptance as Go's utf8 package. */
size_t ps_utf8_valid_len(const unsigned char *s, size_t n);

#endif
