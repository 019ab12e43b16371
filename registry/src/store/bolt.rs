//! A read-only boltDB reader.
