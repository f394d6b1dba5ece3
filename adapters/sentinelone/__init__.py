"""SentinelOne: pull threats' file hashes and Threat Intelligence IOCs; push and withdraw IOCs."""
