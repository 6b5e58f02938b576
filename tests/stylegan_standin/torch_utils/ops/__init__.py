"""Stand-in ops (NVlabs-style signatures, implemented with ganfast.reference)."""
