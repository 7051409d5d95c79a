//! canal-client
