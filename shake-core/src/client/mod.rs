//! The pipelined client and the cluster router. (being written)
