/*
 * b64.h -- base64 (RFC 4648 section 4) and base64url (section 5).
 *
 * Encoding: the standard alphabet pads with '='; the URL-safe alphabet does
 * not pad (the form JWTs and most URL uses expect).
 *
 * Decoding is strict and does not skip anything:
 *  - every character must belong to the chosen alphabet (no whitespace,
 *    no line breaks, no mixing of the two alphabets);
 *  - standard: the length must be a multiple of 4, with '=' only as the
 *    one or two final characters of the last group;
 *    URL-safe: padding is optional, but when present it must be complete;
 *  - a final group of a single character is impossible and refused;
 *  - the unused low bits of the last character must be zero (RFC 4648
 *    section 3.5), so every byte string has exactly one accepted encoding.
 * On failure the decoder reports the 0-based offset of the offending
 * character (or the input length when the input ends too early) and a
 * static reason text.
 */
#ifndef PULLSECRET_B64_H
#define PULLSECRET_B64_H

#include <stddef.h>

enum { PS_B64_STD = 0, PS_B64_URL = 1 };

/* Exact length of the encoding of n bytes; 0 when it would overflow size_t. */
size_t ps_b64_encoded_len(size_t n, int alphabet);

/* Writes ps_b64_encoded_len(n) characters to out (no terminator). */
void ps_b64_encode(const unsigned char *in, size_t n, char *out, int alphabet);

/* Upper bound of the decoded length of n characters. */
size_t ps_b64_decoded_max(size_t n);

/* Decodes n characters into out (room for ps_b64_decoded_max(n) bytes).
 * Returns 0 and sets *outlen, or -1 and sets *errpos (0-based) and *why. */
int ps_b64_decode(const char *in, size_t n, unsigned char *out, size_t *outlen,
                  int alphabet, size_t *errpos, const char **why);

#endif
