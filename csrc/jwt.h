/*
 * jwt.h -- splitting a JWT (RFC 7519, compact JWS form) into its parts.
 *
 * A token is header '.' payload [ '.' signature ]. ps_jwt_split finds the
 * dot-separated segments without decoding them; decoding (base64url,
 * padding optional) is done by the caller with b64.h, so that errors can
 * name positions in the whole token.
 *
 * Two segments (no signature at all, e.g. a token cut off when copied) are
 * reported with has_signature = 0 rather than refused, so the caller can
 * still show what the header and payload say and decide the token is
 * malformed. One segment, or four or more (JWE), is refused.
 */
#ifndef PULLSECRET_JWT_H
#define PULLSECRET_JWT_H

#include <stddef.h>

typedef struct {
  size_t off[3], len[3];   /* offset and length of header, payload, signature */
  int has_signature;       /* 1 when a third segment (possibly empty) exists */
} ps_jwt_parts;

/* Returns 0 on success, or -1 with *why set to a static reason text. */
int ps_jwt_split(const char *token, size_t n, ps_jwt_parts *parts, const char **why);

#endif
