//! Writing RDB encodings: DUMP payloads and values re-encoded for older targets. (being written)
