"""jwks-cache."""
