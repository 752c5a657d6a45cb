/* encode.c -- percent-encoding and Go encoding/json string literals. */
#include "encode.h"

static const char hex_upper[] = "0123456789ABCDEF";
static const char hex_lower[] = "0123456789abcdef";

static int unreserved(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
}

size_t ps_percent_encode(const char *in, size_t n, char *out, int mode)
{
  size_t i, o = 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)in[i];
    if (unreserved(c)) {
      out[o++] = (char)c;
    } else if (c == ' ' && mode == PS_PCT_FORM) {
      out[o++] = '+';
    } else {
      out[o++] = '%';
      out[o++] = hex_upper[c >> 4];
      out[o++] = hex_upper[c & 15];
    }
  }
  return o;
}

static int cont(unsigned char c, unsigned char lo, unsigned char hi)
{
  return c >= lo && c <= hi;
}

size_t ps_utf8_valid_len(const unsigned char *s, size_t n)
{
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf)
    return n >= 2 && cont(s[1], 0x80, 0xbf) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    return n >= 3 && cont(s[1], lo, hi) && cont(s[2], 0x80, 0xbf) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    return n >= 4 && cont(s[1], lo, hi) && cont(s[2], 0x80, 0xbf) &&
           cont(s[3], 0x80, 0xbf) ? 4 : 0;
  }
  return 0;
}

static size_t put_u(char *out, unsigned cp)
{
  out[0] = '\\';
  out[1] = 'u';
  out[2] = hex_lower[cp >> 12 & 15];
  out[3] = hex_lower[cp >> 8 & 15];
  out[4] = hex_lower[cp >> 4 & 15];
  out[5] = hex_lower[cp & 15];
  return 6;
}

size_t ps_go_json_string(const char *in, size_t n, char *out)
{
  const unsigned char *s = (const unsigned char *)in;
  size_t i = 0, o = 0;
  out[o++] = '"';
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      switch (c) {
      case '"': out[o++] = '\\'; out[o++] = '"'; break;
      case '\\': out[o++] = '\\'; out[o++] = '\\'; break;
      case '\b': out[o++] = '\\'; out[o++] = 'b'; break;
      case '\f': out[o++] = '\\'; out[o++] = 'f'; break;
      case '\n': out[o++] = '\\'; out[o++] = 'n'; break;
      case '\r': out[o++] = '\\'; out[o++] = 'r'; break;
      case '\t': out[o++] = '\\'; out[o++] = 't'; break;
      case '<': case '>': case '&': o += put_u(out + o, c); break;
      default:
        if (c < 0x20) o += put_u(out + o, c);
        else out[o++] = (char)c;
      }
      i++;
    } else {
      size_t len = ps_utf8_valid_len(s + i, n - i);
      if (len == 0) {
        o += put_u(out + o, 0xfffd);
        i++;
      } else if (len == 3 && s[i] == 0xe2 && s[i + 1] == 0x80 &&
                 (s[i + 2] == 0xa8 || s[i + 2] == 0xa9)) {
        o += put_u(out + o, s[i + 2] == 0xa8 ? 0x2028 : 0x2029);
        i += 3;
      } else {
        while (len--) out[o++] = (char)s[i++];
      }
    }
  }
  out[o++] = '"';
  return o;
}
