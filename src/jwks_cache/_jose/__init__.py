"""Pure rules for untrusted JOSE bytes: bounded JSON, JWK Set hygiene, JWS verification, claims.

No I/O and no clock reads (``now`` is an argument). The only joserfc import is in ``_jwks``; every
parser of untrusted bytes asks ``_nesting`` first. Imports only the data modules above it.
"""
