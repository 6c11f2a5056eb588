"""EdDSA public keys for the key hygiene tests: hex of the raw ``x`` of an OKP JWK.

Extracted by hand (only the keys needed) from public test vectors:

- Wycheproof, C2SP/wycheproof at dac1dd4729fd1f8dd9e1e9f3dce51d783da6c166:
  ``testvectors_v1/ed25519_test.json`` and ``testvectors_v1/ed448_test.json``. Their public keys are
  all valid; the small-order and non-canonical encodings below come from their *R* values, which the
  tests reuse as keys (the point encodings are the same, RFC 8032 §5.1.2 / §5.2.2).
- "Taming the many EdDSAs" (Chalkias, Garillot, Nikolaenko, SSR 2020), its vectors
  novifinancial/ed25519-speccheck ``cases.txt`` (cases numbered from 0).
- libsodium's small-order blocklist (``crypto_core/ed25519/ref10/ed25519_ref10.c``,
  ``ge25519_has_small_order``, used by ``crypto_sign_ed25519_verify_detached``): seven y values,
  the sign bit ignored.
- RFC 8032 §7.1 TEST 1 (also RFC 8037 Appendix A.2's example key) and §7.4 "-----Blank" (Ed448).
"""

from __future__ import annotations

from typing import Final

P25519: Final = 2**255 - 19
P448: Final = 2**448 - 2**224 - 1


def encode(y: int, *, size: int, x_odd: bool = False) -> str:
    """An RFC 8032 point encoding of ``y`` (not reduced: non-canonical values are the point)."""
    raw = bytearray(y.to_bytes(size, "little"))
    raw[-1] |= 0x80 if x_odd else 0
    return raw.hex()


# --- valid keys (controls) -------------------------------------------------------------------------

#: RFC 8032 §7.1 TEST 1 = RFC 8037 A.2 (x "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
RFC8032_TEST1: Final = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
#: RFC 8037 A.4: the compact JWS of "Example of Ed25519 signing" under RFC8032_TEST1
RFC8037_JWS: Final = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)
#: Wycheproof ed25519_test.json, the key of tcId 1-9 (tcId 1: the empty message, this signature)
WYCHEPROOF_ED25519: Final = "7d4d0e7f6153a69b6242b522abbee685fda4420f8834b108c3bdae369ef549fa"
WYCHEPROOF_ED25519_TC1_SIG: Final = (
    "d4fbdb52bfa726b44d1786a8c0d171c3e62ca83c9e5bbe63de0bb2483f8fd6cc"
    "1429ab72cafc41ab56af02ff8fcc43b99bfe4c7ae940f60f38ebaa9d311c4007"
)
#: RFC 8032 §7.4 "-----Blank" = Wycheproof ed448_test.json tcId 78
RFC8032_ED448_BLANK: Final = (
    "5fd7449b59b461fd2ce787ec616ad46a1da1342485a70e1f8a0ea75d80e96778edf124769b46c7061bd6783df1e50f6cd1fa1abeafe8256180"
)
#: Wycheproof ed448_test.json, the key of tcId 1-9 (tcId 1: the empty message, this signature)
WYCHEPROOF_ED448: Final = (
    "419610a534af127f583b04818cdb7f0ff300b025f2e01682bcae33fd691cee039511df0cddc690ee978426e8b38e50ce5af7dcfba50f704c00"
)
WYCHEPROOF_ED448_TC1_SIG: Final = (
    "cf7953007666e12f73af9ec92e3e018da5ee5a8d5b17f5100a354c58f1d5f4bb37ab835c52f72374c72d612689149cf6"
    "d36a70db6dc5a6c400b597348e0e31e51e65bb144e63c892a367b4c055c036aa6cd7e728cdd2a098963bda863903e6dd"
    "025b5a5d891209f4e28537694804e50b0800"
)

# --- Ed25519: the eight points of order dividing 8, every encoding -----------------------------------

#: libsodium's blocklist, as it lists them (sign bit clear); the last two are y = p and y = p + 1
LIBSODIUM_BLOCKLIST: Final = (
    "0000000000000000000000000000000000000000000000000000000000000000",  # 0 (order 4)
    "0100000000000000000000000000000000000000000000000000000000000000",  # 1 (order 1)
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p - 1 (order 2)
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p (= 0, order 4)
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p + 1 (= 1, order 1)
)
#: the same seven with the sign bit set (libsodium ignores it, so must we)
LIBSODIUM_BLOCKLIST_SIGNED: Final = tuple(h[:-2] + f"{int(h[-2:], 16) | 0x80:02x}" for h in LIBSODIUM_BLOCKLIST)
#: speccheck cases 0 and 1: a small-order key (order 8, sign bit set), forged with R = A, S = 0
SPECCHECK_CASE_0_KEY: Final = "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"
#: speccheck cases 10 and 11: y = p - 1 with the sign bit set (x = 0 has no negative: non-canonical)
SPECCHECK_CASE_10_KEY: Final = "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
#: Wycheproof ed25519_test.json tcId 151's R: y = 1 with the sign bit set (the identity, mis-signed)
WYCHEPROOF_ED25519_TC151_R: Final = "0100000000000000000000000000000000000000000000000000000000000080"
#: every encoding of a small-order point whose y is reduced (y < p)
ED25519_SMALL_ORDER: Final = (
    *LIBSODIUM_BLOCKLIST[:5],
    *LIBSODIUM_BLOCKLIST_SIGNED[:5],
    SPECCHECK_CASE_0_KEY,
    SPECCHECK_CASE_10_KEY,
    WYCHEPROOF_ED25519_TC151_R,
)
#: y >= p: p and p + 1 (blocklisted: 0 and 1 again), every other y up to 2^255 - 1, either sign
ED25519_NON_CANONICAL: Final = (
    *LIBSODIUM_BLOCKLIST[5:],
    *LIBSODIUM_BLOCKLIST_SIGNED[5:],
    *(encode(y, size=32, x_odd=odd) for y in range(P25519 + 2, 2**255) for odd in (False, True)),
)

# --- Ed448: the four points of order dividing 4, every encoding ----------------------------------------

#: Wycheproof ed448_test.json tcId 87's R: y = 1 with the sign bit set
WYCHEPROOF_ED448_TC87_R: Final = "01" + "00" * 55 + "80"
#: identity (y = 1), order 2 (y = p - 1), order 4 (y = 0, x = ±1), either sign bit
ED448_SMALL_ORDER: Final = (
    *(encode(y, size=57, x_odd=odd) for y in (1, P448 - 1, 0) for odd in (False, True)),
    WYCHEPROOF_ED448_TC87_R,
)
#: y >= p (p and p + 1 are 0 and 1 again), and the last byte's unused bits 448..454 set on a valid
#: key, as Wycheproof ed448_test.json tcId 63-65 do to R
ED448_NON_CANONICAL: Final = (
    encode(P448, size=57),
    encode(P448 + 1, size=57, x_odd=True),
    encode(2**448 - 1, size=57),
    *(WYCHEPROOF_ED448[:-2] + f"{1 << bit:02x}" for bit in (0, 1, 6)),
)
