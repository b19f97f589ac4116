//! Being a replica: the replication handshake, the RDB transfer and the command stream. (being written)
