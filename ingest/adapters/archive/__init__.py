"""The journal archive on disk (services/archive_ports.py's Archive): segment files of
compressed, checksummed blocks under JOURNAL_ARCHIVE_DIR."""
