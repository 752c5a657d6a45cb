/* b64.c -- base64 std/url; see b64.h for the exact (strict) rules. */
#include "b64.h"

#include <stdint.h>

static const char std_chars[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_chars[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t ps_b64_encoded_len(size_t n, int alphabet)
{
  size_t groups = n / 3, rest = n % 3;
  if (groups > (SIZE_MAX - 4) / 4) return 0;
  if (alphabet == PS_B64_URL) return groups * 4 + (rest ? rest + 1 : 0);
  return groups * 4 + (rest ? 4 : 0);
}

void ps_b64_encode(const unsigned char *in, size_t n, char *out, int alphabet)
{
  const char *tab = alphabet == PS_B64_URL ? url_chars : std_chars;
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *out++ = tab[v >> 18 & 63];
    *out++ = tab[v >> 12 & 63];
    *out++ = tab[v >> 6 & 63];
    *out++ = tab[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    *out++ = tab[v >> 18 & 63];
    *out++ = tab[v >> 12 & 63];
    if (alphabet != PS_B64_URL) { *out++ = '='; *out++ = '='; }
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    *out++ = tab[v >> 18 & 63];
    *out++ = tab[v >> 12 & 63];
    *out++ = tab[v >> 6 & 63];
    if (alphabet != PS_B64_URL) *out++ = '=';
  }
}

size_t ps_b64_decoded_max(size_t n)
{
  return n / 4 * 3 + 3;
}

/* Value of c in the alphabet, or -1. */
static int sextet(unsigned char c, int alphabet)
{
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (alphabet == PS_B64_URL) {
    if (c == '-') return 62;
    if (c == '_') return 63;
  } else {
    if (c == '+') return 62;
    if (c == '/') return 63;
  }
  return -1;
}

static int fail(size_t *errpos, const char **why, size_t pos, const char *reason)
{
  *errpos = pos;
  *why = reason;
  return -1;
}

int ps_b64_decode(const char *in, size_t n, unsigned char *out, size_t *outlen,
                  int alphabet, size_t *errpos, const char **why)
{
  const unsigned char *s = (const unsigned char *)in;
  size_t data = n, i, o = 0, rest;
  uint32_t acc = 0;
  int bits = 0;

  /* Padding: '=' may only end the input, one or two of them. */
  while (data > 0 && s[data - 1] == '=' && n - data < 2) data--;
  for (i = 0; i < data; i++) {
    int v = sextet(s[i], alphabet);
    if (v < 0) {
      if (s[i] == '=')
        return fail(errpos, why, i, "padding '=' before the end of the input");
      if ((alphabet == PS_B64_URL && (s[i] == '+' || s[i] == '/')) ||
          (alphabet != PS_B64_URL && (s[i] == '-' || s[i] == '_')))
        return fail(errpos, why, i, alphabet == PS_B64_URL
                    ? "character of the standard alphabet in base64url input"
                    : "character of the URL-safe alphabet in standard base64 input");
      return fail(errpos, why, i, "character not in the base64 alphabet");
    }
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits & 0xff);
    }
  }
  rest = data % 4;
  if (rest == 1)
    return fail(errpos, why, data - 1,
                "a final group of one character cannot encode a byte");
  if (n > data) {                               /* padding present */
    if (rest == 0 || (data + (4 - rest)) != n)
      return fail(errpos, why, data, rest == 0 ? "unexpected padding"
                                               : "wrong amount of padding");
  } else if (rest != 0 && alphabet != PS_B64_URL) {
    return fail(errpos, why, n, "input ends without the required '=' padding");
  }
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
    return fail(errpos, why, data - 1, "non-zero unused bits in the final character");
  *outlen = o;
  return 0;
}
