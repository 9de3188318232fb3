//! Placeholder until the metadata store lands.
