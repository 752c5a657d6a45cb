/* jwt.c -- finds the dot-separated segments of a compact JWT. */
#include "jwt.h"

int ps_jwt_split(const char *token, size_t n, ps_jwt_parts *parts, const char **why)
{
  size_t i, start = 0, seg = 0;
  for (i = 0; i <= n; i++) {
    if (i == n || token[i] == '.') {
      if (seg >= 3) {
        *why = "more than 3 dot-separated parts (not a signed JWT)";
        return -1;
      }
      parts->off[seg] = start;
      parts->len[seg] = i - start;
      seg++;
      start = i + 1;
    }
  }
  if (seg < 2) {
    *why = n == 0 ? "empty token" : "no '.' separator (a JWT has 3 dot-separated parts)";
    return -1;
  }
  if (parts->len[0] == 0) {
    *why = "empty header part";
    return -1;
  }
  if (parts->len[1] == 0) {
    *why = "empty payload part";
    return -1;
  }
  parts->has_signature = seg == 3;
  if (seg == 2) {
    parts->off[2] = n;
    parts->len[2] = 0;
  }
  return 0;
}
