/*
 * Module-internal (src/net and its tests only, not a stable API): the
 * OpenSSL objects behind an identity, for the TLS context.
 */
#ifndef CLEANROOM_NET_INTERNAL_H
#define CLEANROOM_NET_INTERNAL_H

#include "cleanroom/net.h"

struct evp_pkey_st;
struct x509_st;
/* Owned by the identity. */
struct evp_pkey_st *cr__identity_pkey(const cr_identity *id);
struct x509_st *cr__identity_x509(const cr_identity *id);

#endif
