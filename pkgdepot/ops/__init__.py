"""Operator commands and the server's housekeeping: size limit and eviction
(evict), garbage collection (gc), re-hashing the store (verify), importing
existing package files (importer) and client configuration (clientconfig)."""
